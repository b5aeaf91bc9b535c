package model

import (
	"fmt"
	"math"
	"strings"

	"github.com/mamba2web/mamba2/loader"
)

// Format is how a weight's elements are stored, on disk and on a backend.
// The float formats are one stream of elements; the quantized formats
// (docs/quantization.md) are several streams: the packed integers, then
// f16 scales, then (int4) f16 zeros.
//
//	int8  w[n,k] = q[n,k] · scale[n]                  q signed, one scale per output row
//	int4  w[n,k] = (q[n,k] − 8) · scale[n,g] + zero[n,g]   q in 0..15, g = k / GroupSize
//
// Both backends compute exactly these values (in float32, from the f16
// scales and zeros), so the CPU stays the oracle for quantized models.
type Format uint8

// Weight formats.
const (
	FormatF32 Format = iota
	FormatF16
	FormatBF16
	FormatInt8
	FormatInt4
)

var formatNames = [...]string{"f32", "f16", "bf16", "int8", "int4"}

func (f Format) String() string {
	if int(f) < len(formatNames) {
		return formatNames[f]
	}
	return fmt.Sprintf("Format(%d)", f)
}

// Quantized is true for int8 and int4.
func (f Format) Quantized() bool { return f == FormatInt8 || f == FormatInt4 }

// ParseFormat reads a format name as the CLI and the JS API spell it:
// f32, f16, bf16, int8 or int4 (case-insensitive).
func ParseFormat(s string) (Format, error) {
	for i, n := range formatNames {
		if strings.EqualFold(s, n) {
			return Format(i), nil
		}
	}
	return 0, fmt.Errorf("unknown weight format %q (want f32, f16, bf16, int8 or int4)", s)
}

// FloatFormat is the format of a float checkpoint dtype; ok is false for
// any other dtype.
func FloatFormat(dt loader.DType) (Format, bool) {
	switch dt {
	case loader.F32:
		return FormatF32, true
	case loader.F16:
		return FormatF16, true
	case loader.BF16:
		return FormatBF16, true
	}
	return 0, false
}

// DType is the checkpoint dtype of a float format's elements, or of a
// quantized format's packed data (I8 for int8, U8 for int4).
func (f Format) DType() loader.DType {
	switch f {
	case FormatF16:
		return loader.F16
	case FormatBF16:
		return loader.BF16
	case FormatInt8:
		return loader.I8
	case FormatInt4:
		return loader.U8
	}
	return loader.F32
}

// DefaultGroupSize is int4's group length along a row, torchao's default
// for int4 weight-only quantization.
const DefaultGroupSize = 128

// Quant says how a load quantizes float weights (LoadOptions.Quantize):
// the zero value keeps them as they are.
type Quant struct {
	Format    Format // FormatInt8 or FormatInt4; anything else means none
	GroupSize int    // int4 only; 0 means DefaultGroupSize
	// Embedding is the format of the embedding and lm_head: FormatInt8
	// or FormatInt4, the zero value meaning int8. int8 is the default
	// because the vocabulary's rows cost the most perplexity per byte:
	// on mamba2-go-tiny, int4 tables move perplexity by 2.5 points more
	// than int8 ones (docs/quantization.md), for 4 % of a 7B model's bytes.
	Embedding Format
}

// For is the format (and int4 group size) a tensor of role r is stored in.
func (q Quant) For(r Role) (Format, int) {
	f := q.Format
	if r == RoleEmbedding || r == RoleLMHead {
		f = q.embedding()
	}
	if f == FormatInt4 {
		return f, q.groupSize()
	}
	return f, 0
}

func (q Quant) embedding() Format {
	if q.Embedding.Quantized() {
		return q.Embedding
	}
	return FormatInt8
}

// String names q for reports: "int8", "int4-g128, int8 embedding",
// "int4-g128" (the tables int4 too).
func (q Quant) String() string {
	if !q.On() {
		return "none"
	}
	name := func(f Format) string {
		if f == FormatInt4 {
			return fmt.Sprintf("int4-g%d", q.groupSize())
		}
		return f.String()
	}
	s := name(q.Format)
	if e := q.embedding(); e != q.Format {
		s += ", " + name(e) + " embedding"
	}
	return s
}

// On reports whether q quantizes at all.
func (q Quant) On() bool { return q.Format.Quantized() }

func (q Quant) groupSize() int {
	if q.GroupSize > 0 {
		return q.GroupSize
	}
	return DefaultGroupSize
}

// Check validates q: a quantized format, and for int4 a group size that is
// a positive even number (a group starts on a byte).
func (q Quant) Check() error {
	if q.Format != 0 && !q.Format.Quantized() {
		return fmt.Errorf("quantize: %s is not a quantized format (want int8 or int4)", q.Format)
	}
	if q.Embedding != 0 && !q.Embedding.Quantized() {
		return fmt.Errorf("quantize: the embedding's format %s is not int8 or int4", q.Embedding)
	}
	if q.GroupSize < 0 || q.GroupSize%2 != 0 || q.GroupSize > 1<<16 {
		return fmt.Errorf("quantize: group size %d must be a positive even number up to 65536", q.GroupSize)
	}
	return nil
}

// Groups is the number of int4 groups in a row of k elements.
func Groups(k, groupSize int) int { return (k + groupSize - 1) / groupSize }

// RowBytes is the bytes of one row of k elements of packed data in a
// quantized format.
func (f Format) RowBytes(k int) int {
	if f == FormatInt4 {
		return (k + 1) / 2
	}
	return k
}

// Quantizable says whether a tensor of this role is quantized: the large
// products (in_proj, out_proj, the embedding and lm_head). The small
// tensors (conv, norms, dt, A, D) stay as they are, as llama.cpp does for
// SSM models: they are a sliver of the bytes and the most sensitive.
func (r Role) Quantizable() bool {
	switch r {
	case RoleEmbedding, RoleLMHead, RoleInProj, RoleOutProj:
		return true
	}
	return false
}

// QuantizeInt8 quantizes one row w into q (len(w) bytes, each an int8) and
// returns its scale as f16 bits: scale = max|w| / 127 rounded to f16, and
// q = round(w / scale) with the rounded scale, so that dequantizing with
// the stored scale is what was optimised.
func QuantizeInt8(w []float32, q []byte) uint16 {
	var m float32
	for _, v := range w {
		m = max(m, float32(math.Abs(float64(v))))
	}
	sb := loader.Float32ToHalf(m / 127)
	s := loader.HalfToFloat32(sb)
	if s == 0 || math.IsInf(float64(s), 0) {
		// An all-zero row, or one so small its scale is 0 in f16: zeros;
		// an overflowing scale (|w| > 65504·127) cannot be stored.
		if s != 0 {
			sb = 0x7bff // the largest finite f16
			s = loader.HalfToFloat32(sb)
		} else {
			clear(q[:len(w)])
			return sb
		}
	}
	for i, v := range w {
		r := math.RoundToEven(float64(v / s))
		q[i] = byte(int8(max(-127, min(127, r))))
	}
	return sb
}

// DequantizeInt8 writes the values of an int8 row.
func DequantizeInt8(dst []float32, q []byte, scale uint16) {
	s := loader.HalfToFloat32(scale)
	for i := range dst {
		dst[i] = float32(int8(q[i])) * s
	}
}

// Int4Search is how many scales QuantizeInt4 tries per group besides
// round-to-nearest; 0 makes it plain round-to-nearest over the group's
// range. Measured on mamba2-go-tiny (docs/quantization.md), the search
// and the importance weights recover much of the perplexity int4 loses.
const Int4Search = 12

// QuantizeInt4 quantizes one row w in groups of groupSize, packing two
// values per byte of q (element 2j in the low nibble of byte j) and
// writing each group's scale and zero as f16 bits.
//
// For each group it tries round-to-nearest over the group's range and
// search grids slightly coarser and finer than it; for each grid the
// integers are counted from the group's minimum and the scale and zero
// refitted to them by least squares; the pair with the least squared
// error, computed with the f16-rounded scale and zero as they are stored,
// wins. (Weighing columns by the RMSNorm weight in front of the product
// was tried as a calibration-free importance and measured no better on
// mamba2-go-tiny.)
func QuantizeInt4(w []float32, groupSize int, q []byte, scales, zeros []uint16, search int) {
	clear(q[:(len(w)+1)/2])
	qs, tmp := make([]uint8, groupSize), make([]uint8, groupSize)
	for g := 0; g*groupSize < len(w); g++ {
		lo, hi := g*groupSize, min((g+1)*groupSize, len(w))
		gq := qs[:hi-lo]
		scales[g], zeros[g] = fitInt4(w[lo:hi], gq, tmp[:hi-lo], search)
		for i, v := range gq {
			k := lo + i
			q[k/2] |= v << (4 * (k & 1))
		}
	}
}

// fitInt4 chooses a group's scale and zero (f16 bits) and its integers.
func fitInt4(w []float32, q, tmp []uint8, search int) (uint16, uint16) {
	lo, hi := w[0], w[0]
	for _, v := range w {
		lo, hi = min(lo, v), max(hi, v)
	}
	best := math.Inf(1)
	var bs, bz uint16
	try := func(sb, zb uint16) {
		if e := assignInt4(w, tmp, sb, zb); e < best {
			best, bs, bz = e, sb, zb
			copy(q, tmp)
		}
	}
	r := hi - lo
	if r == 0 {
		try(0, loader.Float32ToHalf(lo))
		return bs, bz
	}
	// Round to nearest: q = 0 at lo, q = 15 at hi, so z = lo + 8s.
	try(loader.Float32ToHalf(r/15), loader.Float32ToHalf(lo+8*r/15))
	for i := 0; i < search; i++ {
		// Steps per range from 14 to 16, integers counted from lo, then
		// the least-squares fit of w ≈ s·(q−8) + z to those integers.
		inv := (14 + 2*float32(i)/float32(max(search-1, 1))) / r
		var sx, sy, sxx, sxy float64
		for _, v := range w {
			x := float64(uint8(min(inv*(v-lo)+0.5, 15.5))) - 8
			sx += x
			sy += float64(v)
			sxx += x * x
			sxy += x * float64(v)
		}
		n := float64(len(w))
		if d := n*sxx - sx*sx; d > 0 {
			fs := (n*sxy - sx*sy) / d
			if fz := (sy - fs*sx) / n; fs > 0 {
				try(loader.Float32ToHalf(float32(fs)), loader.Float32ToHalf(float32(fz)))
			}
		}
	}
	return bs, bz
}

// assignInt4 writes the nearest integers for scale s and zero z (f16 bits)
// and returns the squared error of their dequantized values. It is the
// quantizer's inner loop, so it multiplies by 1/s and rounds by
// truncation after adding a half, in float32; only the error is summed in
// float64. (Rounding a value that sits exactly between two integers
// either way is equally good: the error is measured with the stored
// formula.)
func assignInt4(w []float32, q []uint8, sb, zb uint16) float64 {
	s, z := loader.HalfToFloat32(sb), loader.HalfToFloat32(zb)
	var inv float32
	if s > 0 && !math.IsInf(float64(s), 0) {
		inv = 1 / s
	}
	var e float64
	for i, v := range w {
		x := min(max((v-z)*inv+8.5, 0), 15.5)
		qi := uint8(x)
		q[i] = qi
		d := dequant4(qi, s, z) - v
		e += float64(d * d)
	}
	if math.IsNaN(e) {
		return math.Inf(1)
	}
	return e
}

// dequant4 is int4's formula, written once for the quantizer and the
// dequantizer so both compute the same float32 rounding.
func dequant4(q uint8, s, z float32) float32 {
	return (float32(q)-8)*s + z
}

// DequantizeInt4 writes the values of an int4 row.
func DequantizeInt4(dst []float32, q []byte, groupSize int, scales, zeros []uint16) {
	for k := range dst {
		g := k / groupSize
		v := q[k/2] >> (4 * (k & 1)) & 15
		dst[k] = dequant4(v, loader.HalfToFloat32(scales[g]), loader.HalfToFloat32(zeros[g]))
	}
}
