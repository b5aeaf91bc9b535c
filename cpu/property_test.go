package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

func randomFill(b model.Backend, t model.Tensor, rng *rand.Rand, scale float64) []float32 {
	n := 1
	for _, d := range t.Shape() {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	b.Write(t, v)
	return v
}

func maxDiff(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

// The chunked SSD form must equal the plain recurrence for any chunk size
// and any length, including lengths that are not multiples of the chunk,
// and starting from a nonzero state.
func TestChunkedEqualsRecurrence(t *testing.T) {
	c := model.Config{Hidden: 24, Expand: 2, Heads: 6, HeadDim: 8, Groups: 3, State: 5, ConvKernel: 4,
		TimeStepMax: math.Inf(1), VocabSize: 2, Layers: 1, Eps: 1e-5}
	b := cpu.New()
	rng := rand.New(rand.NewPCG(7, 7))
	const B = 2
	for _, L := range []int{1, 5, 16, 37} {
		for _, q := range []int{1, 3, 8, 16, 64} {
			c.ChunkSize = q
			xbc := b.Alloc(model.F32, B, L, c.ConvDim())
			proj := b.Alloc(model.F32, B, L, c.ProjDim())
			randomFill(b, xbc, rng, 1)
			randomFill(b, proj, rng, 1)
			dtBias, aLog, d := b.Alloc(model.F32, c.Heads), b.Alloc(model.F32, c.Heads), b.Alloc(model.F32, c.Heads)
			randomFill(b, dtBias, rng, 1)
			randomFill(b, aLog, rng, 1)
			randomFill(b, d, rng, 1)
			s0 := make([]float32, B*c.Heads*c.HeadDim*c.State)
			for i := range s0 {
				s0[i] = float32(rng.NormFloat64())
			}

			// chunked, all at once
			yc, sc := b.Alloc(model.F32, B, L, c.Inner()), b.Alloc(model.F32, B, c.Heads, c.HeadDim, c.State)
			b.Write(sc, s0)
			b.SSM(yc, xbc, proj, sc, dtBias, aLog, d, model.SSMArgs{Config: c, Chunked: true})

			// recurrence, one token at a time
			xv, _ := b.Read(xbc)
			pv, _ := b.Read(proj)
			sr := b.Alloc(model.F32, B, c.Heads, c.HeadDim, c.State)
			b.Write(sr, s0)
			var yr []float32
			yAll := make([]float32, B*L*c.Inner())
			for tok := range L {
				x1, p1 := b.Alloc(model.F32, B, 1, c.ConvDim()), b.Alloc(model.F32, B, 1, c.ProjDim())
				var xs, ps []float32
				for bi := range B {
					xs = append(xs, xv[(bi*L+tok)*c.ConvDim():(bi*L+tok+1)*c.ConvDim()]...)
					ps = append(ps, pv[(bi*L+tok)*c.ProjDim():(bi*L+tok+1)*c.ProjDim()]...)
				}
				b.Write(x1, xs)
				b.Write(p1, ps)
				y1 := b.Alloc(model.F32, B, 1, c.Inner())
				b.SSM(y1, x1, p1, sr, dtBias, aLog, d, model.SSMArgs{Config: c, Chunked: false})
				yr, _ = b.Read(y1)
				for bi := range B {
					copy(yAll[(bi*L+tok)*c.Inner():], yr[bi*c.Inner():(bi+1)*c.Inner()])
				}
			}
			ycv, _ := b.Read(yc)
			scv, _ := b.Read(sc)
			srv, _ := b.Read(sr)
			if d := maxDiff(ycv, yAll); d > 1e-5 {
				t.Errorf("L=%d Q=%d: y differs by %g", L, q, d)
			}
			if d := maxDiff(scv, srv); d > 1e-5 {
				t.Errorf("L=%d Q=%d: final state differs by %g", L, q, d)
			}
		}
	}
}

// Prefilling a prefix and then decoding token by token must give the logits
// of one long prefill, for a model with several groups and odd sizes.
func TestPrefillThenDecode(t *testing.T) {
	c := model.Config{VocabSize: 37, Hidden: 20, Layers: 2, State: 6, Expand: 2, Heads: 5, HeadDim: 8,
		Groups: 5, ConvKernel: 4, ChunkSize: 4, ConvBias: true, UseBias: true, Eps: 1e-5, TimeStepMax: math.Inf(1)}
	m, err := model.NewRandom(c, cpu.New(), loader.F32, 3)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int32{1, 5, 9, 2, 33, 7, 7, 0, 12, 19, 30, 4, 4}
	want, _ := m.NewState(1).Logits(ids, nil)
	for _, prefix := range []int{1, 3, 4, 9} {
		st := m.NewState(1)
		out, _ := st.Forward(ids[:prefix], nil)
		got, _ := m.Backend.Read(out)
		V := c.VocabSize
		if d := maxDiff(got, want[(prefix-1)*V:prefix*V]); d > 1e-5 {
			t.Errorf("prefix %d: last logits differ by %g", prefix, d)
		}
		for i := prefix; i < len(ids); i++ {
			out, _ := st.Forward(ids[i:i+1], nil)
			got, _ := m.Backend.Read(out)
			if d := maxDiff(got, want[i*V:(i+1)*V]); d > 1e-5 {
				t.Errorf("prefix %d, decoded position %d: logits differ by %g", prefix, i, d)
			}
		}
	}
	// A long prompt split into pieces (PrefillChunk) gives the same last logits.
	m.PrefillChunk = 3
	out, _ := m.NewState(1).Forward(ids, nil)
	got, _ := m.Backend.Read(out)
	if d := maxDiff(got, want[len(want)-c.VocabSize:]); d > 1e-5 {
		t.Errorf("prefill in pieces: last logits differ by %g", d)
	}
}
