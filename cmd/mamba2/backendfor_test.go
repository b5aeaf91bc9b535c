package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/model"
)

// TestBackendFor: the WebGPU backend runs the hybrid operations, so
// --backend auto is left as asked for a hybrid too (openBackend then picks
// a real GPU or the CPU) and nothing is said; a backend named explicitly,
// and Mamba-2 models, are left as asked.
func TestBackendFor(t *testing.T) {
	load := func(dir string) model.Config {
		c, err := model.LoadConfig(os.DirFS(dir))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	hybrid, mamba := load("../../testdata/fixtures/hybrid-bamba"), load("../../testdata/fixtures/tiny-g1")
	for _, c := range []struct {
		name string
		cfg  model.Config
		want string
		note string
	}{
		{"auto", hybrid, "auto", ""},
		{"", hybrid, "", ""},
		{"webgpu", hybrid, "webgpu", ""},
		{"auto", mamba, "auto", ""},
	} {
		var buf bytes.Buffer
		if got := backendFor(c.name, c.cfg, &buf); got != c.want || !strings.Contains(buf.String(), c.note) || (c.note == "" && buf.Len() > 0) {
			t.Errorf("backendFor(%q, hybrid=%v) = %q, said %q; want %q saying %q", c.name, c.cfg.Hybrid != nil, got, buf.String(), c.want, c.note)
		}
	}
}
