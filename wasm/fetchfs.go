//go:build js && wasm

package main

// A read-only fs.FS over a Hugging Face-layout base URL, through the
// browser's fetch. Small files (JSON) are fetched whole; other files (the
// safetensors shards) are opened with HEAD and read with Range requests, so
// weights are streamed in the loader's chunks and never held whole. With the
// browser cache (webcache.go), cached files are read from it and the weights
// of the others come in one whole-file GET each, stored as they pass.
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

	"github.com/mamba2web/mamba2/loader"
)

// openModelFS returns the model folder at base (an absolute http(s) URL; a
// trailing slash is added). Requests are cancelled when ctx is. With a
// cache, files are read from and stored in it according to policy (see
// webcache.go).
func openModelFS(ctx context.Context, base string, cache *webCache, policy cachePolicy) (*httpFS, error) {
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
	if policy == cacheOff {
		cache = nil
	}
	return &httpFS{
		ctx: ctx, base: u.Get("href").String(), cache: cache, policy: policy,
		small: map[string][]byte{}, heads: map[string]head{},
		cached: map[string]*cacheEntry{}, downloads: map[string]*download{},
	}, nil
}

type httpFS struct {
	ctx    context.Context
	base   string
	cache  *webCache // nil: no cache
	policy cachePolicy

	mu           sync.Mutex
	small        map[string][]byte               // whole small files, fetched once
	heads        map[string]head                 // lengths and ETags of large files, looked up once
	cached       map[string]*cacheEntry          // large files found in the cache (nil: not there)
	downloads    map[string]*download            // large files being fetched into the cache
	prefetchOnce sync.Once                       // starts prefetch with the first download
	manifest     map[string]loader.ManifestEntry // manifest.json, when the folder has one
	notes        []string                        // why files were not cached
	fetched      int64                           // weight bytes received from the network
	fromCache    int64                           // weight bytes read from the cache
}

// head is what HEAD says about a file.
type head struct {
	size int64
	etag string
}

// loadManifest reads the folder's optional manifest.json (loader.ManifestFile:
// sizes and sha256 of its files), which downloads are then checked against.
func (h *httpFS) loadManifest() error {
	data, err := h.readSmall(loader.ManifestFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	m, err := loader.ParseManifest(data)
	if err != nil {
		return fmt.Errorf("%s%s: %v", h.base, loader.ManifestFile, err)
	}
	h.manifest = m
	return nil
}

func (h *httpFS) note(s string) {
	h.mu.Lock()
	h.notes = append(h.notes, s)
	h.mu.Unlock()
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
	if h.cache != nil {
		e, err := h.cachedEntry(name)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		if e != nil {
			blob, err := await(e.resp.Call("clone").Call("blob"))
			if err == nil && int64(blob.Get("size").Float()) == e.size {
				return &blobFile{name: name, blob: blob, size: e.size}, nil
			}
			h.forgetCached(name) // unreadable or damaged: fetch it again
		}
	}
	hd, err := h.head(name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	rf := &remoteFile{fs: h, name: name, url: h.base + name, size: hd.size}
	if h.cache == nil {
		return rf, nil
	}
	h.mu.Lock()
	d := h.downloads[name]
	if d == nil {
		d = &download{h: h, name: name, url: rf.url, size: hd.size, etag: hd.etag}
		h.downloads[name] = d
	}
	h.mu.Unlock()
	return &cachingFile{remote: rf, d: d}, nil
}

// cachedEntry finds a large file in the cache once per load; under
// cacheRevalidate an entry counts only when HEAD gives the same ETag.
func (h *httpFS) cachedEntry(name string) (*cacheEntry, error) {
	h.mu.Lock()
	e, seen := h.cached[name]
	h.mu.Unlock()
	if seen {
		return e, nil
	}
	u := h.base + name
	e, err := h.cache.lookup(u)
	if err != nil {
		e = nil // an unusable cache is no reason to fail the load
	}
	if e != nil && h.policy == cacheRevalidate {
		hd, err := h.head(name)
		if err != nil {
			return nil, err
		}
		if e.etag == "" || hd.etag != e.etag || hd.size != e.size {
			h.cache.remove(u)
			e = nil
		}
	}
	if e != nil {
		h.fromCache += e.size
	}
	h.mu.Lock()
	h.cached[name] = e
	h.mu.Unlock()
	return e, nil
}

func (h *httpFS) forgetCached(name string) {
	h.mu.Lock()
	if e := h.cached[name]; e != nil {
		h.fromCache -= e.size
	}
	h.cached[name] = nil
	h.mu.Unlock()
	h.cache.remove(h.base + name)
}

// finish completes the cache entries of every weight file downloaded by a
// successful load.
func (h *httpFS) finish() error {
	h.mu.Lock()
	ds := make([]*download, 0, len(h.downloads))
	for _, d := range h.downloads {
		ds = append(ds, d)
	}
	h.mu.Unlock()
	for _, d := range ds {
		if err := d.finish(); err != nil {
			return err
		}
	}
	return nil
}

// abandon drops the downloads of a failed load: nothing of them is stored.
func (h *httpFS) abandon(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.downloads {
		if d.started && d.err == nil {
			d.fail(err)
		}
	}
}

func (h *httpFS) readSmall(name string) ([]byte, error) {
	h.mu.Lock()
	data, ok := h.small[name]
	h.mu.Unlock()
	if ok {
		return data, nil
	}
	u := h.base + name
	var e *cacheEntry
	if h.cache != nil {
		e, _ = h.cache.lookup(u)
		if e != nil && e.missing {
			if h.policy == cacheUse {
				return nil, &httpError{msg: u + " does not exist (remembered from an earlier load)", notFound: true}
			}
			e = nil
		}
		if e != nil && h.policy == cacheUse {
			if data, err := entryBytes(e); err == nil {
				h.remember(name, data)
				return data, nil
			}
		}
	}
	var cond map[string]any
	if e != nil && e.etag != "" {
		cond = map[string]any{"If-None-Match": e.etag}
	}
	r, err := h.fetchWith("GET", u, cond, true)
	if err != nil {
		return nil, err
	}
	if r.status == 304 && e != nil {
		if data, err := entryBytes(e); err == nil {
			h.remember(name, data)
			return data, nil
		}
		r, err = h.fetch("GET", u, "", true) // the cached copy vanished meanwhile
		if err != nil {
			return nil, err
		}
	}
	if err := r.check(); err != nil {
		// Remember optional files that are absent (manifest.json, an index
		// probe); never config.json, whose absence means a wrong URL.
		if h.cache != nil && errors.Is(err, fs.ErrNotExist) && name != "config.json" {
			h.cache.putMissing(u) // a failure only costs the request next time
		}
		return nil, err
	}
	if h.cache != nil {
		if err := h.cache.putBytes(u, r.body, r.header("etag"), r.header("content-type")); err != nil {
			h.note(quotaNote(name, int64(len(r.body)), err))
		}
	}
	h.remember(name, r.body)
	return r.body, nil
}

func (h *httpFS) remember(name string, data []byte) {
	h.mu.Lock()
	h.small[name] = data
	h.mu.Unlock()
}

// entryBytes reads a small cached file whole.
func entryBytes(e *cacheEntry) ([]byte, error) {
	buf, err := await(e.resp.Call("clone").Call("arrayBuffer"))
	if err != nil {
		return nil, err
	}
	arr := js.Global().Get("Uint8Array").New(buf)
	if int64(arr.Length()) != e.size {
		return nil, errors.New("cached copy has the wrong length")
	}
	data := make([]byte, arr.Length())
	js.CopyBytesToGo(data, arr)
	return data, nil
}

// head finds a file's length and ETag with HEAD (or, when HEAD gives no
// length, from a one-byte Range request's Content-Range), once per load.
func (h *httpFS) head(name string) (head, error) {
	h.mu.Lock()
	hd, ok := h.heads[name]
	h.mu.Unlock()
	if ok {
		return hd, nil
	}
	hd, err := h.lookupHead(name)
	if err == nil {
		h.mu.Lock()
		h.heads[name] = hd
		h.mu.Unlock()
	}
	return hd, err
}

func (h *httpFS) lookupHead(name string) (head, error) {
	u := h.base + name
	r, err := h.fetch("HEAD", u, "", false)
	if err != nil {
		return head{}, err
	}
	if err := r.check(); err != nil {
		return head{}, err
	}
	if n, err := strconv.ParseInt(r.header("content-length"), 10, 64); err == nil && n >= 0 &&
		r.header("content-encoding") == "" {
		return head{size: n, etag: r.header("etag")}, nil
	}
	r, err = h.fetch("GET", u, "bytes=0-0", false)
	if err != nil {
		return head{}, err
	}
	if err := r.check(); err != nil {
		return head{}, err
	}
	cr := r.header("content-range") // bytes 0-0/12345
	if i := strings.LastIndexByte(cr, '/'); i >= 0 {
		if n, err := strconv.ParseInt(cr[i+1:], 10, 64); err == nil && n >= 0 {
			return head{size: n, etag: r.header("etag")}, nil
		}
	}
	return head{}, fmt.Errorf("%s: the server reports no length (no Content-Length on HEAD, no Content-Range; cross-origin servers must expose them)", u)
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

// open sends one request and returns the response as soon as its headers
// arrive; stop aborts it (and its body), and must be called once the body is
// no longer needed. Network errors are retried twice; HTTP errors are not
// errors here.
func (h *httpFS) open(method, u string, headers map[string]any) (resp js.Value, stop func(), err error) {
	if err := h.ctx.Err(); err != nil {
		return js.Undefined(), nil, coded(codeAborted, err)
	}
	for attempt := 0; ; attempt++ {
		ctrl := js.Global().Get("AbortController").New()
		cancel := context.AfterFunc(h.ctx, func() { ctrl.Call("abort") })
		stop = func() {
			cancel()
			ctrl.Call("abort")
		}
		init := map[string]any{"method": method, "signal": ctrl.Get("signal")}
		if headers != nil {
			init["headers"] = headers
		}
		resp, err = await(js.Global().Call("fetch", u, init))
		if err == nil && (attempt == retries || !transient(resp.Get("status").Int())) {
			return resp, stop, nil
		}
		stop()
		if h.ctx.Err() != nil {
			return js.Undefined(), nil, coded(codeAborted, h.ctx.Err())
		}
		if attempt == retries {
			return js.Undefined(), nil, codef(codeBadURL, "could not fetch %s: %v (the server may be down, or a cross-origin server may not allow this page)", u, err)
		}
		// A network error or a server error that may pass: wait, then again.
		time.Sleep(time.Duration(250<<attempt) * time.Millisecond)
	}
}

// retries is how many times open repeats a request that failed on the
// network or with a transient server error (waiting 0.25, 0.5, 1 s).
const retries = 3

// transient reports whether an HTTP status may well be different on the
// next try: the 5xx answers of an overloaded or restarting server.
func transient(status int) bool {
	switch status {
	case 500, 502, 503, 504:
		return true
	}
	return false
}

// fetch performs one request with an optional Range. The body is read only
// when readBody is set and the request succeeded (or for a Range request,
// when the answer is a 206 or a whole file small enough to keep).
func (h *httpFS) fetch(method, u, rng string, readBody bool) (*response, error) {
	var hdr map[string]any
	if rng != "" {
		hdr = map[string]any{"Range": rng}
	}
	return h.fetchWith(method, u, hdr, readBody)
}

func (h *httpFS) fetchWith(method, u string, headers map[string]any, readBody bool) (*response, error) {
	resp, stop, err := h.open(method, u, headers)
	if err != nil {
		return nil, err
	}
	defer stop()
	r := &response{
		url:        u,
		status:     resp.Get("status").Int(),
		statusText: resp.Get("statusText").String(),
		headers:    resp.Get("headers"),
	}
	ok := r.status >= 200 && r.status < 300
	if _, ranged := headers["Range"]; ranged && r.status == 200 {
		// The server ignored Range: keep the whole file only when small.
		if n, err := strconv.ParseInt(r.header("content-length"), 10, 64); err != nil || n > wholeLimit {
			return nil, fmt.Errorf("%s: the server ignores HTTP Range requests, which streaming weights needs", u)
		}
		readBody = true
	}
	if !readBody || !ok {
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

// span is how many of want bytes at off a ReadAt of a file of size bytes
// returns, or the error it returns instead.
func span(name string, size, off int64, want int) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: name, Err: fs.ErrInvalid}
	}
	if off >= size {
		return 0, io.EOF
	}
	return int(min(int64(want), size-off)), nil
}

func (f *remoteFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := span(f.name, f.size, off, len(p))
	if err != nil {
		return 0, err
	}
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
	return seekTo(&f.off, f.size, offset, whence)
}

// seekTo moves a read position *pos in a file of size bytes, as io.Seeker.
func seekTo(pos *int64, size, offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += *pos
	case io.SeekEnd:
		offset += size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start of the file")
	}
	*pos = offset
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
