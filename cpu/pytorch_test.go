package cpu_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestPyTorchCheckpoints loads the tiny-g1 fixture from pytorch_model.bin
// files torch 2.11 wrote (loader/pytorch/testdata): the zip format with
// transformers' names and the legacy format with state-spaces' names and a
// tied lm_head. The logits must be those of the safetensors original, bit
// for bit.
func TestPyTorchCheckpoints(t *testing.T) {
	fx := filepath.Join(modeltest.Root(), "fixtures", "tiny-g1")
	ref, err := model.Load(os.DirFS(fx), cpu.New(), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := []int32{5, 17, 300, 42, 9, 100, 7}
	want, err := ref.NewState(1).Logits(ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	config, err := os.ReadFile(filepath.Join(fx, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"tiny_hf_zip.bin", "tiny_ss_legacy.bin"} {
		dir := t.TempDir()
		data, err := os.ReadFile(filepath.Join(modeltest.Root(), "..", "loader", "pytorch", "testdata", bin))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), data, 0o644)
		os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644)
		m, err := model.Load(os.DirFS(dir), cpu.New(), model.LoadOptions{})
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		got, err := m.NewState(1).Logits(ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: logit %d is %v, the safetensors model's %v", bin, i, got[i], want[i])
			}
		}
	}
}
