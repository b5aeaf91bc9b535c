package cpu_test

import (
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

func TestFixtures(t *testing.T) {
	modeltest.RunFixtures(t, func(*testing.T) model.Backend { return cpu.New() }, 1e-4)
}

func TestOps(t *testing.T) {
	modeltest.RunOps(t, cpu.New())
}

func TestFree(t *testing.T) {
	modeltest.RunFree(t, cpu.New(), nil)
}

func TestOverflow(t *testing.T) { modeltest.RunOverflow(t, cpu.New()) }

func TestHiddenStates(t *testing.T) { modeltest.RunHiddenStates(t, cpu.New(), 1e-4) }
