package modeltest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/mamba2web/mamba2/model"
)

// RunHybridScheduler checks continuous batching of a hybrid fixture's
// model m (LoadHybrid): requests of different prompts, lengths and
// settings run at once through a model.Scheduler of 1, 3 and more slots
// than requests must each get exactly the ids and reason Model.Generate
// gives them alone, although every slot's sequence is at its own position
// in the pool's KV caches, slots are reused, and a long request makes the
// pool's caches grow past their first capacity while others run. A
// request continuing a caller's state (Options.State) must leave it as
// Generate does, byte for byte as saved.
func RunHybridScheduler(t *testing.T, m *model.Model, exp HybridExpected) {
	m.SubmissionBudget = -1 // prefill pieces by memory only, the same in every run
	p := exp.PromptIDs
	ints := func(v []int32) []int {
		out := make([]int, len(v))
		for i, x := range v {
			out[i] = int(x)
		}
		return out
	}
	greedy := func(n int) model.Options { return model.Options{MaxNewTokens: n, StopIDs: []int{}} }
	// A stop id: the sixth token the long prompt continues with.
	probe, err := m.Generate(context.Background(), ints(p), greedy(8))
	if err != nil {
		t.Fatal(err)
	}
	type request struct {
		prompt []int
		o      model.Options
	}
	reqs := []request{
		{ints(p), greedy(40)}, // 77 positions: past the caches' first 64
		{ints(p[3:4]), greedy(6)},
		{ints(p[5:16]), model.Options{Sampling: model.Sampling{Temperature: 0.8, TopK: 40, Seed: 3}, MaxNewTokens: 12, StopIDs: []int{}}},
		{ints(p[:5]), greedy(1)},
		{ints(p[10:30]), model.Options{Sampling: model.Sampling{Temperature: 1.1, TopP: 0.9, RepetitionPenalty: 1.3,
			PresencePenalty: 0.4, Seed: 8}, MaxNewTokens: 10, StopIDs: []int{}}},
		{ints(p), model.Options{MaxNewTokens: 20, StopIDs: []int{probe.IDs[5]}}},
		{ints(p[20:23]), model.Options{Sampling: model.Sampling{Temperature: 1, Seed: 11}, MaxNewTokens: 15, StopIDs: []int{}}},
	}
	type outcome struct {
		ids    []int
		reason string
	}
	want := make([]outcome, len(reqs))
	for i, r := range reqs {
		res, err := m.Generate(context.Background(), r.prompt, r.o)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = outcome{res.IDs, res.Reason}
	}
	if want[5].reason != "eos" || want[0].reason != "length" {
		t.Fatalf("the reference runs ended with %q and %q; the requests no longer test a stop id and the length", want[5].reason, want[0].reason)
	}
	for _, slots := range []int{1, 3, len(reqs) + 2} {
		t.Run(fmt.Sprintf("%d slots", slots), func(t *testing.T) {
			s, err := model.NewScheduler(m, slots)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]outcome, len(reqs))
			errs := make([]error, len(reqs))
			var wg sync.WaitGroup
			for i, r := range reqs {
				wg.Go(func() {
					res, err := s.Generate(context.Background(), r.prompt, r.o)
					got[i], errs[i] = outcome{res.IDs, res.Reason}, err
				})
			}
			wg.Wait()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for i := range reqs {
				if errs[i] != nil || !slices.Equal(got[i].ids, want[i].ids) || got[i].reason != want[i].reason {
					t.Errorf("request %d: %v %q (%v), Generate alone %v %q", i, got[i].ids, got[i].reason, errs[i], want[i].ids, want[i].reason)
				}
			}
		})
	}
	t.Run("idle slot", func(t *testing.T) {
		// One request after another in two slots: the free slot runs on
		// the pad token at every step, and its position would pass the
		// caches' capacity during the second request; it starts over
		// instead, and the request in the other slot is undisturbed.
		s, err := model.NewScheduler(m, 2)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, r := range []request{{ints(p[:2]), greedy(60)}, {ints(p[:5]), greedy(10)}} {
			w, err := m.Generate(context.Background(), r.prompt, r.o)
			if err != nil {
				t.Fatal(err)
			}
			g, err := s.Generate(context.Background(), r.prompt, r.o)
			if err != nil || !slices.Equal(g.IDs, w.IDs) {
				t.Errorf("%d prompt tokens: %v (%v), Generate alone %v", len(r.prompt), g.IDs, err, w.IDs)
			}
		}
	})
	t.Run("state", func(t *testing.T) {
		// run feeds two prompts through gen on one state and returns the
		// ids and the state, which the caller saves once the backend is
		// its own again.
		run := func(gen func(context.Context, []int, model.Options) (model.Result, error)) ([]int, *model.State) {
			st := m.NewState(1)
			var ids []int
			for _, pr := range [][]int{ints(p[:9]), ints(p[9:12])} {
				res, err := gen(context.Background(), pr, model.Options{MaxNewTokens: 7, StopIDs: []int{}, State: st})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(append(ids, res.IDs...), -1)
			}
			return ids, st
		}
		save := func(st *model.State) []byte {
			defer st.Close()
			saved, err := st.Save()
			if err != nil {
				t.Fatal(err)
			}
			return saved
		}
		wantIDs, st := run(m.Generate)
		wantState := save(st)
		s, err := model.NewScheduler(m, 3)
		if err != nil {
			t.Fatal(err)
		}
		// Another request runs beside it, so the state's slot is not the
		// pool's only row and its position is not the others'.
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := s.Generate(context.Background(), ints(p), greedy(16)); err != nil {
				t.Error(err)
			}
		})
		gotIDs, st := run(s.Generate)
		wg.Wait()
		s.Close()
		gotState := save(st)
		if !slices.Equal(gotIDs, wantIDs) {
			t.Errorf("ids %v, Generate %v", gotIDs, wantIDs)
		}
		if !bytes.Equal(gotState, wantState) {
			t.Errorf("the state left differs from Generate's (%d bytes, Generate's %d)", len(gotState), len(wantState))
		}
	})
}
