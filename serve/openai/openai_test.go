package openai

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/models"
	"github.com/mamba2web/mamba2/tokenizer"
)

// The embedded tiny model on the CPU backend, loaded once for the package.
var tiny struct {
	once sync.Once
	m    *model.Model
	tok  *tokenizer.Tokenizer
	err  error
}

func tinyModel(t testing.TB) (*model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	tiny.once.Do(func() {
		fsys := models.Tiny()
		tiny.m, tiny.err = model.Load(fsys, cpu.New(), model.LoadOptions{})
		if tiny.err != nil {
			return
		}
		var f fs.File
		if f, tiny.err = fsys.Open("tokenizer.json"); tiny.err != nil {
			return
		}
		defer f.Close()
		tiny.tok, tiny.err = tokenizer.Load(f)
	})
	if tiny.err != nil {
		t.Fatal(tiny.err)
	}
	return tiny.m, tiny.tok
}

// goChat is a chat template for a model of Go source: each message a
// comment line, the answer after "// assistant:".
const goChat = `{% for m in messages %}// {{ m.role }}: {{ m.content }}
{% endfor %}{% if add_generation_prompt %}// assistant:
{% endif %}`

const modelName = "mamba2-go-tiny"

// engines are the kinds of engine newEngine makes, which the tests of
// the Handler's behaviour with a real model run on (forEngines).
var engines = []string{"serial", "batched"}

// forEngines runs f as a subtest for each engine.
func forEngines(t *testing.T, f func(t *testing.T, kind string)) {
	for _, kind := range engines {
		t.Run(kind, func(t *testing.T) { f(t, kind) })
	}
}

type closingEngine interface {
	PrefixEngine
	QueueDepther
	Close() error
}

// newEngine makes an engine of the kind over m: a Serial, or a Batched of
// 4 slots (fewer than the load test's clients, so some wait).
func newEngine(t testing.TB, kind string, m *model.Model, queue int, cache *model.PrefixCache) closingEngine {
	t.Helper()
	switch kind {
	case "serial":
		return NewSerial(m, SerialOptions{Queue: queue, Prefixes: cache})
	case "batched":
		b, err := NewBatched(m, BatchedOptions{Slots: 4, Queue: queue, Prefixes: cache})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Fatalf("no engine %q", kind)
	return nil
}

// newServer serves the tiny model through an engine of the kind with a
// prefix cache and the goChat template; edit changes the Options first.
func newServer(t *testing.T, kind string, edit func(*Options)) (*httptest.Server, *Handler) {
	t.Helper()
	m, tok := tinyModel(t)
	tmpl, err := ParseChatTemplate(goChat, "", "", "goChat")
	if err != nil {
		t.Fatal(err)
	}
	cache := model.NewPrefixCache(64 << 20)
	eng := newEngine(t, kind, m, 64, cache)
	o := Options{Engine: eng, Tokenizer: tok, Model: modelName, VocabSize: m.Config.VocabSize, Template: tmpl, Prefixes: cache}
	if edit != nil {
		edit(&o)
	}
	h, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		eng.Close()
	})
	return srv, h
}

func post(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, data
}

type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int    `json:"index"`
		Text    string `json:"text"`
		Message *struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
		Details          *struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
}

// TestErrors: every bad request gets OpenAI's error shape, the right
// status, the parameter at fault and a message that names the problem.
func TestErrors(t *testing.T) {
	srv, _ := newServer(t, "serial", nil)
	noTemplate, _ := newServer(t, "serial", func(o *Options) { o.Template = nil })
	long := strings.Repeat("x", maxBodyBytes+1)
	for _, tc := range []struct {
		name, method, path, body string
		base                     string
		status                   int
		param, typ, msg          string
	}{
		{"bad JSON", "POST", pathCompletions, `{"model": `, "", 400, "", "invalid_request_error", "could not parse the JSON body"},
		{"not an object", "POST", pathCompletions, `[1]`, "", 400, "", "invalid_request_error", "must be a JSON object"},
		{"two values", "POST", pathCompletions, `{} {}`, "", 400, "", "invalid_request_error", "more than one JSON value"},
		{"unknown field", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "temprature": 1}`, "", 400, "temprature", "invalid_request_error", "Unrecognized request argument supplied: temprature"},
		{"wrong type", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "temperature": "hot"}`, "", 400, "temperature", "invalid_request_error", "expected a number, but got a string"},
		{"max_tokens fraction", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "max_tokens": 1.5}`, "", 400, "max_tokens", "invalid_request_error", "expected an integer"},
		{"stream not bool", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "stream": 1}`, "", 400, "stream", "invalid_request_error", "expected a boolean"},
		{"no model", "POST", pathCompletions, `{"prompt": "x"}`, "", 400, "model", "invalid_request_error", "you must provide a model parameter"},
		{"unknown model", "POST", pathCompletions, `{"model": "gpt-4", "prompt": "x"}`, "", 404, "model", "invalid_request_error", "The model `gpt-4` does not exist"},
		{"no prompt", "POST", pathCompletions, `{"model": "mamba2-go-tiny"}`, "", 400, "prompt", "invalid_request_error", "you must provide a prompt"},
		{"empty prompt", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": ""}`, "", 400, "prompt", "invalid_request_error", "'prompt' is empty"},
		{"empty prompt list", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": []}`, "", 400, "prompt", "invalid_request_error", "empty array"},
		{"empty prompt in list", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": ["a", ""]}`, "", 400, "prompt", "invalid_request_error", "prompt 1 is empty"},
		{"prompt of wrong type", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": {"text": "x"}}`, "", 400, "prompt", "invalid_request_error", "got an object"},
		{"token id out of vocabulary", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": [1, 99999]}`, "", 400, "prompt", "invalid_request_error", "token id 99999 is outside the model's vocabulary of 4096"},
		{"temperature too high", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "temperature": 2.5}`, "", 400, "temperature", "invalid_request_error", "2.5 is out of range for 'temperature': it must be between 0 and 2"},
		{"top_p 0", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "top_p": 0}`, "", 400, "top_p", "invalid_request_error", "out of range for 'top_p'"},
		{"max_tokens 0", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "max_tokens": 0}`, "", 400, "max_tokens", "invalid_request_error", "0 is out of range for 'max_tokens': it must be between 1 and 4096"},
		{"n too large", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "n": 17}`, "", 400, "n", "invalid_request_error", "out of range for 'n'"},
		{"presence_penalty", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "presence_penalty": -3}`, "", 400, "presence_penalty", "invalid_request_error", "between -2 and 2"},
		{"too many stops", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "stop": ["a","b","c","d","e"]}`, "", 400, "stop", "invalid_request_error", "at most 4"},
		{"empty stop", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "stop": ""}`, "", 400, "stop", "invalid_request_error", "empty string"},
		{"stop of wrong type", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "stop": 3}`, "", 400, "stop", "invalid_request_error", "expected a string or an array of strings"},
		{"stream_options without stream", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "stream_options": {"include_usage": true}}`, "", 400, "stream_options", "invalid_request_error", "only allowed when 'stream' is enabled"},
		{"unknown stream option", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "stream": true, "stream_options": {"x": 1}}`, "", 400, "stream_options.x", "invalid_request_error", "Unrecognized stream option"},
		{"seed of wrong type", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "seed": "s"}`, "", 400, "seed", "invalid_request_error", "expected an integer"},
		{"echo", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "echo": true}`, "", 400, "echo", "invalid_request_error", "'echo' is not supported"},
		{"best_of", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "best_of": 3}`, "", 400, "best_of", "invalid_request_error", "'best_of' other than 'n'"},
		{"too many generations", "POST", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": ["a", "b", "c", "d", "e"], "n": 16}`, "", 400, "n", "invalid_request_error", "asks for 80 generations (5 prompts, n 16); at most 64"},
		{"body too large", "POST", pathCompletions, `{"prompt": "` + long + `"}`, "", 413, "", "invalid_request_error", "over 8388608 bytes"},
		{"no messages", "POST", pathChat, `{"model": "mamba2-go-tiny"}`, "", 400, "messages", "invalid_request_error", "you must provide a messages parameter"},
		{"empty messages", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": []}`, "", 400, "messages", "invalid_request_error", "'messages' is empty"},
		{"bad role", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "robot", "content": "x"}]}`, "", 400, "messages[0].role", "invalid_request_error", "Invalid value: 'robot'"},
		{"no role", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"content": "x"}]}`, "", 400, "messages[0].role", "invalid_request_error", "Missing required parameter"},
		{"no content", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user"}]}`, "", 400, "messages[0].content", "invalid_request_error", "Missing required parameter"},
		{"image part", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}`, "", 400, "messages[0].content[0].type", "invalid_request_error", "only text content parts"},
		{"message field", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": "x", "tool_calls": []}]}`, "", 400, "messages[0].tool_calls", "invalid_request_error", "Unrecognized message field"},
		{"max_completion_tokens range", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5000}`, "", 400, "max_completion_tokens", "invalid_request_error", "out of range"},
		{"max tokens disagree", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "max_completion_tokens": 3}`, "", 400, "max_completion_tokens", "invalid_request_error", "disagree"},
		{"tools", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}`, "", 400, "tools", "invalid_request_error", "'tools' is not supported"},
		{"logprobs", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": "x"}], "logprobs": true}`, "", 400, "logprobs", "invalid_request_error", "'logprobs' is not supported"},
		{"response_format", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}`, "", 400, "response_format", "invalid_request_error", `"json_object" is not supported`},
		{"no chat template", "POST", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": "x"}]}`, "noTemplate", 400, "messages", "invalid_request_error", "This model cannot take chat requests: the model has no chat template"},
		{"GET completions", "GET", pathCompletions, ``, "", 405, "", "invalid_request_error", "Method GET is not allowed for /v1/completions; use POST"},
		{"POST models", "POST", pathModels, ``, "", 405, "", "invalid_request_error", "use GET or HEAD"},
		{"unknown path", "GET", "/v1/embeddings", ``, "", 404, "", "invalid_request_error", "Invalid URL (GET /v1/embeddings)"},
		{"unknown model id", "GET", pathModels + "/gpt-4", ``, "", 404, "model", "invalid_request_error", "The model `gpt-4` does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := srv.URL
			if tc.base == "noTemplate" {
				base = noTemplate.URL
			}
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, data)
			}
			var e errorBody
			if err := json.Unmarshal(data, &e); err != nil {
				t.Fatalf("not an error body: %s", data)
			}
			if e.Error.Type != tc.typ || !strings.Contains(e.Error.Message, tc.msg) {
				t.Errorf("error %s, want type %s and a message with %q", data, tc.typ, tc.msg)
			}
			if got := ""; e.Error.Param != nil {
				got = *e.Error.Param
				if got != tc.param {
					t.Errorf("param %q, want %q", got, tc.param)
				}
			} else if tc.param != "" {
				t.Errorf("param null, want %q", tc.param)
			}
		})
	}
}

// greedy is the model's own greedy continuation, through the engine.
func greedy(t *testing.T, h *Handler, prompt []int, maxNew int, stops ...string) model.Result {
	t.Helper()
	res, err := h.o.Engine.Generate(context.Background(), prompt, model.Options{MaxNewTokens: maxNew, StopIDs: h.o.StopIDs, StopStrings: stops, Decode: h.decode})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

const prompt = "package main\n\nimport (\n"

// TestCompletions: the text is the model's greedy continuation; usage
// counts the prompt and the new tokens; finish_reason says why it ended;
// a stop string cuts the text; n and a list of prompts give every choice.
func TestCompletions(t *testing.T) { forEngines(t, testCompletions) }

func testCompletions(t *testing.T, kind string) {
	srv, h := newServer(t, kind, nil)
	ids := h.o.Tokenizer.Encode(prompt)
	want := greedy(t, h, ids, 8)
	stop := want.Text[len(want.Text)/2:][:2]
	cut := greedy(t, h, ids, 8, stop)
	for _, tc := range []struct {
		name        string
		body        string
		texts       []string
		finish      string
		promptToks  int
		completions int
	}{
		{"greedy", `{"model": "mamba2-go-tiny", "prompt": ` + jsonString(prompt) + `, "max_tokens": 8, "temperature": 0}`,
			[]string{want.Text}, "length", len(ids), len(want.IDs)},
		{"token ids", `{"model": "mamba2-go-tiny", "prompt": ` + jsonInts(ids) + `, "max_tokens": 8, "temperature": 0}`,
			[]string{want.Text}, "length", len(ids), len(want.IDs)},
		{"stop", `{"model": "mamba2-go-tiny", "prompt": ` + jsonString(prompt) + `, "max_tokens": 8, "temperature": 0, "stop": [` + jsonString(stop) + `]}`,
			[]string{cut.Text}, "stop", len(ids), len(cut.IDs)},
		{"n=2, two prompts", `{"model": "mamba2-go-tiny", "prompt": [` + jsonString(prompt) + `, ` + jsonInts(ids) + `], "max_tokens": 8, "temperature": 0, "n": 2}`,
			[]string{want.Text, want.Text, want.Text, want.Text}, "length", 2 * len(ids), 4 * len(want.IDs)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := post(t, srv.URL+pathCompletions, tc.body)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %s", resp.Status, data)
			}
			var c completion
			if err := json.Unmarshal(data, &c); err != nil {
				t.Fatal(err)
			}
			if c.Object != "text_completion" || !strings.HasPrefix(c.ID, "cmpl-") || c.Model != modelName || len(c.Choices) != len(tc.texts) {
				t.Fatalf("response %s", data)
			}
			for i, ch := range c.Choices {
				if ch.Index != i || ch.Text != tc.texts[i] || ch.FinishReason == nil || *ch.FinishReason != tc.finish {
					t.Errorf("choice %d: %s, want %q finishing with %s", i, data, tc.texts[i], tc.finish)
				}
			}
			if u := c.Usage; u == nil || u.PromptTokens != tc.promptToks || u.CompletionTokens != tc.completions || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
				t.Errorf("usage %s, want %d + %d", data, tc.promptToks, tc.completions)
			}
		})
	}
}

// TestSampling: a seed makes a sampled completion reproducible, and the
// two choices of n=2 are different draws.
func TestSampling(t *testing.T) { forEngines(t, testSampling) }

func testSampling(t *testing.T, kind string) {
	srv, _ := newServer(t, kind, nil)
	body := `{"model": "mamba2-go-tiny", "prompt": ` + jsonString(prompt) + `, "max_tokens": 12, "temperature": 1.5, "top_p": 0.95, "seed": 7, "n": 2}`
	var runs [2][]string
	for r := range runs {
		resp, data := post(t, srv.URL+pathCompletions, body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", resp.Status, data)
		}
		var c completion
		json.Unmarshal(data, &c)
		for _, ch := range c.Choices {
			runs[r] = append(runs[r], ch.Text)
		}
	}
	if !slices.Equal(runs[0], runs[1]) {
		t.Errorf("the same seed gave %q and %q", runs[0], runs[1])
	}
	if len(runs[0]) != 2 || runs[0][0] == runs[0][1] {
		t.Errorf("n=2 gave %q: want two different draws", runs[0])
	}
}

// sse reads a stream of server-sent events: the data of each, and
// whether the last was [DONE].
func sse(t *testing.T, r io.Reader) (chunks []completion, done bool) {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("not an event line: %q", line)
		}
		if done {
			t.Fatalf("an event after [DONE]: %q", line)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c completion
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		chunks = append(chunks, c)
	}
	return chunks, done
}

func stream(t *testing.T, url, body string) ([]completion, bool) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		data, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %s", resp.Status, resp.Header.Get("Content-Type"), data)
	}
	return sse(t, resp.Body)
}

// TestStreaming: the streamed pieces join to the text a request without
// stream gets, each choice ends with its finish_reason, include_usage adds
// "usage": null to every chunk and a last chunk with the totals, and the
// stream ends with [DONE]; chat chunks open with the assistant's role.
func TestStreaming(t *testing.T) { forEngines(t, testStreaming) }

func testStreaming(t *testing.T, kind string) {
	srv, h := newServer(t, kind, func(o *Options) { o.StopIDs = []int{} }) // every choice runs to max_tokens
	ids := h.o.Tokenizer.Encode(prompt)
	want := greedy(t, h, ids, 10)
	for _, tc := range []struct {
		name, path, body string
		chat             bool
	}{
		{"completions", pathCompletions, `{"model": "mamba2-go-tiny", "prompt": ` + jsonString(prompt) + `, "max_tokens": 10, "temperature": 0, "stream": true, "n": 2, "stream_options": {"include_usage": true}}`, false},
		{"chat", pathChat, `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": "write a server"}], "max_tokens": 10, "temperature": 0, "stream": true, "n": 2, "stream_options": {"include_usage": true}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chunks, done := stream(t, srv.URL+tc.path, tc.body)
			if !done {
				t.Fatal("no [DONE]")
			}
			texts, finish := map[int]string{}, map[int]string{}
			sawRole := map[int]bool{}
			for _, c := range chunks[:len(chunks)-1] {
				if len(c.Choices) != 1 || c.Usage != nil {
					t.Fatalf("chunk %+v: want one choice and usage null", c)
				}
				ch := c.Choices[0]
				if finish[ch.Index] != "" {
					t.Errorf("a chunk of choice %d after its finish", ch.Index)
				}
				if tc.chat {
					if c.Object != "chat.completion.chunk" || ch.Delta == nil {
						t.Fatalf("chunk %+v", c)
					}
					if ch.Delta.Role == "assistant" {
						sawRole[ch.Index] = true
					} else if !sawRole[ch.Index] {
						t.Errorf("choice %d: content before the role", ch.Index)
					}
					if ch.Delta.Content != nil {
						texts[ch.Index] += *ch.Delta.Content
					}
				} else {
					if c.Object != "text_completion" {
						t.Fatalf("chunk %+v", c)
					}
					texts[ch.Index] += ch.Text
				}
				if ch.FinishReason != nil {
					finish[ch.Index] = *ch.FinishReason
				}
			}
			last := chunks[len(chunks)-1]
			if len(last.Choices) != 0 || last.Usage == nil || last.Usage.CompletionTokens != 20 || last.Usage.TotalTokens != last.Usage.PromptTokens+20 {
				t.Errorf("usage chunk %+v", last)
			}
			if len(texts) != 2 || texts[0] != texts[1] || finish[0] != "length" || finish[1] != "length" {
				t.Errorf("texts %v, finish %v", texts, finish)
			}
			if !tc.chat && texts[0] != want.Text {
				t.Errorf("streamed %q, want %q", texts[0], want.Text)
			}
		})
	}
}

// TestChatPrefixCache: a chat request's output is the model's greedy
// continuation of the rendered prompt, the same with the cache (a second
// request with the same system prompt restores it: cached_tokens) as
// without.
func TestChatPrefixCache(t *testing.T) { forEngines(t, testChatPrefixCache) }

func testChatPrefixCache(t *testing.T, kind string) {
	srv, h := newServer(t, kind, nil)
	msgs := func(user string) []Message {
		return []Message{{Role: "system", Content: "You write Go."}, {Role: "user", Content: user}}
	}
	body := func(user string) string {
		return `{"model": "mamba2-go-tiny", "messages": [{"role": "system", "content": "You write Go."}, {"role": "user", "content": ` + jsonString(user) + `}], "max_tokens": 10, "temperature": 0}`
	}
	tokens := func(m []Message) int {
		text, _ := h.o.Template.Render(m, false)
		return len(h.o.Tokenizer.EncodeWith(text, false))
	}
	for _, tc := range []struct {
		user   string
		cached int
	}{
		{"a web server", 0},
		{"a web server", tokens(msgs("a web server"))}, // the same conversation: all but the generation prompt
		{"a parser", tokens(msgs("")[:1])},             // the same system prompt
	} {
		text, _ := h.o.Template.Render(msgs(tc.user), true)
		want := greedy(t, h, h.o.Tokenizer.EncodeWith(text, false), 10)
		resp, data := post(t, srv.URL+pathChat, body(tc.user))
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", resp.Status, data)
		}
		var c completion
		json.Unmarshal(data, &c)
		if c.Object != "chat.completion" || len(c.Choices) != 1 || c.Choices[0].Message == nil ||
			c.Choices[0].Message.Role != "assistant" || c.Choices[0].Message.Content != want.Text {
			t.Errorf("%s, want content %q", data, want.Text)
		}
		cached := 0
		if c.Usage.Details != nil {
			cached = c.Usage.Details.CachedTokens
		}
		if cached != tc.cached {
			t.Errorf("%q: cached %d tokens, want %d", tc.user, cached, tc.cached)
		}
	}
	if s := h.o.Prefixes.Stats(); s.Hits < 2 || s.Entries < 2 {
		t.Errorf("prefix cache %+v", s)
	}
}

// blockingEngine waits for its context to end, noting that it did.
type blockingEngine struct {
	started chan struct{}
	ended   chan error
}

func (b *blockingEngine) Generate(ctx context.Context, prompt []int, o model.Options) (model.Result, error) {
	b.started <- struct{}{}
	<-ctx.Done()
	b.ended <- ctx.Err()
	return model.Result{}, ctx.Err()
}

// textThenBlock sends some text, then waits for its context to end.
type textThenBlock struct{}

func (textThenBlock) Generate(ctx context.Context, prompt []int, o model.Options) (model.Result, error) {
	o.OnToken(1)
	o.OnText("abc")
	<-ctx.Done()
	return model.Result{}, ctx.Err()
}

// recording passes generations to an engine and reports how each ended.
type recording struct {
	Engine
	ended chan model.Result
	errs  chan error
}

func (r *recording) Generate(ctx context.Context, prompt []int, o model.Options) (model.Result, error) {
	res, err := r.Engine.Generate(ctx, prompt, o)
	r.ended <- res
	r.errs <- err
	return res, err
}

type fullEngine struct{}

func (fullEngine) Generate(context.Context, []int, model.Options) (model.Result, error) {
	return model.Result{}, ErrQueueFull
}

// TestEngineErrors: a full queue is a 429 with Retry-After, also for a
// stream; a request past its timeout is a 504; a client that goes away
// cancels its generation.
func TestEngineErrors(t *testing.T) {
	body := `{"model": "mamba2-go-tiny", "prompt": "x", "max_tokens": 4}`
	streamBody := `{"model": "mamba2-go-tiny", "prompt": "x", "max_tokens": 4, "stream": true}`
	t.Run("queue full", func(t *testing.T) {
		srv, _ := newServer(t, "serial", func(o *Options) { o.Engine, o.RetryAfter = fullEngine{}, 3*time.Second })
		for _, b := range []string{body, streamBody} {
			resp, data := post(t, srv.URL+pathCompletions, b)
			var e errorBody
			json.Unmarshal(data, &e)
			if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" || e.Error.Code == nil || *e.Error.Code != "queue_full" {
				t.Errorf("%s Retry-After %q: %s", resp.Status, resp.Header.Get("Retry-After"), data)
			}
		}
	})
	t.Run("timeout", func(t *testing.T) {
		eng := &blockingEngine{started: make(chan struct{}, 1), ended: make(chan error, 1)}
		srv, _ := newServer(t, "serial", func(o *Options) { o.Engine, o.Timeout = eng, 50*time.Millisecond })
		resp, data := post(t, srv.URL+pathCompletions, body)
		if resp.StatusCode != 504 || !strings.Contains(string(data), "longer than this server's limit of 50ms") {
			t.Errorf("%s: %s", resp.Status, data)
		}
		if err := <-eng.ended; !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the engine saw %v", err)
		}
	})
	t.Run("timeout mid-stream", func(t *testing.T) {
		srv, _ := newServer(t, "serial", func(o *Options) { o.Engine, o.Timeout = textThenBlock{}, 50*time.Millisecond })
		resp, data := post(t, srv.URL+pathCompletions, streamBody)
		want := `data: {"choices":[{"finish_reason":null,"index":0,"logprobs":null,"text":"abc"}]`
		if resp.StatusCode != 200 || !strings.HasPrefix(string(data), want) ||
			!strings.Contains(string(data), `"type":"timeout_error"`) || !strings.HasSuffix(string(data), "\n\ndata: [DONE]\n\n") {
			t.Errorf("%s: %s", resp.Status, data)
		}
	})
	forEngines(t, func(t *testing.T, kind string) {
		var rec *recording
		srv, _ := newServer(t, kind, func(o *Options) {
			rec = &recording{Engine: o.Engine, ended: make(chan model.Result, 1), errs: make(chan error, 1)}
			o.Engine = rec
			o.StopIDs = []int{} // no EOS: only the client can end it early
		})
		resp, err := http.Post(srv.URL+pathCompletions, "application/json", strings.NewReader(`{"model": "mamba2-go-tiny", "prompt": "package main\n", "max_tokens": 4096, "temperature": 1, "seed": 1, "stream": true}`))
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: {") {
			t.Fatalf("first line %q, %v", line, err)
		}
		resp.Body.Close() // the client goes away
		res := <-rec.ended
		if err := <-rec.errs; !errors.Is(err, context.Canceled) || len(res.IDs) >= 4096 {
			t.Errorf("the generation ended with %v after %d tokens, want it cancelled", err, len(res.IDs))
		}
	})
	t.Run("client goes away", func(t *testing.T) {
		eng := &blockingEngine{started: make(chan struct{}, 1), ended: make(chan error, 1)}
		srv, _ := newServer(t, "serial", func(o *Options) { o.Engine = eng })
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+pathCompletions, strings.NewReader(streamBody))
		go func() {
			<-eng.started
			cancel()
		}()
		if _, err := http.DefaultClient.Do(req); err == nil {
			t.Error("the request succeeded")
		}
		select {
		case err := <-eng.ended:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("the engine saw %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the generation was not cancelled")
		}
	})
}

// TestModelsAndMetrics: /v1/models lists the model; /metrics has the
// series docs/server.md names, with the requests made so far counted.
func TestModelsAndMetrics(t *testing.T) { forEngines(t, testModelsAndMetrics) }

func testModelsAndMetrics(t *testing.T, kind string) {
	srv, _ := newServer(t, kind, nil)
	resp, err := http.Get(srv.URL + pathModels)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var list struct {
		Object string      `json:"object"`
		Data   []modelInfo `json:"data"`
	}
	if json.Unmarshal(data, &list) != nil || list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != modelName || list.Data[0].Object != "model" {
		t.Errorf("/v1/models: %s", data)
	}
	post(t, srv.URL+pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "max_tokens": 2}`)
	post(t, srv.URL+pathCompletions, `{"model": "nope", "prompt": "x"}`)
	resp, err = http.Get(srv.URL + pathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`mamba2_http_requests_total{endpoint="/v1/completions",status="200"} 1`,
		`mamba2_http_requests_total{endpoint="/v1/completions",status="404"} 1`,
		`mamba2_http_requests_total{endpoint="/v1/models",status="200"} 1`,
		"mamba2_completion_tokens_total 2",
		"mamba2_prompt_tokens_total ",
		"mamba2_queue_depth 0",
		`mamba2_time_to_first_token_seconds_count{endpoint="/v1/completions"} 1`,
		`mamba2_request_duration_seconds_count{endpoint="/v1/completions"} 2`,
		"mamba2_prefix_cache_entries 0",
		"mamba2_requests_in_flight 0",
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }
func jsonInts(v []int) string    { b, _ := json.Marshal(v); return string(b) }
