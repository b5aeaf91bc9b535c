package model_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// relRMS is the RMS error of got against want, over want's RMS.
func relRMS(got, want []float32) float64 {
	var e, n float64
	for i := range want {
		d := float64(got[i] - want[i])
		e += d * d
		n += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(e / n)
}

func gaussRow(rng *rand.Rand, k int) []float32 {
	w := make([]float32, k)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.02)
	}
	return w
}

// TestQuantizeInt8 checks the round trip of Gaussian rows (the error of a
// step of max|w|/127 is about 0.6 % of the RMS), that every value is
// within half a step, and the degenerate rows.
func TestQuantizeInt8(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, k := range []int{1, 7, 384, 4096} {
		w := gaussRow(rng, k)
		q := make([]byte, k)
		s := model.QuantizeInt8(w, q)
		got := make([]float32, k)
		model.DequantizeInt8(got, q, s)
		step := loader.HalfToFloat32(s)
		for i := range w {
			if d := math.Abs(float64(got[i] - w[i])); d > float64(step)/2*1.001 {
				t.Fatalf("k %d: element %d: %v → %v, more than half a step %v", k, i, w[i], got[i], step)
			}
		}
		if e := relRMS(got, w); k > 100 && e > 0.015 {
			t.Errorf("k %d: relative RMS error %.4f > 1.5%%", k, e)
		}
	}
	for name, w := range map[string][]float32{
		"zeros":    make([]float32, 8),
		"tiny":     {1e-9, -1e-9, 0},
		"constant": {0.5, 0.5, 0.5},
		"huge":     {1e10, -3},
	} {
		q := make([]byte, len(w))
		s := model.QuantizeInt8(w, q)
		got := make([]float32, len(w))
		model.DequantizeInt8(got, q, s)
		for i, v := range got {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Errorf("%s: element %d dequantizes to %v", name, i, v)
			}
			if name == "constant" && math.Abs(float64(v-w[i])) > 1e-3 {
				t.Errorf("%s: element %d: %v → %v", name, i, w[i], v)
			}
		}
	}
}

// TestQuantizeInt4 checks int4 groups on Gaussian rows: the round-trip
// error is near round-to-nearest's 10 % of the RMS, never worse than
// round-to-nearest in squared error (the search starts from it), and
// ragged last groups, constant groups and odd lengths pack right.
func TestQuantizeInt4(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct{ k, gs int }{{384, 128}, {4096, 128}, {70, 32}, {17, 32}, {7, 2}} {
		w := gaussRow(rng, c.k)
		g := model.Groups(c.k, c.gs)
		run := func(search int) ([]float32, float64) {
			q := make([]byte, (c.k+1)/2)
			s, z := make([]uint16, g), make([]uint16, g)
			model.QuantizeInt4(w, c.gs, q, s, z, search)
			got := make([]float32, c.k)
			model.DequantizeInt4(got, q, c.gs, s, z)
			return got, relRMS(got, w)
		}
		_, rtn := run(0)
		got, best := run(model.Int4Search)
		if best > rtn*1.0001 {
			t.Errorf("k %d g %d: search error %.4f worse than round-to-nearest %.4f", c.k, c.gs, best, rtn)
		}
		if c.k >= 128 && best > 0.11 {
			t.Errorf("k %d g %d: relative RMS error %.4f > 11%%", c.k, c.gs, best)
		}
		if c.k >= 128 {
			t.Logf("k %d g %d: relative RMS error %.4f (round to nearest %.4f)", c.k, c.gs, best, rtn)
		}
		for i := range got {
			if math.IsNaN(float64(got[i])) {
				t.Fatalf("k %d: element %d is NaN", c.k, i)
			}
		}
	}
	w := []float32{0.25, 0.25, 0.25, 0.25, -1, 1}
	q := make([]byte, 3)
	s, z := make([]uint16, 3), make([]uint16, 3)
	model.QuantizeInt4(w, 2, q, s, z, model.Int4Search)
	got := make([]float32, len(w))
	model.DequantizeInt4(got, q, 2, s, z)
	for i := range w {
		if math.Abs(float64(got[i]-w[i])) > 1e-3 {
			t.Errorf("constant and two-value groups: element %d: %v → %v", i, w[i], got[i])
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, c := range []struct {
		in   string
		want model.Format
		ok   bool
	}{{"int4", model.FormatInt4, true}, {"INT8", model.FormatInt8, true}, {"bf16", model.FormatBF16, true}, {"q4", 0, false}, {"", 0, false}} {
		f, err := model.ParseFormat(c.in)
		if (err == nil) != c.ok || (c.ok && f != c.want) {
			t.Errorf("ParseFormat(%q) = %v, %v", c.in, f, err)
		}
	}
}

// BenchmarkQuantizeInt4 times a 4096-wide row (32 groups of 128): a load
// with --quantize int4 spends this per row of every large matrix.
func BenchmarkQuantizeInt4(b *testing.B) {
	w := gaussRow(rand.New(rand.NewPCG(5, 6)), 4096)
	q := make([]byte, 2048)
	s, z := make([]uint16, 32), make([]uint16, 32)
	b.SetBytes(4 * 4096)
	for b.Loop() {
		model.QuantizeInt4(w, 128, q, s, z, model.Int4Search)
	}
}
