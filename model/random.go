package model

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/mamba2web/mamba2/loader"
)

// Shapes are the released Mamba-2 sizes (SPEC §1.2), for benchmarks and
// tests that need a real model's dimensions but not its weights.
var Shapes = map[string]Config{
	"130m":      releaseShape(768, 24, 1, 50288, true),
	"370m":      releaseShape(1024, 48, 1, 50288, true),
	"780m":      releaseShape(1536, 48, 1, 50288, true),
	"1.3b":      releaseShape(2048, 48, 1, 50288, true),
	"2.7b":      releaseShape(2560, 64, 1, 50288, true),
	"codestral": releaseShape(4096, 64, 8, 32768, false),
}

func releaseShape(d, layers, groups, vocab int, tied bool) Config {
	return Config{VocabSize: vocab, Hidden: d, Layers: layers, State: 128, Expand: 2,
		Heads: 2 * d / 64, HeadDim: 64, Groups: groups, ConvKernel: 4, ChunkSize: 256,
		ConvBias: true, Eps: 1e-5, TimeStepMax: math.Inf(1), TieEmbeddings: tied, EOS: 0}
}

// NewRandom builds a model of config c with seeded random weights of the
// kind training starts from (dt in [0.001, 0.1], A in [1, 16], D = 1, unit
// norms, small projections), stored as dtype. It needs no checkpoint.
func NewRandom(c Config, b Backend, dtype loader.DType, seed uint64) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	w := &Weights{}
	for _, bd := range c.bindings(w) {
		shape := bd.use
		if shape == nil {
			shape = bd.shape
		}
		n := 1
		for _, d := range shape {
			n *= d
		}
		gen := randomInit(bd.names[0], shape, rng)
		t, err := b.Weight(WeightSpec{Name: bd.names[0], DType: dtype, Shape: shape,
			Stream: func(fn func(off int64, b []byte) error) error {
				es := dtype.Size()
				const chunk = 1 << 16
				buf := make([]byte, 0, chunk*es)
				for i := 0; i < n; i += chunk {
					buf = buf[:0]
					for j := i; j < min(i+chunk, n); j++ {
						buf = appendValue(buf, dtype, gen(j))
					}
					if err := fn(int64(i*es), buf); err != nil {
						return err
					}
				}
				return nil
			}})
		if err != nil {
			return nil, err
		}
		*bd.dst = t
	}
	if c.TieEmbeddings {
		w.LMHead = w.Embed
	}
	return &Model{Config: c, Backend: b, Weights: w}, nil
}

// randomInit returns the generator of element j of the named tensor.
func randomInit(name string, shape []int, rng *rand.Rand) func(j int) float32 {
	suffix := func(s string) bool { return len(name) >= len(s) && name[len(name)-len(s):] == s }
	switch {
	case suffix("norm.weight") || suffix("norm_f.weight") || suffix(".D"):
		return func(int) float32 { return 1 }
	case suffix("A_log"):
		return func(int) float32 { return float32(math.Log(1 + 15*rng.Float64())) }
	case suffix("dt_bias"):
		return func(int) float32 {
			dt := math.Exp(math.Log(0.001) + rng.Float64()*(math.Log(0.1)-math.Log(0.001)))
			return float32(dt + math.Log(-math.Expm1(-dt))) // softplus⁻¹(dt)
		}
	case suffix("bias"):
		return func(int) float32 { return float32(rng.NormFloat64() * 0.02) }
	}
	fanIn := shape[len(shape)-1]
	scale := 1 / math.Sqrt(float64(fanIn))
	if suffix("embeddings.weight") || suffix("embedding.weight") {
		scale = 0.5
	}
	return func(int) float32 { return float32(rng.NormFloat64() * scale) }
}

func appendValue(b []byte, dt loader.DType, v float32) []byte {
	switch dt {
	case loader.F16:
		return binary.LittleEndian.AppendUint16(b, loader.Float32ToHalf(v))
	case loader.BF16:
		return binary.LittleEndian.AppendUint16(b, uint16(math.Float32bits(v)>>16))
	}
	return binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
}
