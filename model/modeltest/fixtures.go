// Package modeltest holds the checks every model.Backend must pass: the
// reference fixtures made with transformers (whole model) and a conformance
// suite of single operations against the CPU reference. Backends call them
// from their own tests, the way gonum's implementations run testblas.
package modeltest

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// Root is the repository's testdata folder, found from this file's location
// so that tests of any package (and wasm tests under Node) can reach it.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata")
}

// Expected is the content of a fixture's expected.json (SPEC §5).
type Expected struct {
	Config             string      `json:"config"`
	Norm               string      `json:"norm"`
	PromptIDs          []int32     `json:"prompt_ids"`
	LogitsF64Last      []float64   `json:"logits_f64_last"`
	GreedyPromptIDs    []int32     `json:"greedy_prompt_ids"`
	GreedyNewIDs       []int32     `json:"greedy_f64_new_ids"`
	ShortPromptLogits  [][]float64 `json:"short_prompt_logits_f64"`
	BatchIDs           [][]int32   `json:"batch_ids"`
	BatchMask          [][]float32 `json:"batch_mask"`
	BatchLastLogitsF64 [][]float64 `json:"batch_last_logits_f64"`
}

// Fixture is one reference checkpoint with the outputs to match.
type Fixture struct {
	Name      string // tiny-g1, tiny-g4/full, tiny-g4/grouped
	Dir       string
	GatedNorm model.GatedNorm
	Expected
	// AllLogits are the float64 logits of every prompt position, [L][V], or
	// nil when the fixture has no expected_logits.safetensors for this norm.
	AllLogits [][]float64
}

// Fixtures loads every fixture case: tiny-g1 (one group, so one norm),
// tiny-g4 with the full-width norm (expected.json) and with the grouped one
// (expected_grouped.json).
func Fixtures(t testing.TB) []Fixture {
	t.Helper()
	dir := filepath.Join(Root(), "fixtures")
	cases := []struct {
		name, folder, file string
		norm               model.GatedNorm
		all                bool
	}{
		{"tiny-g1", "tiny-g1", "expected.json", model.Grouped, true},
		{"tiny-g4/full", "tiny-g4", "expected.json", model.Full, true},
		{"tiny-g4/grouped", "tiny-g4", "expected_grouped.json", model.Grouped, false},
	}
	var out []Fixture
	for _, c := range cases {
		fx := Fixture{Name: c.name, Dir: filepath.Join(dir, c.folder), GatedNorm: c.norm}
		data, err := os.ReadFile(filepath.Join(fx.Dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &fx.Expected); err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if c.all {
			ck, err := loader.OpenFiles(os.DirFS(fx.Dir), "expected_logits.safetensors")
			if err != nil {
				t.Fatal(err)
			}
			in, _ := ck.Info("logits_f64")
			flat, err := ck.Float32s("logits_f64")
			if err != nil {
				t.Fatal(err)
			}
			V := in.Shape[len(in.Shape)-1]
			for i := 0; i < len(flat); i += V {
				row := make([]float64, V)
				for j := range V {
					row[j] = float64(flat[i+j])
				}
				fx.AllLogits = append(fx.AllLogits, row)
			}
		}
		out = append(out, fx)
	}
	return out
}

// MaxAbsDiff is max |a[i] − b[i]|, +Inf when the lengths differ.
func MaxAbsDiff(a []float32, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		d := math.Abs(float64(a[i]) - b[i])
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		m = max(m, d)
	}
	return m
}
