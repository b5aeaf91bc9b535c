package serve

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// storeFS is an object store as serve/worker sees R2: every file has its
// own ETag and sends its bytes with WriteRange; Read is counted, since the
// Worker must not copy weights through Go memory.
type storeFS struct {
	objects map[string][]byte
	mu      sync.Mutex
	ranges  []string // "off+n" per WriteRange
	read    int      // bytes given out by Read
	fail    bool     // WriteRange fails
}

func (s *storeFS) Open(name string) (fs.File, error) {
	data, ok := s.objects[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &storeFile{s: s, name: name, data: data}, nil
}

type storeFile struct {
	s    *storeFS
	name string
	data []byte
	off  int64
}

var (
	_ ETagFile        = (*storeFile)(nil)
	_ RangeWriterFile = (*storeFile)(nil)
	_ io.ReadSeeker   = (*storeFile)(nil)
)

func (f *storeFile) Stat() (fs.FileInfo, error) { return f, nil }
func (f *storeFile) Close() error               { return nil }
func (f *storeFile) Name() string               { return f.name }
func (f *storeFile) Size() int64                { return int64(len(f.data)) }
func (f *storeFile) Mode() fs.FileMode          { return 0o444 }
func (f *storeFile) ModTime() time.Time         { return time.Unix(1700000000, 0) }
func (f *storeFile) IsDir() bool                { return false }
func (f *storeFile) Sys() any                   { return nil }
func (f *storeFile) ETag() (string, error)      { return `"md5-of-` + f.name + `"`, nil }

func (f *storeFile) Read(p []byte) (int, error) {
	if f.off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[f.off:])
	f.off += int64(n)
	f.s.mu.Lock()
	f.s.read += n
	f.s.mu.Unlock()
	return n, nil
}

func (f *storeFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += f.off
	case io.SeekEnd:
		off += int64(len(f.data))
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	f.off = off
	return off, nil
}

func (f *storeFile) WriteRange(w http.ResponseWriter, off, n int64) error {
	f.s.mu.Lock()
	f.s.ranges = append(f.s.ranges, strconv.FormatInt(off, 10)+"+"+strconv.FormatInt(n, 10))
	fail := f.s.fail
	f.s.mu.Unlock()
	if fail {
		return errors.New("store unreachable")
	}
	_, err := w.Write(f.data[off : off+n])
	return err
}

// TestRangeWriterFastPath serves files of an object store: the Handler's
// answers are those of a folder (status, ranges, conditional requests),
// every body goes through one WriteRange, nothing through Read, and the
// store's ETags are used as they are.
func TestRangeWriterFastPath(t *testing.T) {
	weights := randomBytes(3<<20+17, 5)
	page := []byte("<!doctype html><title>mamba2</title>" + strings.Repeat("<p>hi</p>", 100))
	store := &storeFS{objects: map[string][]byte{
		"tiny/model.safetensors": weights,
		"index.html":             page,
	}}
	var logged bytes.Buffer
	h, err := New(Options{Models: store, Static: store, NoEmbedded: true, NoGzip: true, ErrorLog: log.New(&logged, "", 0)})
	must(t, err)
	const url = "/models/tiny/model.safetensors"
	const etag = `"md5-of-tiny/model.safetensors"`
	n := len(weights)
	do := func(method, target string, hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	tests := []struct {
		name   string
		method string
		target string
		hdr    []string
		status int
		body   []byte
		ranges string // WriteRange calls
		header map[string]string
	}{
		{"whole", "GET", url, nil, 200, weights, "0+" + strconv.Itoa(n),
			map[string]string{"ETag": etag, "Content-Length": strconv.Itoa(n), "Accept-Ranges": "bytes"}},
		{"range", "GET", url, []string{"Range", "bytes=1000-1999"}, 206, weights[1000:2000], "1000+1000",
			map[string]string{"Content-Range": "bytes 1000-1999/" + strconv.Itoa(n), "Content-Length": "1000"}},
		{"suffix", "GET", url, []string{"Range", "bytes=-7"}, 206, weights[n-7:], strconv.Itoa(n-7) + "+7", nil},
		{"open-ended", "GET", url, []string{"Range", "bytes=" + strconv.Itoa(n-3) + "-"}, 206, weights[n-3:], strconv.Itoa(n-3) + "+3", nil},
		{"If-Range stale", "GET", url, []string{"Range", "bytes=0-9", "If-Range", `"old"`}, 200, weights, "0+" + strconv.Itoa(n), nil},
		{"If-Range fresh", "GET", url, []string{"Range", "bytes=0-9", "If-Range", etag}, 206, weights[:10], "0+10", nil},
		{"several ranges", "GET", url, []string{"Range", "bytes=0-1,5-6"}, 200, weights, "0+" + strconv.Itoa(n), nil},
		{"HEAD", "HEAD", url, nil, 200, []byte{}, "", map[string]string{"Content-Length": strconv.Itoa(n), "ETag": etag}},
		{"304", "GET", url, []string{"If-None-Match", etag}, 304, []byte{}, "", nil},
		{"416", "GET", url, []string{"Range", "bytes=" + strconv.Itoa(n) + "-"}, 416, nil, "",
			map[string]string{"Content-Range": "bytes */" + strconv.Itoa(n)}},
		{"page, not gzipped", "GET", "/", []string{"Accept-Encoding", "gzip"}, 200, page, "0+" + strconv.Itoa(len(page)),
			map[string]string{"Content-Encoding": "", "Vary": "", "Content-Type": "text/html; charset=utf-8",
				"Cross-Origin-Embedder-Policy": "require-corp", "ETag": `"md5-of-index.html"`}},
		{"traversal", "GET", "/models/tiny/../../index.html", nil, 400, nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store.ranges, store.read = nil, 0
			w := do(tt.method, tt.target, tt.hdr...)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if tt.body != nil && !bytes.Equal(w.Body.Bytes(), tt.body) {
				t.Errorf("body: %d bytes, want %d", w.Body.Len(), len(tt.body))
			}
			if got := strings.Join(store.ranges, ","); got != tt.ranges {
				t.Errorf("WriteRange calls %q, want %q", got, tt.ranges)
			}
			if store.read != 0 {
				t.Errorf("%d bytes went through Read", store.read)
			}
			for k, v := range tt.header {
				got, present := w.Header()[http.CanonicalHeaderKey(k)]
				if v == "" && present || v != "" && strings.Join(got, ", ") != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
		})
	}

	// A store that fails mid-answer: the status is already out, so the
	// body is cut short (never wrong bytes) and the error is logged.
	store.fail = true
	w := do("GET", url, "Range", "bytes=0-99")
	if w.Body.Len() != 0 || !strings.Contains(logged.String(), "store unreachable") {
		t.Errorf("failing store: %d bytes sent, log %q", w.Body.Len(), logged.String())
	}
}
