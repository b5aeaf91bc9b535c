// Package serve is the HTTP server for the web runtime: model folders at
// /models/<name>/<file> and the demo page, its module, worker and wasm at /.
//
// What clients get, and why:
//
//   - Byte ranges. The loader reads each tensor with one Range request, so
//     a single range gets 206 with Content-Range, an unsatisfiable or
//     malformed one (bytes=-0, bytes=5-2, a start past the end) 416 with
//     "Content-Range: bytes */size". A request for several ranges, or in a
//     unit other than bytes, gets the whole file with 200 (RFC 9110 lets a
//     server ignore Range, and requires it for unknown units): no client
//     of ours asks for more than one, and multipart answers are a cheap way
//     to make a server do a lot of work. fixRange says what exactly.
//   - Strong ETags, so If-Range and If-None-Match work: for files from a
//     folder, "size-mtime" (hex; the same file with the same size and
//     modification time in nanoseconds is taken to be the same bytes, as
//     nginx and Apache do), or, with Options.ContentETags and for files with
//     no modification time (the embedded model), the sha256 of the content,
//     which the loader then also checks the download against (the Hugging
//     Face convention). If-None-Match gives 304, HEAD the headers alone.
//     Files are sent with Cache-Control: no-cache, so browsers keep them but
//     revalidate them (a cheap 304) before use. Content ETags are computed
//     once per file version and remembered for the life of the Handler.
//   - gzip for text assets (.html .js .mjs .css .json .wasm .svg .txt .map
//     .wgsl) when the client accepts it and asks for no range, with its own
//     ETag ("…-gzip") and Vary: Accept-Encoding. Compressed copies are kept
//     in memory (64 MiB in all). Weights (.safetensors and any other binary)
//     and ranged requests are always sent as they are, so byte offsets keep
//     their meaning. Options.NoGzip turns this off where something in front
//     compresses (the Cloudflare Worker).
//   - CORS for any origin (GET, HEAD, OPTIONS; Range and the conditional
//     headers allowed; Content-Length, Content-Range, ETag and Accept-Ranges
//     exposed), so a page elsewhere can load models from here.
//   - Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-
//     Policy: require-corp on the static files, which makes the page
//     cross-origin isolated (SharedArrayBuffer, precise timers), and
//     Cross-Origin-Resource-Policy: cross-origin on everything, so such a
//     page may load these files.
//   - No path leaves its root: "..", "." and empty segments (also when
//     percent-encoded), backslashes and NUL give 400; model folders (and
//     Options.StaticDir) are opened through os.Root, which refuses
//     symbolic links that lead out of the folder (404).
//   - Dotfiles are never served: a path with any segment that begins with
//     "." (.git/config, .env, .ssh/…) gets the 404 of a missing file, so
//     that whether it exists is not revealed either.
//   - Only regular files are served. A FIFO, socket or device under a
//     served folder gets 404 without ever being opened (opening a FIFO
//     blocks until a writer comes, which would pin the request).
//   - Responses that make no progress are cut: the write deadline of the
//     connection is WriteIdleTimeout ahead and moves forward as each piece
//     of the body goes out, so a client that never reads frees its
//     goroutine and file, while a slow download that keeps moving is never
//     cut. NewServer makes an http.Server with the other timeouts.
//
// The files may come from any fs.FS. Files of an object store can give
// their own ETag and send their bytes without Read (ETagFile,
// RangeWriterFile): serve/worker runs this Handler as a Cloudflare Worker
// with the demo and the models in R2 that way.
package serve

import (
	"bytes"
	"compress/gzip"
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mamba2web/mamba2/models"
)

// EmbeddedModel is the name under which the built-in model is served.
const EmbeddedModel = "mamba2-go-tiny"

// Options say what a Handler serves.
type Options struct {
	// ModelsDir is a folder of model folders: <ModelsDir>/<name>/config.json
	// is served as /models/<name>/config.json. It is opened with os.OpenRoot,
	// so symbolic links pointing outside it are not followed.
	ModelsDir string
	// Models is another source of model folders, in the same layout, used
	// for names ModelsDir lacks.
	Models fs.FS
	// NoEmbedded leaves out the embedded mamba2-go-tiny, otherwise served as
	// /models/mamba2-go-tiny/ unless ModelsDir or Models has that name.
	NoEmbedded bool
	// Static is served at /: the demo page, its module, worker and wasm.
	// "/" and "/dir/" serve index.html. With none, / answers a short note.
	Static fs.FS
	// StaticDir is a folder to serve at / instead of Static (set one or
	// neither). It is opened with os.OpenRoot, like ModelsDir: symbolic
	// links pointing outside it are not followed, and its files are opened
	// non-blocking, so a FIFO swapped in for a file cannot hang a request.
	StaticDir string
	// WriteIdleTimeout cuts a response that sends nothing for this long
	// (see the package comment); 0 means WriteIdleTimeout, a negative value
	// sets no deadline.
	WriteIdleTimeout time.Duration
	// ContentETags makes every ETag the sha256 of the file (computed once
	// per file version and remembered) instead of size and mtime.
	ContentETags bool
	// NoGzip sends text assets as they are. For hosts that compress at the
	// edge, or where compressing per request costs too much CPU (a Worker
	// starts a fresh instance per request, so a cache would never hit).
	NoGzip bool
	// AllowOrigin is sent as Access-Control-Allow-Origin; "" means "*".
	AllowOrigin string
	// ErrorLog receives errors worth an operator's attention (a file that
	// cannot be read); nil discards them.
	ErrorLog *log.Logger
}

// Handler serves models and static files; see the package comment.
type Handler struct {
	opt     Options
	root    *os.Root
	sources []source // model folder sources, in order of precedence
	tiny    *source
	static  *source
	etags   sync.Map // etagKey → string
	gz      *gzCache
}

// source is a file system with a name that keys its ETags (an fs.FS
// need not be comparable: fstest.MapFS is a map). root is set when fsys
// is root.FS(): files are then opened through root, non-blocking.
type source struct {
	id   string
	fsys fs.FS
	root *os.Root
}

// New makes a Handler. Close it to release ModelsDir.
func New(o Options) (*Handler, error) {
	h := &Handler{opt: o, gz: newGzCache(64<<20, 16<<20)}
	if o.ModelsDir != "" {
		st, err := os.Stat(o.ModelsDir)
		if err != nil {
			return nil, fmt.Errorf("models folder: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("models folder %s is not a folder", o.ModelsDir)
		}
		if h.root, err = os.OpenRoot(o.ModelsDir); err != nil {
			return nil, fmt.Errorf("models folder: %w", err)
		}
		h.sources = append(h.sources, source{"dir", h.root.FS(), h.root})
	}
	if o.Models != nil {
		h.sources = append(h.sources, source{"models", o.Models, nil})
	}
	if !o.NoEmbedded {
		h.tiny = &source{"embedded", models.Tiny(), nil}
	}
	switch {
	case o.StaticDir != "" && o.Static != nil:
		h.Close()
		return nil, errors.New("serve: set Options.Static or Options.StaticDir, not both")
	case o.StaticDir != "":
		st, err := os.Stat(o.StaticDir)
		if err == nil && !st.IsDir() {
			err = fmt.Errorf("%s is not a folder", o.StaticDir)
		}
		var root *os.Root
		if err == nil {
			root, err = os.OpenRoot(o.StaticDir)
		}
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("static folder: %w", err)
		}
		h.static = &source{"static", root.FS(), root}
	case o.Static != nil:
		h.static = &source{"static", o.Static, nil}
	}
	return h, nil
}

// Close releases the models folder and StaticDir.
func (h *Handler) Close() error {
	var err error
	if h.root != nil {
		err = h.root.Close()
	}
	if h.static != nil && h.static.root != nil {
		if cerr := h.static.root.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// ModelNames lists the models served, sorted.
func (h *Handler) ModelNames() []string {
	seen := map[string]bool{}
	for _, src := range h.sources {
		des, err := fs.ReadDir(src.fsys, ".")
		if err != nil {
			continue
		}
		for _, de := range des {
			if de.IsDir() && !strings.HasPrefix(de.Name(), ".") {
				seen[de.Name()] = true
			}
		}
	}
	if h.tiny != nil {
		seen[EmbeddedModel] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

const (
	allowMethods  = "GET, HEAD, OPTIONS"
	allowHeaders  = "Range, If-Range, If-None-Match, If-Modified-Since, If-Match, If-Unmodified-Since, Cache-Control"
	exposeHeaders = "Content-Length, Content-Range, ETag, Accept-Ranges, Content-Encoding, Last-Modified"
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	idle := h.opt.WriteIdleTimeout
	if idle == 0 {
		idle = WriteIdleTimeout
	}
	w = newIdleWriter(w, idle)
	hd := w.Header()
	origin := h.opt.AllowOrigin
	if origin == "" {
		origin = "*"
	} else {
		hd.Add("Vary", "Origin")
	}
	hd.Set("Access-Control-Allow-Origin", origin)
	hd.Set("Access-Control-Expose-Headers", exposeHeaders)
	hd.Set("Cross-Origin-Resource-Policy", "cross-origin")
	hd.Set("X-Content-Type-Options", "nosniff")

	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		hd.Set("Access-Control-Allow-Methods", allowMethods)
		hd.Set("Access-Control-Allow-Headers", allowHeaders)
		hd.Set("Access-Control-Max-Age", "86400")
		hd.Set("Allow", allowMethods)
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		hd.Set("Allow", allowMethods)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	segs, dir, ok := splitPath(r.URL.Path)
	if !ok {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	if hidden(segs) {
		http.NotFound(w, r)
		return
	}
	if len(segs) > 0 && segs[0] == "models" {
		h.serveModels(w, r, segs[1:], dir)
		return
	}
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Embedder-Policy", "require-corp")
	h.serveStatic(w, r, segs, dir)
}

// splitPath splits a URL path into its segments. dir reports a trailing
// slash. ok is false for anything that could step outside a root or that
// no file name has: empty, "." or ".." segments, backslashes, NUL. The
// path is already percent-decoded, so %2e%2e is caught as "..".
func splitPath(p string) (segs []string, dir, ok bool) {
	if !strings.HasPrefix(p, "/") {
		return nil, false, false
	}
	p = p[1:]
	if p == "" {
		return nil, true, true
	}
	if strings.HasSuffix(p, "/") {
		dir = true
		p = p[:len(p)-1]
	}
	segs = strings.Split(p, "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "\\\x00") {
			return nil, false, false
		}
	}
	return segs, dir, true
}

func (h *Handler) serveModels(w http.ResponseWriter, r *http.Request, segs []string, dir bool) {
	w.Header().Set("Cache-Control", "no-cache")
	if len(segs) == 0 {
		body, _ := json.Marshal(map[string]any{"models": h.ModelNames()})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method != http.MethodHead {
			w.Write(body)
		}
		return
	}
	if len(segs) < 2 || dir {
		http.NotFound(w, r)
		return
	}
	if len(segs) >= 5 && segs[2] == "resolve" {
		// The Hugging Face hub's layout, /models/<org>/<name>/resolve/<rev>/<file>,
		// so that the server can stand in for the hub (HF_ENDPOINT): from
		// <org>/<name>/<rev>/ when the folder has one per revision, else
		// from <org>/<name>/ for the revision main.
		repo, rev, file := path.Join(segs[0], segs[1]), segs[3], path.Join(segs[4:]...)
		for _, src := range h.sources {
			if h.tryFile(w, r, src, path.Join(repo, rev, file)) {
				return
			}
		}
		if rev == "main" {
			for _, src := range h.sources {
				if h.tryFile(w, r, src, path.Join(repo, file)) {
					return
				}
			}
		}
	}
	name, file := segs[0], path.Join(segs[1:]...)
	for _, src := range h.sources {
		if h.tryFile(w, r, src, path.Join(name, file)) {
			return
		}
	}
	if h.tiny != nil && name == EmbeddedModel && h.tryFile(w, r, *h.tiny, file) {
		return
	}
	http.NotFound(w, r)
}

func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request, segs []string, dir bool) {
	w.Header().Set("Cache-Control", "no-cache")
	if h.static == nil {
		if len(segs) == 0 {
			body := "mamba2 serve: models are listed at /models/\n"
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			if r.Method != http.MethodHead {
				io.WriteString(w, body)
			}
			return
		}
		http.NotFound(w, r)
		return
	}
	name := path.Join(segs...)
	if name == "" {
		name = "."
	}
	if dir {
		name = path.Join(name, "index.html")
	}
	if !h.tryFile(w, r, *h.static, name) {
		http.NotFound(w, r)
	}
}

// tryFile serves name from fsys when it is a regular file there, and
// reports whether it did (answered, error included).
func (h *Handler) tryFile(w http.ResponseWriter, r *http.Request, src source, name string) bool {
	f, st, err := src.openRegular(name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errNotRegular) && h.opt.ErrorLog != nil && !strings.Contains(err.Error(), "escapes") {
			h.opt.ErrorLog.Printf("serve: open %s: %v", name, err)
		}
		return false // missing, special, or refused (a link out of the root): the same 404
	}
	defer f.Close()
	r = fixRange(r, st.Size())
	content, err := seekable(f, st.Size())
	if err != nil {
		h.internal(w, name, err)
		return true
	}
	etag, err := h.etag(src.id, name, f, st, content)
	if err != nil {
		h.internal(w, name, err)
		return true
	}
	hd := w.Header()
	if compressible(name) && !h.opt.NoGzip {
		hd.Add("Vary", "Accept-Encoding")
		if r.Header.Get("Range") == "" && acceptsGzip(r) && st.Size() >= 256 && st.Size() <= h.gz.maxFile {
			gz, err := h.gz.get(src.id+"\x00"+name+"\x00"+etag, content)
			if err != nil {
				h.internal(w, name, err)
				return true
			}
			hd.Set("Content-Encoding", "gzip")
			hd.Set("ETag", strings.TrimSuffix(etag, `"`)+`-gzip"`)
			hd.Set("Content-Length", strconv.Itoa(len(gz)))
			if hd.Get("Content-Type") == "" {
				hd.Set("Content-Type", contentType(name))
			}
			http.ServeContent(w, r, name, st.ModTime(), bytes.NewReader(gz))
			return true
		}
	}
	hd.Set("ETag", etag)
	if ct := contentType(name); ct != "" {
		hd.Set("Content-Type", ct)
	}
	if rf, ok := f.(RangeWriterFile); ok && isReadSeeker(f) { // then content is f
		own := &ownContent{content}
		w = &rangeWriter{ResponseWriter: w, file: rf, content: own, onError: func(err error) {
			if h.opt.ErrorLog != nil {
				h.opt.ErrorLog.Printf("serve: send %s: %v", name, err)
			}
		}}
		content = own
	}
	http.ServeContent(w, r, name, st.ModTime(), content)
	return true
}

func isReadSeeker(f fs.File) bool {
	_, ok := f.(io.ReadSeeker)
	return ok
}

func (h *Handler) internal(w http.ResponseWriter, name string, err error) {
	if h.opt.ErrorLog != nil {
		h.opt.ErrorLog.Printf("serve: %s: %v", name, err)
	}
	http.Error(w, "cannot read "+path.Base(name), http.StatusInternalServerError)
}

// seekable gives ServeContent the io.ReadSeeker it needs. Files of os and
// embed already are; a file of another fs.FS that is not is read into
// memory if small.
func seekable(f fs.File, size int64) (io.ReadSeeker, error) {
	if rs, ok := f.(io.ReadSeeker); ok {
		return rs, nil
	}
	if size > 16<<20 {
		return nil, errors.New("file cannot seek and is too large to buffer")
	}
	b, err := io.ReadAll(io.LimitReader(f, size+1))
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

type etagKey struct {
	src     string
	name    string
	size    int64
	modTime int64
}

// etag is the file's strong ETag: its own (ETagFile), size and mtime, or
// the sha256 of its content when ContentETags is set or it has no mtime
// (embedded files).
func (h *Handler) etag(src, name string, f fs.File, st fs.FileInfo, content io.ReadSeeker) (string, error) {
	if ef, ok := f.(ETagFile); ok {
		return ef.ETag()
	}
	mt := st.ModTime()
	if !h.opt.ContentETags && !mt.IsZero() {
		return fmt.Sprintf(`"%x-%x"`, st.Size(), mt.UnixNano()), nil
	}
	key := etagKey{src, name, st.Size(), mt.UnixNano()}
	if v, ok := h.etags.Load(key); ok {
		return v.(string), nil
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, content); err != nil {
		return "", err
	}
	if _, err := content.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	tag := `"` + hex.EncodeToString(sum.Sum(nil)) + `"`
	h.etags.Store(key, tag)
	return tag, nil
}

var textTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".htm":  "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".json": "application/json",
	".wasm": "application/wasm",
	".svg":  "image/svg+xml",
	".txt":  "text/plain; charset=utf-8",
	".md":   "text/markdown; charset=utf-8",
	".map":  "application/json",
	".wgsl": "text/plain; charset=utf-8",
}

// contentType fixes the types that matter to browsers (a module must be
// JavaScript, WebAssembly.instantiateStreaming needs application/wasm)
// whatever the system's MIME table says; "" lets ServeContent decide.
func contentType(name string) string {
	if strings.HasSuffix(name, ".safetensors") {
		return "application/octet-stream"
	}
	return textTypes[path.Ext(name)]
}

func compressible(name string) bool {
	_, ok := textTypes[path.Ext(name)]
	return ok
}

// acceptsGzip reads Accept-Encoding, honouring "gzip;q=0".
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") && strings.TrimSpace(coding) != "*" {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return !(q == "q=0" || q == "q=0.0" || q == "q=0.00" || q == "q=0.000")
	}
	return false
}

// gzCache keeps compressed copies of text files by source, name and ETag
// (two files may share a size-mtime ETag), least recently used out first,
// so a page reload does not compress the wasm again.
type gzCache struct {
	mu      sync.Mutex
	max     int64 // bytes of compressed copies kept
	maxFile int64 // larger files are sent uncompressed
	used    int64
	items   map[string]*list.Element
	order   *list.List // front: most recent
}

type gzItem struct {
	key  string
	once sync.Once
	data []byte
	err  error
}

func newGzCache(max, maxFile int64) *gzCache {
	return &gzCache{max: max, maxFile: maxFile, items: map[string]*list.Element{}, order: list.New()}
}

// get returns the gzip of content, compressing it once per key even when
// several requests ask at the same time.
func (c *gzCache) get(key string, content io.ReadSeeker) ([]byte, error) {
	c.mu.Lock()
	el, ok := c.items[key]
	if ok {
		c.order.MoveToFront(el)
	} else {
		el = c.order.PushFront(&gzItem{key: key})
		c.items[key] = el
	}
	it := el.Value.(*gzItem)
	c.mu.Unlock()

	it.once.Do(func() {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, err := io.Copy(zw, content)
		if err == nil {
			err = zw.Close()
		}
		if _, serr := content.Seek(0, io.SeekStart); err == nil {
			err = serr
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		it.data, it.err = buf.Bytes(), err // under c.mu: eviction reads len(data)
		if c.items[key] != el {
			return // evicted while compressing: not counted
		}
		if err != nil {
			delete(c.items, key)
			c.order.Remove(el)
			return
		}
		c.used += int64(len(it.data))
		for c.used > c.max && c.order.Len() > 1 {
			last := c.order.Back()
			old := last.Value.(*gzItem)
			c.order.Remove(last)
			delete(c.items, old.key)
			c.used -= int64(len(old.data))
		}
	})
	return it.data, it.err
}
