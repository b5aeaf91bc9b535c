package model_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestReleasedHybridConfigs parses the configs of released hybrid models
// (testdata/configs, see its README for what each is built from) and
// checks the block pattern and the sizes derived from it.
func TestReleasedHybridConfigs(t *testing.T) {
	for _, tc := range []struct {
		file                     string
		family                   string
		layers, mamba, attn, moe int
		shared                   int // Zamba2 hybrid layers
		inner, headDim, rotary   int
	}{
		{"bamba-9b", "bamba", 32, 29, 3, 0, 0, 8192, 128, 64},
		{"falcon-h1-0.5b", "falcon_h1", 36, 36, 36, 0, 0, 1536, 64, 64},
		{"falcon-h1-1.5b", "falcon_h1", 24, 24, 24, 0, 0, 3072, 128, 128},
		{"zamba2-1.2b", "zamba2", 38, 38, 0, 0, 6, 4096, 128, 128},
		{"zamba2-2.7b-instruct-v2", "zamba2", 54, 54, 0, 0, 9, 5120, 160, 0},
		{"granite-4.0-h-micro", "granitemoehybrid", 40, 36, 4, 0, 0, 4096, 64, 0},
		{"granite-4.0-h-tiny", "granitemoehybrid", 40, 36, 4, 40, 0, 3072, 128, 0},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(modeltest.Root(), "configs", tc.file+".json"))
			if err != nil {
				t.Fatal(err)
			}
			c, err := model.ParseConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			hy := c.Hybrid
			if hy == nil || hy.Family != tc.family {
				t.Fatalf("parsed as %+v, want family %s", hy, tc.family)
			}
			var mamba, attn, moe, shared int
			for _, b := range hy.Blocks {
				mamba += b2i(b.Mamba)
				attn += b2i(b.Attention)
				moe += b2i(b.FFN == model.MoEFFN)
				shared += b2i(b.Shared)
			}
			got := [...]int{c.Layers, mamba, attn, moe, shared, c.Inner(), hy.AttnHeadDim, hy.RotaryDim}
			want := [...]int{tc.layers, tc.mamba, tc.attn, tc.moe, tc.shared, tc.inner, tc.headDim, tc.rotary}
			if got != want {
				t.Errorf("layers, mamba, attention, moe, shared, inner, head dim, rotary = %v, want %v", got, want)
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestHybridConfigErrors checks that a malformed hybrid config fails with
// the field named, each case one change to a fixture's config.json.
func TestHybridConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, fixture string
		edit          func(m map[string]any)
		want          string
	}{
		{"unknown layer type", "granitemoehybrid", func(m map[string]any) { m["layer_types"].([]any)[2] = "conv" }, `layer_types[2] is "conv"`},
		{"layer count", "granitemoehybrid", func(m map[string]any) { m["num_hidden_layers"] = 5 }, "num_hidden_layers = 5, but the layer types list 4 blocks"},
		{"top-k above experts", "granitemoehybrid", func(m map[string]any) { m["num_experts_per_tok"] = 9 }, "num_experts_per_tok = 9"},
		{"mlp multipliers", "falcon-h1", func(m map[string]any) { m["mlp_multipliers"] = []any{1.0} }, "mlp_multipliers has 1 values"},
		{"ssm multipliers", "falcon-h1", func(m map[string]any) { m["ssm_multipliers"] = []any{1.0, 2.0} }, "ssm_multipliers has 2 values"},
		{"d_ssm", "falcon-h1", func(m map[string]any) { m["mamba_d_ssm"] = 100 }, "must equal its inner width 100"},
		{"projectors bias", "falcon-h1", func(m map[string]any) { m["projectors_bias"] = true }, "projectors_bias true"},
		{"norm before gate", "falcon-h1", func(m map[string]any) { m["mamba_rms_norm"] = true }, "mamba_norm_before_gate"},
		{"activation", "bamba", func(m map[string]any) { m["hidden_act"] = "relu2" }, `hidden_act "relu2"`},
		{"rope type", "bamba", func(m map[string]any) {
			m["rope_parameters"] = map[string]any{"rope_type": "yarn", "rope_theta": 1e4}
		}, `rope_type "yarn"`},
		{"kv heads", "bamba", func(m map[string]any) { m["num_key_value_heads"] = 3 }, "not divisible by num_key_value_heads = 3"},
		{"odd rotary width", "bamba", func(m map[string]any) {
			m["rope_parameters"] = map[string]any{"partial_rotary_factor": 0.3125, "rope_theta": 1e4}
		}, "rotary width 5"},
		{"zyphra format", "zamba2", func(m map[string]any) { m["layers_block_type"].([]any)[1] = "g" }, "Zyphra's original Zamba2 format"},
		{"mamba field names", "bamba", func(m map[string]any) { m["mamba_d_state"] = 0 }, "mamba_d_state must be positive"},
		{"zamba2 field names", "zamba2", func(m map[string]any) { m["mamba_ngroups"] = 3 }, "n_mamba_heads = 8 is not divisible by mamba_ngroups = 3"},
		{"sliding window", "falcon-h1", func(m map[string]any) { m["sliding_window"] = 4096 }, "sliding-window attention is not supported"},
		{"mem blocks", "zamba2", func(m map[string]any) { m["num_mem_blocks"] = 3 }, "num_mem_blocks = 3 for 2 hybrid layers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(modeltest.Root(), "fixtures", "hybrid-"+tc.fixture, "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			data, _ = json.Marshal(m)
			_, err = model.ParseConfig(data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestZamba2SharedNames: with two shared blocks (Zamba2-2.7B), hybrid
// layer k uses block k mod 2, whose tensors a checkpoint stores under that
// block's first hybrid layer, adapters included at index k.
func TestZamba2SharedNames(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(modeltest.Root(), "configs", "zamba2-2.7b-instruct-v2.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := model.ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	roles := c.WeightRoles()
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"model.layers.6.shared_transformer.self_attn.q_proj.weight", true},                            // block 0
		{"model.layers.12.shared_transformer.self_attn.q_proj.weight", true},                           // block 1
		{"model.layers.18.shared_transformer.self_attn.q_proj.weight", true},                           // block 0 again, an accepted alias
		{"model.layers.6.shared_transformer.feed_forward.gate_up_proj_adapter_list.2.0.weight", true},  // layer 18's, in block 0
		{"model.layers.12.shared_transformer.feed_forward.gate_up_proj_adapter_list.3.1.weight", true}, // layer 24's, in block 1
		{"model.layers.6.shared_transformer.feed_forward.gate_up_proj_adapter_list.1.0.weight", false}, // block 1's, not block 0's
		{"model.layers.6.shared_transformer.self_attn.linear_q_adapter_list.0.0.weight", false},        // use_shared_attention_adapter false
		{"model.layers.47.linear.weight", true},
		{"model.layers.47.mamba_decoder.mamba.in_proj.weight", true},
		{"model.layers.46.mamba.in_proj.weight", true},
	} {
		if _, ok := roles[tc.name]; ok != tc.want {
			t.Errorf("%s bound: %v, want %v", tc.name, ok, tc.want)
		}
	}
}

// TestHybridShapes: the built-in hybrid shapes (bench --shape) are valid
// and have the sizes, block pattern and multipliers of the released
// configs in testdata/configs, and random weights of a fixture's hybrid
// config run a forward pass to finite logits (NewRandom binds a hybrid's
// tensors as a load does).
func TestHybridShapes(t *testing.T) {
	for _, name := range []string{"bamba-9b", "falcon-h1-0.5b", "falcon-h1-1.5b", "granite-4.0-h-micro", "granite-4.0-h-tiny", "zamba2-1.2b"} {
		c, ok := model.Shapes[name]
		if !ok || c.Hybrid == nil {
			t.Fatalf("shape %s missing or not a hybrid", name)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		data, err := os.ReadFile(filepath.Join(modeltest.Root(), "configs", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := model.ParseConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		dims := func(c model.Config) string {
			h := *c.Hybrid
			h.Family = ""
			return fmt.Sprintf("D %d, %d layers, vocab %d, %d heads × %d, state %d, %d groups, %+v",
				c.Hidden, c.Layers, c.VocabSize, c.Heads, c.HeadDim, c.State, c.Groups, h)
		}
		if g, w := dims(c), dims(want); g != w {
			t.Errorf("shape %s differs from testdata/configs/%s.json:\n got %s\nwant %s", name, name, g, w)
		}
	}
	for _, family := range modeltest.HybridFamilies {
		data, err := os.ReadFile(filepath.Join(modeltest.Root(), "fixtures", "hybrid-"+family, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := model.ParseConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		m, err := model.NewRandom(c, cpu.New(), loader.F32, 7)
		if err != nil {
			t.Fatalf("%s: %v", family, err)
		}
		st := m.NewState(1)
		logits, err := st.Logits([]int32{5, 6, 7, 8}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range logits {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%s: logit %d is %v", family, i, v)
			}
		}
	}
}
