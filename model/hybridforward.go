package model

// The hybrid blocks' forward pass (arch.go lists the kinds). Each step is
// one line, written from the family's transformers code (5.17), whose
// names the comments use; u is a normed copy of the residual stream h.

// hb is the backend's hybrid extension (LoadWeights checked it is there).
func (f *pass) hb() HybridBackend { return f.s.m.Backend.(HybridBackend) }

// buf is the activation called name, [B, L, cols], made on first use.
func (f *pass) buf(name string, cols int) Tensor {
	sc := f.sc
	if sc.more == nil {
		sc.more = map[string]Tensor{}
	}
	t, ok := sc.more[name]
	if !ok || t.Shape()[2] != cols {
		if ok {
			f.s.m.Backend.Free(t)
		}
		t = f.s.m.Backend.Alloc(F32, f.s.Batch, f.L, cols)
		sc.more[name] = t
	}
	return t
}

// embedded runs after the embedding: the attention caches make room for
// this call, the embedding multiplier applies, and Zamba2 keeps the
// embeddings its shared blocks read.
func (f *pass) embedded() {
	c := f.s.m.Config
	hy := c.Hybrid
	if hy == nil {
		return
	}
	hb := f.hb()
	if hasAttention(hy) {
		f.s.reserve(hb, f.L)
	}
	if hy.Family == "zamba2" {
		emb := f.buf("emb", c.Hidden)
		hb.Embed(emb, f.s.m.Weights.Embed, f.ids) // original_hidden_states = E[ids]
		f.loraEmbedInto(emb)                      // (+ attached adapters' updates of E, as h got)
	}
	if hy.EmbedMul != 1 {
		hb.Scale(f.sc.h, float32(hy.EmbedMul)) // h = E[ids]·embedding_multiplier
	}
}

func hasAttention(hy *Hybrid) bool {
	for _, b := range hy.Blocks {
		if b.Attention || b.Shared {
			return true
		}
	}
	return false
}

// logits applies the family's multiplier on the logits (Falcon-H1's
// lm_head_multiplier, 1/logits_scaling for GraniteMoeHybrid).
func (f *pass) logits(out Tensor) {
	if hy := f.s.m.Config.Hybrid; hy != nil && hy.LogitsMul != 1 {
		f.hb().Scale(out, float32(hy.LogitsMul))
	}
}

// hybrid is one block of a hybrid stack: its mixer(s), then its
// feed-forward part, each added into the residual stream with the
// family's multipliers.
func (f *pass) hybrid(l int, blk *Block) {
	hy, hb, h, D := f.s.m.Config.Hybrid, f.hb(), f.sc.h, f.s.m.Config.Hidden
	r := float32(hy.ResidualMul)
	k := blk.Kind
	switch {
	case k.Shared: // Zamba2 hybrid layer
		t := f.shared(l, blk)                   // t = linear(shared_transformer([h ‖ E[ids]]))
		hb.AddScaled(t, h, 1)                   // the Mamba-2 input is h + t; the residual stays h
		f.mamba(l, blk.Mamba, h, t, true, true) // h += mamba(rmsnorm(h + t))
	case k.Mamba && k.Attention: // Falcon-H1: both mixers read one norm
		u, m := f.buf("u", D), f.buf("mix", D)
		hb.RMSNorm(u, h, blk.Norm, f.mask, 1, f.eps)               // u = input_layernorm(h)·mask
		f.mamba(l, blk.Mamba, m, u, false, false)                  // m = mamba(u·ssm_in_multiplier)
		hb.AddScaled(h, m, float32(hy.SSMOutMul)*r)                // h += m·ssm_out_multiplier
		f.attention(l, blk.Attn, nil, m, u, float32(hy.AttnInMul)) // a = self_attn(u·attention_in_multiplier)
		hb.AddScaled(h, m, float32(hy.AttnOutMul)*r)               // h += a·attention_out_multiplier
	case k.Mamba && r == 1:
		f.mamba(l, blk.Mamba, h, h, true, true) // h += mamba(input_layernorm(h))
	case k.Mamba:
		m := f.buf("mix", D)
		f.mamba(l, blk.Mamba, m, h, true, false) // m = mamba(input_layernorm(h))
		hb.AddScaled(h, m, r)                    // h += m·residual_multiplier
	case k.Attention:
		u, a := f.buf("u", D), f.buf("mix", D)
		hb.RMSNorm(u, h, blk.Norm, nil, 1, f.eps) // u = input_layernorm(h)
		f.attention(l, blk.Attn, nil, a, u, 1)    // a = self_attn(u)
		hb.AddScaled(h, a, r)                     // h += a·residual_multiplier
	}
	switch k.FFN {
	case MLPFFN:
		u, m := f.buf("u", D), f.buf("mix", D)
		hb.RMSNorm(u, h, blk.FFNNorm, nil, 1, f.eps)     // u = pre_ff_layernorm(h)
		f.mlp(blk.MLP, m, u, float32(hy.GateMul), false) // m = down(act(gate(u)·gate_multiplier)·up(u))
		hb.AddScaled(h, m, float32(hy.DownMul)*r)        // h += m·down_multiplier·residual_multiplier
	case MoEFFN:
		u, m := f.buf("u", D), f.buf("mix", D)
		hb.RMSNorm(u, h, blk.FFNNorm, nil, 1, f.eps)                                                    // u = post_attention_layernorm(h)
		hb.MoE(m, u, blk.MoE.Router, blk.MoE.GateUp, blk.MoE.Down, MoEArgs{TopK: hy.TopK, Act: hy.Act}) // m = block_sparse_moe(u)
		f.mlp(blk.MLP, m, u, 1, true)                                                                   // m += shared_mlp(u)
		hb.AddScaled(h, m, r)                                                                           // h += m·residual_multiplier
	}
}

// mamba is a hybrid's Mamba-2 mixer: out (+)= mixer(x), x normed by the
// mixer's own norm when norm is set, masked at its input and after the
// conv (SPEC §2.2), Falcon-H1's multipliers on in_proj's output, and the
// gated norm unless the family has none (then y·silu(z) goes to out_proj).
func (f *pass) mamba(l int, w *Layer, out, x Tensor, norm, add bool) {
	s, b, sc, mask, c := f.s, f.s.m.Backend, f.sc, f.mask, f.args.Config
	in := Plain
	if norm {
		in = f.norm(w.Norm, mask, 1)
	}
	conv := &ConvArgs{Out: sc.xbc, State: s.conv[l], W: w.ConvW, Bias: w.ConvB, Mask: mask, Config: c}
	mup := s.m.Weights.MupVector
	tuned := f.loraOn(w.InProj) // attached adapters change in_proj's output, which the conv reads
	fused := mup == nil && !tuned
	if fused {
		in.Conv = conv // the conv reads in_proj's output as it is written
	}
	b.MatMul(sc.proj, x, w.InProj, w.InBias, in) // z | xBC | dt
	f.loraMat(w.InProj, sc.proj, x, in, f.L)     // (+ attached adapters' updates: the nn.Linear's output)
	if mup != nil {
		f.hb().MulCols(sc.proj, mup) // ·ssm_in_multiplier·mup_vector
	}
	if !fused {
		b.Conv(conv.Out, sc.proj, conv.State, conv.W, conv.Bias, conv.Mask, c) // silu(causal_conv(xBC)), padding zeroed
	}
	b.SSM(sc.y, sc.xbc, sc.proj, s.ssm[l], w.DtBias, w.ALog, w.D, f.args) // y = (SSM(x) + D·x)·silu(z)
	o := Plain
	if w.MixNorm != nil {
		o = f.norm(w.MixNorm, nil, f.groups)
	}
	o.Add = add
	b.MatMul(out, sc.y, w.OutProj, w.OutBias, o) // out (+)= rmsnorm_gated(y) Woutᵀ
	f.loraMat(w.OutProj, out, sc.y, o, f.L)
}

// attention is causal grouped-query attention over the block's KV cache:
// out = o_proj(attend(rotary(q), rotary(k), v)), the projections of
// x·inMul (Falcon-H1's attention_in_multiplier; its key_multiplier on k),
// Zamba2's per-layer adapters added to q, k and v when blk has them.
func (f *pass) attention(l int, a *Attention, blk *Block, out, x Tensor, inMul float32) {
	hy, hb, s := f.s.m.Config.Hybrid, f.hb(), f.s
	Hq, Hkv, Dh := hy.AttnHeads, hy.KVHeads, hy.AttnHeadDim
	q, k, v := f.buf("q", Hq*Dh), f.buf("k", Hkv*Dh), f.buf("v", Hkv*Dh)
	hb.MatMul(q, x, a.Q, a.QB, Plain) // q = q_proj(x)
	hb.MatMul(k, x, a.K, a.KB, Plain) // k = k_proj(x)
	hb.MatMul(v, x, a.V, a.VB, Plain) // v = v_proj(x)
	f.loraMat(a.Q, q, x, Plain, f.L)  // (+ attached adapters' updates, before any multiplier)
	f.loraMat(a.K, k, x, Plain, f.L)
	f.loraMat(a.V, v, x, Plain, f.L)
	if blk != nil && blk.QA.A != nil {
		f.adapter(q, x, blk.QA) // q += linear_q_adapter(x)
		f.adapter(k, x, blk.KA)
		f.adapter(v, x, blk.VA)
	}
	if inMul != 1 {
		hb.Scale(q, inMul)
		hb.Scale(v, inMul)
	}
	if km := inMul * float32(hy.KeyMul); km != 1 {
		hb.Scale(k, km)
	}
	start := s.attn.start // each sequence's position (kvcache.go)
	if hy.RotaryDim > 0 {
		ra := RotaryArgs{Heads: Hq, HeadDim: Dh, Dim: hy.RotaryDim, Theta: hy.RopeTheta, Start: start}
		hb.Rotary(q, ra) // q, k = apply_rotary_pos_emb(q, k, cos, sin)
		ra.Heads = Hkv
		hb.Rotary(k, ra)
	}
	kv := s.kv[l]
	hb.StoreKV(kv.k, k, 0, start) // each sequence's cache grows by this call's positions
	hb.StoreKV(kv.v, v, 0, start)
	att := f.buf("att", Hq*Dh)
	hb.Attend(att, q, kv.k, kv.v, s.attn.keyMask(),
		AttnArgs{Heads: Hq, KVHeads: Hkv, HeadDim: Dh, Start: start, Scale: float32(hy.AttnScale)}) // softmax(q·kᵀ·scale + causal/pad mask)·v
	if l == s.attn.last {
		s.advance(hb, f.L) // the blocks after this one read no positions
	}
	hb.MatMul(out, att, a.O, a.OB, Plain) // out = o_proj(att)
	f.loraMat(a.O, out, att, Plain, f.L)
}

// adapter adds a low-rank adapter's output: dst += B·(A·x).
func (f *pass) adapter(dst, x Tensor, lr LowRank) {
	r := f.buf("lowrank", lr.A.Shape()[0])
	f.s.m.Backend.MatMul(r, x, lr.A, nil, Plain)
	f.loraMat(lr.A, r, x, Plain, f.L) // (attached adapters on the adapter's two nn.Linear)
	f.s.m.Backend.MatMul(dst, r, lr.B, nil, Product{Add: true})
	f.loraMat(lr.B, dst, r, Product{Add: true}, f.L)
}

// mlp is a gated MLP: out (+)= down(act(gate(x)·gateMul)·up(x)), gate
// and up separate or fused into one [2I, D] matrix.
func (f *pass) mlp(m *MLP, out, x Tensor, gateMul float32, add bool) {
	hy, hb := f.s.m.Config.Hybrid, f.hb()
	I := m.Down.Shape()[1]
	g := f.buf("glu", I)
	if m.Up != nil {
		gate, up := f.buf("gate", I), f.buf("up", I)
		hb.MatMul(gate, x, m.Gate, m.GateB, Plain)
		hb.MatMul(up, x, m.Up, m.UpB, Plain)
		f.loraMat(m.Gate, gate, x, Plain, f.L) // (+ attached adapters' updates, before gate_multiplier)
		f.loraMat(m.Up, up, x, Plain, f.L)
		hb.GLU(g, gate, up, hy.Act, gateMul)
	} else {
		gu := f.buf("gateup", 2*I)
		hb.MatMul(gu, x, m.Gate, m.GateB, Plain)
		f.loraMat(m.Gate, gu, x, Plain, f.L)
		hb.GLU(g, gu, nil, hy.Act, gateMul)
	}
	down := Product{Add: add}
	hb.MatMul(out, g, m.Down, m.DownB, down)
	f.loraMat(m.Down, out, g, down, f.L)
}

// shared is a Zamba2 hybrid layer's shared transformer block, then the
// layer's linear map: no residual inside, the Mamba-2 block adds it.
func (f *pass) shared(l int, blk *Block) Tensor {
	hy, hb, c := f.s.m.Config.Hybrid, f.hb(), f.s.m.Config
	D, sb := c.Hidden, blk.Shared
	cat, x := f.buf("cat", 2*D), f.buf("catnorm", 2*D)
	hb.Concat(cat, f.sc.h, f.buf("emb", D))    // [h ‖ original_hidden_states]
	hb.RMSNorm(x, cat, sb.Norm, nil, 1, f.eps) // input_layernorm
	a := f.buf("mix", D)
	f.attention(l, &sb.Attn, blk, a, x, 1) // self_attn, with this layer's adapters
	u := f.buf("u", D)
	hb.RMSNorm(u, a, sb.FFNNorm, nil, 1, f.eps) // pre_ff_layernorm
	I := hy.Intermediate
	gu, g := f.buf("gateup", 2*I), f.buf("glu", I)
	hb.MatMul(gu, u, sb.MLP.Gate, nil, Plain) // gate_up_proj(u)
	f.loraMat(sb.MLP.Gate, gu, u, Plain, f.L) // (+ attached adapters' updates)
	if blk.Adapters {
		f.adapter(gu, u, blk.GateUpA) // + gate_up_proj_adapter(u)
	}
	hb.GLU(g, gu, nil, hy.Act, 1) // act(gate)·up
	m := f.buf("ffn", D)
	hb.MatMul(m, g, sb.MLP.Down, nil, Plain) // down_proj
	f.loraMat(sb.MLP.Down, m, g, Plain, f.L)
	t := f.buf("shared", D)
	hb.MatMul(t, m, blk.Linear, nil, Plain) // the layer's linear
	f.loraMat(blk.Linear, t, m, Plain, f.L)
	return t
}
