package model_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/tokenizer"
)

// schedCase is one request for the scheduler tests: a prompt and options
// (Decode and OnText are filled in by the test).
type schedCase struct {
	name   string
	prompt string
	o      model.Options
	text   bool // decode the text and stream it through OnText
}

func schedCases() []schedCase {
	return []schedCase{
		{name: "greedy", prompt: "package main\n\nimport (\n", o: model.Options{MaxNewTokens: 20}},
		{name: "greedy short", prompt: "func", o: model.Options{MaxNewTokens: 5}},
		{name: "one token", prompt: "x := ", o: model.Options{MaxNewTokens: 1}},
		{name: "top-k", prompt: "type Server struct {\n", o: model.Options{
			Sampling: model.Sampling{Temperature: 0.8, TopK: 40, Seed: 1}, MaxNewTokens: 30}, text: true},
		{name: "top-p min-p", prompt: "// Package http", o: model.Options{
			Sampling: model.Sampling{Temperature: 1.2, TopP: 0.9, MinP: 0.05, Seed: 7}, MaxNewTokens: 25}, text: true},
		{name: "penalties", prompt: "for i := 0; i < n; i++ {\n", o: model.Options{
			Sampling: model.Sampling{Temperature: 0.7, RepetitionPenalty: 1.3, PresencePenalty: 0.5,
				FrequencyPenalty: 0.3, Seed: 3}, MaxNewTokens: 16}, text: true},
		{name: "greedy penalty", prompt: "if err != nil {\n", o: model.Options{
			Sampling: model.Sampling{RepetitionPenalty: 1.5}, MaxNewTokens: 12}},
		{name: "stop string", prompt: "package main\n\nimport (\n", o: model.Options{
			MaxNewTokens: 40, StopStrings: []string{"\"fmt\""}}, text: true},
		{name: "seeded long", prompt: "func main() {\n", o: model.Options{
			Sampling: model.Sampling{Temperature: 1, Seed: 11}, MaxNewTokens: 48}, text: true},
	}
}

// runCase runs c with run (Model.Generate or Scheduler.Generate) and
// returns the result and the pieces OnText received, joined.
func runCase(t *testing.T, tok *tokenizer.Tokenizer, c schedCase, run func(context.Context, []int, model.Options) (model.Result, error)) (model.Result, string) {
	t.Helper()
	o := c.o
	var mu sync.Mutex
	var pieces []string
	if c.text || len(o.StopStrings) > 0 {
		o.Decode = tok.Decode
		o.OnText = func(s string) error { mu.Lock(); pieces = append(pieces, s); mu.Unlock(); return nil }
	}
	res, err := run(context.Background(), tok.Encode(c.prompt), o)
	if err != nil {
		t.Errorf("%s: %v", c.name, err)
	}
	return res, strings.Join(pieces, "")
}

// TestScheduler runs requests of different lengths and settings at once
// through a scheduler of fewer slots than requests (so some queue, and
// slots are reused), and checks each gets exactly what Model.Generate gives
// it alone: the same ids (greedy, and sampled with a seed, penalties
// included), text, reason and streamed pieces.
func TestScheduler(t *testing.T) {
	m, tok := tinyModel(t)
	cases := schedCases()
	type outcome struct {
		res    model.Result
		pieces string
	}
	want := make([]outcome, len(cases))
	for i, c := range cases {
		want[i].res, want[i].pieces = runCase(t, tok, c, m.Generate)
	}
	if want[7].res.Reason != "stop" || want[0].res.Reason != "length" {
		t.Fatalf("the reference runs ended with %q and %q; the cases no longer test a stop string and the length", want[7].res.Reason, want[0].res.Reason)
	}
	for _, slots := range []int{1, 3, len(cases) + 2} {
		s, err := model.NewScheduler(m, slots)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]outcome, len(cases))
		var wg sync.WaitGroup
		for i, c := range cases {
			wg.Go(func() { got[i].res, got[i].pieces = runCase(t, tok, c, s.Generate) })
		}
		wg.Wait()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			g, w := got[i], want[i]
			if !slices.Equal(g.res.IDs, w.res.IDs) || g.res.Text != w.res.Text || g.res.Reason != w.res.Reason {
				t.Errorf("%d slots, %s: got %v %q (%s), Generate alone %v %q (%s)", slots, c.name,
					g.res.IDs, g.res.Text, g.res.Reason, w.res.IDs, w.res.Text, w.res.Reason)
			}
			if g.pieces != w.pieces {
				t.Errorf("%d slots, %s: streamed %q, Generate streamed %q", slots, c.name, g.pieces, w.pieces)
			}
			if tm := g.res.Timing; tm.PromptTokens != len(tok.Encode(c.prompt)) || tm.Steps != w.res.Timing.Steps {
				t.Errorf("%d slots, %s: timing counts %d prompt tokens and %d steps, Generate %d and %d", slots, c.name,
					tm.PromptTokens, tm.Steps, w.res.Timing.PromptTokens, w.res.Timing.Steps)
			}
		}
	}
}

// TestSchedulerStopIDs: a stop id ends a request with reason "eos" and is
// not in the ids, as in Generate.
func TestSchedulerStopIDs(t *testing.T) {
	m, tok := tinyModel(t)
	prompt := tok.Encode("package main\n\nimport (\n")
	full, err := m.Generate(context.Background(), prompt, model.Options{MaxNewTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	o := model.Options{MaxNewTokens: 12, StopIDs: []int{full.IDs[5]}}
	want, err := m.Generate(context.Background(), prompt, o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := model.NewScheduler(m, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Generate(context.Background(), prompt, o)
	if err != nil {
		t.Fatal(err)
	}
	if got.Reason != "eos" || !slices.Equal(got.IDs, want.IDs) || len(got.IDs) > 5 {
		t.Errorf("got %v (%s), Generate %v (%s)", got.IDs, got.Reason, want.IDs, want.Reason)
	}
}

// TestSchedulerState: with Options.State the scheduler continues the
// caller's state and leaves it as Generate does (after the prompt and every
// generated token but the last), bit for bit, however the request ends; a
// second call continues from it.
func TestSchedulerState(t *testing.T) {
	m, tok := tinyModel(t)
	first, second := tok.Encode("package main\n\n"), tok.Encode("import (\n")
	for _, c := range []struct {
		name string
		o    model.Options
	}{
		{"length", model.Options{MaxNewTokens: 6}},
		{"stop string", model.Options{MaxNewTokens: 30, StopStrings: []string{"\n"}, Decode: tok.Decode}},
		{"sampled", model.Options{MaxNewTokens: 8, Sampling: model.Sampling{Temperature: 1, Seed: 5}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := func(gen func(context.Context, []int, model.Options) (model.Result, error)) ([]int, []byte) {
				st := m.NewState(1)
				defer st.Close()
				o := c.o
				o.State = st
				var ids []int
				for _, p := range [][]int{first, second} {
					res, err := gen(context.Background(), p, o)
					if err != nil {
						t.Fatal(err)
					}
					ids = append(append(ids, res.IDs...), -1)
				}
				saved, err := st.Save()
				if err != nil {
					t.Fatal(err)
				}
				return ids, saved
			}
			wantIDs, wantState := run(m.Generate)
			s, err := model.NewScheduler(m, 3)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			gotIDs, gotState := run(s.Generate)
			if !slices.Equal(gotIDs, wantIDs) {
				t.Errorf("ids %v, Generate %v", gotIDs, wantIDs)
			}
			if !bytes.Equal(gotState, wantState) {
				t.Errorf("the state left differs from Generate's (%d bytes)", len(wantState))
			}
		})
	}
}

// TestSchedulerCancel: a request whose context is cancelled returns the
// context's error with what it had, and the requests running beside it are
// not disturbed; a cancelled request still queued never runs.
func TestSchedulerCancel(t *testing.T) {
	m, tok := tinyModel(t)
	prompt := tok.Encode("func main() {\n")
	o := model.Options{MaxNewTokens: 30, StopIDs: []int{}}
	want, err := m.Generate(context.Background(), prompt, o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := model.NewScheduler(m, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var other model.Result
	var otherErr error
	wg.Go(func() { other, otherErr = s.Generate(context.Background(), prompt, o) })
	co := o
	co.OnToken = func(id int) error {
		if id >= 0 {
			cancel()
		}
		return nil
	}
	res, err := s.Generate(ctx, prompt, co)
	if !errors.Is(err, context.Canceled) || len(res.IDs) == 0 || len(res.IDs) >= 30 {
		t.Errorf("cancelled request: %d ids, error %v; want a few ids and context.Canceled", len(res.IDs), err)
	}
	dead, dcancel := context.WithCancel(context.Background())
	dcancel()
	if _, err := s.Generate(dead, prompt, o); !errors.Is(err, context.Canceled) {
		t.Errorf("request with a cancelled context: %v", err)
	}
	wg.Wait()
	if otherErr != nil || !slices.Equal(other.IDs, want.IDs) {
		t.Errorf("the request beside it: %v (%v), want %v", other.IDs, otherErr, want.IDs)
	}
}

// TestSchedulerErrors: the checks of Generate, a callback's error, and Close.
func TestSchedulerErrors(t *testing.T) {
	m, tok := tinyModel(t)
	if _, err := model.NewScheduler(m, 0); err == nil {
		t.Error("a scheduler of 0 slots was made")
	}
	s, err := model.NewScheduler(m, 2)
	if err != nil {
		t.Fatal(err)
	}
	other := m.NewState(2)
	defer other.Close()
	boom := errors.New("boom")
	for _, c := range []struct {
		name   string
		prompt []int
		o      model.Options
		want   string
	}{
		{"empty prompt", nil, model.Options{}, "the prompt is empty"},
		{"bad id", []int{1, m.Config.VocabSize}, model.Options{}, "outside the vocabulary"},
		{"stop strings", []int{1}, model.Options{StopStrings: []string{"x"}}, "need a Decode"},
		{"OnText", []int{1}, model.Options{OnText: func(string) error { return nil }}, "OnText needs a Decode"},
		{"sampling", []int{1}, model.Options{Sampling: model.Sampling{TopP: 2}}, "top-p"},
		{"state", []int{1}, model.Options{State: other}, "batch of one"},
		{"callback", []int{1, 2}, model.Options{OnToken: func(int) error { return boom }}, "boom"},
	} {
		res, err := s.Generate(context.Background(), c.prompt, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one with %q", c.name, err, c.want)
		}
		if c.name == "callback" && (!errors.Is(err, boom) || len(res.IDs) != 1) {
			t.Errorf("callback: %v ids, error %v; want the one id and the callback's error", res.IDs, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Generate(context.Background(), tok.Encode("x"), model.Options{}); !errors.Is(err, model.ErrSchedulerClosed) {
		t.Errorf("Generate after Close: %v", err)
	}
}

// TestCopyRows checks the CPU's RowCopier and the host fallback (a backend
// without it) against each other, and the argument checks.
func TestCopyRows(t *testing.T) {
	for _, c := range []struct {
		name string
		b    model.Backend
	}{{"cpu", cpu.New()}, {"fallback", hostOnly{cpu.New()}}} {
		b := c.b
		dst, src := b.Alloc(model.F32, 4, 2, 3), b.Alloc(model.F32, 2, 2, 3)
		vals := make([]float32, 12)
		for i := range vals {
			vals[i] = float32(i + 1)
		}
		b.Write(src, vals)
		if err := model.CopyRows(b, dst, 2, src, 1, 1); err != nil {
			t.Fatal(err)
		}
		got, _ := b.Read(dst)
		want := make([]float32, 24)
		copy(want[12:18], vals[6:12])
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", c.name, got, want)
		}
		for _, bad := range []struct {
			dst, src      model.Tensor
			dRow, sRow, n int
			want          string
		}{
			{dst, src, 3, 0, 2, "out of range"},
			{dst, src, 0, -1, 1, "out of range"},
			{dst, dst, 0, 1, 1, "same tensor"},
			{dst, b.Alloc(model.F32, 2, 3, 2), 0, 0, 1, "do not fit"},
		} {
			if err := model.CopyRows(b, bad.dst, bad.dRow, bad.src, bad.sRow, bad.n); err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Errorf("%s: copy %d rows from %d to %d: %v, want %q", c.name, bad.n, bad.sRow, bad.dRow, err, bad.want)
			}
		}
	}
}

// hostOnly hides the CPU backend's RowCopier, so CopyRows falls back to
// Read and Write.
type hostOnly struct{ model.Backend }

// panicky is a backend whose MatMul panics from its after-th call on, as
// a driver bug or a lost device might make a backend fail mid-step.
type panicky struct {
	model.Backend
	calls *atomic.Int64
	after int64
}

func (p panicky) MatMul(out, x, w, bias model.Tensor, pr model.Product) {
	if p.calls.Add(1) >= p.after {
		panic("the device fell over")
	}
	p.Backend.MatMul(out, x, w, bias, pr)
}

// TestSchedulerPanic: a panic in the decode loop ends every running and
// queued request with an error (the loop's failure, or the closed
// scheduler's for a request that came after), and later calls are
// refused, instead of the panic ending the program. The backend fails
// after a fixed number of products, so the test does not depend on how
// goroutines are scheduled (js/wasm runs them on one thread).
func TestSchedulerPanic(t *testing.T) {
	m, tok := tinyModel(t)
	var calls atomic.Int64
	pm := *m
	pm.Backend = panicky{Backend: m.Backend, calls: &calls, after: int64(3*(2*m.Config.Layers+1) + 5)}
	s, err := model.NewScheduler(&pm, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	prompt := tok.Encode("package main\n")
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Generate(context.Background(), prompt, model.Options{MaxNewTokens: 200, StopIDs: []int{}})
		}()
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		switch {
		case err != nil && strings.Contains(err.Error(), "decode loop failed"):
			failed++
		case errors.Is(err, model.ErrSchedulerClosed):
		default:
			t.Errorf("request %d: %v, want the loop's failure or a closed scheduler", i, err)
		}
	}
	if failed == 0 {
		t.Error("no request reported the loop's failure")
	}
	if _, err := s.Generate(context.Background(), prompt, model.Options{MaxNewTokens: 2}); err == nil {
		t.Error("a broken scheduler took a new request")
	}
}
