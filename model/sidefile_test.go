package model

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/mamba2web/mamba2/loader"
)

// TestLoadConfigSize: a local config.json or generation_config.json over
// loader.MaxConfigSize is refused by name after reading just past the
// limit, not read whole into memory.
func TestLoadConfigSize(t *testing.T) {
	ok := `{"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 512, "num_heads": 8, "head_dim": 16, "state_size": 16, "n_groups": 1, "expand": 2}`
	huge := ok[:len(ok)-1] + `, "pad": "` + strings.Repeat("x", loader.MaxConfigSize) + `"}`
	for _, tt := range []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{"config.json", fstest.MapFS{"config.json": {Data: []byte(huge)}}, "config.json"},
		{"generation_config.json", fstest.MapFS{"config.json": {Data: []byte(ok)}, "generation_config.json": {Data: []byte(huge)}}, "generation_config.json"},
	} {
		_, err := LoadConfig(tt.fsys)
		if !errors.Is(err, loader.ErrTooLarge) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s too large: %v", tt.name, err)
		}
	}
	if _, err := LoadConfig(fstest.MapFS{"config.json": {Data: []byte(ok)}}); err != nil {
		t.Fatalf("a normal config: %v", err)
	}
}
