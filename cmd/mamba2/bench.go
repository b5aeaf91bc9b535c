package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

func cmdBench(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("bench")
	var mf modelFlags
	mf.register(fs)
	shape := fs.String("shape", "", "random weights of a released shape: "+shapeNames())
	layers := fs.Int("layers", 0, "with --shape: this many layers instead of the shape's (0: the shape's)")
	dtype := fs.String("dtype", "f16", "weight storage for --shape: f32, f16 or bf16 (with --quantize, of the tensors that stay float)")
	lengths := fs.String("prompt-lengths", "128,512,2048", "prefill lengths to time")
	decode := fs.Int("decode-tokens", 64, "decode steps to time")
	reps := fs.Int("reps", 5, "repetitions per prefill length")
	chunk := fs.Int("prefill-chunk", 0, "tokens per forward call of a long prompt (0: the model's default)")
	profile := fs.Bool("profile", false, "also time every kernel on the device (WebGPU timestamp queries), in extra runs after the timed ones")
	asJSON := fs.Bool("json", false, "print the figures as JSON")
	batch := fs.Int("batch", 1, "sequences decoded together (one forward pass per step for all of them)")
	logitError := fs.Bool("logit-error", false, "with --shape and --quantize: also build the f32 model of the same random weights and report how far the quantized logits are from it")
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
	if *batch < 1 || *batch > 1024 {
		return fmt.Errorf("--batch %d: want 1 to 1024", *batch)
	}
	gn, err := model.ParseGatedNorm(mf.gatedNorm)
	if err != nil {
		return err
	}
	q, err := mf.quant()
	if err != nil {
		return err
	}

	var m *model.Model
	name, weights := "", ""
	if *shape != "" {
		if mf.model != "" {
			return fmt.Errorf("give --model or --shape, not both")
		}
		cfg, ok := model.Shapes[*shape]
		if !ok {
			return fmt.Errorf("--shape %q: want one of %s", *shape, shapeNames())
		}
		if *layers < 0 || *layers > model.MaxLayers {
			return fmt.Errorf("--layers %d: want 1 to %d", *layers, model.MaxLayers)
		}
		if *layers > 0 {
			cfg.Layers = *layers
		}
		dt, err := parseDType(*dtype)
		if err != nil {
			return err
		}
		b, err := openBackend(backendFor(mf.backend, cfg, stderr), *profile, stderr)
		if err != nil {
			return err
		}
		if m, err = model.NewRandomQuantized(cfg, b, dt, 1, q); err != nil {
			b.Close()
			return err
		}
		name, weights = "random "+*shape, strings.ToLower(*dtype)
	} else {
		mf.profile = *profile
		if m, _, err = mf.load(ctx, stderr); err != nil {
			return err
		}
		if name = mf.model; name == "" {
			name = "embedded mamba2-go-tiny"
		}
		weights = "as stored"
		if m.Config.Quant.On() {
			q = m.Config.Quant // stored quantized
		}
	}
	if q.On() {
		weights = strings.TrimSuffix(q.String()+" + "+weights, " + ")
	}
	defer m.Backend.Close()
	m.GatedNorm = gn
	m.PrefillChunk = *chunk

	rng := rand.New(rand.NewPCG(1, 2))
	randomIDs := func(n int) []int32 {
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(rng.IntN(m.Config.VocabSize))
		}
		return ids
	}
	report := benchReport{Model: name, Backend: m.Backend.Name(), Weights: weights, Shape: shapeOf(m.Config), Batch: *batch, LoRA: m.Adapters}
	if d, ok := m.Backend.(interface{ Describe() string }); ok {
		report.Adapter = d.Describe()
	}
	mem, hasMem := m.Backend.(model.DeviceMemory)
	if hasMem {
		report.WeightBytes = mem.DeviceBytes()
	}

	// With --profile, prof times kernels in extra runs after the timed ones,
	// which go without it; or ProfileUnavailable says why it cannot.
	var prof model.Profiler
	if p, ok := m.Backend.(model.Profiler); *profile && !ok {
		report.ProfileUnavailable = "the " + m.Backend.Name() + " backend runs on the host, with no device timers (use --backend webgpu)"
	} else if *profile {
		if err := p.SetProfiling(true); err != nil {
			report.ProfileUnavailable = err.Error()
		} else {
			prof = p
		}
		if err := p.SetProfiling(false); err != nil {
			return err
		}
	}

	// One state serves every prefill: its buffers are allocated by the
	// warm-up run, so the timed runs measure the forward pass alone, as a
	// long-running program reusing a state sees it. The ids are drawn
	// before the clock starts.
	st := m.NewState(1)
	defer st.Close()
	prefill := func(ids []int32) error {
		st.Reset()
		out, err := st.Forward(ids, nil)
		if err == nil {
			_, err = m.Backend.Read(out)
		}
		return err
	}
	for _, L := range lens {
		var times []time.Duration
		for r := range *reps + 1 {
			if err := ctx.Err(); err != nil {
				return err
			}
			ids := randomIDs(L)
			start := time.Now()
			if err := prefill(ids); err != nil {
				return err
			}
			if r > 0 { // the first run warms up pipelines and buffers
				times = append(times, time.Since(start))
			}
		}
		med := median(times)
		report.Prefill = append(report.Prefill, prefillFigure{Tokens: L, Median: med.Seconds(), TokensPerSec: float64(L) / med.Seconds()})
	}

	pick := batchPicker(m, *batch) // greedy, as Generate decodes
	defer pick.free()
	// decodeRun prefills 16 tokens of each sequence and decodes one
	// warm-up step, then times n greedy steps of all of them as Generate
	// decodes (State.Decode: the ids on the device, steps in flight), and
	// returns the time per step; with profiled, prof times those n.
	decodeRun := func(n int, profiled bool) (time.Duration, map[string]model.KernelTime, error) {
		st := m.NewState(*batch)
		defer st.Close()
		out, err := st.Forward(randomIDs(16**batch), nil)
		if err != nil {
			return 0, nil, err
		}
		next, err := pick.pick(out)
		if err != nil {
			return 0, nil, err
		}
		warm, err := st.Decode(next, 1, model.Sampling{})
		if err != nil {
			return 0, nil, err
		}
		if err := ctx.Err(); err != nil {
			return 0, nil, err
		}
		if profiled {
			if err := prof.SetProfiling(true); err != nil {
				return 0, nil, err
			}
			prof.Profile() // the prefill and the warm-up step are not counted
		}
		start := time.Now()
		if _, err := st.Decode(warm, n, model.Sampling{}); err != nil {
			return 0, nil, err
		}
		per := time.Since(start) / time.Duration(n)
		if !profiled {
			return per, nil, nil
		}
		kernels := prof.Profile()
		return per, kernels, prof.SetProfiling(false)
	}
	counts, hasCounts := m.Backend.(interface {
		Counts() (submissions, dispatches int)
	})
	var sub0, dis0 int
	if hasCounts {
		sub0, dis0 = counts.Counts()
	}
	var times []time.Duration
	for range *reps {
		per, _, err := decodeRun(*decode, false)
		if err != nil {
			return err
		}
		times = append(times, per)
	}
	med := median(times)
	report.Decode = decodeFigure{Tokens: *decode, MedianPerToken: med.Seconds(), TokensPerSec: float64(*batch) / med.Seconds()}
	if hasCounts {
		// decodeRun's prefill of 16 tokens and warm-up step are counted
		// too: take them out by counting one more run of a single step.
		sub1, dis1 := counts.Counts()
		if _, _, err := decodeRun(1, false); err != nil {
			return err
		}
		sub2, dis2 := counts.Counts()
		steps := float64(*decode - 1)
		runs := float64(*reps)
		stepSub := (float64(sub1-sub0)/runs - float64(sub2-sub1)) / steps
		stepDis := (float64(dis1-dis0)/runs - float64(dis2-dis1)) / steps
		report.Decode.SubmissionsPerToken, report.Decode.DispatchesPerToken = &stepSub, &stepDis
	}
	if hasMem {
		report.DeviceBytes = mem.DeviceBytes() // with a prefill state and scratch
	}

	if prof != nil {
		for _, L := range lens {
			if err := prof.SetProfiling(true); err != nil {
				return err
			}
			prof.Profile()
			for range *reps {
				if err := prefill(randomIDs(L)); err != nil {
					return err
				}
			}
			report.ProfilePrefill = append(report.ProfilePrefill, newProfileTable(L, *reps, prof.Profile()))
			if err := prof.SetProfiling(false); err != nil {
				return err
			}
		}
		_, kernels, err := decodeRun(*decode, true)
		if err != nil {
			return err
		}
		t := newProfileTable(1, *decode, kernels)
		report.ProfileDecode = &t
	}
	if *logitError {
		if *shape == "" || !q.On() {
			return fmt.Errorf("--logit-error needs --shape and --quantize")
		}
		e, err := quantError(m, dtypeOf(*dtype), q, randomIDs(64))
		if err != nil {
			return err
		}
		report.LogitError = e
	}
	if *asJSON {
		return writeJSON(stdout, report)
	}
	report.print(stdout)
	return nil
}

func dtypeOf(s string) loader.DType {
	dt, _ := parseDType(s)
	return dt
}

// logitErrorFigure compares a quantized model's logits with those of the
// f32 model of the same random weights, over every position of a prompt.
type logitErrorFigure struct {
	Positions int     `json:"positions"`
	MaxAbs    float64 `json:"max_abs"`
	RelRMS    float64 `json:"rel_rms"` // RMS of the differences over the RMS of the f32 logits
	Top1Agree float64 `json:"top1_agree"`
}

// quantError builds the f32 reference of m (the same seed, on the same
// backend) and compares the logits of ids.
func quantError(m *model.Model, dt loader.DType, q model.Quant, ids []int32) (*logitErrorFigure, error) {
	ref, err := model.NewRandom(m.Config, m.Backend, loader.F32, 1)
	if err != nil {
		return nil, fmt.Errorf("--logit-error: the f32 model: %v", err)
	}
	defer ref.Weights.Free(ref.Backend)
	ref.GatedNorm = m.GatedNorm
	logits := func(m *model.Model) ([]float32, error) {
		st := m.NewState(1)
		defer st.Close()
		return st.Logits(ids, nil)
	}
	want, err := logits(ref)
	if err != nil {
		return nil, err
	}
	got, err := logits(m)
	if err != nil {
		return nil, err
	}
	V := m.Config.VocabSize
	f := &logitErrorFigure{Positions: len(ids)}
	var d2, w2 float64
	agree := 0
	for p := 0; p < len(ids); p++ {
		g, w := got[p*V:(p+1)*V], want[p*V:(p+1)*V]
		if argmax(g) == argmax(w) {
			agree++
		}
		for i := range w {
			d := float64(g[i] - w[i])
			f.MaxAbs = max(f.MaxAbs, math.Abs(d))
			d2 += d * d
			w2 += float64(w[i]) * float64(w[i])
		}
	}
	f.RelRMS = math.Sqrt(d2 / w2)
	f.Top1Agree = float64(agree) / float64(len(ids))
	return f, nil
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

type prefillFigure struct {
	Tokens       int     `json:"tokens"`
	Median       float64 `json:"median_s"`
	TokensPerSec float64 `json:"tokens_per_s"`
}

type decodeFigure struct {
	Tokens         int     `json:"tokens"`
	MedianPerToken float64 `json:"median_s_per_token"` // per step: one token of every sequence
	TokensPerSec   float64 `json:"tokens_per_s"`       // of all sequences together
	// A device backend's work per decode step (decode-tokens 2 or more).
	DispatchesPerToken  *float64 `json:"dispatches_per_token,omitempty"`
	SubmissionsPerToken *float64 `json:"submissions_per_token,omitempty"`
}

// kernelFigure is one kernel's share of a profiled prefill or decode step,
// per run (one prefill of the prompt, or one decoded token).
type kernelFigure struct {
	Kernel    string  `json:"kernel"`
	Calls     float64 `json:"calls"`
	GPUms     float64 `json:"gpu_ms"`
	Percent   float64 `json:"percent"`
	PerCallUS float64 `json:"us_per_call"`
}

// profileTable is the kernels of a prefill of Tokens tokens or of a decode
// step (Tokens 1), averaged over Runs, longest first.
type profileTable struct {
	Tokens  int            `json:"tokens"`
	Runs    int            `json:"runs"`
	GPUms   float64        `json:"gpu_ms"` // per run, all kernels
	Kernels []kernelFigure `json:"kernels"`
}

func newProfileTable(tokens, runs int, k map[string]model.KernelTime) profileTable {
	t := profileTable{Tokens: tokens, Runs: runs}
	var total time.Duration
	for _, v := range k {
		total += v.Time
	}
	for name, v := range k {
		f := kernelFigure{Kernel: name, Calls: float64(v.Calls) / float64(runs), GPUms: v.Time.Seconds() * 1e3 / float64(runs)}
		if total > 0 {
			f.Percent = 100 * v.Time.Seconds() / total.Seconds()
		}
		if v.Calls > 0 {
			f.PerCallUS = v.Time.Seconds() * 1e6 / float64(v.Calls)
		}
		t.Kernels = append(t.Kernels, f)
	}
	t.GPUms = total.Seconds() * 1e3 / float64(runs)
	sort.Slice(t.Kernels, func(a, b int) bool {
		ka, kb := t.Kernels[a], t.Kernels[b]
		if ka.GPUms != kb.GPUms {
			return ka.GPUms > kb.GPUms
		}
		return ka.Kernel < kb.Kernel
	})
	return t
}

type benchReport struct {
	Model   string `json:"model"`
	Shape   string `json:"shape"` // D, layers, vocabulary
	Weights string `json:"weights,omitempty"`
	Batch   int    `json:"batch"`
	Backend string `json:"backend"`
	Adapter string `json:"adapter,omitempty"` // the GPU adapter (WebGPU's word)
	// LoRA lists the --adapter folders merged into the weights.
	LoRA []model.AdapterInfo `json:"lora_adapters,omitempty"`
	// Device memory (WebGPU): the weights alone, after loading, and
	// everything held after the runs (weights, states, scratch).
	WeightBytes int64           `json:"gpu_weight_bytes,omitempty"`
	DeviceBytes int64           `json:"gpu_memory_bytes,omitempty"`
	Prefill     []prefillFigure `json:"prefill"`
	Decode      decodeFigure    `json:"decode"`
	// With --profile: GPU time per kernel, or why there is none.
	ProfilePrefill     []profileTable `json:"profile_prefill,omitempty"`
	ProfileDecode      *profileTable  `json:"profile_decode,omitempty"`
	ProfileUnavailable string         `json:"profile_unavailable,omitempty"`
	// With --logit-error: the quantized logits against f32's.
	LogitError *logitErrorFigure `json:"logit_error,omitempty"`
}

func (r benchReport) print(w io.Writer) {
	fmt.Fprintf(w, "model %s (%s), weights %s, backend %s (medians)\n", r.Model, r.Shape, r.Weights, r.Backend)
	if r.Adapter != "" {
		fmt.Fprintf(w, "adapter %s\n", r.Adapter)
	}
	for _, a := range r.LoRA {
		fmt.Fprintf(w, "LoRA %s: r %d, alpha %g, %s\n", a.Name, a.R, a.Alpha, strings.Join(a.Targets, ", "))
	}
	if r.WeightBytes > 0 {
		fmt.Fprintf(w, "GPU memory: weights %s, all %s\n", formatBytes(r.WeightBytes), formatBytes(r.DeviceBytes))
	}
	for _, p := range r.Prefill {
		fmt.Fprintf(w, "prefill %6d tokens: %9.1f tokens/s  (%.4f s)\n", p.Tokens, p.TokensPerSec, p.Median)
	}
	b := strconv.Itoa(r.Batch) + ":"
	fmt.Fprintf(w, "decode  batch %-7s %9.1f tokens/s  (%.3f ms/step)", b, r.Decode.TokensPerSec, r.Decode.MedianPerToken*1e3)
	if d := r.Decode; d.DispatchesPerToken != nil {
		fmt.Fprintf(w, ", %.0f dispatches and %.1f submissions per step", *d.DispatchesPerToken, *d.SubmissionsPerToken)
	}
	fmt.Fprintln(w)
	if e := r.LogitError; e != nil {
		fmt.Fprintf(w, "logits against f32, %d positions: max |Δ| %.4g, relative RMS %.4g, same top token %.1f%%\n", e.Positions, e.MaxAbs, e.RelRMS, 100*e.Top1Agree)
	}
	if r.ProfileUnavailable != "" {
		fmt.Fprintf(w, "GPU time per kernel: unavailable: %s\n", r.ProfileUnavailable)
	}
	for _, t := range r.ProfilePrefill {
		t.print(w, fmt.Sprintf("prefill of %d tokens, per run (mean of %d)", t.Tokens, t.Runs))
	}
	if t := r.ProfileDecode; t != nil {
		t.print(w, fmt.Sprintf("decode, per token (mean of %d)", t.Runs))
	}
}

func (t profileTable) print(w io.Writer, title string) {
	fmt.Fprintf(w, "\nGPU time per kernel, %s:\n", title)
	width := len("kernel")
	for _, k := range t.Kernels {
		width = max(width, len(k.Kernel))
	}
	fmt.Fprintf(w, "  %-*s %7s %10s %7s %10s\n", width, "kernel", "calls", "GPU ms", "%", "µs/call")
	calls := 0.0
	for _, k := range t.Kernels {
		fmt.Fprintf(w, "  %-*s %7s %10.3f %6.1f%% %10.1f\n", width, k.Kernel, formatCalls(k.Calls), k.GPUms, k.Percent, k.PerCallUS)
		calls += k.Calls
	}
	fmt.Fprintf(w, "  %-*s %7s %10.3f %6.1f%%\n", width, "total", formatCalls(calls), t.GPUms, 100.0)
}

// stepPicker chooses each sequence's next token greedily from a step's
// logits ([B, V]): on the device when the backend samples there (reading
// back B ids), on the host otherwise.
type stepPicker struct {
	pick func(logits model.Tensor) ([]int32, error)
	free func()
}

func batchPicker(m *model.Model, B int) stepPicker {
	if ds, ok := m.Backend.(model.DeviceSampler); ok {
		ids := m.Backend.Alloc(model.I32, B)
		u := make([]float32, B)
		return stepPicker{
			pick: func(logits model.Tensor) ([]int32, error) {
				ds.Sample(ids, logits, nil, model.Sampling{}, u)
				return ds.ReadIDs(ids)
			},
			free: func() { m.Backend.Free(ids) },
		}
	}
	V := m.Config.VocabSize
	return stepPicker{
		pick: func(logits model.Tensor) ([]int32, error) {
			l, err := m.Backend.Read(logits)
			if err != nil {
				return nil, err
			}
			out := make([]int32, B)
			for b := range out {
				out[b] = int32(argmax(l[b*V : (b+1)*V]))
			}
			return out, nil
		},
		free: func() {},
	}
}

// shapeOf names a config's size for reports.
func shapeOf(c model.Config) string {
	return fmt.Sprintf("D %d, %d layers, vocabulary %d", c.Hidden, c.Layers, c.VocabSize)
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// formatCalls prints a mean number of calls, whole when it is.
func formatCalls(c float64) string {
	if c == float64(int64(c)) {
		return strconv.FormatInt(int64(c), 10)
	}
	return strconv.FormatFloat(c, 'f', 1, 64)
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
