package wgsl

import (
	"testing"

	"github.com/mamba2web/mamba2/model"
)

// loadTiny loads mamba2-go-tiny for a benchmark.
func loadTiny(b *testing.B, opts Options) (*Backend, *model.Model) {
	be := open(b, opts)
	m, err := model.Load(tiny(), be, model.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return be, m
}

// BenchmarkDecode measures greedy decoding of mamba2-go-tiny with the
// device sampler: one op is one token (one submission, one id read back).
func BenchmarkDecode(b *testing.B) {
	be, m := loadTiny(b, Options{})
	st := m.NewState(1)
	idT := be.Alloc(model.I32, 1)
	out, err := st.Forward([]int32{1, 2, 3, 4}, nil)
	if err != nil {
		b.Fatal(err)
	}
	be.Sample(idT, out, nil, model.Sampling{}, nil)
	ids, err := be.ReadIDs(idT)
	if err != nil {
		b.Fatal(err)
	}
	id := ids[0]
	b.ResetTimer()
	for range b.N {
		out, err := st.Forward([]int32{id}, nil)
		if err != nil {
			b.Fatal(err)
		}
		be.Sample(idT, out, nil, model.Sampling{}, nil)
		ids, err := be.ReadIDs(idT)
		if err != nil {
			b.Fatal(err)
		}
		id = ids[0]
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

func benchPrefill(b *testing.B, opts Options, L int) {
	be, m := loadTiny(b, opts)
	prompt := make([]int32, L)
	for i := range prompt {
		prompt[i] = int32(i*37%4000 + 5)
	}
	st := m.NewState(1)
	idT := be.Alloc(model.I32, 1)
	b.ResetTimer()
	for range b.N {
		st.Reset()
		out, err := st.Forward(prompt, nil)
		if err != nil {
			b.Fatal(err)
		}
		be.Sample(idT, out, nil, model.Sampling{}, nil)
		if _, err := be.ReadIDs(idT); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*L)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkPrefill512 measures a 512-token prompt through the chunked SSD.
func BenchmarkPrefill512(b *testing.B) { benchPrefill(b, Options{}, 512) }

// BenchmarkPrefill512Sequential is the same through the recurrence kernel.
func BenchmarkPrefill512Sequential(b *testing.B) { benchPrefill(b, Options{SequentialScan: true}, 512) }
