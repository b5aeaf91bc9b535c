package cpu_test

import (
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestHybridFixtures runs every hybrid family's transformers fixture on
// the CPU. The fixtures are float64 (GraniteMoeHybrid float32) and the CPU,
// float32 with float64 sums, agrees to about 3e-7; the bound is 2e-5, not
// the 1e-3 a GPU is held to, because on these tiny random models a wrong
// attention scale, rotary width or gated-norm grouping moves the logits by
// only 6e-4 to 8e-3 (checked by hand), and 1e-3 would let some through.
func TestHybridFixtures(t *testing.T) {
	for _, family := range modeltest.HybridFamilies {
		t.Run(family, func(t *testing.T) {
			modeltest.RunHybridFixtures(t, func(*testing.T) model.Backend { return cpu.New() }, family, 2e-5)
		})
	}
}
