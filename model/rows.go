package model

import (
	"fmt"
	"slices"
)

// RowCopier is an optional Backend extension that copies whole rows (the
// first axis: sequences of a batch) from one F32 tensor to another where
// they are, without a round trip through the host. The Scheduler uses it
// to move a prefilled sequence's conv and SSM state into its slot of the
// pool's batched state. CopyRows (the function) falls back to Read and
// Write for backends without it.
type RowCopier interface {
	// CopyRows copies rows [srcRow, srcRow+rows) of src into rows
	// [dstRow, dstRow+rows) of dst, ordered with the operations issued
	// before and after it. Both are F32 tensors whose rows (the product of
	// the shape after the first axis) have the same number of elements, and
	// they are different tensors. Bad arguments are reported as the
	// backend reports other errors (the CPU panics, WebGPU at the next Read);
	// the CopyRows function checks them first.
	CopyRows(dst Tensor, dstRow int, src Tensor, srcRow, rows int)
}

// CopyRows copies rows [srcRow, srcRow+rows) of src into rows [dstRow,
// dstRow+rows) of dst on backend b: with its RowCopier when it has one,
// otherwise by reading both tensors and writing dst back (correct on any
// backend, and slow only by the size of dst). It checks the arguments and
// says what is wrong rather than letting a backend copy out of bounds.
func CopyRows(b Backend, dst Tensor, dstRow int, src Tensor, srcRow, rows int) error {
	if dst == nil || src == nil {
		return fmt.Errorf("copy rows: nil tensor")
	}
	if dst == src {
		return fmt.Errorf("copy rows: source and destination are the same tensor")
	}
	ds, ss := dst.Shape(), src.Shape()
	if len(ds) == 0 || len(ss) == 0 {
		return fmt.Errorf("copy rows: tensors of shapes %v and %v have no rows", ds, ss)
	}
	if !slices.Equal(ds[1:], ss[1:]) {
		return fmt.Errorf("copy rows: rows of shape %v do not fit rows of shape %v", ss[1:], ds[1:])
	}
	if rows < 0 || srcRow < 0 || dstRow < 0 || srcRow+rows > ss[0] || dstRow+rows > ds[0] {
		return fmt.Errorf("copy rows: rows [%d, %d) of %v into rows [%d, %d) of %v are out of range",
			srcRow, srcRow+rows, ss, dstRow, dstRow+rows, ds)
	}
	if rows == 0 {
		return nil
	}
	if rc, ok := b.(RowCopier); ok {
		rc.CopyRows(dst, dstRow, src, srcRow, rows)
		return nil
	}
	n := 1
	for _, d := range ds[1:] {
		n *= d
	}
	from, err := b.Read(src)
	if err != nil {
		return fmt.Errorf("copy rows: %w", err)
	}
	to, err := b.Read(dst)
	if err != nil {
		return fmt.Errorf("copy rows: %w", err)
	}
	copy(to[dstRow*n:(dstRow+rows)*n], from[srcRow*n:(srcRow+rows)*n])
	b.Write(dst, to)
	return nil
}

// copyStateRows copies the state of sequences [srcRow, srcRow+rows) of
// src into sequences [dstRow, dstRow+rows) of dst, layer by layer: the
// conv and SSM state of every Mamba-2 block and, for a hybrid, the keys
// and values each attention block holds of those sequences and their key
// mask (copyKVRow). So dst's rows continue exactly where src's were, each
// at its own position, whatever position dst's other rows are at.
func copyStateRows(dst *State, dstRow int, src *State, srcRow, rows int) error {
	if dst.closed || src.closed {
		return fmt.Errorf("copy state rows: the state is closed")
	}
	if dst.m != src.m {
		return fmt.Errorf("copy state rows: the states belong to different models")
	}
	if rows < 0 || srcRow < 0 || dstRow < 0 || srcRow+rows > src.Batch || dstRow+rows > dst.Batch {
		return fmt.Errorf("copy state rows: sequences [%d, %d) of %d into [%d, %d) of %d are out of range",
			srcRow, srcRow+rows, src.Batch, dstRow, dstRow+rows, dst.Batch)
	}
	if dst == src {
		return fmt.Errorf("copy state rows: source and destination are the same state")
	}
	b := dst.m.Backend
	for l := range dst.conv {
		if dst.conv[l] == nil { // an attention-only block of a hybrid
			continue
		}
		if err := CopyRows(b, dst.conv[l], dstRow, src.conv[l], srcRow, rows); err != nil {
			return fmt.Errorf("layer %d conv state: %w", l, err)
		}
		if err := CopyRows(b, dst.ssm[l], dstRow, src.ssm[l], srcRow, rows); err != nil {
			return fmt.Errorf("layer %d SSM state: %w", l, err)
		}
	}
	if hasKV(dst) {
		hb, err := RequireHybrid(dst.m.Config, b)
		if err != nil {
			return fmt.Errorf("copy state rows: %w", err)
		}
		for r := range rows {
			dst.copyKVRow(hb, dstRow+r, src, srcRow+r)
		}
	}
	return nil
}
