package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/model/modeltest"
	"github.com/mamba2web/mamba2/serve"
)

func runCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), err
}

func fixtureDir(name string) string { return filepath.Join(modeltest.Root(), "fixtures", name) }

const goPrompt = "package main\n\nimport (\n"

func TestGenerateEmbedded(t *testing.T) {
	// transformers' greedy continuation of this prompt (the model card).
	want := "\t\"bufio\"\n\t\"bytes\"\n\t\"fmt\"\n\t\"internal/testenv\"\n\t\"io\"\n\t\"os\"\n\t\"path/filepath\""
	out, err := runCLI(t, "", "generate", "--backend", "cpu", "--prompt", goPrompt, "--max-new-tokens", "40")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, want) {
		t.Errorf("streamed continuation %q does not start with %q", out, want)
	}
	js, err := runCLI(t, "", "generate", "--backend", "cpu", "--prompt", goPrompt, "--max-new-tokens", "40", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		IDs  []int  `json:"ids"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatalf("--json output %q: %v", js, err)
	}
	if len(res.IDs) != 40 || res.Text != out {
		t.Errorf("--json gave %d ids and text %q; streaming gave %q", len(res.IDs), res.Text, out)
	}
	// run reads the prompt from stdin and streams the same text.
	ran, err := runCLI(t, goPrompt, "run", "--backend", "cpu", "--max-new-tokens", "40")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSuffix(ran, "\n") != out {
		t.Errorf("run printed %q, generate %q", ran, out)
	}
	// A stop string cuts the text before it.
	stopped, err := runCLI(t, "", "generate", "--backend", "cpu", "--prompt", goPrompt, "--stop", "\"fmt\"", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(stopped), &res); err != nil || res.Text != "\t\"bufio\"\n\t\"bytes\"\n\t" {
		t.Errorf("with --stop: %q (%v)", stopped, err)
	}
}

func TestLogitsFixture(t *testing.T) {
	fx := modeltest.Fixtures(t)[0]
	ids := make([]string, len(fx.GreedyPromptIDs))
	for i, v := range fx.GreedyPromptIDs {
		ids[i] = itoa(int(v))
	}
	for _, last := range []bool{false, true} {
		args := []string{"logits", "--backend", "cpu", "--model", fx.Dir, "--ids", strings.Join(ids, ",")}
		if last {
			args = append(args, "--last")
		}
		out, err := runCLI(t, "", args...)
		if err != nil {
			t.Fatal(err)
		}
		var res struct{ Logits [][]float32 }
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		want := fx.ShortPromptLogits
		if last {
			want = want[len(want)-1:]
		}
		if len(res.Logits) != len(want) {
			t.Fatalf("last=%v: %d rows, want %d", last, len(res.Logits), len(want))
		}
		for i := range want {
			if d := modeltest.MaxAbsDiff(res.Logits[i], want[i]); d > 1e-4 {
				t.Errorf("last=%v row %d: max diff %g", last, i, d)
			}
		}
	}
	// Ids without a tokenizer: generate prints ids.
	out, err := runCLI(t, "", "generate", "--backend", "cpu", "--model", fx.Dir, "--ids", strings.Join(ids, ","), "--max-new-tokens", "3", "--json")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ids":[` + itoa(int(fx.GreedyNewIDs[0])) + "," + itoa(int(fx.GreedyNewIDs[1])) + "," + itoa(int(fx.GreedyNewIDs[2])) + `],"text":""}`
	if strings.TrimSpace(out) != want {
		t.Errorf("got %s, want %s", out, want)
	}
}

func itoa(v int) string { b, _ := json.Marshal(v); return string(b) }

func TestTokenizeRoundTrip(t *testing.T) {
	dir := t.TempDir()
	tokPath := filepath.Join(dir, "tokenizer.json")
	data, err := os.ReadFile(filepath.Join("..", "..", "models", "mamba2-go-tiny", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tokPath, data, 0o644)
	text := "func main() {\n\tfmt.Println(\"héllo, 世界\")\n}\n"
	out, err := runCLI(t, text, "tokenize", "--tokenizer", tokPath)
	if err != nil {
		t.Fatal(err)
	}
	var ids struct{ IDs []int }
	if err := json.Unmarshal([]byte(out), &ids); err != nil || len(ids.IDs) == 0 {
		t.Fatalf("%q: %v", out, err)
	}
	list := make([]string, len(ids.IDs))
	for i, v := range ids.IDs {
		list[i] = itoa(v)
	}
	out, err = runCLI(t, "", "detokenize", "--tokenizer", tokPath, "--ids", strings.Join(list, ","))
	if err != nil {
		t.Fatal(err)
	}
	var back struct{ Text string }
	if err := json.Unmarshal([]byte(out), &back); err != nil || back.Text != text {
		t.Errorf("round trip gave %q (%v)", back.Text, err)
	}
}

// TestTokenizeModel: tokenize and detokenize take the tokenizer of a model
// (--model, by default the embedded one) as well as a file, with the same
// ids; a model without a tokenizer.json and both flags at once are errors.
func TestTokenizeModel(t *testing.T) {
	text := "package main\n\nfunc main() {}\n"
	file := filepath.Join("..", "..", "models", "mamba2-go-tiny", "tokenizer.json")
	want, err := runCLI(t, text, "tokenize", "--tokenizer", file)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"tokenize"}, {"tokenize", "--model", filepath.Join("..", "..", "models", "mamba2-go-tiny")}} {
		got, err := runCLI(t, text, args...)
		if err != nil || got != want {
			t.Errorf("%v: %q (%v), want %q", args, got, err, want)
		}
	}
	var ids struct{ IDs []int }
	json.Unmarshal([]byte(want), &ids)
	list := make([]string, len(ids.IDs))
	for i, v := range ids.IDs {
		list[i] = itoa(v)
	}
	out, err := runCLI(t, "", "detokenize", "--ids", strings.Join(list, ","))
	var back struct{ Text string }
	if err != nil || json.Unmarshal([]byte(out), &back) != nil || back.Text != text {
		t.Errorf("detokenize with the embedded model: %q (%v)", out, err)
	}
	if _, err := runCLI(t, "x", "tokenize", "--model", fixtureDir("tiny-g1")); err == nil || !strings.Contains(err.Error(), "has no tokenizer.json") {
		t.Errorf("a model without a tokenizer: %v", err)
	}
	if _, err := runCLI(t, "x", "tokenize", "--model", fixtureDir("tiny-g1"), "--tokenizer", file); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("--model and --tokenizer together: %v", err)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	os.Mkdir(bad, 0o755)
	os.WriteFile(filepath.Join(bad, "config.json"), []byte(`{"hidden_size":8,"num_heads":3,"head_dim":4,"expand":2,"n_groups":1}`), 0o644)
	noWeights := filepath.Join(dir, "noweights")
	os.Mkdir(noWeights, 0o755)
	cfg, _ := os.ReadFile(filepath.Join(fixtureDir("tiny-g1"), "config.json"))
	os.WriteFile(filepath.Join(noWeights, "config.json"), cfg, 0o644)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"generate", "--backend", "cpu"}, "exactly one of --ids and --prompt"},
		{[]string{"generate", "--backend", "cpu", "--ids", "1,x"}, "not an integer"},
		{[]string{"generate", "--backend", "cpu", "--ids", "999999"}, "outside the vocabulary"},
		{[]string{"generate", "--backend", "cpu", "--ids", "1", "--temperature", "-1"}, "temperature"},
		{[]string{"generate", "--backend", "cpu", "--ids", "1", "--top-p", "2"}, "top-p"},
		{[]string{"generate", "--backend", "cpu", "--prompt", ""}, "prompt is empty"},
		{[]string{"generate", "--backend", "quantum", "--ids", "1"}, `backend "quantum"`},
		{[]string{"logits", "--model", filepath.Join(dir, "missing"), "--ids", "1"}, "model folder"},
		{[]string{"logits", "--model", bad, "--ids", "1"}, "num_heads × head_dim"},
		{[]string{"logits", "--backend", "cpu", "--model", noWeights, "--ids", "1"}, "model.safetensors"},
		{[]string{"logits", "--backend", "cpu", "--model", fixtureDir("tiny-g1"), "--ids", "1", "--gated-norm", "half"}, "gated norm"},
		{[]string{"generate", "--backend", "cpu", "--model", fixtureDir("tiny-g1"), "--prompt", "hi"}, "tokenizer.json"},
		{[]string{"tokenize", "--tokenizer", filepath.Join(bad, "missing.json")}, "missing.json"},
		{[]string{"tokenize", "--tokenizer", filepath.Join(bad, "config.json")}, "tokenizer"},
		{[]string{"detokenize", "--tokenizer", filepath.Join("..", "..", "models", "mamba2-go-tiny", "tokenizer.json"), "--ids", "5000000"}, "5000000"},
		{[]string{"bench", "--shape", "1t"}, "--shape"},
		{[]string{"bench", "--batch", "0"}, "--batch 0"},
		{[]string{"bench", "--logit-error"}, "--logit-error needs --shape and --quantize"},
		{[]string{"bench", "--shape", "130m", "--layers", "-1"}, "--layers -1"},
		{[]string{"logits", "--quantize", "int3", "--ids", "1"}, `--quantize "int3"`},
		{[]string{"logits", "--quantize", "int8", "--group-size", "64", "--ids", "1"}, "--group-size is for int4"},
		{[]string{"logits", "--group-size", "64", "--ids", "1"}, "need --quantize"},
		{[]string{"perplexity"}, "--file F is required"},
	}
	for _, tt := range tests {
		_, err := runCLI(t, "", tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one containing %q", tt.args, err, tt.want)
		}
	}
}

// A model given as an http(s) URL downloads into the cache once and then
// generates exactly what the embedded copy does.
func TestGenerateFromURL(t *testing.T) {
	h, err := serve.New(serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	t.Setenv("MAMBA2_CACHE", t.TempDir())
	args := []string{"generate", "--backend", "cpu", "--prompt", goPrompt, "--max-new-tokens", "12", "--json"}
	want, err := runCLI(t, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second run reads the cache
		got, err := runCLI(t, "", append(args, "--model", srv.URL+"/models/mamba2-go-tiny")...)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("over HTTP: %s, embedded: %s", got, want)
		}
	}
	if _, err := runCLI(t, "", append(args, "--model", srv.URL+"/models/nope/")...); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing model: %v", err)
	}
}

// bench --batch decodes several sequences per step and reports all their
// tokens per second.
func TestBenchBatch(t *testing.T) {
	out, err := runCLI(t, "", "bench", "--backend", "cpu", "--prompt-lengths", "4", "--decode-tokens", "2", "--reps", "1", "--batch", "3", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Batch  int
		Decode struct{ Tokens_per_s float64 }
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Batch != 3 || r.Decode.Tokens_per_s <= 0 {
		t.Errorf("bench --batch 3 --json printed (%v):\n%s", err, out)
	}
}

// bench --profile prints a table of GPU time per kernel for the prompt and
// for decoding on WebGPU with timestamp queries; on the CPU it says in one
// line that there is none and still prints the figures.
func TestBenchProfile(t *testing.T) {
	args := []string{"bench", "--prompt-lengths", "8", "--decode-tokens", "2", "--reps", "1", "--profile"}
	out, err := runCLI(t, "", append(args, "--backend", "cpu")...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "decode  batch 1: ") || !strings.Contains(out, "GPU time per kernel: unavailable: the cpu backend") {
		t.Errorf("bench --profile on the CPU printed:\n%s", out)
	}

	out, err = runCLI(t, "", append(args, "--backend", "webgpu")...)
	if err != nil && strings.Contains(err.Error(), "no WebGPU adapter") && os.Getenv("MAMBA2_REQUIRE_GPU") != "1" {
		t.Skipf("skipping the WebGPU part: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bench --profile:\n%s", out)
	if i := strings.Index(out, "GPU time per kernel: unavailable: "); i >= 0 {
		t.Skipf("skipping the table checks: %s", strings.TrimSpace(out[i:]))
	}
	for _, want := range []string{
		"prefill      8 tokens:", "GPU time per kernel, prefill of 8 tokens, per run (mean of 1):",
		"GPU time per kernel, decode, per token (mean of 2):", "calls", "GPU ms", "µs/call",
		"ssm_scan.chunk_states", "ssm_step", "(in_proj)", "(lm_head)", "sample", "total",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}

	js, err := runCLI(t, "", append(args, "--backend", "webgpu", "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Prefill        []struct{ Tokens int }
		ProfilePrefill []struct {
			Tokens  int
			Kernels []struct{ Kernel string }
		} `json:"profile_prefill"`
		ProfileDecode struct {
			GPUms   float64 `json:"gpu_ms"`
			Kernels []struct {
				Kernel  string
				Calls   float64
				GPUms   float64 `json:"gpu_ms"`
				Percent float64
			}
		} `json:"profile_decode"`
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("--json output %q: %v", js, err)
	}
	if len(rep.ProfilePrefill) != 1 || rep.ProfilePrefill[0].Tokens != 8 || len(rep.ProfilePrefill[0].Kernels) == 0 {
		t.Errorf("profile_prefill: %+v", rep.ProfilePrefill)
	}
	sum, calls := 0.0, map[string]float64{}
	for _, k := range rep.ProfileDecode.Kernels {
		sum += k.Percent
		calls[k.Kernel] = k.Calls
		if k.GPUms <= 0 {
			t.Errorf("decode kernel %s: %v ms", k.Kernel, k.GPUms)
		}
	}
	// mamba2-go-tiny has 8 layers: one ssm_step each, one sampler (its
	// scan and its choice) per token.
	if calls["ssm_step"] != 8 || calls["sample"] != 1 || calls["sample.scan"] != 1 || sum < 99.9 || sum > 100.1 || rep.ProfileDecode.GPUms <= 0 {
		t.Errorf("profile_decode: %+v (percentages add up to %v)", rep.ProfileDecode, sum)
	}
}
