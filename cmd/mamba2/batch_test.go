package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/model/modeltest"
)

func joinIDs(ids []int) string {
	s := make([]string, len(ids))
	for i, v := range ids {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

// TestBatchLogitsFixture: logits --ids A --ids B --last runs the rows as
// one left-padded batch and gives the fixtures' transformers references
// (batch_last_logits_f64, within 1e-3); without --last every row's own
// positions equal the row run alone.
func TestBatchLogitsFixture(t *testing.T) {
	for _, c := range []struct{ folder, file, norm string }{
		{"tiny-g1", "expected.json", "grouped"},
		{"tiny-g4", "expected.json", "full"}, // expected_grouped.json has no batch
	} {
		t.Run(c.folder+"/"+c.norm, func(t *testing.T) {
			dir := fixtureDir(c.folder)
			raw, err := os.ReadFile(filepath.Join(dir, c.file))
			if err != nil {
				t.Fatal(err)
			}
			var fx struct {
				IDs    [][]int     `json:"batch_ids"`
				Mask   [][]int     `json:"batch_mask"`
				Last   [][]float64 `json:"batch_last_logits_f64"`
				Single [][]float64 `json:"batch_single_last_logits_f64"`
			}
			if err := json.Unmarshal(raw, &fx); err != nil {
				t.Fatal(err)
			}
			if len(fx.IDs) < 2 || len(fx.Last) != len(fx.IDs) {
				t.Fatalf("%s has %d batch rows and %d references", c.file, len(fx.IDs), len(fx.Last))
			}
			base := []string{"logits", "--backend", "cpu", "--model", dir, "--gated-norm", c.norm}
			args := slices.Clone(base)
			var rows [][]int
			for b, ids := range fx.IDs {
				var row []int
				for j, v := range ids {
					if fx.Mask[b][j] != 0 {
						row = append(row, v)
					}
				}
				rows = append(rows, row)
				args = append(args, "--ids", joinIDs(row))
			}
			type batchOut struct {
				Results []struct{ Logits [][]float32 }
			}
			parse := func(out string) batchOut {
				t.Helper()
				var r batchOut
				if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Results) != len(rows) {
					t.Fatalf("printed %.200q (%v), want %d results", out, err, len(rows))
				}
				return r
			}
			out, err := runCLI(t, "", append(args, "--last")...)
			if err != nil {
				t.Fatal(err)
			}
			last := parse(out)
			for b := range rows {
				got := last.Results[b].Logits
				if len(got) != 1 {
					t.Fatalf("row %d: %d rows of logits with --last, want 1", b, len(got))
				}
				if d := modeltest.MaxAbsDiff(got[0], fx.Last[b]); d > 1e-3 {
					t.Errorf("row %d: max |Δlogit| = %.3g from transformers' batch", b, d)
				}
				if fx.Single != nil {
					if d := modeltest.MaxAbsDiff(got[0], fx.Single[b]); d > 1e-3 {
						t.Errorf("row %d: max |Δlogit| = %.3g from transformers' row alone", b, d)
					}
				}
			}
			out, err = runCLI(t, "", args...)
			if err != nil {
				t.Fatal(err)
			}
			all := parse(out)
			for b, row := range rows {
				alone, err := runCLI(t, "", append(slices.Clone(base), "--ids", joinIDs(row))...)
				if err != nil {
					t.Fatal(err)
				}
				var want struct{ Logits [][]float64 }
				if err := json.Unmarshal([]byte(alone), &want); err != nil {
					t.Fatal(err)
				}
				got := all.Results[b].Logits
				if len(got) != len(row) || len(want.Logits) != len(row) {
					t.Fatalf("row %d of %d ids: %d rows of logits in the batch, %d alone", b, len(row), len(got), len(want.Logits))
				}
				for p := range row {
					if d := modeltest.MaxAbsDiff(got[p], want.Logits[p]); d > 1e-5 {
						t.Errorf("row %d position %d: the batch differs from the row alone by %.3g", b, p, d)
					}
				}
			}
		})
	}
}

// TestBatchGenerate: several prompts (repeated --prompt or --ids, or a
// prompts file) run together and each result equals generate with that
// prompt alone, greedy and sampled with a seed; results come in input
// order, with --json as {"results": [...]} and otherwise one per line.
func TestBatchGenerate(t *testing.T) {
	prompts := []string{"func main() {", "package http", "type Server struct {", "x := "}
	type result struct {
		IDs    []int   `json:"ids"`
		Text   string  `json:"text"`
		Reason string  `json:"reason"`
		Seed   *uint64 `json:"seed"`
	}
	gen := "generate --backend cpu --max-new-tokens 10 --json"
	file := filepath.Join(t.TempDir(), "prompts.txt")
	if err := os.WriteFile(file, []byte(strings.Join(prompts, "\r\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		extra []string
	}{
		{"greedy", nil},
		{"sampled", []string{"--temperature", "0.9", "--top-k", "50", "--seed", "5"}},
		{"penalties", []string{"--temperature", "0.7", "--repetition-penalty", "1.2", "--frequency-penalty", "0.4", "--seed", "9"}},
		{"stop", []string{"--stop", "\n"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var want []result
			var batch []string
			for _, p := range prompts {
				out, err := runCLI(t, "", append(append(strings.Fields(gen), c.extra...), "--prompt", p)...)
				if err != nil {
					t.Fatal(err)
				}
				var r result
				if err := json.Unmarshal([]byte(out), &r); err != nil {
					t.Fatalf("%q: %v", out, err)
				}
				want = append(want, r)
				batch = append(batch, "--prompt", p)
			}
			for _, form := range [][]string{batch, {"--prompts-file", file}, append(slices.Clone(batch), "--slots", "3")} {
				out, err := runCLI(t, "", append(append(strings.Fields(gen), c.extra...), form...)...)
				if err != nil {
					t.Fatal(err)
				}
				var got struct{ Results []result }
				if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Results) != len(prompts) {
					t.Fatalf("%v: printed %q (%v), want %d results", form[:2], out, err, len(prompts))
				}
				for i, r := range got.Results {
					w := want[i]
					if !slices.Equal(r.IDs, w.IDs) || r.Text != w.Text || (r.Seed == nil) != (w.Seed == nil) || r.Reason == "" {
						t.Errorf("%v: prompt %d: %v %q (%s), alone %v %q", form[:2], i, r.IDs, r.Text, r.Reason, w.IDs, w.Text)
					}
				}
			}
		})
	}
	// Ids without a tokenizer, printed one row per line.
	fx := fixtureDir("tiny-g1")
	rows := [][]int{{5, 6, 7, 8, 9}, {11, 12}, {300}}
	base := []string{"generate", "--backend", "cpu", "--model", fx, "--max-new-tokens", "4"}
	args := slices.Clone(base)
	var lines []string
	for _, row := range rows {
		out, err := runCLI(t, "", append(slices.Clone(base), "--ids", joinIDs(row))...)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.TrimSuffix(out, "\n"))
		args = append(args, "--ids", joinIDs(row))
	}
	out, err := runCLI(t, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(lines, "\n") + "\n"; out != want {
		t.Errorf("a batch of ids printed %q, one at a time %q", out, want)
	}
}

// TestBatchErrors: what batches refuse, by name.
func TestBatchErrors(t *testing.T) {
	dir := t.TempDir()
	blank := filepath.Join(dir, "blank.txt")
	if err := os.WriteFile(blank, []byte("a\n\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"generate", "--ids", "1", "--prompt", "x"}, "exactly one of"},
		{[]string{"generate", "--ids", "1", "--prompts-file", blank}, "exactly one of"},
		{[]string{"generate", "--prompts-file", blank}, "line 2 is empty"},
		{[]string{"generate", "--prompts-file", filepath.Join(dir, "missing")}, "--prompts-file"},
		{[]string{"generate", "--ids", "1", "--ids", "2", "--save-state", filepath.Join(dir, "s")}, "take one prompt"},
		{[]string{"generate", "--ids", "1", "--ids", "2,99999"}, "prompt 2: token id 99999"},
		{[]string{"generate", "--ids", "1", "--ids", "2", "--slots", "-1"}, "--slots"},
		{[]string{"logits", "--ids", "1", "--ids", "x"}, "not an integer"},
		{[]string{"logits", "--ids", "1", "--ids", "99999"}, "outside the vocabulary"},
	} {
		_, err := runCLI(t, "", append(c.args, "--backend", "cpu")...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// TestBatchWebGPU is one batch of each command on WebGPU: logits --last of
// the fixture's padded batch within 1e-3 of transformers, and generate of
// two id prompts equal to each run alone.
func TestBatchWebGPU(t *testing.T) {
	fx := modeltest.Fixtures(t)[0]
	raw, err := os.ReadFile(filepath.Join(fx.Dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Last [][]float64 `json:"batch_last_logits_f64"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	args := []string{"logits", "--backend", "webgpu", "--model", fx.Dir, "--last"}
	var rows [][]int
	for b, ids := range fx.BatchIDs {
		var row []int
		for j, v := range ids {
			if fx.BatchMask[b][j] != 0 {
				row = append(row, int(v))
			}
		}
		rows = append(rows, row)
		args = append(args, "--ids", joinIDs(row))
	}
	out, err := runCLI(t, "", args...)
	if err != nil && strings.Contains(err.Error(), "no WebGPU adapter") && os.Getenv("MAMBA2_REQUIRE_GPU") != "1" {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Results []struct{ Logits [][]float32 }
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Results) != len(ref.Last) {
		t.Fatalf("printed %.200q (%v)", out, err)
	}
	for b := range ref.Last {
		if d := modeltest.MaxAbsDiff(got.Results[b].Logits[0], ref.Last[b]); d > 1e-3 {
			t.Errorf("row %d: max |Δlogit| = %.3g from transformers' batch", b, d)
		}
	}
	gen := []string{"generate", "--backend", "webgpu", "--model", fx.Dir, "--max-new-tokens", "6", "--json"}
	batch := slices.Clone(gen)
	var want []string
	for _, row := range rows {
		out, err := runCLI(t, "", append(slices.Clone(gen), "--ids", joinIDs(row))...)
		if err != nil {
			t.Fatal(err)
		}
		var r struct{ IDs []int }
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		want = append(want, joinIDs(r.IDs))
		batch = append(batch, "--ids", joinIDs(row))
	}
	out, err = runCLI(t, "", batch...)
	if err != nil {
		t.Fatal(err)
	}
	var res struct{ Results []struct{ IDs []int } }
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Results) != len(rows) {
		t.Fatalf("printed %q (%v)", out, err)
	}
	for i, r := range res.Results {
		if joinIDs(r.IDs) != want[i] {
			t.Errorf("prompt %d: %v in the batch, %s alone", i, r.IDs, want[i])
		}
	}
}
