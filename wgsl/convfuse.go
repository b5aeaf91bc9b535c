package wgsl

import (
	"fmt"

	"github.com/cogentcore/webgpu/wgpu"

	"github.com/mamba2web/mamba2/model"
)

// The causal conv of a decoded token in the in_proj product's epilogue
// (model.Product.Conv, matmul.wgsl's CONV variant). Each output column of
// xBC is one conv channel, and its conv step reads only that channel's
// state and weights, so the invocation that writes the column can run the
// step at once: a layer then decodes in three dispatches (in_proj with its
// norm and conv, the SSM step with its gate, out_proj with its norm and the
// residual add) instead of four.
//
// The kernel has WebGPU's guaranteed 8 storage bindings and needs 11
// buffers, so the small ones (the norm weight, the in_proj bias, the conv
// weight and bias, all f32 on the device) are copied once into one packed
// buffer per layer, on the first decode step that needs it. Packs are
// keyed by the buffers they copy and freed with any of them.

// convEpilogue is what the CONV variant needs besides the product's own
// arguments.
type convEpilogue struct {
	vec, state, out *tensor
	mask            *tensor // the mask binding (the norm's and the conv's), or nil
	convMask        bool    // the conv's output is masked
	cbias           bool
	c, xoff, kc     int
	nwOff, bOff     uint32 // float offsets into vec
	cwOff, cbOff    uint32
}

// packKey names a pack by the buffers it holds (0: absent).
type packKey [4]uint64

// convEpilogue returns the fused conv of pr.Conv for a decode product of T
// tokens (one position of T sequences) into N columns from K, or nil when
// it cannot be fused; MatMul then runs Backend.Conv after the product,
// which also reports whatever is wrong with the arguments. nt, bt and mt are
// the product's norm weight (when the norm is fused), bias and mask.
func (b *Backend) convEpilogue(pr model.Product, o, nt, bt, mt *tensor, fused bool, T, N, K int) *convEpilogue {
	cv := pr.Conv
	c := cv.Config
	C, KC := c.ConvDim(), c.ConvKernel
	if N != c.ProjDim() || len(o.shape) != 3 || o.shape[0] != T || o.shape[1] != 1 || KC < 1 || KC > 64 || C <= 0 {
		return nil
	}
	out, st, w := f32Tensor(cv.Out, T*C), f32Tensor(cv.State, T*(KC-1)*C), f32Tensor(cv.W, C*KC)
	if out == nil || st == nil || w == nil || len(w.shape) != 2 || w.shape[0] != C {
		return nil
	}
	var cb, cm *tensor
	if cv.Bias != nil {
		if cb = f32Tensor(cv.Bias, C); cb == nil {
			return nil
		}
	}
	if cv.Mask != nil {
		if cm = f32Tensor(cv.Mask, T); cm == nil {
			return nil
		}
	}
	if !fused {
		nt, mt = nil, nil // the norm ran into scratch; nothing of it is bound
	}
	mask := mt
	if cm != nil {
		if mask != nil && mask != cm {
			return nil // one mask binding for two masks
		}
		mask = cm
	}
	for _, t := range []*tensor{out, st} { // written: must not alias what the product reads or writes
		for _, u := range []*tensor{o, nt, bt, mask, w, cb} {
			if u != nil && t.parts[0].id == u.parts[0].id {
				return nil
			}
		}
	}
	if out.parts[0].id == st.parts[0].id {
		return nil
	}
	e := &convEpilogue{state: st, out: out, mask: mask, convMask: cm != nil, cbias: cb != nil, c: C, xoff: c.Inner(), kc: KC}
	e.vec, e.nwOff, e.bOff, e.cwOff, e.cbOff = b.convPack(nt, bt, w, cb, K, N, C*KC, C)
	if e.vec == nil {
		return nil
	}
	return e
}

// f32Tensor returns x as a usable one-buffer f32 tensor of n elements, or nil.
func f32Tensor(x model.Tensor, n int) *tensor {
	t, ok := x.(*tensor)
	if !ok || !t.ok() || t.freed || t.kind != model.F32 || t.format != model.FormatF32 || len(t.parts) != 1 || t.elems() != n {
		return nil
	}
	return t
}

// convPack returns the packed copy of nw (K floats, or nil), bias (N, or
// nil), cw (the conv weight, cwn) and cb (C, or nil), making it on first
// use, and the offsets of each.
func (b *Backend) convPack(nw, bias, cw, cb *tensor, K, N, cwn, C int) (vec *tensor, nwOff, bOff, cwOff, cbOff uint32) {
	id := func(t *tensor) uint64 {
		if t == nil {
			return 0
		}
		return t.parts[0].id
	}
	srcs := []struct {
		t *tensor
		n int
	}{{nw, K}, {bias, N}, {cw, cwn}, {cb, C}}
	offs := make([]uint32, 4)
	total := 0
	for i, s := range srcs {
		offs[i] = uint32(total)
		if s.t != nil {
			total += s.n
		}
	}
	key := packKey{id(nw), id(bias), id(cw), id(cb)}
	if t, ok := b.packs[key]; ok {
		return t, offs[0], offs[1], offs[2], offs[3]
	}
	t := &tensor{name: "conv pack", shape: []int{total}, kind: model.F32, format: model.FormatF32, rows: 1, cols: total, stride: total}
	if err := b.addPart(t, 0, 1, wgpu.BufferUsageStorage|wgpu.BufferUsageCopyDst); err != nil {
		b.fail(err)
		return nil, 0, 0, 0, 0
	}
	for i, s := range srcs {
		if s.t != nil && !b.copyBuffer("conv pack", s.t.parts[0].buf, 0, t.parts[0].buf, uint64(offs[i])*4, uint64(s.n)*4) {
			b.Free(t)
			return nil, 0, 0, 0, 0
		}
	}
	if b.packs == nil {
		b.packs = map[packKey]*tensor{}
	}
	b.packs[key] = t
	return t, offs[0], offs[1], offs[2], offs[3]
}

// dropPacks frees the packs that copy the buffer of part id (it is being
// freed: a later tensor may reuse nothing of it, but a pack would go stale).
func (b *Backend) dropPacks(id uint64) {
	for k, t := range b.packs {
		if k[0] == id || k[1] == id || k[2] == id || k[3] == id {
			delete(b.packs, k)
			b.Free(t)
		}
	}
}

// copyBuffer records a buffer-to-buffer copy in the current command
// encoder, between the dispatches before and after it (the open compute
// pass is ended; the next dispatch opens another). Offsets and size must be
// multiples of 4 bytes, and src and dst distinct buffers.
func (b *Backend) copyBuffer(op string, src *wgpu.Buffer, srcOff uint64, dst *wgpu.Buffer, dstOff, size uint64) bool {
	if b.enc == nil && !b.beginEncoder() {
		return false
	}
	b.closePass()
	if err := b.enc.CopyBufferToBuffer(src, srcOff, dst, dstOff, size); err != nil {
		b.fail(fmt.Errorf("wgsl: %s: %v", op, err))
		return false
	}
	return true
}
