//go:build !js && !wasip1

// These tests run an HTTP server on 127.0.0.1, which js/wasm and wasip1
// cannot do.

package loader

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"
)

// fakeServer serves a folder of files at /m/ with ETags (the sha256 of the
// content, as Hugging Face does for LFS files), Range and If-Range through
// http.ServeContent, logs every request, and lets a test take over any
// request with a fault function.
type fakeServer struct {
	srv   *httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	log   []request
	fault func(w http.ResponseWriter, r *http.Request, name string) bool
}

type request struct{ method, name, rng, ifRange string }

func newFakeServer(t *testing.T, files map[string][]byte) *fakeServer {
	s := &fakeServer{files: maps.Clone(files)}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// base has no trailing slash, so every test also checks that OpenURL adds it.
func (s *fakeServer) base() string { return s.srv.URL + "/m" }

func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

func (s *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/m/")
	s.mu.Lock()
	s.log = append(s.log, request{r.Method, name, r.Header.Get("Range"), r.Header.Get("If-Range")})
	fault := s.fault
	s.mu.Unlock()
	if fault != nil && fault(w, r, name) {
		return
	}
	s.serveFile(w, r, name)
}

func (s *fakeServer) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	data, ok := s.get(name)
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", etagOf(data))
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
}

func (s *fakeServer) get(name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.files[name]
	return d, ok
}

func (s *fakeServer) set(name string, data []byte) {
	s.mu.Lock()
	s.files[name] = data
	s.mu.Unlock()
}

func (s *fakeServer) setFault(f func(w http.ResponseWriter, r *http.Request, name string) bool) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

func (s *fakeServer) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.log...)
}

func (s *fakeServer) reset() {
	s.mu.Lock()
	s.log = nil
	s.mu.Unlock()
}

// count is the number of requests of method for names ending in suffix.
func (s *fakeServer) count(method, suffix string) int {
	n := 0
	for _, r := range s.requests() {
		if r.method == method && strings.HasSuffix(r.name, suffix) {
			n++
		}
	}
	return n
}

// cutWriter lets left body bytes through, then flushes them and drops the
// connection: a body that breaks off mid-stream. before runs just before
// the connection drops.
type cutWriter struct {
	http.ResponseWriter
	left   int
	before func()
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, _ := c.ResponseWriter.Write(p)
	c.left -= n
	if c.left == 0 {
		c.ResponseWriter.(http.Flusher).Flush()
		if c.before != nil {
			c.before()
		}
		panic(http.ErrAbortHandler)
	}
	return n, nil
}

// stallWriter sends n bytes, then nothing until the client goes away.
type stallWriter struct {
	http.ResponseWriter
	left int
	ctx  context.Context
}

func (c *stallWriter) Write(p []byte) (int, error) {
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, _ := c.ResponseWriter.Write(p)
	c.left -= n
	if c.left == 0 {
		c.ResponseWriter.(http.Flusher).Flush()
		<-c.ctx.Done()
		panic(http.ErrAbortHandler)
	}
	return n, nil
}

// synthModel is a single-file checkpoint with tensors of about 1 MB, so a
// body can break inside a tensor.
func synthModel(seed uint64) map[string][]byte {
	rnd := rand.New(rand.NewPCG(seed, 7))
	shapes := []struct {
		name  string
		shape []int
	}{{"a", []int{300000}}, {"b", []int{200, 1000}}, {"c", []int{1000}}}
	hdr := entry{}
	var data []byte
	for _, s := range shapes {
		n := 1
		for _, d := range s.shape {
			n *= d
		}
		begin := len(data)
		for range n {
			data = append(data, f32bytes(rnd.Float32()*2-1)...)
		}
		hdr[s.name] = entry{"dtype": "F32", "shape": s.shape, "data_offsets": []int{begin, len(data)}}
	}
	return map[string][]byte{
		"config.json":       []byte(`{"model_type": "mamba2"}`),
		SingleFile:          file(hdr, data),
		"tokenizer.json":    []byte(`{"version": "1.0"}`),
		"unrelated.safetxt": []byte("not read"),
	}
}

// dirFiles reads every file of a folder.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, de := range des {
		if de.Type().IsRegular() {
			b, err := os.ReadFile(filepath.Join(dir, de.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[de.Name()] = b
		}
	}
	return out
}

func mapFS(files map[string][]byte) fstest.MapFS {
	m := fstest.MapFS{}
	for n, d := range files {
		m[n] = &fstest.MapFile{Data: d}
	}
	return m
}

// tensors reads every tensor of a checkpoint as float32 bit patterns.
func tensors(t *testing.T, ck *Checkpoint) map[string][]uint32 {
	t.Helper()
	out := map[string][]uint32{}
	for _, n := range ck.Names() {
		v, err := ck.Float32s(n)
		if err != nil {
			t.Fatalf("reading %s: %v", n, err)
		}
		bits := make([]uint32, len(v))
		for i, x := range v {
			bits[i] = math.Float32bits(x)
		}
		out[n] = bits
	}
	return out
}

func sameTensors(t *testing.T, want, got map[string][]uint32) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%d tensors, want %d", len(got), len(want))
	}
	for n, w := range want {
		g := got[n]
		if len(g) != len(w) {
			t.Fatalf("%s: %d values, want %d", n, len(g), len(w))
		}
		for i := range w {
			if g[i] != w[i] {
				t.Fatalf("%s[%d] = %#x, want %#x", n, i, g[i], w[i])
			}
		}
	}
}

func localTensors(t *testing.T, files map[string][]byte) map[string][]uint32 {
	t.Helper()
	ck, err := Open(mapFS(files))
	if err != nil {
		t.Fatal(err)
	}
	return tensors(t, ck)
}

func fast() HTTPOptions { return HTTPOptions{Backoff: time.Millisecond} }

func openRemote(t *testing.T, base string, o HTTPOptions) (*HTTPFS, *Checkpoint) {
	t.Helper()
	h, err := OpenURL(t.Context(), base, o)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := Open(h)
	if err != nil {
		t.Fatal(err)
	}
	return h, ck
}

// TestHTTPMatchesLocal loads the fixture checkpoint (one file) and the
// sharded embedded model over HTTP and compares every tensor bit for bit
// with the local folder, and bounds the requests: one GET per tensor plus
// one per safetensors header.
func TestHTTPMatchesLocal(t *testing.T) {
	for _, dir := range []string{"../testdata/fixtures/tiny-g1", "../models/mamba2-go-tiny"} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			files := dirFiles(t, dir)
			local, err := Open(os.DirFS(dir))
			if err != nil {
				t.Fatal(err)
			}
			s := newFakeServer(t, files)
			h, remote := openRemote(t, s.base(), fast())
			sameTensors(t, tensors(t, local), tensors(t, remote))
			for _, n := range []string{"config.json", "tokenizer.json"} {
				want, ok := files[n]
				got, err := fs.ReadFile(h, n)
				if ok && (err != nil || !bytes.Equal(got, want)) {
					t.Errorf("%s over HTTP: %v (%d bytes, want %d)", n, err, len(got), len(want))
				}
			}
			gets, heads := s.count("GET", ".safetensors"), s.count("HEAD", "")
			limit := len(local.Names()) + len(local.Files())
			t.Logf("%d tensors in %d files: %d GETs of safetensors, %d HEADs, %d requests in all",
				len(local.Names()), len(local.Files()), gets, heads, len(s.requests()))
			if gets > limit {
				t.Errorf("%d GETs of safetensors, want at most %d (one per tensor and per header)", gets, limit)
			}
			if heads > len(files)+2 {
				t.Errorf("%d HEADs for %d files: files are looked up more than once", heads, len(files))
			}
			if n := s.count("GET", "tokenizer.json"); n > 1 {
				t.Errorf("tokenizer.json took %d GETs, want 1", n)
			}
		})
	}
}

// TestHTTPCache fills the cache (one GET per file, in parallel), then
// loads again: revalidation by HEAD only, zero GETs of weights; then with
// PreferCache and the server gone: no request at all.
func TestHTTPCache(t *testing.T) {
	dir := "../models/mamba2-go-tiny"
	files := dirFiles(t, dir)
	local, err := Open(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	want := tensors(t, local)
	s := newFakeServer(t, files)
	cache, err := NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var pmu sync.Mutex
	last := map[string][2]int64{}
	o := fast()
	o.Cache = cache
	o.Progress = func(f string, done, total int64) {
		pmu.Lock()
		last[f] = [2]int64{done, total}
		pmu.Unlock()
	}
	h1, err := OpenURL(t.Context(), s.base(), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := h1.Prefetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	shards := 0
	for n := range files {
		if strings.HasSuffix(n, ".safetensors") {
			shards++
			if g := s.count("GET", n); g != 1 {
				t.Errorf("%s: %d GETs to fill the cache, want 1", n, g)
			}
			if p := last[n]; p[0] != p[1] || p[1] != int64(len(files[n])) {
				t.Errorf("%s: last progress %v, want %d of %d", n, p, len(files[n]), len(files[n]))
			}
		}
	}
	ck1, err := Open(h1)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, want, tensors(t, ck1))
	if g := s.count("GET", ".safetensors"); g != shards {
		t.Errorf("%d GETs of safetensors after reading from the cache, want %d", g, shards)
	}

	s.reset()
	_, ck2 := openRemote(t, s.base(), HTTPOptions{Cache: cache})
	sameTensors(t, want, tensors(t, ck2))
	if g := s.count("GET", ".safetensors"); g != 0 {
		t.Errorf("second load: %d GETs of weights, want 0", g)
	}
	t.Logf("second load: %d requests (%d HEAD)", len(s.requests()), s.count("HEAD", ""))

	entries, err := cache.List()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range entries {
		name := e.URL[strings.LastIndex(e.URL, "/")+1:]
		b, err := os.ReadFile(e.File)
		if err != nil || !bytes.Equal(b, files[name]) {
			t.Errorf("cached %s differs from the server's file (%v)", e.URL, err)
		}
		if sum := sha256.Sum256(b); e.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("cached %s: sha256 %s recorded", name, e.SHA256)
		}
		total += e.Size
	}
	if len(entries) != shards+4 { // the shards, the index, config.json, generation_config.json, tokenizer.json
		t.Errorf("cache lists %d files, want %d", len(entries), shards+4)
	}
	t.Logf("cache: %d files, %d bytes", len(entries), total)

	s.srv.Close() // nothing can be asked now
	s.reset()
	o3 := HTTPOptions{Cache: cache, PreferCache: true, Retries: -1}
	_, ck3 := openRemote(t, s.base(), o3)
	sameTensors(t, want, tensors(t, ck3))

	if err := cache.Clear(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(cache.Dir()); len(left) != 0 {
		t.Errorf("Clear left %d files", len(left))
	}
}

// TestHTTPFaults injects server faults and checks the load either gives
// the exact bytes or stops with an error that names the URL and status.
func TestHTTPFaults(t *testing.T) {
	v1, v2 := synthModel(1), synthModel(2)
	want1, want2 := localTensors(t, v1), localTensors(t, v2)
	model := SingleFile

	t.Run("404 is ErrNotExist, and the index falls back to model.safetensors", func(t *testing.T) {
		s := newFakeServer(t, map[string][]byte{})
		h, err := OpenURL(t.Context(), s.base(), fast())
		if err != nil {
			t.Fatal(err)
		}
		_, err = fs.ReadFile(h, "config.json")
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), s.base()+"/config.json") || !strings.Contains(err.Error(), "404") {
			t.Errorf("missing config.json: %v", err)
		}
		if _, err := Open(h); err == nil || !strings.Contains(err.Error(), "no weights found: none of model.safetensors, model.safetensors.index.json, pytorch_model.bin") {
			t.Errorf("empty folder: %v", err)
		}
		s2 := newFakeServer(t, v1) // no index: Open must go on to model.safetensors
		_, ck := openRemote(t, s2.base(), fast())
		sameTensors(t, want1, tensors(t, ck))
	})

	t.Run("500 is retried, then succeeds", func(t *testing.T) {
		s := newFakeServer(t, v1)
		var mu sync.Mutex
		fails := map[string]int{}
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			mu.Lock()
			defer mu.Unlock()
			if name == model && fails[r.Method] < 2 {
				fails[r.Method]++
				http.Error(w, "busy", http.StatusInternalServerError)
				return true
			}
			return false
		})
		_, ck := openRemote(t, s.base(), fast())
		sameTensors(t, want1, tensors(t, ck))
		if fails["GET"] != 2 || fails["HEAD"] != 2 {
			t.Errorf("served %v 500s", fails)
		}
	})

	t.Run("persistent 500 is a clear error", func(t *testing.T) {
		s := newFakeServer(t, v1)
		o := fast()
		o.Retries = 2
		_, ck := openRemote(t, s.base(), o)
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			http.Error(w, "down", http.StatusInternalServerError)
			return true
		})
		_, err := ck.Float32s("b")
		for _, want := range []string{s.base() + "/" + model, "500 Internal Server Error", "gave up after 3 attempts"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want it to contain %q", err, want)
			}
		}
	})

	t.Run("backoff ends when the context does", func(t *testing.T) {
		s := newFakeServer(t, v1)
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		})
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, err := OpenURL(ctx, s.base(), HTTPOptions{Backoff: 10 * time.Second})
		if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
			t.Errorf("after %v: %v, want context.Canceled within 2 s", time.Since(start), err)
		}
	})

	t.Run("slow body stops promptly on cancel", func(t *testing.T) {
		s := newFakeServer(t, v1)
		ctx, cancel := context.WithCancel(t.Context())
		h, err := OpenURL(ctx, s.base(), fast())
		if err != nil {
			t.Fatal(err)
		}
		ck, err := Open(h)
		if err != nil {
			t.Fatal(err)
		}
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			data, _ := s.get(name)
			w.Header().Set("ETag", etagOf(data))
			http.ServeContent(&stallWriter{w, 1024, r.Context()}, r, name, time.Time{}, bytes.NewReader(data))
			return true
		})
		time.AfterFunc(200*time.Millisecond, cancel)
		start := time.Now()
		_, err = ck.Float32s("a")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		// Only a hang is a failure: a loaded machine may take a while.
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("stopped %v after the start; the cancel was due after 200 ms", d)
		}
	})

	t.Run("stalled body is resumed", func(t *testing.T) {
		s := newFakeServer(t, v1)
		o := fast()
		o.StallTimeout = 150 * time.Millisecond
		_, ck := openRemote(t, s.base(), o)
		var once sync.Once
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			hit := false
			once.Do(func() { hit = true })
			if !hit {
				return false
			}
			data, _ := s.get(name)
			w.Header().Set("ETag", etagOf(data))
			http.ServeContent(&stallWriter{w, 4096, r.Context()}, r, name, time.Time{}, bytes.NewReader(data))
			return true
		})
		sameTensors(t, want1, tensors(t, ck))
		checkResumed(t, s.requests())
	})

	t.Run("truncated body is resumed byte-exact", func(t *testing.T) {
		s := newFakeServer(t, v1)
		_, ck := openRemote(t, s.base(), fast())
		var mu sync.Mutex
		cuts := 0
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			mu.Lock()
			cut := cuts < 3
			cuts++
			mu.Unlock()
			if !cut {
				return false
			}
			data, _ := s.get(name)
			w.Header().Set("ETag", etagOf(data))
			http.ServeContent(&cutWriter{ResponseWriter: w, left: 100_000}, r, name, time.Time{}, bytes.NewReader(data))
			return true
		})
		sameTensors(t, want1, tensors(t, ck))
		checkResumed(t, s.requests())
	})

	t.Run("ETag change while streaming tensors is an error, never a mix", func(t *testing.T) {
		s := newFakeServer(t, v1)
		_, ck := openRemote(t, s.base(), fast())
		a, err := ck.Float32s("a")
		if err != nil {
			t.Fatal(err)
		}
		if math.Float32bits(a[0]) != want1["a"][0] {
			t.Fatal("first tensor is not version 1")
		}
		s.set(model, v2[model])
		_, err = ck.Float32s("b")
		if !errors.Is(err, ErrChanged) {
			t.Fatalf("got %v, want ErrChanged", err)
		}
		for _, want := range []string{"changed on the server during download", s.base() + "/" + model, "200 OK"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		// A new load sees version 2 whole.
		_, ck2 := openRemote(t, s.base(), fast())
		sameTensors(t, want2, tensors(t, ck2))
	})

	t.Run("ETag change during a cache download restarts the file cleanly", func(t *testing.T) {
		s := newFakeServer(t, v1)
		cache, err := NewCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			hit := false
			if name == model && r.Method == "GET" {
				once.Do(func() { hit = true })
			}
			if !hit {
				return false
			}
			data, _ := s.get(name)
			w.Header().Set("ETag", etagOf(data))
			swap := func() { s.set(model, v2[model]) }
			http.ServeContent(&cutWriter{w, len(data) / 2, swap}, r, name, time.Time{}, bytes.NewReader(data))
			return true
		})
		o := fast()
		o.Cache = cache
		_, ck := openRemote(t, s.base(), o)
		sameTensors(t, want2, tensors(t, ck))
		checkCacheHolds(t, cache, s.base()+"/"+model, v2[model])
	})

	t.Run("ETag changing on every try fails clearly and caches nothing", func(t *testing.T) {
		s := newFakeServer(t, v1)
		cache, err := NewCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		version := 0
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			if name != model || r.Method != "GET" || r.Header.Get("If-Range") == "" {
				return false
			}
			data, _ := s.get(name)
			w.Header().Set("ETag", etagOf(data))
			swap := func() {
				mu.Lock()
				version++
				next := synthModel(uint64(10 + version))[model]
				mu.Unlock()
				s.set(model, next)
			}
			http.ServeContent(&cutWriter{w, len(data) / 3, swap}, r, name, time.Time{}, bytes.NewReader(data))
			return true
		})
		o := fast()
		o.Cache = cache
		h, err := OpenURL(t.Context(), s.base(), o)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Open(h)
		if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "changed on the server during download") || !strings.Contains(err.Error(), s.base()+"/"+model) {
			t.Fatalf("got %v, want a clear ErrChanged naming the URL", err)
		}
		checkCacheHolds(t, cache, s.base()+"/"+model, nil)
	})

	t.Run("wrong Content-Length is retried, and named when it persists", func(t *testing.T) {
		for _, persistent := range []bool{false, true} {
			s := newFakeServer(t, v1)
			o := fast()
			o.Retries = 2
			_, ck := openRemote(t, s.base(), o)
			var mu sync.Mutex
			bad := 0
			s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
				mu.Lock()
				defer mu.Unlock()
				if !persistent && bad > 0 {
					return false
				}
				bad++
				data, _ := s.get(name)
				var a, b int
				fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
				w.Header().Set("ETag", etagOf(data))
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(data)))
				w.Header().Set("Content-Length", strconv.Itoa(b-a+1-10))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(data[a : b+1-10])
				return true
			})
			got := map[string][]uint32{}
			var err error
			for _, n := range ck.Names() {
				var v []float32
				if v, err = ck.Float32s(n); err != nil {
					break
				}
				got[n] = make([]uint32, len(v))
				for i, x := range v {
					got[n][i] = math.Float32bits(x)
				}
			}
			if !persistent {
				if err != nil {
					t.Fatal(err)
				}
				sameTensors(t, want1, got)
				continue
			}
			for _, want := range []string{"Content-Length", "206 Partial Content", s.base() + "/" + model} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v lacks %q", err, want)
				}
			}
		}
	})

	t.Run("server ignoring Range", func(t *testing.T) {
		s := newFakeServer(t, v1)
		var mu sync.Mutex
		cut := true
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			data, ok := s.get(name)
			if !ok {
				return false
			}
			w.Header().Set("ETag", etagOf(data))
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			if r.Method == "HEAD" {
				return true
			}
			mu.Lock()
			c := cut && name == model && r.Header.Get("Range") != "bytes=0-262143"
			cut = cut && !c
			mu.Unlock()
			if c { // and one of the whole-file answers breaks off
				(&cutWriter{ResponseWriter: w, left: len(data) / 2}).Write(data)
			}
			w.Write(data)
			return true
		})
		_, ck := openRemote(t, s.base(), fast())
		sameTensors(t, want1, tensors(t, ck))
		cache, _ := NewCache(t.TempDir())
		o := fast()
		o.Cache = cache
		_, ck2 := openRemote(t, s.base(), o)
		sameTensors(t, want1, tensors(t, ck2))
		checkCacheHolds(t, cache, s.base()+"/"+model, v1[model])
	})

	t.Run("HEAD refused: size from a one-byte GET", func(t *testing.T) {
		s := newFakeServer(t, v1)
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			if r.Method == "HEAD" {
				http.Error(w, "no HEAD here", http.StatusMethodNotAllowed)
				return true
			}
			return false
		})
		_, ck := openRemote(t, s.base(), fast())
		sameTensors(t, want1, tensors(t, ck))
		probes := 0
		for _, r := range s.requests() {
			if r.method == "GET" && r.rng == "bytes=0-0" {
				probes++
			}
		}
		if probes == 0 {
			t.Error("no Range: bytes=0-0 probe was made")
		}
	})

	t.Run("manifest sha256 is verified", func(t *testing.T) {
		files := maps.Clone(v1)
		sum := sha256.Sum256(v1[model])
		man := map[string]ManifestEntry{model: {Size: ptr(int64(len(v1[model]))), SHA256: hex.EncodeToString(sum[:])}}
		files[ManifestFile], _ = json.Marshal(man)
		s := newFakeServer(t, files)
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			if name == model { // an ETag that is no sha256, so only the manifest knows
				w.Header().Set("ETag", `"v1"`)
				http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(v1[model]))
				return true
			}
			return false
		})
		cache, _ := NewCache(t.TempDir())
		o := fast()
		o.Cache = cache
		_, ck := openRemote(t, s.base(), o)
		sameTensors(t, want1, tensors(t, ck))

		bad := maps.Clone(man)
		bad[model] = ManifestEntry{SHA256: strings.Repeat("0", 64)}
		b, _ := json.Marshal(bad)
		s.set(ManifestFile, b)
		cache2, _ := NewCache(t.TempDir())
		o.Cache = cache2
		h, err := OpenURL(t.Context(), s.base(), o)
		if err != nil {
			t.Fatal(err)
		}
		err = h.Prefetch(t.Context())
		if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), s.base()+"/"+model) {
			t.Errorf("wrong sha256 in the manifest: %v", err)
		}
		checkCacheHolds(t, cache2, s.base()+"/"+model, nil)

		bad[model] = ManifestEntry{Size: ptr(int64(5))}
		b, _ = json.Marshal(bad)
		s.set(ManifestFile, b)
		h, err = OpenURL(t.Context(), s.base(), fast())
		if err == nil {
			_, err = Open(h)
		}
		if err == nil || !strings.Contains(err.Error(), "manifest.json says 5") {
			t.Errorf("wrong size in the manifest: %v", err)
		}
	})

	t.Run("sha256 ETag checks a whole-file read", func(t *testing.T) {
		s := newFakeServer(t, v1)
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			data, ok := s.get(name)
			if !ok {
				return false
			}
			w.Header().Set("ETag", etagOf([]byte("something else")))
			http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
			return true
		})
		h, err := OpenURL(t.Context(), s.base(), fast())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fs.ReadFile(h, "config.json"); !errors.Is(err, ErrIntegrity) {
			t.Errorf("got %v, want ErrIntegrity", err)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// checkResumed finds a request that continued a broken one: a range that
// starts inside an earlier range of the same file, after its start.
func checkResumed(t *testing.T, reqs []request) {
	t.Helper()
	type span struct{ a, b int64 }
	var seen []span
	for _, r := range reqs {
		var a, b int64
		if _, err := fmt.Sscanf(r.rng, "bytes=%d-%d", &a, &b); err != nil {
			continue
		}
		for _, s := range seen {
			if a > s.a && a <= s.b && b == s.b {
				if r.ifRange == "" {
					t.Error("resumed request lacks If-Range")
				}
				return
			}
		}
		seen = append(seen, span{a, b})
	}
	t.Errorf("no request resumed a broken one: %+v", reqs)
}

// checkCacheHolds checks that the cache has exactly want for u (nothing
// when want is nil) and no partial file, resumable or not: the failures
// these tests make are of bytes that must not be kept.
func checkCacheHolds(t *testing.T, c *Cache, u string, want []byte) {
	t.Helper()
	entries, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		if e.URL != u {
			continue
		}
		found = true
		b, err := os.ReadFile(e.File)
		if want == nil || err != nil || !bytes.Equal(b, want) {
			t.Errorf("cache holds a wrong copy of %s (%v)", u, err)
		}
	}
	if want != nil && !found {
		t.Errorf("cache lacks %s", u)
	}
	des, _ := os.ReadDir(c.Dir())
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".part-") || strings.HasPrefix(de.Name(), ".resume-") {
			t.Errorf("partial file %s left in the cache", de.Name())
		}
		if want == nil && strings.HasSuffix(de.Name(), "-"+SingleFile) {
			t.Errorf("cache kept %s", de.Name())
		}
	}
}

func TestNormalizeURL(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"http://127.0.0.1:8080/models/tiny", "http://127.0.0.1:8080/models/tiny/", ""},
		{"https://example.org/org/m/resolve/main/", "https://example.org/org/m/resolve/main/", ""},
		{"https://huggingface.co/state-spaces/mamba2-130m", "https://huggingface.co/state-spaces/mamba2-130m/resolve/main/", ""},
		{"https://huggingface.co/state-spaces/mamba2-130m/resolve/abc123", "https://huggingface.co/state-spaces/mamba2-130m/resolve/abc123/", ""},
		{"HTTP://h/x", "http://h/x/", ""},
		{"ftp://h/x", "", "only http:// and https://"},
		{"/tmp/model", "", "only http:// and https://"},
		{"https://user:secret@h/x", "", "user:password"},
		{"https:///x", "", "no host"},
		{"https://h/x?download=1", "", "query"},
	} {
		u, err := NormalizeURL(c.in)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.in, err, c.err)
			} else if strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: error shows the password: %v", c.in, err)
			}
		case err != nil || u.String() != c.want:
			t.Errorf("%s: %v %v, want %s", c.in, u, err, c.want)
		}
	}
	if !IsURL("https://x/") || IsURL("models/x") {
		t.Error("IsURL")
	}
	if _, err := OpenURL(context.Background(), "file:///etc", HTTPOptions{}); err == nil {
		t.Error("file:// URL accepted")
	}
}

func TestExplainDisk(t *testing.T) {
	full := explainDisk("/c", &fs.PathError{Op: "write", Path: "/c/x", Err: syscall.ENOSPC})
	if !errors.Is(full, syscall.ENOSPC) || !strings.Contains(full.Error(), "is full") || !strings.Contains(full.Error(), "MAMBA2_CACHE") {
		t.Errorf("disk full: %v", full)
	}
	perm := explainDisk("/c", &fs.PathError{Op: "open", Path: "/c/x", Err: syscall.EACCES})
	if !errors.Is(perm, fs.ErrPermission) || !strings.Contains(perm.Error(), "cannot be written") {
		t.Errorf("permission: %v", perm)
	}
}

func TestPrefetchNeedsCache(t *testing.T) {
	s := newFakeServer(t, synthModel(3))
	h, err := OpenURL(t.Context(), s.base(), fast())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Prefetch(t.Context()); err == nil || !strings.Contains(err.Error(), "cache") {
		t.Errorf("Prefetch without a cache: %v", err)
	}
}
