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

// binder collects a hybrid's bindings; each block kind has its own table
// (a method below), named as transformers' state dict names it.
type binder struct {
	c  Config
	hy *Hybrid
	bs []binding
}

func one(name string) []string { return []string{name} }

func (b *binder) vec(names []string, n int, dst *Tensor) {
	b.bs = append(b.bs, binding{names: names, shape: []int{n}, role: RoleVector, dst: dst})
}

func (b *binder) mat(names []string, role Role, dst *Tensor, shape ...int) {
	b.bs = append(b.bs, binding{names: names, shape: shape, role: role, dst: dst})
}

// mamba binds a Mamba-2 mixer under prefix (…mamba.): SPEC §1.3's
// tensors, the gated norm only where the family has one.
func (b *binder) mamba(prefix string, L *Layer) {
	c := b.c
	D, I, K, H, C, PD := c.Hidden, c.Inner(), c.ConvKernel, c.Heads, c.ConvDim(), c.ProjDim()
	b.mat(one(prefix+"in_proj.weight"), RoleInProj, &L.InProj, PD, D)
	b.bs = append(b.bs, binding{names: one(prefix + "conv1d.weight"), shape: []int{C, 1, K}, use: []int{C, K}, role: RoleConv, dst: &L.ConvW})
	b.vec(one(prefix+"dt_bias"), H, &L.DtBias)
	b.vec(one(prefix+"A_log"), H, &L.ALog)
	b.vec(one(prefix+"D"), H, &L.D)
	b.mat(one(prefix+"out_proj.weight"), RoleOutProj, &L.OutProj, D, I)
	if b.hy.MambaNorm {
		b.vec(one(prefix+"norm.weight"), I, &L.MixNorm)
	}
	if c.ConvBias {
		b.vec(one(prefix+"conv1d.bias"), C, &L.ConvB)
	}
	if c.UseBias {
		b.vec(one(prefix+"in_proj.bias"), PD, &L.InBias)
		b.vec(one(prefix+"out_proj.bias"), D, &L.OutBias)
	}
}

// attention binds q, k, v, o (…self_attn.) reading din channels; names
// maps a suffix to the accepted names.
func (b *binder) attention(names func(string) []string, a *Attention, din int) {
	hy, D := b.hy, b.c.Hidden
	Q, KV := hy.AttnHeads*hy.AttnHeadDim, hy.KVHeads*hy.AttnHeadDim
	b.mat(names("self_attn.q_proj.weight"), RoleAttention, &a.Q, Q, din)
	b.mat(names("self_attn.k_proj.weight"), RoleAttention, &a.K, KV, din)
	b.mat(names("self_attn.v_proj.weight"), RoleAttention, &a.V, KV, din)
	b.mat(names("self_attn.o_proj.weight"), RoleAttention, &a.O, D, Q)
	if hy.AttnBias {
		b.vec(names("self_attn.q_proj.bias"), Q, &a.QB)
		b.vec(names("self_attn.k_proj.bias"), KV, &a.KB)
		b.vec(names("self_attn.v_proj.bias"), KV, &a.VB)
		b.vec(names("self_attn.o_proj.bias"), D, &a.OB)
	}
}

// mlp binds a gated MLP under prefix: GraniteMoeHybrid's fused
// input_linear/output_linear, or separate gate/up/down projections.
func (b *binder) mlp(prefix string, m *MLP) {
	D, I := b.c.Hidden, b.hy.Intermediate
	if b.hy.Family == "granitemoehybrid" {
		b.mat(one(prefix+"input_linear.weight"), RoleMLP, &m.Gate, 2*I, D)
		b.mat(one(prefix+"output_linear.weight"), RoleMLP, &m.Down, D, I)
		return
	}
	b.mat(one(prefix+"gate_proj.weight"), RoleMLP, &m.Gate, I, D)
	b.mat(one(prefix+"up_proj.weight"), RoleMLP, &m.Up, I, D)
	b.mat(one(prefix+"down_proj.weight"), RoleMLP, &m.Down, D, I)
	if b.hy.MLPBias {
		b.vec(one(prefix+"gate_proj.bias"), I, &m.GateB)
		b.vec(one(prefix+"up_proj.bias"), I, &m.UpB)
		b.vec(one(prefix+"down_proj.bias"), D, &m.DownB)
	}
}

// moe binds GraniteMoeHybrid's block_sparse_moe (prefix): the router and
// the stacked experts, in the checkpoint's names or transformers 5.x's.
func (b *binder) moe(prefix string, m *MoE) {
	D, E, I := b.c.Hidden, b.hy.Experts, b.hy.ExpertInter
	b.mat([]string{prefix + "router.layer.weight", prefix + "router.weight"}, RoleRouter, &m.Router, E, D)
	b.mat([]string{prefix + "input_linear.weight", prefix + "experts.gate_up_proj"}, RoleExpert, &m.GateUp, E, 2*I, D)
	b.mat([]string{prefix + "output_linear.weight", prefix + "experts.down_proj"}, RoleExpert, &m.Down, E, D, I)
}

// sharedNames are the accepted names of Zamba2 shared block sb's tensor:
// under every hybrid layer that uses it (a checkpoint stores one copy,
// under the first).
func (b *binder) sharedNames(sb int, suffix string) []string {
	var out []string
	for k, l := range b.hy.HybridIDs {
		if k%b.hy.MemBlocks == sb {
			out = append(out, fmt.Sprintf("model.layers.%d.shared_transformer.%s", l, suffix))
		}
	}
	return out
}

// shared binds Zamba2 shared block sb: its 2·D-wide norm and attention,
// and its MLP with the fused gate_up_proj.
func (b *binder) shared(sb int, s *SharedBlock) {
	D, I := b.c.Hidden, b.hy.Intermediate
	names := func(x string) []string { return b.sharedNames(sb, x) }
	b.vec(names("input_layernorm.weight"), 2*D, &s.Norm)
	b.vec(names("pre_ff_layernorm.weight"), D, &s.FFNNorm)
	b.mat(names("feed_forward.gate_up_proj.weight"), RoleMLP, &s.MLP.Gate, 2*I, D)
	b.mat(names("feed_forward.down_proj.weight"), RoleMLP, &s.MLP.Down, D, I)
	b.attention(names, &s.Attn, 2*D)
}

// adapters binds the k-th Zamba2 hybrid layer's adapters, which live in
// its shared block's lists at index k.
func (b *binder) adapters(k int, blk *Block) {
	hy, D := b.hy, b.c.Hidden
	r, sb := hy.AdapterRank, k%hy.MemBlocks
	ad := func(list string, lr *LowRank, in, out int) {
		b.mat(b.sharedNames(sb, fmt.Sprintf("%s.%d.0.weight", list, k)), RoleAdapter, &lr.A, r, in)
		b.mat(b.sharedNames(sb, fmt.Sprintf("%s.%d.1.weight", list, k)), RoleAdapter, &lr.B, out, r)
	}
	if hy.AttnAdapters {
		Q, KV := hy.AttnHeads*hy.AttnHeadDim, hy.KVHeads*hy.AttnHeadDim
		ad("self_attn.linear_q_adapter_list", &blk.QA, 2*D, Q)
		ad("self_attn.linear_k_adapter_list", &blk.KA, 2*D, KV)
		ad("self_attn.linear_v_adapter_list", &blk.VA, 2*D, KV)
	}
	ad("feed_forward.gate_up_proj_adapter_list", &blk.GateUpA, D, 2*hy.Intermediate)
	blk.Adapters = true
}

// hybridBindings binds the tensors of a hybrid architecture: the
// embedding, final norm and head, Zamba2's shared blocks, then block by
// block what its kind holds.
func (c Config) hybridBindings(w *Weights) []binding {
	hy := c.Hybrid
	D, V := c.Hidden, c.VocabSize
	b := &binder{c: c, hy: hy}
	w.Layers = make([]Layer, c.Layers)
	w.Blocks = make([]Block, c.Layers)
	b.mat(one("model.embed_tokens.weight"), RoleEmbedding, &w.Embed, V, D)
	b.vec(one(hy.FinalNorm), D, &w.NormF)
	if !c.TieEmbeddings {
		b.mat(one("lm_head.weight"), RoleLMHead, &w.LMHead, V, D)
	}
	if len(hy.HybridIDs) > 0 {
		for sb := range hy.MemBlocks {
			w.Shared = append(w.Shared, &SharedBlock{})
			b.shared(sb, w.Shared[sb])
		}
	}
	hybrid := 0 // index of the next Zamba2 hybrid layer
	for l, kind := range hy.Blocks {
		blk := &w.Blocks[l]
		blk.Kind = kind
		p := fmt.Sprintf("model.layers.%d.", l)
		switch {
		case kind.Shared: // Zamba2 hybrid layer
			blk.Mamba = &w.Layers[l]
			blk.Shared = w.Shared[hybrid%hy.MemBlocks]
			b.vec(one(p+"mamba_decoder.input_layernorm.weight"), D, &blk.Mamba.Norm)
			b.mamba(p+"mamba_decoder.mamba.", blk.Mamba)
			b.mat(one(p+"linear.weight"), RoleMLP, &blk.Linear, D, D)
			if hy.AdapterRank > 0 {
				b.adapters(hybrid, blk)
			}
			hybrid++
		case kind.Mamba && kind.Attention: // Falcon-H1: one norm for both mixers
			blk.Mamba, blk.Attn = &w.Layers[l], &Attention{}
			b.vec(one(p+"input_layernorm.weight"), D, &blk.Norm)
			b.mamba(p+"mamba.", blk.Mamba)
			b.attention(func(s string) []string { return one(p + s) }, blk.Attn, D)
		case kind.Mamba:
			blk.Mamba = &w.Layers[l]
			b.vec(one(p+"input_layernorm.weight"), D, &blk.Mamba.Norm)
			b.mamba(p+"mamba.", blk.Mamba)
		case kind.Attention:
			blk.Attn = &Attention{}
			b.vec(one(p+"input_layernorm.weight"), D, &blk.Norm)
			b.attention(func(s string) []string { return one(p + s) }, blk.Attn, D)
		}
		switch kind.FFN {
		case MLPFFN:
			blk.MLP = &MLP{}
			if hy.Family == "granitemoehybrid" { // its shared MLP alone
				b.vec(one(p+"post_attention_layernorm.weight"), D, &blk.FFNNorm)
				b.mlp(p+"shared_mlp.", blk.MLP)
			} else {
				b.vec(one(p+"pre_ff_layernorm.weight"), D, &blk.FFNNorm)
				b.mlp(p+"feed_forward.", blk.MLP)
			}
		case MoEFFN:
			blk.MLP, blk.MoE = &MLP{}, &MoE{}
			b.vec(one(p+"post_attention_layernorm.weight"), D, &blk.FFNNorm)
			b.moe(p+"block_sparse_moe.", blk.MoE)
			b.mlp(p+"shared_mlp.", blk.MLP)
		}
	}
	return b.bs
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
