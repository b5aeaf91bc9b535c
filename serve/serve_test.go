package serve

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/mamba2web/mamba2/models"
)

// fixture is a models folder with one model, m1, and two symbolic links
// that lead out of it, plus static files.
type fixture struct {
	h       *Handler
	weights []byte
	config  []byte
	js      []byte
	outside string
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{
		weights: randomBytes(1<<20+123, 1),
		config:  []byte(`{"model_type": "mamba2", "hidden_size": 64, "padding": "` + strings.Repeat("x", 2000) + `"}`),
		js:      []byte("export function run() {\n" + strings.Repeat("  console.log('mamba2');\n", 200) + "}\n"),
	}
	dir := t.TempDir()
	outside := t.TempDir()
	f.outside = filepath.Join(outside, "secret.json")
	must(t, os.WriteFile(f.outside, []byte(`{"secret": true}`), 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "m1"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "m1", "model.safetensors"), f.weights, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "m1", "config.json"), f.config, 0o644))
	must(t, os.Symlink(f.outside, filepath.Join(dir, "m1", "link.json")))
	must(t, os.Symlink(outside, filepath.Join(dir, "escape")))
	static := fstest.MapFS{
		"index.html":     {Data: []byte("<!doctype html><title>mamba2</title>" + strings.Repeat("<p>hi</p>", 100))},
		"app.js":         {Data: f.js},
		"main.wasm":      {Data: append([]byte("\x00asm\x01\x00\x00\x00"), bytes.Repeat([]byte{1, 2, 3, 4}, 1000)...)},
		"sub/index.html": {Data: []byte("<!doctype html><title>sub</title>")},
	}
	h, err := New(Options{ModelsDir: dir, Static: static})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	f.h = h
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) do(method, target string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func TestServe(t *testing.T) {
	f := newFixture(t)
	const weights = "/models/m1/model.safetensors"
	n := len(f.weights)
	etag := f.do("HEAD", weights).Header().Get("ETag")
	if etag == "" || strings.HasPrefix(etag, "W/") || !strings.HasPrefix(etag, `"`) {
		t.Fatalf("ETag %q is not a strong ETag", etag)
	}
	jsTag := f.do("GET", "/app.js", "Accept-Encoding", "gzip").Header().Get("ETag")

	tests := []struct {
		name     string
		method   string
		target   string
		hdr      []string
		status   int
		body     []byte            // nil: not checked; empty: must be empty
		headers  map[string]string // "" value: must be absent
		gunzipTo []byte
	}{
		{name: "whole file", method: "GET", target: weights, hdr: []string{"Accept-Encoding", "gzip"}, status: 200, body: f.weights,
			headers: map[string]string{"Content-Length": strconv.Itoa(n), "Accept-Ranges": "bytes", "Content-Encoding": "", "ETag": etag, "Content-Type": "application/octet-stream"}},
		{name: "range", method: "GET", target: weights, hdr: []string{"Range", "bytes=100-199", "Accept-Encoding", "gzip"}, status: 206, body: f.weights[100:200],
			headers: map[string]string{"Content-Range": "bytes 100-199/" + strconv.Itoa(n), "Content-Length": "100", "Content-Encoding": ""}},
		{name: "open-ended range", method: "GET", target: weights, hdr: []string{"Range", "bytes=" + strconv.Itoa(n-5) + "-"}, status: 206, body: f.weights[n-5:]},
		{name: "suffix range", method: "GET", target: weights, hdr: []string{"Range", "bytes=-10"}, status: 206, body: f.weights[n-10:]},
		{name: "unsatisfiable range", method: "GET", target: weights, hdr: []string{"Range", "bytes=" + strconv.Itoa(n) + "-"}, status: 416,
			headers: map[string]string{"Content-Range": "bytes */" + strconv.Itoa(n)}},
		{name: "several ranges get the whole file", method: "GET", target: weights, hdr: []string{"Range", "bytes=0-1,5-6"}, status: 200, body: f.weights},
		{name: "If-Range match", method: "GET", target: weights, hdr: []string{"Range", "bytes=0-9", "If-Range", etag}, status: 206, body: f.weights[:10]},
		{name: "If-Range mismatch", method: "GET", target: weights, hdr: []string{"Range", "bytes=0-9", "If-Range", `"old"`}, status: 200, body: f.weights},
		{name: "If-None-Match", method: "GET", target: weights, hdr: []string{"If-None-Match", etag}, status: 304, body: []byte{}},
		{name: "If-None-Match other", method: "GET", target: weights, hdr: []string{"If-None-Match", `"x"`}, status: 200},
		{name: "HEAD", method: "HEAD", target: weights, status: 200, body: []byte{},
			headers: map[string]string{"Content-Length": strconv.Itoa(n), "ETag": etag, "Accept-Ranges": "bytes"}},
		{name: "CORS on GET", method: "GET", target: weights, hdr: []string{"Origin", "https://elsewhere.example", "Range", "bytes=0-0"}, status: 206,
			headers: map[string]string{"Access-Control-Allow-Origin": "*", "Cross-Origin-Resource-Policy": "cross-origin", "Cross-Origin-Opener-Policy": ""}},
		{name: "CORS preflight", method: "OPTIONS", target: weights, hdr: []string{"Origin", "https://elsewhere.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "range,if-range"}, status: 204,
			headers: map[string]string{"Access-Control-Allow-Methods": "GET, HEAD, OPTIONS", "Access-Control-Allow-Origin": "*", "Access-Control-Max-Age": "86400"}},
		{name: "POST refused", method: "POST", target: weights, status: 405, headers: map[string]string{"Allow": "GET, HEAD, OPTIONS"}},
		{name: "json gzip", method: "GET", target: "/models/m1/config.json", hdr: []string{"Accept-Encoding", "gzip, deflate, br"}, status: 200, gunzipTo: f.config,
			headers: map[string]string{"Content-Encoding": "gzip", "Vary": "Accept-Encoding", "Content-Type": "application/json"}},
		{name: "json ranged is not gzipped", method: "GET", target: "/models/m1/config.json", hdr: []string{"Accept-Encoding", "gzip", "Range", "bytes=0-9"}, status: 206, body: f.config[:10],
			headers: map[string]string{"Content-Encoding": ""}},
		{name: "static index", method: "GET", target: "/", status: 200,
			headers: map[string]string{"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp", "Content-Type": "text/html; charset=utf-8"}},
		{name: "static sub index", method: "GET", target: "/sub/", status: 200, body: []byte("<!doctype html><title>sub</title>")},
		{name: "js gzip", method: "GET", target: "/app.js", hdr: []string{"Accept-Encoding", "gzip"}, status: 200, gunzipTo: f.js,
			headers: map[string]string{"Content-Encoding": "gzip", "Content-Type": "text/javascript; charset=utf-8", "Cross-Origin-Embedder-Policy": "require-corp"}},
		{name: "js gzip refused by q=0", method: "GET", target: "/app.js", hdr: []string{"Accept-Encoding", "gzip;q=0"}, status: 200, body: f.js,
			headers: map[string]string{"Content-Encoding": ""}},
		{name: "js plain", method: "GET", target: "/app.js", status: 200, body: f.js, headers: map[string]string{"Content-Encoding": "", "Vary": "Accept-Encoding"}},
		{name: "js gzip 304", method: "GET", target: "/app.js", hdr: []string{"Accept-Encoding", "gzip", "If-None-Match", jsTag}, status: 304},
		{name: "wasm gzip", method: "GET", target: "/main.wasm", hdr: []string{"Accept-Encoding", "gzip"}, status: 200,
			headers: map[string]string{"Content-Encoding": "gzip", "Content-Type": "application/wasm"}},
		{name: "HEAD gzip", method: "HEAD", target: "/app.js", hdr: []string{"Accept-Encoding", "gzip"}, status: 200, body: []byte{},
			headers: map[string]string{"Content-Encoding": "gzip"}},
		{name: "missing", method: "GET", target: "/models/m1/nope.json", status: 404},
		{name: "model folder itself", method: "GET", target: "/models/m1/", status: 404},
		{name: "missing static", method: "GET", target: "/nope.js", status: 404},
		{name: "dot-dot", method: "GET", target: "/models/../secret", status: 400},
		{name: "dot-dot inside", method: "GET", target: "/models/m1/../../etc/passwd", status: 400},
		{name: "encoded dot-dot", method: "GET", target: "/models/m1/%2e%2e/%2e%2e/etc/passwd", status: 400},
		{name: "encoded dot-dot static", method: "GET", target: "/%2E%2E/etc/passwd", status: 400},
		{name: "encoded slash", method: "GET", target: "/models/m1%2F..%2F..%2Fetc/passwd", status: 400},
		{name: "double slash", method: "GET", target: "/models//etc/passwd", status: 400},
		{name: "absolute in file", method: "GET", target: "//etc/passwd", status: 400},
		{name: "backslash", method: "GET", target: "/models/m1/..%5C..%5Csecret.json", status: 400},
		{name: "NUL", method: "GET", target: "/models/m1/config.json%00", status: 400},
		{name: "dot segment", method: "GET", target: "/models/m1/./config.json", status: 400},
		{name: "symlink out of the root", method: "GET", target: "/models/m1/link.json", status: 404},
		{name: "symlinked folder out of the root", method: "GET", target: "/models/escape/secret.json", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(tt.method, tt.target, tt.hdr...)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d (%q)", w.Code, tt.status, w.Body.String())
			}
			if tt.body != nil && !bytes.Equal(w.Body.Bytes(), tt.body) {
				t.Errorf("body: %d bytes, want %d", w.Body.Len(), len(tt.body))
			}
			for k, v := range tt.headers {
				got, present := w.Header()[http.CanonicalHeaderKey(k)]
				if v == "" {
					if present {
						t.Errorf("%s: %q, want none", k, got)
					}
				} else if !strings.Contains(strings.Join(got, ", "), v) {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tt.gunzipTo != nil {
				zr, err := gzip.NewReader(w.Body)
				if err != nil {
					t.Fatal(err)
				}
				plain, err := io.ReadAll(zr)
				if err != nil || !bytes.Equal(plain, tt.gunzipTo) {
					t.Errorf("gunzipped body differs (%v)", err)
				}
				if cl := w.Header().Get("Content-Length"); cl == "" {
					t.Error("gzip answer without Content-Length")
				}
				if et := w.Header().Get("ETag"); !strings.HasSuffix(et, `-gzip"`) {
					t.Errorf("gzip answer has ETag %s, want one of its own", et)
				}
			}
			if h := w.Header().Get("Access-Control-Expose-Headers"); tt.status != 405 &&
				!(strings.Contains(h, "Content-Range") && strings.Contains(h, "ETag") && strings.Contains(h, "Accept-Ranges") && strings.Contains(h, "Content-Length")) {
				t.Errorf("Access-Control-Expose-Headers %q", h)
			}
		})
	}
}

// TestServeETagTracksFile checks that an edited file gets a new ETag, so a
// loader resuming with If-Range never mixes two versions.
func TestServeETagTracksFile(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "m"), 0o755))
	p := filepath.Join(dir, "m", "a.safetensors")
	must(t, os.WriteFile(p, []byte("version one"), 0o644))
	h, err := New(Options{ModelsDir: dir, NoEmbedded: true})
	must(t, err)
	defer h.Close()
	get := func() string {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("HEAD", "/models/m/a.safetensors", nil))
		return w.Header().Get("ETag")
	}
	e1 := get()
	if get() != e1 {
		t.Fatal("ETag changes between requests")
	}
	must(t, os.WriteFile(p, []byte("version two"), 0o644))
	must(t, os.Chtimes(p, time.Now(), time.Now().Add(time.Second)))
	if e2 := get(); e2 == e1 {
		t.Errorf("ETag %s kept after the file changed", e2)
	}
	hc, err := New(Options{ModelsDir: dir, NoEmbedded: true, ContentETags: true})
	must(t, err)
	defer hc.Close()
	w := httptest.NewRecorder()
	hc.ServeHTTP(w, httptest.NewRequest("HEAD", "/models/m/a.safetensors", nil))
	if sum := sha256.Sum256([]byte("version two")); w.Header().Get("ETag") != `"`+hex.EncodeToString(sum[:])+`"` {
		t.Errorf("ContentETags: ETag %s is not the sha256", w.Header().Get("ETag"))
	}
}

func TestServeModelsList(t *testing.T) {
	f := newFixture(t)
	w := f.do("GET", "/models/")
	var list struct{ Models []string }
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	if strings.Join(list.Models, ",") != "m1,"+EmbeddedModel {
		t.Errorf("models %v", list.Models)
	}
	// The embedded model is served, with the sha256 of each file as its ETag.
	w = f.do("GET", "/models/"+EmbeddedModel+"/config.json")
	want, err := fs.ReadFile(models.Tiny(), "config.json")
	must(t, err)
	sum := sha256.Sum256(want)
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) || w.Header().Get("ETag") != `"`+hex.EncodeToString(sum[:])+`"` {
		t.Errorf("embedded config.json: %d, ETag %s", w.Code, w.Header().Get("ETag"))
	}
	h, err := New(Options{NoEmbedded: true, Models: fstest.MapFS{"x/config.json": {Data: []byte("{}")}}})
	must(t, err)
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/models/"+EmbeddedModel+"/config.json", nil))
	if w.Code != 404 {
		t.Errorf("NoEmbedded still serves the embedded model: %d", w.Code)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/models/x/config.json", nil))
	if w.Code != 200 || w.Body.String() != "{}" {
		t.Errorf("Models fs.FS: %d %q", w.Code, w.Body.String())
	}
}
