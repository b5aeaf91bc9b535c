//go:build js && wasm

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"syscall/js"
	"time"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/tokenizer"
)

// session is one loaded model. Its backend is driven by one goroutine at a
// time: gate admits, in arrival order, either batched generations (which
// share the scheduler's goroutine) or one other call (batch.go).
type session struct {
	m      *model.Model
	tok    *tokenizer.Tokenizer
	device string
	gate   gate
	slots  int // sequences the scheduler decodes together (loadModel's slots)

	schedMu sync.Mutex
	sched   *model.Scheduler // open while batched generations run; nil after an exclusive call

	ctx    context.Context
	cancel context.CancelFunc // ends every generation, for dispose
	closed bool
}

var (
	mu       sync.Mutex
	sessions = map[int]*session{}
	nextID   = 1
	jobs     = map[int]context.CancelFunc{} // by caller-chosen job id
)

// startJob registers a cancellable context under the caller's job id (when it
// gave one). It runs synchronously inside the JavaScript call, so an abort
// message that follows the call always finds the job.
func startJob(opts js.Value) (ctx context.Context, done func(), err error) {
	id, err := optInt(opts, "job", 0)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if id == 0 {
		return ctx, cancel, nil
	}
	mu.Lock()
	if _, dup := jobs[id]; dup {
		mu.Unlock()
		cancel()
		return nil, nil, codef(codeBadArg, "job id %d is already running", id)
	}
	jobs[id] = cancel
	mu.Unlock()
	return ctx, func() {
		cancel()
		mu.Lock()
		delete(jobs, id)
		mu.Unlock()
	}, nil
}

// abort(job) → Promise<boolean>: cancels a running loadModel or generate;
// false when no such job is running.
func jsAbort(_ js.Value, args []js.Value) any {
	id := 0
	if len(args) > 0 && args[0].Type() == js.TypeNumber {
		id = args[0].Int()
	}
	mu.Lock()
	cancel, ok := jobs[id]
	mu.Unlock()
	if ok {
		cancel()
	}
	return promise(func() (any, error) { return ok, nil })
}

func getSession(v js.Value) (*session, error) {
	if v.Type() != js.TypeNumber {
		return nil, codef(codeBadArg, "the model handle must be a number")
	}
	mu.Lock()
	defer mu.Unlock()
	s, ok := sessions[v.Int()]
	if !ok || s.closed {
		return nil, codef(codeDisposed, "the model has been disposed")
	}
	return s, nil
}

func argOr(args []js.Value, i int) js.Value {
	if i < len(args) {
		return args[i]
	}
	return js.Undefined()
}

// loadModel(url, {device, cache, quantize, groupSize, adapters, http, slots,
// onProgress, job}) → Promise<{handle, device, note, config, hasTokenizer, slots, seconds,
// cache, weights, weightFormats, quantize, groupSize, weightBytes,
// gpuMemoryBytes, wasmMemoryBytes}>. url is an absolute http(s) URL of a
// Hugging Face-layout folder. cache is 'use' (default), 'revalidate' or
// 'off' (see cacheOptions); the result's cache says how many weight bytes
// came from the cache and how many over the network. quantize ('int8' or
// 'int4', with groupSize for int4) quantizes the float matrices while they
// stream (quantOption). adapters (absolute folder URLs) are PEFT LoRA
// adapters merged into the weights at load, in order (adaptersOption);
// the result's adapters lists them. slots is how many generate calls decode
// together (slotsOption; the result's slots is the number used). http is
// {headerTimeout, stallTimeout (ms), retries}, each optional.
// onProgress(done, total, file, fileDone, fileTotal) gets weight bytes
// loaded, and the same for the safetensors file being read. The result's weights and the rest describe what was
// loaded (loaded.report).
func jsLoadModel(_ js.Value, args []js.Value) any {
	url, opts := argOr(args, 0), argOr(args, 1)
	ctx, done, err := startJob(opts)
	if err != nil {
		return promise(func() (any, error) { return nil, err })
	}
	return promise(func() (any, error) {
		defer done()
		if url.Type() != js.TypeString {
			return nil, codef(codeBadURL, "the model URL must be a string")
		}
		start := time.Now()
		o, useCache, err := httpOptions(opts)
		if err != nil {
			return nil, err
		}
		q, err := quantOption(opts)
		if err != nil {
			return nil, err
		}
		adapters, err := adaptersOption(opts)
		if err != nil {
			return nil, err
		}
		if _, err := slotsOption(opts, "webgpu", false, model.Config{}); err != nil {
			return nil, err // checked before anything is fetched
		}
		r, err := load(ctx, url.String(), optString(opts, "device", "auto"), q, o, useCache, optFunc(opts, "onProgress"), adapters)
		if err != nil {
			return nil, err
		}
		s := r.s
		if s.slots, err = slotsOption(opts, s.device, isSoftware(s.m.Backend), s.m.Config); err != nil {
			s.m.Backend.Close()
			return nil, err
		}
		mu.Lock()
		h := nextID
		nextID++
		sessions[h] = s
		mu.Unlock()
		c := s.m.Config
		out := map[string]any{
			"handle": h,
			"device": s.device,
			"note":   r.note,
			"config": map[string]any{
				"vocabSize":  c.VocabSize,
				"hiddenSize": c.Hidden,
				"layers":     c.Layers,
				"eos":        c.EOS,
			},
			"hasTokenizer": s.tok != nil,
			"slots":        s.slots,
			"seconds":      time.Since(start).Seconds(),
			"cache": map[string]any{
				"enabled":      r.cached,
				"bytesCached":  float64(r.stats.FromCache),
				"bytesFetched": float64(r.stats.Fetched),
			},
		}
		for k, v := range r.report {
			out[k] = v
		}
		return out, nil
	})
}

// quantOption reads loadModel's quantize ('int8' or 'int4') and groupSize
// (int4's group length, a positive even number; default 128) into a
// model.Quant; without quantize the zero Quant keeps the weights as they are.
func quantOption(opts js.Value) (model.Quant, error) {
	var q model.Quant
	if !opts.Truthy() {
		return q, nil
	}
	v, set := optValue(opts, "quantize")
	_, gsSet := optValue(opts, "groupSize")
	ev, embSet := optValue(opts, "quantizeEmbedding")
	if !set {
		if gsSet {
			return q, codef(codeBadArg, "option groupSize applies only with quantize 'int4'")
		}
		if embSet {
			return q, codef(codeBadArg, "option quantizeEmbedding applies only with quantize")
		}
		return q, nil
	}
	if embSet {
		e, err := model.ParseFormat(ev.String())
		if ev.Type() != js.TypeString || err != nil || !e.Quantized() || e.String() != ev.String() {
			return q, codef(codeBadArg, "option quantizeEmbedding must be 'int8' or 'int4', got %s", jsDescribe(ev))
		}
		q.Embedding = e
	}
	f, err := model.ParseFormat(v.String())
	if v.Type() != js.TypeString || err != nil || !f.Quantized() || f.String() != v.String() {
		return q, codef(codeBadArg, "option quantize must be 'int8' or 'int4', got %s", jsDescribe(v))
	}
	q.Format = f
	if gsSet {
		if f != model.FormatInt4 {
			return q, codef(codeBadArg, "option groupSize applies only with quantize 'int4', got quantize %q", f)
		}
		n, err := optInt(opts, "groupSize", 0)
		if err != nil {
			return q, err
		}
		if n <= 0 {
			return q, codef(codeBadArg, "option groupSize must be a positive even number, got %d", n)
		}
		q.GroupSize = n
	}
	if err := q.Check(); err != nil {
		return q, codef(codeBadArg, "option %v", strings.TrimPrefix(err.Error(), "quantize: "))
	}
	return q, nil
}

// jsDescribe is a short account of a JavaScript value for an error message.
func jsDescribe(v js.Value) string {
	switch v.Type() {
	case js.TypeString:
		return fmt.Sprintf("%q", v.String())
	case js.TypeNumber, js.TypeBoolean:
		return js.Global().Get("String").Invoke(v).String()
	}
	return v.Type().String()
}

// cacheName is the Cache API cache holding model files; web/mamba2.js lists
// and clears the same cache.
const cacheName = "mamba2-models-v1"

// httpOptions reads the cache policy and the http options of loadModel
// into the loader's options: the browser's fetch (loader's default
// Transport under js), and, unless the policy is 'off' (useCache false),
// the Cache API, which load opens. Weight files are read through the
// cache: fetched once, whole, their body feeding the loader and the cache
// at once ('use' is PreferCache; 'revalidate' asks the server first).
func httpOptions(opts js.Value) (o loader.HTTPOptions, useCache bool, err error) {
	o = loader.HTTPOptions{ReadThrough: true}
	switch p := optString(opts, "cache", "use"); p {
	case "", "use":
		o.PreferCache = true
	case "revalidate":
	case "off":
		return o, false, httpTuning(opts, &o)
	default:
		return o, false, codef(codeBadArg, "cache %q: want 'use', 'revalidate' or 'off'", p)
	}
	return o, true, httpTuning(opts, &o)
}

// httpTuning reads loadModel's http option: {headerTimeout, stallTimeout}
// in milliseconds and retries, each optional (the loader's defaults: 30 s,
// 60 s, 4).
func httpTuning(opts js.Value, o *loader.HTTPOptions) error {
	var hopts js.Value
	if opts.Truthy() {
		hopts = opts.Get("http")
	}
	if hopts.Truthy() {
		for _, f := range []struct {
			key string
			dst *time.Duration
		}{{"headerTimeout", &o.HeaderTimeout}, {"stallTimeout", &o.StallTimeout}} {
			ms, err := optNumber(hopts, f.key, 0)
			if err != nil || ms < 0 {
				return codef(codeBadArg, "option http.%s must be a number of milliseconds >= 0", f.key)
			}
			*f.dst = time.Duration(ms * float64(time.Millisecond))
		}
		n, err := optInt(hopts, "retries", 0)
		if err != nil {
			return err
		}
		if n <= 0 {
			n = -1 // 0 retries: the loader's 0 means its default
		}
		if _, set := optValue(hopts, "retries"); set {
			o.Retries = n
		}
	}
	return nil
}

// optValue returns o[key] and whether it is set (not undefined or null).
func optValue(o js.Value, key string) (js.Value, bool) {
	v := o.Get(key)
	return v, v.Type() != js.TypeUndefined && v.Type() != js.TypeNull
}

// crossOrigin reports whether the model URL is on another origin than the
// worker: If-Range then makes every ranged request need a CORS preflight,
// which some hosts refuse; without it, a change is still caught from the
// ETag and Content-Range of each answer.
func crossOrigin(u string) bool {
	loc := js.Global().Get("location")
	if loc.Type() != js.TypeObject {
		return false
	}
	parsed, err := parseURL(u)
	if err != nil {
		return false
	}
	return parsed.Get("origin").String() != loc.Get("origin").String()
}

// parseURL parses an absolute URL with the platform's URL class.
func parseURL(s string) (u js.Value, err error) {
	defer func() {
		if r := recover(); r != nil { // new URL throws a TypeError
			err = fmt.Errorf("%v", r)
		}
	}()
	return js.Global().Get("URL").New(s), nil
}

// cpuLimit bounds the float32 weights the CPU backend may hold: wasm32 has a
// 4 GiB address space, and Go needs room for activations and garbage.
const cpuLimit = 3 << 30

// loaded is what load returns.
type loaded struct {
	s      *session
	note   string
	cached bool // the Cache API was used
	stats  loader.LoadStats
	report map[string]any // what was loaded, for loadModel's result (weightReport)
}

func load(ctx context.Context, url, device string, q model.Quant, o loader.HTTPOptions, useCache bool, onProgress js.Value, adapters []string) (*loaded, error) {
	switch device {
	case "auto", "webgpu", "cpu":
	default:
		return nil, codef(codeBadArg, "device %q: want 'auto', 'webgpu' or 'cpu'", device)
	}
	var notes []string
	if useCache {
		store, err := loader.NewWebCache(cacheName)
		if err != nil {
			notes = append(notes, fmt.Sprintf("The browser cache is unavailable (%v); weights are not kept between loads.", err))
		} else if store != nil {
			o.Cache = store
		}
	}
	o.NoIfRange = crossOrigin(url)
	if _, err := loader.NormalizeURL(url); err != nil {
		return nil, coded(codeBadURL, err)
	}
	fsys, err := loader.OpenURL(ctx, url, o)
	if err != nil {
		return nil, loadError(ctx, err)
	}
	ads, afs, err := openAdapters(ctx, adapters, o)
	if err != nil {
		return nil, err
	}
	s, report, gpuNote, err := loadFrom(ctx, fsys, device, q, onProgress, ads)
	if err != nil {
		fsys.Abort()
		for _, a := range afs {
			a.Abort()
		}
		return nil, err
	}
	for _, f := range append([]*loader.HTTPFS{fsys}, afs...) {
		if err := f.Finish(); err != nil {
			s.m.Backend.Close()
			return nil, loadError(ctx, err)
		}
	}
	var all []string
	for _, n := range append(append(notes, gpuNote), fsys.Notes()...) {
		if n != "" {
			all = append(all, n)
		}
	}
	return &loaded{s: s, note: strings.Join(all, " "), cached: o.Cache != nil, stats: fsys.Stats(), report: report}, nil
}

// loadFrom plans the load (config.json, tokenizer.json, every safetensors
// header and the tensors the config needs, all checked before a backend is
// opened), then uploads the weights.
func loadFrom(ctx context.Context, fsys *loader.HTTPFS, device string, q model.Quant, onProgress js.Value, ads []*model.Adapter) (*session, map[string]any, string, error) {
	// config.json first: a wrong URL is reported as such, before anything else.
	if _, err := fs.Stat(fsys, "config.json"); err != nil {
		if errors.Is(err, fs.ErrNotExist) && ctx.Err() == nil {
			var he *loader.HTTPError
			if errors.As(err, &he) && he.Status != 0 {
				return nil, nil, "", codef(codeNotFound, "no model at %s: %s answered HTTP %d %s", fsys.URL(), he.URL, he.Status, loader.StatusText(he.Status))
			}
			return nil, nil, "", codef(codeNotFound, "no model at %s: %v", fsys.URL(), unwrapPath(err))
		}
		return nil, nil, "", loadError(ctx, err)
	}
	// The plan (model.Plan's steps): config.json, tokenizer.json, every
	// safetensors header and the tensors the config needs, all read and
	// checked before a backend is opened. A checkpoint too large for the
	// CPU backend is refused first, from its headers alone.
	cfg, err := model.LoadConfig(fsys)
	if err != nil {
		return nil, nil, "", loadError(ctx, err)
	}
	var tok *tokenizer.Tokenizer
	if data, err := loader.ReadSideFile(fsys, "tokenizer.json"); err == nil {
		if tok, err = tokenizer.Load(bytes.NewReader(data)); err != nil {
			return nil, nil, "", codef(codeBadModel, "tokenizer.json: %v", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, "", loadError(ctx, err)
	}
	ck, err := loader.Open(fsys)
	if err != nil {
		return nil, nil, "", loadError(ctx, err)
	}
	var elems int64
	for _, n := range ck.Names() {
		in, _ := ck.Info(n)
		elems += in.Elements()
	}
	tooBig := func() error {
		return codef(codeTooBig, "the model does not fit: its %d M parameters need %.1f GiB as float32 on the CPU, more than WebAssembly's memory allows (about %d GiB); use WebGPU or a smaller model",
			elems/1e6, float64(elems*4)/(1<<30), cpuLimit>>30)
	}
	if device == "cpu" && elems*4 > cpuLimit {
		return nil, nil, "", tooBig()
	}
	if err := model.CheckWeights(cfg, ck); err != nil {
		return nil, nil, "", loadError(ctx, err)
	}
	if err := checkStoredQuant(cfg.Quant, q); err != nil {
		return nil, nil, "", err
	}
	if err := model.CheckAdapters(cfg, ck, ads); err != nil {
		return nil, nil, "", coded(codeBadModel, err)
	}
	b, name, note, err := openBackend(device)
	if err != nil {
		return nil, nil, "", err
	}
	if name == "cpu" && elems*4 > cpuLimit { // 'auto' fell back to the CPU
		b.Close()
		return nil, nil, "", tooBig()
	}
	var progress func(model.Progress)
	if onProgress.Type() == js.TypeFunction {
		progress = func(p model.Progress) {
			onProgress.Invoke(float64(p.Done), float64(p.Total), p.File, float64(p.FileDone), float64(p.FileTotal))
		}
	}
	rec := &recorder{Backend: b, formats: map[model.Role]model.Format{}}
	before := liveBytes(b)
	w, err := model.LoadWeights(cfg, ck, rec, model.LoadOptions{Progress: progress, Quantize: q, Adapters: ads})
	if err != nil {
		b.Close()
		return nil, nil, "", loadError(ctx, err)
	}
	m := &model.Model{Config: cfg, Backend: b, Weights: w, Adapters: model.AdapterInfos(ads)}
	if name == "cpu" {
		m.Backend = &yielding{Backend: b} // see yielding
	}
	if name == "webgpu" {
		if err := gpuCheck(); err != nil {
			b.Close()
			return nil, nil, "", err
		}
	}
	sctx, cancel := context.WithCancel(context.Background())
	report := weightReport(rec, q, b, before)
	report["adapters"] = adapterReport(m.Adapters)
	return &session{m: m, tok: tok, device: name, ctx: sctx, cancel: cancel},
		report, note, nil
}

// adaptersOption reads loadModel's adapters: absolute folder URLs of PEFT
// LoRA adapters (mamba2.js resolves hub ids and relative URLs), merged
// into the weights at load in this order (docs/adapters.md).
func adaptersOption(opts js.Value) ([]string, error) {
	if !opts.Truthy() {
		return nil, nil
	}
	v, set := optValue(opts, "adapters")
	if !set {
		return nil, nil
	}
	if !v.InstanceOf(js.Global().Get("Array")) {
		return nil, codef(codeBadArg, "option adapters must be an array of folder URLs, got %s", jsDescribe(v))
	}
	out := make([]string, v.Length())
	for i := range out {
		e := v.Index(i)
		if e.Type() != js.TypeString {
			return nil, codef(codeBadArg, "option adapters[%d] must be a URL string, got %s", i, jsDescribe(e))
		}
		if _, err := loader.NormalizeURL(e.String()); err != nil {
			return nil, codef(codeBadURL, "adapter %s: %v", e.String(), err)
		}
		out[i] = e.String()
	}
	return out, nil
}

// openAdapters opens each adapter folder as the model's is (same HTTP
// options and cache; adapter_config.json and the safetensors header are
// read now, the tensors when they are merged).
func openAdapters(ctx context.Context, urls []string, o loader.HTTPOptions) ([]*model.Adapter, []*loader.HTTPFS, error) {
	var ads []*model.Adapter
	var fss []*loader.HTTPFS
	fail := func(err error) ([]*model.Adapter, []*loader.HTTPFS, error) {
		for _, f := range fss {
			f.Abort()
		}
		return nil, nil, err
	}
	for _, u := range urls {
		o.NoIfRange = crossOrigin(u)
		fsys, err := loader.OpenURL(ctx, u, o)
		if err != nil {
			return fail(loadError(ctx, err))
		}
		fss = append(fss, fsys)
		a, err := model.OpenAdapter(fsys.URL(), fsys)
		if err != nil {
			return fail(loadError(ctx, err))
		}
		ads = append(ads, a)
	}
	return ads, fss, nil
}

// adapterReport is loadModel's adapters: [{name, r, alpha, rslora,
// targets}] in merge order.
func adapterReport(infos []model.AdapterInfo) []any {
	out := []any{}
	for _, a := range infos {
		ts := make([]any, len(a.Targets))
		for i, t := range a.Targets {
			ts[i] = t
		}
		out = append(out, map[string]any{"name": a.Name, "r": a.R, "alpha": a.Alpha, "rslora": a.RSLoRA, "targets": ts})
	}
	return out
}

// loadError gives a load failure its code: the loader's errors say what
// failed (a missing file, an HTTP answer, a network that never answered, a
// download that changed or did not check out, a side file over its size
// limit); the rest is the model's (config, weights) or the device's.
func loadError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return codef(codeAborted, "loading was aborted")
	}
	if codeOf(err) != "" {
		return err
	}
	var he *loader.HTTPError
	switch {
	case errors.Is(err, loader.ErrTooLarge):
		return coded(codeBadModel, err)
	case errors.Is(err, fs.ErrNotExist):
		return coded(codeNotFound, err)
	case errors.Is(err, loader.ErrChanged), errors.Is(err, loader.ErrIntegrity), errors.Is(err, loader.ErrTimeout):
		return coded(codeHTTP, err)
	case errors.As(err, &he) && he.Status == 0:
		return codef(codeBadURL, "could not fetch %s: %v (the server may be down, or a cross-origin server may not allow this page)", he.URL, err)
	case errors.As(err, &he):
		return coded(codeHTTP, err)
	}
	msg := err.Error()
	for _, s := range []string{"largest storage binding", "creating buffer", "out of memory", "Out of memory"} {
		if strings.Contains(msg, s) {
			return codef(codeTooBig, "the model does not fit this device: %v", err)
		}
	}
	return coded(codeBadModel, err)
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// gpuCheckMu serialises gpuCheck: batched generations end concurrently, and
// two checks interleaved at their awaits would pop each other's error
// scopes (mamba2GPUCheck pops and pushes them one by one).
var gpuCheckMu sync.Mutex

// gpuCheck asks the worker (web/worker.js) for WebGPU errors caught since the
// last check: the binding does not report validation errors, out-of-memory
// or device loss, which WebGPU delivers asynchronously. Errors of work that a
// batch ran for other generations meanwhile are caught by whichever check
// comes next: they share the device, and an error there is every one's.
func gpuCheck() error {
	check := js.Global().Get("mamba2GPUCheck")
	if check.Type() != js.TypeFunction {
		return nil // a host without the worker's watch
	}
	gpuCheckMu.Lock()
	defer gpuCheckMu.Unlock()
	v, err := await(check.Invoke())
	if err != nil || !v.Truthy() {
		return nil
	}
	kind, msg := v.Get("kind").String(), v.Get("message").String()
	switch kind {
	case "out-of-memory":
		return codef(codeTooBig, "the model does not fit in this GPU's memory (WebGPU: %s)", msg)
	case "lost":
		return codef(codeLost, "the GPU device was lost (%s); load the model again: its weights come from the browser cache", msg)
	}
	return codef(codeInternal, "WebGPU reported a %s error: %s", kind, msg)
}
