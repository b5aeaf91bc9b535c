package model

import "fmt"

// Roles of the hybrid blocks' weights. None is quantized: quantization
// covers the Mamba-2 projections, the embedding and lm_head.
const (
	RoleAttention Role = "attention" // q, k, v, o projections
	RoleMLP       Role = "mlp"       // gate, up, down projections
	RoleExpert    Role = "experts"   // [E, rows, cols] expert stacks
	RoleRouter    Role = "router"    // [E, D]
	RoleAdapter   Role = "adapter"   // Zamba2's low-rank adapters
)

// Attention holds an attention mixer's projections (biases only with
// attention_bias). Zamba2's shared attention adds a low-rank adapter per
// layer to q, k and v; those live in the Block.
type Attention struct {
	Q, K, V, O     Tensor // [Hq·Dh, Din], [Hkv·Dh, Din] ×2, [D, Hq·Dh]
	QB, KB, VB, OB Tensor
}

// MLP is a gated MLP: down(act(gate·x) · up·x). Up is nil when the
// checkpoint fuses gate and up into one [2I, D] matrix (Gate).
type MLP struct {
	Gate, Up, Down    Tensor
	GateB, UpB, DownB Tensor
}

// MoE is GraniteMoeHybrid's block_sparse_moe.
type MoE struct {
	Router Tensor // [E, D]
	GateUp Tensor // [E, 2I, D]
	Down   Tensor // [E, D, I]
}

// LowRank is a LoRA-style adapter x → B·(A·x): A [r, in], B [out, r].
type LowRank struct{ A, B Tensor }

// SharedBlock is one of Zamba2's shared transformer blocks.
type SharedBlock struct {
	Norm    Tensor // [2D], over [h ‖ embeddings]
	Attn    Attention
	FFNNorm Tensor // [D]
	MLP     MLP    // fused gate_up_proj
}

// Block is one block of the stack (arch.go): its kind and the weights that
// kind binds. Mamba points at the Mamba-2 mixer's weights, whose Norm is
// the block's input norm when the mixer reads the residual stream itself.
type Block struct {
	Kind    BlockKind
	Mamba   *Layer
	Norm    Tensor // the input norm of an attention (or Falcon-H1's shared) mixer
	Attn    *Attention
	FFNNorm Tensor
	MLP     *MLP
	MoE     *MoE

	// Zamba2 hybrid layers.
	Shared              *SharedBlock
	Linear              Tensor // [D, D]: the shared block's output into the Mamba-2 input
	QA, KA, VA, GateUpA LowRank
	Adapters            bool
}

// mamba2Blocks makes the block list of a Mamba-2 model: every block is the
// mixer of SPEC §2 with its norm.
func mamba2Blocks(w *Weights) {
	w.Blocks = make([]Block, len(w.Layers))
	for l := range w.Layers {
		w.Blocks[l] = Block{Kind: BlockKind{Mamba: true}, Mamba: &w.Layers[l]}
	}
}

// hybridBindings binds the tensors of a hybrid architecture, block by
// block, each kind with its own table.
func (c Config) hybridBindings(w *Weights) []binding {
	hy := c.Hybrid
	D, V := c.Hidden, c.VocabSize
	w.Layers = make([]Layer, c.Layers)
	w.Blocks = make([]Block, c.Layers)
	bs := []binding{
		{names: []string{"model.embed_tokens.weight"}, shape: []int{V, D}, role: RoleEmbedding, dst: &w.Embed},
		{names: []string{hy.FinalNorm}, shape: []int{D}, role: RoleVector, dst: &w.NormF},
	}
	if !c.TieEmbeddings {
		bs = append(bs, binding{names: []string{"lm_head.weight"}, shape: []int{V, D}, role: RoleLMHead, dst: &w.LMHead})
	}
	vec := func(names []string, n int, dst *Tensor) binding {
		return binding{names: names, shape: []int{n}, role: RoleVector, dst: dst}
	}
	mat := func(names []string, role Role, dst *Tensor, shape ...int) binding {
		return binding{names: names, shape: shape, role: role, dst: dst}
	}
	one := func(s string) []string { return []string{s} }
	// Zamba2's shared blocks, each under every hybrid layer that uses it
	// (a checkpoint stores one copy, under the first).
	sharedNames := func(b int, suffix string) []string {
		var out []string
		for k, l := range hy.HybridIDs {
			if k%hy.MemBlocks == b {
				out = append(out, fmt.Sprintf("model.layers.%d.shared_transformer.%s", l, suffix))
			}
		}
		return out
	}
	Hq, Hkv, Dh := hy.AttnHeads, hy.KVHeads, hy.AttnHeadDim
	attention := func(names func(string) []string, a *Attention, din int) {
		bs = append(bs,
			mat(names("self_attn.q_proj.weight"), RoleAttention, &a.Q, Hq*Dh, din),
			mat(names("self_attn.k_proj.weight"), RoleAttention, &a.K, Hkv*Dh, din),
			mat(names("self_attn.v_proj.weight"), RoleAttention, &a.V, Hkv*Dh, din),
			mat(names("self_attn.o_proj.weight"), RoleAttention, &a.O, D, Hq*Dh))
		if hy.AttnBias {
			bs = append(bs, vec(names("self_attn.q_proj.bias"), Hq*Dh, &a.QB), vec(names("self_attn.k_proj.bias"), Hkv*Dh, &a.KB),
				vec(names("self_attn.v_proj.bias"), Hkv*Dh, &a.VB), vec(names("self_attn.o_proj.bias"), D, &a.OB))
		}
	}
	if hy.Family == "zamba2" {
		I := hy.Intermediate
		for b := range hy.MemBlocks {
			sb := &SharedBlock{}
			w.Shared = append(w.Shared, sb)
			names := func(s string) []string { return sharedNames(b, s) }
			bs = append(bs, vec(names("input_layernorm.weight"), 2*D, &sb.Norm), vec(names("pre_ff_layernorm.weight"), D, &sb.FFNNorm),
				mat(names("feed_forward.gate_up_proj.weight"), RoleMLP, &sb.MLP.Gate, 2*I, D),
				mat(names("feed_forward.down_proj.weight"), RoleMLP, &sb.MLP.Down, D, I))
			attention(names, &sb.Attn, 2*D)
		}
	}
	I, K, H, C, PD := c.Inner(), c.ConvKernel, c.Heads, c.ConvDim(), c.ProjDim()
	hybrid := 0 // index of the next Zamba2 hybrid layer
	for l, kind := range hy.Blocks {
		blk := &w.Blocks[l]
		blk.Kind = kind
		p := fmt.Sprintf("model.layers.%d.", l)
		if kind.Mamba {
			L := &w.Layers[l]
			blk.Mamba = L
			mp, norm := p+"mamba.", p+"input_layernorm.weight"
			if kind.Shared {
				mp, norm = p+"mamba_decoder.mamba.", p+"mamba_decoder.input_layernorm.weight"
			}
			if kind.Attention {
				bs = append(bs, vec(one(norm), D, &blk.Norm)) // Falcon-H1: one norm for both mixers
			} else {
				bs = append(bs, vec(one(norm), D, &L.Norm))
			}
			bs = append(bs,
				mat(one(mp+"in_proj.weight"), RoleInProj, &L.InProj, PD, D),
				binding{names: one(mp + "conv1d.weight"), shape: []int{C, 1, K}, use: []int{C, K}, role: RoleConv, dst: &L.ConvW},
				vec(one(mp+"dt_bias"), H, &L.DtBias), vec(one(mp+"A_log"), H, &L.ALog), vec(one(mp+"D"), H, &L.D),
				mat(one(mp+"out_proj.weight"), RoleOutProj, &L.OutProj, D, I))
			if hy.MambaNorm {
				bs = append(bs, vec(one(mp+"norm.weight"), I, &L.MixNorm))
			}
			if c.ConvBias {
				bs = append(bs, vec(one(mp+"conv1d.bias"), C, &L.ConvB))
			}
			if c.UseBias {
				bs = append(bs, vec(one(mp+"in_proj.bias"), PD, &L.InBias), vec(one(mp+"out_proj.bias"), D, &L.OutBias))
			}
		}
		if kind.Attention {
			blk.Attn = &Attention{}
			if !kind.Mamba {
				bs = append(bs, vec(one(p+"input_layernorm.weight"), D, &blk.Norm))
			}
			attention(func(s string) []string { return one(p + s) }, blk.Attn, D)
		}
		if kind.Shared {
			k := hybrid
			hybrid++
			blk.Shared = w.Shared[k%hy.MemBlocks]
			bs = append(bs, mat(one(p+"linear.weight"), RoleMLP, &blk.Linear, D, D))
			if r := hy.AdapterRank; r > 0 {
				blk.Adapters = true
				b := k % hy.MemBlocks
				ad := func(list string, lr *LowRank, in, out int) {
					bs = append(bs,
						mat(sharedNames(b, fmt.Sprintf("%s.%d.0.weight", list, k)), RoleAdapter, &lr.A, r, in),
						mat(sharedNames(b, fmt.Sprintf("%s.%d.1.weight", list, k)), RoleAdapter, &lr.B, out, r))
				}
				if hy.AttnAdapters {
					ad("self_attn.linear_q_adapter_list", &blk.QA, 2*D, Hq*Dh)
					ad("self_attn.linear_k_adapter_list", &blk.KA, 2*D, Hkv*Dh)
					ad("self_attn.linear_v_adapter_list", &blk.VA, 2*D, Hkv*Dh)
				}
				ad("feed_forward.gate_up_proj_adapter_list", &blk.GateUpA, D, 2*hy.Intermediate)
			}
		}
		switch kind.FFN {
		case MLPFFN:
			blk.MLP = &MLP{}
			ff := p + "feed_forward."
			norm := p + "pre_ff_layernorm.weight"
			if hy.Family == "granitemoehybrid" {
				ff, norm = p+"shared_mlp.", p+"post_attention_layernorm.weight"
			}
			bs = append(bs, vec(one(norm), D, &blk.FFNNorm))
			bs = append(bs, c.mlpBindings(ff, blk.MLP)...)
		case MoEFFN:
			blk.MLP, blk.MoE = &MLP{}, &MoE{}
			e := p + "block_sparse_moe."
			E, EI := hy.Experts, hy.ExpertInter
			bs = append(bs, vec(one(p+"post_attention_layernorm.weight"), D, &blk.FFNNorm),
				mat([]string{e + "router.layer.weight", e + "router.weight"}, RoleRouter, &blk.MoE.Router, E, D),
				mat([]string{e + "input_linear.weight", e + "experts.gate_up_proj"}, RoleExpert, &blk.MoE.GateUp, E, 2*EI, D),
				mat([]string{e + "output_linear.weight", e + "experts.down_proj"}, RoleExpert, &blk.MoE.Down, E, D, EI))
			bs = append(bs, c.mlpBindings(p+"shared_mlp.", blk.MLP)...)
		}
	}
	return bs
}

// mlpBindings binds a gated MLP under prefix: GraniteMoeHybrid's fused
// input_linear/output_linear, or separate gate/up/down projections.
func (c Config) mlpBindings(prefix string, m *MLP) []binding {
	hy := c.Hybrid
	D, I := c.Hidden, hy.Intermediate
	mat := func(name string, dst *Tensor, shape ...int) binding {
		return binding{names: []string{prefix + name}, shape: shape, role: RoleMLP, dst: dst}
	}
	if hy.Family == "granitemoehybrid" {
		return []binding{mat("input_linear.weight", &m.Gate, 2*I, D), mat("output_linear.weight", &m.Down, D, I)}
	}
	bs := []binding{mat("gate_proj.weight", &m.Gate, I, D), mat("up_proj.weight", &m.Up, I, D), mat("down_proj.weight", &m.Down, D, I)}
	if hy.MLPBias {
		bs = append(bs, mat("gate_proj.bias", &m.GateB, I), mat("up_proj.bias", &m.UpB, I), mat("down_proj.bias", &m.DownB, D))
	}
	return bs
}

// tensors lists every weight once (the tied head once), for Free.
func (w *Weights) tensors() []Tensor {
	out := []Tensor{w.Embed, w.NormF, w.MupVector}
	if w.LMHead != w.Embed {
		out = append(out, w.LMHead)
	}
	for _, l := range w.Layers {
		out = append(out, l.Norm, l.InProj, l.InBias, l.ConvW, l.ConvB, l.DtBias, l.ALog, l.D, l.MixNorm, l.OutProj, l.OutBias)
	}
	attn := func(a *Attention) {
		out = append(out, a.Q, a.K, a.V, a.O, a.QB, a.KB, a.VB, a.OB)
	}
	mlp := func(m *MLP) {
		out = append(out, m.Gate, m.Up, m.Down, m.GateB, m.UpB, m.DownB)
	}
	for _, sb := range w.Shared {
		out = append(out, sb.Norm, sb.FFNNorm)
		attn(&sb.Attn)
		mlp(&sb.MLP)
	}
	for _, b := range w.Blocks {
		out = append(out, b.Norm, b.FFNNorm, b.Linear, b.QA.A, b.QA.B, b.KA.A, b.KA.B, b.VA.A, b.VA.B, b.GateUpA.A, b.GateUpA.B)
		if b.Attn != nil {
			attn(b.Attn)
		}
		if b.MLP != nil {
			mlp(b.MLP)
		}
		if b.MoE != nil {
			out = append(out, b.MoE.Router, b.MoE.GateUp, b.MoE.Down)
		}
	}
	return out
}
