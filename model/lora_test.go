package model_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

func newCPU(t *testing.T) model.Backend { return cpu.New() }

// TestLoRAApart runs the kept-apart adapter checks on the CPU backend.
func TestLoRAApart(t *testing.T) { modeltest.RunLoRA(t, newCPU, newCPU) }

// loraModel is tiny-g4 with two adapters attached, "rs" and "two0".
func loraModel(t *testing.T) *model.Model {
	t.Helper()
	m, err := model.Load(os.DirFS(filepath.Join(modeltest.Root(), "fixtures", "tiny-g4")), cpu.New(), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Backend.Close() })
	m.GatedNorm = model.Full
	for n, a := range map[string]string{"rs": "g4-rslora", "two0": "g4-two-0"} {
		if err := m.AttachAdapter(n, modeltest.OpenLoRA(t, a)...); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// TestLoRAScheduler runs requests under different adapters (and none)
// at once in one batch: each gets exactly the ids it gets alone.
func TestLoRAScheduler(t *testing.T) {
	m := loraModel(t)
	prompt := []int{5, 17, 101, 33, 8, 250, 40}
	names := []string{"rs", "", "two0", "rs", ""}
	want := map[string][]int{}
	for _, n := range names {
		res, err := m.Generate(context.Background(), prompt, model.Options{Adapter: n, MaxNewTokens: 12, StopIDs: []int{}})
		if err != nil {
			t.Fatal(err)
		}
		want[n] = res.IDs
	}
	if slices.Equal(want["rs"], want[""]) || slices.Equal(want["two0"], want[""]) {
		t.Fatal("an adapter does not change the greedy ids; the test would prove nothing")
	}
	s, err := model.NewScheduler(m, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make([][]int, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			res, err := s.Generate(context.Background(), prompt, model.Options{Adapter: n, MaxNewTokens: 12, StopIDs: []int{}})
			got[i], errs[i] = res.IDs, err
		})
	}
	wg.Wait()
	for i, n := range names {
		if errs[i] != nil {
			t.Errorf("request %d (adapter %q): %v", i, n, errs[i])
		} else if !slices.Equal(got[i], want[n]) {
			t.Errorf("request %d (adapter %q): ids\n got %v\nwant %v (alone)", i, n, got[i], want[n])
		}
	}
	if _, err := s.Generate(context.Background(), prompt, model.Options{Adapter: "nope"}); err == nil {
		t.Error("a request for an unknown adapter ran")
	}
	// Adapters attach and detach through the scheduler's goroutine.
	if err := s.AttachAdapter("two1", modeltest.OpenLoRA(t, "g4-two-1")...); err != nil {
		t.Fatal(err)
	}
	res, err := s.Generate(context.Background(), prompt, model.Options{Adapter: "two1", MaxNewTokens: 4, StopIDs: []int{}})
	if err != nil || len(res.IDs) != 4 {
		t.Fatalf("under a newly attached adapter: %v, %v", res.IDs, err)
	}
	if err := s.DetachAdapter("two1"); err != nil {
		t.Errorf("detach once its request is done: %v", err)
	}
}

// TestLoRAPrefixCache checks that a cached prefix state made under one
// adapter is never restored for another or for the base model.
func TestLoRAPrefixCache(t *testing.T) {
	m := loraModel(t)
	prompt := []int{5, 17, 101, 33, 8, 250, 40, 9, 9, 12}
	c := model.NewPrefixCache(1 << 24)
	o := func(n string) model.Options {
		return model.Options{Adapter: n, MaxNewTokens: 6, StopIDs: []int{}}
	}
	for _, n := range []string{"rs", "", "two0", "rs"} {
		res, cached, err := c.Generate(context.Background(), m, prompt, []int{6}, o(n))
		if err != nil {
			t.Fatal(err)
		}
		alone, err := m.Generate(context.Background(), prompt, o(n))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.IDs, alone.IDs) {
			t.Errorf("adapter %q through the cache: ids %v, alone %v", n, res.IDs, alone.IDs)
		}
		t.Logf("adapter %q: %d cached", n, cached)
	}
	if st := c.Stats(); st.Entries != 3 || st.Hits != 1 {
		t.Errorf("cache: %d entries, %d hits; want 3 (one per adapter and the base) and 1 (rs's second call)", st.Entries, st.Hits)
	}
	if n, _ := c.Lookup(prompt); n != 6 {
		t.Errorf("Lookup (the base model's entries) finds %d tokens, want 6", n)
	}
}
