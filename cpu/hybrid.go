package cpu

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/mamba2web/mamba2/model"
)

// The operations of model.HybridBackend (hybrid architectures: attention,
// gated MLPs, experts, multipliers), each the plain loop its doc comment in
// model/hybrid.go states. Sums that decide a softmax or a norm run in
// float64, as the rest of this backend.

// Scale: x *= s.
func (*Backend) Scale(x model.Tensor, s float32) {
	xv := f(x)
	for i := range xv {
		xv[i] *= s
	}
}

// AddScaled: out += s·x.
func (*Backend) AddScaled(out, x model.Tensor, s float32) {
	o, xv := f(out), f(x)
	for i, v := range xv {
		o[i] += s * v
	}
}

// MulCols: x[t, j] *= v[j].
func (*Backend) MulCols(x, v model.Tensor) {
	xv, vv := f(x), f(v)
	X := len(vv)
	for i := range xv {
		xv[i] *= vv[i%X]
	}
}

// Concat: out[t] = a[t] ‖ b[t].
func (*Backend) Concat(out, a, b model.Tensor) {
	o, av, bv := f(out), f(a), f(b)
	X, Y := a.Shape()[len(a.Shape())-1], b.Shape()[len(b.Shape())-1]
	for t := range len(av) / X {
		copy(o[t*(X+Y):], av[t*X:(t+1)*X])
		copy(o[t*(X+Y)+X:], bv[t*Y:(t+1)*Y])
	}
}

// Rotary rotates the first a.Dim channels of each head by rotate_half.
// The angles are computed as transformers computes them, in float32
// (inv_freq = 1 / theta^(2i/Dim), freq = pos·inv_freq, then cos and sin),
// whatever the model's dtype.
func (*Backend) Rotary(x model.Tensor, a model.RotaryArgs) {
	xv, start := f(x), ids(a.Start)
	sh := x.Shape()
	B, L := sh[0], sh[1]
	half := a.Dim / 2
	cos, sin := make([]float32, half), make([]float32, half)
	for bi := range B {
		for l := range L {
			pos := float32(a.Pos + at(start, bi) + l)
			for i := range half {
				inv := float32(1 / float64(float32(math.Pow(a.Theta, float64(float32(2*i)/float32(a.Dim))))))
				ang := float64(pos * inv)
				cos[i], sin[i] = float32(math.Cos(ang)), float32(math.Sin(ang))
			}
			row := xv[(bi*L+l)*a.Heads*a.HeadDim:]
			for h := range a.Heads {
				hd := row[h*a.HeadDim : (h+1)*a.HeadDim]
				for i := range half {
					x1, x2 := hd[i], hd[i+half]
					hd[i] = x1*cos[i] - x2*sin[i]
					hd[i+half] = x2*cos[i] + x1*sin[i]
				}
			}
		}
	}
}

// ids is an I32 tensor's elements (nil for nil).
func ids(t model.Tensor) []int32 {
	if t == nil {
		return nil
	}
	return t.(*tensor).ids
}

// at is start[b], 0 without start.
func at(start []int32, b int) int {
	if start == nil {
		return 0
	}
	return int(start[b])
}

// StoreKV: cache[b, at+start[b]+i, :] = x[b, i, :], positions past the
// capacity dropped.
func (*Backend) StoreKV(cache, x model.Tensor, at0 int, start model.Tensor) {
	cv, xv, sv := f(cache), f(x), ids(start)
	cs, xs := cache.Shape(), x.Shape()
	B, Cap, L, X := cs[0], cs[1], xs[1], xs[2]
	for b := range B {
		p := at0 + at(sv, b)
		n := max(0, min(L, Cap-p))
		if p < 0 {
			panic(fmt.Sprintf("cpu: store kv: sequence %d at position %d", b, p))
		}
		copy(cv[(b*Cap+p)*X:(b*Cap+p+n)*X], xv[b*L*X:(b*L+n)*X])
	}
}

// CopyKV: dst[dstRow, :n] = src[srcRow, :n].
func (*Backend) CopyKV(dst model.Tensor, dstRow int, src model.Tensor, srcRow, n int) {
	dv, sv := f(dst), f(src)
	ds, ss := dst.Shape(), src.Shape()
	X := ds[2]
	if ss[2] != X || n > ds[1] || n > ss[1] {
		panic(fmt.Sprintf("cpu: copy kv: %d positions of %v into %v", n, ss, ds))
	}
	copy(dv[dstRow*ds[1]*X:(dstRow*ds[1]+n)*X], sv[srcRow*ss[1]*X:(srcRow*ss[1]+n)*X])
}

// Advance: pos[b] += n.
func (*Backend) Advance(pos model.Tensor, n int) {
	p := ids(pos)
	for i := range p {
		p[i] += int32(n)
	}
}

// Attend is causal grouped-query attention with a key mask: per (sequence,
// query, head), softmax over the visible keys in float64, then the
// weighted sum of the values.
func (b *Backend) Attend(out, q, k, v, keyMask model.Tensor, a model.AttnArgs) {
	o, qv, kv, vv, mk, start := f(out), f(q), f(k), f(v), f(keyMask), ids(a.Start)
	B, L, Cap := q.Shape()[0], q.Shape()[1], k.Shape()[1]
	Hq, Hkv, Dh := a.Heads, a.KVHeads, a.HeadDim
	rep := Hq / Hkv
	b.parallel(B*L*Hq, func(lo, hi int) {
		w := make([]float64, Cap)
		acc := make([]float64, Dh)
		for i := lo; i < hi; i++ {
			bi, l, h := i/(L*Hq), i/Hq%L, i%Hq
			kh := h / rep
			qr := qv[(bi*L+l)*Hq*Dh+h*Dh:][:Dh]
			last := min(a.Pos+at(start, bi)+l, Cap-1)
			best := math.Inf(-1)
			for j := 0; j <= last; j++ {
				w[j] = math.Inf(-1)
				if mk != nil && mk[bi*Cap+j] == 0 {
					continue
				}
				kr := kv[(bi*Cap+j)*Hkv*Dh+kh*Dh:][:Dh]
				var s float64
				for d, x := range qr {
					s += float64(x) * float64(kr[d])
				}
				w[j] = s * float64(a.Scale)
				best = max(best, w[j])
			}
			dst := o[(bi*L+l)*Hq*Dh+h*Dh:][:Dh]
			if math.IsInf(best, -1) { // nothing visible: a padded position
				clear(dst)
				continue
			}
			clear(acc)
			var z float64
			for j := 0; j <= last; j++ {
				if math.IsInf(w[j], -1) {
					continue
				}
				e := math.Exp(w[j] - best)
				z += e
				vr := vv[(bi*Cap+j)*Hkv*Dh+kh*Dh:][:Dh]
				for d, x := range vr {
					acc[d] += e * float64(x)
				}
			}
			for d := range dst {
				dst[d] = float32(acc[d] / z)
			}
		}
	})
}

// act applies a gated MLP's nonlinearity.
func act(a model.Activation, x float32) float32 {
	switch a {
	case model.GELU:
		return float32(0.5 * float64(x) * (1 + math.Erf(float64(x)/math.Sqrt2)))
	case model.GELUTanh:
		v := float64(x)
		return float32(0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v))))
	}
	return silu(x)
}

// GLU: out[t, i] = act(gateScale·gate[t, i])·up[t, i]; with up nil, gate
// holds [gate | up] per row.
func (*Backend) GLU(out, gate, up model.Tensor, a model.Activation, gateScale float32) {
	o, g, u := f(out), f(gate), f(up)
	I := out.Shape()[len(out.Shape())-1]
	for t := range len(o) / I {
		gr, ur := g[t*I:(t+1)*I], []float32(nil)
		if u != nil {
			ur = u[t*I : (t+1)*I]
		} else {
			gr, ur = g[2*t*I:(2*t+1)*I], g[(2*t+1)*I:(2*t+2)*I]
		}
		for i := range I {
			o[t*I+i] = act(a, gateScale*gr[i]) * ur[i]
		}
	}
}

// MoE routes each row to its TopK experts by router logit (ties to the
// lower index), weights them by the softmax of those TopK logits, and sums
// the experts' gated MLPs.
func (b *Backend) MoE(out, x, router, gateUp, down model.Tensor, a model.MoEArgs) {
	o, xv, rv, gv, dv := f(out), f(x), f(router), f(gateUp), f(down)
	E, D := router.Shape()[0], router.Shape()[1]
	I := down.Shape()[2]
	T := len(xv) / D
	b.parallel(T, func(lo, hi int) {
		logits := make([]float64, E)
		order := make([]int, E)
		gu := make([]float32, 2*I)
		g := make([]float32, I)
		for t := lo; t < hi; t++ {
			xr := xv[t*D : (t+1)*D]
			for e := range E {
				logits[e] = float64(dot(xr, rv[e*D:(e+1)*D]))
				order[e] = e
			}
			slices.SortStableFunc(order, func(i, j int) int { return cmp.Compare(logits[j], logits[i]) })
			top := order[:a.TopK]
			var z float64
			for _, e := range top {
				z += math.Exp(logits[e] - logits[top[0]])
			}
			dst := o[t*D : (t+1)*D]
			clear(dst)
			for _, e := range top {
				wt := float32(math.Exp(logits[e]-logits[top[0]]) / z)
				ge := gv[e*2*I*D:]
				for r := range 2 * I {
					gu[r] = dot(xr, ge[r*D:(r+1)*D])
				}
				for i := range I {
					g[i] = act(a.Act, gu[i]) * gu[I+i]
				}
				de := dv[e*D*I:]
				for d := range D {
					dst[d] += wt * dot(g, de[d*I:(d+1)*I])
				}
			}
		}
	})
}

var _ model.HybridBackend = (*Backend)(nil)
