package modeltest

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
)

// RunFixtures checks a backend against every reference fixture: logits of
// every prompt position and of the last one within tol of transformers'
// float64 logits, the 24 greedy ids exactly, and the rows of a left-padded
// batch. newBackend is called once per fixture.
func RunFixtures(t *testing.T, newBackend func(t *testing.T) model.Backend, tol float64) {
	for _, fx := range Fixtures(t) {
		t.Run(fx.Name, func(t *testing.T) {
			b := newBackend(t)
			defer b.Close()
			m, err := model.Load(os.DirFS(fx.Dir), b, model.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			m.GatedNorm = fx.GatedNorm
			checkFixture(t, m, fx, tol)
		})
	}
}

func checkFixture(t *testing.T, m *model.Model, fx Fixture, tol float64) {
	V := m.Config.VocabSize
	// Every position of the long prompt.
	st := m.NewState(1)
	all, err := st.Logits(fx.PromptIDs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range fx.AllLogits {
		if d := MaxAbsDiff(all[i*V:(i+1)*V], want); d > tol {
			t.Errorf("prompt position %d: max |Δlogit| = %.3g > %g", i, d, tol)
		}
	}
	if d := MaxAbsDiff(all[len(all)-V:], fx.LogitsF64Last); d > tol {
		t.Errorf("last position: max |Δlogit| = %.3g > %g", d, tol)
	}

	// Every position of the short prompt.
	st = m.NewState(1)
	short, err := st.Logits(fx.GreedyPromptIDs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range fx.ShortPromptLogits {
		if d := MaxAbsDiff(short[i*V:(i+1)*V], want); d > tol {
			t.Errorf("short prompt position %d: max |Δlogit| = %.3g > %g", i, d, tol)
		}
	}

	// Greedy decoding through the cache: prefill, then one step per token.
	prompt := make([]int, len(fx.GreedyPromptIDs))
	for i, v := range fx.GreedyPromptIDs {
		prompt[i] = int(v)
	}
	res, err := m.Generate(context.Background(), prompt, model.Options{
		MaxNewTokens: len(fx.GreedyNewIDs), StopIDs: []int{},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range fx.GreedyNewIDs {
		if i >= len(res.IDs) || res.IDs[i] != int(want) {
			t.Errorf("greedy ids differ from transformers at step %d:\n got %v\nwant %v", i, res.IDs, fx.GreedyNewIDs)
			break
		}
	}

	// A left-padded batch of two sequences.
	if len(fx.BatchIDs) > 0 {
		B := len(fx.BatchIDs)
		var ids []int32
		var mask []float32
		for b := range B {
			ids = append(ids, fx.BatchIDs[b]...)
			mask = append(mask, fx.BatchMask[b]...)
		}
		st := m.NewState(B)
		out, err := st.Forward(ids, mask)
		if err != nil {
			t.Fatal(err)
		}
		last, err := m.Backend.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		for b, want := range fx.BatchLastLogitsF64 {
			if d := MaxAbsDiff(last[b*V:(b+1)*V], want); d > tol {
				t.Errorf("batch row %d: max |Δlogit| = %.3g > %g", b, d, tol)
			}
		}
	}
}

// Quantizations are the formats RunQuantizedFixtures loads the fixtures
// in: int8, int4 with the default groups (ragged on the fixtures' narrow
// rows) and int8 tables, and int4 everywhere with groups of 32 (several
// per row).
var Quantizations = []model.Quant{
	{Format: model.FormatInt8},
	{Format: model.FormatInt4, GroupSize: model.DefaultGroupSize},
	{Format: model.FormatInt4, GroupSize: 32, Embedding: model.FormatInt4},
}

// RunQuantizedFixtures loads every fixture quantized (LoadOptions.Quantize)
// on the CPU and on newBackend's backend and checks that both compute the
// same model: logits of every prompt position within tol of each other,
// and the same greedy ids. Quantized logits are not transformers', so the
// CPU, which dequantizes with the same formulas the kernels use, is the
// reference; how far quantization moves them from the float64 logits is
// logged, and for int8 bounded loosely (a broken quantizer moves them by
// far more).
func RunQuantizedFixtures(t *testing.T, newBackend func(t *testing.T) model.Backend, tol float64) {
	for _, fx := range Fixtures(t) {
		for _, q := range Quantizations {
			name := strings.NewReplacer(", ", "+", " ", "-").Replace(q.String())
			t.Run(fx.Name+"/"+name, func(t *testing.T) {
				opt := model.LoadOptions{Quantize: q}
				ref, err := model.Load(os.DirFS(fx.Dir), cpu.New(), opt)
				if err != nil {
					t.Fatal(err)
				}
				b := newBackend(t)
				defer b.Close()
				m, err := model.Load(os.DirFS(fx.Dir), b, opt)
				if err != nil {
					t.Fatal(err)
				}
				ref.GatedNorm, m.GatedNorm = fx.GatedNorm, fx.GatedNorm
				want, err := ref.NewState(1).Logits(fx.PromptIDs, nil)
				if err != nil {
					t.Fatal(err)
				}
				got, err := m.NewState(1).Logits(fx.PromptIDs, nil)
				if err != nil {
					t.Fatal(err)
				}
				wide := make([]float64, len(want))
				for i, v := range want {
					wide[i] = float64(v)
				}
				if d := MaxAbsDiff(got, wide); d > tol {
					t.Errorf("logits of %d positions: max |Δ| against the CPU = %.3g > %g", len(fx.PromptIDs), d, tol)
				}
				V := ref.Config.VocabSize
				drift, scale := MaxAbsDiff(want[len(want)-V:], fx.LogitsF64Last), 0.0
				for _, v := range fx.LogitsF64Last {
					scale = max(scale, math.Abs(v))
				}
				t.Logf("last position: max |Δ| from the float64 logits %.3g (largest logit %.3g)", drift, scale)
				// int8's step is under 1 % of a row's range, so its logits
				// stay close; int4's is 7 %, which the random fixtures
				// amplify layer by layer (its quality is measured by
				// perplexity on the trained model instead).
				if q.Format == model.FormatInt8 && drift > 0.1*scale {
					t.Errorf("int8 logits moved %.3g from the float model's, more than a tenth of the largest logit %.3g: the quantizer is broken", drift, scale)
				}
				gen := func(m *model.Model) []int {
					prompt := make([]int, len(fx.GreedyPromptIDs))
					for i, v := range fx.GreedyPromptIDs {
						prompt[i] = int(v)
					}
					res, err := m.Generate(context.Background(), prompt, model.Options{MaxNewTokens: len(fx.GreedyNewIDs), StopIDs: []int{}})
					if err != nil {
						t.Fatal(err)
					}
					return res.IDs
				}
				if g, w := gen(m), gen(ref); !slices.Equal(g, w) {
					t.Errorf("greedy ids differ from the CPU's:\n got %v\nwant %v", g, w)
				}
			})
		}
	}
}

// RunHiddenStates checks State.HiddenStates against transformers'
// Mamba2Model(output_hidden_states=True) in float64 on the tiny-g1
// fixture (hidden_states.json: the residual stream after each layer, then
// the final norm's output), every position within tol, and that the
// state continues as Forward leaves it.
func RunHiddenStates(t *testing.T, b model.Backend, tol float64) {
	dir := filepath.Join(Root(), "fixtures", "tiny-g1")
	raw, err := os.ReadFile(filepath.Join(dir, "hidden_states.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		IDs    []int32       `json:"prompt_ids"`
		Hidden [][][]float64 `json:"hidden_states_f64"`
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(os.DirFS(dir), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.GatedNorm = model.Full // transformers' (the fixture has one group, where both agree)
	m.PrefillChunk = 16      // several pieces, so the taps are stitched together
	st := m.NewState(1)
	defer st.Close()
	got, err := st.HiddenStates(want.IDs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want.Hidden) {
		t.Fatalf("%d hidden states, transformers gives %d", len(got), len(want.Hidden))
	}
	D := m.Config.Hidden
	for k, w := range want.Hidden {
		var flat []float64
		for _, row := range w {
			flat = append(flat, row...)
		}
		if len(flat) != len(got[k]) {
			t.Fatalf("hidden state %d: %d values, want %d", k, len(got[k]), len(flat))
		}
		if d := MaxAbsDiff(got[k], flat); d > tol {
			t.Errorf("hidden state %d (of %d positions × %d): max |Δ| = %.3g > %g", k, len(w), D, d, tol)
		}
	}
	if st.Pos != len(want.IDs) {
		t.Errorf("the state is at position %d after %d ids", st.Pos, len(want.IDs))
	}
}
