package model

import "fmt"

// Activation is the nonlinearity of a gated MLP (config.json's hidden_act).
type Activation int

// Activations.
const (
	SiLU     Activation = iota // x·sigmoid(x), "silu" / "swish"
	GELU                       // exact (erf) GELU, "gelu"
	GELUTanh                   // the tanh approximation, "gelu_pytorch_tanh" / "gelu_new"
)

func (a Activation) String() string {
	switch a {
	case GELU:
		return "gelu"
	case GELUTanh:
		return "gelu_pytorch_tanh"
	}
	return "silu"
}

// parseActivation reads config.json's hidden_act.
func parseActivation(s string) (Activation, error) {
	switch s {
	case "", "silu", "swish":
		return SiLU, nil
	case "gelu":
		return GELU, nil
	case "gelu_pytorch_tanh", "gelu_new", "gelu_fast":
		return GELUTanh, nil
	}
	return 0, fmt.Errorf("config.json: hidden_act %q is not supported (want silu, gelu or gelu_pytorch_tanh)", s)
}

// RotaryArgs are the parameters of HybridBackend.Rotary.
type RotaryArgs struct {
	Heads, HeadDim int
	// Dim is how many leading channels of each head rotate (partial
	// rotary: head_dim × partial_rotary_factor); the rest pass through.
	Dim   int
	Theta float64 // rope_theta
	// Pos is the position of the first row of every sequence, plus
	// Start[b] for sequence b when Start is set: [B] I32 on the backend,
	// so the sequences of a batch may be at different positions (the
	// Scheduler's slots) without the host writing them every step.
	Pos   int
	Start Tensor
}

// AttnArgs are the parameters of HybridBackend.Attend.
type AttnArgs struct {
	Heads, KVHeads, HeadDim int
	// Pos is the position of the first query of every sequence, plus
	// Start[b] for sequence b when Start ([B] I32) is set: the queries of
	// sequence b are positions [p, p+L) with p = Pos + Start[b], and
	// query p+i sees the keys [0, p+i] of its row of the cache.
	Pos   int
	Start Tensor
	Scale float32 // the factor on q·k (1/sqrt(head_dim) for most families)
}

// MoEArgs are the parameters of HybridBackend.MoE.
type MoEArgs struct {
	TopK int
	Act  Activation
}

// HybridBackend is the optional Backend extension that runs the blocks of
// hybrid architectures (Bamba, Falcon-H1, Zamba2, GraniteMoeHybrid): their
// attention with its KV cache, gated MLPs, mixtures of experts and the
// scalar multipliers some families put between steps. A Mamba-2 model never
// calls it, so a backend without it still runs every Mamba-2 checkpoint;
// loading a hybrid on such a backend fails with the operation named
// (RequireHybrid). The CPU backend implements it, the oracle for a GPU one.
//
// Tensors are row-major F32 as for Backend; [B, L, X] holds B sequences of
// L positions.
type HybridBackend interface {
	Backend
	// Scale multiplies x by s in place.
	Scale(x Tensor, s float32)
	// AddScaled adds s·x to out (a residual with a multiplier).
	AddScaled(out, x Tensor, s float32)
	// MulCols multiplies column j of every row of x ([T, X]) by v[j]
	// (v [X]) in place: Falcon-H1's per-part in_proj multipliers.
	MulCols(x, v Tensor)
	// Concat writes out[t] = a[t] ‖ b[t] for rows of a [T, X] and b [T, Y].
	Concat(out, a, b Tensor)
	// Rotary rotates q or k ([B, L, Heads·HeadDim]) in place by the
	// position of each row (p = a.Pos + a.Start[b] + l, a.Start nil
	// counting as zeros), transformers' rotate_half convention: for
	// i < Dim/2, with angle p·Theta^(−2i/Dim),
	// (x[i], x[i+Dim/2]) becomes (x[i]·cos − x[i+Dim/2]·sin,
	// x[i+Dim/2]·cos + x[i]·sin); channels from Dim on are left alone.
	Rotary(x Tensor, a RotaryArgs)
	// StoreKV copies x ([B, L, X]) into positions [p, p+L) of cache
	// ([B, Cap, X]), p = at + start[b] for sequence b (start, [B] I32,
	// nil counting as zeros): appending to a KV cache, each sequence at
	// its own length, or moving a cache into a larger one. Positions
	// past Cap are not written (start lives on the device, where the
	// backend cannot check it first; the model never asks for them).
	StoreKV(cache, x Tensor, at int, start Tensor)
	// CopyKV copies positions [0, n) of sequence srcRow of the cache src
	// ([B, Cap, X]) into positions [0, n) of sequence dstRow of dst
	// ([B', Cap', X]), ordered with the operations around it: moving one
	// sequence's keys or values into a slot of another state (the
	// Scheduler), whatever the two capacities.
	CopyKV(dst Tensor, dstRow int, src Tensor, srcRow, n int)
	// Advance adds n to every element of pos (an I32 vector): the
	// sequences' positions after a forward call of n positions, moved on
	// without a round trip through the host.
	Advance(pos Tensor, n int)
	// Attend is causal grouped-query attention: for each sequence b,
	// query row l of q ([B, L, Heads·HeadDim]) at position
	// p = a.Pos + a.Start[b] + l (a.Start nil counting as zeros), and
	// head h (using KV head h / (Heads/KVHeads)),
	//
	//	out = Σ_j softmax_j(a.Scale · q·k_j) v_j over j ≤ min(p, Cap−1) with keyMask[b, j] ≠ 0
	//
	// k and v are the caches ([B, Cap, KVHeads·HeadDim]); keyMask
	// ([B, Cap], nil: every key counts) marks left padding. A query with
	// no key to see (a padded position) gets zeros.
	Attend(out, q, k, v, keyMask Tensor, a AttnArgs)
	// GLU writes out[t, i] = act(gateScale·gate[t, i]) · up[t, i], the
	// middle of a gated MLP. With up nil, gate is [T, 2I] holding the gate
	// then the up projection (a fused gate_up_proj); out is [T, I].
	GLU(out, gate, up Tensor, act Activation, gateScale float32)
	// MoE writes out ([T, D]) = Σ over the TopK experts e of row t's
	// router logits (x·router[e]) of softmax(the TopK logits)_e ·
	// down[e]·GLU(gateUp[e]·x): the top-k routed mixture of experts.
	// router is [E, D], gateUp [E, 2I, D] (gate rows first), down [E, D, I].
	MoE(out, x, router, gateUp, down Tensor, a MoEArgs)
}

// RequireHybrid returns b as a HybridBackend, or an error naming what the
// model needs and the backend lacks.
func RequireHybrid(c Config, b Backend) (HybridBackend, error) {
	hb, ok := b.(HybridBackend)
	if !ok {
		return nil, fmt.Errorf("the %s backend does not run %s yet (needed by this %s model); use --backend cpu",
			b.Name(), c.Hybrid.needs(), c.Hybrid.Family)
	}
	return hb, nil
}
