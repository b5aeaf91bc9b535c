package modeltest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// HybridExpected is a hybrid fixture's expected.json
// (scripts/fixtures/hybrids.py): transformers 5.17 in float64, or float32
// where the family has no float64 kernels (dtype).
type HybridExpected struct {
	Family                string      `json:"family"`
	DType                 string      `json:"dtype"`
	PromptIDs             []int32     `json:"prompt_ids"`
	LogitsLast            []float64   `json:"logits_last"`
	GreedyPromptIDs       []int       `json:"greedy_prompt_ids"`
	GreedyNewIDs          []int       `json:"greedy_new_ids"`
	BatchIDs              [][]int32   `json:"batch_ids"`
	BatchMask             [][]float32 `json:"batch_mask"`
	BatchLastLogits       [][]float64 `json:"batch_last_logits"`
	BatchSingleLastLogits [][]float64 `json:"batch_single_last_logits"`
}

// HybridFamilies are the hybrid fixtures' folders under testdata/fixtures,
// without the "hybrid-" prefix.
var HybridFamilies = []string{"bamba", "granitemoehybrid", "falcon-h1", "zamba2"}

// LoadHybrid reads a hybrid fixture: expected.json and every position's
// logits (expected_logits.safetensors, [L, V]).
func LoadHybrid(t testing.TB, family string) (dir string, exp HybridExpected, all [][]float64) {
	t.Helper()
	dir = filepath.Join(Root(), "fixtures", "hybrid-"+family)
	data, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &exp); err != nil {
		t.Fatalf("expected.json: %v", err)
	}
	ck, err := loader.OpenFiles(os.DirFS(dir), "expected_logits.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	in, _ := ck.Info("logits")
	flat, err := ck.Float32s("logits")
	if err != nil {
		t.Fatal(err)
	}
	V := in.Shape[len(in.Shape)-1]
	for i := 0; i < len(flat); i += V {
		row := make([]float64, V)
		for j := range V {
			row[j] = float64(flat[i+j])
		}
		all = append(all, row)
	}
	return dir, exp, all
}

// RunHybridFixtures checks a HybridBackend against one hybrid fixture:
// every prompt position's logits and the last one's within tol, the same
// prefilled in pieces (the KV cache carried and grown between them), the
// greedy ids of Generate exactly (each step one position through the
// caches), and both rows of a left-padded batch against transformers'
// batch and against each row run alone.
func RunHybridFixtures(t *testing.T, newBackend func(t *testing.T) model.Backend, family string, tol float64) {
	dir, exp, all := LoadHybrid(t, family)
	b := newBackend(t)
	defer b.Close()
	m, err := model.Load(os.DirFS(dir), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	t.Run("prompt", func(t *testing.T) {
		st := m.NewState(1)
		defer st.Close()
		got, err := st.Logits(exp.PromptIDs, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range all {
			if d := MaxAbsDiff(got[i*V:(i+1)*V], want); d > tol {
				t.Errorf("position %d: max |Δlogit| = %.3g > %g", i, d, tol)
			}
		}
		if d := MaxAbsDiff(got[len(got)-V:], exp.LogitsLast); d > tol {
			t.Errorf("last position: max |Δlogit| = %.3g > %g", d, tol)
		}
	})
	t.Run("pieces", func(t *testing.T) {
		// Pieces of 5 positions: chunked prefill continuing the SSM and
		// conv state, and the KV cache growing past its first capacity.
		defer func(n int) { m.PrefillChunk = n }(m.PrefillChunk)
		m.PrefillChunk = 5
		st := m.NewState(1)
		defer st.Close()
		out, err := st.Forward(exp.PromptIDs, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		if d := MaxAbsDiff(got, exp.LogitsLast); d > tol {
			t.Errorf("prefilled in pieces of 5: max |Δlogit| = %.3g > %g", d, tol)
		}
	})
	t.Run("greedy", func(t *testing.T) {
		res, err := m.Generate(context.Background(), exp.GreedyPromptIDs, model.Options{MaxNewTokens: len(exp.GreedyNewIDs), StopIDs: []int{}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.IDs, exp.GreedyNewIDs) {
			t.Errorf("greedy ids\n got %v\nwant %v", res.IDs, exp.GreedyNewIDs)
		}
	})
	t.Run("batch", func(t *testing.T) {
		B := len(exp.BatchIDs)
		st := m.NewState(B)
		defer st.Close()
		var ids []int32
		var mask []float32
		for i := range B {
			ids = append(ids, exp.BatchIDs[i]...)
			mask = append(mask, exp.BatchMask[i]...)
		}
		out, err := st.Forward(ids, mask)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		for i := range B {
			row := got[i*V : (i+1)*V]
			if d := MaxAbsDiff(row, exp.BatchLastLogits[i]); d > tol {
				t.Errorf("row %d vs transformers' batch: max |Δlogit| = %.3g > %g", i, d, tol)
			}
			if d := MaxAbsDiff(row, exp.BatchSingleLastLogits[i]); d > tol {
				t.Errorf("row %d vs the row alone: max |Δlogit| = %.3g > %g", i, d, tol)
			}
		}
	})
}
