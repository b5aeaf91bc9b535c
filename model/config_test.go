package model

import (
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
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted a config that fails validation: %v", err)
		}
		if c.Heads*c.HeadDim != c.Inner() || c.Heads%c.Groups != 0 {
			t.Fatalf("inconsistent config accepted: %+v", c)
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
