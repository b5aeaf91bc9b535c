// Package cpu is the reference backend: every operation of model.Backend as a
// plain Go loop that reads like SPEC.md §2, spread over the cores. It is the
// oracle the GPU kernels are checked against, so clarity comes before speed.
package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// tensor is a float32 or int32 array in row-major order.
type tensor struct {
	shape []int
	f     []float32
	ids   []int32
	freed bool
}

func (t *tensor) Shape() []int { return t.shape }

func size(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Backend runs each operation as soon as it is called.
type Backend struct {
	workers int
}

// New returns a CPU backend using every core.
func New() *Backend { return &Backend{workers: runtime.GOMAXPROCS(0)} }

func (*Backend) Name() string { return "cpu" }

func (*Backend) Close() error { return nil }

// Weight decodes the tensor to float32. Quantized weights are dequantized
// row by row with model's formulas (model.DequantizeInt8, DequantizeInt4),
// the values the GPU's kernels compute in registers, so the CPU stays the
// oracle for quantized models too.
func (*Backend) Weight(w model.WeightSpec) (model.Tensor, error) {
	if err := w.Check(); err != nil {
		return nil, fmt.Errorf("cpu: %s: %w", w.Name, err)
	}
	t := &tensor{shape: slices.Clone(w.Shape), f: make([]float32, size(w.Shape))}
	var err error
	if w.Format.Quantized() {
		err = dequantize(t.f, w)
	} else {
		err = decode(t.f, w)
	}
	if err != nil {
		return nil, fmt.Errorf("cpu: %s: %w", w.Name, err)
	}
	return t, nil
}

func decode(dst []float32, w model.WeightSpec) error {
	dt := w.Format.DType()
	es := int64(dt.Size())
	var n int64
	err := w.Data(func(off int64, b []byte) error {
		if off%es != 0 || len(b)%int(es) != 0 || (off+int64(len(b)))/es > int64(len(dst)) {
			return fmt.Errorf("a chunk of %d bytes at %d does not fit shape %v of %s", len(b), off, w.Shape, w.Format)
		}
		loader.Decode(dst[off/es:], dt, b)
		n += int64(len(b))
		return nil
	})
	if err == nil && n != int64(len(dst))*es {
		err = fmt.Errorf("the stream held %d bytes, shape %v of %s needs %d", n, w.Shape, w.Format, int64(len(dst))*es)
	}
	return err
}

// dequantize reads the packed data whole (the CPU keeps every weight as
// float32 anyway), then the scales and zeros, then expands each row.
func dequantize(dst []float32, w model.WeightSpec) error {
	N, K := w.Rows(), w.Cols()
	rb := w.Format.RowBytes(K)
	data, err := readAll(w.Data, N*rb, "data")
	if err != nil {
		return err
	}
	per := 1
	if w.Format == model.FormatInt4 {
		per = model.Groups(K, w.GroupSize)
	}
	scales, err := readHalves(w.Scales, N*per, "scales")
	if err != nil {
		return err
	}
	var zeros []uint16
	if w.Format == model.FormatInt4 {
		if zeros, err = readHalves(w.Zeros, N*per, "zeros"); err != nil {
			return err
		}
	}
	for r := range N {
		row, q := dst[r*K:(r+1)*K], data[r*rb:(r+1)*rb]
		if w.Format == model.FormatInt8 {
			model.DequantizeInt8(row, q, scales[r])
		} else {
			model.DequantizeInt4(row, q, w.GroupSize, scales[r*per:(r+1)*per], zeros[r*per:(r+1)*per])
		}
	}
	return nil
}

func readAll(s model.Stream, n int, what string) ([]byte, error) {
	out := make([]byte, n)
	got := 0
	err := s(func(off int64, b []byte) error {
		if off != int64(got) || got+len(b) > n {
			return fmt.Errorf("%s: a chunk of %d bytes at %d, want %d bytes in order", what, len(b), off, n)
		}
		got += copy(out[got:], b)
		return nil
	})
	if err == nil && got != n {
		err = fmt.Errorf("%s: the stream held %d bytes, want %d", what, got, n)
	}
	return out, err
}

func readHalves(s model.Stream, n int, what string) ([]uint16, error) {
	b, err := readAll(s, 2*n, what)
	if err != nil {
		return nil, err
	}
	out := make([]uint16, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out, nil
}

func (*Backend) Alloc(kind model.Kind, shape ...int) model.Tensor {
	t := &tensor{shape: slices.Clone(shape)}
	if kind == model.I32 {
		t.ids = make([]int32, size(shape))
	} else {
		t.f = make([]float32, size(shape))
	}
	return t
}

func (*Backend) Write(t model.Tensor, data []float32) { copy(t.(*tensor).f, data) }

func (*Backend) WriteIDs(t model.Tensor, ids []int32) { copy(t.(*tensor).ids, ids) }

func (*Backend) Read(t model.Tensor) ([]float32, error) {
	tt := t.(*tensor)
	if tt.freed {
		return nil, fmt.Errorf("cpu: read: tensor %v was freed", tt.shape)
	}
	return slices.Clone(tt.f), nil
}

// Free drops t's slices for the garbage collector.
func (*Backend) Free(t model.Tensor) {
	if tt, ok := t.(*tensor); ok && tt != nil {
		tt.f, tt.ids, tt.freed = nil, nil, true
	}
}

func (*Backend) Zero(t model.Tensor) {
	tt := t.(*tensor)
	clear(tt.f)
	clear(tt.ids)
}

// parallel calls fn on [lo, hi) pieces of [0, n), one goroutine per core.
func (b *Backend) parallel(n int, fn func(lo, hi int)) {
	w := min(b.workers, n)
	if w <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for i := range w {
		lo, hi := i*n/w, (i+1)*n/w
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

func f(t model.Tensor) []float32 {
	if t == nil {
		return nil
	}
	return t.(*tensor).f
}

func (*Backend) Embed(out, table, ids model.Tensor) {
	o, e, D := f(out), f(table), table.Shape()[1]
	for t, id := range ids.(*tensor).ids {
		copy(o[t*D:(t+1)*D], e[int(id)*D:(int(id)+1)*D])
	}
}

// RMSNorm: out = h / rms_group(h) · w · mask, in groups of D/groups channels.
func (b *Backend) RMSNorm(out, h, w, mask model.Tensor, groups int, eps float32) {
	o, x, wt, mk := f(out), f(h), f(w), f(mask)
	D := len(wt)
	b.parallel(len(x)/D, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			normRow(o[t*D:(t+1)*D], x[t*D:(t+1)*D], wt, mk, t, groups, eps)
		}
	})
}

// normRow writes row t's norm into dst.
func normRow(dst, row, w, mask []float32, t, groups int, eps float32) {
	groups = max(groups, 1)
	gs := len(row) / groups
	for g := range groups {
		seg := row[g*gs : (g+1)*gs]
		scale := rms(seg, eps)
		if mask != nil {
			scale *= mask[t]
		}
		for i, v := range seg {
			dst[g*gs+i] = v * scale * w[g*gs+i]
		}
	}
}

// rms returns 1 / sqrt(mean(v²) + eps), accumulated in float64.
func rms(v []float32, eps float32) float32 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	return float32(1 / math.Sqrt(ss/float64(len(v))+float64(eps)))
}

// MatMul: out[t, n] (+)= Σ_k x'[t, k] · w[n, k] + bias[n], x' = x or its
// norm (model.Product), computed first into a row of its own.
func (b *Backend) MatMul(out, x, w, bias model.Tensor, p model.Product) {
	o, xv, wv, bv := f(out), f(x), f(w), f(bias)
	N, K := w.Shape()[0], w.Shape()[1]
	T := len(xv) / K
	if p.Norm != nil {
		nx := make([]float32, len(xv))
		nw, mk := f(p.Norm), f(p.Mask)
		for t := range T {
			normRow(nx[t*K:(t+1)*K], xv[t*K:(t+1)*K], nw, mk, t, p.Groups, p.Eps)
		}
		xv = nx
	}
	b.parallel(N, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			wr := wv[n*K : (n+1)*K]
			for t := range T {
				s := dot(xv[t*K:(t+1)*K], wr)
				if bv != nil {
					s += bv[n]
				}
				if p.Add {
					s += o[t*N+n]
				}
				o[t*N+n] = s
			}
		}
	})
	if c := p.Conv; c != nil {
		b.Conv(c.Out, out, c.State, c.W, c.Bias, c.Mask, c.Config)
	}
}

// dot sums in four float32 lanes, then in float64.
func dot(a, b []float32) float32 {
	var s0, s1, s2, s3 float32
	n := len(a) &^ 3
	b = b[:len(a)]
	for i := 0; i < n; i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for i := n; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return float32(float64(s0) + float64(s1) + float64(s2) + float64(s3))
}

func silu(v float32) float32 { return v / (1 + float32(math.Exp(float64(-v)))) }

func softplus(v float64) float64 {
	if v > 20 {
		return v
	}
	return math.Log1p(math.Exp(v))
}

// Conv: per channel c, out[t] = silu(bias[c] + Σ_k w[c, k] · in[t-K+1+k]) · mask[t],
// where in is the K-1 state inputs followed by the xBC columns of proj.
func (b *Backend) Conv(out, proj, state, w, bias, mask model.Tensor, c model.Config) {
	o, p, st, wt, bs, mk := f(out), f(proj), f(state), f(w), f(bias), f(mask)
	B, L, PD := proj.Shape()[0], proj.Shape()[1], proj.Shape()[2]
	C, K, I := c.ConvDim(), c.ConvKernel, c.Inner()
	b.parallel(B*C, func(lo, hi int) {
		in := make([]float32, K-1+L)
		for bc := lo; bc < hi; bc++ {
			bi, ch := bc/C, bc%C
			for k := range K - 1 {
				in[k] = st[(bi*(K-1)+k)*C+ch]
			}
			for t := range L {
				in[K-1+t] = p[(bi*L+t)*PD+I+ch]
			}
			for t := range L {
				var s float32
				if bs != nil {
					s = bs[ch]
				}
				for k := range K {
					s += wt[ch*K+k] * in[t+k]
				}
				s = silu(s)
				if mk != nil {
					s *= mk[bi*L+t]
				}
				o[(bi*L+t)*C+ch] = s
			}
			for k := range K - 1 {
				st[(bi*(K-1)+k)*C+ch] = in[L+k]
			}
		}
	})
}

func (*Backend) Last(out, x model.Tensor) {
	o, xv := f(out), f(x)
	sh := x.Shape()
	B, X := sh[0], sh[len(sh)-1]
	L := len(xv) / (B * X)
	for b := range B {
		copy(o[b*X:(b+1)*X], xv[((b+1)*L-1)*X:(b+1)*L*X])
	}
}

var _ model.Backend = (*Backend)(nil)
