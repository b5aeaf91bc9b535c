//go:build !js && !wasip1

// These tests run HTTP servers on 127.0.0.1, which js/wasm and wasip1
// cannot do.

package loader

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// hangBound is how long a test waits before it calls an operation hung.
// It only catches hangs; no test depends on how fast anything is.
const hangBound = 60 * time.Second

// TestHTTPTimeouts checks that a server that accepts requests and never
// answers them, or stops sending a body, fails the load with an error that
// names the URL and says what timed out, after the configured retries
// (each told to OnRetry), instead of hanging for minutes in silence. The
// timeouts are set to 50 ms here; the defaults are DefaultHeaderTimeout
// and DefaultStallTimeout.
func TestHTTPTimeouts(t *testing.T) {
	v1 := synthModel(1)
	block := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	tests := []struct {
		name  string
		fault func(s *fakeServer, w http.ResponseWriter, r *http.Request, name string) bool
		late  bool // fault only after the checkpoint is open
		file  string
		want  []string
	}{
		{name: "no response headers, ever", file: ManifestFile,
			fault: func(s *fakeServer, w http.ResponseWriter, r *http.Request, name string) bool {
				block(w, r)
				return true
			},
			want: []string{"HEAD", "/m/" + ManifestFile, "no answer (response headers) within 400ms", "gave up after 3 attempts"}},
		{name: "no response headers for a tensor", file: SingleFile, late: true,
			fault: func(s *fakeServer, w http.ResponseWriter, r *http.Request, name string) bool {
				block(w, r)
				return true
			},
			want: []string{"GET", "/m/" + SingleFile, "no answer (response headers) within 400ms", "gave up after 3 attempts"}},
		{name: "body never comes", file: SingleFile, late: true,
			fault: func(s *fakeServer, w http.ResponseWriter, r *http.Request, name string) bool {
				data, _ := s.get(name)
				w.Header().Set("ETag", etagOf(data))
				// Headers, then not one byte of the body.
				http.ServeContent(&stallWriter{w, 0, r.Context()}, r, name, time.Time{}, bytes.NewReader(data))
				return true
			},
			want: []string{"GET", "/m/" + SingleFile, "no data for 400ms", "gave up after 3 attempts"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFakeServer(t, v1)
			var mu sync.Mutex
			var retries []string
			o := fast()
			o.Retries = 2
			// Long enough that a healthy answer on a loaded 2-core machine
			// never trips them (only the faults may cause retries), short
			// enough to keep three tries of each fault quick.
			o.HeaderTimeout = 400 * time.Millisecond
			o.StallTimeout = 400 * time.Millisecond
			o.OnRetry = func(err error, retry int, wait time.Duration) {
				mu.Lock()
				retries = append(retries, fmt.Sprintf("%d: %v", retry, err))
				mu.Unlock()
			}
			fault := func(w http.ResponseWriter, r *http.Request, name string) bool { return tt.fault(s, w, r, name) }
			if !tt.late {
				s.setFault(fault)
			}
			ctx, cancel := context.WithTimeout(t.Context(), hangBound)
			defer cancel()
			var err error
			h, err := OpenURL(ctx, s.base(), o)
			if err == nil {
				var ck *Checkpoint
				if ck, err = Open(h); err != nil {
					t.Fatal(err)
				}
				s.setFault(fault)
				_, err = ck.Float32s("a")
			}
			if ctx.Err() != nil {
				t.Fatalf("still waiting after %v: %v", hangBound, err)
			}
			for _, want := range append(tt.want, s.base()+"/"+tt.file) {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v, want it to contain %q", err, want)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(retries) != 2 {
				t.Errorf("OnRetry called %d times, want 2: %q", len(retries), retries)
			}
			for _, r := range retries {
				if !strings.Contains(r, s.base()+"/"+tt.file) {
					t.Errorf("OnRetry got %q, which does not name the URL", r)
				}
			}
		})
	}
}

// TestRedirectCredentials follows redirects between two servers on two
// ports of 127.0.0.1 and checks where the token of HTTPOptions.Header
// (and Authorization in any case) arrives: only on the origin of the
// model URL (same scheme, host and port), never on the other port, never
// on the same port under another host name, and not back on the origin
// after a hop elsewhere (the other server could have bounced the request
// back to collect it). Go's client alone compares host names only.
func TestRedirectCredentials(t *testing.T) {
	var mu sync.Mutex
	type hit struct{ server, path, auth, token string }
	var hits []hit
	content := []byte(`{"model_type": "mamba2"}`)
	var a, b *httptest.Server
	handler := func(server string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits = append(hits, hit{server, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("X-Token")})
			mu.Unlock()
			name := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
			aPort := a.URL[strings.LastIndex(a.URL, ":")+1:]
			switch {
			case strings.HasPrefix(r.URL.Path, "/final/"):
				w.Header().Set("ETag", `"v1"`)
				http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(content))
			case strings.HasPrefix(r.URL.Path, "/bounce/"):
				http.Redirect(w, r, a.URL+"/final/"+name, http.StatusFound)
			case server == "a" && r.URL.Path == "/m/same.json":
				http.Redirect(w, r, a.URL+"/final/same.json", http.StatusFound)
			case server == "a" && r.URL.Path == "/m/relative.json":
				http.Redirect(w, r, "/final/relative.json", http.StatusTemporaryRedirect)
			case server == "a" && r.URL.Path == "/m/port.json":
				http.Redirect(w, r, b.URL+"/final/port.json", http.StatusFound)
			case server == "a" && r.URL.Path == "/m/back.json":
				http.Redirect(w, r, b.URL+"/bounce/back.json", http.StatusFound)
			case server == "a" && r.URL.Path == "/m/host.json":
				http.Redirect(w, r, "http://localhost:"+aPort+"/final/host.json", http.StatusFound)
			default:
				http.NotFound(w, r)
			}
		}
	}
	a = httptest.NewServer(handler("a"))
	defer a.Close()
	b = httptest.NewServer(handler("b"))
	defer b.Close()

	tests := []struct {
		file       string
		finalAt    string // server of the last hop
		keepsToken bool
	}{
		{"same.json", "a", true},
		{"relative.json", "a", true},
		{"port.json", "b", false},
		{"back.json", "a", false},
		{"host.json", "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			mu.Lock()
			hits = nil
			mu.Unlock()
			o := fast()
			o.NoManifest = true
			o.Header = map[string]string{"Authorization": "Bearer hf_secret", "X-Token": "t0ken"}
			h, err := OpenURL(t.Context(), a.URL+"/m", o)
			if err != nil {
				t.Fatal(err)
			}
			got, err := fs.ReadFile(h, tt.file)
			if err != nil || !bytes.Equal(got, content) {
				if tt.file == "host.json" && err != nil && strings.Contains(err.Error(), "localhost") {
					t.Skipf("localhost does not resolve here: %v", err)
				}
				t.Fatalf("read %s: %q, %v", tt.file, got, err)
			}
			mu.Lock()
			defer mu.Unlock()
			finals := 0
			for _, x := range hits {
				first := x.server == "a" && strings.HasPrefix(x.path, "/m/")
				if first && (x.auth != "Bearer hf_secret" || x.token != "t0ken") {
					t.Errorf("the model URL itself got Authorization %q, X-Token %q", x.auth, x.token)
				}
				if first {
					continue
				}
				if x.server == tt.finalAt && strings.HasPrefix(x.path, "/final/") {
					finals++
				}
				if tt.keepsToken && (x.auth == "" || x.token == "") {
					t.Errorf("%s %s lost the credentials on a same-origin redirect", x.server, x.path)
				}
				if !tt.keepsToken && (x.auth != "" || x.token != "") {
					t.Errorf("%s %s got Authorization %q, X-Token %q after leaving the origin", x.server, x.path, x.auth, x.token)
				}
			}
			if finals == 0 {
				t.Errorf("no request reached %s /final/: %+v", tt.finalAt, hits)
			}
		})
	}
}

// sizeServer claims, for each name, a size in HEAD (Content-Length) or,
// where HEAD is refused, in the Content-Range of a one-byte GET. A GET of
// the body sends zeros: up to the claimed size when it is small, else
// without Content-Length until 8 MiB, more than any limit under test, so
// a loader that trusted the claim would be seen reading far too much.
type sizeServer struct {
	srv    *httptest.Server
	claims map[string]int64
	noHead map[string]bool
	mu     sync.Mutex
	gets   map[string]int   // body GETs (not one-byte probes) per name
	sent   map[string]int64 // body bytes written per name
	send   map[string]int64 // body bytes to send, when not the claim
}

func newSizeServer(t *testing.T, claims map[string]int64, noHead map[string]bool) *sizeServer {
	s := &sizeServer{claims: claims, noHead: noHead, gets: map[string]int{}, sent: map[string]int64{}, send: map[string]int64{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/m/")
		size, ok := s.claims[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"claimed-`+strconv.FormatInt(size, 10)+`"`)
		switch {
		case r.Method == http.MethodHead && s.noHead[name]:
			http.Error(w, "no HEAD", http.StatusMethodNotAllowed)
		case r.Method == http.MethodHead:
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		case r.Header.Get("Range") == "bytes=0-0":
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-0/%d", size))
			w.Header().Set("Content-Length", "1")
			w.WriteHeader(http.StatusPartialContent)
			w.Write([]byte{0})
		default:
			s.mu.Lock()
			s.gets[name]++
			n := min(size, 8<<20)
			if m, ok := s.send[name]; ok {
				n = m
			}
			s.mu.Unlock()
			w.WriteHeader(http.StatusOK) // ignores Range, sends no length
			for sent := int64(0); sent < n; {
				k, err := w.Write(make([]byte, min(n-sent, 64<<10)))
				sent += int64(k)
				s.mu.Lock()
				s.sent[name] += int64(k)
				s.mu.Unlock()
				if err != nil {
					return
				}
			}
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// TestSideFileLimits checks that a file that is not weights and claims a
// size above its limit (MaxConfigSize, MaxIndexSize, MaxTokenizerSize,
// MaxSideFileSize) is refused before any of it is downloaded, with
// ErrTooLarge and an error that names the URL; that weights have no such
// limit; and that a server that claims a small size but sends more never
// gets more than the claim read.
func TestSideFileLimits(t *testing.T) {
	const huge = 50 << 30
	tests := []struct {
		name   string
		file   string
		size   int64
		noHead bool
		op     string // "read" (fs.ReadFile), "prefetch" (with a cache), "open" (OpenURL, for the manifest), "stat"
		limit  int64  // 0: must succeed
	}{
		{"config.json of 50 GB", "config.json", huge, false, "read", MaxConfigSize},
		{"config.json of 50 GB into the cache", "config.json", huge, false, "prefetch", MaxConfigSize},
		{"config.json one byte over", "config.json", MaxConfigSize + 1, false, "read", MaxConfigSize},
		{"config.json at the limit", "config.json", MaxConfigSize, false, "read", 0},
		{"config.json of 50 GB, size from a ranged GET", "config.json", huge, true, "read", MaxConfigSize},
		{"generation_config.json", "generation_config.json", 2 << 20, false, "read", MaxConfigSize},
		{"tokenizer_config.json", "tokenizer_config.json", 2 << 20, false, "read", MaxConfigSize},
		{"manifest.json", ManifestFile, 2 << 20, false, "open", MaxConfigSize},
		{"index", IndexFile, MaxIndexSize + 1, false, "read", MaxIndexSize},
		{"tokenizer.json", "tokenizer.json", MaxTokenizerSize + 1, false, "read", MaxTokenizerSize},
		{"tokenizer.json into the cache", "tokenizer.json", huge, false, "prefetch", MaxTokenizerSize},
		{"other JSON", "vocab.json", MaxSideFileSize + 1, false, "read", MaxSideFileSize},
		{"weights have no limit", SingleFile, huge, false, "stat", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSizeServer(t, map[string]int64{tt.file: tt.size}, map[string]bool{tt.file: tt.noHead})
			o := fast()
			o.NoManifest = tt.op != "open"
			if tt.op == "prefetch" {
				c, err := NewCache(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				o.Cache = c
			}
			h, err := OpenURL(t.Context(), s.srv.URL+"/m", o)
			var data []byte
			switch {
			case err != nil:
			case tt.op == "read":
				data, err = fs.ReadFile(h, tt.file)
			case tt.op == "prefetch":
				err = h.Prefetch(t.Context(), tt.file)
			case tt.op == "stat":
				var st fs.FileInfo
				if st, err = fs.Stat(h, tt.file); err == nil && st.Size() != tt.size {
					t.Errorf("size %d, want %d", st.Size(), tt.size)
				}
			}
			if tt.limit == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if tt.op == "read" && int64(len(data)) != tt.size {
					t.Errorf("read %d bytes, want %d", len(data), tt.size)
				}
				return
			}
			url := s.srv.URL + "/m/" + tt.file
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), strconv.Itoa(int(tt.limit))) {
				t.Fatalf("error %v, want ErrTooLarge naming %s and the limit %d", err, url, tt.limit)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.gets[tt.file] != 0 {
				t.Errorf("%d GETs of the body of a file refused for its size", s.gets[tt.file])
			}
		})
	}

	t.Run("a server that sends more than it claimed", func(t *testing.T) {
		// HEAD says 100 bytes; the GET ignores Range and streams 8 MiB
		// without a length.
		s := newSizeServer(t, map[string]int64{"config.json": 100}, nil)
		s.send["config.json"] = 8 << 20
		for _, cached := range []bool{false, true} {
			o := fast()
			o.NoManifest = true
			if cached {
				o.Cache = must(NewCache(t.TempDir()))
			}
			h, err := OpenURL(t.Context(), s.srv.URL+"/m", o)
			if err != nil {
				t.Fatal(err)
			}
			data, err := fs.ReadFile(h, "config.json")
			if err != nil || !bytes.Equal(data, make([]byte, 100)) {
				t.Errorf("cache %v: read %d bytes (%v), want the 100 claimed", cached, len(data), err)
			}
		}
	})
}

// resumeFixture is a fake server holding synthModel(1) and a cache, for
// TestResumeDownload.
type resumeFixture struct {
	s     *fakeServer
	cache *Cache
	url   string // of the weights
}

// interrupt runs a Prefetch that the server cuts short: the weights stop
// after 1.5 MiB, and the load is cancelled, as on Ctrl-C or SIGTERM,
// once 1 MiB of them has arrived. It returns the Prefetch's error.
func (f *resumeFixture) interrupt(t *testing.T, etag string) error {
	t.Helper()
	f.s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
		data, ok := f.s.get(name)
		if !ok {
			return false // 404
		}
		if etag != "" {
			w.Header().Set("ETag", etag)
		} else {
			w.Header().Set("ETag", etagOf(data))
		}
		if name != SingleFile || r.Method != "GET" || r.Header.Get("Range") == "bytes=0-0" {
			http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
			return true
		}
		http.ServeContent(&stallWriter{w, 3 << 19, r.Context()}, r, name, time.Time{}, bytes.NewReader(data))
		return true
	})
	defer f.s.setFault(nil)
	ctx, cancel := context.WithTimeout(t.Context(), hangBound)
	defer cancel()
	o := fast()
	o.Cache = f.cache
	o.Progress = func(file string, done, total int64) {
		if file == SingleFile && done >= 1<<20 {
			cancel()
		}
	}
	h, err := OpenURL(ctx, f.s.base(), o)
	if err != nil {
		t.Fatal(err)
	}
	return h.Prefetch(ctx)
}

// complete runs a Prefetch that the server lets through, and checks that
// the cache then holds want, with no part left.
func (f *resumeFixture) complete(t *testing.T, want []byte) {
	t.Helper()
	f.prefetch(t)
	checkCacheHolds(t, f.cache, f.url, want)
}

// prefetch runs a Prefetch that the server lets through.
func (f *resumeFixture) prefetch(t *testing.T) {
	t.Helper()
	o := fast()
	o.Cache = f.cache
	h, err := OpenURL(t.Context(), f.s.base(), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Prefetch(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// record reads the record of the weights' resumable part; ok is false when
// there is none.
func (f *resumeFixture) record(t *testing.T) (rec partRecord, size int64, ok bool) {
	t.Helper()
	data, recPath := f.cache.resumePaths(f.url)
	rec, err := readPartRecord(recPath)
	if err != nil {
		return rec, 0, false
	}
	st, err := os.Stat(data)
	if err != nil {
		t.Fatalf("record without its part: %v", err)
	}
	return rec, st.Size(), true
}

// weightGets lists the Range of each GET of the weights (not probes).
func (f *resumeFixture) weightGets() []string {
	var out []string
	for _, r := range f.s.requests() {
		if r.method == "GET" && r.name == SingleFile && r.rng != "bytes=0-0" {
			out = append(out, r.rng+" If-Range:"+r.ifRange)
		}
	}
	return out
}

// TestResumeDownload checks what an interrupted download into the cache
// leaves, and what the next run does with it: a part with a record of the
// version and of the bytes synced (never a committed file), which the next
// run continues with Range and If-Range when the server still has that
// version, or empties and fetches from zero when it does not; a part that
// does not check out (bytes past the record after a kill, bytes changed on
// disk) never gets into the cache; without a strong ETag nothing is kept.
func TestResumeDownload(t *testing.T) {
	v1, v2 := synthModel(1), synthModel(2)
	size := len(v1[SingleFile])
	tests := []struct {
		name string
		// between runs; returns the file the second run must cache
		between func(t *testing.T, f *resumeFixture, rec partRecord) []byte
		etag    string // the ETag the interrupted run sees; "" is the sha256 (strong)
		// the GETs of the weights the second run must make, given the record
		wantGets func(rec partRecord) []string
	}{
		{
			name:    "same version: continues from the synced bytes",
			between: func(t *testing.T, f *resumeFixture, rec partRecord) []byte { return v1[SingleFile] },
			wantGets: func(rec partRecord) []string {
				return []string{fmt.Sprintf("bytes=%d-%d If-Range:%s", rec.Have, size-1, etagOf(v1[SingleFile]))}
			},
		},
		{
			name: "changed on the server: starts from zero",
			between: func(t *testing.T, f *resumeFixture, rec partRecord) []byte {
				f.s.set(SingleFile, v2[SingleFile])
				return v2[SingleFile]
			},
			wantGets: func(rec partRecord) []string {
				return []string{fmt.Sprintf("bytes=0-%d If-Range:%s", len(v2[SingleFile])-1, etagOf(v2[SingleFile]))}
			},
		},
		{
			name: "bytes past the record (a kill before the sync) are dropped",
			between: func(t *testing.T, f *resumeFixture, rec partRecord) []byte {
				data, _ := f.cache.resumePaths(f.url)
				fh, err := os.OpenFile(data, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				fh.Write(bytes.Repeat([]byte{0xee}, 5000))
				fh.Close()
				return v1[SingleFile]
			},
			wantGets: func(rec partRecord) []string {
				return []string{fmt.Sprintf("bytes=%d-%d If-Range:%s", rec.Have, size-1, etagOf(v1[SingleFile]))}
			},
		},
		{
			name: "bytes changed on disk: caught by the sha256, fetched again from zero",
			between: func(t *testing.T, f *resumeFixture, rec partRecord) []byte {
				data, _ := f.cache.resumePaths(f.url)
				fh, err := os.OpenFile(data, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				fh.WriteAt([]byte{0xee, 0xee}, 100)
				fh.Close()
				return v1[SingleFile]
			},
			wantGets: func(rec partRecord) []string {
				et := etagOf(v1[SingleFile])
				return []string{fmt.Sprintf("bytes=%d-%d If-Range:%s", rec.Have, size-1, et), fmt.Sprintf("bytes=0-%d If-Range:%s", size-1, et)}
			},
		},
		{
			name: "record of another version left behind: emptied",
			between: func(t *testing.T, f *resumeFixture, rec partRecord) []byte {
				_, recPath := f.cache.resumePaths(f.url)
				rec.Validator = `"an-older-version"`
				b, _ := json.Marshal(rec)
				if err := os.WriteFile(recPath, b, 0o600); err != nil {
					t.Fatal(err)
				}
				return v1[SingleFile]
			},
			wantGets: func(rec partRecord) []string {
				return []string{fmt.Sprintf("bytes=0-%d If-Range:%s", size-1, etagOf(v1[SingleFile]))}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache, err := NewCache(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			s := newFakeServer(t, v1)
			f := &resumeFixture{s: s, cache: cache, url: s.base() + "/" + SingleFile}
			if err := f.interrupt(t, tt.etag); !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted run: %v, want context.Canceled", err)
			}
			// Never a committed file, always a part that can be resumed.
			for _, e := range must(cache.List()) {
				if e.URL == f.url {
					t.Fatalf("the interrupted download was committed: %+v", e)
				}
			}
			rec, partSize, ok := f.record(t)
			if !ok || rec.Have < 1<<20 || rec.Have > int64(size) || partSize != rec.Have ||
				rec.URL != f.url || rec.Validator != etagOf(v1[SingleFile]) || rec.Size != int64(size) {
				t.Fatalf("part after the interruption: record %+v (found %v), %d bytes on disk", rec, ok, partSize)
			}
			want := tt.between(t, f, rec)
			s.reset()
			f.complete(t, want)
			if got, want := f.weightGets(), tt.wantGets(rec); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("GETs of the weights:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}

	t.Run("weak ETag: nothing is kept", func(t *testing.T) {
		cache, err := NewCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s := newFakeServer(t, v1)
		f := &resumeFixture{s: s, cache: cache, url: s.base() + "/" + SingleFile}
		if err := f.interrupt(t, `W/"weak"`); !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted run: %v, want context.Canceled", err)
		}
		des, _ := os.ReadDir(cache.Dir())
		for _, de := range des {
			if strings.HasPrefix(de.Name(), ".part-") || strings.HasPrefix(de.Name(), ".resume-") || strings.HasSuffix(de.Name(), "-"+SingleFile) {
				t.Errorf("left %s", de.Name())
			}
		}
	})

	t.Run("a part held by another download is left alone", func(t *testing.T) {
		cache, err := NewCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s := newFakeServer(t, v1)
		f := &resumeFixture{s: s, cache: cache, url: s.base() + "/" + SingleFile}
		data, _ := cache.resumePaths(f.url)
		held, err := os.OpenFile(data, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		if err := lockFile(held); err != nil {
			t.Skipf("no file locks here: %v", err)
		}
		held.WriteString("another process's bytes")
		f.prefetch(t)
		var found bool
		for _, e := range must(cache.List()) {
			if e.URL == f.url {
				found = bytes.Equal(must(os.ReadFile(e.File)), v1[SingleFile])
			}
		}
		if !found {
			t.Error("the cache lacks the weights")
		}
		if b, _ := os.ReadFile(data); string(b) != "another process's bytes" {
			t.Errorf("the held part now has %d bytes", len(b))
		}
	})

	t.Run("stale temporary parts are swept", func(t *testing.T) {
		dir := t.TempDir()
		sub := filepath.Join(dir, "http")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		old, fresh := filepath.Join(sub, ".part-123"), filepath.Join(sub, ".part-456")
		for _, p := range []string{old, fresh} {
			if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		long := time.Now().Add(-2 * staleTemp)
		if err := os.Chtimes(old, long, long); err != nil {
			t.Fatal(err)
		}
		if _, err := NewCache(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale part kept: %v", err)
		}
		if _, err := os.Stat(fresh); err != nil {
			t.Errorf("fresh part removed: %v", err)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
