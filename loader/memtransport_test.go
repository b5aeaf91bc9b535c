package loader

// The HTTP source over an in-memory server (a Transport) and an in-memory
// Store, so that its logic (lookups, ReadThrough downloads, resumption,
// limits, retries) runs in both worlds: natively and as js/wasm under
// Node, where no test can serve HTTP.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// memServer is a Transport that answers from files, with sha256 ETags,
// HEAD, one byte range, If-Range and If-None-Match. fault, when set, may
// answer a request instead (returning nil lets it through).
type memServer struct {
	mu    sync.Mutex
	files map[string][]byte
	log   []Request
	fault func(ctx context.Context, r *Request, name string, data []byte) *Response
}

func (s *memServer) requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.log...)
}

func memETag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

func (s *memServer) RoundTrip(ctx context.Context, r *Request) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name := strings.TrimPrefix(r.URL, "http://mem/m/")
	s.mu.Lock()
	s.log = append(s.log, *r)
	data, ok := s.files[name]
	fault := s.fault
	s.mu.Unlock()
	if fault != nil {
		resp := fault(ctx, r, name, data)
		if err := ctx.Err(); err != nil {
			return nil, err // as a real transport fails when its request is aborted
		}
		if resp != nil {
			return resp, nil
		}
	}
	answer := func(status int, h Header, body []byte) *Response {
		if r.Method == methodHead {
			body = nil
		}
		n := int64(len(body))
		if r.Method == methodHead {
			if cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil {
				n = cl
			}
		}
		return &Response{Status: status, Header: h, ContentLength: n, Body: io.NopCloser(bytes.NewReader(body))}
	}
	if !ok {
		return answer(statusNotFound, Header{}, []byte("not found")), nil
	}
	etag := memETag(data)
	h := Header{"etag": etag, "content-length": strconv.Itoa(len(data))}
	if inm := r.Header["If-None-Match"]; inm != "" && inm == etag {
		return answer(statusNotModified, Header{"etag": etag}, nil), nil
	}
	rng := r.Header["Range"]
	if ir := r.Header["If-Range"]; ir != "" && ir != etag {
		rng = ""
	}
	if rng != "" {
		var a, b int
		if _, err := fmt.Sscanf(rng, "bytes=%d-%d", &a, &b); err == nil && a <= b && a < len(data) {
			b = min(b, len(data)-1)
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(data)))
			h.Set("Content-Length", strconv.Itoa(b-a+1))
			return answer(statusPartialContent, h, data[a:b+1]), nil
		}
	}
	return answer(statusOK, h, data), nil
}

// memStore is a Store in memory.
type memStore struct {
	mu      sync.Mutex
	entries map[string]StoreEntry
	data    map[string][]byte
}

func newMemStore() *memStore {
	return &memStore{entries: map[string]StoreEntry{}, data: map[string][]byte{}}
}

func (m *memStore) Lookup(u string) (StoreEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[u]
	return e, ok
}

func (m *memStore) Open(u string, e StoreEntry) (StoredFile, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.data[u]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return struct {
		io.ReaderAt
		io.Closer
	}{bytes.NewReader(d), io.NopCloser(nil)}, nil
}

func (m *memStore) MarkMissing(u string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[u] = StoreEntry{Missing: true}
	delete(m.data, u)
}

func (m *memStore) Remove(u string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, u)
	delete(m.data, u)
}

func (m *memStore) Create(u string, want StoreEntry) (StoreWriter, error) {
	return &memWriter{m: m, u: u, want: want}, nil
}

type memWriter struct {
	m    *memStore
	u    string
	want StoreEntry
	buf  bytes.Buffer
}

func (w *memWriter) Offset() int64               { return 0 }
func (w *memWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *memWriter) Abort(bool)                  {}

func (w *memWriter) Commit() (string, error) {
	sum := sha256.Sum256(w.buf.Bytes())
	got := hex.EncodeToString(sum[:])
	if int64(w.buf.Len()) != w.want.Size || (w.want.SHA256 != "" && got != w.want.SHA256) {
		return "", fmt.Errorf("%w: %d bytes, sha256 %s", ErrIntegrity, w.buf.Len(), got)
	}
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	e := w.want
	e.SHA256 = got
	w.m.entries[w.u] = e
	w.m.data[w.u] = bytes.Clone(w.buf.Bytes())
	return got, nil
}

// memModel is a small checkpoint of three tensors, about 1.3 MB.
func memModel() map[string][]byte {
	var data []byte
	hdr := entry{}
	for i, n := range []int{200000, 100000, 1000} {
		begin := len(data)
		for j := range n {
			data = append(data, f32bytes(float32(i*1000000+j))...)
		}
		hdr[string(rune('a'+i))] = entry{"dtype": "F32", "shape": []int{n}, "data_offsets": []int{begin, len(data)}}
	}
	return map[string][]byte{"config.json": []byte(`{"model_type": "mamba2"}`), SingleFile: file(hdr, data)}
}

// readAll streams every tensor of ck (a, b, c: file order) and checks the
// values memModel wrote.
func readAll(ck *Checkpoint) error {
	for i, name := range []string{"a", "b", "c"} {
		v, err := ck.Float32s(name)
		if err != nil {
			return err
		}
		for j, x := range v {
			if x != float32(i*1000000+j) {
				return fmt.Errorf("%s[%d] = %v", name, j, x)
			}
		}
	}
	return nil
}

func memOpen(t *testing.T, s *memServer, o HTTPOptions) (*HTTPFS, *Checkpoint, error) {
	t.Helper()
	o.Transport = s
	if o.Backoff == 0 {
		o.Backoff = time.Millisecond
	}
	o.NoManifest = true
	h, err := OpenURL(t.Context(), "http://mem/m/", o)
	if err != nil {
		return nil, nil, err
	}
	ck, err := Open(h)
	return h, ck, err
}

func TestMemReadThrough(t *testing.T) {
	files := memModel()
	s := &memServer{files: files}
	st := newMemStore()
	o := HTTPOptions{Cache: st, ReadThrough: true, PreferCache: true}
	h, ck, err := memOpen(t, s, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := readAll(ck); err != nil {
		t.Fatal(err)
	}
	if err := h.Finish(); err != nil {
		t.Fatal(err)
	}
	u := "http://mem/m/" + SingleFile
	if !bytes.Equal(st.data[u], files[SingleFile]) {
		t.Fatalf("stored %d bytes, want the %d of the file", len(st.data[u]), len(files[SingleFile]))
	}
	whole := 0
	for _, r := range s.requests() {
		if r.URL == u && r.Method == methodGet && r.Header["Range"] == fmt.Sprintf("bytes=0-%d", len(files[SingleFile])-1) {
			whole++
		}
	}
	if whole != 1 {
		t.Errorf("%d whole-file GETs, want 1: %v", whole, s.requests())
	}
	if got := h.Stats(); got.Fetched != int64(len(files[SingleFile])) {
		t.Errorf("stats %+v", got)
	}

	before := len(s.requests())
	_, ck2, err := memOpen(t, s, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := readAll(ck2); err != nil {
		t.Fatal(err)
	}
	if n := len(s.requests()) - before; n != 0 {
		t.Errorf("a cached load made %d requests", n)
	}
}

// brokenBody sends n bytes, then fails like a dropped connection.
type brokenBody struct {
	r io.Reader
}

func (b *brokenBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, errors.New("connection reset")
	}
	return n, err
}
func (b *brokenBody) Close() error { return nil }

// stalledBody sends its bytes, then nothing until ctx ends.
type stalledBody struct {
	ctx context.Context
	r   io.Reader
}

func (b *stalledBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		<-b.ctx.Done()
		return n, b.ctx.Err()
	}
	return n, err
}
func (b *stalledBody) Close() error { return nil }

func TestMemFaults(t *testing.T) {
	files := memModel()
	size := len(files[SingleFile])
	whole := fmt.Sprintf("bytes=0-%d", size-1)

	t.Run("a broken body resumes with If-Range; the store is exact", func(t *testing.T) {
		var once sync.Once
		s := &memServer{files: files}
		s.fault = func(ctx context.Context, r *Request, name string, data []byte) *Response {
			var resp *Response
			if name == SingleFile && r.Header["Range"] == whole {
				once.Do(func() {
					resp = &Response{Status: statusOK, Header: Header{"etag": memETag(data)}, ContentLength: int64(size),
						Body: &brokenBody{bytes.NewReader(data[:500000])}}
				})
			}
			return resp
		}
		st := newMemStore()
		h, ck, err := memOpen(t, s, HTTPOptions{Cache: st, ReadThrough: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := readAll(ck); err != nil {
			t.Fatal(err)
		}
		if err := h.Finish(); err != nil {
			t.Fatal(err)
		}
		resumed := false
		for _, r := range s.requests() {
			if r.Header["Range"] == fmt.Sprintf("bytes=500000-%d", size-1) {
				resumed = r.Header["If-Range"] == memETag(files[SingleFile])
			}
		}
		if !resumed {
			t.Errorf("no resumption from byte 500000 with If-Range: %v", s.requests())
		}
		if !bytes.Equal(st.data["http://mem/m/"+SingleFile], files[SingleFile]) {
			t.Error("the stored file is not exact")
		}
	})

	t.Run("a persistent 503 fails with the URL and the attempts", func(t *testing.T) {
		s := &memServer{files: files}
		s.fault = func(ctx context.Context, r *Request, name string, data []byte) *Response {
			if name == SingleFile && r.Header["Range"] == whole {
				return &Response{Status: 503, Header: Header{}, ContentLength: 0, Body: io.NopCloser(strings.NewReader(""))}
			}
			return nil
		}
		st := newMemStore()
		_, ck, err := memOpen(t, s, HTTPOptions{Cache: st, ReadThrough: true, Retries: 2})
		if err != nil {
			t.Fatal(err)
		}
		err = readAll(ck)
		var he *HTTPError
		if !errors.As(err, &he) || he.Status != 503 || he.Attempts != 3 || !strings.Contains(err.Error(), "http://mem/m/"+SingleFile) {
			t.Fatalf("got %v, want a 503 after 3 attempts naming the URL", err)
		}
		if _, ok := st.Lookup("http://mem/m/" + SingleFile); ok {
			t.Error("the failed file was stored")
		}
	})

	t.Run("config.json over its limit is refused without a GET", func(t *testing.T) {
		big := map[string][]byte{"config.json": make([]byte, MaxConfigSize+1), SingleFile: files[SingleFile]}
		s := &memServer{files: big}
		h, err := OpenURL(t.Context(), "http://mem/m/", HTTPOptions{Transport: s, NoManifest: true, Cache: newMemStore(), ReadThrough: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = fs.ReadFile(h, "config.json")
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v, want ErrTooLarge", err)
		}
		for _, r := range s.requests() {
			if r.Method == methodGet {
				t.Errorf("GET of a file refused for its size: %v", r)
			}
		}
	})

	t.Run("a stalled body is resumed after the stall timeout; the store is exact", func(t *testing.T) {
		var once sync.Once
		s := &memServer{files: files}
		s.fault = func(ctx context.Context, r *Request, name string, data []byte) *Response {
			var resp *Response
			if name == SingleFile && r.Header["Range"] == whole {
				once.Do(func() {
					resp = &Response{Status: statusOK, Header: Header{"etag": memETag(data)}, ContentLength: int64(size),
						Body: &stalledBody{ctx, bytes.NewReader(data[:300000])}}
				})
			}
			return resp
		}
		st := newMemStore()
		h, ck, err := memOpen(t, s, HTTPOptions{Cache: st, ReadThrough: true, StallTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := readAll(ck); err != nil {
			t.Fatal(err)
		}
		if err := h.Finish(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(st.data["http://mem/m/"+SingleFile], files[SingleFile]) {
			t.Error("the stored file is not exact")
		}
	})

	t.Run("no response headers: ErrTimeout naming the URL after the retries", func(t *testing.T) {
		s := &memServer{files: files}
		s.fault = func(ctx context.Context, r *Request, name string, data []byte) *Response {
			if name == "config.json" {
				<-ctx.Done() // never answers
				return nil
			}
			return nil
		}
		var retries int
		o := HTTPOptions{Transport: s, NoManifest: true, Retries: 2, Backoff: time.Millisecond, HeaderTimeout: 50 * time.Millisecond,
			OnRetry: func(error, int, time.Duration) { retries++ }}
		h, err := OpenURL(t.Context(), "http://mem/m/", o)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fs.ReadFile(h, "config.json")
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "http://mem/m/config.json") || !strings.Contains(err.Error(), "gave up after 3 attempts") {
			t.Fatalf("got %v, want ErrTimeout naming the URL after 3 attempts", err)
		}
		if retries != 2 {
			t.Errorf("OnRetry called %d times, want 2", retries)
		}
	})

	t.Run("an ETag change mid-download fails and stores nothing", func(t *testing.T) {
		var once sync.Once
		s := &memServer{files: files}
		s.fault = func(ctx context.Context, r *Request, name string, data []byte) *Response {
			var resp *Response
			if name == SingleFile && r.Header["Range"] == whole {
				once.Do(func() {
					resp = &Response{Status: statusOK, Header: Header{"etag": memETag(data)}, ContentLength: int64(size),
						Body: &brokenBody{bytes.NewReader(data[:500000])}}
					changed := bytes.Clone(data)
					changed[len(changed)-1] ^= 1
					s.mu.Lock()
					s.files = map[string][]byte{"config.json": files["config.json"], SingleFile: changed}
					s.mu.Unlock()
				})
			}
			return resp
		}
		st := newMemStore()
		h, ck, err := memOpen(t, s, HTTPOptions{Cache: st, ReadThrough: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := readAll(ck); !errors.Is(err, ErrChanged) {
			t.Fatalf("got %v, want ErrChanged", err)
		}
		h.Abort()
		if _, ok := st.Lookup("http://mem/m/" + SingleFile); ok {
			t.Error("a file that changed was stored")
		}
	})
}
