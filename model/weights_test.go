package model_test

import (
	"math"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/models"
)

// TestLoadWeightsConfigMismatch checks that a config whose counts the
// checkpoint does not back fails before the per-layer tables are built,
// naming the tensor, and that an unvalidated Config is validated.
func TestLoadWeightsConfigMismatch(t *testing.T) {
	fsys := models.Tiny()
	base, err := model.LoadConfig(fsys)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := loader.Open(fsys)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(c *model.Config)
		want   string
	}{
		{"more layers", func(c *model.Config) { c.Layers = model.MaxLayers },
			"checkpoint lacks tensor backbone.layers.1023.mixer.in_proj.weight, but config.json has 1024 layers"},
		{"absurd layers", func(c *model.Config) { c.Layers = 1 << 24 }, "num_hidden_layers = 16777216 is above the limit of 1024"},
		{"absurd vocab", func(c *model.Config) { c.VocabSize = 1 << 40 }, "vocab_size = 1099511627776 is above the limit"},
		{"NaN eps", func(c *model.Config) { c.Eps = math.NaN() }, "layer_norm_epsilon must be in (0, 1], got NaN"},
		{"wider", func(c *model.Config) { c.Hidden *= 2; c.Heads *= 2 }, "backbone.embeddings.weight has shape [4096 384], but the config implies [4096 768]"},
	}
	for _, tt := range tests {
		c := base
		tt.change(&c)
		b := cpu.New()
		_, err := model.LoadWeights(c, ck, b, nil)
		b.Close()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}
