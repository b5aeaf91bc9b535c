//go:build js && wasm

package main

// A read-only fs.FS over a Hugging Face-layout base URL, through the
// browser's fetch. Small files (JSON) are fetched whole; other files (the
// safetensors shards) are opened with HEAD and read with Range requests, so
// weights are streamed in the loader's chunks and never held whole.
//
// TODO(loader): loader.OpenURL does the same through net/http (with retries,
// integrity checks and Hugging Face URL forms), but linking net/http's client
// grows mamba2.wasm from 8.1 to 13.3 MiB (2.2 to 3.4 MiB gzipped). Swap it in
// here, the only entry point, once the loader can fetch without net/http.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall/js"
	"time"
)

// openModelFS returns the model folder at base (an absolute http(s) URL; a
// trailing slash is added). Requests are cancelled when ctx is.
func openModelFS(ctx context.Context, base string) (fs.FS, error) {
	u, err := parseURL(base)
	if err != nil {
		return nil, codef(codeBadURL, "model URL %q is not a URL", base)
	}
	if p := u.Get("protocol").String(); p != "http:" && p != "https:" {
		return nil, codef(codeBadURL, "model URL %q is not an http(s) URL", base)
	}
	if p := u.Get("pathname").String(); !strings.HasSuffix(p, "/") {
		u.Set("pathname", p+"/")
	}
	u.Set("search", "")
	u.Set("hash", "")
	return &httpFS{ctx: ctx, base: u.Get("href").String(), small: map[string][]byte{}, sizes: map[string]int64{}}, nil
}

type httpFS struct {
	ctx  context.Context
	base string

	mu    sync.Mutex
	small map[string][]byte // whole small files, fetched once
	sizes map[string]int64  // lengths of large files, looked up once
}

// readAhead is how much a sequential Read fetches at once (it covers a
// safetensors header in one request).
const readAhead = 256 << 10

// wholeLimit is the largest file read in full when a server ignores Range.
const wholeLimit = 64 << 20

func (h *httpFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) || name == "." {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".txt") || strings.HasSuffix(name, ".md") {
		data, err := h.readSmall(name)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &memFile{name: name, Reader: bytes.NewReader(data)}, nil
	}
	size, err := h.size(name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &remoteFile{fs: h, name: name, url: h.base + name, size: size}, nil
}

func (h *httpFS) readSmall(name string) ([]byte, error) {
	h.mu.Lock()
	data, ok := h.small[name]
	h.mu.Unlock()
	if ok {
		return data, nil
	}
	r, err := h.fetch("GET", h.base+name, "", true)
	if err != nil {
		return nil, err
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.small[name] = r.body
	h.mu.Unlock()
	return r.body, nil
}

// size finds a file's length with HEAD, or from a one-byte Range request's
// Content-Range when HEAD gives none.
func (h *httpFS) size(name string) (int64, error) {
	h.mu.Lock()
	n, ok := h.sizes[name]
	h.mu.Unlock()
	if ok {
		return n, nil
	}
	n, err := h.lookupSize(name)
	if err == nil {
		h.mu.Lock()
		h.sizes[name] = n
		h.mu.Unlock()
	}
	return n, err
}

func (h *httpFS) lookupSize(name string) (int64, error) {
	u := h.base + name
	r, err := h.fetch("HEAD", u, "", false)
	if err != nil {
		return 0, err
	}
	if err := r.check(); err != nil {
		return 0, err
	}
	if n, err := strconv.ParseInt(r.header("content-length"), 10, 64); err == nil && n >= 0 &&
		r.header("content-encoding") == "" {
		return n, nil
	}
	r, err = h.fetch("GET", u, "bytes=0-0", false)
	if err != nil {
		return 0, err
	}
	if err := r.check(); err != nil {
		return 0, err
	}
	cr := r.header("content-range") // bytes 0-0/12345
	if i := strings.LastIndexByte(cr, '/'); i >= 0 {
		if n, err := strconv.ParseInt(cr[i+1:], 10, 64); err == nil && n >= 0 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: the server reports no length (no Content-Length on HEAD, no Content-Range; cross-origin servers must expose them)", u)
}

// response is a finished fetch.
type response struct {
	url        string
	status     int
	statusText string
	headers    js.Value
	body       []byte
}

func (r *response) header(name string) string {
	v := r.headers.Call("get", name)
	if v.Type() != js.TypeString {
		return ""
	}
	return v.String()
}

// check turns an HTTP failure into an error; 404 (and 410) wrap
// fs.ErrNotExist so the loader can tell a missing file from a broken server.
func (r *response) check() error {
	if r.status >= 200 && r.status < 300 {
		return nil
	}
	msg := fmt.Sprintf("%s answered HTTP %d %s", r.url, r.status, r.statusText)
	if r.status == 404 || r.status == 410 {
		return &httpError{msg: msg, notFound: true}
	}
	return &httpError{msg: msg}
}

type httpError struct {
	msg      string
	notFound bool
}

func (e *httpError) Error() string { return e.msg }
func (e *httpError) Is(target error) bool {
	return e.notFound && target == fs.ErrNotExist
}

// fetch performs one request. The body is read only when readBody is set and
// the request succeeded (or for a Range request, when the answer is a 206 or
// a whole file small enough to keep).
func (h *httpFS) fetch(method, u, rng string, readBody bool) (*response, error) {
	if err := h.ctx.Err(); err != nil {
		return nil, coded(codeAborted, err)
	}
	ctrl := js.Global().Get("AbortController").New()
	stop := context.AfterFunc(h.ctx, func() { ctrl.Call("abort") })
	defer stop()
	init := map[string]any{"method": method, "signal": ctrl.Get("signal")}
	if rng != "" {
		init["headers"] = map[string]any{"Range": rng}
	}
	var resp js.Value
	var err error
	for attempt := 0; ; attempt++ {
		resp, err = await(js.Global().Call("fetch", u, init))
		if err == nil || h.ctx.Err() != nil || attempt == 2 {
			break
		}
		time.Sleep(time.Duration(200<<attempt) * time.Millisecond) // a transient network error
	}
	if err != nil {
		if h.ctx.Err() != nil {
			return nil, coded(codeAborted, h.ctx.Err())
		}
		return nil, codef(codeBadURL, "could not fetch %s: %v (the server may be down, or a cross-origin server may not allow this page)", u, err)
	}
	r := &response{
		url:        u,
		status:     resp.Get("status").Int(),
		statusText: resp.Get("statusText").String(),
		headers:    resp.Get("headers"),
	}
	ok := r.status >= 200 && r.status < 300
	if rng != "" && r.status == 200 {
		// The server ignored Range: keep the whole file only when small.
		if n, err := strconv.ParseInt(r.header("content-length"), 10, 64); err != nil || n > wholeLimit {
			resp.Get("body").Call("cancel")
			return nil, fmt.Errorf("%s: the server ignores HTTP Range requests, which streaming weights needs", u)
		}
		readBody = true
	}
	if !readBody || !ok {
		if b := resp.Get("body"); b.Truthy() {
			b.Call("cancel")
		}
		return r, nil
	}
	buf, err := await(resp.Call("arrayBuffer"))
	if err != nil {
		if h.ctx.Err() != nil {
			return nil, coded(codeAborted, h.ctx.Err())
		}
		return nil, fmt.Errorf("reading %s: %v", u, err)
	}
	arr := js.Global().Get("Uint8Array").New(buf)
	r.body = make([]byte, arr.Length())
	js.CopyBytesToGo(r.body, arr)
	return r, nil
}

// memFile is a small file held in memory.
type memFile struct {
	name string
	*bytes.Reader
}

func (f *memFile) Stat() (fs.FileInfo, error) { return fileInfo{f.name, f.Size()}, nil }
func (f *memFile) Close() error               { return nil }

// remoteFile reads a large file with Range requests. ReadAt is what the
// loader's Stream uses; Read (for headers) goes through a read-ahead buffer.
type remoteFile struct {
	fs    *httpFS
	name  string
	url   string
	size  int64
	off   int64  // Read position
	buf   []byte // read-ahead: bytes [bufAt, bufAt+len(buf))
	bufAt int64
	whole []byte // the whole file, when the server ignored Range
}

func (f *remoteFile) Stat() (fs.FileInfo, error) { return fileInfo{f.name, f.size}, nil }
func (f *remoteFile) Close() error               { return nil }

func (f *remoteFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: f.name, Err: fs.ErrInvalid}
	}
	if off >= f.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	if f.whole != nil {
		copy(p, f.whole[off:])
	} else if n > 0 {
		r, err := f.fs.fetch("GET", f.url, fmt.Sprintf("bytes=%d-%d", off, off+int64(n)-1), true)
		if err != nil {
			return 0, err
		}
		if err := r.check(); err != nil {
			return 0, err
		}
		switch {
		case r.status == 200 && int64(len(r.body)) == f.size:
			f.whole = r.body
			copy(p, r.body[off:])
		case r.status == 206 && len(r.body) == n:
			copy(p, r.body)
		default:
			return 0, fmt.Errorf("%s: asked for %d bytes at %d, got HTTP %d with %d bytes", f.url, n, off, r.status, len(r.body))
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *remoteFile) Read(p []byte) (int, error) {
	if f.off >= f.size {
		return 0, io.EOF
	}
	if f.off < f.bufAt || f.off >= f.bufAt+int64(len(f.buf)) {
		want := min(max(int64(len(p)), readAhead), f.size-f.off)
		buf := make([]byte, want)
		n, err := f.ReadAt(buf, f.off)
		if n == 0 && err != nil {
			return 0, err
		}
		f.buf, f.bufAt = buf[:n], f.off
	}
	n := copy(p, f.buf[f.off-f.bufAt:])
	f.off += int64(n)
	return n, nil
}

func (f *remoteFile) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start of the file")
	}
	f.off = offset
	return offset, nil
}

type fileInfo struct {
	name string
	size int64
}

func (i fileInfo) Name() string       { return path.Base(i.name) }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) Mode() fs.FileMode  { return 0o444 }
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return false }
func (i fileInfo) Sys() any           { return nil }

// parseURL parses an absolute URL with the platform's URL class (smaller
// than net/url, and the same rules fetch applies).
func parseURL(s string) (u js.Value, err error) {
	defer func() {
		if r := recover(); r != nil { // new URL throws a TypeError
			err = fmt.Errorf("%v", r)
		}
	}()
	return js.Global().Get("URL").New(s), nil
}
