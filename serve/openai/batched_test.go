package openai

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamba2web/mamba2/model"
)

// TestEngineQueue: an engine takes Queue requests besides its running ones
// and refuses more with ErrQueueFull; a waiting request that is cancelled
// leaves the queue at once and frees its place; Close lets the running
// finish and fails the waiting. Serial runs one; Batched runs Slots.
func TestEngineQueue(t *testing.T) {
	m, tok := tinyModel(t)
	ids := tok.Encode(prompt)
	for _, tc := range []struct {
		name  string
		slots int // running at once
		make  func() closingEngine
	}{
		{"serial", 1, func() closingEngine { return NewSerial(m, SerialOptions{Queue: 1}) }},
		{"batched 1 slot", 1, func() closingEngine { return must(NewBatched(m, BatchedOptions{Slots: 1, Queue: 1})) }},
		{"batched 3 slots", 3, func() closingEngine { return must(NewBatched(m, BatchedOptions{Slots: 3, Queue: 1})) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.make()
			release := make(chan struct{})
			running := make(chan struct{}, tc.slots)
			first := make(chan error, tc.slots)
			for range tc.slots {
				go func() {
					once := false
					_, err := s.Generate(context.Background(), ids, model.Options{MaxNewTokens: 2, OnToken: func(int) error {
						if !once {
							once = true
							running <- struct{}{}
							<-release
						}
						return nil
					}})
					first <- err
				}()
			}
			for range tc.slots {
				<-running // every slot is busy
			}
			ctx, cancel := context.WithCancel(context.Background())
			queued := make(chan error, 1)
			go func() { _, err := s.Generate(ctx, ids, model.Options{MaxNewTokens: 2}); queued <- err }()
			for s.QueueDepth() != 1 {
				time.Sleep(time.Millisecond)
			}
			if _, err := s.Generate(context.Background(), ids, model.Options{MaxNewTokens: 2}); !errors.Is(err, ErrQueueFull) {
				t.Errorf("a request past the queue: %v, want ErrQueueFull", err)
			}
			cancel()
			if err := <-queued; !errors.Is(err, context.Canceled) {
				t.Errorf("the cancelled request: %v", err)
			}
			if d := s.QueueDepth(); d != 0 {
				t.Errorf("queue depth %d after the cancel", d)
			}
			late := make(chan error, 1)
			go func() { _, err := s.Generate(context.Background(), ids, model.Options{MaxNewTokens: 2}); late <- err }()
			for s.QueueDepth() != 1 {
				time.Sleep(time.Millisecond)
			}
			go func() {
				time.Sleep(20 * time.Millisecond) // Close is waiting by now, most likely; either order is right
				close(release)
			}()
			s.Close()
			for range tc.slots {
				if err := <-first; err != nil {
					t.Errorf("a running request: %v", err)
				}
			}
			if err := <-late; err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("the waiting request: %v", err)
			}
			if _, err := s.Generate(context.Background(), ids, model.Options{}); !errors.Is(err, ErrClosed) {
				t.Errorf("after Close: %v", err)
			}
			if _, _, err := s.GeneratePrefixed(context.Background(), ids, nil, model.Options{}); !errors.Is(err, ErrClosed) {
				t.Errorf("GeneratePrefixed after Close: %v", err)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestBatchedConcurrent: requests sent at once to the batched engine
// (completions and chats through the prefix cache, greedy and seeded, more
// than its slots) get exactly the answers the serial engine gives them one
// by one.
func TestBatchedConcurrent(t *testing.T) {
	var bodies []struct{ path, body string }
	for i := range 10 {
		b := struct{ path, body string }{pathCompletions, fmt.Sprintf(`{"model": %q, "prompt": "package main\n\nfunc f%d() {", "max_tokens": %d, "temperature": 0}`, modelName, i, 4+i)}
		switch i % 3 {
		case 1:
			b = struct{ path, body string }{pathChat, fmt.Sprintf(`{"model": %q, "messages": [{"role": "system", "content": "You write Go."}, {"role": "user", "content": "function %d"}], "max_tokens": 12, "temperature": 0}`, modelName, i)}
		case 2:
			b.body = fmt.Sprintf(`{"model": %q, "prompt": "type T%d struct {", "max_tokens": 10, "temperature": 0.9, "top_p": 0.9, "seed": %d, "n": 2}`, modelName, i, i)
		}
		bodies = append(bodies, b)
	}
	answers := func(t *testing.T, url string, concurrent bool) []string {
		out := make([]string, len(bodies))
		var wg sync.WaitGroup
		for i, b := range bodies {
			run := func() {
				resp, data := post(t, url+b.path, b.body)
				var c completion
				if resp.StatusCode != 200 || json.Unmarshal(data, &c) != nil {
					t.Errorf("request %d: %s: %s", i, resp.Status, data)
					return
				}
				for _, ch := range c.Choices {
					if ch.Message != nil {
						out[i] += "|" + ch.Message.Content
					} else {
						out[i] += "|" + ch.Text
					}
					out[i] += " (" + *ch.FinishReason + ")"
				}
			}
			if concurrent {
				wg.Go(run)
			} else {
				run()
			}
		}
		wg.Wait()
		return out
	}
	serialSrv, _ := newServer(t, "serial", nil)
	want := answers(t, serialSrv.URL, false)
	serialSrv.Close()
	for _, slots := range []int{1, 3, 8} {
		t.Run(fmt.Sprintf("%d slots", slots), func(t *testing.T) {
			srv, h := newServer(t, "batched", func(o *Options) {
				o.Engine = must(NewBatched(tiny.m, BatchedOptions{Slots: slots, Prefixes: o.Prefixes}))
			})
			defer h.o.Engine.(*Batched).Close()
			got := answers(t, srv.URL, true)
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("request %d: batched %q, serial %q", i, got[i], want[i])
				}
			}
		})
	}
}

// TestBatchedDisconnect: a streaming client that goes away frees its slot:
// its generation stops, and with one slot the next request runs.
func TestBatchedDisconnect(t *testing.T) {
	var b *Batched
	var rec *recording
	srv, _ := newServer(t, "batched", func(o *Options) {
		b = must(NewBatched(tiny.m, BatchedOptions{Slots: 1, Queue: 4, Prefixes: o.Prefixes}))
		rec = &recording{Engine: b, ended: make(chan model.Result, 1), errs: make(chan error, 1)}
		o.Engine = rec
		o.StopIDs = []int{} // no EOS: only the client can end it early
	})
	defer b.Close()
	resp, err := http.Post(srv.URL+pathCompletions, "application/json", strings.NewReader(`{"model": "mamba2-go-tiny", "prompt": "package main\n", "max_tokens": 4096, "temperature": 1, "seed": 1, "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: {") {
		t.Fatalf("first line %q, %v", line, err)
	}
	resp.Body.Close() // the client goes away
	if res, err := <-rec.ended, <-rec.errs; !errors.Is(err, context.Canceled) || len(res.IDs) >= 4096 {
		t.Errorf("the generation ended with %v after %d tokens, want it cancelled", err, len(res.IDs))
	}
	next, data := post(t, srv.URL+pathCompletions, `{"model": "mamba2-go-tiny", "prompt": "x", "max_tokens": 3}`)
	if next.StatusCode != 200 {
		t.Fatalf("the next request: %s: %s", next.Status, data)
	}
	b.mu.Lock()
	running, waiting := b.running, len(b.waiting)
	b.mu.Unlock()
	if running != 0 || waiting != 0 {
		t.Errorf("%d running and %d waiting after both ended", running, waiting)
	}
}
