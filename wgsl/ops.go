package wgsl

import (
	"fmt"
	"math"

	"github.com/mamba2web/mamba2/model"
)

// Each operation follows the same steps: check the tensors and shapes
// (recording an error and skipping the op when they do not fit), pick the
// kernel variant (defines), list the bindings, fill the parameters, and
// record the dispatch. The comment at the top of each shader states the
// loop it computes, which is the cpu package's loop for the same op.

// need fetches a required tensor argument and checks it is usable.
func (b *Backend) need(op, what string, x model.Tensor) *tensor {
	if x == nil {
		b.failf("%s: %s is nil", op, what)
		return nil
	}
	t := b.asTensor(op, x, what)
	if t == nil {
		return nil
	}
	if t.freed {
		b.failf("%s: %s %v was freed", op, what, t.shape)
		return nil
	}
	if !t.ok() {
		b.failf("%s: %s %v was never created (see the first error)", op, what, t.shape)
		return nil
	}
	return t
}

// maybe fetches an optional tensor argument; bad reports a present but
// unusable one.
func (b *Backend) maybe(op, what string, x model.Tensor) (t *tensor, bad bool) {
	if x == nil {
		return nil, false
	}
	t = b.need(op, what, x)
	return t, t == nil
}

// activation checks that t is a single-buffer f32 tensor of n elements.
func (b *Backend) activation(op, what string, t *tensor, n int) bool {
	if t.format != model.FormatF32 || len(t.parts) != 1 || t.kind != model.F32 {
		b.failf("%s: %s %s must be an F32 tensor in one buffer", op, what, t)
		return false
	}
	if t.elems() != n {
		b.failf("%s: %s has shape %v (%d elements), want %d elements", op, what, t.shape, t.elems(), n)
		return false
	}
	return true
}

// vector checks an f32 vector (a widened weight or an activation) of n.
func (b *Backend) vector(op, what string, t *tensor, n int) bool {
	return b.activation(op, what, t, n)
}

// matrix returns t viewed as N rows of K elements with its parts. An Alloc'd
// tensor is one contiguous part of rows with stride K.
func matrix(t *tensor) (N, K, stride int, parts []part) {
	if len(t.shape) == 0 {
		return 1, t.elems(), t.elems(), t.parts
	}
	N = t.shape[0]
	if N == 0 {
		return 0, 0, 0, nil
	}
	K = t.elems() / N
	if t.rows == N {
		return N, K, t.stride, t.parts
	}
	p := t.parts[0]
	p.row0, p.rows = 0, N
	return N, K, K, []part{p}
}

// withQ adds a quantized weight part's scales and zeros as the last
// binding (unpack.wgsl's Q).
func withQ(binds []bind, p part) []bind {
	if p.q != nil {
		binds = append(binds, ro(*p.q))
	}
	return binds
}

func u32s(op string, b *Backend, vals ...int) bool {
	for _, v := range vals {
		if v < 0 || v > math.MaxInt32 {
			b.failf("%s: size %d out of range", op, v)
			return false
		}
	}
	return true
}

// Embed implements model.Backend: out[t, :] = table[ids[t], :]. A table
// split over several buffers is one dispatch per part.
func (b *Backend) Embed(out, table, ids model.Tensor) {
	const op = "embed"
	o, tb, id := b.need(op, "out", out), b.need(op, "table", table), b.need(op, "ids", ids)
	if o == nil || tb == nil || id == nil {
		return
	}
	if id.kind != model.I32 {
		b.failf("%s: ids %s must be I32", op, id)
		return
	}
	V, D, stride, parts := matrix(tb)
	T := id.elems()
	if !b.activation(op, "out", o, T*D) || T == 0 || D == 0 {
		return
	}
	for i, p := range parts {
		embedKernel.dispatch(b, tb.withFormat(),
			withQ([]bind{ro(id.parts[0]), ro(p), rw(o.parts[0])}, p),
			embedParams{T: uint32(T), D: uint32(D), Stride: uint32(stride), Row0: uint32(p.row0), Rows: uint32(p.rows),
				Vocab: uint32(V), First: b2u(i == 0), Qstride: uint32(tb.qrow)},
			uint32(T)*ceilDiv(uint32(D), embedKernel.workgroup))
	}
}

// RMSNorm implements model.Backend: out = rmsnorm_group(h)·w·mask.
func (b *Backend) RMSNorm(out, h, w, mask model.Tensor, groups int, eps float32) {
	const op = "rmsnorm"
	o, ht, wt := b.need(op, "out", out), b.need(op, "h", h), b.need(op, "w", w)
	mt, bad := b.maybe(op, "mask", mask)
	if o == nil || ht == nil || wt == nil || bad {
		return
	}
	D := wt.elems()
	if D == 0 || ht.elems()%D != 0 {
		b.failf("%s: h %v is not rows of w's %d elements", op, ht.shape, D)
		return
	}
	T := ht.elems() / D
	if !b.vector(op, "w", wt, D) || !b.activation(op, "h", ht, T*D) || !b.activation(op, "out", o, T*D) ||
		(mt != nil && !b.activation(op, "mask", mt, T)) {
		return
	}
	b.rmsnorm(o, ht, wt, mt, T, D, groups, eps)
}

// rmsnorm records rmsnorm.wgsl over checked tensors.
func (b *Backend) rmsnorm(o, ht, wt, mt *tensor, T, D, groups int, eps float32) {
	groups = max(groups, 1)
	if D%groups != 0 {
		b.failf("rmsnorm: %d channels do not split into %d groups", D, groups)
		return
	}
	rmsnormKernel.dispatch(b, nil,
		[]bind{ro(ht.parts[0]), ro(wt.parts[0]), b.opt(mt), rw(o.parts[0])},
		rmsnormParams{T: uint32(T), D: uint32(D), Groups: uint32(groups), Gs: uint32(D / groups), Eps: eps, HasMask: b2u(mt != nil)},
		uint32(T*groups))
}

// maxNormGroups bounds the groups a decoded product normalises in the
// kernel (matmul.wgsl keeps TB × groups scales in workgroup memory).
const maxNormGroups = 64

// vectorWidth is matmul.wgsl's WV for a weight format: the elements of one
// read of the matrix-vector kernel.
func vectorWidth(f model.Format) int {
	switch f {
	case model.FormatInt8:
		return 4
	case model.FormatInt4:
		return 8
	}
	return 2
}

// matvecGroup is matmul.wgsl's TB: the tokens of one workgroup of the
// matrix-vector kernel, which reads each weight once per group. MatMul
// takes that kernel for up to Options.MatvecTokens tokens. (An 8-token
// variant, TB = 8, measured slower at batch 8 on an H200 than the tiled
// kernel, 2,342 against 2,769 tok/s at 130m, when both left the norms and
// the conv to kernels of their own.)
const matvecGroup = 4

// convParallelTokens is the shortest prompt for which Conv computes every
// position in parallel rather than one sequential pass per channel (which
// needs a single dispatch, better for a decoded token).
const convParallelTokens = 2

// MatMul implements model.Backend: out (+)= x'·wᵀ (+ bias), x' = x or
// its norm. Decoding (T ≤ matvecTokens) normalises inside the product;
// prompts normalise into scratch first.
func (b *Backend) MatMul(out, x, w, bias model.Tensor, pr model.Product) {
	const op = "matmul"
	o, xt, wt := b.need(op, "out", out), b.need(op, "x", x), b.need(op, "w", w)
	bt, bad := b.maybe(op, "bias", bias)
	nt, bad2 := b.maybe(op, "norm", pr.Norm)
	mt, bad3 := b.maybe(op, "mask", pr.Mask)
	if o == nil || xt == nil || wt == nil || bad || bad2 || bad3 {
		return
	}
	N, K, stride, parts := matrix(wt)
	if K == 0 || xt.elems()%K != 0 {
		b.failf("%s: x %v is not rows of w's %d columns (w is %v)", op, xt.shape, K, wt.shape)
		return
	}
	T := xt.elems() / K
	if !b.activation(op, "x", xt, T*K) || !b.activation(op, "out", o, T*N) || (bt != nil && !b.vector(op, "bias", bt, N)) {
		return
	}
	groups := max(pr.Groups, 1)
	if nt != nil && (!b.vector(op, "norm", nt, K) || (mt != nil && !b.activation(op, "mask", mt, T))) {
		return
	}
	if nt == nil && mt != nil {
		b.failf("%s: a mask without a norm", op)
		return
	}
	if nt != nil && K%groups != 0 {
		b.failf("%s: %d columns do not split into %d norm groups", op, K, groups)
		return
	}
	if T == 0 || N == 0 || !u32s(op, b, T*K, T*N) {
		return
	}
	// Two kernels by prompt length (matmul.wgsl): tile edges in columns
	// and tokens.
	matvec := T <= b.mvTokens
	d, cols, toks := wt.withFormat(), uint32(64), uint32(64)
	if matvec {
		d, cols, toks = wt.withFormat("MATVEC", fmt.Sprintf("TPR=%du", b.lanes)), uint32(256/b.lanes), matvecGroup
	}
	gs := K / groups
	// The norm goes inside the product for float weights. For int8 and
	// int4 the kernel is bound by its arithmetic per weight word, which
	// the norm's scaling (a load and a multiply per element) adds to: on
	// an H200 Codestral int4 decoded 58 tok/s with it inside, against 77
	// before the fusion, with the norm a kernel of its own.
	fused := nt != nil && matvec && groups <= maxNormGroups && vectorWidth(wt.format) == 2 &&
		(groups == 1 || gs%vectorWidth(wt.format) == 0)
	src := xt
	if nt != nil && !fused {
		u := b.scratchFor("matmul.norm", T*K)
		if u == nil {
			return
		}
		b.rmsnorm(u, xt, nt, mt, T, K, groups, pr.Eps)
		src = u
	}
	var nb, mb bind = b.opt(nil), b.opt(nil)
	if fused {
		nb, mb = b.opt(nt), b.opt(mt)
	}
	// A prompt whose product has too few tiles to fill the GPU is cut along
	// k: partial products into scratch, then matmul_sum.wgsl adds them.
	splits, kper := 1, K
	if !matvec {
		splits, kper = splitK(T, N, K, b.maxBinding)
	}
	dst := o.parts[0]
	if splits > 1 {
		sc := b.scratchFor("matmul.partial", splits*T*N)
		if sc == nil {
			return
		}
		dst = sc.parts[0]
	}
	var ce *convEpilogue
	if pr.Conv != nil && matvec {
		ce = b.convEpilogue(pr, o, nt, bt, mt, fused, T, N, K)
	}
	for _, p := range parts {
		groupsN := ceilDiv(uint32(p.rows), cols) * ceilDiv(uint32(T), toks) * uint32(splits)
		if ce != nil {
			binds := []bind{ro(src.parts[0]), ro(p), ro(ce.vec.parts[0]), rw(dst), b.opt(ce.mask), rw(ce.state.parts[0]), rw(ce.out.parts[0])}
			matvecConvKernel.dispatchAs(b, wt.withFormat("MATVEC", "CONV", fmt.Sprintf("TPR=%du", b.lanes), fmt.Sprintf("KC=%du", ce.kc)), wt.role,
				withQ(binds, p),
				matvecConvParams{matmulParams: matmulParams{T: uint32(T), N: uint32(p.rows), K: uint32(K), Stride: uint32(stride), Ldo: uint32(N),
					Col0: uint32(p.row0), HasBias: b2u(bt != nil), Kper: uint32(K), Pstride: uint32(T * N), Qstride: uint32(wt.qrow),
					Add: b2u(pr.Add), HasNorm: b2u(fused), Groups: uint32(groups), Gs: uint32(gs), Eps: pr.Eps, HasMask: b2u(fused && mt != nil)},
					C: uint32(ce.c), Xoff: uint32(ce.xoff), NwOff: ce.nwOff, BOff: ce.bOff, CwOff: ce.cwOff, CbOff: ce.cbOff,
					HasCbias: b2u(ce.cbias), ConvMask: b2u(ce.mask != nil)},
				groupsN)
			continue
		}
		matmulKernel.dispatchAs(b, d, wt.role,
			withQ([]bind{ro(src.parts[0]), ro(p), b.opt(bt), rw(dst), nb, mb}, p),
			matmulParams{T: uint32(T), N: uint32(p.rows), K: uint32(K), Stride: uint32(stride), Ldo: uint32(N),
				Col0: uint32(p.row0), HasBias: b2u(bt != nil && splits == 1), Kper: uint32(kper),
				Pstride: uint32(T * N), Qstride: uint32(wt.qrow), Add: b2u(pr.Add && splits == 1),
				HasNorm: b2u(fused), Groups: uint32(groups), Gs: uint32(gs), Eps: pr.Eps, HasMask: b2u(fused && mt != nil)},
			groupsN)
	}
	if splits > 1 {
		matmulSumKernel.dispatchAs(b, nil, wt.role,
			[]bind{ro(dst), b.opt(bt), rw(o.parts[0])},
			matmulSumParams{T: uint32(T), N: uint32(N), Splits: uint32(splits), Pstride: uint32(T * N), HasBias: b2u(bt != nil), Add: b2u(pr.Add)},
			ceilDiv(uint32(T*N), matmulSumKernel.workgroup))
	}
	if c := pr.Conv; c != nil && ce == nil && b.broken == nil {
		b.Conv(c.Out, out, c.State, c.W, c.Bias, c.Mask, c.Config)
	}
}

// Split-k (matmul.wgsl): a product is split when it has fewer than
// splitTiles 64 × 64 output tiles (about two workgroups per compute unit of
// a large GPU), into at most maxSplits ranges of at least minSplitK.
const (
	splitTiles = 256
	minSplitK  = 256
	maxSplits  = 8
)

// splitK returns how many k ranges of kper (a multiple of 16) a prompt's
// product of T tokens, N columns and depth K is cut into; 1 and K for none.
// The partial products must fit one binding of maxBinding bytes.
func splitK(T, N, K int, maxBinding uint64) (splits, kper int) {
	tiles := ((T + 63) / 64) * ((N + 63) / 64)
	if tiles >= splitTiles || K < 2*minSplitK {
		return 1, K
	}
	s := min((splitTiles+tiles-1)/tiles, K/minSplitK, maxSplits)
	for s > 1 && uint64(s*T*N)*4 > maxBinding {
		s--
	}
	if s <= 1 {
		return 1, K
	}
	kper = ((K+s-1)/s + 15) / 16 * 16
	return (K + kper - 1) / kper, kper
}

// Conv implements model.Backend: the causal depthwise conv of the xBC
// columns of proj, continuing from state and updating it, then SiLU and the
// mask.
func (b *Backend) Conv(out, proj, state, w, bias, mask model.Tensor, c model.Config) {
	const op = "conv"
	o, pt, st, wt := b.need(op, "out", out), b.need(op, "proj", proj), b.need(op, "state", state), b.need(op, "w", w)
	bt, bad1 := b.maybe(op, "bias", bias)
	mt, bad2 := b.maybe(op, "mask", mask)
	if o == nil || pt == nil || st == nil || wt == nil || bad1 || bad2 {
		return
	}
	if len(pt.shape) != 3 || pt.shape[2] != c.ProjDim() {
		b.failf("%s: proj has shape %v, want [B, L, %d]", op, pt.shape, c.ProjDim())
		return
	}
	B, L, PD := pt.shape[0], pt.shape[1], pt.shape[2]
	C, K, I := c.ConvDim(), c.ConvKernel, c.Inner()
	N, KW, wstride, _ := matrix(wt)
	if N != C || KW != K || len(wt.parts) != 1 {
		b.failf("%s: w has shape %v, want [%d, %d]", op, wt.shape, C, K)
		return
	}
	if K < 1 || K > 64 {
		b.failf("%s: conv width %d is not supported (1..64)", op, K)
		return
	}
	if !b.activation(op, "out", o, B*L*C) || !b.activation(op, "state", st, B*(K-1)*C) ||
		!b.activation(op, "proj", pt, B*L*PD) || (bt != nil && !b.vector(op, "bias", bt, C)) ||
		(mt != nil && !b.activation(op, "mask", mt, B*L)) || B*C == 0 {
		return
	}
	binds := []bind{ro(pt.parts[0]), rw(st.parts[0]), ro(wt.parts[0]), b.opt(bt), b.opt(mt), rw(o.parts[0])}
	pr := convParams{B: uint32(B), L: uint32(L), C: uint32(C), PD: uint32(PD), Xoff: uint32(I), Stride: uint32(wstride),
		HasBias: b2u(bt != nil), HasMask: b2u(mt != nil)}
	kc, wg := fmt.Sprintf("KC=%du", K), convKernel.workgroup
	if L < convParallelTokens || L < K-1 {
		convKernel.dispatch(b, wt.withFormat(kc), binds, pr, ceilDiv(uint32(B*C), wg))
		return
	}
	// A prompt: every output at once, then the state (conv.wgsl).
	convKernel.dispatch(b, wt.withFormat(kc, "PROMPT"), binds, pr, ceilDiv(uint32(B*L*C), wg))
	if K > 1 {
		convKernel.dispatch(b, wt.withFormat(kc, "SHIFT"), binds, pr, ceilDiv(uint32(B*(K-1)*C), wg))
	}
}

// Last implements model.Backend: out[b] = x[b, L-1].
func (b *Backend) Last(out, x model.Tensor) {
	const op = "last"
	o, xt := b.need(op, "out", out), b.need(op, "x", x)
	if o == nil || xt == nil {
		return
	}
	if len(xt.shape) < 2 {
		b.failf("%s: x has shape %v, want [B, L, X]", op, xt.shape)
		return
	}
	B, X := xt.shape[0], xt.shape[len(xt.shape)-1]
	if B*X == 0 || xt.elems()%(B*X) != 0 {
		b.failf("%s: x has shape %v, want [B, L, X]", op, xt.shape)
		return
	}
	L := xt.elems() / (B * X)
	if L == 0 || !b.activation(op, "x", xt, B*L*X) || !b.activation(op, "out", o, B*X) {
		return
	}
	lastKernel.dispatch(b, nil, []bind{ro(xt.parts[0]), rw(o.parts[0])},
		lastParams{B: uint32(B), L: uint32(L), X: uint32(X)}, ceilDiv(uint32(B*X), lastKernel.workgroup))
}

// finite turns an infinite clamp bound into the largest f32, which the
// kernels compare against without relying on IEEE infinities in uniforms.
func finite(v float64) float32 {
	switch {
	case math.IsInf(v, 1) || v > math.MaxFloat32:
		return math.MaxFloat32
	case math.IsInf(v, -1) || v < -math.MaxFloat32:
		return -math.MaxFloat32
	}
	return float32(v)
}
