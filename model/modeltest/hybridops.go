package modeltest

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// RunHybridOps checks a backend's model.HybridBackend operations on seeded
// random inputs of odd sizes against loops written here from the doc
// comments in model/hybrid.go, independently of cpu/hybrid.go, so the CPU
// backend runs it too: partial rotary at a position offset, grouped-query
// attention over a cache with left padding (and decoding one query at a
// time giving the rows of a prefill), KV stores, gated MLPs fused and
// separate with each activation, top-k experts, and the elementwise
// multipliers.
func RunHybridOps(t *testing.T, b model.HybridBackend) {
	h := &opsHarness{b: b, ref: b, rng: rand.New(rand.NewPCG(2026, 12))}
	read := func(t *testing.T, x model.Tensor) []float32 {
		t.Helper()
		v, err := b.Read(x)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tensor := func(data []float32, shape ...int) model.Tensor {
		x := b.Alloc(model.F32, shape...)
		b.Write(x, data)
		return x
	}
	t.Run("Elementwise", func(t *testing.T) {
		x, y, v := h.rand(21, -1, 1), h.rand(21, -1, 1), h.rand(7, -2, 2)
		tx, ty := tensor(x, 3, 7), tensor(y, 3, 7)
		b.Scale(tx, 1.5)
		b.AddScaled(ty, tx, -0.25)
		b.MulCols(tx, tensor(v, 7))
		want := make([]float32, 21)
		wantY := make([]float32, 21)
		for i := range x {
			want[i] = x[i] * 1.5 * v[i%7]
			wantY[i] = y[i] - 0.25*x[i]*1.5
		}
		compare(t, "Scale, MulCols", read(t, tx), want, OpsTolerance)
		compare(t, "AddScaled", read(t, ty), wantY, OpsTolerance)
		a, c := h.rand(3*5, -1, 1), h.rand(3*4, -1, 1)
		out := b.Alloc(model.F32, 3, 9)
		b.Concat(out, tensor(a, 3, 5), tensor(c, 3, 4))
		var cat []float32
		for r := range 3 {
			cat = append(append(cat, a[r*5:(r+1)*5]...), c[r*4:(r+1)*4]...)
		}
		compare(t, "Concat", read(t, out), cat, 0)
	})
	ids := func(v ...int32) model.Tensor {
		if v == nil {
			return nil
		}
		x := b.Alloc(model.I32, len(v))
		b.WriteIDs(x, v)
		return x
	}
	// at is start[b], 0 without start: the per-sequence positions of
	// RotaryArgs.Start, AttnArgs.Start and StoreKV's start.
	at := func(start []int32, b int) int {
		if start == nil {
			return 0
		}
		return int(start[b])
	}
	t.Run("Rotary", func(t *testing.T) {
		for _, c := range []struct {
			name  string
			pos   int
			start []int32
		}{
			{"one position", 5, nil},
			{"per sequence", 2, []int32{0, 9}},
			{"per sequence, no offset", 0, []int32{7, 1}},
		} {
			B, L, H, Dh, Dim := 2, 3, 3, 10, 6
			x := h.rand(B*L*H*Dh, -1, 1)
			tx := tensor(x, B, L, H*Dh)
			b.Rotary(tx, model.RotaryArgs{Heads: H, HeadDim: Dh, Dim: Dim, Theta: 500, Pos: c.pos, Start: ids(c.start...)})
			want := make([]float32, len(x))
			copy(want, x)
			for r := range B * L {
				p := float64(c.pos + at(c.start, r/L) + r%L)
				for hh := range H {
					o := (r*H + hh) * Dh
					for i := range Dim / 2 {
						ang := p * math.Pow(500, -float64(2*i)/float64(Dim))
						x1, x2 := float64(x[o+i]), float64(x[o+i+Dim/2])
						want[o+i] = float32(x1*math.Cos(ang) - x2*math.Sin(ang))
						want[o+i+Dim/2] = float32(x2*math.Cos(ang) + x1*math.Sin(ang))
					}
				}
			}
			compare(t, "Rotary, "+c.name, read(t, tx), want, 1e-5)
		}
	})
	t.Run("StoreKV", func(t *testing.T) {
		for _, c := range []struct {
			name  string
			at    int
			start []int32
		}{
			{"one position", 3, nil},
			{"per sequence", 1, []int32{0, 2}},
			{"past the capacity", 0, []int32{1, 5}}, // sequence 1's second position is dropped
		} {
			const B, Cap, L, X = 2, 6, 2, 3
			old := h.rand(B*Cap*X, -1, 1)
			cache := tensor(old, B, Cap, X)
			x := h.rand(B*L*X, -1, 1)
			b.StoreKV(cache, tensor(x, B, L, X), c.at, ids(c.start...))
			want := slices.Clone(old)
			for bi := range B {
				for i := range L {
					if p := c.at + at(c.start, bi) + i; p < Cap {
						copy(want[(bi*Cap+p)*X:(bi*Cap+p+1)*X], x[(bi*L+i)*X:(bi*L+i+1)*X])
					}
				}
			}
			compare(t, "StoreKV, "+c.name, read(t, cache), want, 0)
		}
	})
	t.Run("CopyKV", func(t *testing.T) {
		const X = 3
		src, dst := h.rand(2*5*X, -1, 1), h.rand(3*7*X, -1, 1)
		tdst := tensor(dst, 3, 7, X)
		b.CopyKV(tdst, 2, tensor(src, 2, 5, X), 1, 4) // positions [0, 4) of sequence 1 into sequence 2
		want := slices.Clone(dst)
		copy(want[2*7*X:], src[5*X:(5+4)*X])
		compare(t, "CopyKV", read(t, tdst), want, 0)
	})
	t.Run("Advance", func(t *testing.T) {
		// The positions are seen through StoreKV: [3 0 5] moved on by 2
		// then 1 store at 6, 3, and 8, past a capacity of 8 (dropped).
		pos := ids(3, 0, 5)
		b.Advance(pos, 2)
		b.Advance(pos, 1)
		cache := tensor(make([]float32, 3*8), 3, 8, 1)
		b.StoreKV(cache, tensor([]float32{1, 2, 3}, 3, 1, 1), 0, pos)
		want := make([]float32, 3*8)
		want[6], want[8+3] = 1, 2
		compare(t, "Advance", read(t, cache), want, 0)
	})
	t.Run("Attend", func(t *testing.T) {
		for _, c := range []struct {
			name  string
			pos   int
			start []int32
		}{
			{"one position", 3, nil},
			// Sequence 0 at 4 (its first query still sees nothing past
			// its padding), sequence 1 at 1; then sequence 1 past the
			// cache's last key, which its queries see up to.
			{"per sequence", 1, []int32{3, 0}},
			{"past the capacity", 0, []int32{3, 7}},
		} {
			t.Run(c.name, func(t *testing.T) { attendCase(t, h, c.pos, c.start, read, tensor, ids, at) })
		}
	})
	acts := map[model.Activation]func(float64) float64{
		model.SiLU:     func(x float64) float64 { return x / (1 + math.Exp(-x)) },
		model.GELU:     func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) },
		model.GELUTanh: func(x float64) float64 { return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))) },
	}
	t.Run("GLU", func(t *testing.T) {
		T, I := 5, 7
		g, u := h.rand(T*I, -3, 3), h.rand(T*I, -1, 1)
		fused := make([]float32, 0, 2*T*I)
		for r := range T {
			fused = append(append(fused, g[r*I:(r+1)*I]...), u[r*I:(r+1)*I]...)
		}
		for a, f := range acts {
			want := make([]float32, T*I)
			for i := range want {
				want[i] = float32(f(1.3*float64(g[i])) * float64(u[i]))
			}
			out := b.Alloc(model.F32, T, I)
			b.GLU(out, tensor(g, T, I), tensor(u, T, I), a, 1.3)
			compare(t, "GLU "+a.String(), read(t, out), want, 1e-5)
			b.GLU(out, tensor(fused, T, 2*I), nil, a, 1.3)
			compare(t, "GLU fused "+a.String(), read(t, out), want, 1e-5)
		}
	})
	t.Run("MoE", func(t *testing.T) {
		T, D, E, I := 6, 7, 5, 3
		x := h.rand(T*D, -1, 1)
		weight := func(name string, shape ...int) (model.Tensor, []float32) {
			data := h.rand(size(shape), -1, 1)
			w, err := b.Weight(SpecOf(name, loader.F32, shape, data, 37))
			if err != nil {
				t.Fatalf("weight %s: %v", name, err)
			}
			return w, data
		}
		r, rw := weight("router.weight", E, D)
		gu, gw := weight("experts.gate_up_proj", E, 2*I, D)
		dn, dw := weight("experts.down_proj", E, D, I)
		for _, k := range []int{2, E} {
			out := b.Alloc(model.F32, T, D)
			b.MoE(out, tensor(x, T, D), r, gu, dn, model.MoEArgs{TopK: k, Act: model.SiLU})
			want := make([]float32, T*D)
			for tt := range T {
				xr := x[tt*D : (tt+1)*D]
				logit := make([]float64, E)
				order := make([]int, E)
				for e := range E {
					for d := range D {
						logit[e] += float64(xr[d]) * float64(rw[e*D+d])
					}
					order[e] = e
				}
				sort.SliceStable(order, func(i, j int) bool { return logit[order[i]] > logit[order[j]] })
				var z float64
				for _, e := range order[:k] {
					z += math.Exp(logit[e])
				}
				for _, e := range order[:k] {
					g := make([]float64, I)
					for i := range I {
						var a, c float64
						for d := range D {
							a += float64(xr[d]) * float64(gw[(e*2*I+i)*D+d])
							c += float64(xr[d]) * float64(gw[(e*2*I+I+i)*D+d])
						}
						g[i] = acts[model.SiLU](a) * c
					}
					for d := range D {
						var s float64
						for i := range I {
							s += g[i] * float64(dw[(e*D+d)*I+i])
						}
						want[tt*D+d] += float32(math.Exp(logit[e]) / z * s)
					}
				}
			}
			compare(t, "MoE", read(t, out), want, 1e-5)
		}
	})
}

// attendCase checks Attend for queries at positions pos + start[b] + l
// against the loop written from its doc comment, and decoding one query
// at a time against the rows of the call of all L.
func attendCase(t *testing.T, h *opsHarness, pos int, start []int32,
	read func(*testing.T, model.Tensor) []float32, tensor func([]float32, ...int) model.Tensor,
	ids func(...int32) model.Tensor, at func([]int32, int) int) {
	b := h.b.(model.HybridBackend)
	B, L, Cap, Hq, Hkv, Dh := 2, 4, 9, 6, 2, 5
	q, k, v := h.rand(B*L*Hq*Dh, -2, 2), h.rand(B*Cap*Hkv*Dh, -2, 2), h.rand(B*Cap*Hkv*Dh, -1, 1)
	mask := make([]float32, B*Cap)
	for i := range mask {
		mask[i] = 1
	}
	mask[0], mask[1], mask[2], mask[3], mask[4] = 0, 0, 0, 0, 0 // row 0: five padded positions, so its first query sees nothing
	a := model.AttnArgs{Heads: Hq, KVHeads: Hkv, HeadDim: Dh, Pos: pos, Start: ids(start...), Scale: 0.45}
	tq, tk, tv, tm := tensor(q, B, L, Hq*Dh), tensor(k, B, Cap, Hkv*Dh), tensor(v, B, Cap, Hkv*Dh), tensor(mask, B, Cap)
	out := b.Alloc(model.F32, B, L, Hq*Dh)
	b.Attend(out, tq, tk, tv, tm, a)
	want := make([]float32, B*L*Hq*Dh)
	for bi := range B {
		for l := range L {
			last := min(pos+at(start, bi)+l, Cap-1)
			for hh := range Hq {
				kh := hh / (Hq / Hkv)
				qr := q[((bi*L+l)*Hq+hh)*Dh:][:Dh]
				var w []float64
				var js []int
				for j := 0; j <= last; j++ {
					if mask[bi*Cap+j] == 0 {
						continue
					}
					var s float64
					for d := range Dh {
						s += float64(qr[d]) * float64(k[((bi*Cap+j)*Hkv+kh)*Dh+d])
					}
					w, js = append(w, s*0.45), append(js, j)
				}
				if len(w) == 0 {
					continue // zeros
				}
				m := math.Inf(-1)
				for _, s := range w {
					m = max(m, s)
				}
				var z float64
				for i := range w {
					w[i] = math.Exp(w[i] - m)
					z += w[i]
				}
				for d := range Dh {
					var s float64
					for i, j := range js {
						s += w[i] * float64(v[((bi*Cap+j)*Hkv+kh)*Dh+d])
					}
					want[((bi*L+l)*Hq+hh)*Dh+d] = float32(s / z)
				}
			}
		}
	}
	got := read(t, out)
	compare(t, "Attend", got, want, 1e-5)
	// One query at a time, as decoding does, gives the call's rows.
	X := Hq * Dh
	for l := range L {
		ql := make([]float32, 0, B*X)
		for bi := range B {
			ql = append(ql, q[(bi*L+l)*X:(bi*L+l+1)*X]...)
		}
		one := b.Alloc(model.F32, B, 1, X)
		a1 := a
		a1.Pos = pos + l
		b.Attend(one, tensor(ql, B, 1, X), tk, tv, tm, a1)
		row := read(t, one)
		for bi := range B {
			compare(t, "Attend, one query at a time", row[bi*X:(bi+1)*X], got[(bi*L+l)*X:(bi*L+l+1)*X], 1e-6)
		}
	}
}
