package wgsl

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestSchedulerWebGPU runs concurrent requests through a model.Scheduler on
// the GPU and checks each against Model.Generate alone on the same
// backend: greedy and seeded rows that share their settings (one device
// sampler call per step), then rows with different settings and penalties
// (sampled on the host), with fewer slots than requests. Both copy each
// admitted prompt's state into its slot with CopyRows.
func TestSchedulerWebGPU(t *testing.T) {
	b := open(t, Options{})
	fx := modeltest.Fixtures(t)[0]
	m, err := model.Load(os.DirFS(fx.Dir), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.GatedNorm = fx.GatedNorm
	m.SubmissionBudget = -1 // prefill pieces by memory only, the same in both runs
	prompts := [][]int{{5, 6, 7, 8, 9, 10, 11}, {300}, {42, 17, 99, 123}, {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}}
	sampled := func(seed uint64) model.Options {
		return model.Options{Sampling: model.Sampling{Temperature: 0.8, TopK: 40, Seed: seed}, MaxNewTokens: 9, StopIDs: []int{}}
	}
	for _, c := range []struct {
		name string
		opts []model.Options
	}{
		{"shared", []model.Options{
			{MaxNewTokens: 12, StopIDs: []int{}}, {MaxNewTokens: 5, StopIDs: []int{}},
			{MaxNewTokens: 9, StopIDs: []int{}}, {MaxNewTokens: 1, StopIDs: []int{}},
		}},
		{"seeded", []model.Options{sampled(1), sampled(2), sampled(3), sampled(4)}},
		{"mixed", []model.Options{
			{MaxNewTokens: 10, StopIDs: []int{}}, sampled(5),
			{Sampling: model.Sampling{Temperature: 1.1, TopP: 0.9, RepetitionPenalty: 1.3, PresencePenalty: 0.4, Seed: 8}, MaxNewTokens: 11, StopIDs: []int{}},
			{Sampling: model.Sampling{RepetitionPenalty: 1.5}, MaxNewTokens: 6, StopIDs: []int{}},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := make([][]int, len(prompts))
			for i, p := range prompts {
				res, err := m.Generate(context.Background(), p, c.opts[i])
				if err != nil {
					t.Fatal(err)
				}
				want[i] = res.IDs
			}
			s, err := model.NewScheduler(m, 3)
			if err != nil {
				t.Fatal(err)
			}
			got := make([][]int, len(prompts))
			errs := make([]error, len(prompts))
			var wg sync.WaitGroup
			for i, p := range prompts {
				wg.Go(func() {
					res, err := s.Generate(context.Background(), p, c.opts[i])
					got[i], errs[i] = res.IDs, err
				})
			}
			wg.Wait()
			s.Close()
			for i := range prompts {
				if errs[i] != nil || !slices.Equal(got[i], want[i]) {
					t.Errorf("request %d: %v (%v), Generate alone %v", i, got[i], errs[i], want[i])
				}
			}
		})
	}
}

// TestCopyRowsWebGPU: CopyRows between dispatches sees the work recorded
// before it and is seen by the work after it, and bad arguments are
// reported by the next Read.
func TestCopyRowsWebGPU(t *testing.T) {
	b := open(t, Options{})
	src, dst := b.Alloc(model.F32, 3, 5), b.Alloc(model.F32, 4, 5)
	vals := make([]float32, 15)
	for i := range vals {
		vals[i] = float32(i + 1)
	}
	b.Write(src, vals)
	b.Write(dst, slices.Repeat([]float32{-1}, 20))
	b.Zero(dst) // recorded: the copy must land after it
	b.CopyRows(dst, 1, src, 1, 2)
	got, err := b.Read(dst)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, 20)
	copy(want[5:15], vals[5:15])
	if !slices.Equal(got, want) {
		t.Errorf("after Zero and CopyRows: %v, want %v", got, want)
	}
	b.CopyRows(dst, 0, src, 2, 1)
	b.Zero(src) // recorded after the copy: the copy reads the old rows
	if got, err = b.Read(dst); err != nil || !slices.Equal(got[:5], vals[10:15]) {
		t.Errorf("copy before Zero of the source: %v (%v), want %v", got[:5], err, vals[10:15])
	}
	for _, bad := range []func(){
		func() { b.CopyRows(dst, 3, src, 0, 2) },
		func() { b.CopyRows(dst, 0, dst, 1, 1) },
		func() { b.CopyRows(dst, 0, b.Alloc(model.F32, 2, 4), 0, 1) },
	} {
		bad()
		if _, err := b.Read(dst); err == nil {
			t.Error("a bad CopyRows was not reported")
		}
	}
}
