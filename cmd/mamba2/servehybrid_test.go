//go:build !js

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/tokenizer"
)

// TestServeHybrid: serve runs a hybrid (Bamba: attention at two layers)
// through the scheduler. Three completions at once in two slots, so one
// queues and a slot is reused, each answer what Model.Generate gives its
// prompt alone, decoded. The fixture has no tokenizer; it gets
// mamba2-go-tiny's cut to the model's 512 ids (hybridTokenizer).
func TestServeHybrid(t *testing.T) {
	dir := t.TempDir()
	src := fixtureDir("hybrid-bamba")
	for _, name := range []string{"config.json", "generation_config.json", "model.safetensors"} {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hybridTokenizer(t, filepath.Join(dir, "tokenizer.json"), 512)
	tok, err := tokenizer.LoadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(os.DirFS(dir), cpu.New(), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prompts := []string{"package main\n", "func f() {", "x := 1 +"}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		res, err := m.Generate(context.Background(), tok.Encode(p), model.Options{MaxNewTokens: 8, Decode: tok.Decode})
		if err != nil {
			t.Fatal(err)
		}
		want[i] = res.Text
	}
	base := startServe(t, "--model", dir, "--backend", "cpu", "--slots", "2")
	got := make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			body, _ := json.Marshal(map[string]any{"model": filepath.Base(dir), "prompt": p, "max_tokens": 8, "temperature": 0})
			resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(string(body)))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			var c struct {
				Choices []struct {
					Text string `json:"text"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(data, &c); err != nil || resp.StatusCode != 200 || len(c.Choices) != 1 {
				t.Errorf("prompt %q: %s: %s", p, resp.Status, data)
				return
			}
			got[i] = c.Choices[0].Text
		})
	}
	wg.Wait()
	for i := range prompts {
		if got[i] != want[i] {
			t.Errorf("prompt %q: served %q, Generate alone %q", prompts[i], got[i], want[i])
		}
	}
}

// hybridTokenizer writes to path mamba2-go-tiny's byte-level BPE cut to
// its first n ids: the bytes and the merges whose tokens are among them.
func hybridTokenizer(t *testing.T, path string, n int) {
	data, err := os.ReadFile(filepath.Join("..", "..", "models", "mamba2-go-tiny", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	bpe := f["model"].(map[string]any)
	vocab := map[string]any{}
	for k, v := range bpe["vocab"].(map[string]any) {
		if int(v.(float64)) < n {
			vocab[k] = v
		}
	}
	var merges []any
	for _, mg := range bpe["merges"].([]any) {
		pair := mg.([]any)
		a, b := pair[0].(string), pair[1].(string)
		_, okA := vocab[a]
		_, okB := vocab[b]
		_, ok := vocab[a+b]
		if okA && okB && ok {
			merges = append(merges, mg)
		}
	}
	if len(vocab) != n || len(merges) == 0 {
		t.Fatalf("cutting the tokenizer to %d ids left %d tokens and %d merges", n, len(vocab), len(merges))
	}
	bpe["vocab"], bpe["merges"] = vocab, merges
	out, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(fmt.Errorf("writing the tokenizer: %w", err))
	}
}
