package cpu

import (
	"math"

	"github.com/mamba2web/mamba2/model"
)

// head is one (sequence, head) slice of the SSM inputs, as float64 for the
// arithmetic. x is [L][P], B and C are [L][N], dt is [L], S is [P][N].
type head struct {
	L, P, N int
	x, B, C []float64
	dt      []float64
	a, d    float64 // A = -exp(A_log) and the D skip
	S       []float64
	y       []float64 // [L][P] output
}

// SSM gathers each (sequence, head) from the packed tensors, runs the chunked
// form (prompts) or the recurrence (single decoded tokens), and scatters y and
// the final state back.
func (b *Backend) SSM(y, xbc, proj, state, dtBias, aLog, d model.Tensor, args model.SSMArgs) {
	c := args.Config
	yv, xv, pv, sv := f(y), f(xbc), f(proj), f(state)
	db, al, dd := f(dtBias), f(aLog), f(d)
	B, L := xbc.Shape()[0], xbc.Shape()[1]
	H, P, N, G, I := c.Heads, c.HeadDim, c.State, c.Groups, c.Inner()
	CD, PD := c.ConvDim(), c.ProjDim()
	dtOff := I + CD
	b.parallel(B*H, func(lo, hi int) {
		hd := head{L: L, P: P, N: N,
			x: make([]float64, L*P), B: make([]float64, L*N), C: make([]float64, L*N),
			dt: make([]float64, L), S: make([]float64, P*N), y: make([]float64, L*P)}
		for bh := lo; bh < hi; bh++ {
			bi, h := bh/H, bh%H
			g := h / (H / G)
			for t := range L {
				row := xv[(bi*L+t)*CD:]
				for p := range P {
					hd.x[t*P+p] = float64(row[h*P+p])
				}
				for n := range N {
					hd.B[t*N+n] = float64(row[I+g*N+n])
					hd.C[t*N+n] = float64(row[I+G*N+g*N+n])
				}
				v := softplus(float64(pv[(bi*L+t)*PD+dtOff+h]) + float64(db[h]))
				if args.Chunked {
					v = min(max(v, c.TimeStepMin), c.TimeStepMax)
				}
				hd.dt[t] = v
			}
			st := sv[(bi*H+h)*P*N : (bi*H+h+1)*P*N]
			for i, v := range st {
				hd.S[i] = float64(v)
			}
			hd.a = -math.Exp(float64(al[h]))
			hd.d = float64(dd[h])
			if args.Chunked {
				hd.chunked(c.ChunkSize)
			} else {
				hd.recurrent()
			}
			for t := range L {
				for p := range P {
					v := float32(hd.y[t*P+p])
					if args.Gate {
						v *= silu(pv[(bi*L+t)*PD+h*P+p])
					}
					yv[(bi*L+t)*I+h*P+p] = v
				}
			}
			for i, v := range hd.S {
				st[i] = float32(v)
			}
		}
	})
}

// recurrent is SPEC §2.1 step by step:
//
//	S_t = exp(dt_t·A)·S_{t-1} + dt_t·x_t ⊗ B_t;  y_t = S_t·C_t + D·x_t
func (h *head) recurrent() {
	P, N := h.P, h.N
	for t := range h.L {
		decay := math.Exp(h.dt[t] * h.a)
		for p := range P {
			xp := h.dt[t] * h.x[t*P+p]
			var y float64
			for n := range N {
				s := decay*h.S[p*N+n] + xp*h.B[t*N+n]
				h.S[p*N+n] = s
				y += s * h.C[t*N+n]
			}
			h.y[t*P+p] = y + h.d*h.x[t*P+p]
		}
	}
}

// chunked is the SSD form of SPEC §2.1 over chunks of q tokens: within a
// chunk a causal decaying attention-like product, across chunks the state.
func (h *head) chunked(q int) {
	P, N := h.P, h.N
	cum := make([]float64, q)
	for c0 := 0; c0 < h.L; c0 += q {
		n := min(q, h.L-c0)
		// 1. the running log-decay Σ dt·A within the chunk
		acc := 0.0
		for i := range n {
			acc += h.dt[c0+i] * h.a
			cum[i] = acc
		}
		for i := range n {
			ti := c0 + i
			Ci := h.C[ti*N : (ti+1)*N]
			// 5. contribution of the incoming state: exp(cum_i)·(S·C_i)
			out := h.y[ti*P : (ti+1)*P]
			ei := math.Exp(cum[i])
			for p := range P {
				out[p] = ei*dotf(h.S[p*N:(p+1)*N], Ci) + h.d*h.x[ti*P+p]
			}
			// 2. y_diag = Σ_{j≤i} exp(cum_i − cum_j)·(C_i·B_j)·dt_j·x_j
			for j := 0; j <= i; j++ {
				tj := c0 + j
				w := math.Exp(cum[i]-cum[j]) * dotf(Ci, h.B[tj*N:(tj+1)*N]) * h.dt[tj]
				for p := range P {
					out[p] += w * h.x[tj*P+p]
				}
			}
		}
		// 3–4. carry the state to the chunk end: decay it, add the chunk's tokens
		last := cum[n-1]
		el := math.Exp(last)
		for i := range h.S {
			h.S[i] *= el
		}
		for j := range n {
			tj := c0 + j
			w := math.Exp(last-cum[j]) * h.dt[tj]
			for p := range P {
				xp := w * h.x[tj*P+p]
				for k := range N {
					h.S[p*N+k] += xp * h.B[tj*N+k]
				}
			}
		}
	}
}

func dotf(a, b []float64) float64 {
	var s float64
	for i, v := range a {
		s += v * b[i]
	}
	return s
}
