package wgsl

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestMatvecUnroll runs the matrix-vector kernel with each number of
// weight vectors read ahead (Options.MatvecUnroll: 1, 2, 4, 8) in every
// weight format and checks that the results agree with reading one at a
// time within rounding. The depths are long enough that whole blocks of
// 8 read-ahead vectors run at 64 lanes per row, with a remainder after
// them (ragged in k for the float formats), and with 8 lanes many blocks;
// the norm in one group and in several, adding into out. The conformance
// suite's products are too shallow to reach the blocks at 64 lanes.
func TestMatvecUnroll(t *testing.T) {
	b := open(t, Options{})
	rng := rand.New(rand.NewPCG(5, 11))
	rnd := func(n int, lo, hi float64) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(lo + (hi-lo)*rng.Float64())
		}
		return out
	}
	formats := []struct {
		name  string
		float bool
		spec  func(shape []int, data []float32) model.WeightSpec
	}{
		{"f32", true, func(s []int, d []float32) model.WeightSpec { return modeltest.SpecOf("w", loader.F32, s, d, 256) }},
		{"f16", true, func(s []int, d []float32) model.WeightSpec { return modeltest.SpecOf("w", loader.F16, s, d, 256) }},
		{"bf16", true, func(s []int, d []float32) model.WeightSpec { return modeltest.SpecOf("w", loader.BF16, s, d, 256) }},
		{"int8", false, func(s []int, d []float32) model.WeightSpec {
			return modeltest.QuantSpecOf("w", s, d, model.Quant{Format: model.FormatInt8}, 256)
		}},
		{"int4", false, func(s []int, d []float32) model.WeightSpec {
			return modeltest.QuantSpecOf("w", s, d, model.Quant{Format: model.FormatInt4, GroupSize: 32}, 256)
		}},
	}
	shapes := []struct {
		T, N, K, groups int
		norm, add, floatOnly bool
	}{
		{1, 13, 4160, 1, true, false, false}, // int4 at 64 lanes: one block of 8 and a remainder
		{5, 9, 2080, 4, true, true, false},
		{2, 7, 1037, 1, false, true, true}, // k not a multiple of any vector
	}
	defer func(l, u int) { b.lanes, b.unroll = l, u }(b.lanes, b.unroll)
	for _, lanes := range []int{64, 8} {
		b.lanes = lanes
		for _, f := range formats {
			for _, s := range shapes {
				if s.floatOnly && !f.float {
					continue
				}
				t.Run(fmt.Sprintf("lanes%d/%s/T%d/N%d/K%d/groups%d", lanes, f.name, s.T, s.N, s.K, s.groups), func(t *testing.T) {
					w, err := b.Weight(f.spec([]int{s.N, s.K}, rnd(s.N*s.K, -1, 1)))
					if err != nil {
						t.Fatal(err)
					}
					defer b.Free(w)
					xd, od := rnd(s.T*s.K, -2, 2), rnd(s.T*s.N, -1, 1)
					x, out := b.Alloc(model.F32, s.T, s.K), b.Alloc(model.F32, s.T, s.N)
					defer b.Free(x)
					defer b.Free(out)
					p := model.Product{Add: s.add}
					if s.norm {
						nw, err := b.Weight(modeltest.SpecOf("norm", loader.F32, []int{s.K}, rnd(s.K, 0.5, 1.5), 256))
						if err != nil {
							t.Fatal(err)
						}
						defer b.Free(nw)
						p.Norm, p.Groups, p.Eps = nw, s.groups, 1e-5
					}
					run := func(unroll int) []float32 {
						b.unroll = unroll
						b.Write(x, xd)
						b.Write(out, od)
						b.MatMul(out, x, w, nil, p)
						v, err := b.Read(out)
						if err != nil {
							t.Fatal(err)
						}
						return v
					}
					one := run(1)
					for _, u := range []int{2, 4, 8} {
						agree(t, fmt.Sprintf("unroll %d against 1", u), run(u), one)
					}
					for _, u := range []int{1, 8} {
						if !compiledWith(b, "matmul.wgsl", fmt.Sprintf("MVU=%du", u)) {
							t.Errorf("no matmul.wgsl pipeline with MVU=%d: the read-ahead was not what ran", u)
						}
					}
				})
			}
		}
	}
}

// compiledWith reports whether the backend built a pipeline of shader with
// define among its defines.
func compiledWith(b *Backend, shader, define string) bool {
	for k := range b.pipes {
		if k.shader == shader && slices.Contains(strings.Split(k.defines, ","), define) {
			return true
		}
	}
	return false
}
