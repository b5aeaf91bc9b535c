package model

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/loader"
)

// encode writes vs as little-endian elements of type dt; a value given as
// raw bits (a uint32 or uint16) is written as it is.
func encode(dt loader.DType, vs ...any) []byte {
	var b []byte
	for _, v := range vs {
		switch v := v.(type) {
		case float32:
			b = appendValue(b, dt, v)
		case float64:
			b = appendValue(b, dt, float32(v))
		case int:
			b = appendValue(b, dt, float32(v))
		case uint32:
			b = binary.LittleEndian.AppendUint32(b, v)
		case uint16:
			b = binary.LittleEndian.AppendUint16(b, v)
		}
	}
	return b
}

func TestFirstNonFinite(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	many := func(dt loader.DType, n, at int, v any) []byte {
		var vs []any
		for i := range n {
			if i == at {
				vs = append(vs, v)
			} else {
				vs = append(vs, float32(i%5)-2)
			}
		}
		return encode(dt, vs...)
	}
	tests := []struct {
		name string
		dt   loader.DType
		b    []byte
		want int
	}{
		{"f32 empty", loader.F32, nil, -1},
		{"f32 finite", loader.F32, encode(loader.F32, 0, -0.0, 1, -1, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32), -1},
		{"f32 nan", loader.F32, encode(loader.F32, 1, 2, nan), 2},
		{"f32 +inf", loader.F32, encode(loader.F32, inf, 2), 0},
		{"f32 -inf", loader.F32, encode(loader.F32, 1, -inf), 1},
		{"f32 signalling nan", loader.F32, encode(loader.F32, 1, uint32(0x7f800001)), 1},
		{"f32 negative nan", loader.F32, encode(loader.F32, uint32(0xffc00000)), 0},
		{"f32 exponent one short", loader.F32, encode(loader.F32, uint32(0x7f7fffff), uint32(0xff000000)), -1},
		{"f32 in a long run", loader.F32, many(loader.F32, 1000, 777, nan), 777},
		{"f32 last of a long run", loader.F32, many(loader.F32, 1001, 1000, inf), 1000},
		{"f32 first of a long run", loader.F32, many(loader.F32, 1000, 0, -inf), 0},
		{"f32 none in a long run", loader.F32, many(loader.F32, 1003, -1, nil), -1},
		{"f16 finite", loader.F16, encode(loader.F16, 0, 1, -1, 65504, -65504, 6e-8), -1},
		{"f16 65520 rounds to inf", loader.F16, encode(loader.F16, 1, 65520), 1},
		{"f16 nan", loader.F16, encode(loader.F16, uint16(0x7e00)), 0},
		{"f16 -inf", loader.F16, encode(loader.F16, 0, 0, 0, uint16(0xfc00)), 3},
		{"f16 exponent one short", loader.F16, encode(loader.F16, uint16(0x7bff), uint16(0x7800)), -1},
		{"f16 in a long run", loader.F16, many(loader.F16, 999, 500, nan), 500},
		{"f16 none in a long run", loader.F16, many(loader.F16, 1001, -1, nil), -1},
		{"bf16 finite", loader.BF16, encode(loader.BF16, 0, 1, -1, 3e38, -3e38), -1},
		{"bf16 nan", loader.BF16, encode(loader.BF16, 1, uint16(0x7fc0)), 1},
		{"bf16 +inf", loader.BF16, encode(loader.BF16, inf), 0},
		{"bf16 f16's inf bits are finite", loader.BF16, encode(loader.BF16, uint16(0x7c00), uint16(0xfc00)), -1},
		{"bf16 in a long run", loader.BF16, many(loader.BF16, 1000, 998, -inf), 998},
		{"unknown dtype", loader.DType("I8"), []byte{0xff, 0xff}, -1},
	}
	for _, tt := range tests {
		if got := firstNonFinite(tt.dt, tt.b); got != tt.want {
			t.Errorf("%s: firstNonFinite = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestFiniteScanChunks feeds a tensor in chunks of every size from 1 to 9
// bytes, so elements are split across chunks, and checks that the bad
// element is found with its index in the whole tensor.
func TestFiniteScanChunks(t *testing.T) {
	for _, dt := range []loader.DType{loader.F32, loader.F16, loader.BF16} {
		for _, at := range []int{-1, 0, 6, 20} {
			vs := make([]any, 21)
			for i := range vs {
				vs[i] = float32(i) / 3
			}
			if at >= 0 {
				vs[at] = math.NaN()
			}
			data := encode(dt, vs...)
			for chunk := 1; chunk <= 9; chunk++ {
				s := finiteScan{es: dt.Size()}
				got := int64(-1)
				for off := 0; off < len(data); off += chunk {
					if i, ok := s.next(dt, data[off:min(off+chunk, len(data))]); !ok {
						got = i
						break
					}
				}
				if got != int64(at) {
					t.Errorf("%s, NaN at %d, chunks of %d: found at %d", dt, at, chunk, got)
				}
			}
		}
	}
}

func TestNonFiniteError(t *testing.T) {
	in := loader.Info{Name: "backbone.layers.3.mixer.D", File: "model-00002-of-00005.safetensors", Shape: []int{24}}
	tests := []struct {
		dt   loader.DType
		bits uint32
		want string
	}{
		{loader.F32, 0x7fc00000, "model-00002-of-00005.safetensors: tensor backbone.layers.3.mixer.D (F32 [24]) holds NaN at element 7: weights must be finite"},
		{loader.F32, 0xff800000, "(F32 [24]) holds -Inf at element 7"},
		{loader.F16, 0x7c00, "(F16 [24]) holds +Inf at element 7"},
		{loader.F16, 0xfc01, "(F16 [24]) holds NaN at element 7"},
		{loader.BF16, 0xff80, "(BF16 [24]) holds -Inf at element 7"},
	}
	for _, tt := range tests {
		in.DType = tt.dt
		got := nonFiniteError(in, 7, tt.bits).Error()
		if !strings.Contains(got, tt.want) {
			t.Errorf("%s %#x: %q, want %q", tt.dt, tt.bits, got, tt.want)
		}
	}
}

// BenchmarkFiniteScan measures the scan of one 4 MiB chunk (what
// loader.Checkpoint.Stream hands over) of finite weights, next to copying
// the chunk and to decoding it to float32 (what the CPU backend does with
// every chunk), for scale.
func BenchmarkFiniteScan(b *testing.B) {
	const size = loader.ChunkSize
	for _, dt := range []loader.DType{loader.F32, loader.F16, loader.BF16} {
		n := size / dt.Size()
		buf := make([]byte, 0, size)
		for i := range n {
			buf = appendValue(buf, dt, float32(i%1000)/1000-0.5)
		}
		b.Run("scan/"+string(dt), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if firstNonFinite(dt, buf) >= 0 {
					b.Fatal("found a bad value")
				}
			}
		})
		b.Run("decode/"+string(dt), func(b *testing.B) {
			dst := make([]float32, n)
			b.SetBytes(size)
			for b.Loop() {
				loader.Decode(dst, dt, buf)
			}
		})
	}
	b.Run("copy", func(b *testing.B) {
		src, dst := make([]byte, size), make([]byte, size)
		b.SetBytes(size)
		for b.Loop() {
			copy(dst, src)
		}
	})
}
