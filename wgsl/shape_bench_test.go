package wgsl

import (
	"os"
	"strconv"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// The shape benchmarks time a released size with random weights the way
// `mamba2 bench` does (decode through State.Decode, ids on the device with
// steps in flight), but from a test binary, so that the same code can be
// timed natively and compiled to js/wasm under Node + Dawn on one GPU
// (issue 12 item 5). They run only when asked:
//
//	MAMBA2_BENCH_SHAPE  a model.Shapes name (130m, 2.7b, ...); unset skips
//	MAMBA2_BENCH_DTYPE  f32 (default), f16 or bf16
//	MAMBA2_BENCH_BATCH  sequences decoded together (default 1)
//	MAMBA2_BENCH_PROMPT prompt length for BenchmarkShapePrefill (default 512)
func benchShape(b *testing.B) (*Backend, *model.Model) {
	name := os.Getenv("MAMBA2_BENCH_SHAPE")
	if name == "" {
		b.Skip("MAMBA2_BENCH_SHAPE is not set")
	}
	c, ok := model.Shapes[name]
	if !ok {
		b.Fatalf("MAMBA2_BENCH_SHAPE=%q is not a known shape", name)
	}
	dt := loader.F32
	switch v := os.Getenv("MAMBA2_BENCH_DTYPE"); v {
	case "", "f32":
	case "f16":
		dt = loader.F16
	case "bf16":
		dt = loader.BF16
	default:
		b.Fatalf("MAMBA2_BENCH_DTYPE=%q: want f32, f16 or bf16", v)
	}
	be := open(b, Options{})
	m, err := model.NewRandom(c, be, dt, 1)
	if err != nil {
		b.Fatal(err)
	}
	return be, m
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkShapeDecode: one op is one decoding step of every sequence.
func BenchmarkShapeDecode(b *testing.B) {
	_, m := benchShape(b)
	batch := envInt(b, "MAMBA2_BENCH_BATCH", 1)
	st := m.NewState(batch)
	defer st.Close()
	prompt := make([]int32, batch*4)
	for i := range prompt {
		prompt[i] = int32(i*37%1000 + 5)
	}
	first := make([]int32, batch)
	if _, err := st.Forward(prompt[:batch*4], nil); err != nil {
		b.Fatal(err)
	}
	// Warm the pipelines and the run-ahead buffers before timing.
	if _, err := st.Decode(first, 16, model.Sampling{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if _, err := st.Decode(first, b.N, model.Sampling{}); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkShapePrefill: one op is one prompt of MAMBA2_BENCH_PROMPT tokens
// and its first greedy id read back.
func BenchmarkShapePrefill(b *testing.B) {
	be, m := benchShape(b)
	L := envInt(b, "MAMBA2_BENCH_PROMPT", 512)
	prompt := make([]int32, L)
	for i := range prompt {
		prompt[i] = int32(i*37%1000 + 5)
	}
	st := m.NewState(1)
	defer st.Close()
	idT := be.Alloc(model.I32, 1)
	defer be.Free(idT)
	run := func() {
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
	run()
	b.ResetTimer()
	for range b.N {
		run()
	}
	b.ReportMetric(float64(b.N*L)/b.Elapsed().Seconds(), "tokens/s")
}
