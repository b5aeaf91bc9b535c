package model

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// The architecture as data. A model is a stack of blocks; each block has a
// mixer (a Mamba-2 SSM, an attention, or, in Falcon-H1, both side by side)
// and an optional feed-forward part (a gated MLP, or a mixture of experts
// with a shared MLP). Each block kind binds its own tensors (blockBindings)
// and keeps its own per-sequence memory in a State (conv + SSM state for a
// Mamba-2 mixer, a KV cache for an attention). The families differ only in
// which blocks they stack, the tensor names, and scalar multipliers, so
// each is an entry of the registry below, keyed by config.json's
// model_type, rather than a forward pass of its own.

// FFN is the feed-forward part of a block.
type FFN int

// Feed-forward kinds.
const (
	NoFFN  FFN = iota
	MLPFFN     // down(act(gate·x) · up·x)
	MoEFFN     // top-k routed experts plus a shared MLP (GraniteMoeHybrid)
)

// BlockKind is what one block of the stack holds.
type BlockKind struct {
	Mamba     bool // a Mamba-2 mixer
	Attention bool // an attention mixer (both: Falcon-H1's parallel mixers)
	FFN       FFN
	// Shared marks a Zamba2 hybrid layer: the shared transformer block
	// (attention over [h ‖ embeddings] and an MLP, with per-layer LoRA
	// adapters) runs first and its output, through a linear map, is added
	// to the Mamba-2 mixer's input.
	Shared bool
}

func (k BlockKind) String() string {
	var parts []string
	if k.Shared {
		parts = append(parts, "shared-attention")
	}
	if k.Mamba {
		parts = append(parts, "mamba2")
	}
	if k.Attention {
		parts = append(parts, "attention")
	}
	switch k.FFN {
	case MLPFFN:
		parts = append(parts, "mlp")
	case MoEFFN:
		parts = append(parts, "moe")
	}
	return strings.Join(parts, "+")
}

// Hybrid is the part of a Config beyond the Mamba-2 mixer's settings, for
// the hybrid families. It is nil for model_type mamba2, whose forward pass
// is SPEC §2 exactly.
type Hybrid struct {
	Family string // config.json's model_type
	Blocks []BlockKind

	// Attention.
	AttnHeads, KVHeads, AttnHeadDim int
	AttnBias                        bool
	RotaryDim                       int // 0: no rotary embedding (GraniteMoeHybrid's "nope")
	RopeTheta                       float64
	AttnScale                       float64 // the factor on q·k

	// Gated MLP (and the shared MLP of a mixture of experts).
	Intermediate int
	Act          Activation
	MLPBias      bool

	// Mixture of experts.
	Experts, TopK, ExpertInter int

	// Multipliers, 1 where a family has none.
	EmbedMul, LogitsMul, ResidualMul      float64
	AttnInMul, AttnOutMul, KeyMul         float64
	SSMInMul, SSMOutMul, GateMul, DownMul float64
	// SSMMul, when set, scales in_proj's output parts z, x, B, C, dt
	// (Falcon-H1's ssm_multipliers).
	SSMMul []float64

	// MambaNorm says the Mamba-2 mixer ends in the gated RMSNorm; without
	// it (Falcon-H1's mamba_rms_norm false) y·silu(z) goes to out_proj.
	MambaNorm bool
	// NormGroups is how many groups the gated norm normalises separately
	// in this family's transformers code (1: all channels at once).
	NormGroups int

	// Zamba2: the shared transformer blocks and their adapters.
	MemBlocks int   // num_mem_blocks: shared blocks used in turn
	HybridIDs []int // the layers that are hybrid, in order
	// AdapterRank is the rank of the per-layer adapters on the shared
	// MLP's gate_up_proj (Zamba2 always has them); AttnAdapters adds
	// them on q, k and v (use_shared_attention_adapter).
	AdapterRank  int
	AttnAdapters bool

	// Inner is the Mamba-2 mixer's width I (mamba_d_ssm, or expand × D).
	Inner int

	// FinalNorm is the final norm's tensor name.
	FinalNorm string
}

// needs names the operations a hybrid needs beyond Backend, for the error
// of a backend that lacks them.
func (h *Hybrid) needs() string {
	var att, moe, mlp bool
	for _, b := range h.Blocks {
		att = att || b.Attention || b.Shared
		moe = moe || b.FFN == MoEFFN
		mlp = mlp || b.FFN == MLPFFN || b.Shared
	}
	var out []string
	if att {
		out = append(out, "attention")
	}
	if mlp {
		out = append(out, "gated MLPs")
	}
	if moe {
		out = append(out, "mixtures of experts")
	}
	if len(out) == 0 {
		return "hybrid blocks"
	}
	return strings.Join(out, " and ")
}

// Families is the registry of architectures, keyed by model_type: each
// reads its config.json into a Config (the Mamba-2 mixer's settings in
// Config's own fields, the rest in Config.Hybrid). mamba2 is the original
// layout (config.go).
var Families = map[string]func(data []byte) (Config, error){
	"bamba":            parseBamba,
	"granitemoehybrid": parseGranite,
	"falcon_h1":        parseFalconH1,
	"zamba2":           parseZamba2,
}

// hybridJSON is every config.json field the hybrid families use.
type hybridJSON struct {
	ModelType           string          `json:"model_type"`
	VocabSize           *int            `json:"vocab_size"`
	HiddenSize          *int            `json:"hidden_size"`
	NumHiddenLayers     *int            `json:"num_hidden_layers"`
	Intermediate        *int            `json:"intermediate_size"`
	NumAttentionHeads   *int            `json:"num_attention_heads"`
	NumKeyValueHeads    *int            `json:"num_key_value_heads"`
	HeadDim             *int            `json:"head_dim"`
	AttentionBias       *bool           `json:"attention_bias"`
	MLPBias             *bool           `json:"mlp_bias"`
	HiddenAct           string          `json:"hidden_act"`
	RMSNormEps          json.RawMessage `json:"rms_norm_eps"`
	TieWordEmbeddings   *bool           `json:"tie_word_embeddings"`
	BOS                 *int            `json:"bos_token_id"`
	EOS                 json.RawMessage `json:"eos_token_id"`
	PAD                 *int            `json:"pad_token_id"`
	RopeTheta           json.RawMessage `json:"rope_theta"`
	RopeParameters      json.RawMessage `json:"rope_parameters"`
	RopeScaling         json.RawMessage `json:"rope_scaling"`
	PartialRotaryFactor json.RawMessage `json:"partial_rotary_factor"`
	TimeStepLimit       json.RawMessage `json:"time_step_limit"`
	Quantization        json.RawMessage `json:"quantization_config"`
	MambaNHeads         *int            `json:"mamba_n_heads"`
	MambaDHead          json.RawMessage `json:"mamba_d_head"`
	MambaNGroups        *int            `json:"mamba_n_groups"`
	MambaDState         *int            `json:"mamba_d_state"`
	MambaDConv          *int            `json:"mamba_d_conv"`
	MambaExpand         *int            `json:"mamba_expand"`
	MambaChunkSize      *int            `json:"mamba_chunk_size"`
	MambaConvBias       *bool           `json:"mamba_conv_bias"`
	MambaProjBias       *bool           `json:"mamba_proj_bias"`
	MambaDSSM           *int            `json:"mamba_d_ssm"`
	ProjectorsBias      *bool           `json:"projectors_bias"`
	MambaRMSNorm        *bool           `json:"mamba_rms_norm"`
	MambaNormBeforeGate *bool           `json:"mamba_norm_before_gate"`
	AttnLayerIndices    []int           `json:"attn_layer_indices"`
	LayerTypes          []string        `json:"layer_types"`
	NumLocalExperts     *int            `json:"num_local_experts"`
	NumExpertsPerTok    *int            `json:"num_experts_per_tok"`
	SharedIntermediate  *int            `json:"shared_intermediate_size"`
	PositionEmbedding   string          `json:"position_embedding_type"`
	EmbeddingMultiplier json.RawMessage `json:"embedding_multiplier"`
	ResidualMultiplier  json.RawMessage `json:"residual_multiplier"`
	AttentionMultiplier json.RawMessage `json:"attention_multiplier"`
	LogitsScaling       json.RawMessage `json:"logits_scaling"`
	LMHeadMultiplier    json.RawMessage `json:"lm_head_multiplier"`
	KeyMultiplier       json.RawMessage `json:"key_multiplier"`
	AttentionInMul      json.RawMessage `json:"attention_in_multiplier"`
	AttentionOutMul     json.RawMessage `json:"attention_out_multiplier"`
	SSMInMultiplier     json.RawMessage `json:"ssm_in_multiplier"`
	SSMOutMultiplier    json.RawMessage `json:"ssm_out_multiplier"`
	MLPMultipliers      []float64       `json:"mlp_multipliers"`
	SSMMultipliers      []float64       `json:"ssm_multipliers"`
	LayersBlockType     []string        `json:"layers_block_type"`
	HybridLayerIDs      []int           `json:"hybrid_layer_ids"`
	NumMemBlocks        *int            `json:"num_mem_blocks"`
	AdapterRank         *int            `json:"adapter_rank"`
	UseSharedAdapter    *bool           `json:"use_shared_attention_adapter"`
	UseMemRope          *bool           `json:"use_mem_rope"`
	AttentionHeadDim    *int            `json:"attention_head_dim"`
	NMambaHeads         *int            `json:"n_mamba_heads"`
	MambaHeaddim        *int            `json:"mamba_headdim"`
	MambaNgroups        *int            `json:"mamba_ngroups"`
	ChunkSize           *int            `json:"chunk_size"`
	UseConvBias         *bool           `json:"use_conv_bias"`
	AddBiasLinear       *bool           `json:"add_bias_linear"`
	UseLongContext      *bool           `json:"use_long_context"`
	SlidingWindow       json.RawMessage `json:"sliding_window"`
}

// readHybrid unmarshals config.json (Python's bare Infinity accepted).
func readHybrid(data []byte) (hybridJSON, error) {
	var h hybridJSON
	if err := json.Unmarshal(data, &h); err != nil {
		h = hybridJSON{}
		if err := json.Unmarshal(replacePythonLiterals(data), &h); err != nil {
			return h, fmt.Errorf("config.json: %v", err)
		}
	}
	return h, nil
}

// float reads an optional float field.
func (h hybridJSON) float(name string, raw json.RawMessage, def float64) (float64, error) {
	v, err := optionalFloat(name, raw, def)
	if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
		err = fmt.Errorf("config.json: %s must be finite, got %v", name, v)
	}
	return v, err
}

// base fills the fields every family shares: sizes, the Mamba-2 mixer's
// settings from the mamba_* keys, norms, special ids and the rotary
// parameters.
func (h hybridJSON) base(c *Config, hy *Hybrid) error {
	c.VocabSize = or(h.VocabSize, 128000)
	c.Hidden = or(h.HiddenSize, 4096)
	c.Layers = or(h.NumHiddenLayers, 32)
	c.State = or(h.MambaDState, 128)
	c.Expand = or(h.MambaExpand, 2)
	c.Heads = or(h.MambaNHeads, 128)
	c.Groups = or(h.MambaNGroups, 1)
	c.ConvKernel = or(h.MambaDConv, 4)
	c.ChunkSize = or(h.MambaChunkSize, 256)
	c.UseBias = or(h.MambaProjBias, false)
	c.ConvBias = or(h.MambaConvBias, true)
	c.TieEmbeddings = or(h.TieWordEmbeddings, false)
	c.BOS, c.PAD, c.EOS = or(h.BOS, 1), or(h.PAD, 0), 2
	var err error
	if c.EOS, err = parseEOS(h.EOS, c.EOS); err != nil {
		return err
	}
	if c.Eps, err = optionalFloat("rms_norm_eps", h.RMSNormEps, 1e-5); err != nil {
		return err
	}
	if c.TimeStepMin, c.TimeStepMax, err = parseLimit("time_step_limit", h.TimeStepLimit); err != nil {
		return err
	}
	inner := c.Expand * c.Hidden
	if h.MambaDSSM != nil {
		inner = *h.MambaDSSM
	}
	hy.Inner = inner
	c.HeadDim = 64
	if !isNull(h.MambaDHead) {
		var s string
		if json.Unmarshal(h.MambaDHead, &s) == nil && s == "auto" {
			if c.Heads > 0 {
				c.HeadDim = inner / c.Heads
			}
		} else if err := json.Unmarshal(h.MambaDHead, &c.HeadDim); err != nil {
			return fmt.Errorf("config.json: mamba_d_head must be an integer or \"auto\", got %s", shown(h.MambaDHead))
		}
	}

	hy.AttnHeads = or(h.NumAttentionHeads, 32)
	hy.KVHeads = or(h.NumKeyValueHeads, hy.AttnHeads)
	if hy.AttnHeads > 0 {
		hy.AttnHeadDim = or(h.HeadDim, c.Hidden/hy.AttnHeads)
	}
	hy.AttnBias = or(h.AttentionBias, false)
	hy.Intermediate = or(h.Intermediate, 4*c.Hidden)
	hy.MLPBias = or(h.MLPBias, false)
	if hy.Act, err = parseActivation(h.HiddenAct); err != nil {
		return err
	}
	hy.EmbedMul, hy.LogitsMul, hy.ResidualMul = 1, 1, 1
	hy.AttnInMul, hy.AttnOutMul, hy.KeyMul = 1, 1, 1
	hy.SSMInMul, hy.SSMOutMul, hy.GateMul, hy.DownMul = 1, 1, 1, 1
	hy.MambaNorm = true
	hy.NormGroups = 1
	hy.FinalNorm = "model.final_layernorm.weight"
	hy.RopeTheta, err = h.rope(hy, 1)
	if err != nil {
		return err
	}
	if w := h.SlidingWindow; !isNull(w) && string(w) != "0" {
		return fmt.Errorf("config.json: sliding_window %s: sliding-window attention is not supported", shown(w))
	}
	if hy.AttnHeadDim > 0 {
		hy.AttnScale = 1 / math.Sqrt(float64(hy.AttnHeadDim))
	}
	return nil
}

// rope reads rope_theta and the partial rotary factor, from the top level
// (transformers 4.x) or rope_parameters (5.x), and sets RotaryDim. Scaled
// rotary variants (yarn, linear, dynamic) are refused: no supported family
// ships one.
func (h hybridJSON) rope(hy *Hybrid, defPartial float64) (float64, error) {
	var rp struct {
		Theta   json.RawMessage `json:"rope_theta"`
		Partial json.RawMessage `json:"partial_rotary_factor"`
		Type    string          `json:"rope_type"`
	}
	if !isNull(h.RopeParameters) {
		if err := json.Unmarshal(h.RopeParameters, &rp); err != nil {
			return 0, fmt.Errorf("config.json: rope_parameters: %v", err)
		}
	}
	if rp.Type != "" && rp.Type != "default" {
		return 0, fmt.Errorf("config.json: rope_parameters.rope_type %q is not supported (only the default rotary embedding)", rp.Type)
	}
	if !isNull(h.RopeScaling) {
		var rs struct {
			Type string `json:"rope_type"`
			Old  string `json:"type"`
		}
		json.Unmarshal(h.RopeScaling, &rs)
		if t := rs.Type + rs.Old; t != "" && t != "default" {
			return 0, fmt.Errorf("config.json: rope_scaling %q is not supported (only the default rotary embedding)", t)
		}
	}
	thetaRaw := rp.Theta
	if isNull(thetaRaw) {
		thetaRaw = h.RopeTheta
	}
	theta, err := h.float("rope_theta", thetaRaw, 10000)
	if err != nil {
		return 0, err
	}
	partRaw := rp.Partial
	if isNull(partRaw) {
		partRaw = h.PartialRotaryFactor
	}
	part, err := h.float("partial_rotary_factor", partRaw, defPartial)
	if err != nil {
		return 0, err
	}
	if !(part > 0 && part <= 1) || !(theta > 0) {
		return 0, fmt.Errorf("config.json: rope_theta %v and partial_rotary_factor %v: want theta > 0 and a factor in (0, 1]", theta, part)
	}
	hy.RotaryDim = int(float64(hy.AttnHeadDim) * part)
	return theta, nil
}

// finish validates a hybrid config and its block list.
func finish(c Config, hy *Hybrid, h hybridJSON) (Config, error) {
	c.Hybrid = hy
	var err error
	if c.Quant, err = parseQuantization(h.Quantization); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// parseBamba: Bamba (ibm-ai-platform/Bamba-9B): Mamba-2 blocks with
// attention at attn_layer_indices, every block followed by a gated MLP;
// rotary on half of each head by default.
func parseBamba(data []byte) (Config, error) {
	h, err := readHybrid(data)
	if err != nil {
		return Config{}, err
	}
	var c Config
	hy := &Hybrid{Family: "bamba"}
	if err := h.base(&c, hy); err != nil {
		return Config{}, err
	}
	if hy.RopeTheta, err = h.rope(hy, 0.5); err != nil {
		return Config{}, err
	}
	att := map[int]bool{}
	for _, i := range h.AttnLayerIndices {
		att[i] = true
	}
	for l := range c.Layers {
		hy.Blocks = append(hy.Blocks, BlockKind{Mamba: !att[l], Attention: att[l], FFN: MLPFFN})
	}
	return finish(c, hy, h)
}

// parseGranite: GraniteMoeHybrid (granite-4.0-h-*): layer_types picks a
// Mamba-2 or an attention mixer; each block then has a mixture of experts
// (num_local_experts > 0) plus a shared MLP, and Granite's multipliers on
// the embedding, the residual branches, the attention scores and the
// logits (divided by logits_scaling).
func parseGranite(data []byte) (Config, error) {
	h, err := readHybrid(data)
	if err != nil {
		return Config{}, err
	}
	var c Config
	hy := &Hybrid{Family: "granitemoehybrid"}
	if err := h.base(&c, hy); err != nil {
		return Config{}, err
	}
	hy.FinalNorm = "model.norm.weight"
	if h.PositionEmbedding == "nope" {
		hy.RotaryDim = 0
	} else if h.PositionEmbedding != "" && h.PositionEmbedding != "rope" {
		return Config{}, fmt.Errorf("config.json: position_embedding_type %q: want rope or nope", h.PositionEmbedding)
	}
	hy.Experts = or(h.NumLocalExperts, 0)
	hy.TopK = or(h.NumExpertsPerTok, 0)
	hy.ExpertInter = hy.Intermediate
	hy.Intermediate = or(h.SharedIntermediate, 0)
	if hy.Experts > 0 && (hy.TopK <= 0 || hy.TopK > hy.Experts) {
		return Config{}, fmt.Errorf("config.json: num_experts_per_tok = %d must be in [1, num_local_experts = %d]", hy.TopK, hy.Experts)
	}
	if hy.Intermediate <= 0 {
		return Config{}, fmt.Errorf("config.json: shared_intermediate_size must be positive (a model without the shared MLP is not supported)")
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *float64
	}{{"embedding_multiplier", h.EmbeddingMultiplier, &hy.EmbedMul}, {"residual_multiplier", h.ResidualMultiplier, &hy.ResidualMul},
		{"attention_multiplier", h.AttentionMultiplier, &hy.AttnScale}} {
		if *f.dst, err = h.float(f.name, f.raw, *f.dst); err != nil {
			return Config{}, err
		}
	}
	ls, err := h.float("logits_scaling", h.LogitsScaling, 1)
	if err != nil {
		return Config{}, err
	}
	if ls == 0 {
		return Config{}, fmt.Errorf("config.json: logits_scaling must not be 0")
	}
	hy.LogitsMul = 1 / ls
	ffn := MLPFFN
	if hy.Experts > 0 {
		ffn = MoEFFN
	}
	for i, t := range h.LayerTypes {
		switch t {
		case "mamba", "linear_attention":
			hy.Blocks = append(hy.Blocks, BlockKind{Mamba: true, FFN: ffn})
		case "attention", "full_attention":
			hy.Blocks = append(hy.Blocks, BlockKind{Attention: true, FFN: ffn})
		default:
			return Config{}, fmt.Errorf("config.json: layer_types[%d] is %q, want mamba or attention", i, t)
		}
	}
	return finish(c, hy, h)
}

// parseFalconH1: Falcon-H1: every block runs a Mamba-2 mixer and an
// attention side by side on the same normed input, then a gated MLP; μP
// multipliers scale the embedding, each branch's input and output, the
// key, the MLP's gate and output, in_proj's output parts and the logits.
func parseFalconH1(data []byte) (Config, error) {
	h, err := readHybrid(data)
	if err != nil {
		return Config{}, err
	}
	var c Config
	hy := &Hybrid{Family: "falcon_h1"}
	if err := h.base(&c, hy); err != nil {
		return Config{}, err
	}
	if or(h.ProjectorsBias, false) != c.UseBias {
		// Falcon-H1 gives out_proj its own bias switch; the mixer here
		// has one for in_proj and out_proj together.
		return Config{}, fmt.Errorf("config.json: projectors_bias %v with mamba_proj_bias %v (out_proj's bias differing from in_proj's) is not supported",
			or(h.ProjectorsBias, false), c.UseBias)
	}
	hy.MambaNorm = or(h.MambaRMSNorm, false)
	if hy.MambaNorm {
		// FalconH1RMSNormGated: per group of I/G channels; with
		// norm_before_gate it normalises y before the gate, which the
		// fused SSM gate (gate first) does not do.
		if or(h.MambaNormBeforeGate, true) {
			return Config{}, fmt.Errorf("config.json: mamba_rms_norm with mamba_norm_before_gate true (norm, then gate) is not supported")
		}
		hy.NormGroups = c.Groups
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *float64
	}{{"embedding_multiplier", h.EmbeddingMultiplier, &hy.EmbedMul}, {"lm_head_multiplier", h.LMHeadMultiplier, &hy.LogitsMul},
		{"key_multiplier", h.KeyMultiplier, &hy.KeyMul}, {"attention_in_multiplier", h.AttentionInMul, &hy.AttnInMul},
		{"attention_out_multiplier", h.AttentionOutMul, &hy.AttnOutMul}, {"ssm_in_multiplier", h.SSMInMultiplier, &hy.SSMInMul},
		{"ssm_out_multiplier", h.SSMOutMultiplier, &hy.SSMOutMul}} {
		if *f.dst, err = h.float(f.name, f.raw, *f.dst); err != nil {
			return Config{}, err
		}
	}
	if m := h.MLPMultipliers; m != nil {
		if len(m) != 2 {
			return Config{}, fmt.Errorf("config.json: mlp_multipliers has %d values, want 2 (gate, down)", len(m))
		}
		hy.GateMul, hy.DownMul = m[0], m[1]
	}
	if m := h.SSMMultipliers; m != nil {
		if len(m) != 5 {
			return Config{}, fmt.Errorf("config.json: ssm_multipliers has %d values, want 5 (z, x, B, C, dt)", len(m))
		}
		hy.SSMMul = m
	}
	for range c.Layers {
		hy.Blocks = append(hy.Blocks, BlockKind{Mamba: true, Attention: true, FFN: MLPFFN})
	}
	return finish(c, hy, h)
}

// parseZamba2: Zamba2: Mamba-2 blocks; at hybrid layers a shared
// transformer block (num_mem_blocks of them, used in turn) reads
// [h ‖ the embeddings] and its output, through the layer's linear map,
// joins the Mamba-2 block's input. Its attention is 2·D wide, with per
// layer LoRA adapters on q, k, v and the MLP's gate_up_proj.
func parseZamba2(data []byte) (Config, error) {
	h, err := readHybrid(data)
	if err != nil {
		return Config{}, err
	}
	// Zamba2 spells the mixer's keys its own way.
	h.MambaNHeads, h.MambaNGroups, h.MambaChunkSize = h.NMambaHeads, h.MambaNgroups, h.ChunkSize
	h.MambaConvBias, h.MambaProjBias = h.UseConvBias, h.AddBiasLinear
	if h.MambaHeaddim != nil {
		h.MambaDHead, _ = json.Marshal(*h.MambaHeaddim)
	}
	var c Config
	hy := &Hybrid{Family: "zamba2"}
	if err := h.base(&c, hy); err != nil {
		return Config{}, err
	}
	if h.HiddenAct == "" {
		hy.Act = GELU
	}
	if or(h.UseLongContext, false) {
		return Config{}, fmt.Errorf("config.json: use_long_context (Zamba2's scaled rotary) is not supported")
	}
	hy.AttnHeadDim = or(h.AttentionHeadDim, 2*c.Hidden/max(hy.AttnHeads, 1))
	hy.KVHeads = or(h.NumKeyValueHeads, hy.AttnHeads)
	// Zamba2's attention reads the 2·D concatenation; its scores are
	// scaled by (head_dim / 2)^-½ (transformers' Zamba2Attention.scaling).
	hy.AttnScale = 1 / math.Sqrt(float64(hy.AttnHeadDim)/2)
	if hy.RopeTheta, err = h.rope(hy, 1); err != nil {
		return Config{}, err
	}
	if !or(h.UseMemRope, false) {
		hy.RotaryDim = 0
	}
	hy.MemBlocks = or(h.NumMemBlocks, 1)
	hy.AdapterRank = or(h.AdapterRank, 128)
	hy.AttnAdapters = or(h.UseSharedAdapter, false)
	hy.NormGroups = c.Groups
	types := h.LayersBlockType
	for l, t := range types {
		switch t {
		case "m", "g":
			return Config{}, fmt.Errorf("config.json: layers_block_type[%d] is %q: this is Zyphra's original Zamba2 format "+
				"(its own remote code, \"m\"/\"g\" blocks, state_size, ffn_hidden_size); the runtime reads the transformers format "+
				"(\"mamba\"/\"hybrid\", mamba_d_state, intermediate_size) that transformers' Zamba2 reads", l, t)
		case "mamba", "linear_attention":
			hy.Blocks = append(hy.Blocks, BlockKind{Mamba: true})
		case "hybrid":
			hy.Blocks = append(hy.Blocks, BlockKind{Mamba: true, Shared: true})
			hy.HybridIDs = append(hy.HybridIDs, l)
		default:
			return Config{}, fmt.Errorf("config.json: layers_block_type[%d] is %q, want mamba or hybrid", l, t)
		}
	}
	if hy.MemBlocks <= 0 || hy.MemBlocks > max(len(hy.HybridIDs), 1) {
		return Config{}, fmt.Errorf("config.json: num_mem_blocks = %d for %d hybrid layers", hy.MemBlocks, len(hy.HybridIDs))
	}
	return finish(c, hy, h)
}

// validateHybrid checks the hybrid part's counts, naming the field.
func (c Config) validateHybrid() error {
	hy := c.Hybrid
	if len(hy.Blocks) != c.Layers {
		// The block list is the architecture: a layer count alone
		// (bench --layers) cannot change it.
		return fmt.Errorf("config.json: num_hidden_layers = %d, but the layer types list %d blocks (a hybrid's layers are its block pattern)", c.Layers, len(hy.Blocks))
	}
	if hy.Inner != c.Heads*c.HeadDim {
		return fmt.Errorf("config.json: the Mamba-2 mixer's heads × head dim = %d × %d = %d must equal its inner width %d",
			c.Heads, c.HeadDim, c.Heads*c.HeadDim, hy.Inner)
	}
	var att bool
	for _, b := range hy.Blocks {
		att = att || b.Attention || b.Shared
	}
	for _, p := range []struct {
		name   string
		v, max int
	}{{"intermediate_size", hy.Intermediate, MaxInner}, {"num_local_experts", hy.Experts, 4096}} {
		if p.v < 0 || p.v > p.max {
			return fmt.Errorf("config.json: %s = %d is out of range [0, %d]", p.name, p.v, p.max)
		}
	}
	if att {
		for _, p := range []struct {
			name string
			v    int
		}{{"num_attention_heads", hy.AttnHeads}, {"num_key_value_heads", hy.KVHeads}, {"head_dim", hy.AttnHeadDim}} {
			if p.v <= 0 || p.v > MaxInner {
				return fmt.Errorf("config.json: %s = %d is out of range [1, %d]", p.name, p.v, MaxInner)
			}
		}
		if hy.AttnHeads%hy.KVHeads != 0 {
			return fmt.Errorf("config.json: num_attention_heads = %d is not divisible by num_key_value_heads = %d", hy.AttnHeads, hy.KVHeads)
		}
		if hy.RotaryDim%2 != 0 {
			return fmt.Errorf("config.json: the rotary width %d (head_dim × partial_rotary_factor) must be even", hy.RotaryDim)
		}
	}
	if hy.Intermediate <= 0 {
		for _, b := range hy.Blocks {
			if b.FFN != NoFFN || b.Shared {
				return fmt.Errorf("config.json: intermediate_size must be positive")
			}
		}
	}
	return nil
}

// familyNames lists the model_type values the runtime reads.
func familyNames() string {
	names := []string{`"mamba2"`}
	for _, f := range []string{"bamba", "falcon_h1", "granitemoehybrid", "zamba2"} {
		names = append(names, `"`+f+`"`)
	}
	return strings.Join(names, ", ")
}
