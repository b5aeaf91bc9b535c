//go:build js

package loader

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall/js"
	"time"
)

// Headers of a response stored by the web cache, besides Content-Length
// (the file's size) and the server's ETag.
const (
	hdrStored    = "X-Mamba2-Stored"    // when it was stored (RFC 3339)
	hdrSHA256    = "X-Mamba2-SHA256"    // the verified digest
	hdrValidator = "X-Mamba2-Validator" // what it was stored under (an ETag, or mtime and size)
	hdrMissing   = "X-Mamba2-Missing"   // on a remembered 404
)

// NewWebCache opens the Cache API cache called name as a Store, in a
// browser or a worker; nil without an error where the host has no Cache
// API (Node, or a page that is not a secure context).
//
// Each file is one stored Response under its URL, with the file's size as
// Content-Length, the validator and sha256 it was verified against in
// headers of its own, and the time it was stored; a remembered absence is
// a stored 404. cache.put is atomic: an entry is a whole file or absent.
// A download's bytes go into a ReadableStream that cache.put consumes as
// they come, so nothing is held whole; the stream is closed (committing
// the entry) only after the last byte and a matching sha256, and errored
// (so the put is refused and nothing stored) on any failure. A full
// storage quota is ErrNotStored, with a note that says so: the model
// still loads, from the network.
func NewWebCache(name string) (Store, error) {
	caches := js.Global().Get("caches")
	if caches.Type() != js.TypeObject {
		return nil, nil
	}
	c, err := jsAwait(caches.Call("open", name))
	if err != nil {
		return nil, err
	}
	return &webCache{c: c, blobs: map[string]js.Value{}}, nil
}

type webCache struct {
	c     js.Value
	mu    sync.Mutex
	blobs map[string]js.Value // bodies opened so far: a load opens a file once per tensor
}

func headerOf(h js.Value, name string) string {
	v := h.Call("get", name)
	if v.Type() != js.TypeString {
		return ""
	}
	return v.String()
}

func (w *webCache) match(u string) (js.Value, bool) {
	r, err := jsAwait(w.c.Call("match", u))
	if err != nil || r.Type() != js.TypeObject {
		return js.Undefined(), false
	}
	return r, true
}

func (w *webCache) Lookup(u string) (StoreEntry, bool) {
	r, ok := w.match(u)
	if !ok {
		return StoreEntry{}, false
	}
	h := r.Get("headers")
	if r.Get("status").Int() == statusNotFound {
		return StoreEntry{Missing: true}, true
	}
	n, err := strconv.ParseInt(headerOf(h, "Content-Length"), 10, 64)
	if err != nil || n < 0 {
		w.Remove(u) // not one of ours
		return StoreEntry{}, false
	}
	v := headerOf(h, hdrValidator)
	if v == "" {
		v = headerOf(h, "ETag")
	}
	return StoreEntry{Size: n, Validator: v, SHA256: headerOf(h, hdrSHA256)}, true
}

func (w *webCache) Open(u string, e StoreEntry) (StoredFile, error) {
	w.mu.Lock()
	blob, ok := w.blobs[u]
	w.mu.Unlock()
	if ok && int64(blob.Get("size").Float()) == e.Size {
		return &blobFile{url: u, blob: blob, size: e.Size}, nil
	}
	r, ok := w.match(u)
	if !ok {
		return nil, errors.New("the browser no longer has it (evicted?); load again")
	}
	blob, err := jsAwait(r.Call("blob"))
	if err != nil {
		return nil, err
	}
	if int64(blob.Get("size").Float()) != e.Size {
		w.Remove(u)
		return nil, errors.New("the cached copy has the wrong length; load again")
	}
	w.mu.Lock()
	w.blobs[u] = blob // a Blob never changes: later Opens reuse it
	w.mu.Unlock()
	return &blobFile{url: u, blob: blob, size: e.Size}, nil
}

// forget drops the Blob kept for u, whose entry changes.
func (w *webCache) forget(u string) {
	w.mu.Lock()
	delete(w.blobs, u)
	w.mu.Unlock()
}

func (w *webCache) MarkMissing(u string) {
	w.forget(u)
	hdr := map[string]any{"Content-Length": "0", hdrStored: time.Now().UTC().Format(time.RFC3339), hdrMissing: "1"}
	resp := js.Global().Get("Response").New(js.Null(), map[string]any{"status": statusNotFound, "headers": hdr})
	jsAwait(w.c.Call("put", u, resp)) // best effort: a failure costs a request next time
}

func (w *webCache) Remove(u string) {
	w.forget(u)
	jsAwait(w.c.Call("delete", u)) // a failed delete leaves an entry that is still whole
}

// fileName is the last part of a URL, for messages.
func fileName(u string) string { return path.Base(u) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// storageFree is how many more bytes the origin may store, from
// navigator.storage.estimate; ok is false where the browser does not say.
func storageFree() (free int64, ok bool) {
	nav := js.Global().Get("navigator")
	if nav.Type() != js.TypeObject {
		return 0, false
	}
	st := nav.Get("storage")
	if st.Type() != js.TypeObject || st.Get("estimate").Type() != js.TypeFunction {
		return 0, false
	}
	est, err := jsAwait(st.Call("estimate"))
	if err != nil || est.Get("quota").Type() != js.TypeNumber {
		return 0, false
	}
	return int64(est.Get("quota").Float() - est.Get("usage").Float()), true
}

// notStored explains a file the browser would not keep; it matches
// ErrNotStored.
type notStored struct {
	name string
	size int64
	err  error // nil: the quota, known in advance
}

func (e *notStored) Is(target error) bool { return target == ErrNotStored }

func (e *notStored) Error() string {
	if e.err == nil || jsErrorName(e.err) == "QuotaExceededError" {
		msg := fmt.Sprintf("%s (%s) was not cached: the browser's storage quota for this site is exhausted", e.name, mib(e.size))
		if free, ok := storageFree(); ok {
			msg += fmt.Sprintf(" (%s left)", mib(max(free, 0)))
		}
		return msg + "; free space with clearCache() or in the browser's site settings. The model loaded from the network and will be fetched again next time."
	}
	return fmt.Sprintf("%s was not cached: %v; it will be fetched again next time.", e.name, e.err)
}

func (w *webCache) Create(u string, want StoreEntry) (StoreWriter, error) {
	w.forget(u)
	if free, ok := storageFree(); ok && free < want.Size {
		return nil, &notStored{name: fileName(u), size: want.Size}
	}
	hdr := map[string]any{
		"Content-Length": strconv.FormatInt(want.Size, 10),
		"Content-Type":   "application/octet-stream",
		hdrStored:        time.Now().UTC().Format(time.RFC3339),
		hdrValidator:     want.Validator,
	}
	if want.Validator != "" && !strings.HasPrefix(want.Validator, "mtime=") {
		hdr["ETag"] = want.Validator
	}
	if want.SHA256 != "" {
		hdr[hdrSHA256] = want.SHA256
	}
	var ctrl js.Value
	start := js.FuncOf(func(_ js.Value, args []js.Value) any {
		if len(args) > 0 {
			ctrl = args[0]
		}
		return nil
	})
	body := js.Global().Get("ReadableStream").New(map[string]any{"start": start})
	start.Release() // start runs inside the constructor
	resp := js.Global().Get("Response").New(body, map[string]any{"headers": hdr})
	put := w.c.Call("put", u, resp)
	put.Call("catch", ignore) // awaited at the commit, or abandoned
	return &webWriter{w: w, url: u, want: want, ctrl: ctrl, put: put, sum: sha256.New()}, nil
}

// ignore is a no-op callback for promises whose failure is handled elsewhere.
var ignore = js.FuncOf(func(js.Value, []js.Value) any { return nil })

// webWriter feeds a cache.put through its stream's controller.
type webWriter struct {
	w       *webCache
	url     string
	want    StoreEntry
	ctrl    js.Value
	put     js.Value
	sum     hash.Hash
	written int64
	done    bool
}

func (ww *webWriter) Offset() int64 { return 0 }

// call calls a method of the stream's controller, which throws once the
// consumer (cache.put) gave up.
func (ww *webWriter) call(method string, args ...any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	ww.ctrl.Call(method, args...)
	return nil
}

// refused is why cache.put gave up, as ErrNotStored.
func (ww *webWriter) refused(cause error) error {
	ww.done = true
	if _, err := jsAwait(ww.put); err != nil {
		cause = err
	}
	return &notStored{name: fileName(ww.url), size: ww.want.Size, err: cause}
}

func (ww *webWriter) Write(p []byte) (int, error) {
	if ww.done {
		return 0, errors.New("write after the end of a cache entry")
	}
	arr := js.Global().Get("Uint8Array").New(len(p))
	js.CopyBytesToJS(arr, p)
	if err := ww.call("enqueue", arr); err != nil {
		return 0, ww.refused(err)
	}
	ww.sum.Write(p)
	ww.written += int64(len(p))
	return len(p), nil
}

func (ww *webWriter) Abort(bool) {
	if ww.done {
		return
	}
	ww.done = true
	ww.call("error", js.Global().Get("Error").New("download abandoned"))
}

func (ww *webWriter) Commit() (string, error) {
	got := hex.EncodeToString(ww.sum.Sum(nil))
	var bad error
	switch {
	case ww.written != ww.want.Size:
		bad = fmt.Errorf("%w: received %d bytes, the file has %d", ErrIntegrity, ww.written, ww.want.Size)
	case ww.want.SHA256 != "" && got != ww.want.SHA256:
		bad = fmt.Errorf("%w: sha256 of the download is %s, expected %s", ErrIntegrity, got, ww.want.SHA256)
	}
	if bad != nil {
		ww.Abort(false)
		return "", bad
	}
	if err := ww.call("close"); err != nil {
		return "", ww.refused(err)
	}
	ww.done = true
	if _, err := jsAwait(ww.put); err != nil {
		return "", &notStored{name: fileName(ww.url), size: ww.want.Size, err: err}
	}
	return got, nil
}

// blobFile is a cached file, read with Blob slices (the browser keeps large
// cached bodies on disk, so a slice reads only its bytes).
type blobFile struct {
	url  string
	blob js.Value
	size int64
}

func (f *blobFile) Close() error { return nil }

func (f *blobFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= f.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	buf, err := jsAwait(f.blob.Call("slice", float64(off), float64(off+int64(n))).Call("arrayBuffer"))
	if err != nil {
		return 0, fmt.Errorf("reading the cached copy of %s: %v (the browser may have evicted it; load again)", fileName(f.url), err)
	}
	arr := js.Global().Get("Uint8Array").New(buf)
	if arr.Length() != n {
		return 0, fmt.Errorf("the cached copy of %s is shorter than it should be; clear the cache and load again", fileName(f.url))
	}
	js.CopyBytesToGo(p[:n], arr)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
