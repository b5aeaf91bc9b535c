package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// Profiler is implemented by backends that can time their kernels on the
// device (WebGPU with timestamp queries).
type Profiler interface {
	// Profile returns accumulated device time per kernel since the last call.
	Profile() map[string]time.Duration
}

func cmdBench(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("bench")
	var mf modelFlags
	mf.register(fs)
	shape := fs.String("shape", "", "random weights of a released shape: "+shapeNames())
	dtype := fs.String("dtype", "f16", "weight storage for --shape: f32, f16 or bf16")
	lengths := fs.String("prompt-lengths", "128,512,2048", "prefill lengths to time")
	decode := fs.Int("decode-tokens", 64, "decode steps to time")
	reps := fs.Int("reps", 5, "repetitions per prefill length")
	asJSON := fs.Bool("json", false, "print the figures as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	var lens []int
	for _, f := range strings.Split(*lengths, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("--prompt-lengths: %q is not a positive integer", f)
		}
		lens = append(lens, n)
	}
	if *decode <= 0 || *reps <= 0 {
		return fmt.Errorf("--decode-tokens and --reps must be positive")
	}

	var m *model.Model
	name := ""
	if *shape != "" {
		if mf.model != "" {
			return fmt.Errorf("give --model or --shape, not both")
		}
		cfg, ok := model.Shapes[*shape]
		if !ok {
			return fmt.Errorf("--shape %q: want one of %s", *shape, shapeNames())
		}
		dt, err := parseDType(*dtype)
		if err != nil {
			return err
		}
		b, err := openBackend(mf.backend, stderr)
		if err != nil {
			return err
		}
		if m, err = model.NewRandom(cfg, b, dt, 1); err != nil {
			b.Close()
			return err
		}
		name = "random " + *shape + " (" + *dtype + ")"
	} else {
		var err error
		if m, _, err = mf.load(ctx, stderr); err != nil {
			return err
		}
		if name = mf.model; name == "" {
			name = "embedded mamba2-go-tiny"
		}
	}
	defer m.Backend.Close()
	gn, err := model.ParseGatedNorm(mf.gatedNorm)
	if err != nil {
		return err
	}
	m.GatedNorm = gn

	rng := rand.New(rand.NewPCG(1, 2))
	randomIDs := func(n int) []int32 {
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(rng.IntN(m.Config.VocabSize))
		}
		return ids
	}
	prof, _ := m.Backend.(Profiler)
	report := benchReport{Model: name, Backend: m.Backend.Name()}

	for _, L := range lens {
		var times []time.Duration
		for r := range *reps + 1 {
			st := m.NewState(1)
			ids := randomIDs(L)
			start := time.Now()
			out, err := st.Forward(ids, nil, true)
			if err == nil {
				_, err = m.Backend.Read(out)
			}
			if err != nil {
				return err
			}
			if r > 0 { // the first run warms up pipelines and buffers
				times = append(times, time.Since(start))
			}
		}
		med := median(times)
		report.Prefill = append(report.Prefill, prefillFigure{Tokens: L, Median: med.Seconds(), TokensPerSec: float64(L) / med.Seconds()})
	}

	if prof != nil {
		prof.Profile() // reset
	}
	st := m.NewState(1)
	out, err := st.Forward(randomIDs(16), nil, true)
	if err != nil {
		return err
	}
	var times []time.Duration
	pick := m.Picker(model.Sampling{}) // greedy, as Generate decodes
	for i := range *decode + 1 {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		next, err := pick(out)
		if err != nil {
			return err
		}
		if out, err = st.Forward([]int32{int32(next)}, nil, true); err != nil {
			return err
		}
		if i > 0 {
			times = append(times, time.Since(start))
		}
	}
	med := median(times)
	report.Decode = decodeFigure{Tokens: *decode, MedianPerToken: med.Seconds(), TokensPerSec: 1 / med.Seconds()}
	if prof != nil {
		for k, v := range prof.Profile() {
			report.Kernels = append(report.Kernels, kernelFigure{Kernel: k, PerToken: v.Seconds() / float64(*decode+1)})
		}
		sort.Slice(report.Kernels, func(a, b int) bool { return report.Kernels[a].PerToken > report.Kernels[b].PerToken })
	}
	if *asJSON {
		return writeJSON(stdout, report)
	}
	report.print(stdout)
	return nil
}

type prefillFigure struct {
	Tokens       int     `json:"tokens"`
	Median       float64 `json:"median_s"`
	TokensPerSec float64 `json:"tokens_per_s"`
}

type decodeFigure struct {
	Tokens         int     `json:"tokens"`
	MedianPerToken float64 `json:"median_s_per_token"`
	TokensPerSec   float64 `json:"tokens_per_s"`
}

type kernelFigure struct {
	Kernel   string  `json:"kernel"`
	PerToken float64 `json:"device_s_per_token"`
}

type benchReport struct {
	Model   string          `json:"model"`
	Backend string          `json:"backend"`
	Prefill []prefillFigure `json:"prefill"`
	Decode  decodeFigure    `json:"decode"`
	Kernels []kernelFigure  `json:"decode_kernels,omitempty"`
}

func (r benchReport) print(w io.Writer) {
	fmt.Fprintf(w, "model %s, backend %s (medians)\n", r.Model, r.Backend)
	for _, p := range r.Prefill {
		fmt.Fprintf(w, "prefill %6d tokens: %9.1f tokens/s  (%.4f s)\n", p.Tokens, p.TokensPerSec, p.Median)
	}
	fmt.Fprintf(w, "decode  batch 1:      %9.1f tokens/s  (%.3f ms/token)\n", r.Decode.TokensPerSec, r.Decode.MedianPerToken*1e3)
	for _, k := range r.Kernels {
		fmt.Fprintf(w, "  %-24s %8.1f µs/token\n", k.Kernel, k.PerToken*1e6)
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func shapeNames() string {
	names := make([]string, 0, len(model.Shapes))
	for k := range model.Shapes {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func parseDType(s string) (loader.DType, error) {
	switch strings.ToLower(s) {
	case "f32":
		return loader.F32, nil
	case "f16":
		return loader.F16, nil
	case "bf16":
		return loader.BF16, nil
	}
	return "", fmt.Errorf("dtype %q: want f32, f16 or bf16", s)
}
