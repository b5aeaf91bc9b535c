//go:build !js

package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestLoRAStoredQuantized attaches an adapter, kept apart, to a checkpoint
// stored as int8 (mamba2 convert --dtype int8), which a merge refuses: its
// logits are those of the float checkpoint quantized at load with the
// adapter attached (the same int8 values), and not the base's.
func TestLoRAStoredQuantized(t *testing.T) {
	q := filepath.Join(t.TempDir(), "q")
	if _, err := runCLI(t, "", "convert", "--model", fixtureDir("tiny-g1"), "--out", q, "--dtype", "int8"); err != nil {
		t.Fatal(err)
	}
	c := loraCase(t, "g1-emb-in-out")
	ids := make([]int32, len(c.GreedyIn))
	for i, v := range c.GreedyIn {
		ids[i] = int32(v)
	}
	run := func(dir string, o model.LoadOptions, adapter bool) []float32 {
		t.Helper()
		m, err := model.Load(os.DirFS(dir), cpu.New(), o)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Backend.Close()
		st := m.NewState(1)
		defer st.Close()
		if adapter {
			if err := m.AttachAdapter("a", modeltest.OpenLoRA(t, c.Adapters...)...); err != nil {
				t.Fatal(err)
			}
			if err := st.UseAdapter(0, "a"); err != nil {
				t.Fatal(err)
			}
		}
		out, err := st.Logits(ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	stored := run(q, model.LoadOptions{}, true)
	atLoad := run(fixtureDir("tiny-g1"), model.LoadOptions{Quantize: model.Quant{Format: model.FormatInt8}}, true)
	base := run(q, model.LoadOptions{}, false)
	diff := func(a, b []float32) float64 {
		d := 0.0
		for i := range a {
			d = max(d, float64(max(a[i]-b[i], b[i]-a[i])))
		}
		return d
	}
	if d := diff(stored, atLoad); d > 1e-4 {
		t.Errorf("stored int8 vs quantized at load, adapter attached: max |Δlogit| %.3g > 1e-4", d)
	}
	if d := diff(stored, base); d < 0.1 {
		t.Errorf("the attached adapter changes the stored int8 model's logits by only %.3g", d)
	}
}
