// Package model defines the Mamba-2 architecture: its configuration, its
// weights, the forward pass written once against a small Backend interface,
// and text generation. The definition of correct is SPEC.md in the project
// root; comments here cite its sections.
package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// Config is a Mamba-2 configuration in the runtime's own terms (SPEC §1.1).
type Config struct {
	VocabSize  int // V, rows of the embedding (padded for state-spaces checkpoints)
	Hidden     int // D
	Layers     int
	State      int // N
	Expand     int
	Heads      int // H
	HeadDim    int // P
	Groups     int // G
	ConvKernel int // K
	ChunkSize  int // Q
	UseBias    bool
	ConvBias   bool
	Eps        float64
	// TimeStepMin and TimeStepMax clamp dt in the chunked (prefill) path.
	TimeStepMin, TimeStepMax float64
	TieEmbeddings            bool
	BOS, EOS, PAD            int
	// OriginalNaming is true for state-spaces checkpoints, whose embedding is
	// backbone.embedding.weight.
	OriginalNaming bool
}

// Inner is I = H·P, the width of the SSM.
func (c Config) Inner() int { return c.Heads * c.HeadDim }

// ConvDim is the number of conv channels, I + 2GN (x, B and C).
func (c Config) ConvDim() int { return c.Inner() + 2*c.Groups*c.State }

// ProjDim is the width of in_proj's output, 2I + 2GN + H (z, xBC, dt).
func (c Config) ProjDim() int { return 2*c.Inner() + 2*c.Groups*c.State + c.Heads }

// hfConfig mirrors the fields of a Hugging Face config.json that matter.
// Pointers tell "absent" from zero so defaults apply only when absent.
type hfConfig struct {
	ModelType        string          `json:"model_type"`
	VocabSize        *int            `json:"vocab_size"`
	HiddenSize       *int            `json:"hidden_size"`
	NumHiddenLayers  *int            `json:"num_hidden_layers"`
	StateSize        *int            `json:"state_size"`
	Expand           *int            `json:"expand"`
	NumHeads         *int            `json:"num_heads"`
	HeadDim          *int            `json:"head_dim"`
	NGroups          *int            `json:"n_groups"`
	ConvKernel       *int            `json:"conv_kernel"`
	ChunkSize        *int            `json:"chunk_size"`
	UseBias          *bool           `json:"use_bias"`
	UseConvBias      *bool           `json:"use_conv_bias"`
	Eps              *float64        `json:"layer_norm_epsilon"`
	TimeStepLimit    json.RawMessage `json:"time_step_limit"`
	TieWordEmbedding *bool           `json:"tie_word_embeddings"`
	RMSNorm          *bool           `json:"rms_norm"`
	BOS              *int            `json:"bos_token_id"`
	EOS              json.RawMessage `json:"eos_token_id"`
	PAD              *int            `json:"pad_token_id"`

	// state-spaces (mamba_ssm) names
	DModel           *int            `json:"d_model"`
	NLayer           *int            `json:"n_layer"`
	PadVocabMultiple *int            `json:"pad_vocab_size_multiple"`
	SSMCfg           json.RawMessage `json:"ssm_cfg"`
	TieEmbeddings    *bool           `json:"tie_embeddings"`
}

type ssmCfg struct {
	Layer     string `json:"layer"`
	DState    *int   `json:"d_state"`
	DConv     *int   `json:"d_conv"`
	Expand    *int   `json:"expand"`
	HeadDim   *int   `json:"headdim"`
	NGroups   *int   `json:"ngroups"`
	ChunkSize *int   `json:"chunk_size"`
	Bias      *bool  `json:"bias"`
	ConvBias  *bool  `json:"conv_bias"`
}

// ParseConfig reads a config.json in the Hugging Face format or the original
// state-spaces format and validates it. Unknown fields are ignored. The
// non-JSON literals Infinity, -Infinity and NaN that Python's json module
// writes are accepted.
func ParseConfig(data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		fixed := replacePythonLiterals(data)
		if err2 := json.Unmarshal(fixed, &h); err2 != nil {
			return Config{}, fmt.Errorf("config.json: %v", err)
		}
	}
	var c Config
	var err error
	if h.DModel != nil || h.SSMCfg != nil {
		c, err = h.original()
	} else {
		c, err = h.huggingFace()
	}
	if err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

func or[T any](p *T, def T) T {
	if p != nil {
		return *p
	}
	return def
}

func (h hfConfig) huggingFace() (Config, error) {
	if h.ModelType != "" && h.ModelType != "mamba2" {
		return Config{}, fmt.Errorf("config.json: model_type is %q, want \"mamba2\"", h.ModelType)
	}
	if h.RMSNorm != nil && !*h.RMSNorm {
		return Config{}, fmt.Errorf("config.json: rms_norm false (LayerNorm) is not supported")
	}
	c := Config{
		VocabSize:     or(h.VocabSize, 32768),
		Hidden:        or(h.HiddenSize, 4096),
		Layers:        or(h.NumHiddenLayers, 64),
		State:         or(h.StateSize, 128),
		Expand:        or(h.Expand, 2),
		Heads:         or(h.NumHeads, 128),
		HeadDim:       or(h.HeadDim, 64),
		Groups:        or(h.NGroups, 8),
		ConvKernel:    or(h.ConvKernel, 4),
		ChunkSize:     or(h.ChunkSize, 256),
		UseBias:       or(h.UseBias, false),
		ConvBias:      or(h.UseConvBias, true),
		Eps:           or(h.Eps, 1e-5),
		TieEmbeddings: or(h.TieWordEmbedding, false),
		BOS:           or(h.BOS, 0),
		PAD:           or(h.PAD, 1),
		EOS:           2,
	}
	var err error
	if c.EOS, err = parseEOS(h.EOS, c.EOS); err != nil {
		return Config{}, err
	}
	c.TimeStepMin, c.TimeStepMax, err = parseLimit(h.TimeStepLimit)
	return c, err
}

func (h hfConfig) original() (Config, error) {
	if h.RMSNorm != nil && !*h.RMSNorm {
		return Config{}, fmt.Errorf("config.json: rms_norm false (LayerNorm) is not supported")
	}
	var s ssmCfg
	if len(h.SSMCfg) > 0 && string(h.SSMCfg) != "null" {
		if err := json.Unmarshal(h.SSMCfg, &s); err != nil {
			return Config{}, fmt.Errorf("config.json: ssm_cfg: %v", err)
		}
	}
	if s.Layer != "Mamba2" {
		// mamba_ssm builds Mamba-1 blocks when ssm_cfg names no layer.
		return Config{}, fmt.Errorf("config.json: ssm_cfg.layer is %q, want \"Mamba2\" (Mamba-1 checkpoints are not supported)", s.Layer)
	}
	if h.DModel == nil {
		return Config{}, fmt.Errorf("config.json: d_model is missing")
	}
	if h.NLayer == nil {
		return Config{}, fmt.Errorf("config.json: n_layer is missing")
	}
	if h.VocabSize == nil {
		return Config{}, fmt.Errorf("config.json: vocab_size is missing")
	}
	v := *h.VocabSize
	if m := or(h.PadVocabMultiple, 8); m > 0 && v%m != 0 {
		v += m - v%m
	}
	c := Config{
		VocabSize:      v,
		Hidden:         *h.DModel,
		Layers:         *h.NLayer,
		State:          or(s.DState, 128),
		Expand:         or(s.Expand, 2),
		HeadDim:        or(s.HeadDim, 64),
		Groups:         or(s.NGroups, 1),
		ConvKernel:     or(s.DConv, 4),
		ChunkSize:      or(s.ChunkSize, 256),
		UseBias:        or(s.Bias, false),
		ConvBias:       or(s.ConvBias, true),
		Eps:            1e-5,
		TimeStepMin:    0,
		TimeStepMax:    math.Inf(1),
		TieEmbeddings:  or(h.TieEmbeddings, true),
		BOS:            0,
		EOS:            0,
		PAD:            0,
		OriginalNaming: true,
	}
	if c.HeadDim <= 0 {
		return Config{}, fmt.Errorf("config.json: ssm_cfg.headdim must be positive, got %d", c.HeadDim)
	}
	c.Heads = c.Expand * c.Hidden / c.HeadDim
	return c, nil
}

// parseEOS accepts an integer or a list of integers (the first is used).
func parseEOS(raw json.RawMessage, def int) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return def, nil
	}
	var one int
	if json.Unmarshal(raw, &one) == nil {
		return one, nil
	}
	var many []int
	if json.Unmarshal(raw, &many) == nil && len(many) > 0 {
		return many[0], nil
	}
	return 0, fmt.Errorf("config.json: eos_token_id must be an integer or a list of integers, got %s", raw)
}

// parseLimit reads time_step_limit, written as [lo, hi] where each bound is
// a number, a bare Infinity (already made parseable), or {"__float__": "Infinity"}.
func parseLimit(raw json.RawMessage) (lo, hi float64, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, math.Inf(1), nil
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) != 2 {
		return 0, 0, fmt.Errorf("config.json: time_step_limit must be a pair [min, max], got %s", raw)
	}
	var v [2]float64
	for i, p := range parts {
		if v[i], err = parseFloat(p); err != nil {
			return 0, 0, fmt.Errorf("config.json: time_step_limit[%d]: %v", i, err)
		}
	}
	if math.IsNaN(v[0]) || math.IsNaN(v[1]) || v[0] > v[1] {
		return 0, 0, fmt.Errorf("config.json: time_step_limit [%v, %v] is not a valid range", v[0], v[1])
	}
	return v[0], v[1], nil
}

func parseFloat(raw json.RawMessage) (float64, error) {
	var f float64
	if json.Unmarshal(raw, &f) == nil {
		return f, nil
	}
	var obj struct {
		F *string `json:"__float__"`
	}
	var s string
	if json.Unmarshal(raw, &obj) == nil && obj.F != nil {
		s = *obj.F
	} else if json.Unmarshal(raw, &s) != nil {
		return 0, fmt.Errorf("%s is not a number", raw)
	}
	switch s {
	case "Infinity", "inf", "+inf", "+Infinity":
		return math.Inf(1), nil
	case "-Infinity", "-inf":
		return math.Inf(-1), nil
	case "NaN", "nan":
		return math.NaN(), nil
	}
	return 0, fmt.Errorf("%q is not a number", s)
}

// replacePythonLiterals turns Python's bare Infinity/-Infinity/NaN, which
// are not JSON, into strings that parseFloat understands. It leaves string
// contents alone.
func replacePythonLiterals(data []byte) []byte {
	var out bytes.Buffer
	inStr, esc := false, false
	for i := 0; i < len(data); i++ {
		ch := data[i]
		if inStr {
			out.WriteByte(ch)
			switch {
			case esc:
				esc = false
			case ch == '\\':
				esc = true
			case ch == '"':
				inStr = false
			}
			continue
		}
		if ch == '"' {
			inStr = true
			out.WriteByte(ch)
			continue
		}
		matched := false
		for _, lit := range []string{"-Infinity", "Infinity", "NaN"} {
			if bytes.HasPrefix(data[i:], []byte(lit)) {
				out.WriteString(`"` + lit + `"`)
				i += len(lit) - 1
				matched = true
				break
			}
		}
		if !matched {
			out.WriteByte(ch)
		}
	}
	return out.Bytes()
}

// Validate checks that the dimensions are positive and consistent, naming the
// offending field.
func (c Config) Validate() error {
	pos := []struct {
		name string
		v    int
	}{
		{"vocab_size", c.VocabSize}, {"hidden_size", c.Hidden}, {"num_hidden_layers", c.Layers},
		{"state_size", c.State}, {"expand", c.Expand}, {"num_heads", c.Heads}, {"head_dim", c.HeadDim},
		{"n_groups", c.Groups}, {"conv_kernel", c.ConvKernel}, {"chunk_size", c.ChunkSize},
	}
	for _, p := range pos {
		if p.v <= 0 {
			return fmt.Errorf("config.json: %s must be positive, got %d", p.name, p.v)
		}
		if p.v > 1<<24 {
			return fmt.Errorf("config.json: %s = %d is implausibly large", p.name, p.v)
		}
	}
	if c.Heads*c.HeadDim != c.Expand*c.Hidden {
		return fmt.Errorf("config.json: num_heads × head_dim = %d × %d = %d must equal expand × hidden_size = %d × %d = %d",
			c.Heads, c.HeadDim, c.Heads*c.HeadDim, c.Expand, c.Hidden, c.Expand*c.Hidden)
	}
	if c.Heads%c.Groups != 0 {
		return fmt.Errorf("config.json: num_heads = %d is not divisible by n_groups = %d", c.Heads, c.Groups)
	}
	if !(c.Eps > 0) || math.IsInf(c.Eps, 0) {
		return fmt.Errorf("config.json: layer_norm_epsilon must be positive, got %v", c.Eps)
	}
	for _, id := range []struct {
		name string
		v    int
	}{{"bos_token_id", c.BOS}, {"eos_token_id", c.EOS}, {"pad_token_id", c.PAD}} {
		if id.v < -1 || id.v >= c.VocabSize {
			return fmt.Errorf("config.json: %s = %d is outside the vocabulary of %d", id.name, id.v, c.VocabSize)
		}
	}
	return nil
}
