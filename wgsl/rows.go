package wgsl

import (
	"github.com/mamba2web/mamba2/model"
)

// CopyRows implements model.RowCopier with a buffer-to-buffer copy recorded
// in the current command encoder, between the dispatches before and after
// it: the compute pass open at the time (if any) is ended, the copy is
// encoded, and the next dispatch opens a new pass. So moving a sequence's
// state into a batch costs no submission and no wait of its own.
//
// WebGPU copies within one buffer are a validation error and offsets must
// be multiples of 4 bytes: activations and state are one buffer each of
// float32 rows, so both hold for two distinct tensors.
func (b *Backend) CopyRows(dst model.Tensor, dstRow int, src model.Tensor, srcRow, rows int) {
	const op = "copy rows"
	d, s := b.asTensor(op, dst, "dst"), b.asTensor(op, src, "src")
	if d == nil || s == nil {
		b.failf("%s: nil tensor", op)
		return
	}
	if !b.usable(op, d) || !b.usable(op, s) {
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
	if d.kind != model.F32 || s.kind != model.F32 || d.format != model.FormatF32 || s.format != model.FormatF32 ||
		len(d.parts) != 1 || len(s.parts) != 1 {
		b.failf("%s: %s and %s must both be F32 activations or state", op, s, d)
		return
	}
	if d.parts[0].id == s.parts[0].id {
		b.failf("%s: %s is both source and destination", op, d)
		return
	}
	dn, sn := rowElems(d.shape), rowElems(s.shape)
	if dn != sn || len(d.shape) == 0 || len(s.shape) == 0 {
		b.failf("%s: rows of %v do not fit rows of %v", op, s.shape, d.shape)
		return
	}
	if rows < 0 || srcRow < 0 || dstRow < 0 || srcRow+rows > s.shape[0] || dstRow+rows > d.shape[0] {
		b.failf("%s: rows [%d, %d) of %v into rows [%d, %d) of %v are out of range", op, srcRow, srcRow+rows, s.shape, dstRow, dstRow+rows, d.shape)
		return
	}
	if rows == 0 || dn == 0 {
		return
	}
	row := uint64(dn) * 4
	b.copyBuffer(op, s.parts[0].buf, uint64(srcRow)*row, d.parts[0].buf, uint64(dstRow)*row, uint64(rows)*row)
}

// rowElems is the number of elements in one row (the first axis) of shape.
func rowElems(shape []int) int {
	n := 1
	for _, d := range shape[min(1, len(shape)):] {
		n *= d
	}
	return n
}
