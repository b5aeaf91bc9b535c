package wgsl

import (
	"runtime"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestLoRAApart runs the kept-apart adapter checks on WebGPU, the CPU the
// reference for the int8 base. Under js/wasm it runs one fixture case:
// on SwiftShader the whole outlasts the suite's time budget (over ten
// minutes, against 12 s on lavapipe), and the operations it adds up
// (products with norms and Add, Embed, row copies) are each checked there
// by TestOps.
func TestLoRAApart(t *testing.T) {
	newBackend := func(t *testing.T) model.Backend { return open(t, Options{}) }
	if runtime.GOOS == "js" {
		modeltest.RunLoRACase(t, newBackend, "g1-emb-in-out")
		return
	}
	modeltest.RunLoRA(t, newBackend, func(t *testing.T) model.Backend { return cpu.New() })
}

// TestLoRAHybrid runs adapters merged and kept apart on the hybrid
// families on WebGPU (modeltest.RunHybridLoRA), the reference merge on
// the CPU. Under js/wasm it runs one case (Falcon-H1's, whose in_proj
// update runs under the mup multipliers) and no mixed batch, for the
// suite's time budget.
func TestLoRAHybrid(t *testing.T) {
	newBackend := func(t *testing.T) model.Backend { return open(t, Options{}) }
	modeltest.RunHybridLoRA(t, newBackend, func(t *testing.T) model.Backend { return cpu.New() }, runtime.GOOS == "js")
}
