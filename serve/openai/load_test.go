package openai

import (
	"bufio"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	loadClients = flag.Int("load-clients", 64, "TestLoadTest: concurrent streaming clients")
	loadTokens  = flag.Int("load-tokens", 8, "TestLoadTest: max_tokens of each request")
	loadSlots   = flag.Int("load-slots", 8, "TestLoadTest: slots of the batched engine")
)

// TestLoadTest: many concurrent streaming clients (half completions, half
// chats sharing a system prompt) against the tiny model on the CPU: every
// request succeeds and every stream ends with [DONE]. It logs the
// percentiles of the time to the first text and to the end, as a client
// sees them; it asserts no timing (CI machines are shared and slow). It
// runs on both engines: Serial, and Batched of -load-slots slots.
// docs/server.md has measured numbers; rerun with
//
//	go test ./serve/openai -run LoadTest -v [-args -load-clients 64 -load-tokens 8 -load-slots 8]
func TestLoadTest(t *testing.T) { forEngines(t, testLoadTest) }

func testLoadTest(t *testing.T, kind string) {
	clients, tokens := *loadClients, *loadTokens
	var eng closingEngine
	srv, h := newServer(t, kind, func(o *Options) {
		if kind == "batched" {
			b, err := NewBatched(tiny.m, BatchedOptions{Slots: *loadSlots, Queue: clients, Prefixes: o.Prefixes})
			if err != nil {
				t.Fatal(err)
			}
			eng = b
		} else {
			eng = NewSerial(tiny.m, SerialOptions{Queue: clients, Prefixes: o.Prefixes})
		}
		o.Engine = eng
	})
	defer eng.Close()
	engine := "serial engine"
	if kind == "batched" {
		engine = fmt.Sprintf("batched engine of %d slots", *loadSlots)
	}
	type result struct {
		first, total time.Duration
		err          error
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, body := pathCompletions, fmt.Sprintf(`{"model": %q, "prompt": "package main\n\nfunc f%d() {", "max_tokens": %d, "stream": true, "temperature": 0.8, "seed": %d}`, modelName, i, tokens, i)
			if i%2 == 1 {
				path, body = pathChat, fmt.Sprintf(`{"model": %q, "messages": [{"role": "system", "content": "You write Go."}, {"role": "user", "content": "function %d"}], "max_tokens": %d, "stream": true, "seed": %d}`, modelName, i, tokens, i)
			}
			results[i] = func() (r result) {
				t0 := time.Now()
				resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
				if err != nil {
					r.err = err
					return
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 {
					r.err = fmt.Errorf("status %s", resp.Status)
					return
				}
				sc := bufio.NewScanner(resp.Body)
				done := false
				for sc.Scan() {
					line := sc.Text()
					switch {
					case line == "":
					case line == "data: [DONE]":
						done = true
					case strings.Contains(line, `"error"`):
						r.err = fmt.Errorf("error event %s", line)
					case r.first == 0 && (strings.Contains(line, `"text":"`) && !strings.Contains(line, `"text":""`) || strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`)):
						r.first = time.Since(t0)
					}
				}
				r.total = time.Since(t0)
				if err := sc.Err(); err != nil && r.err == nil {
					r.err = err
				}
				if !done && r.err == nil {
					r.err = fmt.Errorf("the stream ended without [DONE]")
				}
				return r
			}()
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	var firsts, totals []time.Duration
	errs := 0
	for i, r := range results {
		if r.err != nil {
			errs++
			t.Errorf("client %d: %v", i, r.err)
			continue
		}
		if r.first > 0 {
			firsts = append(firsts, r.first)
		}
		totals = append(totals, r.total)
	}
	if errs > 0 {
		t.Fatalf("%d of %d clients failed", errs, clients)
	}
	t.Logf("%d streaming clients, max_tokens %d, CPU backend, %s: all ended with [DONE] in %v", clients, tokens, engine, wall.Round(time.Millisecond))
	t.Logf("time to first token: %s (%d of %d streams had text)", percentiles(firsts), len(firsts), clients)
	t.Logf("total:               %s", percentiles(totals))
	t.Logf("prefix cache: %+v", h.o.Prefixes.Stats())
}

// percentiles formats p50, p90 and p99 (nearest rank) of ds.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	slices.Sort(ds)
	p := func(q float64) time.Duration {
		i := int(q*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))].Round(time.Millisecond)
	}
	return fmt.Sprintf("p50 %v  p90 %v  p99 %v", p(0.50), p(0.90), p(0.99))
}
