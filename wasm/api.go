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
// time: lock serialises generate calls (and dispose) in arrival order.
type session struct {
	m      *model.Model
	tok    *tokenizer.Tokenizer
	device string
	lock   chan struct{} // holds one token while in use
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

// loadModel(url, {device, cache, onProgress, job}) → Promise<{handle, device,
// note, config, hasTokenizer, seconds, cache}>. url is an absolute http(s) URL
// of a Hugging Face-layout folder. cache is 'use' (default), 'revalidate' or
// 'off' (see webcache.go); the result's cache says how many weight bytes came
// from the cache and how many over the network. onProgress(done, total, file,
// fileDone, fileTotal) gets weight bytes loaded, and the same for the
// safetensors file being read.
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
		policy, err := parseCachePolicy(optString(opts, "cache", "use"))
		if err != nil {
			return nil, err
		}
		s, note, fsys, err := load(ctx, url.String(), optString(opts, "device", "auto"), policy, optFunc(opts, "onProgress"))
		if err != nil {
			return nil, err
		}
		mu.Lock()
		h := nextID
		nextID++
		sessions[h] = s
		mu.Unlock()
		c := s.m.Config
		return map[string]any{
			"handle": h,
			"device": s.device,
			"note":   note,
			"config": map[string]any{
				"vocabSize":  c.VocabSize,
				"hiddenSize": c.Hidden,
				"layers":     c.Layers,
				"eos":        c.EOS,
			},
			"hasTokenizer": s.tok != nil,
			"seconds":      time.Since(start).Seconds(),
			"cache": map[string]any{
				"enabled":      fsys.cache != nil,
				"bytesCached":  float64(fsys.fromCache),
				"bytesFetched": float64(fsys.fetched),
			},
		}, nil
	})
}

// cpuLimit bounds the float32 weights the CPU backend may hold: wasm32 has a
// 4 GiB address space, and Go needs room for activations and garbage.
const cpuLimit = 3 << 30

func load(ctx context.Context, url, device string, policy cachePolicy, onProgress js.Value) (s *session, note string, fsys *httpFS, err error) {
	switch device {
	case "auto", "webgpu", "cpu":
	default:
		return nil, "", nil, codef(codeBadArg, "device %q: want 'auto', 'webgpu' or 'cpu'", device)
	}
	var cache *webCache
	if policy != cacheOff {
		if cache, err = openWebCache(); err != nil {
			note = fmt.Sprintf("The browser cache is unavailable (%v); weights are not kept between loads.", err)
		}
	}
	fsys, err = openModelFS(ctx, url, cache, policy)
	if err != nil {
		return nil, "", nil, err
	}
	s, gpuNote, err := loadFrom(ctx, fsys, url, device, onProgress)
	if err != nil {
		fsys.abandon(err)
		return nil, "", nil, err
	}
	if err := fsys.finish(); err != nil {
		s.m.Backend.Close()
		return nil, "", nil, loadError(ctx, err)
	}
	var notes []string
	for _, n := range append([]string{note, gpuNote}, fsys.notes...) {
		if n != "" {
			notes = append(notes, n)
		}
	}
	return s, strings.Join(notes, " "), fsys, nil
}

func loadFrom(ctx context.Context, fsys *httpFS, url, device string, onProgress js.Value) (*session, string, error) {
	// config.json first: a wrong URL is reported as such, before anything else.
	if _, err := fs.ReadFile(fsys, "config.json"); err != nil {
		if errors.Is(err, fs.ErrNotExist) && ctx.Err() == nil {
			return nil, "", codef(codeNotFound, "no model at %s: %v", url, unwrapPath(err))
		}
		return nil, "", loadError(ctx, err)
	}
	if err := fsys.loadManifest(); err != nil {
		return nil, "", loadError(ctx, err)
	}
	// Validate the config before touching the GPU, as the CLI does.
	if _, err := model.LoadConfig(fsys); err != nil {
		return nil, "", loadError(ctx, fmt.Errorf("config.json: %w", err))
	}
	var tok *tokenizer.Tokenizer
	if data, err := fs.ReadFile(fsys, "tokenizer.json"); err == nil {
		if tok, err = tokenizer.Load(bytes.NewReader(data)); err != nil {
			return nil, "", codef(codeBadModel, "tokenizer.json: %v", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", loadError(ctx, err)
	}
	ck, err := loader.Open(fsys)
	if err != nil {
		return nil, "", loadError(ctx, err)
	}
	var elems int64
	for _, n := range ck.Names() {
		in, _ := ck.Info(n)
		elems += in.Elements()
	}
	b, name, note, err := openBackend(device)
	if err != nil {
		return nil, "", err
	}
	if name == "cpu" && elems*4 > cpuLimit {
		b.Close()
		return nil, "", codef(codeTooBig, "the model does not fit: its %d M parameters need %.1f GiB as float32 on the CPU, more than WebAssembly's memory allows (about %d GiB); use WebGPU or a smaller model",
			elems/1e6, float64(elems*4)/(1<<30), cpuLimit>>30)
	}
	var progress func(model.Progress)
	if onProgress.Type() == js.TypeFunction {
		progress = func(p model.Progress) {
			onProgress.Invoke(float64(p.Done), float64(p.Total), p.File, float64(p.FileDone), float64(p.FileTotal))
		}
	}
	m, err := model.Load(fsys, b, progress)
	if err != nil {
		b.Close()
		return nil, "", loadError(ctx, err)
	}
	if name == "webgpu" {
		if err := gpuCheck(); err != nil {
			b.Close()
			return nil, "", err
		}
	}
	sctx, cancel := context.WithCancel(context.Background())
	return &session{m: m, tok: tok, device: name, lock: make(chan struct{}, 1), ctx: sctx, cancel: cancel}, note, nil
}

// loadError gives a load failure its code.
func loadError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return codef(codeAborted, "loading was aborted")
	}
	if codeOf(err) != "" {
		return err
	}
	var he *httpError
	if errors.As(err, &he) {
		if he.notFound {
			return coded(codeNotFound, err)
		}
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

// gpuCheck asks the worker (web/worker.js) for WebGPU errors caught since the
// last check: the binding does not report validation errors, out-of-memory
// or device loss, which WebGPU delivers asynchronously.
func gpuCheck() error {
	check := js.Global().Get("mamba2GPUCheck")
	if check.Type() != js.TypeFunction {
		return nil // a host without the worker's watch
	}
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
