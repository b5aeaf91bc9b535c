package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/model/modeltest"
	"github.com/mamba2web/mamba2/serve"
)

// loraExpected is one case of testdata/fixtures/lora/expected.json.
type loraExpected struct {
	Base      string    `json:"base"`
	Adapters  []string  `json:"adapters"`
	PromptIDs []int     `json:"prompt_ids"`
	Last      []float64 `json:"logits_f64_last"`
	First     []float64 `json:"logits_f64_first"`
	GreedyIn  []int     `json:"greedy_prompt_ids"`
	GreedyNew []int     `json:"greedy_f64_new_ids"`
}

func loraCase(t *testing.T, name string) loraExpected {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtureDir("lora"), "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Cases map[string]loraExpected }
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	c, ok := e.Cases[name]
	if !ok {
		t.Fatalf("expected.json has no case %s", name)
	}
	return c
}

// TestAdapterCLI runs logits and generate with --adapter (repeated, for
// the case of two adapters merged in order) on the CPU and on WebGPU
// (lavapipe here), and checks PEFT's merged float64 model's first and
// last logits and greedy ids. tiny-g4's reference is transformers', so
// --gated-norm full.
func TestAdapterCLI(t *testing.T) {
	for _, tc := range []struct{ name, backend string }{
		{"g4-two", "cpu"}, {"g1-emb-in-out", "cpu"},
		{"g4-two", "webgpu"}, {"g1-emb-in-out", "webgpu"},
	} {
		t.Run(tc.name+"/"+tc.backend, func(t *testing.T) {
			c := loraCase(t, tc.name)
			args := []string{"--backend", tc.backend, "--model", fixtureDir(c.Base), "--gated-norm", "full"}
			for _, a := range c.Adapters {
				args = append(args, "--adapter", filepath.Join(fixtureDir("lora"), a))
			}
			out, err := runCLI(t, "", append([]string{"logits", "--ids", joinIDs(c.PromptIDs)}, args...)...)
			if err != nil && tc.backend == "webgpu" && strings.Contains(err.Error(), "no WebGPU adapter") && os.Getenv("MAMBA2_REQUIRE_GPU") != "1" {
				t.Skipf("skipping: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			var res struct{ Logits [][]float32 }
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatal(err)
			}
			if len(res.Logits) != len(c.PromptIDs) {
				t.Fatalf("%d rows of logits, want %d", len(res.Logits), len(c.PromptIDs))
			}
			first, last := modeltest.MaxAbsDiff(res.Logits[0], c.First), modeltest.MaxAbsDiff(res.Logits[len(res.Logits)-1], c.Last)
			t.Logf("max |Δlogit| first %.3g, last %.3g", first, last)
			if first > 1e-3 || last > 1e-3 {
				t.Errorf("max |Δlogit| first %.3g, last %.3g > 1e-3", first, last)
			}
			out, err = runCLI(t, "", append([]string{"generate", "--ids", joinIDs(c.GreedyIn), "--max-new-tokens", itoa(len(c.GreedyNew)), "--json"}, args...)...)
			if err != nil {
				t.Fatal(err)
			}
			var gen struct{ IDs []int }
			if err := json.Unmarshal([]byte(out), &gen); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(gen.IDs, c.GreedyNew) {
				t.Errorf("greedy ids\n got %v\nwant %v", gen.IDs, c.GreedyNew)
			}
		})
	}
}

// TestAdapterURL loads an adapter over HTTP (mamba2 serve's handler
// serving the adapter folders), as --adapter takes a URL like --model.
func TestAdapterURL(t *testing.T) {
	h, err := serve.New(serve.Options{ModelsDir: fixtureDir("lora"), NoEmbedded: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	t.Setenv("MAMBA2_CACHE", t.TempDir())
	c := loraCase(t, "g4-rslora")
	out, err := runCLI(t, "", "generate", "--backend", "cpu", "--model", fixtureDir(c.Base), "--gated-norm", "full",
		"--adapter", srv.URL+"/models/g4-rslora/", "--ids", joinIDs(c.GreedyIn), "--max-new-tokens", itoa(len(c.GreedyNew)), "--json")
	if err != nil {
		t.Fatal(err)
	}
	var gen struct{ IDs []int }
	if err := json.Unmarshal([]byte(out), &gen); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gen.IDs, c.GreedyNew) {
		t.Errorf("greedy ids\n got %v\nwant %v", gen.IDs, c.GreedyNew)
	}
	_, err = runCLI(t, "", "logits", "--backend", "cpu", "--model", fixtureDir(c.Base), "--adapter", srv.URL+"/models/nope/", "--ids", "1")
	if err == nil || !strings.Contains(err.Error(), "no adapter_config.json") {
		t.Errorf("a missing adapter over HTTP: %v", err)
	}
}

// TestAdapterCLIErrors checks the CLI's refusals: a missing folder, an
// adapter made for another model (shapes), and an adapter for a checkpoint
// stored quantized (mamba2 convert --dtype int8), whose float weights are
// gone.
func TestAdapterCLIErrors(t *testing.T) {
	q := filepath.Join(t.TempDir(), "q")
	if _, err := runCLI(t, "", "convert", "--model", fixtureDir("tiny-g1"), "--out", q, "--dtype", "int8"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing", []string{"--model", fixtureDir("tiny-g1"), "--adapter", filepath.Join(t.TempDir(), "none")}, "adapter folder: "},
		{"other model", []string{"--model", fixtureDir("tiny-g1"), "--adapter", filepath.Join(fixtureDir("lora"), "g4-rslora")},
			"base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight has shape [8 96], but backbone.layers.0.mixer.in_proj.weight of the base model is [296 64] and r is 8: want [8 64]"},
		{"quantized base", []string{"--model", q, "--adapter", filepath.Join(fixtureDir("lora"), "g1-emb-in-out")},
			"is stored as int8, and adapters merge into float weights only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCLI(t, "", append([]string{"logits", "--backend", "cpu", "--ids", "1,2"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestAdapterConvert writes merged checkpoints with convert --adapter (as
// stored, and quantized to int8 after the merge) and loads them with no
// adapter: the float one gives PEFT's merged model's logits and greedy
// ids; the int8 one its logits within int8's error.
func TestAdapterConvert(t *testing.T) {
	c := loraCase(t, "g1-emb-in-out")
	for _, tc := range []struct {
		name  string
		extra []string
		tol   float64
	}{{"f32", nil, 1e-3}, {"int8", []string{"--dtype", "int8"}, 0.5}} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "merged")
			args := append([]string{"convert", "--model", fixtureDir(c.Base), "--out", out, "--adapter", filepath.Join(fixtureDir("lora"), c.Adapters[0])}, tc.extra...)
			if _, err := runCLI(t, "", args...); err != nil {
				t.Fatal(err)
			}
			js, err := runCLI(t, "", "logits", "--backend", "cpu", "--model", out, "--ids", joinIDs(c.PromptIDs))
			if err != nil {
				t.Fatal(err)
			}
			var res struct{ Logits [][]float32 }
			if err := json.Unmarshal([]byte(js), &res); err != nil {
				t.Fatal(err)
			}
			first, last := modeltest.MaxAbsDiff(res.Logits[0], c.First), modeltest.MaxAbsDiff(res.Logits[len(res.Logits)-1], c.Last)
			t.Logf("max |Δlogit| first %.3g, last %.3g", first, last)
			if first > tc.tol || last > tc.tol {
				t.Errorf("max |Δlogit| first %.3g, last %.3g > %g", first, last, tc.tol)
			}
			if tc.extra != nil {
				return
			}
			js, err = runCLI(t, "", "generate", "--backend", "cpu", "--model", out, "--ids", joinIDs(c.GreedyIn), "--max-new-tokens", itoa(len(c.GreedyNew)), "--json")
			if err != nil {
				t.Fatal(err)
			}
			var gen struct{ IDs []int }
			if err := json.Unmarshal([]byte(js), &gen); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(gen.IDs, c.GreedyNew) {
				t.Errorf("greedy ids\n got %v\nwant %v", gen.IDs, c.GreedyNew)
			}
		})
	}
}
