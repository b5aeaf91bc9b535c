package cpu

import (
	"fmt"

	"github.com/mamba2web/mamba2/model"
)

// CopyRows implements model.RowCopier: rows are contiguous runs of the
// row-major arrays, so it is one copy. Like the other operations it panics
// on arguments that do not fit (model.CopyRows checks them first).
func (*Backend) CopyRows(dst model.Tensor, dstRow int, src model.Tensor, srcRow, rows int) {
	d, s := dst.(*tensor), src.(*tensor)
	if d.f == nil || s.f == nil {
		panic(fmt.Sprintf("cpu: copy rows: %v and %v must both be F32 tensors", d.shape, s.shape))
	}
	n := size(d.shape[1:])
	if size(s.shape[1:]) != n {
		panic(fmt.Sprintf("cpu: copy rows: rows of %v and %v differ in size", s.shape, d.shape))
	}
	copy(d.f[dstRow*n:(dstRow+rows)*n], s.f[srcRow*n:(srcRow+rows)*n])
}
