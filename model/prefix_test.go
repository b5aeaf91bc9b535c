package model_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/mamba2web/mamba2/model"
)

// TestPrefixCacheLookup: the longest cached prefix shorter than the ids
// wins; the byte bound forgets the least recently used entry; an entry over
// the bound is not kept; Put replaces an entry of the same ids.
func TestPrefixCacheLookup(t *testing.T) {
	state := func(n int) []byte { return make([]byte, n) }
	c := model.NewPrefixCache(1000)
	c.Put([]int{1, 2}, state(100))
	c.Put([]int{1, 2, 3, 4}, state(200))
	c.Put([]int{5}, state(100))
	for _, tc := range []struct {
		name  string
		ids   []int
		wantN int
	}{
		{"longest of two", []int{1, 2, 3, 4, 5}, 4},
		{"the shorter when the longer is not a prefix", []int{1, 2, 3, 9}, 2},
		{"never the whole prompt", []int{1, 2, 3, 4}, 2},
		{"no prefix", []int{2, 1}, 0},
		{"single token entry", []int{5, 5}, 1},
		{"empty", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, st := c.Lookup(tc.ids)
			if n != tc.wantN || (n > 0) != (st != nil) {
				t.Errorf("Lookup(%v) = %d (state %v), want %d", tc.ids, n, st != nil, tc.wantN)
			}
		})
	}
	if s := c.Stats(); s.Entries != 3 || s.Bytes != 100+16+200+32+100+8 || s.Hits != 4 || s.Misses != 2 {
		t.Errorf("stats %+v", s)
	}

	// [1 2 3 4] was used last among the three, then [5], then [1 2]:
	// a 700-byte entry must evict [1 2] and then [5].
	c.Lookup([]int{5, 1})
	c.Lookup([]int{1, 2, 3, 4, 0})
	c.Put([]int{7}, state(700))
	if c.Contains([]int{1, 2}) || c.Contains([]int{5}) || !c.Contains([]int{1, 2, 3, 4}) || !c.Contains([]int{7}) {
		t.Errorf("after eviction: %+v", c.Stats())
	}
	if s := c.Stats(); s.Bytes > 1000 {
		t.Errorf("over the bound: %d bytes", s.Bytes)
	}
	c.Put([]int{8}, state(2000))
	if c.Contains([]int{8}) {
		t.Error("an entry over the bound was kept")
	}
	c.Put([]int{7}, state(10))
	if s := c.Stats(); s.Entries != 2 || s.Bytes != 10+8+200+32 {
		t.Errorf("after replacing: %+v", s)
	}
	c.Remove([]int{7})
	if c.Contains([]int{7}) {
		t.Error("Remove left the entry")
	}
}

// TestPrefixCacheGenerate: generating through the cache gives the same
// greedy tokens and text as without it, the first time (when it saves the
// prefixes) and the second (when it restores them), and a prompt that
// shares only the first prefix restores that one.
func TestPrefixCacheGenerate(t *testing.T) {
	m, tok := tinyModel(t)
	ctx := context.Background()
	system := tok.Encode("// Package main is a small command.\npackage main\n\nimport (\n")
	turn := tok.Encode("\t\"fmt\"\n)\n\nfunc main() {\n")
	other := tok.Encode("\t\"os\"\n)\n\nfunc run() error {\n")
	o := model.Options{MaxNewTokens: 12, Decode: tok.Decode}
	c := model.NewPrefixCache(64 << 20)
	for _, tc := range []struct {
		name       string
		prompt     []int
		points     []int
		wantCached int
	}{
		{"cold: saves both points", concat(system, turn), []int{len(system), len(system) + len(turn) - 2}, 0},
		{"warm: the longer point", concat(system, turn), []int{len(system), len(system) + len(turn) - 2}, len(system) + len(turn) - 2},
		{"shares the system prompt", concat(system, other), []int{len(system)}, len(system)},
		{"points past the prompt are ignored", concat(system, other), []int{len(system), 1000}, len(system)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := m.Generate(ctx, tc.prompt, o)
			if err != nil {
				t.Fatal(err)
			}
			got, cached, err := c.Generate(ctx, m, tc.prompt, tc.points, o)
			if err != nil {
				t.Fatal(err)
			}
			if cached != tc.wantCached {
				t.Errorf("cached %d tokens, want %d", cached, tc.wantCached)
			}
			if !slices.Equal(got.IDs, want.IDs) || got.Text != want.Text || got.Reason != want.Reason {
				t.Errorf("through the cache %v %q (%s), without %v %q (%s)", got.IDs, got.Text, got.Reason, want.IDs, want.Text, want.Reason)
			}
		})
	}
	if s := c.Stats(); s.Entries != 2 {
		t.Errorf("%d entries, want 2 (system, system+turn)", s.Entries)
	}
	if _, _, err := c.Generate(ctx, m, system, nil, model.Options{State: m.NewState(1)}); err == nil {
		t.Error("Options.State was accepted")
	}
}

func concat(a, b []int) []int { return append(slices.Clone(a), b...) }

// TestPrefixCacheGenerateOn: through a Scheduler, the cache gives the
// tokens and text Model.Generate gives without it (a repetition penalty
// included, which GenerateOn does not bypass), restores what it saved, and
// counts only the tokens fed in Result.Timing; requests of a shared
// system prompt may run at once.
func TestPrefixCacheGenerateOn(t *testing.T) {
	m, tok := tinyModel(t)
	ctx := context.Background()
	system := tok.Encode("// Package main is a small command.\npackage main\n\nimport (\n")
	turn := tok.Encode("\t\"fmt\"\n)\n\nfunc main() {\n")
	other := tok.Encode("\t\"os\"\n)\n\nfunc run() error {\n")
	o := model.Options{MaxNewTokens: 12, Decode: tok.Decode}
	penalized := o
	penalized.RepetitionPenalty = 1.3
	type tcase struct {
		name       string
		prompt     []int
		points     []int
		o          model.Options
		wantCached int
	}
	cases := []tcase{
		{"cold: saves both points", concat(system, turn), []int{len(system), len(system) + len(turn) - 2}, o, 0},
		{"warm: the longer point", concat(system, turn), []int{len(system), len(system) + len(turn) - 2}, o, len(system) + len(turn) - 2},
		{"shares the system prompt", concat(system, other), []int{len(system)}, o, len(system)},
		{"repetition penalty", concat(system, other), []int{len(system)}, penalized, len(system)},
	}
	want := make([]model.Result, len(cases))
	for i, tc := range cases {
		var err error
		if want[i], err = m.Generate(ctx, tc.prompt, tc.o); err != nil {
			t.Fatal(err)
		}
	}
	s, err := model.NewScheduler(m, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := model.NewPrefixCache(64 << 20)
	check := func(t *testing.T, i int, got model.Result, cached int, err error) {
		t.Helper()
		tc, w := cases[i], want[i]
		if err != nil {
			t.Errorf("%s: %v", tc.name, err) // not Fatal: check runs on other goroutines too
			return
		}
		if !slices.Equal(got.IDs, w.IDs) || got.Text != w.Text || got.Reason != w.Reason {
			t.Errorf("through the cache %v %q (%s), without %v %q (%s)", got.IDs, got.Text, got.Reason, w.IDs, w.Text, w.Reason)
		}
		if cached >= 0 && cached != tc.wantCached {
			t.Errorf("cached %d tokens, want %d", cached, tc.wantCached)
		}
		if got.Timing.PromptTokens >= len(tc.prompt) && cached > 0 {
			t.Errorf("timing counts %d prompt tokens of %d, %d restored", got.Timing.PromptTokens, len(tc.prompt), cached)
		}
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, cached, err := c.GenerateOn(ctx, s, tc.prompt, tc.points, tc.o)
			check(t, i, got, cached, err)
		})
	}
	t.Run("at once", func(t *testing.T) {
		var wg sync.WaitGroup
		for i, tc := range cases {
			wg.Go(func() {
				got, _, err := c.GenerateOn(ctx, s, tc.prompt, tc.points, tc.o)
				check(t, i, got, -1, err) // what was cached depends on the order
			})
		}
		wg.Wait()
	})
	if _, _, err := c.GenerateOn(ctx, s, system, nil, model.Options{State: m.NewState(1)}); err == nil {
		t.Error("Options.State was accepted")
	}
}
