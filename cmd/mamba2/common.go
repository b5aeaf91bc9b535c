package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/models"
	"github.com/mamba2web/mamba2/tokenizer"
)

// modelFlags are the options every model-running command shares.
type modelFlags struct {
	model     string
	backend   string
	gatedNorm string
	quantize  string
	embedding string
	groupSize int
	adapters  []string // --adapter, in order
	profile   bool     // open WebGPU with kernel timing (set by bench --profile)
}

func (m *modelFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.model, "model", "", "model folder or http(s) URL (config.json, safetensors, tokenizer.json); default: the embedded mamba2-go-tiny")
	fs.StringVar(&m.backend, "backend", "auto", "auto, cpu or webgpu")
	fs.StringVar(&m.gatedNorm, "gated-norm", "grouped", "grouped (mamba_ssm) or full (transformers)")
	fs.StringVar(&m.quantize, "quantize", "", "quantize in_proj, out_proj, the embedding and lm_head while loading: int8 (per row) or int4 (groups, docs/quantization.md)")
	fs.StringVar(&m.embedding, "quantize-embedding", "", "with --quantize: the embedding and lm_head as int8 (the default: they cost the most quality per byte) or int4")
	fs.IntVar(&m.groupSize, "group-size", 0, "elements per int4 group along a row (default 128)")
	fs.Func("adapter", "a PEFT LoRA adapter `DIR` to merge into the weights at load (adapter_config.json + adapter_model.safetensors):\n"+
		"a folder, an http(s) URL or a hub id, as for --model; repeat it to merge several, in order (docs/adapters.md)", func(s string) error {
		if s == "" {
			return errors.New("empty adapter")
		}
		m.adapters = append(m.adapters, s)
		return nil
	})
}

// quant is what --quantize and --group-size ask for.
func (m *modelFlags) quant() (model.Quant, error) {
	if m.quantize == "" {
		if m.groupSize != 0 || m.embedding != "" {
			return model.Quant{}, errors.New("--group-size and --quantize-embedding need --quantize int8 or int4")
		}
		return model.Quant{}, nil
	}
	f, err := model.ParseFormat(m.quantize)
	if err != nil || !f.Quantized() {
		return model.Quant{}, fmt.Errorf("--quantize %q: want int8 or int4", m.quantize)
	}
	q := model.Quant{Format: f, GroupSize: m.groupSize}
	if m.embedding != "" {
		e, err := model.ParseFormat(m.embedding)
		if err != nil || !e.Quantized() {
			return model.Quant{}, fmt.Errorf("--quantize-embedding %q: want int8 or int4", m.embedding)
		}
		q.Embedding = e
	}
	int4 := f == model.FormatInt4 || q.Embedding == model.FormatInt4
	if !int4 && m.groupSize != 0 {
		return model.Quant{}, errors.New("--group-size is for int4; int8 has one scale per row")
	}
	if int4 && q.GroupSize == 0 {
		q.GroupSize = model.DefaultGroupSize
	}
	if err := q.Check(); err != nil {
		return model.Quant{}, fmt.Errorf("--group-size: %v", err)
	}
	return q, nil
}

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp{fs}
		}
		return fmt.Errorf("%s: %v (see mamba2 %s --help)", fs.Name(), err, fs.Name())
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// source opens the model: the embedded one when none is named, a folder,
// an http(s) URL, or a Hugging Face hub id (org/name[@revision], resolved
// under $HF_ENDPOINT as the Python stack does) when no folder has that name.
func (m *modelFlags) source(ctx context.Context, stderr io.Writer) (fs.FS, string, error) {
	if m.model == "" {
		return models.Tiny(), "embedded mamba2-go-tiny", nil
	}
	return openSource(ctx, "model", m.model, stderr)
}

// openSource opens a folder, an http(s) URL or a hub id (what is "model"
// or "adapter", for errors). Over HTTP, a model's files are downloaded
// into the cache first; an adapter's two files likewise, where the folder
// has them (OpenAdapter says what is missing).
func openSource(ctx context.Context, what, s string, stderr io.Writer) (fs.FS, string, error) {
	var files []string // what Prefetch fetches: nil is a model's files
	if what == "adapter" {
		files = []string{model.AdapterConfigFile, model.AdapterWeightsFile}
	}
	if loader.IsURL(s) {
		return openURL(ctx, s, stderr, files...)
	}
	st, err := os.Stat(s)
	if errors.Is(err, fs.ErrNotExist) && loader.IsHubID(s) {
		u, err := loader.HubURL(s, os.Getenv("HF_ENDPOINT"))
		if err != nil {
			return nil, "", err
		}
		return openURL(ctx, u, stderr, files...)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s folder: %v", what, err)
	}
	if !st.IsDir() {
		return nil, "", fmt.Errorf("%s %s is not a folder", what, s)
	}
	return loader.DirFS(s), s, nil // refuses FIFOs and devices instead of hanging on them
}

// openAdapters opens every --adapter, in order, and checks each against
// the model before a backend is opened.
func (m *modelFlags) openAdapters(ctx context.Context, cfg model.Config, ck *loader.Checkpoint, stderr io.Writer) ([]*model.Adapter, error) {
	var ads []*model.Adapter
	for _, s := range m.adapters {
		fsys, name, err := openSource(ctx, "adapter", s, stderr)
		if err != nil {
			return nil, err
		}
		a, err := model.OpenAdapter(name, fsys)
		if err != nil {
			return nil, err
		}
		ads = append(ads, a)
	}
	if err := model.CheckAdapters(cfg, ck, ads); err != nil {
		return nil, err
	}
	return ads, nil
}

// load opens the backend and the model, and the tokenizer when the folder
// has one (tok is nil otherwise).
func (m *modelFlags) load(ctx context.Context, stderr io.Writer) (*model.Model, *tokenizer.Tokenizer, error) {
	gn, err := model.ParseGatedNorm(m.gatedNorm)
	if err != nil {
		return nil, nil, err
	}
	q, err := m.quant()
	if err != nil {
		return nil, nil, err
	}
	fsys, name, err := m.source(ctx, stderr)
	if err != nil {
		return nil, nil, err
	}
	// The plan: config, safetensors headers and the tensors the config
	// needs, all read once and checked before touching any GPU.
	cfg, ck, err := model.Plan(fsys)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", name, err)
	}
	ads, err := m.openAdapters(ctx, cfg, ck, stderr)
	if err != nil {
		return nil, nil, err
	}
	var tok *tokenizer.Tokenizer
	if f, err := fsys.Open("tokenizer.json"); err == nil {
		tok, err = tokenizer.Load(f)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: tokenizer.json: %v", name, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	b, err := openBackend(backendFor(m.backend, cfg, stderr), m.profile, stderr)
	if err != nil {
		return nil, nil, err
	}
	w, err := model.LoadWeights(cfg, ck, b, model.LoadOptions{Quantize: q, Adapters: ads})
	if err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("%s: %v", name, err)
	}
	mod := &model.Model{Config: cfg, Backend: b, Weights: w, Adapters: model.AdapterInfos(ads)}
	mod.GatedNorm = gn
	return mod, tok, nil
}

// parseIDs reads "1,2,3".
func parseIDs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("--ids is empty")
	}
	var ids []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--ids: %q is not an integer", f)
		}
		ids = append(ids, v)
	}
	return ids, nil
}

func checkIDs(ids []int, vocab int) error {
	for _, id := range ids {
		if id < 0 || id >= vocab {
			return fmt.Errorf("token id %d is outside the vocabulary of %d", id, vocab)
		}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// openURL opens a Hugging Face-layout base URL, downloading every file once
// into the cache folder (in parallel, resumable, verified) so that a second
// run fetches no weights. HF_TOKEN, when set, is sent as a bearer token.
// files names the files to download (each only where it exists); none
// means a model's (HTTPFS.Prefetch).
func openURL(ctx context.Context, url string, stderr io.Writer, files ...string) (fs.FS, string, error) {
	cache, err := loader.NewCache("")
	if err != nil {
		return nil, "", err
	}
	o := loader.HTTPOptions{Cache: cache, OnRetry: func(err error, n int, wait time.Duration) {
		fmt.Fprintf(stderr, "mamba2: %v; retry %d in %v\n", err, n, wait.Round(time.Millisecond))
	}}
	// HF_TOKEN is the hub's: it goes to the hub's origin (HF_ENDPOINT's, by
	// default huggingface.co) and to no other server a URL names.
	hub := os.Getenv("HF_ENDPOINT")
	if hub == "" {
		hub = loader.DefaultHubEndpoint
	}
	if tok := os.Getenv("HF_TOKEN"); tok != "" && loader.SameOrigin(url, hub) {
		o.Header = map[string]string{"Authorization": "Bearer " + tok}
	}
	h, err := loader.OpenURL(ctx, url, o)
	if err != nil {
		return nil, "", err
	}
	if len(files) == 0 {
		if err := h.Prefetch(ctx); err != nil {
			return nil, "", err
		}
	}
	for _, f := range files {
		if err := h.Prefetch(ctx, f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, "", err
		}
	}
	return h, h.URL(), nil
}
