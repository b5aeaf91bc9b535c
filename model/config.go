// Package model defines the Mamba-2 architecture: its configuration, its
// weights, the forward pass written once against a small Backend interface,
// and text generation. The definition of correct is SPEC.md in the project
// root; comments here cite its sections. The hybrid families built on
// Mamba-2 mixers (Bamba, Falcon-H1, Zamba2, GraniteMoeHybrid) are the same
// stack of blocks with attention and MLP blocks added (arch.go, blocks.go,
// hybridforward.go), matched against transformers 5.17.
package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
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
	// Hybrid describes the blocks of a hybrid architecture (Bamba,
	// Falcon-H1, Zamba2, GraniteMoeHybrid: arch.go); nil for Mamba-2,
	// whose fields above are then the whole architecture. For a hybrid,
	// the fields above from State to TimeStepMax are its Mamba-2 mixer's.
	Hybrid *Hybrid
	// Quant is the quantization_config of a checkpoint written by convert
	// --dtype int8|int4: the format of its quantized tensors. Zero for a
	// float checkpoint.
	Quant Quant
}

// Mixer is the Mamba-2 mixer's settings alone (what Backend.Conv and
// Backend.SSM read): the SSM's dimensions, conv width, chunking and dt
// clamp, without the model's vocabulary, layers or hybrid blocks.
func (c Config) Mixer() Config {
	return Config{Hidden: c.Hidden, State: c.State, Expand: c.Expand, Heads: c.Heads, HeadDim: c.HeadDim, Groups: c.Groups,
		ConvKernel: c.ConvKernel, ChunkSize: c.ChunkSize, UseBias: c.UseBias, ConvBias: c.ConvBias, Eps: c.Eps,
		TimeStepMin: c.TimeStepMin, TimeStepMax: c.TimeStepMax}
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
	Eps              json.RawMessage `json:"layer_norm_epsilon"`
	TimeStepLimit    json.RawMessage `json:"time_step_limit"`
	TieWordEmbedding *bool           `json:"tie_word_embeddings"`
	RMSNorm          *bool           `json:"rms_norm"`
	BOS              *int            `json:"bos_token_id"`
	EOS              json.RawMessage `json:"eos_token_id"`
	PAD              *int            `json:"pad_token_id"`
	Quantization     json.RawMessage `json:"quantization_config"`

	// Used only to initialise weights for training; checked, not kept.
	TimeStepMin      json.RawMessage `json:"time_step_min"`
	TimeStepMax      json.RawMessage `json:"time_step_max"`
	TimeStepFloor    json.RawMessage `json:"time_step_floor"`
	InitializerRange json.RawMessage `json:"initializer_range"`

	// state-spaces (mamba_ssm) names
	DModel           *int            `json:"d_model"`
	NLayer           *int            `json:"n_layer"`
	PadVocabMultiple *int            `json:"pad_vocab_size_multiple"`
	SSMCfg           json.RawMessage `json:"ssm_cfg"`
	TieEmbeddings    *bool           `json:"tie_embeddings"`
}

type ssmCfg struct {
	Layer     string          `json:"layer"`
	DState    *int            `json:"d_state"`
	DConv     *int            `json:"d_conv"`
	Expand    *int            `json:"expand"`
	HeadDim   *int            `json:"headdim"`
	NGroups   *int            `json:"ngroups"`
	ChunkSize *int            `json:"chunk_size"`
	Bias      *bool           `json:"bias"`
	ConvBias  *bool           `json:"conv_bias"`
	DtLimit   json.RawMessage `json:"dt_limit"` // mamba_ssm's name for time_step_limit
	// Used only to initialise weights for training; checked, not kept.
	DtMin       json.RawMessage `json:"dt_min"`
	DtMax       json.RawMessage `json:"dt_max"`
	DtInitFloor json.RawMessage `json:"dt_init_floor"`
}

// ParseConfig reads a config.json in the Hugging Face format or the original
// state-spaces format and validates it. Unknown fields are ignored. The
// non-JSON literals Infinity, -Infinity and NaN that Python's json module
// writes are accepted.
func ParseConfig(data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		fixed := replacePythonLiterals(data)
		if bytes.Equal(fixed, data) {
			return Config{}, fmt.Errorf("config.json: %v", err)
		}
		h = hfConfig{}
		if err := json.Unmarshal(fixed, &h); err != nil {
			// Reported for the fixed text: the first error may only be
			// the literal.
			return Config{}, fmt.Errorf("config.json: %v", err)
		}
	}
	if parse, ok := Families[h.ModelType]; ok {
		return parse(data)
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
	if c.Quant, err = parseQuantization(h.Quantization); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// QuantMethod is the quant_method of the quantization_config that convert
// writes (docs/quantization.md).
const QuantMethod = "mamba2-web"

// parseQuantization reads config.json's quantization_config. Only this
// project's own layout is read: transformers' torchao int4 checkpoints
// hold pickled tensor subclasses whose packing is tied to a CUDA kernel's
// tile layout, and GPTQ/AWQ/bitsandbytes files use their own packings;
// the way in for those models is their float original with --quantize.
func parseQuantization(raw json.RawMessage) (Quant, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return Quant{}, nil
	}
	var q struct {
		Method    string `json:"quant_method"`
		Format    string `json:"format"`
		GroupSize *int   `json:"group_size"`
		Embedding string `json:"embedding_format"`
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		return Quant{}, fmt.Errorf("config.json: quantization_config: %v", err)
	}
	if q.Method != QuantMethod {
		return Quant{}, fmt.Errorf("config.json: quantization_config.quant_method %q is not a format this runtime reads "+
			"(torchao, GPTQ, AWQ and bitsandbytes files pack weights for their own CUDA kernels); "+
			"load the float (bf16/f16) original with --quantize int4 or int8, or convert it with mamba2 convert --dtype int4", q.Method)
	}
	f, err := ParseFormat(q.Format)
	if err != nil || !f.Quantized() {
		return Quant{}, fmt.Errorf("config.json: quantization_config.format %q: want int8 or int4", q.Format)
	}
	out := Quant{Format: f}
	if q.Embedding != "" {
		e, err := ParseFormat(q.Embedding)
		if err != nil || !e.Quantized() {
			return Quant{}, fmt.Errorf("config.json: quantization_config.embedding_format %q: want int8 or int4", q.Embedding)
		}
		out.Embedding = e
	}
	if f == FormatInt4 || out.Embedding == FormatInt4 {
		out.GroupSize = DefaultGroupSize
		if q.GroupSize != nil {
			out.GroupSize = *q.GroupSize
			if out.GroupSize <= 0 {
				return Quant{}, fmt.Errorf("config.json: quantization_config.group_size %d must be positive", out.GroupSize)
			}
		}
	}
	if err := out.Check(); err != nil {
		return Quant{}, fmt.Errorf("config.json: quantization_config: %v", err)
	}
	return out, nil
}

func or[T any](p *T, def T) T {
	if p != nil {
		return *p
	}
	return def
}

func (h hfConfig) huggingFace() (Config, error) {
	if h.ModelType != "" && h.ModelType != "mamba2" {
		return Config{}, fmt.Errorf("config.json: model_type is %q, want one of %s", h.ModelType, familyNames())
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
		TieEmbeddings: or(h.TieWordEmbedding, false),
		BOS:           or(h.BOS, 0),
		PAD:           or(h.PAD, 1),
		EOS:           2,
	}
	var err error
	if c.EOS, err = parseEOS(h.EOS, c.EOS); err != nil {
		return Config{}, err
	}
	if c.Eps, err = optionalFloat("layer_norm_epsilon", h.Eps, 1e-5); err != nil {
		return Config{}, err
	}
	if c.TimeStepMin, c.TimeStepMax, err = parseLimit("time_step_limit", h.TimeStepLimit); err != nil {
		return Config{}, err
	}
	err = checkInitFloats([]namedFloat{{"time_step_min", h.TimeStepMin}, {"time_step_max", h.TimeStepMax},
		{"time_step_floor", h.TimeStepFloor}, {"initializer_range", h.InitializerRange}})
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
	m := or(h.PadVocabMultiple, 8)
	if m > MaxVocab {
		return Config{}, fmt.Errorf("config.json: pad_vocab_size_multiple = %d is above the limit of %d", m, MaxVocab)
	}
	if m > 0 && v > 0 && v <= MaxVocab && v%m != 0 {
		v += m - v%m // both bounded, so this cannot overflow; Validate bounds the result
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
		TieEmbeddings:  or(h.TieEmbeddings, true),
		BOS:            0,
		EOS:            0,
		PAD:            0,
		OriginalNaming: true,
	}
	var err error
	if c.TimeStepMin, c.TimeStepMax, err = parseLimit("ssm_cfg.dt_limit", s.DtLimit); err != nil {
		return Config{}, err
	}
	if err := checkInitFloats([]namedFloat{{"ssm_cfg.dt_min", s.DtMin}, {"ssm_cfg.dt_max", s.DtMax},
		{"ssm_cfg.dt_init_floor", s.DtInitFloor}}); err != nil {
		return Config{}, err
	}
	if c.HeadDim <= 0 {
		return Config{}, fmt.Errorf("config.json: ssm_cfg.headdim must be positive, got %d", c.HeadDim)
	}
	// The heads are derived; Validate reports an out-of-range d_model or
	// expand (before the heads) when this product is not computed.
	if c.Hidden > 0 && c.Hidden <= MaxHidden && c.Expand > 0 && c.Expand <= MaxExpand {
		if inner := c.Expand * c.Hidden; inner%c.HeadDim != 0 {
			return Config{}, fmt.Errorf("config.json: ssm_cfg.expand × d_model = %d × %d = %d is not a multiple of ssm_cfg.headdim = %d",
				c.Expand, c.Hidden, inner, c.HeadDim)
		}
		c.Heads = c.Expand * c.Hidden / c.HeadDim
	}
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
	return 0, fmt.Errorf("config.json: eos_token_id must be an integer or a list of integers, got %s", shown(raw))
}

// parseLimit reads the dt clamp range (time_step_limit, or mamba_ssm's
// dt_limit), written as [lo, hi] where each bound is a number, a bare
// Infinity (already made parseable), or {"__float__": "Infinity"}. Absent,
// it is [0, +Inf], the default of both references. The range itself is
// checked by Validate.
func parseLimit(name string, raw json.RawMessage) (lo, hi float64, err error) {
	if isNull(raw) {
		return 0, math.Inf(1), nil
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) != 2 {
		return 0, 0, fmt.Errorf("config.json: %s must be a pair [min, max], got %s", name, shown(raw))
	}
	var v [2]float64
	for i, p := range parts {
		if v[i], err = parseFloat(p); err != nil {
			return 0, 0, fmt.Errorf("config.json: %s[%d]: %v", name, i, err)
		}
	}
	return v[0], v[1], nil
}

// optionalFloat parses a float field, def when absent or null.
func optionalFloat(name string, raw json.RawMessage, def float64) (float64, error) {
	if isNull(raw) {
		return def, nil
	}
	f, err := parseFloat(raw)
	if err != nil {
		return 0, fmt.Errorf("config.json: %s: %v", name, err)
	}
	return f, nil
}

type namedFloat struct {
	name string
	raw  json.RawMessage
}

// checkInitFloats checks fields that only initialise weights for training
// (the dt range of the initial dt_bias, the init std): inference ignores
// their values, but a file holding NaN, an infinity or a negative number
// there is malformed, and is refused rather than carried along.
func checkInitFloats(fs []namedFloat) error {
	for _, f := range fs {
		v, err := optionalFloat(f.name, f.raw, 0)
		if err != nil {
			return err
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("config.json: %s must be a finite number >= 0, got %v", f.name, v)
		}
	}
	return nil
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// parseFloat reads a float as Python's json module writes it: a number, a
// bare Infinity/-Infinity/NaN (already turned into a string by
// replacePythonLiterals), or transformers' {"__float__": "Infinity"}. A
// number too large for a float64, such as 1e999, is ±Inf, as Python reads
// it; the field's own check then decides whether an infinity is allowed.
func parseFloat(raw json.RawMessage) (float64, error) {
	raw = bytes.TrimSpace(raw)
	var f float64
	if json.Unmarshal(raw, &f) == nil {
		return f, nil
	}
	if len(raw) > 0 && (raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9') && json.Valid(raw) {
		// A JSON number encoding/json refused: only an overflow does that.
		if v, err := strconv.ParseFloat(string(raw), 64); errors.Is(err, strconv.ErrRange) {
			return v, nil
		}
	}
	var obj struct {
		F *string `json:"__float__"`
	}
	var s string
	if json.Unmarshal(raw, &obj) == nil && obj.F != nil {
		// Python's float() of the string: a number or inf/nan spelling.
		v, err := strconv.ParseFloat(*obj.F, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("{\"__float__\": %q} is not a number", *obj.F)
		}
		return v, nil
	}
	if json.Unmarshal(raw, &s) != nil {
		return 0, fmt.Errorf("%s is not a number", shown(raw))
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

// Limits on a config's numbers. config.json is untrusted input, and the
// runtime allocates per-layer tables, recurrent state and GPU buffers from
// these counts, some before any tensor of the checkpoint is looked at; each
// limit is far above every released Mamba-2 (SPEC §1.2: at most 64 layers,
// D = 4096, N = 128, V = 50288) and low enough that a hostile file fails
// here, with the field named, instead of in an allocation.
const (
	// MaxLayers bounds num_hidden_layers (n_layer): 16 times the 64 of
	// the largest release. Weight bindings are built per layer.
	MaxLayers = 1024
	// MaxHidden bounds hidden_size (d_model), D: 16 times Codestral's 4096.
	MaxHidden = 1 << 16
	// MaxVocab bounds vocab_size, V: 4M, 16 times the largest vocabularies
	// in use (256k). The logits of one position are V floats.
	MaxVocab = 1 << 22
	// MaxExpand bounds expand: every release uses 2.
	MaxExpand = 16
	// MaxInner bounds num_heads, head_dim and n_groups, none of which can
	// exceed the inner width I = expand·D = H·P, and so not expand·D at
	// their limits.
	MaxInner = MaxExpand * MaxHidden
	// MaxState bounds state_size, N: 8 times the 128 of every release.
	// (The WebGPU recurrence kernel holds up to 512 per head row in
	// registers and reports a larger N itself.)
	MaxState = 1024
	// MaxConvKernel bounds conv_kernel, K: releases use 4 (mamba_ssm's
	// fused kernel allows at most 4); the WebGPU conv keeps K values per
	// channel in registers.
	MaxConvKernel = 64
	// MaxChunkSize bounds chunk_size, Q: releases use 256. A chunk is a
	// Q×Q block of the SSD passes; prompts are prefilled at most 2048
	// positions at a time, so a larger Q changes nothing.
	MaxChunkSize = 4096
	// MaxTensorElements bounds the elements of any one tensor the config
	// implies (the embedding V·D, in_proj, out_proj, conv1d, one layer's
	// SSM state): the WebGPU backend indexes buffers with 32-bit integers
	// and refuses larger tensors, and every count stays an int32 on the
	// GPU side. Codestral's largest, in_proj, has 18560·4096 = 76M.
	MaxTensorElements = math.MaxInt32
	// MaxStateElements bounds the recurrent state of one sequence over all
	// layers, Layers·(H·P·N + (K−1)·ConvDim) floats, which NewState
	// allocates with no checkpoint bytes behind it: 1G floats (4 GiB),
	// 15 times Codestral's 69M.
	MaxStateElements = 1 << 30
	// MaxEps bounds layer_norm_epsilon: releases use 1e-5; an epsilon
	// above the mean square of unit-scale activations would swamp the
	// normalisation.
	MaxEps = 1.0
)

// fieldNames are the config.json names of Config's fields, in the format the
// config came from, for error messages.
type fieldNames struct {
	vocab, hidden, layers, state, expand, heads, headDim, groups, conv, chunk, eps, limit string
}

func (c Config) names() fieldNames {
	if hy := c.Hybrid; hy != nil && hy.Family == "zamba2" {
		return fieldNames{"vocab_size", "hidden_size", "num_hidden_layers", "mamba_d_state", "mamba_expand",
			"n_mamba_heads", "mamba_headdim", "mamba_ngroups", "mamba_d_conv", "chunk_size", "rms_norm_eps", "time_step_limit"}
	} else if hy != nil {
		return fieldNames{"vocab_size", "hidden_size", "num_hidden_layers", "mamba_d_state", "mamba_expand",
			"mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_d_conv", "mamba_chunk_size", "rms_norm_eps", "time_step_limit"}
	}
	if c.OriginalNaming {
		return fieldNames{"vocab_size (padded)", "d_model", "n_layer", "ssm_cfg.d_state", "ssm_cfg.expand",
			"the head count (expand × d_model / headdim)", "ssm_cfg.headdim", "ssm_cfg.ngroups", "ssm_cfg.d_conv",
			"ssm_cfg.chunk_size", "layer_norm_epsilon", "ssm_cfg.dt_limit"}
	}
	return fieldNames{"vocab_size", "hidden_size", "num_hidden_layers", "state_size", "expand",
		"num_heads", "head_dim", "n_groups", "conv_kernel", "chunk_size", "layer_norm_epsilon", "time_step_limit"}
}

// Validate checks that the dimensions are positive, within the limits above
// and consistent, and that the float fields are in range, naming the
// offending field. Every Config the runtime uses passes it (ParseConfig,
// LoadWeights and NewRandom call it).
func (c Config) Validate() error {
	n := c.names()
	for _, p := range []struct {
		name   string
		v, max int
	}{
		{n.vocab, c.VocabSize, MaxVocab}, {n.hidden, c.Hidden, MaxHidden}, {n.layers, c.Layers, MaxLayers},
		{n.state, c.State, MaxState}, {n.expand, c.Expand, MaxExpand}, {n.heads, c.Heads, MaxInner},
		{n.headDim, c.HeadDim, MaxInner}, {n.groups, c.Groups, MaxInner}, {n.conv, c.ConvKernel, MaxConvKernel},
		{n.chunk, c.ChunkSize, MaxChunkSize},
	} {
		if p.v <= 0 {
			return fmt.Errorf("config.json: %s must be positive, got %d", p.name, p.v)
		}
		if p.v > p.max {
			return fmt.Errorf("config.json: %s = %d is above the limit of %d", p.name, p.v, p.max)
		}
	}
	// Every field is now below 2^23, so products of up to three of them
	// fit in an int64 whatever the size of int.
	V, D, L, N, E := int64(c.VocabSize), int64(c.Hidden), int64(c.Layers), int64(c.State), int64(c.Expand)
	H, P, G, K := int64(c.Heads), int64(c.HeadDim), int64(c.Groups), int64(c.ConvKernel)
	if c.Hybrid != nil {
		if err := c.validateHybrid(); err != nil {
			return err
		}
	} else if H*P != E*D {
		return fmt.Errorf("config.json: %s × %s = %d × %d = %d must equal %s × %s = %d × %d = %d",
			n.heads, n.headDim, H, P, H*P, n.expand, n.hidden, E, D, E*D)
	}
	if H%G != 0 {
		return fmt.Errorf("config.json: %s = %d is not divisible by %s = %d", n.heads, H, n.groups, G)
	}
	I := H * P
	CD := I + 2*G*N
	PD := 2*I + 2*G*N + H
	for _, t := range []struct {
		what       string
		rows, cols int64
	}{
		{fmt.Sprintf("the embedding, %s × %s", n.vocab, n.hidden), V, D},
		{fmt.Sprintf("in_proj, (2·I + 2·G·N + H) × %s", n.hidden), PD, D},
		{fmt.Sprintf("out_proj, %s × I", n.hidden), D, I},
		{fmt.Sprintf("conv1d, (I + 2·G·N) × %s", n.conv), CD, K},
		{fmt.Sprintf("a layer's SSM state, I × %s", n.state), I, N},
	} {
		if t.rows*t.cols > MaxTensorElements {
			return fmt.Errorf("config.json: %s = %d × %d = %d elements, above the limit of %d for one tensor",
				t.what, t.rows, t.cols, t.rows*t.cols, int64(MaxTensorElements))
		}
	}
	if st := L * (I*N + (K-1)*CD); st > MaxStateElements {
		return fmt.Errorf("config.json: the recurrent state of one sequence, %s × (I·N + (K−1)·(I + 2·G·N)), is %d floats, above the limit of %d",
			n.layers, st, MaxStateElements)
	}
	// Norms compute in float32: an epsilon that rounds to 0 there lets an
	// all-zero row divide 0 by 0.
	if !(c.Eps > 0 && c.Eps <= MaxEps) {
		return fmt.Errorf("config.json: %s must be in (0, %v], got %v", n.eps, MaxEps, c.Eps)
	}
	if float32(c.Eps) == 0 {
		return fmt.Errorf("config.json: %s = %v is 0 as a float32, in which the norms compute", n.eps, c.Eps)
	}
	// dt = softplus(...) is never negative: a clamp range must start at a
	// finite lo >= 0 and end at a hi above 0 (+Inf means no upper bound).
	lo, hi := c.TimeStepMin, c.TimeStepMax
	if math.IsNaN(lo) || math.IsNaN(hi) || math.IsInf(lo, 0) || lo < 0 || hi < lo || !(hi > 0) {
		return fmt.Errorf("config.json: %s [%v, %v] is not a valid range: want 0 <= min <= max, min finite, max > 0",
			n.limit, lo, hi)
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

// shown renders a raw JSON value for a one-line error message: compacted
// (a value spread over lines stays one line) and cut at 80 bytes.
func shown(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		b.Reset()
		b.WriteString(strconv.Quote(string(raw)))
	}
	out := b.String()
	if len(out) > 80 {
		out = out[:77] + "..."
	}
	return out
}
