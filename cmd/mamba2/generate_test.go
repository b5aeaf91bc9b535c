package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSeed: without --seed sampling draws a seed (two runs differ) and
// --json prints it; giving that seed repeats the run exactly. --stats
// prints the speeds on stderr.
func TestSeed(t *testing.T) {
	type out struct {
		IDs  []int
		Text string
		Seed *uint64
	}
	gen := func(extra ...string) (out, string) {
		t.Helper()
		args := append([]string{"generate", "--backend", "cpu", "--prompt", goPrompt, "--max-new-tokens", "24", "--temperature", "1.5", "--json", "--stats"}, extra...)
		var o, e bytes.Buffer
		if err := run(context.Background(), args, strings.NewReader(""), &o, &e); err != nil {
			t.Fatal(err)
		}
		var r out
		if err := json.Unmarshal(o.Bytes(), &r); err != nil || r.Seed == nil {
			t.Fatalf("--json printed %q (%v), want a seed", o.String(), err)
		}
		return r, e.String()
	}
	a, stats := gen()
	b, _ := gen()
	if *a.Seed == *b.Seed {
		t.Errorf("two runs without --seed drew the same seed %d", *a.Seed)
	}
	if *a.Seed >= 1<<53 {
		t.Errorf("seed %d does not survive a JavaScript number", *a.Seed)
	}
	again, _ := gen("--seed", strconv.FormatUint(*a.Seed, 10))
	if *again.Seed != *a.Seed || !slices.Equal(again.IDs, a.IDs) || again.Text != a.Text {
		t.Errorf("--seed %d gave %v, the run that drew it %v", *a.Seed, again.IDs, a.IDs)
	}
	for _, want := range []string{"mamba2: prefill ", " tok/s, first token after ", "decode 23 tokens at "} {
		if !strings.Contains(stats, want) {
			t.Errorf("--stats printed %q, want %q in it", stats, want)
		}
	}
	// Greedy output has no seed to report.
	var o bytes.Buffer
	if err := run(context.Background(), []string{"generate", "--backend", "cpu", "--prompt", goPrompt, "--max-new-tokens", "2", "--json"}, strings.NewReader(""), &o, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(o.String(), "seed") {
		t.Errorf("greedy --json printed a seed: %s", o.String())
	}
}
