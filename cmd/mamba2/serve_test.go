//go:build !js

package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
	"github.com/mamba2web/mamba2/models"
)

// syncBuffer is an io.Writer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServeAccessLog(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--log"}, strings.NewReader(""), pw, &errb)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	var base string
	for lines.Scan() {
		if m := regexp.MustCompile(`listening on (http://\S+)/`).FindStringSubmatch(lines.Text()); m != nil {
			base = m[1]
			break
		}
	}
	if base == "" {
		t.Fatalf("no listening line; stderr: %s", errb.String())
	}
	logged := make(chan string, 16)
	go func() {
		for lines.Scan() {
			if !strings.HasPrefix(lines.Text(), "  model ") {
				logged <- lines.Text()
			}
		}
		close(logged)
	}()

	req, _ := http.NewRequest("GET", base+"/models/mamba2-go-tiny/config.json", nil)
	req.Header.Set("Range", "bytes=0-9")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("ranged GET: %s", resp.Status)
	}
	select {
	case line := <-logged:
		want := `GET /models/mamba2-go-tiny/config.json 206 10 range="bytes=0-9" `
		if !strings.HasPrefix(line, want) {
			t.Errorf("log line %q, want it to start with %q", line, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no access log line")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// startServe runs serve with args and returns its base URL; the server
// stops at the end of the test.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...), strings.NewReader(""), pw, &errb)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	var base string
	for lines.Scan() {
		if m := regexp.MustCompile(`listening on (http://\S+)/`).FindStringSubmatch(lines.Text()); m != nil {
			base = m[1]
			break
		}
	}
	if base == "" {
		t.Fatalf("no listening line; stderr: %s", errb.String())
	}
	go io.Copy(io.Discard, pr)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return base
}

// TestServeOpenAI: --model adds the OpenAI API to the file server, with
// --chat-template for a model that has none, and the files stay served.
func TestServeOpenAI(t *testing.T) {
	tmpl := filepath.Join(t.TempDir(), "chat.jinja")
	if err := os.WriteFile(tmpl, []byte("{% for m in messages %}// {{ m.content }}\n{% endfor %}"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := startServe(t, "--model", "mamba2-go-tiny", "--backend", "cpu", "--chat-template", tmpl, "--queue", "4", "--slots", "2", "--timeout", "1m")
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"models", "GET", "/v1/models", "", 200, `"id":"mamba2-go-tiny"`},
		{"completion", "POST", "/v1/completions", `{"model": "mamba2-go-tiny", "prompt": "package main\n", "max_tokens": 4, "temperature": 0}`, 200, `"finish_reason":"length"`},
		{"chat", "POST", "/v1/chat/completions", `{"model": "mamba2-go-tiny", "messages": [{"role": "user", "content": "main"}], "max_tokens": 4}`, 200, `"role":"assistant"`},
		{"unknown model", "POST", "/v1/completions", `{"model": "x", "prompt": "a"}`, 404, `"code":"model_not_found"`},
		{"metrics", "GET", "/metrics", "", 200, `mamba2_http_requests_total{endpoint="/v1/completions",status="200"} 1`},
		{"files", "GET", "/models/mamba2-go-tiny/config.json", "", 200, `"model_type": "mamba2"`},
		{"files keep their 400", "GET", "/models/../x", "", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(data), tc.want) {
				t.Errorf("%s: %s, want %d with %q", resp.Status, data, tc.status, tc.want)
			}
		})
	}
}

// TestServeFlags: the API's options need --model, and their values are
// checked, each error naming the flag.
func TestServeFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--queue", "3"}, "--queue need --model"},
		{[]string{"--backend", "cpu", "--chat-template", "x"}, "--backend, --chat-template need --model"},
		{[]string{"--model", "mamba2-go-tiny", "--queue", "0"}, "--queue must be at least 1"},
		{[]string{"--slots", "4"}, "--slots need --model"},
		{[]string{"--model", "mamba2-go-tiny", "--slots", "0"}, "--slots must be at least 1"},
		{[]string{"--model", "mamba2-go-tiny", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"--model", "mamba2-go-tiny", "--prefix-cache-mib", "-1"}, "--prefix-cache-mib must be 0 or more"},
		{[]string{"--model", "mamba2-go-tiny", "--backend", "cpu", "--chat-template", "/nonexistent/t.jinja"}, "--chat-template: open /nonexistent/t.jinja"},
		{[]string{"--model", ""}, "--model is empty"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			err := run(context.Background(), append([]string{"serve", "--addr", "127.0.0.1:0"}, tc.args...), strings.NewReader(""), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}

func TestServeServedName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "my-model")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ model, want string }{
		{"", "mamba2-go-tiny"},
		{"state-spaces/mamba2-130m", "state-spaces/mamba2-130m"},
		{"state-spaces/mamba2-130m@main", "state-spaces/mamba2-130m@main"},
		{"https://example.com/models/mamba2-chat/", "mamba2-chat"},
		{dir + "/", "my-model"},
	} {
		if got := servedName(tc.model); got != tc.want {
			t.Errorf("servedName(%q) = %q, want %q", tc.model, got, tc.want)
		}
	}
}

// TestServeLoRA: --lora NAME=DIR attaches an adapter served as the model
// NAME beside the base model; its mistakes are errors naming the flag.
func TestServeLoRA(t *testing.T) {
	dir := t.TempDir()
	cfg, err := model.LoadConfig(models.Tiny())
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range modeltest.RandomLoRA(cfg, 4, 7) {
		if err := os.WriteFile(filepath.Join(dir, name), f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := startServe(t, "--model", "mamba2-go-tiny", "--backend", "cpu", "--lora", "go-lora="+dir)
	texts := map[string]string{}
	for _, n := range []string{"mamba2-go-tiny", "go-lora"} {
		resp, err := http.Post(base+"/v1/completions", "application/json",
			strings.NewReader(`{"model": "`+n+`", "prompt": "package main\n", "max_tokens": 6, "temperature": 0}`))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(data), `"model":"`+n+`"`) {
			t.Fatalf("%s: %s %s", n, resp.Status, data)
		}
		texts[n] = string(data[strings.Index(string(data), `"text"`):])
	}
	if texts["go-lora"] == texts["mamba2-go-tiny"] {
		t.Errorf("the adapter's completion is the base model's: %s", texts["go-lora"])
	}
	resp, err := http.Get(base + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(data), `"id":"go-lora"`) || !strings.Contains(string(data), `"parent":"mamba2-go-tiny"`) {
		t.Errorf("/v1/models: %s", data)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--lora", "x"}, "want NAME=DIR"},
		{[]string{"--lora", "a=" + dir, "--lora", "a=" + dir}, `adapter name "a" given twice`},
		{[]string{"--model", "mamba2-go-tiny", "--backend", "cpu", "--lora", "mamba2-go-tiny=" + dir}, "the base model's served name"},
		{[]string{"--model", "mamba2-go-tiny", "--backend", "cpu", "--lora", "a=/nonexistent"}, "--lora a: adapter folder"},
	} {
		err := run(context.Background(), append([]string{"serve", "--addr", "127.0.0.1:0"}, tc.args...), strings.NewReader(""), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one with %q", tc.args, err, tc.want)
		}
	}
}
