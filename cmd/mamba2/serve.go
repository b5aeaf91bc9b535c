package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/serve"
	"github.com/mamba2web/mamba2/serve/openai"
)

// cmdServe serves model folders and the web demo over HTTP until ctx ends
// (Ctrl-C), then lets requests in flight finish for a few seconds. With
// --model it also serves that model with OpenAI's API at /v1 and its
// metrics at /metrics (serve/openai, docs/server.md).
func cmdServe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("serve")
	var api apiFlags
	api.register(fs)
	modelsDir := fs.String("models", "", "folder of model folders, served as /models/<name>/ (the embedded mamba2-go-tiny is always there too)")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (host:port; port 0 picks a free one)")
	static := fs.String("static", "", "folder served at / (the demo page, its module, worker and wasm)")
	accessLog := fs.Bool("log", false, "print one line per request on stdout: method, path, status, bytes sent, Range, duration")
	if err := parse(fs, args); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) { api.enabled = api.enabled || f.Name == "model" })
	if err := api.check(fs); err != nil {
		return err
	}
	o := serve.Options{ModelsDir: *modelsDir, ErrorLog: log.New(stderr, "mamba2 serve: ", log.LstdFlags)}
	// Links out of the folder are not followed; dotfiles and anything but
	// regular files are not served.
	o.StaticDir = *static
	h, err := serve.New(o)
	if err != nil {
		return err
	}
	defer h.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("serve: %v", err)
	}
	var handler http.Handler = h
	var apiDone func()
	if api.enabled {
		var err error
		if handler, apiDone, err = api.start(ctx, h, o.ErrorLog, stdout, stderr); err != nil {
			ln.Close()
			return err
		}
		defer apiDone()
	}
	if *accessLog {
		handler = logRequests(handler, stdout)
	}
	srv := serve.NewServer(*addr, handler) // header, idle and per-write timeouts
	srv.ErrorLog = o.ErrorLog
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "mamba2 serve: listening on %s/\n", base)
	for _, name := range h.ModelNames() {
		fmt.Fprintf(stdout, "  model %s: %s/models/%s/\n", name, base, name)
	}
	if api.enabled {
		fmt.Fprintf(stdout, "  OpenAI API for %s: %s/v1 (%d slots; metrics at %s/metrics)\n", api.name, base, api.slots, base)
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(stderr, "mamba2 serve: %s is reachable from other machines\n", ln.Addr())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve: %v", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdown)
	if errors.Is(err, context.DeadlineExceeded) {
		srv.Close() // a slow client: stop waiting for it
		err = nil
	}
	if serr := <-done; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	fmt.Fprintln(stdout, "mamba2 serve: stopped")
	return err
}

// logRequests writes one line per finished request to w:
//
//	GET /models/mamba2-go-tiny/config.json 200 1234 range="" 0.4ms
func logRequests(h http.Handler, w io.Writer) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: rw, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		mu.Lock()
		fmt.Fprintf(w, "%s %s %d %d range=%q %s\n", r.Method, r.URL.RequestURI(), rec.status, rec.bytes,
			r.Header.Get("Range"), time.Since(start).Round(100*time.Microsecond))
		mu.Unlock()
	})
}

// recorder notes the status and body size of a response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// apiFlags are serve's options for the OpenAI API (--model turns it on).
type apiFlags struct {
	modelFlags
	enabled      bool
	name         string // served as "model"; default from --model
	chatTemplate string
	queue        int
	slots        int
	timeout      time.Duration
	maxTokens    int
	prefixMiB    int
	loras        []loraFlag // --lora, in order
}

// loraFlag is one --lora NAME=SOURCE: an adapter attached apart from the
// weights and served as the model NAME.
type loraFlag struct{ name, source string }

func (a *apiFlags) register(fs *flag.FlagSet) {
	a.modelFlags.register(fs)
	fs.Lookup("model").Usage = "serve this model with OpenAI's API at /v1 (a folder, http(s) URL or hub id; " + serve.EmbeddedModel + ", when no folder has that name, is the embedded one)"
	fs.StringVar(&a.name, "served-model-name", "", `the name clients give as "model" (default: the hub id, or the folder's or URL's last element)`)
	fs.StringVar(&a.chatTemplate, "chat-template", "", "a Jinja chat template `file` to use instead of the model's (tokenizer_config.json, chat_template.jinja)")
	fs.IntVar(&a.slots, "slots", 8, "generations that run at once, batched into one forward pass a step (continuous batching); 1 runs one at a time")
	fs.IntVar(&a.queue, "queue", 32, "generations that may wait besides the --slots running; more get 429")
	fs.DurationVar(&a.timeout, "timeout", 10*time.Minute, "the longest a generation request may take, queueing included (504 after)")
	fs.IntVar(&a.maxTokens, "max-tokens", 4096, "the most tokens a request may ask for")
	fs.IntVar(&a.prefixMiB, "prefix-cache-mib", 256, "MiB of saved states of chat prompt prefixes (system prompts, earlier turns) kept to skip their prefill; 0: none")
	fs.Func("lora", "a PEFT LoRA adapter kept apart from the weights, served as the model `NAME=DIR`: a request whose \"model\" is NAME runs under it\n"+
		"(DIR a folder, an http(s) URL or a hub id, as for --adapter); repeat it for several, which share the batch (docs/adapters.md)", func(v string) error {
		name, src, ok := strings.Cut(v, "=")
		switch {
		case !ok || name == "" || src == "":
			return fmt.Errorf("want NAME=DIR, got %q", v)
		case slices.ContainsFunc(a.loras, func(l loraFlag) bool { return l.name == name }):
			return fmt.Errorf("adapter name %q given twice", name)
		}
		a.loras = append(a.loras, loraFlag{name, src})
		return nil
	})
}

// check refuses API options without --model and values that mean nothing.
func (a *apiFlags) check(fs *flag.FlagSet) error {
	if !a.enabled {
		var given []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "models", "addr", "static", "log":
			default:
				given = append(given, "--"+f.Name)
			}
		})
		if len(given) > 0 {
			return fmt.Errorf("serve: %s need --model (the model to serve at /v1)", strings.Join(given, ", "))
		}
		return nil
	}
	switch {
	case a.model == "":
		return errors.New("serve: --model is empty")
	case a.slots < 1:
		return fmt.Errorf("serve: --slots must be at least 1, got %d", a.slots)
	case a.queue < 1:
		return fmt.Errorf("serve: --queue must be at least 1, got %d", a.queue)
	case a.timeout <= 0:
		return fmt.Errorf("serve: --timeout must be positive, got %v", a.timeout)
	case a.maxTokens < 1:
		return fmt.Errorf("serve: --max-tokens must be at least 1, got %d", a.maxTokens)
	case a.prefixMiB < 0:
		return fmt.Errorf("serve: --prefix-cache-mib must be 0 or more, got %d", a.prefixMiB)
	}
	return nil
}

// start loads the model and returns the handler of the whole server:
// /v1 and /metrics to the API, everything else to files, and done, which
// stops the engine and closes the backend once the server has stopped.
func (a *apiFlags) start(ctx context.Context, files http.Handler, errLog *log.Logger, stdout, stderr io.Writer) (http.Handler, func(), error) {
	name := a.name
	if a.model == serve.EmbeddedModel {
		if _, err := os.Stat(a.model); errors.Is(err, fs.ErrNotExist) {
			a.model = "" // the embedded one, as the file server names it
		}
	}
	if name == "" {
		name = servedName(a.model)
	}
	a.name = name
	var override string
	if a.chatTemplate != "" {
		data, err := os.ReadFile(a.chatTemplate)
		if err != nil {
			return nil, nil, fmt.Errorf("--chat-template: %v", err)
		}
		override = string(data)
	}
	m, tok, err := a.load(ctx, stderr)
	if err != nil {
		return nil, nil, err
	}
	if tok == nil {
		m.Backend.Close()
		return nil, nil, errors.New("serve: the model has no tokenizer.json, which the OpenAI API needs (it takes and returns text)")
	}
	// The template's files: the folder again (a URL's are in the cache by
	// now; the load read config.json and the weights the same way).
	fsys, _, err := a.source(ctx, stderr)
	if err != nil {
		m.Backend.Close()
		return nil, nil, err
	}
	tmpl, tmplErr := openai.LoadChatTemplate(fsys, override, a.chatTemplate)
	if tmplErr != nil && !errors.Is(tmplErr, openai.ErrNoChatTemplate) {
		m.Backend.Close()
		return nil, nil, fmt.Errorf("serve: %v", tmplErr)
	}
	var loraNames []string
	for _, l := range a.loras {
		if l.name == name {
			m.Backend.Close()
			return nil, nil, fmt.Errorf("serve: --lora %s: that is the base model's served name", l.name)
		}
		if err := a.attach(ctx, m, l, stderr); err != nil {
			m.Backend.Close()
			return nil, nil, err
		}
		loraNames = append(loraNames, l.name)
		fmt.Fprintf(stderr, "mamba2 serve: adapter %s (%s) attached: \"model\": %q selects it\n", l.name, l.source, l.name)
	}
	stops := tmpl.StopIDs(m.Config.EOS, tok) // the model's EOS and the template's
	var cache *model.PrefixCache
	if a.prefixMiB > 0 {
		cache = model.NewPrefixCache(int64(a.prefixMiB) << 20)
	}
	// The engine: a scheduler of --slots sequences that owns the backend
	// from here until done. With --slots 1 it still runs one at a time,
	// through the same code, so there is one engine to trust.
	eng, err := openai.NewBatched(m, openai.BatchedOptions{Slots: a.slots, Queue: a.queue, Prefixes: cache})
	if err != nil {
		m.Backend.Close()
		return nil, nil, fmt.Errorf("serve: %v", err)
	}
	api, err := openai.New(openai.Options{
		Engine: eng, Tokenizer: tok, Model: name, Adapters: loraNames, VocabSize: m.Config.VocabSize,
		Template: tmpl, TemplateError: tmplErr, StopIDs: stops,
		Timeout: a.timeout, MaxTokens: a.maxTokens, Prefixes: cache, ErrorLog: errLog,
	})
	if err != nil {
		eng.Close()
		m.Backend.Close()
		return nil, nil, err
	}
	if tmpl == nil {
		fmt.Fprintf(stderr, "mamba2 serve: %s has no chat template: /v1/chat/completions answers 400 (give --chat-template FILE)\n", name)
	}
	done := func() {
		eng.Close()
		m.Backend.Close()
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Not a ServeMux: it would redirect paths with .. or // that the
		// file server answers with 400 itself.
		if p := r.URL.Path; p == "/v1" || strings.HasPrefix(p, "/v1/") || p == "/metrics" {
			api.ServeHTTP(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
	return h, done, nil
}

// attach opens a --lora adapter and attaches it to m, before the engine
// owns the backend.
func (a *apiFlags) attach(ctx context.Context, m *model.Model, l loraFlag, stderr io.Writer) error {
	fsys, src, err := openSource(ctx, "adapter", l.source, stderr)
	if err != nil {
		return fmt.Errorf("serve: --lora %s: %v", l.name, err)
	}
	ad, err := model.OpenAdapter(src, fsys)
	if err != nil {
		return fmt.Errorf("serve: --lora %s: %v", l.name, err)
	}
	if err := m.AttachAdapter(l.name, ad); err != nil {
		return fmt.Errorf("serve: --lora %s: %v", l.name, err)
	}
	return nil
}

// servedName is the default "model" name of --model's value: the embedded
// model's name, a hub id as given, or the last element of a folder or URL.
func servedName(m string) string {
	switch {
	case m == "":
		return serve.EmbeddedModel
	case loader.IsURL(m):
		return path.Base(strings.TrimRight(m, "/"))
	}
	if _, err := os.Stat(m); errors.Is(err, fs.ErrNotExist) && loader.IsHubID(m) {
		return m
	}
	return filepath.Base(filepath.Clean(m))
}
