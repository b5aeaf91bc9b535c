package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mamba2web/mamba2/serve"
)

// TestHubIDs: --model org/name[@rev] resolves under HF_ENDPOINT (here a
// local `mamba2 serve --models` standing in for the hub), pytorch_model.bin
// included; HF_TOKEN goes to the hub's origin and to no other server.
func TestHubIDs(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := os.ReadFile(filepath.Join(fixtureDir("tiny-g1"), "config.json"))
	st, _ := os.ReadFile(filepath.Join(fixtureDir("tiny-g1"), "model.safetensors"))
	bin, _ := os.ReadFile(filepath.Join("..", "..", "loader", "pytorch", "testdata", "tiny_hf_zip.bin"))
	put := func(p string, data []byte) {
		t.Helper()
		must := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if must == nil {
			must = os.WriteFile(filepath.Join(dir, p), data, 0o644)
		}
		if must != nil {
			t.Fatal(must)
		}
	}
	put("org/tiny/config.json", cfg)
	put("org/tiny/model.safetensors", st)
	put("org/tiny/v2/config.json", cfg)
	put("org/tiny/v2/pytorch_model.bin", bin)
	h, err := serve.New(serve.Options{ModelsDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var mu sync.Mutex
	auth := map[string]int{} // requests with a token, by server
	watch := func(name string, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") == "Bearer secret" {
				mu.Lock()
				auth[name]++
				mu.Unlock()
			}
			next.ServeHTTP(w, r)
		})
	}
	hub := httptest.NewServer(watch("hub", h))
	defer hub.Close()
	other := httptest.NewServer(watch("other", h))
	defer other.Close()
	t.Setenv("HF_ENDPOINT", hub.URL+"/models")
	t.Setenv("HF_TOKEN", "secret")
	t.Setenv("MAMBA2_CACHE", t.TempDir())

	args := []string{"logits", "--backend", "cpu", "--ids", "1,2,3", "--last"}
	want, err := runCLI(t, "", append(args, "--model", fixtureDir("tiny-g1"))...)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"org/tiny", "org/tiny@main", "org/tiny@v2"} {
		got, err := runCLI(t, "", append(args, "--model", id)...)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if got != want {
			t.Errorf("%s: logits differ from the folder's", id)
		}
	}
	if _, err := runCLI(t, "", append(args, "--model", "org/tiny@v9")...); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a revision the hub lacks: %v", err)
	}
	if _, err := runCLI(t, "", append(args, "--model", other.URL+"/models/org/tiny/resolve/main/")...); err != nil {
		t.Fatal(err)
	}
	if auth["hub"] == 0 || auth["other"] != 0 {
		t.Errorf("requests with HF_TOKEN: %v; want some to the hub and none to the other server", auth)
	}
}
