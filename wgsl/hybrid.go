package wgsl

import (
	"fmt"
	"math"

	"github.com/cogentcore/webgpu/wgpu"
	"github.com/mamba2web/mamba2/model"
)

// The operations of model.HybridBackend (hybrid architectures: attention
// over a KV cache, gated MLPs, top-k experts, the families' multipliers),
// each a kernel of its own in shaders/ whose top comment states the CPU's
// loop (cpu/hybrid.go). Like the Mamba-2 operations they only record work:
// a decode step of a hybrid stays one submission, and the experts are
// routed on the device (moe_route.wgsl), never through the host.

type scaleParams struct {
	N uint32
	S float32
}

type addScaledParams struct {
	N uint32
	S float32
}

type mulColsParams struct {
	N, X uint32
}

type concatParams struct {
	T, X, Y uint32
}

type storeKVParams struct {
	B, L, X, Cap, At, HasStart uint32
}

type rotaryParams struct {
	Rows, L, Heads, HeadDim, Half, Pos, HasStart uint32
}

type attendParams struct {
	B, L, Cap, Heads, KVHeads, HeadDim, Pos uint32
	Scale                                   float32
	HasMask, HasStart                       uint32
}

type advanceParams struct {
	B, N uint32
}

type gluParams struct {
	T, I, Fused, Act uint32
	GateScale        float32
}

type moeRouteParams struct {
	T, E, TopK uint32
}

type moeGateUpParams struct {
	T, K, D, I, Stride, Qstride, Row0, Rows, Act uint32
}

type moeDownParams struct {
	T, K, D, I, Stride, Qstride, Row0, Rows, First uint32
}

var (
	scaleKernel = newKernel[scaleParams](kernelInfo{
		file: "scale.wgsl", workgroup: 256, binds: []binding{write("x")},
	})
	addScaledKernel = newKernel[addScaledParams](kernelInfo{
		file: "add_scaled.wgsl", workgroup: 256, binds: []binding{read("x"), write("out")},
	})
	mulColsKernel = newKernel[mulColsParams](kernelInfo{
		file: "mul_cols.wgsl", workgroup: 256, binds: []binding{write("x"), read("v")},
	})
	concatKernel = newKernel[concatParams](kernelInfo{
		file: "concat.wgsl", workgroup: 256, binds: []binding{read("a"), read("b"), write("out")},
	})
	storeKVKernel = newKernel[storeKVParams](kernelInfo{
		file: "store_kv.wgsl", workgroup: 256, binds: []binding{read("x"), write("cache"), read("start").optional()},
	})
	rotaryKernel = newKernel[rotaryParams](kernelInfo{
		file: "rotary.wgsl", workgroup: 256, binds: []binding{write("x"), read("inv"), read("start").optional()},
	})
	attendKernel = newKernel[attendParams](kernelInfo{
		file: "attend.wgsl", workgroup: 128,
		binds: []binding{read("q"), read("k"), read("v"), read("mask").optional(), write("out"), read("start").optional()},
	})
	advanceKernel = newKernel[advanceParams](kernelInfo{
		file: "advance.wgsl", workgroup: 64, binds: []binding{write("pos")},
	})
	gluKernel = newKernel[gluParams](kernelInfo{
		file: "glu.wgsl", workgroup: 256, binds: []binding{read("gate"), read("up").optional(), write("out")},
	})
	moeRouteKernel = newKernel[moeRouteParams](kernelInfo{
		file: "moe_route.wgsl", workgroup: 64, binds: []binding{read("logits"), write("idx"), write("wt")},
	})
	moeGateUpKernel = newKernel[moeGateUpParams](kernelInfo{
		file: "moe_gate_up.wgsl", weight: true, workgroup: 256,
		binds: []binding{read("x"), read("idx"), read("W"), write("g"), read("Q").only("WQ")},
	})
	moeDownKernel = newKernel[moeDownParams](kernelInfo{
		file: "moe_down.wgsl", weight: true, workgroup: 256,
		binds: []binding{read("g"), read("idx"), read("wt"), read("W"), write("out"), read("Q").only("WQ")},
	})
)

// attendMaxHeadDim is attend.wgsl's WG · DPI: the channels of one head it
// keeps in workgroup memory and registers.
const attendMaxHeadDim = 512

// elementwise checks the tensor an elementwise op writes.
func (b *Backend) elementwise(op, what string, x model.Tensor) (*tensor, int) {
	t := b.need(op, what, x)
	if t == nil || !b.activation(op, what, t, t.elems()) || !u32s(op, b, t.elems()) {
		return nil, 0
	}
	return t, t.elems()
}

// Scale implements model.HybridBackend: x *= s.
func (b *Backend) Scale(x model.Tensor, s float32) {
	xt, n := b.elementwise("scale", "x", x)
	if xt == nil || n == 0 {
		return
	}
	scaleKernel.dispatch(b, nil, []bind{rw(xt.parts[0])}, scaleParams{N: uint32(n), S: s}, ceilDiv(uint32(n), scaleKernel.workgroup))
}

// AddScaled implements model.HybridBackend: out += s·x.
func (b *Backend) AddScaled(out, x model.Tensor, s float32) {
	const op = "add scaled"
	o, n := b.elementwise(op, "out", out)
	xt := b.need(op, "x", x)
	if o == nil || xt == nil || !b.activation(op, "x", xt, n) || n == 0 {
		return
	}
	addScaledKernel.dispatch(b, nil, []bind{ro(xt.parts[0]), rw(o.parts[0])}, addScaledParams{N: uint32(n), S: s},
		ceilDiv(uint32(n), addScaledKernel.workgroup))
}

// MulCols implements model.HybridBackend: x[t, j] *= v[j].
func (b *Backend) MulCols(x, v model.Tensor) {
	const op = "mul cols"
	xt, n := b.elementwise(op, "x", x)
	vt := b.need(op, "v", v)
	if xt == nil || vt == nil {
		return
	}
	X := vt.elems()
	if X == 0 || n%X != 0 {
		b.failf("%s: x %v is not rows of v's %d elements", op, xt.shape, X)
		return
	}
	if !b.vector(op, "v", vt, X) || n == 0 {
		return
	}
	mulColsKernel.dispatch(b, nil, []bind{rw(xt.parts[0]), ro(vt.parts[0])}, mulColsParams{N: uint32(n), X: uint32(X)},
		ceilDiv(uint32(n), mulColsKernel.workgroup))
}

// lastDim is the last axis of a tensor's shape (its elements for a scalar).
func lastDim(t *tensor) int {
	if len(t.shape) == 0 {
		return t.elems()
	}
	return t.shape[len(t.shape)-1]
}

// Concat implements model.HybridBackend: out[t] = a[t] ‖ b[t].
func (b *Backend) Concat(out, a, c model.Tensor) {
	const op = "concat"
	o, at, ct := b.need(op, "out", out), b.need(op, "a", a), b.need(op, "b", c)
	if o == nil || at == nil || ct == nil {
		return
	}
	X, Y := lastDim(at), lastDim(ct)
	if X == 0 || Y == 0 {
		b.failf("%s: a %v and b %v must have columns", op, at.shape, ct.shape)
		return
	}
	T := at.elems() / X
	if !b.activation(op, "a", at, T*X) || !b.activation(op, "b", ct, T*Y) || !b.activation(op, "out", o, T*(X+Y)) ||
		T == 0 || !u32s(op, b, T*(X+Y)) {
		return
	}
	concatKernel.dispatch(b, nil, []bind{ro(at.parts[0]), ro(ct.parts[0]), rw(o.parts[0])},
		concatParams{T: uint32(T), X: uint32(X), Y: uint32(Y)}, ceilDiv(uint32(T*(X+Y)), concatKernel.workgroup))
}

// positions checks an optional per-sequence position vector: an I32
// tensor of B elements in one buffer. bad reports one present but unfit.
func (b *Backend) positions(op string, x model.Tensor, B int) (t *tensor, bad bool) {
	t, bad = b.maybe(op, "start", x)
	if t == nil || bad {
		return t, bad
	}
	if t.kind != model.I32 || len(t.parts) != 1 || t.elems() != B {
		b.failf("%s: start %s must be an I32 vector of the batch's %d sequences", op, t, B)
		return nil, true
	}
	return t, false
}

// StoreKV implements model.HybridBackend: cache[b, at+start[b]+i] = x[b, i],
// positions past the cache dropped.
func (b *Backend) StoreKV(cache, x model.Tensor, at int, start model.Tensor) {
	const op = "store kv"
	ct, xt := b.need(op, "cache", cache), b.need(op, "x", x)
	if ct == nil || xt == nil {
		return
	}
	if len(ct.shape) != 3 || len(xt.shape) != 3 || ct.shape[0] != xt.shape[0] || ct.shape[2] != xt.shape[2] {
		b.failf("%s: cache %v and x %v must be [B, Cap, X] and [B, L, X]", op, ct.shape, xt.shape)
		return
	}
	B, Cap, L, X := ct.shape[0], ct.shape[1], xt.shape[1], xt.shape[2]
	st, bad := b.positions(op, start, B)
	if bad {
		return
	}
	if at < 0 || (st == nil && at+L > Cap) {
		b.failf("%s: positions [%d, %d) do not fit a cache of %d", op, at, at+L, Cap)
		return
	}
	if !b.activation(op, "cache", ct, B*Cap*X) || !b.activation(op, "x", xt, B*L*X) || B*L*X == 0 || !u32s(op, b, B*Cap*X, at+L) {
		return
	}
	storeKVKernel.dispatch(b, nil, []bind{ro(xt.parts[0]), rw(ct.parts[0]), b.opt(st)},
		storeKVParams{B: uint32(B), L: uint32(L), X: uint32(X), Cap: uint32(Cap), At: uint32(at), HasStart: b2u(st != nil)},
		ceilDiv(uint32(B*L*X), storeKVKernel.workgroup))
}

// CopyKV implements model.HybridBackend with a buffer-to-buffer copy
// recorded between the dispatches around it, as CopyRows: the first n
// positions of a sequence's row are one contiguous run in either cache,
// whatever their capacities.
func (b *Backend) CopyKV(dst model.Tensor, dstRow int, src model.Tensor, srcRow, n int) {
	const op = "copy kv"
	d, s := b.need(op, "dst", dst), b.need(op, "src", src)
	if d == nil || s == nil {
		return
	}
	if len(d.shape) != 3 || len(s.shape) != 3 || d.shape[2] != s.shape[2] {
		b.failf("%s: caches %v and %v must be [B, Cap, X] of the same X", op, s.shape, d.shape)
		return
	}
	if !b.activation(op, "dst", d, d.elems()) || !b.activation(op, "src", s, s.elems()) {
		return
	}
	if d.parts[0].id == s.parts[0].id {
		b.failf("%s: %s is both source and destination", op, d)
		return
	}
	if n < 0 || srcRow < 0 || dstRow < 0 || srcRow >= s.shape[0] || dstRow >= d.shape[0] || n > s.shape[1] || n > d.shape[1] {
		b.failf("%s: positions [0, %d) of sequence %d of %v into sequence %d of %v are out of range", op, n, srcRow, s.shape, dstRow, d.shape)
		return
	}
	if n == 0 || d.shape[2] == 0 {
		return
	}
	if b.closed {
		b.failf("%s: the backend is closed", op)
		return
	}
	if b.broken != nil {
		b.fail(b.broken)
		return
	}
	X := uint64(d.shape[2]) * 4
	b.copyBuffer(op, s.parts[0].buf, uint64(srcRow*s.shape[1])*X, d.parts[0].buf, uint64(dstRow*d.shape[1])*X, uint64(n)*X)
}

// Advance implements model.HybridBackend: pos[b] += n, on the device.
func (b *Backend) Advance(pos model.Tensor, n int) {
	const op = "advance"
	pt := b.need(op, "pos", pos)
	if pt == nil {
		return
	}
	if pt.kind != model.I32 || len(pt.parts) != 1 {
		b.failf("%s: pos %s must be an I32 vector", op, pt)
		return
	}
	B := pt.elems()
	if B == 0 || n == 0 {
		return
	}
	if !u32s(op, b, B, n) {
		return
	}
	advanceKernel.dispatch(b, nil, []bind{rw(pt.parts[0])}, advanceParams{B: uint32(B), N: uint32(n)},
		ceilDiv(uint32(B), advanceKernel.workgroup))
}

// Rotary implements model.HybridBackend: rotate_half on the first a.Dim
// channels of each head, by each row's position.
func (b *Backend) Rotary(x model.Tensor, a model.RotaryArgs) {
	const op = "rotary"
	xt := b.need(op, "x", x)
	if xt == nil {
		return
	}
	if len(xt.shape) != 3 || xt.shape[2] != a.Heads*a.HeadDim {
		b.failf("%s: x has shape %v, want [B, L, %d·%d]", op, xt.shape, a.Heads, a.HeadDim)
		return
	}
	if a.Dim <= 0 || a.Dim%2 != 0 || a.Dim > a.HeadDim || a.Pos < 0 || a.Theta <= 0 {
		b.failf("%s: rotary width %d of a head of %d at position %d with theta %g: want an even width within the head",
			op, a.Dim, a.HeadDim, a.Pos, a.Theta)
		return
	}
	B, L := xt.shape[0], xt.shape[1]
	st, bad := b.positions(op, a.Start, B)
	if bad {
		return
	}
	half := a.Dim / 2
	n := B * L * a.Heads * half
	if !b.activation(op, "x", xt, B*L*a.Heads*a.HeadDim) || n == 0 || !u32s(op, b, n, a.Pos+L) {
		return
	}
	inv := b.invFreq(a.Theta, a.Dim)
	if inv == nil {
		return
	}
	rotaryKernel.dispatch(b, nil, []bind{rw(xt.parts[0]), ro(inv.parts[0]), b.opt(st)},
		rotaryParams{Rows: uint32(B * L), L: uint32(L), Heads: uint32(a.Heads), HeadDim: uint32(a.HeadDim), Half: uint32(half),
			Pos: uint32(a.Pos), HasStart: b2u(st != nil)},
		ceilDiv(uint32(n), rotaryKernel.workgroup))
}

// invFreq is the rotary frequencies 1/theta^(2i/dim), i < dim/2, on the
// device: computed on the host in float32 exactly as transformers and the
// CPU compute them (a GPU's pow differs by ulps, and an ulp of a frequency
// is thousands of ulps of the angle at a late position), uploaded once per
// (theta, dim) and kept with the backend's scratch buffers.
func (b *Backend) invFreq(theta float64, dim int) *tensor {
	name := fmt.Sprintf("rotary.inv %g %d", theta, dim)
	if t, ok := b.scratch[name]; ok {
		return t
	}
	half := dim / 2
	inv := make([]float32, half)
	for i := range inv {
		inv[i] = float32(1 / float64(float32(math.Pow(theta, float64(float32(2*i)/float32(dim))))))
	}
	t := &tensor{name: name, shape: []int{half}, kind: model.F32, format: model.FormatF32, rows: 1, cols: half, stride: half}
	if err := b.addPart(t, 0, 1, wgpu.BufferUsageStorage|wgpu.BufferUsageCopyDst); err != nil {
		b.fail(err)
		return nil
	}
	// A new buffer no recorded work uses: the write needs no submission
	// first, and it lands before the next one.
	if err := b.plat.writeBuffer(b.queue, t.parts[0].buf, 0, bytesOf(inv)); err != nil {
		b.fail(fmt.Errorf("wgsl: rotary: uploading %s: %v", name, err))
		b.Free(t)
		return nil
	}
	b.scratch[name] = t
	return t
}

// Attend implements model.HybridBackend: causal grouped-query attention
// over the KV caches, the key mask marking left padding.
func (b *Backend) Attend(out, q, k, v, keyMask model.Tensor, a model.AttnArgs) {
	const op = "attend"
	o, qt, kt, vt := b.need(op, "out", out), b.need(op, "q", q), b.need(op, "k", k), b.need(op, "v", v)
	mt, bad := b.maybe(op, "key mask", keyMask)
	if o == nil || qt == nil || kt == nil || vt == nil || bad {
		return
	}
	Hq, Hkv, Dh := a.Heads, a.KVHeads, a.HeadDim
	if Hq <= 0 || Hkv <= 0 || Hq%Hkv != 0 || Dh <= 0 {
		b.failf("%s: %d heads over %d KV heads of %d channels: want heads a multiple of KV heads", op, Hq, Hkv, Dh)
		return
	}
	if Dh > attendMaxHeadDim {
		b.failf("%s: heads of %d channels are not supported (attend.wgsl keeps at most %d)", op, Dh, attendMaxHeadDim)
		return
	}
	if len(qt.shape) != 3 || qt.shape[2] != Hq*Dh || len(kt.shape) != 3 || kt.shape[0] != qt.shape[0] || kt.shape[2] != Hkv*Dh {
		b.failf("%s: q %v and k %v: want [B, L, %d] and [B, Cap, %d]", op, qt.shape, kt.shape, Hq*Dh, Hkv*Dh)
		return
	}
	B, L, Cap := qt.shape[0], qt.shape[1], kt.shape[1]
	st, bad := b.positions(op, a.Start, B)
	if bad {
		return
	}
	if a.Pos < 0 || (st == nil && a.Pos+L > Cap) || Cap == 0 {
		b.failf("%s: queries at positions [%d, %d) past a cache of %d", op, a.Pos, a.Pos+L, Cap)
		return
	}
	if !b.activation(op, "q", qt, B*L*Hq*Dh) || !b.activation(op, "out", o, B*L*Hq*Dh) ||
		!b.activation(op, "k", kt, B*Cap*Hkv*Dh) || !b.activation(op, "v", vt, B*Cap*Hkv*Dh) ||
		(mt != nil && !b.activation(op, "key mask", mt, B*Cap)) || B*L == 0 || !u32s(op, b, B*Cap*Hkv*Dh, B*L*Hq) {
		return
	}
	attendKernel.dispatch(b, nil, []bind{ro(qt.parts[0]), ro(kt.parts[0]), ro(vt.parts[0]), b.opt(mt), rw(o.parts[0]), b.opt(st)},
		attendParams{B: uint32(B), L: uint32(L), Cap: uint32(Cap), Heads: uint32(Hq), KVHeads: uint32(Hkv), HeadDim: uint32(Dh),
			Pos: uint32(a.Pos), Scale: a.Scale, HasMask: b2u(mt != nil), HasStart: b2u(st != nil)},
		uint32(B*L*Hq))
}

// activationCode is glu.wgsl's and moe_gate_up.wgsl's act (act.wgsl).
func activationCode(a model.Activation) (uint32, bool) {
	switch a {
	case model.SiLU:
		return 0, true
	case model.GELU:
		return 1, true
	case model.GELUTanh:
		return 2, true
	}
	return 0, false
}

// GLU implements model.HybridBackend: out = act(gateScale·gate)·up, with
// up nil reading both halves of a fused gate_up row.
func (b *Backend) GLU(out, gate, up model.Tensor, act model.Activation, gateScale float32) {
	const op = "glu"
	o, gt := b.need(op, "out", out), b.need(op, "gate", gate)
	ut, bad := b.maybe(op, "up", up)
	if o == nil || gt == nil || bad {
		return
	}
	code, ok := activationCode(act)
	if !ok {
		b.failf("%s: activation %d is not supported", op, act)
		return
	}
	I := lastDim(o)
	if I == 0 {
		return
	}
	T := o.elems() / I
	gw := T * I
	if ut == nil {
		gw = 2 * T * I
	}
	if !b.activation(op, "out", o, T*I) || !b.activation(op, "gate", gt, gw) || (ut != nil && !b.activation(op, "up", ut, T*I)) ||
		T == 0 || !u32s(op, b, gw) {
		return
	}
	gluKernel.dispatch(b, nil, []bind{ro(gt.parts[0]), b.opt(ut), rw(o.parts[0])},
		gluParams{T: uint32(T), I: uint32(I), Fused: b2u(ut == nil), Act: code, GateScale: gateScale},
		ceilDiv(uint32(T*I), gluKernel.workgroup))
}

// moeScratch is scratch buffer name viewed as an activation of exactly
// shape (scratchFor keeps the largest size asked so far).
func (b *Backend) moeScratch(name string, shape ...int) *tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	s := b.scratchFor(name, n)
	if s == nil {
		return nil
	}
	v := *s
	v.shape, v.cols, v.stride = shape, n, n
	return &v
}

// MoE implements model.HybridBackend: the top-k routed experts, on the
// device end to end. The router's logits are a product (MatMul, any
// weight format); moe_route.wgsl picks each row's experts and weights;
// moe_gate_up.wgsl computes each picked expert's act(gate)·up and
// moe_down.wgsl sums the weighted down projections. Only the picked
// experts' weights are read, and experts split over several buffers are
// one dispatch per part.
func (b *Backend) MoE(out, x, router, gateUp, down model.Tensor, a model.MoEArgs) {
	const op = "moe"
	o, xt, rt, gt, dt := b.need(op, "out", out), b.need(op, "x", x), b.need(op, "router", router), b.need(op, "gate_up", gateUp), b.need(op, "down", down)
	if o == nil || xt == nil || rt == nil || gt == nil || dt == nil {
		return
	}
	code, ok := activationCode(a.Act)
	if !ok {
		b.failf("%s: activation %d is not supported", op, a.Act)
		return
	}
	if len(rt.shape) != 2 || len(gt.shape) != 3 || len(dt.shape) != 3 {
		b.failf("%s: router %v, gate_up %v, down %v: want [E, D], [E, 2I, D], [E, D, I]", op, rt.shape, gt.shape, dt.shape)
		return
	}
	E, D, I := rt.shape[0], rt.shape[1], dt.shape[2]
	if gt.shape[0] != E || gt.shape[1] != 2*I || gt.shape[2] != D || dt.shape[0] != E || dt.shape[1] != D {
		b.failf("%s: router %v, gate_up %v, down %v: want [E, D], [E, 2I, D], [E, D, I]", op, rt.shape, gt.shape, dt.shape)
		return
	}
	K := a.TopK
	if K < 1 || K > E {
		b.failf("%s: top %d of %d experts", op, K, E)
		return
	}
	if D == 0 || xt.elems()%D != 0 {
		b.failf("%s: x %v is not rows of %d", op, xt.shape, D)
		return
	}
	T := xt.elems() / D
	if !b.activation(op, "x", xt, T*D) || !b.activation(op, "out", o, T*D) || T == 0 || I == 0 || !u32s(op, b, T*K*I, T*E) {
		return
	}
	logits := b.moeScratch("moe.logits", T, E)
	if logits == nil {
		return
	}
	b.MatMul(logits, xt, rt, nil, model.Plain)
	idx, wts, g := b.moeScratch("moe.idx", T, K), b.moeScratch("moe.wt", T, K), b.moeScratch("moe.g", T*K, I)
	if idx == nil || wts == nil || g == nil {
		return
	}
	moeRouteKernel.dispatch(b, nil, []bind{ro(logits.parts[0]), rw(idx.parts[0]), rw(wts.parts[0])},
		moeRouteParams{T: uint32(T), E: uint32(E), TopK: uint32(K)}, ceilDiv(uint32(T), moeRouteKernel.workgroup))
	for _, p := range gt.parts {
		moeGateUpKernel.dispatchAs(b, gt.withFormat(), gt.role,
			withQ([]bind{ro(xt.parts[0]), ro(idx.parts[0]), ro(p), rw(g.parts[0])}, p),
			moeGateUpParams{T: uint32(T), K: uint32(K), D: uint32(D), I: uint32(I), Stride: uint32(gt.stride), Qstride: uint32(gt.qrow),
				Row0: uint32(p.row0), Rows: uint32(p.rows), Act: code},
			uint32(T*K)*ceilDiv(uint32(I), 4))
	}
	for i, p := range dt.parts {
		moeDownKernel.dispatchAs(b, dt.withFormat(), dt.role,
			withQ([]bind{ro(g.parts[0]), ro(idx.parts[0]), ro(wts.parts[0]), ro(p), rw(o.parts[0])}, p),
			moeDownParams{T: uint32(T), K: uint32(K), D: uint32(D), I: uint32(I), Stride: uint32(dt.stride), Qstride: uint32(dt.qrow),
				Row0: uint32(p.row0), Rows: uint32(p.rows), First: b2u(i == 0)},
			uint32(T)*ceilDiv(uint32(D), 4))
	}
}

var _ model.HybridBackend = (*Backend)(nil)
