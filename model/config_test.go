package model

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
)

func TestParseConfigLimitSpellings(t *testing.T) {
	base := `{"model_type":"mamba2","vocab_size":100,"hidden_size":8,"num_hidden_layers":1,"state_size":4,
		"num_heads":4,"head_dim":4,"n_groups":2,"expand":2,"layer_types":["mamba"],"dtype":"float32",%s}`
	tests := []struct {
		limit  string
		lo, hi float64
	}{
		{`"time_step_limit":[0.0, Infinity]`, 0, math.Inf(1)},
		{`"time_step_limit":[0.0, {"__float__": "Infinity"}]`, 0, math.Inf(1)},
		{`"time_step_limit":[0.001, 0.1]`, 0.001, 0.1},
		{`"unrelated":"Infinity is a word here"`, 0, math.Inf(1)},
	}
	for _, tt := range tests {
		c, err := ParseConfig([]byte(strings.Replace(base, "%s", tt.limit, 1)))
		if err != nil {
			t.Fatalf("%s: %v", tt.limit, err)
		}
		if c.TimeStepMin != tt.lo || c.TimeStepMax != tt.hi {
			t.Errorf("%s: got [%v, %v]", tt.limit, c.TimeStepMin, c.TimeStepMax)
		}
		if c.Inner() != 16 || c.ConvDim() != 16+2*2*4 || c.ProjDim() != 32+16+4 {
			t.Errorf("derived dims wrong: %+v", c)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		json, want string
	}{
		{`{"hidden_size":8,"num_heads":3,"head_dim":4,"expand":2,"n_groups":1}`, "num_heads × head_dim"},
		{`{"hidden_size":8,"num_heads":4,"head_dim":4,"expand":2,"n_groups":3}`, "not divisible by n_groups"},
		{`{"hidden_size":0}`, "hidden_size must be positive"},
		{`{"model_type":"mamba"}`, `model_type is "mamba"`},
		{`{"time_step_limit":[1]}`, "time_step_limit"},
		{`{"time_step_limit":[1, 0]}`, "not a valid range"},
		{`{"time_step_limit":[0, "x"]}`, "time_step_limit[1]"},
		{`{"hidden_size":"big"}`, "config.json"},
		{`{"hidden_size":8,"num_heads":4,"head_dim":4,"n_groups":1,"vocab_size":10,"eos_token_id":10}`, "eos_token_id"},
		{`[`, "config.json"},
		{`{"d_model":8,"n_layer":1,"vocab_size":10,"ssm_cfg":{}}`, "Mamba-1"},
		{`{"d_model":8,"n_layer":1,"ssm_cfg":{"layer":"Mamba2"}}`, "vocab_size is missing"},
	}
	for _, tt := range tests {
		_, err := ParseConfig([]byte(tt.json))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.json, err, tt.want)
		}
	}
}

// hfBase is a small valid Hugging Face config; a field given again after it
// replaces its value (encoding/json keeps the last of duplicate keys).
const hfBase = `{"model_type":"mamba2","vocab_size":100,"hidden_size":8,"num_hidden_layers":2,"state_size":4,
	"num_heads":4,"head_dim":4,"n_groups":2,"expand":2,"conv_kernel":4,"chunk_size":8`

// ssBase is the same for the state-spaces format, whose ssm_cfg is replaced
// whole.
const ssBase = `{"d_model":8,"n_layer":2,"vocab_size":100,"ssm_cfg":{"layer":"Mamba2","headdim":4,"d_state":4}`

// TestParseConfigHostile checks that out-of-range dimensions and float
// fields fail in ParseConfig, naming the field (and the limit) in the
// spelling of the file's format, with nothing allocated from them.
func TestParseConfigHostile(t *testing.T) {
	tests := []struct {
		base, extra, want string
	}{
		// One dimension over its limit.
		{hfBase, `"num_hidden_layers":16777216`, "num_hidden_layers = 16777216 is above the limit of 1024"},
		{hfBase, `"num_hidden_layers":1025`, "num_hidden_layers = 1025 is above the limit of 1024"},
		{hfBase, `"hidden_size":65537`, "hidden_size = 65537 is above the limit of 65536"},
		{hfBase, `"vocab_size":4194305`, "vocab_size = 4194305 is above the limit of 4194304"},
		{hfBase, `"state_size":1025`, "state_size = 1025 is above the limit of 1024"},
		{hfBase, `"expand":17`, "expand = 17 is above the limit of 16"},
		{hfBase, `"num_heads":9223372036854775807`, "num_heads = 9223372036854775807 is above the limit"},
		{hfBase, `"head_dim":1048577`, "head_dim = 1048577 is above the limit of 1048576"},
		{hfBase, `"n_groups":4611686018427387904`, "n_groups = 4611686018427387904 is above the limit"},
		{hfBase, `"conv_kernel":65`, "conv_kernel = 65 is above the limit of 64"},
		{hfBase, `"chunk_size":4097`, "chunk_size = 4097 is above the limit of 4096"},
		{hfBase, `"num_hidden_layers":-1`, "num_hidden_layers must be positive"},
		{hfBase, `"num_hidden_layers":1e30`, "num_hidden_layers"},
		{hfBase, `"num_hidden_layers":99999999999999999999`, "num_hidden_layers"},
		{hfBase, `"num_hidden_layers":2.5`, "num_hidden_layers"},
		// Each within its limit, but a product is not.
		{hfBase, `"vocab_size":4194304,"hidden_size":1024,"num_heads":32,"head_dim":64,"n_groups":1`,
			"the embedding, vocab_size × hidden_size = 4194304 × 1024 = 4294967296 elements, above the limit of 2147483647"},
		{hfBase, `"hidden_size":65536,"num_heads":2048,"head_dim":64,"n_groups":1`, "in_proj, (2·I + 2·G·N + H) × hidden_size"},
		{hfBase, `"hidden_size":4096,"num_heads":128,"head_dim":64,"state_size":128,"n_groups":1,"num_hidden_layers":1024`,
			"the recurrent state of one sequence, num_hidden_layers × (I·N + (K−1)·(I + 2·G·N)), is 1099694080 floats, above the limit of 1073741824"},
		{hfBase, `"num_heads":3`, "num_heads × head_dim = 3 × 4 = 12 must equal expand × hidden_size = 2 × 8 = 16"},
		// Float fields: NaN, infinities, out of range, in every spelling.
		{hfBase, `"layer_norm_epsilon":NaN`, "layer_norm_epsilon must be in (0, 1]"},
		{hfBase, `"layer_norm_epsilon":"NaN"`, "layer_norm_epsilon must be in (0, 1]"},
		{hfBase, `"layer_norm_epsilon":{"__float__":"NaN"}`, "layer_norm_epsilon must be in (0, 1]"},
		{hfBase, `"layer_norm_epsilon":Infinity`, "layer_norm_epsilon must be in (0, 1], got +Inf"},
		{hfBase, `"layer_norm_epsilon":1e999`, "layer_norm_epsilon must be in (0, 1], got +Inf"},
		{hfBase, `"layer_norm_epsilon":-1e-5`, "layer_norm_epsilon must be in (0, 1]"},
		{hfBase, `"layer_norm_epsilon":0`, "layer_norm_epsilon must be in (0, 1]"},
		{hfBase, `"layer_norm_epsilon":1e-999`, "layer_norm_epsilon must be in (0, 1]"}, // underflows to 0
		{hfBase, `"layer_norm_epsilon":1e-50`, "layer_norm_epsilon = 1e-50 is 0 as a float32"},
		{hfBase, `"layer_norm_epsilon":2`, "layer_norm_epsilon must be in (0, 1], got 2"},
		{hfBase, `"layer_norm_epsilon":"1e-5"`, `layer_norm_epsilon: "1e-5" is not a number`},
		{hfBase, `"time_step_limit":[-Infinity, -Infinity]`, "time_step_limit [-Inf, -Inf] is not a valid range"},
		{hfBase, `"time_step_limit":[NaN, NaN]`, "time_step_limit [NaN, NaN] is not a valid range"},
		{hfBase, `"time_step_limit":[0.0, NaN]`, "time_step_limit [0, NaN] is not a valid range"},
		{hfBase, `"time_step_limit":[0.0, {"__float__": "NaN"}]`, "time_step_limit [0, NaN] is not a valid range"},
		{hfBase, `"time_step_limit":[1, 0]`, "time_step_limit [1, 0] is not a valid range"},
		{hfBase, `"time_step_limit":[-0.5, 1]`, "time_step_limit [-0.5, 1] is not a valid range"},
		{hfBase, `"time_step_limit":[0, 0]`, "time_step_limit [0, 0] is not a valid range"},
		{hfBase, `"time_step_limit":[Infinity, Infinity]`, "time_step_limit [+Inf, +Inf] is not a valid range"},
		{hfBase, `"time_step_limit":[-1e999, 1]`, "time_step_limit [-Inf, 1] is not a valid range"},
		{hfBase, `"time_step_limit":[0, 1, 2]`, "time_step_limit must be a pair"},
		{hfBase, `"time_step_limit":[0, "x"]`, `time_step_limit[1]: "x" is not a number`},
		{hfBase, `"time_step_min":NaN`, "time_step_min must be a finite number >= 0, got NaN"},
		{hfBase, `"time_step_max":1e999`, "time_step_max must be a finite number >= 0, got +Inf"},
		{hfBase, `"time_step_floor":-0.0001`, "time_step_floor must be a finite number >= 0"},
		{hfBase, `"initializer_range":{"__float__": "-Infinity"}`, "initializer_range must be a finite number >= 0, got -Inf"},
		{hfBase, `"time_step_floor":[1]`, "time_step_floor: [1] is not a number"},
		// A bare literal with an error elsewhere: the error is the other one.
		{hfBase, `"time_step_limit":[0, Infinity],"hidden_size":"big"`, "hidden_size"},
		// The state-spaces format names its own fields.
		{ssBase, `"n_layer":16777216`, "n_layer = 16777216 is above the limit of 1024"},
		{ssBase, `"d_model":1048576`, "d_model = 1048576 is above the limit of 65536"},
		{ssBase, `"d_model":9223372036854775807,"ssm_cfg":{"layer":"Mamba2","expand":9223372036854775807}`, "d_model = 9223372036854775807 is above the limit"},
		{ssBase, `"ssm_cfg":{"layer":"Mamba2","headdim":4,"d_state":2048}`, "ssm_cfg.d_state = 2048 is above the limit of 1024"},
		{ssBase, `"ssm_cfg":{"layer":"Mamba2","headdim":4,"d_state":4,"d_conv":1000}`, "ssm_cfg.d_conv = 1000 is above the limit of 64"},
		{ssBase, `"ssm_cfg":{"layer":"Mamba2","headdim":4,"d_state":4,"ngroups":3}`, "is not divisible by ssm_cfg.ngroups = 3"},
		{ssBase, `"ssm_cfg":{"layer":"Mamba2","headdim":3}`, "ssm_cfg.expand × d_model = 2 × 8 = 16 is not a multiple of ssm_cfg.headdim = 3"},
		{ssBase, `"ssm_cfg":{"layer":"Mamba2","headdim":4,"dt_limit":[1, 0]}`, "ssm_cfg.dt_limit [1, 0] is not a valid range"},
		{ssBase, `"ssm_cfg":{"layer":"Mamba2","headdim":4,"dt_min":NaN}`, "ssm_cfg.dt_min must be a finite number >= 0, got NaN"},
		{ssBase, `"vocab_size":4194304,"pad_vocab_size_multiple":3`, "vocab_size (padded) = 4194306 is above the limit of 4194304"},
		{ssBase, `"vocab_size":5,"pad_vocab_size_multiple":9223372036854775807`, "pad_vocab_size_multiple = 9223372036854775807 is above the limit"},
		{ssBase, `"vocab_size":9223372036854775807,"pad_vocab_size_multiple":16`, "vocab_size (padded) = 9223372036854775807 is above the limit"},
	}
	for _, tt := range tests {
		data := tt.base + "," + tt.extra + "}"
		_, err := ParseConfig([]byte(data))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.extra, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", tt.extra, err)
		}
	}
}

// TestParseConfigFloats checks the float spellings that are valid.
func TestParseConfigFloats(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		base, extra   string
		eps, min, max float64
	}{
		{hfBase, `"layer_norm_epsilon":1e-6`, 1e-6, 0, inf},
		{hfBase, `"layer_norm_epsilon":{"__float__":"1e-6"}`, 1e-6, 0, inf},
		{hfBase, `"layer_norm_epsilon":{"__float__":"tiny"}`, 0, 0, 0}, // not a number: an error
		{hfBase, `"time_step_limit":[0, 1e999]`, 1e-5, 0, inf},         // Python reads 1e999 as inf
		{hfBase, `"time_step_limit":[0.0, Infinity]`, 1e-5, 0, inf},
		{hfBase, `"time_step_limit":[0.0, {"__float__": "Infinity"}]`, 1e-5, 0, inf},
		{hfBase, `"time_step_limit":null`, 1e-5, 0, inf},
		{hfBase, `"time_step_limit":[0.01, 0.01]`, 1e-5, 0.01, 0.01},
		{hfBase, `"time_step_min":0.001,"time_step_max":0.1,"time_step_floor":1e-4,"initializer_range":0.1`, 1e-5, 0, inf},
		{ssBase, `"ssm_cfg":{"layer":"Mamba2","headdim":4,"dt_limit":[0.001, 0.1]}`, 1e-5, 0.001, 0.1},
		{ssBase, `"ssm_cfg":{"layer":"Mamba2","headdim":4,"dt_limit":[0.0, Infinity],"dt_min":0.001}`, 1e-5, 0, inf},
	}
	for _, tt := range tests {
		c, err := ParseConfig([]byte(tt.base + "," + tt.extra + "}"))
		if tt.eps == 0 {
			if err == nil {
				t.Errorf("%s: accepted", tt.extra)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.extra, err)
			continue
		}
		if c.Eps != tt.eps || c.TimeStepMin != tt.min || c.TimeStepMax != tt.max {
			t.Errorf("%s: eps %v, limit [%v, %v]; want %v, [%v, %v]", tt.extra, c.Eps, c.TimeStepMin, c.TimeStepMax, tt.eps, tt.min, tt.max)
		}
	}
}

func TestParseOriginalConfig(t *testing.T) {
	// mamba2-130m's config as state-spaces publishes it.
	c, err := ParseConfig([]byte(`{"d_model": 768, "d_intermediate": 0, "n_layer": 24, "vocab_size": 50277,
		"ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": true,
		"residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 16, "tie_embeddings": true}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{VocabSize: 50288, Hidden: 768, Layers: 24, State: 128, Expand: 2, Heads: 24, HeadDim: 64,
		Groups: 1, ConvKernel: 4, ChunkSize: 256, ConvBias: true, Eps: 1e-5, TimeStepMax: math.Inf(1),
		TieEmbeddings: true, OriginalNaming: true}
	if c != want {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestFixtureConfigs(t *testing.T) {
	for _, dir := range []string{"tiny-g1", "tiny-g4"} {
		c, err := LoadConfig(os.DirFS("../testdata/fixtures/" + dir))
		if err != nil {
			t.Fatal(err)
		}
		if dir == "tiny-g4" && (c.Groups != 4 || c.TieEmbeddings || c.VocabSize != 777 || c.ChunkSize != 8) {
			t.Errorf("tiny-g4: %+v", c)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{"../testdata/fixtures/tiny-g1/config.json", "../testdata/fixtures/tiny-g4/config.json"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	f.Add([]byte(`{"d_model":64,"n_layer":2,"vocab_size":50,"ssm_cfg":{"layer":"Mamba2","headdim":16,"ngroups":2,"d_state":8}}`))
	f.Add([]byte(`{"time_step_limit":[0.0, Infinity], "note": "NaN -Infinity"}`))
	for _, extra := range []string{`"num_hidden_layers":16777216`, `"time_step_limit":[-Infinity, -Infinity]`,
		`"layer_norm_epsilon":1e999`, `"vocab_size":4194304,"hidden_size":1024,"num_heads":32,"head_dim":64,"n_groups":1`} {
		f.Add([]byte(hfBase + "," + extra + "}"))
	}
	f.Add([]byte(ssBase + `,"ssm_cfg":{"layer":"Mamba2","headdim":4,"dt_limit":[0, NaN]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted a config that fails validation: %v", err)
		}
		if c.Heads*c.HeadDim != c.Inner() || c.Heads%c.Groups != 0 {
			t.Fatalf("inconsistent config accepted: %+v", c)
		}
		if c.Layers > MaxLayers || c.VocabSize > MaxVocab || int64(c.VocabSize)*int64(c.Hidden) > MaxTensorElements ||
			int64(c.ProjDim())*int64(c.Hidden) > MaxTensorElements {
			t.Fatalf("config beyond the limits accepted: %+v", c)
		}
		if math.IsNaN(c.Eps) || math.IsInf(c.Eps, 0) || math.IsNaN(c.TimeStepMin) || math.IsInf(c.TimeStepMin, 0) ||
			math.IsNaN(c.TimeStepMax) || c.TimeStepMin > c.TimeStepMax {
			t.Fatalf("bad float accepted: %+v", c)
		}
	})
}

func TestPrefillChunk(t *testing.T) {
	tests := []struct {
		shape string
		batch int
		want  int
	}{
		{"130m", 1, 2048},      // 3352 floats a position: 2048 fit easily
		{"1.3b", 1, 2048},      // 8512 floats: 70 MiB at 2048
		{"1.3b", 4, 768},       // four sequences: 985 fit, cut to whole 256-token chunks
		{"codestral", 1, 1792}, // 18560 floats: 1808 fit
	}
	for _, tt := range tests {
		m := &Model{Config: Shapes[tt.shape]}
		if got := m.prefillChunk(tt.batch); got != tt.want {
			t.Errorf("%s, batch %d: prefill chunk %d, want %d", tt.shape, tt.batch, got, tt.want)
		}
	}
	m := &Model{Config: Shapes["130m"], PrefillChunk: 100}
	if got := m.prefillChunk(1); got != 100 {
		t.Errorf("PrefillChunk 100 gives %d", got)
	}
}

func TestParseQuantization(t *testing.T) {
	base := `{"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100, "num_heads": 2, "head_dim": 64, "state_size": 16, "n_groups": 1, "quantization_config": %s}`
	for _, c := range []struct {
		qc   string
		want Quant
		err  string
	}{
		{`null`, Quant{}, ""},
		{`{"quant_method": "mamba2-web", "format": "int8"}`, Quant{Format: FormatInt8}, ""},
		{`{"quant_method": "mamba2-web", "format": "int4", "group_size": 64, "embedding_format": "int8"}`, Quant{Format: FormatInt4, GroupSize: 64, Embedding: FormatInt8}, ""},
		{`{"quant_method": "mamba2-web", "format": "int4"}`, Quant{Format: FormatInt4, GroupSize: 128}, ""},
		{`{"quant_method": "torchao", "quant_type": {"default": {"_type": "Int4WeightOnlyConfig"}}}`, Quant{}, "torchao, GPTQ, AWQ and bitsandbytes"},
		{`{"quant_method": "mamba2-web", "format": "f16"}`, Quant{}, "want int8 or int4"},
		{`{"quant_method": "mamba2-web", "format": "int4", "group_size": 3}`, Quant{}, "group size 3"},
		{`{"quant_method": "mamba2-web", "format": "int4", "embedding_format": "q4"}`, Quant{}, "embedding_format"},
		{`[1]`, Quant{}, "quantization_config"},
	} {
		cfg, err := ParseConfig([]byte(fmt.Sprintf(base, c.qc)))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: got %v, want an error with %q", c.qc, err, c.err)
			}
			continue
		}
		if err != nil || cfg.Quant != c.want {
			t.Errorf("%s: got %+v, %v, want %+v", c.qc, cfg.Quant, err, c.want)
		}
	}
}
