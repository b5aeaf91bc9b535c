package modeltest

import (
	"context"
	"os"
	"testing"

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
			m, err := model.Load(os.DirFS(fx.Dir), b, nil)
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
