//go:build !js

package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
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
