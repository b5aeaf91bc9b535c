package loader

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
)

// HTTPOptions tune an HTTP model source. The zero value is ready to use:
// the platform's Transport, 4 retries from 250 ms, no cache.
type HTTPOptions struct {
	// Transport sends every request; nil means the platform's own:
	// NetTransport(nil, Header) natively (net/http's default client, with
	// the redirect guard described at Header), FetchTransport under
	// GOOS=js (the browser's fetch).
	Transport Transport
	// Header is added to every request (canonical names), e.g. an
	// Authorization bearer token for a gated Hugging Face repository.
	// Natively, a redirect to any other origin (another scheme, host or
	// port: a CDN, a subdomain, http:// instead of https://) gets none of
	// these headers, nor Authorization, Proxy-Authorization or Cookie,
	// also when a later redirect comes back (Go's client alone would keep
	// them for another port, another scheme or a subdomain). Under GOOS=js
	// the browser follows redirects itself and drops Authorization across
	// origins.
	Header map[string]string
	// Progress, when set, is called as bytes of a file arrive: file is the
	// name inside the model folder, done the bytes of it received so far and
	// total its size. Calls for different files may come from different
	// goroutines at once (Prefetch).
	Progress func(file string, done, total int64)
	// MaxParallel caps how many files Prefetch downloads at once; 0 means 4.
	MaxParallel int
	// Retries is how many times a failed request (a network error, 429 or a
	// 5xx answer, or a body that broke off) is tried again before giving up,
	// waiting Backoff, 2·Backoff, 4·Backoff… (capped at 10 s) in between.
	// 0 means 4; a negative value means no retry.
	Retries int
	// Backoff is the first wait between retries; 0 means 250 ms.
	Backoff time.Duration
	// StallTimeout aborts (and then resumes) a response whose body sends
	// nothing for this long; 0 means DefaultStallTimeout. The context
	// passed to OpenURL still bounds the whole load.
	StallTimeout time.Duration
	// HeaderTimeout aborts (and then retries) a request whose response
	// headers have not come this long after it was sent; 0 means
	// DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// OnRetry, when set, is called before each retry with the failure that
	// caused it (an *HTTPError, which names the method and URL), the number
	// of the retry (1 for the first) and the wait before it, so that a
	// command line can say why a load is slow instead of staying silent.
	OnRetry func(err error, retry int, wait time.Duration)
	// Cache, when set, keeps whole files keyed by URL and validator (ETag),
	// so that a second load fetches nothing again: a *Cache (a folder on
	// disk) natively, NewWebCache (the browser's Cache API) under GOOS=js.
	// How a stored copy is used is the cache policy:
	//   - PreferCache ("use"): without asking the server, so no request at
	//     all for stored files (and remembered absences), which works
	//     offline;
	//   - otherwise ("revalidate"): after the server confirmed it is
	//     current, a HEAD for weights and a conditional GET
	//     (If-None-Match, answered 304) for the small files;
	//   - no Cache ("off"): nothing is stored or read back.
	Cache Store
	// PreferCache uses a cached copy without asking the server whether it
	// changed (see Cache). Use it with revision-pinned URLs
	// (…/resolve/<commit>/), whose files never change.
	PreferCache bool
	// ReadThrough chooses how weight files get into the Cache. Without it
	// (native programs), a file is downloaded whole into the Cache when
	// first opened, or by Prefetch, and then read from there. With it (the
	// browser), a weight file not yet cached is fetched once, whole, as it
	// is read: its body feeds the reader (Checkpoint.Stream, in file
	// order) and the Cache at once, so memory stays at a chunk and no
	// byte is fetched twice; Ahead more files download into the Cache
	// meanwhile. Finish completes those downloads after a load. The small
	// files (config, index, tokenizer) go into the Cache whole either way.
	ReadThrough bool
	// Ahead is how many weight files a ReadThrough load downloads into the
	// Cache in parallel, ahead of the one being read; 0 means 2, a
	// negative value none.
	Ahead int
	// NoIfRange leaves If-Range out of ranged requests. A browser must make
	// a CORS preflight for If-Range; some hosts refuse it there. Changes are
	// still caught, from the ETag and Content-Range of each 206 answer.
	NoIfRange bool
	// NoETagDigest stops a 64-hex-digit ETag from being taken for the
	// file's sha256 (the Hugging Face convention for LFS files).
	NoETagDigest bool
	// NoManifest skips the request for manifest.json.
	NoManifest bool
}

// DefaultHeaderTimeout is how long a request waits for the response
// headers before it is abandoned and retried. A server that accepts the
// connection and never answers would otherwise hold the load until the
// stall timeout on every try; Hugging Face and its CDN answer within a
// second or two even when cold, so 30 s only fires on a server that is
// not going to answer.
const DefaultHeaderTimeout = 30 * time.Second

// DefaultStallTimeout is how long a response body may send nothing before
// the request is abandoned and resumed from the next byte: long enough for
// a congested link or a CDN fetching from its origin, short enough that a
// dead connection is noticed.
const DefaultStallTimeout = 60 * time.Second

// ManifestFile is the optional file, next to config.json, that lists each
// file's size and sha256 so downloads can be verified end to end:
//
//	{"model.safetensors": {"size": 358512, "sha256": "9f2c…"}, …}
//
// Hugging Face does not publish such a list; when it is absent, a sha256 is
// known only from ETags that are one.
const ManifestFile = "manifest.json"

// ManifestEntry is one file of a manifest.json.
type ManifestEntry struct {
	Size   *int64 `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// HTTPFS is a model folder on a web server, as an fs.FS. Its files
// implement io.ReaderAt with Range requests, and OpenRange, which streams a
// byte range as one request; Checkpoint.Stream uses the latter so that each
// tensor costs one GET. With a Cache (see HTTPOptions.Cache and
// ReadThrough), files are read from and stored in it.
//
// The same HTTPFS runs natively and in the browser; only the Transport and
// the Store differ.
//
// fs.FS has no context, so the context given to OpenURL bounds every
// request made through it. Each file is looked up once per HTTPFS; call
// OpenURL again to see changes on the server.
type HTTPFS struct {
	ctx      context.Context
	base     *url.URL
	opt      HTTPOptions
	tr       Transport
	manifest map[string]ManifestEntry

	mu        sync.Mutex
	files     map[string]*remoteFile // resolved files, including ones known to be missing
	locks     map[string]*sync.Mutex // one resolution (and download) per file at a time
	fetched   map[string]*progress
	downloads []*download // ReadThrough downloads, in the order files were opened
	aheadOnce sync.Once   // starts the downloads ahead with the first one
	notes     []string
	stats     LoadStats
}

// LoadStats counts the bytes of weight files (not the small side files) a
// load took from the Cache and over the network.
type LoadStats struct {
	FromCache int64 // sizes of the weight files read from the Cache
	Fetched   int64 // weight bytes downloaded whole (into the Cache, or read through)
}

// remoteFile is what an HTTPFS knows about one file.
type remoteFile struct {
	name    string
	url     string
	size    int64
	etag    string // as the server sent it, quotes included; "" when none
	modTime time.Time
	sha256  string      // expected digest in lower-case hex; "" when unknown
	sumFrom string      // where sha256 comes from, for errors
	stored  *StoreEntry // the Cache's copy, when the file is read from it
	d       *download   // the ReadThrough download of the file, when one
	missing error       // set when the server answered 404
}

// strongETag is the validator for If-Range, which only strong ETags may be.
func (e *remoteFile) strongETag() string {
	if strings.HasPrefix(e.etag, "W/") {
		return ""
	}
	return e.etag
}

// validator identifies one version of the file for the cache: the ETag,
// else the modification time with the size, else nothing (not cacheable
// across loads, since it cannot be revalidated).
func (e *remoteFile) validator() string {
	if e.etag != "" {
		return e.etag
	}
	if !e.modTime.IsZero() {
		return fmt.Sprintf("mtime=%d;size=%d", e.modTime.Unix(), e.size)
	}
	return ""
}

// entry is what the Cache must hold of e.
func (e *remoteFile) entry() StoreEntry {
	return StoreEntry{Size: e.size, Validator: e.validator(), SHA256: e.sha256}
}

// IsURL reports whether s names an http or https location rather than a
// local folder.
func IsURL(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")
}

// NormalizeURL checks a model folder URL and returns it with the trailing
// slash that makes file names resolve under it. Only http and https are
// accepted, without user:password (credentials in URLs end up in logs and
// error messages; use HTTPOptions.Header), without a query or a fragment.
// A bare Hugging Face repository page, https://huggingface.co/org/model,
// becomes its file root …/org/model/resolve/main/.
func NormalizeURL(base string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(base))
	if err != nil {
		return nil, fmt.Errorf("model URL %q: %v", base, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	default:
		return nil, fmt.Errorf("model URL %q: only http:// and https:// are supported", base)
	}
	if u.User != nil {
		return nil, fmt.Errorf("model URL %s: user:password in a URL is refused (it would end up in logs); pass a token in a header instead", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("model URL %q has no host", base)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("model URL %q: a folder URL cannot carry a query or a fragment", base)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	switch strings.ToLower(u.Hostname()) {
	case "huggingface.co", "hf.co":
		if parts := strings.Split(strings.Trim(u.Path, "/"), "/"); len(parts) == 2 && parts[0] != "" {
			u.Path += "resolve/main/"
			u.RawPath = ""
		}
	}
	return u, nil
}

// OpenURL opens the model folder at base, in Hugging Face layout: base +
// "config.json", base + "model.safetensors" and so on. It reads the
// optional manifest.json (see ManifestFile) right away, which also checks
// that the server answers; files are looked up when first opened.
func OpenURL(ctx context.Context, base string, o HTTPOptions) (*HTTPFS, error) {
	u, err := NormalizeURL(base)
	if err != nil {
		return nil, err
	}
	h := &HTTPFS{
		ctx: ctx, base: u, opt: o, tr: o.Transport,
		files: map[string]*remoteFile{}, locks: map[string]*sync.Mutex{}, fetched: map[string]*progress{},
	}
	if h.tr == nil {
		h.tr = defaultTransport(o)
	}
	if !o.NoManifest {
		if err := h.loadManifest(); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// URL is the normalised folder URL, ending in a slash.
func (h *HTTPFS) URL() string { return h.base.String() }

// fileURL is the URL of a file of the folder; name is a valid fs path.
func (h *HTTPFS) fileURL(name string) string {
	ref := &url.URL{Path: name}
	return h.base.ResolveReference(ref).String()
}

func (h *HTTPFS) loadManifest() error {
	data, err := fs.ReadFile(h, ManifestFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		var he *HTTPError
		if h.opt.PreferCache && errors.As(err, &he) && he.Status == 0 && h.ctx.Err() == nil {
			return nil // offline: go on with what the cache holds
		}
		return err
	}
	m, err := ParseManifest(data)
	if err != nil {
		return fmt.Errorf("%s: %v", h.fileURL(ManifestFile), err)
	}
	h.manifest = m
	return nil
}

// ParseManifest reads a manifest.json (ManifestFile), checking that every
// sha256 is 64 hex digits (returned in lower case) and no size is negative.
func ParseManifest(data []byte) (map[string]ManifestEntry, error) {
	var m map[string]ManifestEntry
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	for name, e := range m {
		if e.SHA256 != "" {
			if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != 32 {
				return nil, fmt.Errorf("%q: sha256 %q is not 64 hex digits", name, e.SHA256)
			}
			e.SHA256 = strings.ToLower(e.SHA256)
			m[name] = e
		}
		if e.Size != nil && *e.Size < 0 {
			return nil, fmt.Errorf("%q: negative size", name)
		}
	}
	return m, nil
}

// ETagDigest returns the sha256 (lower-case hex) that a strong ETag stands
// for when it is one, as Hugging Face's are for weight files and `mamba2
// serve`'s for content-addressed files; "" otherwise.
func ETagDigest(etag string) string {
	if strings.HasPrefix(etag, "W/") {
		return ""
	}
	t := strings.Trim(etag, `"`)
	if b, err := hex.DecodeString(t); err != nil || len(b) != 32 {
		return ""
	}
	return strings.ToLower(t)
}

// Open opens a file of the model folder. The first Open of a name asks the
// server for its size and ETag (or, with a Cache, finds its copy there, or
// downloads it into the Cache); a 404 gives an error that matches
// fs.ErrNotExist.
func (h *HTTPFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) || name == "." {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	e, err := h.resolve(h.ctx, name)
	if err != nil {
		return nil, err
	}
	if e.stored != nil {
		f, err := h.openStored(e)
		if err == nil {
			return f, nil
		}
		return nil, err
	}
	return &httpFile{h: h, e: e}, nil
}

// openStored opens the Cache's copy of e.
func (h *HTTPFS) openStored(e *remoteFile) (fs.File, error) {
	f, err := h.opt.Cache.Open(e.url, *e.stored)
	if err != nil {
		return nil, fmt.Errorf("%s: cached copy: %w", e.url, err)
	}
	return &storedFile{f: f, SectionReader: io.NewSectionReader(f, 0, e.size), info: fileInfo{e}}, nil
}

// Stat describes a file without reading it (fs.StatFS); it costs the same
// single lookup as Open, shared with it.
func (h *HTTPFS) Stat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) || name == "." {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrInvalid}
	}
	e, err := h.resolve(h.ctx, name)
	if err != nil {
		return nil, err
	}
	return fileInfo{e}, nil
}

// resolve returns what is known of name, looking it up (and downloading it
// into the cache) the first time.
func (h *HTTPFS) resolve(ctx context.Context, name string) (*remoteFile, error) {
	h.mu.Lock()
	if e, ok := h.files[name]; ok {
		h.mu.Unlock()
		return e, e.missing
	}
	l := h.locks[name]
	if l == nil {
		l = new(sync.Mutex)
		h.locks[name] = l
	}
	h.mu.Unlock()

	l.Lock()
	defer l.Unlock()
	h.mu.Lock()
	e, ok := h.files[name]
	h.mu.Unlock()
	if ok {
		return e, e.missing
	}
	e, err := h.lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.files[name] = e
	if e.d != nil {
		h.downloads = append(h.downloads, e.d)
	}
	h.mu.Unlock()
	return e, e.missing
}

// forget drops what is known of name, after the server showed it changed.
func (h *HTTPFS) forget(name string) {
	h.mu.Lock()
	delete(h.files, name)
	h.mu.Unlock()
}

// isWeights tells the weight files (no size limit) from the small side
// files, for LoadStats and for ReadThrough.
func isWeights(name string) bool { return sideFileLimit(name) == 0 }

// useStored makes e read from the Cache's entry m.
func (h *HTTPFS) useStored(e *remoteFile, m StoreEntry) *remoteFile {
	e.stored = &m
	if isWeights(e.name) {
		h.mu.Lock()
		h.stats.FromCache += e.size
		h.mu.Unlock()
	}
	h.report(e.name, e.size, e.size)
	return e
}

// lookup finds name in the Cache or on the server. A missing file is
// returned as an entry with missing set, so it is remembered.
func (h *HTTPFS) lookup(ctx context.Context, name string) (*remoteFile, error) {
	u := h.fileURL(name)
	c := h.opt.Cache
	if c != nil {
		if m, ok := c.Lookup(u); ok {
			switch {
			case m.Missing && h.opt.PreferCache:
				return &remoteFile{name: name, url: u, missing: notFound(u)}, nil
			case m.Missing:
			case h.opt.PreferCache:
				e := &remoteFile{name: name, url: u, size: m.Size, etag: m.Validator, sha256: m.SHA256}
				if strings.HasPrefix(m.Validator, "mtime=") {
					e.etag = ""
				}
				return h.useStored(e, m), nil
			case !isWeights(name) && m.Validator != "" && !strings.HasPrefix(m.Validator, "mtime="):
				// A small file: one conditional GET, which a 304 answers.
				current, err := h.revalidate(ctx, u, m)
				if err != nil {
					return nil, err
				}
				if current {
					e := &remoteFile{name: name, url: u, size: m.Size, etag: m.Validator, sha256: m.SHA256}
					return h.useStored(e, m), nil
				}
			}
		}
	}
	e, err := h.head(ctx, name, u)
	if err != nil {
		return nil, err
	}
	if e.missing != nil {
		// Remember an absence (manifest.json, an index probe), but never
		// config.json's: without it the URL is wrong, and may be right
		// next time.
		if c != nil && name != "config.json" {
			c.MarkMissing(u)
		}
		return e, nil
	}
	if c == nil {
		return e, nil
	}
	if m, ok := c.Lookup(u); ok && !m.Missing && e.validator() != "" && m.Validator == e.validator() && m.Size == e.size &&
		(e.sha256 == "" || m.SHA256 == "" || e.sha256 == m.SHA256) {
		return h.useStored(e, m), nil
	}
	if h.opt.ReadThrough && isWeights(name) {
		e.d = &download{h: h, e: e}
		return e, nil
	}
	for attempt := 0; ; attempt++ {
		d := &download{h: h, e: e}
		err := d.fetchWhole(ctx)
		if err == nil {
			if d.stored != nil {
				e.stored = d.stored
			}
			return e, nil
		}
		if !errors.Is(err, ErrChanged) || attempt > 0 {
			return nil, err
		}
		// Nothing of this file has been handed out yet: start it again from
		// scratch, as the version the server now has.
		if e, err = h.head(ctx, name, u); err != nil {
			return nil, err
		}
		if e.missing != nil {
			return e, nil
		}
	}
}

// revalidate asks the server whether the cached m is still the file at u,
// with If-None-Match. Any answer but 304 means it is not (the file is then
// looked up afresh; its body is not used). The request asks for one byte,
// as the lookups do: a server that compresses small files on the fly gives
// the compressed variant another ETag (mamba2 serve's "…-gzip"), and sends
// the file as it is, under the ETag that was stored, only for a range.
func (h *HTTPFS) revalidate(ctx context.Context, u string, m StoreEntry) (bool, error) {
	resp, err := h.roundTrip(ctx, methodGet, u, map[string]string{"If-None-Match": m.Validator, "Range": "bytes=0-0"})
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.Status == statusNotModified, nil
}

// head learns a file's size and validators: a HEAD request, or, where HEAD
// is refused or gives no usable length, a GET of its first byte, whose
// Content-Range carries the full size.
func (h *HTTPFS) head(ctx context.Context, name, u string) (*remoteFile, error) {
	e := &remoteFile{name: name, url: u, size: -1}
	resp, err := h.roundTrip(ctx, methodHead, u, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	switch resp.Status {
	case statusOK:
		if resp.ContentLength >= 0 && !resp.Encoded {
			e.size = resp.ContentLength
		}
		e.setValidators(resp.Header)
	case statusNotFound, statusGone:
		e.missing = &HTTPError{Method: methodHead, URL: u, Status: resp.Status}
		return e, nil
	case statusForbidden, statusMethodNotAllowed, statusNotImplemented:
		// Some hosts (signed-URL object stores among them) refuse HEAD.
	default:
		return nil, statusError(methodHead, u, resp)
	}
	if e.size < 0 {
		if err := h.probe(ctx, e); err != nil || e.missing != nil {
			return e, err
		}
	}
	if limit := sideFileLimit(name); limit > 0 && e.size > limit {
		return nil, &HTTPError{Method: methodGet, URL: u, Err: fmt.Errorf("%w: the server gives its size as %d bytes, more than the %d allowed for %s; not downloading it", ErrTooLarge, e.size, limit, path.Base(name))}
	}
	if err := h.applyManifest(e); err != nil {
		return nil, err
	}
	return e, nil
}

// probe learns the size from a one-byte ranged GET.
func (h *HTTPFS) probe(ctx context.Context, e *remoteFile) error {
	resp, err := h.roundTrip(ctx, methodGet, e.url, map[string]string{"Range": "bytes=0-0"})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.Status {
	case statusPartialContent:
		_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || total < 0 {
			return &HTTPError{Method: methodGet, URL: e.url, Status: resp.Status, Err: fmt.Errorf("cannot learn the file size: Content-Range %q (a cross-origin server must expose Content-Range and Content-Length)", resp.Header.Get("Content-Range"))}
		}
		e.size = total
	case statusOK:
		if resp.ContentLength < 0 || resp.Encoded {
			return &HTTPError{Method: methodGet, URL: e.url, Status: resp.Status, Err: errors.New("the server gives neither Content-Length nor ranges, so the file size is unknown")}
		}
		e.size = resp.ContentLength
	case statusRangeNotSatisfiable:
		e.size = 0 // bytes=0-0 of an empty file
	case statusNotFound, statusGone:
		e.missing = &HTTPError{Method: methodGet, URL: e.url, Status: resp.Status}
		return nil
	default:
		return statusError(methodGet, e.url, resp)
	}
	e.setValidators(resp.Header)
	return nil
}

func (e *remoteFile) setValidators(hd Header) {
	e.etag = hd.Get("Etag")
	if t, ok := parseHTTPTime(hd.Get("Last-Modified")); ok {
		e.modTime = t
	}
}

// applyManifest checks the size against manifest.json and takes the sha256
// from it, or from an ETag that is a sha256.
func (h *HTTPFS) applyManifest(e *remoteFile) error {
	if m, ok := h.manifest[e.name]; ok {
		if m.Size != nil && *m.Size != e.size {
			return fmt.Errorf("%s: the server has %d bytes but %s says %d", e.url, e.size, ManifestFile, *m.Size)
		}
		if m.SHA256 != "" {
			e.sha256, e.sumFrom = m.SHA256, ManifestFile
			return nil
		}
	}
	if !h.opt.NoETagDigest {
		if d := ETagDigest(e.etag); d != "" {
			e.sha256, e.sumFrom = d, "the server's ETag"
		}
	}
	return nil
}

// report forwards byte counts of a file to the Progress callback.
func (h *HTTPFS) report(name string, done, total int64) {
	if h.opt.Progress != nil {
		h.opt.Progress(name, min(done, total), total)
	}
}

// note records why something was not cached (Notes).
func (h *HTTPFS) note(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.notes {
		if n == s {
			return
		}
	}
	h.notes = append(h.notes, s)
}

// Notes are remarks about the load for its user: files the Cache declined
// to keep (a full storage quota), each once.
func (h *HTTPFS) Notes() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.notes...)
}

// Stats says how many weight bytes came from the Cache and how many over
// the network so far.
func (h *HTTPFS) Stats() LoadStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}

// progress counts the bytes of one file received so far, across requests.
type progress struct {
	mu       sync.Mutex
	done     int64
	reported int64
}

// received adds n bytes of name and reports at most once per MiB, and at
// the end of each range (final).
func (h *HTTPFS) received(e *remoteFile, n int64, final bool) {
	if h.opt.Progress == nil {
		return
	}
	h.mu.Lock()
	p := h.fetched[e.name]
	if p == nil {
		p = &progress{}
		h.fetched[e.name] = p
	}
	h.mu.Unlock()
	p.mu.Lock()
	p.done += n
	done := p.done
	send := final || done-p.reported >= 1<<20
	if send {
		p.reported = done
	}
	p.mu.Unlock()
	if send {
		h.report(e.name, done, e.size)
	}
}

// Prefetch makes sure the named files are in the cache, downloading up to
// MaxParallel of them at once; it needs HTTPOptions.Cache. With no names it
// fetches what a model load reads: config.json, generation_config.json and
// tokenizer.json when present, and the weights (model.safetensors, or the
// index and every shard it names). Each file is one streamed GET (resumed
// with Range if it breaks), verified and committed to the cache; with
// ReadThrough too, so that Prefetch always leaves the files stored.
func (h *HTTPFS) Prefetch(ctx context.Context, names ...string) error {
	if h.opt.Cache == nil {
		return errors.New("prefetching a model needs a cache (HTTPOptions.Cache)")
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(h.ctx, func() { cancel(context.Cause(h.ctx)) })
	defer stop()

	optional := map[string]bool{}
	if len(names) == 0 {
		names = []string{"config.json"}
		for _, n := range []string{"generation_config.json", "tokenizer.json"} {
			names = append(names, n)
			optional[n] = true
		}
		// A folder without config.json is no model (a wrong URL, most
		// often): say that rather than that it has no weights.
		if _, err := h.resolve(ctx, "config.json"); err != nil {
			return err
		}
		shards, err := h.weightFiles(ctx)
		if err != nil {
			return err
		}
		names = append(names, shards...)
	}
	par := h.opt.MaxParallel
	if par <= 0 {
		par = 4
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, name := range names {
		if !fs.ValidPath(name) || name == "." {
			return &fs.PathError{Op: "prefetch", Path: name, Err: fs.ErrInvalid}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			e, err := h.resolve(ctx, name)
			if err == nil && e.d != nil {
				err = e.d.fetchRest(ctx) // ReadThrough: into the Cache now
			}
			if err != nil && !(optional[name] && errors.Is(err, fs.ErrNotExist)) {
				once.Do(func() { first = err; cancel(err) })
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return context.Cause(ctx)
}

// weightFiles lists the safetensors files of the folder: the shards named
// by the index, or model.safetensors.
//
// It looks for them as Open does: the safetensors index, model.safetensors,
// then PyTorch's index and pytorch_model.bin; only a folder with none of
// them is an error (Open's, when the files are read).
func (h *HTTPFS) weightFiles(ctx context.Context) ([]string, error) {
	for _, idx := range []string{IndexFile, SingleFile, PyTorchIndexFile, PyTorchFile} {
		if _, err := h.resolve(ctx, idx); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		if idx == SingleFile || idx == PyTorchFile {
			return []string{idx}, nil
		}
		data, err := fs.ReadFile(h, idx)
		if err != nil {
			return nil, err
		}
		_, shards, err := parseIndexOf(idx, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.URL(), err)
		}
		return append([]string{idx}, shards...), nil
	}
	return nil, fmt.Errorf("%s: no weights found: none of %s, %s, %s or %s", h.URL(), IndexFile, SingleFile, PyTorchIndexFile, PyTorchFile)
}

// fileInfo is the fs.FileInfo of a remote file.
type fileInfo struct{ e *remoteFile }

func (i fileInfo) Name() string       { return path.Base(i.e.name) }
func (i fileInfo) Size() int64        { return i.e.size }
func (i fileInfo) Mode() fs.FileMode  { return 0o444 }
func (i fileInfo) ModTime() time.Time { return i.e.modTime }
func (i fileInfo) IsDir() bool        { return false }
func (i fileInfo) Sys() any {
	ri := RemoteInfo{URL: i.e.url, ETag: i.e.etag, SHA256: i.e.sha256}
	if i.e.stored != nil {
		ri.Cached, ri.Local = true, i.e.stored.Local
	}
	return ri
}

// RemoteInfo is what Sys() of a file's FileInfo returns for an HTTPFS file.
type RemoteInfo struct {
	URL    string
	ETag   string
	SHA256 string // expected digest, when known
	Cached bool   // read from the Cache
	Local  string // the cached copy on disk, for a Store that has one
}

// storedFile is a file read from the Cache: random access to the stored
// copy, reporting the remote file's name and details.
type storedFile struct {
	f StoredFile
	*io.SectionReader
	info fileInfo
}

func (f *storedFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *storedFile) Close() error               { return f.f.Close() }
