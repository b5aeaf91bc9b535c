package wgsl

import (
	"os"
	"path/filepath"
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
// the CPU. It is skipped under js/wasm: one case alone takes about 17 s on
// SwiftShader, which the suite's budget has no room for, and what it adds
// to the Go code it shares with native runs is no new backend operation
// (the updates are the products, Embed and row copies TestLoRAApart runs
// there).
func TestLoRAHybrid(t *testing.T) {
	if runtime.GOOS == "js" {
		t.Skip("about 17 s on SwiftShader; the operations are TestLoRAApart's, run under js")
	}
	newBackend := func(t *testing.T) model.Backend { return open(t, Options{}) }
	modeltest.RunHybridLoRA(t, newBackend, func(t *testing.T) model.Backend { return cpu.New() })
}

// TestLoRAHybridScheduler serves requests under two attached adapters and
// none at once on a hybrid (Bamba) on WebGPU: each gets the ids it gets
// alone. Native only, for the js/wasm suite's budget.
func TestLoRAHybridScheduler(t *testing.T) {
	if runtime.GOOS == "js" {
		t.Skip("native only: the js/wasm suite has no time for it; the CPU runs it for every family")
	}
	dir := filepath.Join(modeltest.Root(), "fixtures", "hybrid-bamba")
	m, err := model.Load(os.DirFS(dir), open(t, Options{}), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Backend.Close()
	m.SubmissionBudget = -1 // prefill pieces by memory only, the same alone and batched
	for i, n := range []string{"a", "b"} {
		spec := modeltest.HybridLoRACases[0].Spec
		spec.Seed += uint64(10 * (i + 1))
		afs, _, _ := modeltest.RandomLoRAFor(t, dir, spec)
		ad, err := model.OpenAdapter(n, afs)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.AttachAdapter(n, ad); err != nil {
			t.Fatal(err)
		}
	}
	modeltest.RunHybridLoRAScheduler(t, m, []string{"a", "", "b", "a", ""})
}
