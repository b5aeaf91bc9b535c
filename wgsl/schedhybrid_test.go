package wgsl

import (
	"os"
	"runtime"
	"testing"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestSchedulerHybridWebGPU: continuous batching of hybrids on the GPU
// (modeltest.RunHybridScheduler), each slot at its own position in the
// pool's KV caches, which CopyKV fills and rotary.wgsl, store_kv.wgsl and
// attend.wgsl index by each sequence's start. Bamba has attention at two
// layers with partial rotary; Zamba2 a shared attention block at two
// layers with full rotary. Not under js/wasm: Dawn on SwiftShader in Node
// takes over 6 minutes for one family; there TestHybridOps checks the
// kernels' per-sequence positions and TestSchedulerWebGPU the scheduler.
func TestSchedulerHybridWebGPU(t *testing.T) {
	if runtime.GOOS == "js" {
		t.Skip("too slow on SwiftShader under Node (over 6 minutes a family)")
	}
	for _, family := range []string{"bamba", "zamba2"} {
		t.Run(family, func(t *testing.T) {
			dir, exp, _ := modeltest.LoadHybrid(t, family)
			m, err := model.Load(os.DirFS(dir), open(t, Options{}), model.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			modeltest.RunHybridScheduler(t, m, exp)
		})
	}
}
