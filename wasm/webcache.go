//go:build js && wasm

package main

// The browser's persistent model cache. Every file of a model folder is kept
// in the Cache API (cache "mamba2-models-v1") under its URL, with the
// server's ETag and its length, so a second load of the same URL reads the
// weights from disk and makes no request for them.
//
// Weights are stored while they load, not in a separate download: a weight
// file that is not cached yet is fetched once, whole, and its body is read
// in order; each chunk goes both to the loader (and on to the GPU) and into
// a ReadableStream that cache.put consumes. The loader streams tensors in
// file order (model.LoadWeights sorts them), so the one pass serves both.
// Memory stays at a chunk or two; nothing is held whole.
//
// Integrity: cache.put is atomic, so an entry is either a whole file or
// absent. The stream is only closed (committing the entry) after the last
// byte has arrived and, where a sha256 is known (an ETag that is one, as on
// Hugging Face), after it matched; on any failure the stream is errored and
// the put rejected, so a partial or mixed file is never stored. A broken
// connection resumes with Range + If-Range; if the file changed on the
// server meanwhile, the load fails rather than mix two versions.
//
// Cached entries are used without asking the server (policy "use", the
// default, which also works offline), or after a HEAD / If-None-Match shows
// they are current ("revalidate"); "off" neither reads nor writes the cache.
// Storage quota problems never fail a load: the model loads from the network
// and the load's note says why it was not kept.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall/js"
	"time"

	"github.com/mamba2web/mamba2/loader"
)

// cacheName is the Cache API cache holding model files; web/mamba2.js lists
// and clears the same cache.
const cacheName = "mamba2-models-v1"

// Headers of a cached response besides the server's ETag and Content-Type.
const (
	hdrLength  = "Content-Length"
	hdrStored  = "X-Mamba2-Stored"  // when it was stored (RFC 3339)
	hdrSHA256  = "X-Mamba2-SHA256"  // the verified digest, when one was known
	hdrMissing = "X-Mamba2-Missing" // on a remembered 404
)

// cachePolicy says how a load uses the cache.
type cachePolicy int

const (
	cacheUse        cachePolicy = iota // use cached files as they are; store new ones
	cacheRevalidate                    // use cached files the server says are current
	cacheOff                           // neither read nor store
)

func parseCachePolicy(s string) (cachePolicy, error) {
	switch s {
	case "", "use":
		return cacheUse, nil
	case "revalidate":
		return cacheRevalidate, nil
	case "off":
		return cacheOff, nil
	}
	return 0, codef(codeBadArg, "cache %q: want 'use', 'revalidate' or 'off'", s)
}

// webCache is an open Cache API cache.
type webCache struct{ c js.Value }

// openWebCache opens the model cache; nil without an error where the host
// has no Cache API (Node, or a page that is not a secure context).
func openWebCache() (*webCache, error) {
	caches := js.Global().Get("caches")
	if caches.Type() != js.TypeObject {
		return nil, nil
	}
	c, err := await(caches.Call("open", cacheName))
	if err != nil {
		return nil, err
	}
	return &webCache{c: c}, nil
}

// cacheEntry is a stored response.
type cacheEntry struct {
	resp    js.Value
	etag    string
	size    int64
	missing bool // a remembered 404 (optional files such as manifest.json)
}

// lookup returns the entry for u, or nil. An entry without a length (which
// this package never writes) is dropped.
func (w *webCache) lookup(u string) (*cacheEntry, error) {
	r, err := await(w.c.Call("match", u))
	if err != nil {
		return nil, err
	}
	if r.Type() != js.TypeObject {
		return nil, nil
	}
	h := r.Get("headers")
	n, err := strconv.ParseInt(headerOf(h, hdrLength), 10, 64)
	if err != nil || n < 0 {
		w.remove(u)
		return nil, nil
	}
	return &cacheEntry{resp: r, etag: headerOf(h, "ETag"), size: n, missing: r.Get("status").Int() == 404}, nil
}

// putMissing remembers that the server has no file at u, so that a later
// load under cacheUse need not ask again (and works offline).
func (w *webCache) putMissing(u string) error {
	hdr := entryHeaders(0, "", "", "")
	hdr[hdrMissing] = "1"
	resp := js.Global().Get("Response").New(js.Null(), map[string]any{"status": 404, "headers": hdr})
	_, err := await(w.c.Call("put", u, resp))
	return err
}

func (w *webCache) remove(u string) {
	await(w.c.Call("delete", u)) // a failed delete leaves an entry that is still whole
}

// entryHeaders are the headers stored with a file.
func entryHeaders(size int64, etag, ctype, sum string) map[string]any {
	h := map[string]any{
		hdrLength: strconv.FormatInt(size, 10),
		hdrStored: time.Now().UTC().Format(time.RFC3339),
	}
	if etag != "" {
		h["ETag"] = etag
	}
	if ctype != "" {
		h["Content-Type"] = ctype
	}
	if sum != "" {
		h[hdrSHA256] = sum
	}
	return h
}

// putBytes stores a small file.
func (w *webCache) putBytes(u string, data []byte, etag, ctype string) error {
	arr := js.Global().Get("Uint8Array").New(len(data))
	js.CopyBytesToJS(arr, data)
	resp := js.Global().Get("Response").New(arr, map[string]any{
		"headers": entryHeaders(int64(len(data)), etag, ctype, ""),
	})
	_, err := await(w.c.Call("put", u, resp))
	return err
}

// putStream starts storing a file whose bytes are then enqueued on ctrl;
// done settles when the entry is committed (after ctrl.close()) or refused.
func (w *webCache) putStream(u string, size int64, etag, ctype, sum string) (ctrl, done js.Value) {
	start := js.FuncOf(func(_ js.Value, args []js.Value) any {
		ctrl = arg0(args)
		return nil
	})
	body := js.Global().Get("ReadableStream").New(map[string]any{"start": start})
	start.Release() // start runs inside the constructor
	resp := js.Global().Get("Response").New(body, map[string]any{
		"headers": entryHeaders(size, etag, ctype, sum),
	})
	done = w.c.Call("put", u, resp)
	done.Call("catch", ignore) // awaited later, or abandoned on failure
	return ctrl, done
}

// ignore is a no-op callback for promises whose failure is handled elsewhere.
var ignore = js.FuncOf(func(js.Value, []js.Value) any { return nil })

// storageFree is how many more bytes the origin may store, from
// navigator.storage.estimate; ok is false where the browser does not say.
func storageFree() (free int64, ok bool) {
	st := js.Global().Get("navigator").Get("storage")
	if st.Type() != js.TypeObject || st.Get("estimate").Type() != js.TypeFunction {
		return 0, false
	}
	est, err := await(st.Call("estimate"))
	if err != nil || est.Get("quota").Type() != js.TypeNumber {
		return 0, false
	}
	return int64(est.Get("quota").Float() - est.Get("usage").Float()), true
}

// quotaNote explains a file that could not be stored.
func quotaNote(name string, size int64, err error) string {
	var t *jsThrown
	if err == nil || (errors.As(err, &t) && t.name == "QuotaExceededError") {
		msg := fmt.Sprintf("%s (%s) was not cached: the browser's storage quota for this site is exhausted", name, mib(size))
		if free, ok := storageFree(); ok {
			msg += fmt.Sprintf(" (%s left)", mib(max(free, 0)))
		}
		return msg + "; free space with clearCache() or in the browser's site settings. The model loaded from the network and will be fetched again next time."
	}
	return fmt.Sprintf("%s was not cached: %v; it will be fetched again next time.", name, err)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// blobFile is a cached file, read with Blob slices (the browser keeps large
// cached bodies on disk, so a slice reads only its bytes).
type blobFile struct {
	name string
	blob js.Value
	size int64
	off  int64
}

func (f *blobFile) Stat() (fs.FileInfo, error) { return fileInfo{f.name, f.size}, nil }
func (f *blobFile) Close() error               { return nil }

func (f *blobFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := span(f.name, f.size, off, len(p))
	if err != nil {
		return 0, err
	}
	buf, err := await(f.blob.Call("slice", float64(off), float64(off+int64(n))).Call("arrayBuffer"))
	if err != nil {
		return 0, fmt.Errorf("reading the cached copy of %s: %v (the browser may have evicted it; load again)", f.name, err)
	}
	arr := js.Global().Get("Uint8Array").New(buf)
	if arr.Length() != n {
		return 0, fmt.Errorf("the cached copy of %s is shorter than it should be; clear the cache and load again", f.name)
	}
	js.CopyBytesToGo(p[:n], arr)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *blobFile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *blobFile) Seek(offset int64, whence int) (int64, error) {
	return seekTo(&f.off, f.size, offset, whence)
}

// download is the one whole-file GET of a weight file not yet cached. Its
// body is read in order; readers ask for byte ranges at or after the bytes
// already taken, and skipped bytes still go to the cache and the digest.
type download struct {
	h    *httpFS
	name string
	url  string
	size int64
	etag string // from HEAD; the GET must agree

	mu       sync.Mutex // one reader at a time
	started  bool
	pos      int64     // bytes handed out or skipped
	body     js.Value  // the body's ReadableStreamDefaultReader
	stop     func()    // aborts the current request
	chunk    []byte    // bytes received but not yet taken: [pos, pos+len(chunk))
	ctrl     js.Value  // the cache's stream; undefined when not caching
	put      js.Value  // cache.put's promise
	sum      hash.Hash // over every byte, when want is set
	want     string    // expected sha256 (hex), or ""
	wantFrom string    // where want comes from, for errors
	err      error     // sticky failure of the download itself
	stored   *blobFile // the committed cache entry, once the whole file is in it
	retries  int
}

// errBehind says a range starts before the download's position; the caller
// reads it with its own Range request instead.
var errBehind = errors.New("range already passed")

// take returns up to max bytes at off (>= d.pos), reading and skipping as
// needed. The slice is valid until the next call.
func (d *download) take(off int64, max int) ([]byte, error) {
	if d.err != nil {
		return nil, d.err
	}
	if off < d.pos {
		return nil, errBehind
	}
	if !d.started {
		d.started = true
		if err := d.begin(); err != nil {
			d.fail(err)
			return nil, err
		}
	}
	for {
		if len(d.chunk) == 0 {
			if d.pos >= d.size {
				return nil, io.EOF
			}
			if err := d.receive(); err != nil {
				d.fail(err)
				return nil, err
			}
			continue
		}
		if skip := off - d.pos; skip > 0 {
			k := min(skip, int64(len(d.chunk)))
			d.chunk = d.chunk[k:]
			d.pos += k
			continue
		}
		n := min(max, len(d.chunk))
		b := d.chunk[:n]
		d.chunk = d.chunk[n:]
		d.pos += int64(n)
		return b, nil
	}
}

// begin sends the GET and, unless the cache is off for this file, opens the
// cache entry's stream.
func (d *download) begin() error {
	d.h.prefetchOnce.Do(func() { go d.h.prefetch() })
	resp, stop, err := d.h.open("GET", d.url, nil)
	if err != nil {
		return err
	}
	r := &response{url: d.url, status: resp.Get("status").Int(), statusText: resp.Get("statusText").String(), headers: resp.Get("headers")}
	if err := r.check(); err != nil {
		stop()
		return err
	}
	if et := r.header("etag"); d.etag != "" && et != "" && et != d.etag {
		stop()
		return fmt.Errorf("%s changed on the server while loading (ETag %s, then %s); load again", d.url, d.etag, et)
	}
	if n, err := strconv.ParseInt(r.header("content-length"), 10, 64); err == nil && r.header("content-encoding") == "" && n != d.size {
		stop()
		return fmt.Errorf("%s: the server sent %d bytes but reported %d before; load again", d.url, n, d.size)
	}
	d.body, d.stop = resp.Get("body").Call("getReader"), stop
	d.want, d.wantFrom = loader.ETagDigest(d.etag), "the server's ETag"
	if m, ok := d.h.manifest[d.name]; ok {
		if m.Size != nil && *m.Size != d.size {
			stop()
			return fmt.Errorf("%s: the server has %d bytes but %s says %d", d.url, d.size, loader.ManifestFile, *m.Size)
		}
		if m.SHA256 != "" {
			d.want, d.wantFrom = m.SHA256, loader.ManifestFile
		}
	}
	if d.want != "" {
		d.sum = sha256.New()
	}
	if c := d.h.cache; c != nil {
		if free, ok := storageFree(); ok && free < d.size {
			d.h.note(quotaNote(d.name, d.size, nil))
		} else {
			d.ctrl, d.put = c.putStream(d.url, d.size, d.etag, "application/octet-stream", d.want)
		}
	}
	return nil
}

// receive reads the next network chunk into d.chunk, resuming a broken body.
func (d *download) receive() error {
	got := d.pos // every byte before this has been received
	for {
		v, err := await(d.body.Call("read"))
		if err == nil {
			if v.Get("done").Bool() {
				return fmt.Errorf("%s ended after %d of %d bytes", d.url, got, d.size)
			}
			arr := v.Get("value")
			n := arr.Length()
			if got+int64(n) > d.size {
				return fmt.Errorf("%s is longer than the %d bytes the server reported", d.url, d.size)
			}
			if cap(d.chunk) < n {
				d.chunk = make([]byte, max(n, 1<<20))
			}
			d.chunk = d.chunk[:n]
			js.CopyBytesToGo(d.chunk, arr)
			if d.sum != nil {
				d.sum.Write(d.chunk)
			}
			if d.ctrl.Truthy() {
				d.ctrl.Call("enqueue", arr)
			}
			d.h.fetched += int64(n)
			if got+int64(n) == d.size {
				return d.complete()
			}
			return nil
		}
		if d.h.ctx.Err() != nil {
			return coded(codeAborted, d.h.ctx.Err())
		}
		if d.retries >= 3 {
			return fmt.Errorf("reading %s: %v (gave up after %d attempts to resume)", d.url, err, d.retries)
		}
		d.retries++
		time.Sleep(time.Duration(250<<d.retries) * time.Millisecond)
		if err := d.resume(got); err != nil {
			return err
		}
	}
}

// resume asks for the rest of the file from byte at, only if it is still the
// same version (If-Range); anything but that range is refused.
func (d *download) resume(at int64) error {
	d.stop()
	hdr := map[string]any{"Range": fmt.Sprintf("bytes=%d-", at)}
	if d.etag != "" && !strings.HasPrefix(d.etag, "W/") {
		hdr["If-Range"] = d.etag
	}
	resp, stop, err := d.h.open("GET", d.url, hdr)
	if err != nil {
		return err
	}
	d.stop = stop
	status := resp.Get("status").Int()
	cr := headerOf(resp.Get("headers"), "content-range")
	if status != 206 || !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", at)) {
		stop()
		if status == 200 {
			return fmt.Errorf("%s changed on the server while loading (it no longer matches ETag %s); load again", d.url, d.etag)
		}
		return fmt.Errorf("resuming %s at byte %d: the server answered HTTP %d %s", d.url, at, status, cr)
	}
	d.body = resp.Get("body").Call("getReader")
	return nil
}

// complete checks the digest and commits the cache entry.
func (d *download) complete() error {
	if d.sum != nil {
		if got := hex.EncodeToString(d.sum.Sum(nil)); got != d.want {
			return fmt.Errorf("%s is corrupt: its sha256 is %s, but %s says %s", d.url, got, d.wantFrom, d.want)
		}
	}
	if d.ctrl.Truthy() {
		d.ctrl.Call("close")
	}
	d.stop()
	return nil
}

// fail abandons the download and its cache entry.
func (d *download) fail(err error) {
	d.err = err
	if d.ctrl.Truthy() {
		d.ctrl.Call("error", js.Global().Get("Error").New(err.Error()))
		d.ctrl = js.Undefined()
	}
	if d.stop != nil {
		d.stop()
	}
}

// finish reads whatever the loader skipped at the end of the file, so the
// cache gets all of it, and waits for the entry to be committed.
func (d *download) finish() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.started || d.err != nil {
		return d.err
	}
	return d.drain()
}

// drain reads the rest of the file into the cache and waits for the entry;
// then later reads of the file come from it (d.stored). d.mu is held.
func (d *download) drain() error {
	for d.pos < d.size {
		if _, err := d.take(d.pos, 1<<20); err != nil {
			return err
		}
	}
	if !d.put.Truthy() || d.stored != nil {
		return nil
	}
	if _, err := await(d.put); err != nil {
		d.h.note(quotaNote(d.name, d.size, err))
		d.put = js.Undefined()
		return nil
	}
	if e, err := d.h.cache.lookup(d.url); err == nil && e != nil && !e.missing {
		if blob, err := await(e.resp.Call("blob")); err == nil && int64(blob.Get("size").Float()) == d.size {
			d.stored = &blobFile{name: d.name, blob: blob, size: d.size}
		}
	}
	return nil
}

// prefetch downloads the whole file into the cache ahead of the loader,
// unless the loader has begun it already. It reports false when the file
// cannot be cached (then the loader reads the response itself, in order, and
// prefetching more would only hold connections open).
func (d *download) prefetch() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return true
	}
	d.started = true
	if err := d.begin(); err != nil {
		d.fail(err)
		return false
	}
	if !d.ctrl.Truthy() {
		return false
	}
	if err := d.drain(); err != nil {
		return false // d.err is set: the loader reports it
	}
	return true
}

// prefetchLimit is how many weight files are downloaded into the cache
// ahead of the loader at once, besides the one it is reading.
const prefetchLimit = 2

// prefetch downloads the weight files, in order, into the cache while the
// loader reads the first: up to prefetchLimit at a time. A file the loader
// reaches while it is still downloading waits for it, then comes from the
// cache; one the loader reaches first is read as it arrives.
func (h *httpFS) prefetch() {
	h.mu.Lock()
	ds := make([]*download, 0, len(h.downloads))
	for _, d := range h.downloads {
		ds = append(ds, d)
	}
	h.mu.Unlock()
	sort.Slice(ds, func(i, j int) bool { return ds[i].name < ds[j].name })
	next := make(chan *download)
	var stop sync.Once
	quit := make(chan struct{})
	for range prefetchLimit {
		go func() {
			for d := range next {
				if !d.prefetch() {
					stop.Do(func() { close(quit) })
				}
			}
		}()
	}
	defer close(next)
	for _, d := range ds {
		select {
		case next <- d:
		case <-quit:
			return
		case <-h.ctx.Done():
			return
		}
	}
}

// downloadRange reads [off, off+n) of a file being downloaded: from the
// download when it has not passed off yet, else with a Range request.
type downloadRange struct {
	f    *cachingFile
	off  int64
	end  int64
	own  bool        // not from the download: from the cache or with Range requests
	from io.ReaderAt // where, then
}

func (r *downloadRange) Read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), r.end-r.off))
	if !r.own {
		d := r.f.d
		d.mu.Lock()
		b, err := d.take(r.off, want)
		n := copy(p, b)
		d.mu.Unlock()
		if err == nil {
			r.off += int64(n)
			return n, nil
		}
		if !errors.Is(err, errBehind) {
			return 0, err
		}
		r.own = true
		if d.stored != nil { // prefetched into the cache
			r.from = d.stored
		}
	}
	n, err := r.from.ReadAt(p[:want], r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (r *downloadRange) Close() error { return nil }

// cachingFile is a weight file not cached yet: Read and ReadAt (the header)
// use Range requests, OpenRange (the tensors) the shared download.
type cachingFile struct {
	remote *remoteFile
	d      *download
}

func (f *cachingFile) Stat() (fs.FileInfo, error)                { return f.remote.Stat() }
func (f *cachingFile) Close() error                              { return nil }
func (f *cachingFile) Read(p []byte) (int, error)                { return f.remote.Read(p) }
func (f *cachingFile) ReadAt(p []byte, off int64) (int, error)   { return f.remote.ReadAt(p, off) }
func (f *cachingFile) Seek(off int64, whence int) (int64, error) { return f.remote.Seek(off, whence) }

func (f *cachingFile) OpenRange(off, n int64) (io.ReadCloser, error) {
	if off < 0 || n < 0 || off+n > f.remote.size {
		return nil, fmt.Errorf("%s: range %d+%d outside its %d bytes", f.remote.name, off, n, f.remote.size)
	}
	return &downloadRange{f: f, off: off, end: off + n, from: f.remote}, nil
}

func headerOf(h js.Value, name string) string {
	v := h.Call("get", name)
	if v.Type() != js.TypeString {
		return ""
	}
	return v.String()
}
