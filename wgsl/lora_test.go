package wgsl

import (
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestLoRAApart runs the kept-apart adapter checks on WebGPU, the CPU the
// reference for the int8 base.
func TestLoRAApart(t *testing.T) {
	modeltest.RunLoRA(t, func(t *testing.T) model.Backend { return open(t, Options{}) },
		func(t *testing.T) model.Backend { return cpu.New() })
}
