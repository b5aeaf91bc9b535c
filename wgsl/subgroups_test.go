package wgsl

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// subgroupTolerance bounds |on − off| / (1 + |off|) between the two
// variants of a float result: the same f32 products summed in another
// order. A lost or doubled partial sum is off by far more.
const subgroupTolerance = 2e-5

// TestSubgroupVariants runs every kernel that has a subgroup variant twice
// on one device, with the subgroup kernels and with the fallback
// (Options.NoSubgroups flipped between the runs): the matrix-vector
// product in all five weight formats (64 lanes per row, some cases also 8:
// Options.MatvecLanes), with the fused norm (float weights)
// or the norm kernel before it (int8, int4), the norm kernel in groups with
// a mask, device sampling (greedy, top-k, top-p, min-p, penalties, ties),
// and a fixture model's prompt and decoded logits (the decode product with
// the conv in its epilogue included) and generated ids. Float
// results must agree within rounding and sampled ids exactly. It also
// checks that both variants were compiled, so it cannot pass by running one
// kernel twice. Where the device has no subgroups feature (natively:
// wgpu-native 22 has none) it skips.
func TestSubgroupVariants(t *testing.T) {
	b := open(t, Options{})
	if !b.plat.subgroupSupport().on {
		t.Skipf("skipping: the device %s has no subgroups feature, so only the fallback kernels exist here (wgpu-native 22 has none; Dawn offers it)", b.Describe())
	}
	t.Logf("device %s", b.Describe())
	defer func(v bool) { b.opts.NoSubgroups = v }(b.opts.NoSubgroups)
	rng := rand.New(rand.NewPCG(12, 3))
	rnd := func(n int, lo, hi float64) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(lo + (hi-lo)*rng.Float64())
		}
		return out
	}
	// twice runs run with subgroups on, then off, and returns both results.
	twice := func(t *testing.T, run func(t *testing.T) []float32) (on, off []float32) {
		t.Helper()
		b.opts.NoSubgroups = false
		on = run(t)
		b.opts.NoSubgroups = true
		off = run(t)
		return on, off
	}
	read := func(t *testing.T, x model.Tensor) []float32 {
		t.Helper()
		v, err := b.Read(x)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	t.Run("MatVec", func(t *testing.T) {
		formats := []struct {
			name string
			spec func(shape []int, data []float32) model.WeightSpec
		}{
			{"f32", func(s []int, d []float32) model.WeightSpec { return modeltest.SpecOf("w", loader.F32, s, d, 64) }},
			{"f16", func(s []int, d []float32) model.WeightSpec { return modeltest.SpecOf("w", loader.F16, s, d, 64) }},
			{"bf16", func(s []int, d []float32) model.WeightSpec { return modeltest.SpecOf("w", loader.BF16, s, d, 64) }},
			{"int8", func(s []int, d []float32) model.WeightSpec {
				return modeltest.QuantSpecOf("w", s, d, model.Quant{Format: model.FormatInt8}, 64)
			}},
			{"int4", func(s []int, d []float32) model.WeightSpec {
				return modeltest.QuantSpecOf("w", s, d, model.Quant{Format: model.FormatInt4, GroupSize: 32}, 64)
			}},
		}
		// T ≤ Options.MatvecTokens: the matrix-vector kernel, one group
		// of 4 tokens or two; ragged columns (not a multiple of its 4 per
		// workgroup) and depths; norms in one group and several, with a
		// mask, adding into out.
		shapes := []struct {
			T, N, K, groups int
			norm, mask, add bool
		}{
			{1, 37, 96, 1, true, false, false},
			{4, 70, 200, 4, true, true, true},
			{3, 5, 64, 2, true, true, false},
			{2, 33, 17, 1, false, false, true},
			{7, 41, 96, 2, true, true, true},
		}
		defer func(n int) { b.lanes = n }(b.lanes)
		for _, lanes := range []int{64, 8} { // Options.MatvecLanes: 64 (the default), and the fewest
			b.lanes = lanes
			for _, f := range formats {
				for _, s := range shapes {
					if lanes != 64 && s.T > 1 && f.name != "f32" {
						continue // a few cases for the other lanes keep the test short
					}
					t.Run(fmt.Sprintf("lanes%d/%s/T%d/N%d/K%d/groups%d/norm=%v/mask=%v", lanes, f.name, s.T, s.N, s.K, s.groups, s.norm, s.mask), func(t *testing.T) {
						w, err := b.Weight(f.spec([]int{s.N, s.K}, rnd(s.N*s.K, -1, 1)))
						if err != nil {
							t.Fatal(err)
						}
						defer b.Free(w)
						xd, od := rnd(s.T*s.K, -2, 2), rnd(s.T*s.N, -1, 1)
						x, out := b.Alloc(model.F32, s.T, s.K), b.Alloc(model.F32, s.T, s.N)
						defer b.Free(x)
						defer b.Free(out)
						var p model.Product
						if s.norm {
							nw, err := b.Weight(modeltest.SpecOf("norm", loader.F32, []int{s.K}, rnd(s.K, 0.5, 1.5), 64))
							if err != nil {
								t.Fatal(err)
							}
							defer b.Free(nw)
							p = model.Product{Norm: nw, Groups: s.groups, Eps: 1e-5}
							if s.mask {
								m := b.Alloc(model.F32, s.T)
								defer b.Free(m)
								md := make([]float32, s.T)
								for i := range md {
									md[i] = float32(i % 2)
								}
								b.Write(m, md)
								p.Mask = m
							}
						}
						p.Add = s.add
						on, off := twice(t, func(t *testing.T) []float32 {
							b.Write(x, xd)
							b.Write(out, od)
							b.MatMul(out, x, w, nil, p)
							return read(t, out)
						})
						agree(t, "out", on, off)
					})
				}
			}
		}
		bothCompiled(t, b, "matmul.wgsl", "MATVEC")
	})

	t.Run("RMSNorm", func(t *testing.T) {
		for _, c := range []struct{ D, groups int }{{300, 1}, {300, 4}, {70, 5}, {1030, 1}} {
			t.Run(fmt.Sprintf("D%d/groups%d", c.D, c.groups), func(t *testing.T) {
				const T = 6
				h, out, mask := b.Alloc(model.F32, T, c.D), b.Alloc(model.F32, T, c.D), b.Alloc(model.F32, T)
				defer b.Free(h)
				defer b.Free(out)
				defer b.Free(mask)
				w, err := b.Weight(modeltest.SpecOf("norm", loader.BF16, []int{c.D}, rnd(c.D, 0.5, 1.5), 64))
				if err != nil {
					t.Fatal(err)
				}
				defer b.Free(w)
				b.Write(h, rnd(T*c.D, -3, 3))
				b.Write(mask, []float32{1, 1, 0, 1, 0, 1})
				on, off := twice(t, func(t *testing.T) []float32 {
					b.RMSNorm(out, h, w, mask, c.groups, 1e-5)
					return read(t, out)
				})
				agree(t, "out", on, off)
			})
		}
		bothCompiled(t, b, "rmsnorm.wgsl")
	})

	t.Run("Sample", func(t *testing.T) {
		const V, B = 2500, 3
		// Logits rounded to quarters, so many tokens tie, with the
		// maximum tied in row 0 (within the scan's first chunk and
		// across chunks) and a -Inf in row 2. Its own generator, so the
		// rows do not depend on which subtests ran before.
		rng := rand.New(rand.NewPCG(7, 19))
		logits := make([]float32, B*V)
		for i := range logits {
			logits[i] = float32(math.Round(rng.NormFloat64()*8)) / 4
		}
		logits[5], logits[9], logits[2100] = 20, 20, 20
		logits[2*V+17] = float32(math.Inf(-1))
		hist := make([]float32, B*2*V)
		for i := range hist {
			if rng.IntN(5) == 0 {
				hist[i] = float32(1 + rng.IntN(3))
			}
		}
		lt, ids, ht := b.Alloc(model.F32, B, V), b.Alloc(model.I32, B), b.Alloc(model.F32, B, 2, V)
		defer b.Free(lt)
		defer b.Free(ids)
		defer b.Free(ht)
		b.Write(lt, logits)
		for _, c := range []struct {
			s    model.Sampling
			pen  bool
			name string
		}{
			{model.Sampling{}, false, "greedy"},
			{model.Sampling{RepetitionPenalty: 1.3, PresencePenalty: 0.5}, true, "greedy/penalties"},
			{model.Sampling{Temperature: 0.8}, false, "T0.8"},
			{model.Sampling{Temperature: 1, TopK: 5}, false, "top-k"},
			{model.Sampling{Temperature: 1.2, TopP: 0.9}, false, "top-p"},
			{model.Sampling{Temperature: 0.7, TopK: 50, TopP: 0.3, MinP: 0.05}, false, "top-k/top-p/min-p"},
			{model.Sampling{Temperature: 1.1, TopK: 40, TopP: 0.8, FrequencyPenalty: 0.6}, true, "sampled/penalties"},
		} {
			// Draws in the body of the distribution: deep in its tail
			// (u = 0.999) a token's weight is below the rounding of the
			// total, which the two variants sum in different orders, so
			// there they may legitimately pick neighbours.
			for _, u := range [][]float32{{0, 0.5, 0.9}, {0.6180339, 0.1, 0.8}} {
				t.Run(fmt.Sprintf("%s/u=%v", c.name, u), func(t *testing.T) {
					var h model.Tensor
					if c.pen {
						h = ht
					}
					on, off := twice(t, func(t *testing.T) []float32 {
						b.Write(ht, hist) // the sampler counts its choice here
						b.Sample(ids, lt, h, c.s, u)
						got, err := b.ReadIDs(ids)
						if err != nil {
							t.Fatal(err)
						}
						out := make([]float32, len(got))
						for i, id := range got {
							out[i] = float32(id)
						}
						return out
					})
					if !slices.Equal(on, off) {
						t.Errorf("sampled ids: %v with subgroups, %v without", on, off)
					}
				})
			}
		}
		bothCompiled(t, b, "sample.wgsl")
		bothCompiled(t, b, "sample.wgsl", "PASS_SCAN")
	})

	t.Run("Fixture", func(t *testing.T) {
		fx := modeltest.Fixtures(t)[0]
		m, err := model.Load(os.DirFS(fx.Dir), b, model.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m.GatedNorm = fx.GatedNorm
		V := m.Config.VocabSize
		on, off := twice(t, func(t *testing.T) []float32 {
			st := m.NewState(1)
			defer st.Close()
			prompt, err := st.Logits(fx.GreedyPromptIDs, nil)
			if err != nil {
				t.Fatal(err)
			}
			// One decoded token: the matrix-vector products with their norms.
			step, err := st.Logits([]int32{int32(model.Argmax(prompt[len(prompt)-V:]))}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return append(prompt, step...)
		})
		agree(t, fx.Name+" logits", on, off)
		ids := make([]int, len(fx.GreedyPromptIDs))
		for i, v := range fx.GreedyPromptIDs {
			ids[i] = int(v)
		}
		for _, s := range []model.Sampling{{}, {Temperature: 0.9, TopK: 20, TopP: 0.9, Seed: 5}} {
			on, off := twice(t, func(t *testing.T) []float32 {
				res, err := m.Generate(context.Background(), ids, model.Options{Sampling: s, MaxNewTokens: 5, StopIDs: []int{}})
				if err != nil {
					t.Fatal(err)
				}
				out := make([]float32, len(res.IDs))
				for i, id := range res.IDs {
					out[i] = float32(id)
				}
				return out
			})
			if !slices.Equal(on, off) {
				t.Errorf("%s, %+v: generated %v with subgroups, %v without", fx.Name, s, on, off)
			}
		}
		// The decoded token's in_proj runs the conv in its epilogue.
		bothCompiled(t, b, "matmul.wgsl", "MATVEC", "CONV")
		bothCompiled(t, b, "rmsnorm.wgsl")
		bothCompiled(t, b, "sample.wgsl")
		bothCompiled(t, b, "sample.wgsl", "PASS_SCAN")
	})
}

// bothCompiled checks that the backend compiled shader with and without
// SUBGROUPS, counting only its variants with every define in only (the
// matrix-vector kernel is matmul.wgsl with MATVEC), so a comparison of the
// two cannot pass by running one kernel twice.
func bothCompiled(t *testing.T, b *Backend, shader string, only ...string) {
	t.Helper()
	var with, without bool
	for k := range b.pipes {
		d := strings.Split(k.defines, ",")
		if k.shader != shader || slices.ContainsFunc(only, func(o string) bool { return !slices.Contains(d, o) }) {
			continue
		}
		has := slices.Contains(d, subgroupsDefine)
		with, without = with || has, without || !has
	}
	if !with || !without {
		t.Errorf("%s%v: compiled with subgroups %v, without %v: want both", shader, only, with, without)
	}
}

// agree checks that two variants' float results differ by rounding only.
func agree(t *testing.T, what string, on, off []float32) {
	t.Helper()
	if len(on) != len(off) {
		t.Fatalf("%s: %d values with subgroups, %d without", what, len(on), len(off))
	}
	worst, at := 0.0, -1
	for i := range on {
		d := math.Abs(float64(on[i])-float64(off[i])) / (1 + math.Abs(float64(off[i])))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		if d > worst {
			worst, at = d, i
		}
	}
	if worst > subgroupTolerance {
		t.Errorf("%s: element %d is %g with subgroups, %g without (relative %.3g > %g)", what, at, on[at], off[at], worst, subgroupTolerance)
	}
}

// TestSubgroupsEnv: MAMBA2_WGSL_SUBGROUPS accepts 0, 1 and nothing, and
// names itself and the accepted values otherwise.
func TestSubgroupsEnv(t *testing.T) {
	for _, c := range []struct {
		v      string
		off    bool
		errHas string
	}{
		{"", false, ""}, {"1", false, ""}, {"0", true, ""},
		{"off", false, `MAMBA2_WGSL_SUBGROUPS="off": want 0`}, {"false", false, "want 0"},
	} {
		t.Setenv(subgroupsEnv, c.v)
		off, err := noSubgroupsFromEnv()
		if c.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.errHas) {
				t.Errorf("%q: got %v, want an error with %q", c.v, err, c.errHas)
			}
			if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), c.errHas) {
				t.Errorf("%q: New gave %v, want the error", c.v, err)
			}
			continue
		}
		if err != nil || off != c.off {
			t.Errorf("%q: got %v, %v; want %v", c.v, off, err, c.off)
		}
	}
}

// TestSubgroupVariantSource: the SUBGROUPS define puts `enable subgroups;`
// first (before the constants of valued defines, as WGSL requires), selects
// subgroup code in every kernel that lists it, and leaves the fallback
// without any; it needs no device.
func TestSubgroupVariantSource(t *testing.T) {
	for _, k := range kernels {
		if !slices.Contains(k.variants, subgroupsDefine) {
			continue
		}
		base := []string{"WF32", "KC=4u"} // KC: a valued define, which becomes a constant
		if k.file == "matmul.wgsl" {
			base = append(base, "MATVEC")
		}
		with, err := preprocess(k.file, defs(append(base, subgroupsDefine)...))
		if err != nil {
			t.Fatal(err)
		}
		without, err := preprocess(k.file, defs(base...))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(with, "enable subgroups;\nconst KC = 4u;\n") {
			t.Errorf("%s[SUBGROUPS] starts %q", k.file, with[:min(len(with), 60)])
		}
		for _, want := range []string{"@builtin(subgroup_invocation_id)", "@builtin(subgroup_size)"} {
			if !strings.Contains(commentRE.ReplaceAllString(with, ""), want) {
				t.Errorf("%s[SUBGROUPS] has no %s", k.file, want)
			}
		}
		if strings.Contains(strings.ToLower(commentRE.ReplaceAllString(without, "")), "subgroup") {
			t.Errorf("%s without SUBGROUPS mentions subgroups outside comments", k.file)
		}
	}
}
