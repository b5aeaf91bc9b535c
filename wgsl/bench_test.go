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

// BenchmarkRecordToken measures the host's share of one decode step of
// mamba2-go-tiny: recording its dispatches and submitting them. The queue
// is drained outside the timer, so the GPU's time is not in it. Under
// js/wasm this is where calls across syscall/js show (issue 12 item 5);
// ns/dispatch compares engines and builds.
func BenchmarkRecordToken(b *testing.B) {
	be, m := loadTiny(b, Options{})
	st := m.NewState(1)
	idT := be.Alloc(model.I32, 1)
	step := func() {
		out, err := st.Forward([]int32{7}, nil)
		if err != nil {
			b.Fatal(err)
		}
		be.Sample(idT, out, nil, model.Sampling{}, nil)
		be.Flush()
	}
	step() // pipelines and bind groups are made here, not timed
	if err := be.waitIdle(); err != nil {
		b.Fatal(err)
	}
	_, d0 := be.Counts()
	b.ResetTimer()
	for range b.N {
		step()
		b.StopTimer()
		if err := be.waitIdle(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	_, d1 := be.Counts()
	per := float64(d1-d0) / float64(b.N)
	b.ReportMetric(per, "dispatches/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(d1-d0), "ns/dispatch")
}

// BenchmarkRecordDispatch measures what recording one dispatch costs the
// host: a zero-fill of 64 floats recorded b.N times, submitted 256 at a
// time, with the GPU's time left out. In js/wasm this includes the calls
// into JS (replay_js.go batches them per pass).
func BenchmarkRecordDispatch(b *testing.B) { benchRecordDispatch(b, open(b, Options{})) }

func benchRecordDispatch(b *testing.B, be *Backend) {
	z := be.Alloc(model.F32, 64)
	be.Zero(z)
	be.Flush()
	if err := be.waitIdle(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		be.Zero(z)
		if i%256 == 255 || i == b.N-1 {
			be.Flush()
			b.StopTimer()
			if err := be.waitIdle(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
}

// BenchmarkSample times the device sampler over one row of a 50,280-token
// vocabulary (130m's): greedy, and with a temperature alone and with
// top-k and top-p, whose bisections run over the candidates.
func BenchmarkSample(b *testing.B) {
	be := open(b, Options{})
	const V = 50280
	logits := make([]float32, V)
	x := uint32(12345)
	for i := range logits {
		x = x*1664525 + 1013904223
		logits[i] = float32(x>>8)/float32(1<<24)*12 - 6 // uniform in [-6, 6)
	}
	lt, ids := be.Alloc(model.F32, 1, V), be.Alloc(model.I32, 1)
	be.Write(lt, logits)
	for _, c := range []struct {
		name string
		s    model.Sampling
	}{
		{"greedy", model.Sampling{}},
		{"temperature", model.Sampling{Temperature: 0.8}},
		{"topk40-topp0.9", model.Sampling{Temperature: 0.8, TopK: 40, TopP: 0.9}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := range b.N {
				be.Sample(ids, lt, nil, c.s, []float32{float32(i%97) / 97})
				if _, err := be.ReadIDs(ids); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSubmit measures what one submission costs the host (a
// one-dispatch submission, its error check included; the GPU's time left
// out): the prompt path submits once per layer.
func BenchmarkSubmit(b *testing.B) {
	be := open(b, Options{})
	z := be.Alloc(model.F32, 64)
	be.Zero(z)
	if err := be.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		be.Zero(z)
		be.Flush()
		if i%32 == 31 || i == b.N-1 {
			b.StopTimer()
			if err := be.waitIdle(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := be.checkSubmitted(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
