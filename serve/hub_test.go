package serve

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestServeHubLayout: /models/<org>/<name>/resolve/<rev>/<file> answers as
// the Hugging Face hub does, from <org>/<name>/<rev>/ or, for main, from
// <org>/<name>/, so the server can stand in for the hub (HF_ENDPOINT).
func TestServeHubLayout(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644))
	}
	write("state-spaces/mamba2-130m/config.json", "main config")
	write("state-spaces/mamba2-130m/v2/config.json", "v2 config")
	write("m1/config.json", "plain")
	h, err := New(Options{ModelsDir: dir})
	must(t, err)
	defer h.Close()
	f := &fixture{h: h}
	tests := []struct {
		path   string
		status int
		body   string
	}{
		{"/models/state-spaces/mamba2-130m/resolve/main/config.json", http.StatusOK, "main config"},
		{"/models/state-spaces/mamba2-130m/resolve/v2/config.json", http.StatusOK, "v2 config"},
		{"/models/state-spaces/mamba2-130m/resolve/v3/config.json", http.StatusNotFound, ""},
		{"/models/state-spaces/mamba2-130m/resolve/main/missing.json", http.StatusNotFound, ""},
		{"/models/state-spaces/mamba2-130m/resolve/main/.git/config", http.StatusNotFound, ""},
		{"/models/state-spaces/mamba2-130m/resolve/../../m1/config.json", http.StatusBadRequest, ""},
		{"/models/m1/config.json", http.StatusOK, "plain"},
	}
	for _, tt := range tests {
		w := f.do(http.MethodGet, tt.path)
		if w.Code != tt.status || (tt.body != "" && w.Body.String() != tt.body) {
			t.Errorf("GET %s: %d %q, want %d %q", tt.path, w.Code, w.Body.String(), tt.status, tt.body)
		}
	}
}
