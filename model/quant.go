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

// Int4Search is how many scales QuantizeInt4 tries per group beyond
// round-to-nearest; 0 makes it plain round-to-nearest over the group's
// range. Measured on mamba2-go-tiny (docs/quantization.md), the search
// recovers most of the perplexity int4 loses.
const Int4Search = 16

// QuantizeInt4 quantizes one row w in groups of groupSize, packing two
// values per byte of q (element 2j in the low nibble of byte j) and
// writing each group's scale and zero as f16 bits.
//
// For each group it tries the round-to-nearest fit over the group's
// range and Int4Search narrower ranges; for each, the integers are
// assigned and then the scale and zero refitted by least squares to
// those integers; the pair with the least squared error (computed with
// the f16-rounded scale and zero, as they are stored) wins.
func QuantizeInt4(w []float32, groupSize int, q []byte, scales, zeros []uint16, search int) {
	clear(q[:(len(w)+1)/2])
	qs, tmp := make([]uint8, groupSize), make([]uint8, groupSize)
	for g := 0; g*groupSize < len(w); g++ {
		grp := w[g*groupSize : min((g+1)*groupSize, len(w))]
		gq := qs[:len(grp)]
		scales[g], zeros[g] = fitInt4(grp, gq, tmp[:len(grp)], search)
		for i, v := range gq {
			k := g*groupSize + i
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
	try := func(s, z uint16) {
		e := assignInt4(w, tmp, s, z)
		if e < best {
			best, bs, bz = e, s, z
			copy(q, tmp)
		}
	}
	// Round to nearest: q = 0 at lo, q = 15 at hi, so z = lo + 8s.
	s0 := (hi - lo) / 15
	rtnS, rtnZ := loader.Float32ToHalf(s0), loader.Float32ToHalf(lo+8*s0)
	try(rtnS, rtnZ)
	for i := 1; i <= search; i++ {
		// Narrow the range toward its middle by up to a fifth, then refit.
		f := 1 - 0.2*float32(i)/float32(search)
		mid, half := (lo+hi)/2, (hi-lo)/2*f
		s := 2 * half / 15
		if s == 0 {
			break
		}
		z := mid - half + 8*s
		assignInt4(w, tmp, loader.Float32ToHalf(s), loader.Float32ToHalf(z))
		// Least squares of w ≈ s·(q−8) + z over the assigned integers.
		var n, sx, sy, sxx, sxy float64
		for j, v := range w {
			x := float64(tmp[j]) - 8
			n++
			sx += x
			sy += float64(v)
			sxx += x * x
			sxy += x * float64(v)
		}
		if d := n*sxx - sx*sx; d > 0 {
			fs := (n*sxy - sx*sy) / d
			fz := (sy - fs*sx) / n
			if fs > 0 {
				try(loader.Float32ToHalf(float32(fs)), loader.Float32ToHalf(float32(fz)))
			}
		}
		try(loader.Float32ToHalf(s), loader.Float32ToHalf(z))
	}
	return bs, bz
}

// assignInt4 writes the nearest integers for scale s and zero z (f16 bits)
// and returns the squared error of their dequantized values.
func assignInt4(w []float32, q []uint8, sb, zb uint16) float64 {
	s, z := loader.HalfToFloat32(sb), loader.HalfToFloat32(zb)
	var e float64
	for i, v := range w {
		var r float64
		if s > 0 && !math.IsInf(float64(s), 0) {
			r = math.RoundToEven(float64((v-z)/s)) + 8
		}
		qi := uint8(max(0, min(15, r)))
		q[i] = qi
		d := float64(dequant4(qi, s, z) - v)
		e += d * d
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
