package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
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
	// Each token after the first is a decode step; a run that ends on the
	// end-of-sequence token (a draw at temperature 1.5 may) also counts the
	// step that chose it, which is not among the ids.
	steps := len(a.IDs) - 1
	if len(a.IDs) < 24 {
		steps = len(a.IDs)
	}
	for _, want := range []string{"mamba2: prefill ", " tok/s, first token after ", fmt.Sprintf("decode %d tokens at ", steps)} {
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

// generate --save-state after a prompt X (prefill only), then
// --load-state with Y, gives what --ids X,Y gives; a state of another
// model and a missing file are refused by name.
func TestSaveLoadState(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "x.state")
	out, err := runCLI(t, "", "generate", "--backend", "cpu", "--ids", "10,20,30,40", "--max-new-tokens", "0", "--save-state", state)
	if err != nil || !strings.Contains(out, `"positions":4`) {
		t.Fatalf("save: %v\n%s", err, out)
	}
	cont, err := runCLI(t, "", "generate", "--backend", "cpu", "--ids", "50,60", "--load-state", state, "--max-new-tokens", "6", "--json")
	if err != nil {
		t.Fatal(err)
	}
	whole, err := runCLI(t, "", "generate", "--backend", "cpu", "--ids", "10,20,30,40,50,60", "--max-new-tokens", "6", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if cont != whole {
		t.Errorf("--load-state then Y:\n%s\n--ids X,Y:\n%s", cont, whole)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--model", fixtureDir("tiny-g1"), "--ids", "1", "--load-state", state}, "another model"},
		{[]string{"--ids", "1", "--load-state", filepath.Join(dir, "missing")}, "--load-state"},
		{[]string{"--ids", "1", "--max-new-tokens", "0"}, "0 only with --save-state"},
	} {
		_, err := runCLI(t, "", append([]string{"generate", "--backend", "cpu"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// mamba2 hidden --layers all gives transformers' output_hidden_states on
// the tiny-g1 fixture; --mean averages the positions.
func TestHidden(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(fixtureDir("tiny-g1"), "hidden_states.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		IDs    []int         `json:"prompt_ids"`
		Hidden [][][]float64 `json:"hidden_states_f64"`
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(want.IDs))
	for i, v := range want.IDs {
		ids[i] = strconv.Itoa(v)
	}
	args := []string{"hidden", "--backend", "cpu", "--model", fixtureDir("tiny-g1"), "--gated-norm", "full", "--ids", strings.Join(ids, ",")}
	out, err := runCLI(t, "", append(args, "--layers", "all")...)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Layers []int         `json:"layers"`
		Hidden [][][]float64 `json:"hidden_states"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Hidden) != len(want.Hidden) || !slices.Equal(got.Layers, []int{0, 1, 2}) {
		t.Fatalf("layers %v, %d hidden states, want 3", got.Layers, len(got.Hidden))
	}
	for k := range want.Hidden {
		for p := range want.Hidden[k] {
			for d, w := range want.Hidden[k][p] {
				if g := got.Hidden[k][p][d]; math.Abs(g-w) > 1e-4 {
					t.Fatalf("hidden state %d, position %d, [%d] = %v, want %v", k, p, d, g, w)
				}
			}
		}
	}
	out, err = runCLI(t, "", append(args, "--mean")...)
	if err != nil {
		t.Fatal(err)
	}
	var pooled struct {
		Hidden [][]float64 `json:"hidden_states"`
	}
	if err := json.Unmarshal([]byte(out), &pooled); err != nil || len(pooled.Hidden) != 1 {
		t.Fatalf("--mean: %v\n%s", err, out)
	}
	last := want.Hidden[len(want.Hidden)-1]
	for d := range pooled.Hidden[0] {
		var s float64
		for p := range last {
			s += last[p][d]
		}
		if w := s / float64(len(last)); math.Abs(pooled.Hidden[0][d]-w) > 1e-4 {
			t.Fatalf("--mean [%d] = %v, want %v", d, pooled.Hidden[0][d], w)
		}
	}
	if _, err := runCLI(t, "", "hidden", "--backend", "cpu", "--ids", "1", "--layers", "9"); err == nil || !strings.Contains(err.Error(), "from 0 to 8") {
		t.Errorf("--layers 9: %v", err)
	}
}
