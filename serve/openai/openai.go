// Package openai serves a model with OpenAI's HTTP API, the contract most
// clients and tools speak (the openai SDKs, LangChain, curl scripts), and
// the one vLLM serves too, so a client moves between them by its base URL:
//
//	GET  /v1/models              the model served, and its attached LoRA adapters
//	POST /v1/completions         text in, text out
//	POST /v1/chat/completions    messages in, through the model's chat template
//	GET  /metrics                Prometheus text format
//
// Responses are whole JSON objects or, with "stream": true, server-sent
// events (data: {chunk}\n\n … data: [DONE]\n\n). Errors have OpenAI's
// shape, {"error": {"message", "type", "param", "code"}}, with the status
// that fits: 400 for a request that is wrong (naming the field), 404 for
// another model's name, 413 for a body over 8 MiB, 429 with Retry-After
// when the engine's queue is full, 504 when a request outlives
// Options.Timeout, 503 when the server shuts down.
//
// The generation itself is an Engine's: Batched runs concurrent requests
// in one batched forward pass a step (model.Scheduler), Serial one at a
// time on the goroutine that owns the model.
package openai

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/tokenizer"
)

// Options configure a Handler.
type Options struct {
	// Engine runs the generations (required).
	Engine Engine
	// Tokenizer encodes prompts and decodes output (required).
	Tokenizer *tokenizer.Tokenizer
	// Model is the name clients give as "model" and /v1/models lists.
	Model string
	// Adapters are the names of LoRA adapters attached to the engine's
	// model (model.Model.AttachAdapter), served besides Model as vLLM
	// serves --lora-modules: a request whose "model" is one of them runs
	// under that adapter (model.Options.Adapter), one whose "model" is
	// Model under none, and /v1/models lists them all.
	Adapters []string
	// VocabSize bounds the token ids a completion prompt may hold.
	VocabSize int
	// Template renders chat requests; nil answers them with a 400 that
	// says why, TemplateError (ErrNoChatTemplate by default).
	Template      *ChatTemplate
	TemplateError error
	// StopIDs are the ids that end a generation; nil means the engine's
	// default, the model's EOS. A chat model's template often ends a turn
	// with its own token (<|im_end|>, <|eot_id|>); cmd/mamba2 adds the
	// id of the template's eos_token.
	StopIDs []int
	// Timeout bounds each generation request, queueing included; 0 means
	// 10 minutes.
	Timeout time.Duration
	// MaxTokens is the most tokens a request may ask for; 0 means 4096.
	MaxTokens int
	// ChatMaxTokens is a chat request's max_tokens when it gives none
	// (OpenAI's default is "until the model stops", which a base model
	// may never do); 0 means 512. A completion's is OpenAI's 16.
	ChatMaxTokens int
	// MaxN bounds "n"; 0 means 16.
	MaxN int
	// Prefixes, when set, is the engine's prefix cache, for /metrics.
	Prefixes *model.PrefixCache
	// RetryAfter is sent with a 429; 0 means 1 s.
	RetryAfter time.Duration
	// ErrorLog receives errors of the server's own (a failed
	// generation); nil discards them.
	ErrorLog *log.Logger
}

// Handler is the OpenAI-compatible API; see the package comment.
type Handler struct {
	o       Options
	created int64
	m       *metrics
	decode  func([]int) string
}

// New makes a Handler.
func New(o Options) (*Handler, error) {
	switch {
	case o.Engine == nil:
		return nil, errors.New("openai: Options.Engine is nil")
	case o.Tokenizer == nil:
		return nil, errors.New("openai: Options.Tokenizer is nil: the API takes and returns text, which needs the model's tokenizer.json")
	case o.Model == "":
		return nil, errors.New("openai: Options.Model (the served name) is empty")
	}
	seen := map[string]bool{o.Model: true}
	for _, a := range o.Adapters {
		if a == "" || seen[a] {
			return nil, fmt.Errorf("openai: adapter name %q is empty or served twice (the model is %q)", a, o.Model)
		}
		seen[a] = true
	}
	if o.VocabSize <= 0 {
		o.VocabSize = o.Tokenizer.VocabSize()
	}
	if o.Template == nil && o.TemplateError == nil {
		o.TemplateError = ErrNoChatTemplate
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 4096
	}
	if o.ChatMaxTokens <= 0 {
		o.ChatMaxTokens = min(512, o.MaxTokens)
	}
	if o.MaxN <= 0 {
		o.MaxN = 16
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = time.Second
	}
	if o.ErrorLog == nil {
		o.ErrorLog = log.New(io.Discard, "", 0)
	}
	tok := o.Tokenizer
	// Special tokens are left out of the text, as vLLM does
	// (skip_special_tokens): a chat template's markers are not content.
	return &Handler{o: o, created: time.Now().Unix(), m: newMetrics(o.Engine, o.Prefixes),
		decode: func(ids []int) string { return tok.DecodeWith(ids, true) }}, nil
}

// Endpoints, also the values of the metrics' endpoint label.
const (
	pathModels      = "/v1/models"
	pathCompletions = "/v1/completions"
	pathChat        = "/v1/chat/completions"
	pathMetrics     = "/metrics"
)

// ServeHTTP answers /v1/… and /metrics. Every answer of /v1 allows any
// origin (CORS), so a page elsewhere can call the API, as it can load
// models from the file server.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusWriter{ResponseWriter: w}
	endpoint := r.URL.Path
	switch {
	case endpoint == pathModels || strings.HasPrefix(endpoint, pathModels+"/"):
		endpoint = pathModels
	case endpoint == pathCompletions, endpoint == pathChat, endpoint == pathMetrics:
	default:
		endpoint = "other"
	}
	defer func() {
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		if rec.clientGone && !rec.wroteHeader {
			status = 499 // nginx's "client closed request"
		}
		h.m.requests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
	}()
	if endpoint == pathMetrics {
		if !allow(rec, r, http.MethodGet, http.MethodHead) {
			return
		}
		h.m.handler().ServeHTTP(rec, r)
		return
	}
	rec.Header().Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodOptions {
		rec.Header().Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		rec.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, OpenAI-Organization, OpenAI-Project")
		rec.Header().Set("Access-Control-Max-Age", "86400")
		rec.WriteHeader(http.StatusNoContent)
		return
	}
	switch endpoint {
	case pathModels:
		if allow(rec, r, http.MethodGet, http.MethodHead) {
			h.models(rec, r)
		}
	case pathCompletions, pathChat:
		if allow(rec, r, http.MethodPost) {
			h.generate(rec, r, endpoint)
		}
	default:
		writeError(rec, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error",
			Message: fmt.Sprintf("Invalid URL (%s %s): this server answers GET /v1/models, POST /v1/completions, POST /v1/chat/completions and GET /metrics.", r.Method, r.URL.Path)})
	}
}

// allow answers 405 unless r's method is one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	if slices.Contains(methods, r.Method) {
		return true
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
		Message: fmt.Sprintf("Method %s is not allowed for %s; use %s.", r.Method, r.URL.Path, strings.Join(methods, " or "))})
	return false
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Root and Parent are vLLM's: for an adapter, the base model's name.
	Root   string  `json:"root"`
	Parent *string `json:"parent"`
}

func (h *Handler) models(w http.ResponseWriter, r *http.Request) {
	infos := []modelInfo{{ID: h.o.Model, Object: "model", Created: h.created, OwnedBy: "mamba2", Root: h.o.Model}}
	for _, a := range h.o.Adapters {
		infos = append(infos, modelInfo{ID: a, Object: "model", Created: h.created, OwnedBy: "mamba2", Root: h.o.Model, Parent: strp(h.o.Model)})
	}
	if id, ok := strings.CutPrefix(r.URL.Path, pathModels+"/"); ok {
		for _, info := range infos {
			if info.ID == id {
				writeJSON(w, http.StatusOK, info)
				return
			}
		}
		writeError(w, h.unknownModel(id))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": infos})
}

// adapterFor returns the attached adapter a request's "model" selects:
// "" for the base model, or a 404 for a name not served.
func (h *Handler) adapterFor(name string) (string, *apiError) {
	if name == h.o.Model {
		return "", nil
	}
	if slices.Contains(h.o.Adapters, name) {
		return name, nil
	}
	return "", h.unknownModel(name)
}

func (h *Handler) unknownModel(name string) *apiError {
	served := "`" + h.o.Model + "`"
	if len(h.o.Adapters) > 0 {
		served += " and its adapters `" + strings.Join(h.o.Adapters, "`, `") + "`"
	}
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Param: strp("model"), Code: strp("model_not_found"),
		Message: fmt.Sprintf("The model `%s` does not exist: this server serves %s.", name, served)}
}

// choiceSpec is one generation of a request: a choice of one prompt.
type choiceSpec struct {
	index    int // prompt·n + choice, as OpenAI numbers them
	ids      []int
	points   []int // chat: prefix lengths worth caching
	prefixed bool
	o        model.Options
}

// generate answers /v1/completions and /v1/chat/completions.
func (h *Handler) generate(w *statusWriter, r *http.Request, endpoint string) {
	start := time.Now()
	h.m.inFlight.Inc()
	defer h.m.inFlight.Dec()
	defer func() { h.m.duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds()) }()
	// The body must come within readBody; then the deadline is lifted, or
	// it would cut the server's watch for the client going away, which
	// cancels the generation.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(readBody))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	rc.SetReadDeadline(time.Time{})
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
				Message: fmt.Sprintf("The request body is over %d bytes.", maxBodyBytes)})
		} else {
			w.clientGone = true
		}
		return
	}
	var (
		s       *sampling
		name    string
		adapter string
		prompts [][]int
		points  [][]int
		chat    = endpoint == pathChat
		apiErr  *apiError
	)
	if chat {
		var req *chatRequest
		if req, apiErr = parseChat(body, h.o.MaxTokens, h.o.MaxN, h.o.ChatMaxTokens); apiErr == nil {
			s, name = &req.sampling, req.model
			if adapter, apiErr = h.adapterFor(name); apiErr == nil {
				var ids, pts []int
				ids, pts, apiErr = h.chatPrompt(req.messages)
				prompts, points = [][]int{ids}, [][]int{pts}
			}
		}
	} else {
		var req *completionRequest
		if req, apiErr = parseCompletion(body, h.o.MaxTokens, h.o.MaxN); apiErr == nil {
			s, name = &req.sampling, req.model
			if adapter, apiErr = h.adapterFor(name); apiErr == nil {
				prompts, apiErr = h.completionPrompts(req.prompts)
				points = make([][]int, len(prompts))
			}
		}
	}
	if apiErr == nil && len(prompts)*s.n > maxChoices {
		apiErr = invalid("n", "the request asks for %d generations (%d prompts, n %d); at most %d are allowed.", len(prompts)*s.n, len(prompts), s.n, maxChoices)
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}

	var seed uint64
	if s.seed != nil {
		seed = uint64(*s.seed)
	} else {
		seed = mrand.Uint64() >> 11
	}
	var specs []choiceSpec
	for p, ids := range prompts {
		for i := range s.n {
			specs = append(specs, choiceSpec{
				index: p*s.n + i, ids: ids, points: points[p], prefixed: chat,
				o: model.Options{
					Sampling: model.Sampling{Temperature: s.temperature, TopP: s.topP,
						PresencePenalty: s.presencePenalty, FrequencyPenalty: s.frequencyPenalty,
						Seed: seed + uint64(i)}, // each choice its own draw, all reproducible from one seed
					MaxNewTokens: s.maxTokens,
					StopIDs:      h.o.StopIDs,
					StopStrings:  s.stop,
					Decode:       h.decode,
					Adapter:      adapter,
				},
			})
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.Timeout)
	defer cancel()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	resp := &response{
		id:      newID(map[bool]string{true: "chatcmpl-", false: "cmpl-"}[chat]),
		chat:    chat,
		created: time.Now().Unix(),
		model:   name, // the base model's name or the adapter's
		n:       len(specs),
	}
	var once sync.Once
	ev := h.start(ctx, specs, s.stream, func() {
		once.Do(func() { h.m.firstToken.WithLabelValues(endpoint).Observe(time.Since(start).Seconds()) })
	})
	var results []choiceResult
	if s.stream {
		results = h.stream(w, r, stop, ev, resp, s.includeUsage, prompts)
	} else {
		results = h.wait(w, r, stop, ev, resp, prompts)
	}
	if results != nil {
		u := usageOf(prompts, results)
		h.m.promptTokens.Add(float64(u.PromptTokens))
		h.m.completionTokens.Add(float64(u.CompletionTokens))
		if u.Details != nil {
			h.m.cachedTokens.Add(float64(u.Details.CachedTokens))
		}
	}
}

// chatPrompt renders and tokenizes messages, and finds the prefixes worth
// caching: the end of the leading system (and developer) messages, shared
// by every conversation with that prompt, and the end of all messages
// before the generation prompt, which the next turn of the conversation
// begins with. A prefix counts only when its tokens are a prefix of the
// prompt's (a tokenizer may merge across the boundary); a template that
// refuses the shorter conversation just gives no point.
func (h *Handler) chatPrompt(msgs []Message) ([]int, []int, *apiError) {
	if h.o.Template == nil {
		return nil, nil, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: strp("messages"), Code: strp("no_chat_template"),
			Message: fmt.Sprintf("This model cannot take chat requests: %v. Use /v1/completions, or start the server with --chat-template FILE.", h.o.TemplateError)}
	}
	text, err := h.o.Template.Render(msgs, true)
	if err != nil {
		return nil, nil, invalid("messages", "%v", err)
	}
	ids, err := h.o.Tokenizer.EncodeWithChecked(text, false)
	if err != nil {
		return nil, nil, invalid("messages", "the conversation cannot be tokenized: %v", err)
	}
	if len(ids) == 0 {
		return nil, nil, invalid("messages", "the conversation renders to no tokens.")
	}
	if err := checkVocab(ids, h.o.VocabSize, "messages"); err != nil {
		return nil, nil, err
	}
	sys := 0
	for sys < len(msgs) && (msgs[sys].Role == "system" || msgs[sys].Role == "developer") {
		sys++
	}
	var points []int
	for _, k := range []int{sys, len(msgs)} {
		if k == 0 {
			continue
		}
		t, err := h.o.Template.Render(msgs[:k], false)
		if err != nil {
			continue
		}
		p, err := h.o.Tokenizer.EncodeWithChecked(t, false)
		if err == nil && len(p) > 0 && len(p) < len(ids) && slices.Equal(p, ids[:len(p)]) {
			points = append(points, len(p))
		}
	}
	return ids, points, nil
}

func (h *Handler) completionPrompts(in []promptInput) ([][]int, *apiError) {
	out := make([][]int, len(in))
	for i, p := range in {
		if p.isIDs {
			if err := checkVocab(p.ids, h.o.VocabSize, "prompt"); err != nil {
				return nil, err
			}
			out[i] = p.ids
			continue
		}
		ids, err := h.o.Tokenizer.EncodeChecked(p.text)
		if err != nil {
			return nil, invalid("prompt", "the prompt cannot be tokenized: %v", err)
		}
		if len(ids) == 0 {
			return nil, invalid("prompt", "the prompt encodes to no tokens.")
		}
		out[i] = ids
	}
	return out, nil
}

func checkVocab(ids []int, vocab int, param string) *apiError {
	for _, id := range ids {
		if id < 0 || id >= vocab {
			return invalid(param, "token id %d is outside the model's vocabulary of %d.", id, vocab)
		}
	}
	return nil
}

// event is what a running choice reports: a piece of text, or its end.
type event struct {
	index  int
	text   string
	done   bool
	res    model.Result
	cached int
	err    error
}

// events collects what the choices report, for the request's goroutine to
// write. The engine's callbacks only append here and never block: a slow
// client must not hold up the engine's worker, which serves everyone.
type events struct {
	mu   sync.Mutex
	list []event
	wake chan struct{}
}

func (e *events) push(v event) {
	e.mu.Lock()
	e.list = append(e.list, v)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// take waits for events and returns them all.
func (e *events) take() []event {
	for {
		e.mu.Lock()
		l := e.list
		e.list = nil
		e.mu.Unlock()
		if len(l) > 0 {
			return l
		}
		<-e.wake
	}
}

// start runs every choice on the engine at once (a batching engine runs
// them together; Serial queues them) and reports through the events.
// Only a stream needs the text as it comes (a whole answer is each
// Result's Text).
func (h *Handler) start(ctx context.Context, specs []choiceSpec, stream bool, firstToken func()) *events {
	ev := &events{wake: make(chan struct{}, 1)}
	for _, sp := range specs {
		o := sp.o
		o.OnToken = func(int) error { firstToken(); return nil }
		if stream {
			o.OnText = func(piece string) error { ev.push(event{index: sp.index, text: piece}); return nil }
		}
		go func() {
			var e event
			if pe, ok := h.o.Engine.(PrefixEngine); ok && sp.prefixed {
				e.res, e.cached, e.err = pe.GeneratePrefixed(ctx, sp.ids, sp.points, o)
			} else {
				e.res, e.err = h.o.Engine.Generate(ctx, sp.ids, o)
			}
			e.index, e.done = sp.index, true
			ev.push(e)
		}()
	}
	return ev
}

// choiceResult is a finished choice.
type choiceResult struct {
	index, prompt int
	res           model.Result
	cached        int
}

// errorFor turns a generation's error into the answer; nil when the
// client went away (there is no one to answer).
func (h *Handler) errorFor(r *http.Request, err error) *apiError {
	switch {
	case r.Context().Err() != nil, errors.Is(err, context.Canceled):
		// The client went away, or a write to it failed and the
		// generation was stopped for that (the only cancellations here).
		return nil
	case errors.Is(err, ErrQueueFull):
		return &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: strp("queue_full"),
			Message: "The server is busy: its generation queue is full. Retry after the time in Retry-After.", RetryAfter: int(max(1, h.o.RetryAfter.Round(time.Second).Seconds()))}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusGatewayTimeout, Type: "timeout_error", Code: strp("timeout"),
			Message: fmt.Sprintf("The request took longer than this server's limit of %v (queueing included); ask for fewer tokens, or retry later.", h.o.Timeout)}
	case errors.Is(err, ErrClosed):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Message: "The server is shutting down."}
	default:
		h.o.ErrorLog.Printf("generation failed: %v", err)
		return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: fmt.Sprintf("The generation failed: %v", err)}
	}
}

// collector folds the ends of choices into results; the first error (not
// the cancellations it causes in the other choices) is kept, and the
// other choices are then stopped.
type collector struct {
	results []choiceResult
	left    int // choices not yet ended
	err     error
	stop    func()
}

// add counts e if it is an end; n is the choices per prompt.
func (c *collector) add(e event, n int) {
	if !e.done {
		return
	}
	c.left--
	if e.err != nil {
		if c.err == nil {
			c.err = e.err
			c.stop()
		}
		return
	}
	c.results = append(c.results, choiceResult{index: e.index, prompt: e.index / n, res: e.res, cached: e.cached})
}

// wait answers a request without stream: one JSON object when every choice
// is done.
func (h *Handler) wait(w *statusWriter, r *http.Request, stop func(), ev *events, resp *response, prompts [][]int) []choiceResult {
	n := resp.n / len(prompts)
	c := &collector{left: resp.n, stop: stop}
	for c.left > 0 {
		for _, e := range ev.take() {
			c.add(e, n)
		}
	}
	if c.err != nil {
		if apiErr := h.errorFor(r, c.err); apiErr != nil {
			writeError(w, apiErr)
		} else {
			w.clientGone = true
		}
		return nil
	}
	slices.SortFunc(c.results, func(a, b choiceResult) int { return a.index - b.index })
	choices := make([]any, len(c.results))
	for i, cr := range c.results {
		choices[i] = resp.choice(cr.index, cr.res.Text, finishReason(cr.res.Reason))
	}
	writeJSON(w, http.StatusOK, resp.object(choices, usageOf(prompts, c.results)))
	return c.results
}

// writeIdle is how long a streamed write may wait for a client that does
// not read before the response is given up (and the generation stopped).
const writeIdle = 60 * time.Second

// readBody bounds how long a request's body may take to arrive (a client
// that sends its headers and then trickles or withholds the body would
// otherwise hold a goroutine for good).
const readBody = 30 * time.Second

// stream answers a request with stream: server-sent events as text comes.
// The status and headers wait for the first text or the first end, so
// that a request refused at once (a full queue) gets its proper status
// rather than an error event in a 200 stream.
func (h *Handler) stream(w *statusWriter, r *http.Request, stop func(), ev *events, resp *response, includeUsage bool, prompts [][]int) []choiceResult {
	n := resp.n / len(prompts)
	c := &collector{left: resp.n, stop: stop}
	rc := http.NewResponseController(w)
	started := false
	broken := false
	roleSent := map[int]bool{}
	var buf []byte
	send := func(v any) {
		data, _ := json.Marshal(v)
		buf = append(buf, "data: "...)
		buf = append(buf, data...)
		buf = append(buf, "\n\n"...)
	}
	flush := func() {
		if broken || len(buf) == 0 {
			buf = buf[:0]
			return
		}
		if !started {
			started = true
			hd := w.Header()
			hd.Set("Content-Type", "text/event-stream")
			hd.Set("Cache-Control", "no-cache")
			hd.Set("X-Accel-Buffering", "no") // nginx: pass events through as they come
			w.WriteHeader(http.StatusOK)
		}
		rc.SetWriteDeadline(time.Now().Add(writeIdle))
		if _, err := w.Write(buf); err != nil {
			broken = true
			stop() // nobody reads: stop generating
		} else if err := rc.Flush(); err != nil {
			broken = true
			stop()
		}
		buf = buf[:0]
	}
	role := func(index int) {
		if resp.chat && !roleSent[index] {
			roleSent[index] = true
			send(resp.chunk(index, map[string]any{"role": "assistant", "content": ""}, nil, includeUsage))
		}
	}
	errSent := false
	for c.left > 0 {
		for _, e := range ev.take() {
			if c.err == nil { // after an error, only the ends are counted
				switch {
				case !e.done:
					role(e.index)
					if resp.chat {
						send(resp.chunk(e.index, map[string]any{"content": e.text}, nil, includeUsage))
					} else {
						send(resp.chunk(e.index, e.text, nil, includeUsage))
					}
				case e.err == nil:
					role(e.index)
					fr := finishReason(e.res.Reason)
					if resp.chat {
						send(resp.chunk(e.index, map[string]any{}, &fr, includeUsage))
					} else {
						send(resp.chunk(e.index, "", &fr, includeUsage))
					}
				}
			}
			c.add(e, n)
		}
		switch {
		case c.err == nil:
			flush()
		case started && !errSent:
			// Too late for a status: an error event, as OpenAI's and
			// vLLM's streams carry one (the SDKs raise it), then the end.
			if apiErr := h.errorFor(r, c.err); apiErr != nil {
				send(map[string]any{"error": apiErr})
				buf = append(buf, "data: [DONE]\n\n"...)
			}
			flush()
			errSent = true
		}
	}
	if c.err != nil {
		if !started {
			if apiErr := h.errorFor(r, c.err); apiErr != nil {
				writeError(w, apiErr)
			} else {
				w.clientGone = true
			}
		}
		return nil
	}
	if includeUsage {
		u := usageOf(prompts, c.results)
		v := resp.base("chunk")
		v["choices"] = []any{}
		v["usage"] = u
		send(v)
	}
	buf = append(buf, "data: [DONE]\n\n"...)
	flush()
	if broken {
		w.clientGone = true
	}
	return c.results
}

func finishReason(r string) string {
	if r == "length" {
		return "length"
	}
	return "stop" // "eos" and "stop": the model ended, or a stop sequence did
}

// response builds the JSON of one request's answer.
type response struct {
	id      string
	chat    bool
	created int64
	model   string
	n       int
}

func (r *response) base(kind string) map[string]any {
	obj := "text_completion"
	if r.chat {
		obj = "chat.completion"
		if kind == "chunk" {
			obj = "chat.completion.chunk"
		}
	}
	return map[string]any{"id": r.id, "object": obj, "created": r.created, "model": r.model}
}

func (r *response) choice(index int, text, finish string) any {
	if r.chat {
		return map[string]any{"index": index, "message": map[string]any{"role": "assistant", "content": text},
			"logprobs": nil, "finish_reason": finish}
	}
	return map[string]any{"index": index, "text": text, "logprobs": nil, "finish_reason": finish}
}

func (r *response) object(choices []any, u usage) any {
	v := r.base("")
	v["choices"] = choices
	v["usage"] = u
	return v
}

// chunk is one streamed event of one choice: a completion's text, or a
// chat delta; finish is null until the choice's last chunk. With
// include_usage every chunk carries "usage": null and a last chunk the
// totals, as OpenAI sends them.
func (r *response) chunk(index int, content any, finish *string, includeUsage bool) any {
	v := r.base("chunk")
	ch := map[string]any{"index": index, "logprobs": nil, "finish_reason": finish}
	if r.chat {
		ch["delta"] = content
	} else {
		ch["text"] = content
	}
	v["choices"] = []any{ch}
	if includeUsage {
		v["usage"] = nil
	}
	return v
}

type usage struct {
	PromptTokens     int           `json:"prompt_tokens"`
	CompletionTokens int           `json:"completion_tokens"`
	TotalTokens      int           `json:"total_tokens"`
	Details          *promptDetail `json:"prompt_tokens_details,omitempty"`
}

type promptDetail struct {
	CachedTokens int `json:"cached_tokens"`
}

// usageOf counts each prompt once and every choice's tokens; cached
// tokens are, per prompt, the most any of its choices restored.
func usageOf(prompts [][]int, results []choiceResult) usage {
	var u usage
	for _, p := range prompts {
		u.PromptTokens += len(p)
	}
	cached := map[int]int{}
	for _, r := range results {
		u.CompletionTokens += len(r.res.IDs)
		cached[r.prompt] = max(cached[r.prompt], r.cached)
	}
	total := 0
	for _, c := range cached {
		total += c
	}
	if total > 0 {
		u.Details = &promptDetail{CachedTokens: total}
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

func newID(prefix string) string {
	b := make([]byte, 12)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// A deadline of its own: a connection kept alive from an earlier
	// response (a file, with its idle deadline) may hold an old one.
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeIdle))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)+1))
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, e.Status, map[string]any{"error": e})
}

// statusWriter notes the status of a response for the metrics.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	clientGone  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (Flush, write
// deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
