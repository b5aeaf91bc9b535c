package loader

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// ErrChanged is matched (errors.Is) by the error of a read that found the
// file different from the version it started with. Bytes of two versions
// are never combined: the load stops, or, for a download into the cache
// that nothing has read yet, starts the file over once.
var ErrChanged = errors.New("changed on the server during download")

// ErrIntegrity is matched by the error of a download whose bytes do not
// have the size or sha256 they must have.
var ErrIntegrity = errors.New("integrity check failed")

// HTTPError is a failed request: its method and URL, the HTTP status when
// the server answered (0 otherwise) and the cause. A 404 or 410 matches
// fs.ErrNotExist, so loader.Open moves on from a missing index to
// model.safetensors.
type HTTPError struct {
	Method   string
	URL      string
	Status   int   // 0 when no answer came
	Err      error // nil when the status says it all
	Attempts int   // tries made, when more than one
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Method, e.URL)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": %d %s", e.Status, statusText(e.Status))
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (gave up after %d attempts)", e.Attempts)
	}
	return b.String()
}

func (e *HTTPError) Unwrap() []error {
	var errs []error
	if e.Status == statusNotFound || e.Status == statusGone {
		errs = append(errs, fs.ErrNotExist)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func notFound(u string) error {
	return &HTTPError{Method: methodHead, URL: u, Status: statusNotFound, Err: errors.New("remembered from an earlier load (cache)")}
}

func statusError(method, u string, resp *Response) *HTTPError {
	e := &HTTPError{Method: method, URL: u, Status: resp.Status}
	switch resp.Status {
	case statusUnauthorized, statusForbidden:
		e.Err = errors.New("access denied (a private or gated model needs an access token)")
	}
	return e
}

// ErrTimeout is matched by the error of a request whose response headers,
// or the next bytes of whose body, did not come in time (HeaderTimeout,
// StallTimeout), after the retries.
var ErrTimeout = errors.New("timed out")

func (h *HTTPFS) retries() int {
	switch {
	case h.opt.Retries < 0:
		return 0
	case h.opt.Retries == 0:
		return 4
	}
	return h.opt.Retries
}

func (h *HTTPFS) stallTimeout() time.Duration {
	if h.opt.StallTimeout > 0 {
		return h.opt.StallTimeout
	}
	return DefaultStallTimeout
}

func (h *HTTPFS) headerTimeout() time.Duration {
	if h.opt.HeaderTimeout > 0 {
		return h.opt.HeaderTimeout
	}
	return DefaultHeaderTimeout
}

// retrying tells OnRetry about a retry that is about to wait d.
func (h *HTTPFS) retrying(err error, retry int, d time.Duration) {
	if h.opt.OnRetry != nil {
		h.opt.OnRetry(err, retry, d)
	}
}

// sleep waits before retry number attempt (1, 2, …): Backoff doubled each
// time, capped at 10 s, with ±25 % jitter so that many clients do not retry
// in step; at least hint (from Retry-After). It tells OnRetry about cause
// first, and returns early, with the cause, when ctx ends.
func (h *HTTPFS) sleep(ctx context.Context, attempt int, hint time.Duration, cause error) error {
	d := h.opt.Backoff
	if d <= 0 {
		d = 250 * time.Millisecond
	}
	for i := 1; i < attempt && d < 10*time.Second; i++ {
		d *= 2
	}
	d = min(d, 10*time.Second)
	d = d*3/4 + time.Duration(rand.Int64N(int64(d)/2+1))
	d = max(d, min(hint, time.Minute))
	h.retrying(cause, attempt, d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// send makes one request. It is aborted when its response headers do not
// come within HeaderTimeout, and its body is watched: when no byte arrives
// for StallTimeout, the request is aborted, so a silent server or
// connection becomes an error that can be retried instead of a hang.
func (h *HTTPFS) send(ctx context.Context, method, u string, hdr map[string]string) (*Response, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	req := &Request{Method: method, URL: u, Header: make(map[string]string, len(h.opt.Header)+len(hdr))}
	for k, v := range h.opt.Header {
		req.Header[k] = v
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	stall, wait := h.stallTimeout(), h.headerTimeout()
	t := time.AfterFunc(wait, func() { cancel(ErrTimeout) })
	resp, err := h.tr.RoundTrip(rctx, req)
	if err != nil {
		t.Stop()
		cause := context.Cause(rctx)
		cancel(nil)
		if errors.Is(cause, ErrTimeout) {
			return nil, fmt.Errorf("no answer (response headers) within %v: %w", wait, ErrTimeout)
		}
		return nil, err
	}
	// From here the timer watches the body. Should the header timeout fire
	// just now, the body's first read fails as stalled, and is retried.
	t.Reset(stall)
	resp.Body = &watchedBody{rc: resp.Body, t: t, stall: stall, ctx: rctx, cancel: cancel}
	return resp, nil
}

// watchedBody restarts the stall timer on every read and ends the
// request's context on Close.
type watchedBody struct {
	rc     io.ReadCloser
	t      *time.Timer
	stall  time.Duration
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.t.Reset(b.stall)
	}
	if err != nil && err != io.EOF && errors.Is(context.Cause(b.ctx), ErrTimeout) {
		err = fmt.Errorf("no data for %v: %w", b.stall, ErrTimeout)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.t.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// roundTrip sends a request, trying again after network errors, 429 and
// 5xx answers. Other answers, errors included, are the caller's to read.
func (h *HTTPFS) roundTrip(ctx context.Context, method, u string, hdr map[string]string) (*Response, error) {
	var last *HTTPError
	var hint time.Duration
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if attempt > h.retries() {
				last.Attempts = attempt
				return nil, last
			}
			if err := h.sleep(ctx, attempt, hint, last); err != nil {
				return nil, &HTTPError{Method: method, URL: u, Status: last.Status, Err: fmt.Errorf("%w (while waiting to retry after: %v)", err, last)}
			}
		}
		resp, err := h.send(ctx, method, u, hdr)
		if err != nil {
			if ctx.Err() != nil {
				return nil, &HTTPError{Method: method, URL: u, Err: context.Cause(ctx)}
			}
			last = &HTTPError{Method: method, URL: u, Err: err}
			continue
		}
		if resp.Status == statusTooManyRequests || resp.Status >= 500 {
			hint = 0
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				hint = time.Duration(s) * time.Second
			}
			io.CopyN(io.Discard, resp.Body, 4<<10) // lets a short error page keep the connection
			resp.Body.Close()
			last = &HTTPError{Method: method, URL: u, Status: resp.Status}
			continue
		}
		return resp, nil
	}
}

// parseContentRange reads "bytes first-last/total" (total may be "*",
// given as -1).
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("malformed Content-Range %q", s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, 0, bad
		}
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || (total >= 0 && last >= total) {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// httpFile is an open file of an HTTPFS. Read streams the file in
// growing windows (256 KiB, then doubling), so reading a small file or a
// safetensors header is one request; ReadAt and OpenRange make one request
// per call.
type httpFile struct {
	h      *HTTPFS
	e      *remoteFile
	pos    int64
	seq    *rangeReader
	window int64
	sum    hash.Hash // sha256 of bytes read in order from 0; nil after a Seek
	sumErr error     // the digest did not match
	closed bool
}

const firstWindow = 256 << 10

func (f *httpFile) Stat() (fs.FileInfo, error) { return fileInfo{f.e}, nil }

func (f *httpFile) Read(p []byte) (int, error) {
	if f.closed {
		return 0, fs.ErrClosed
	}
	if f.pos >= f.e.size {
		return 0, f.checkSum()
	}
	if f.seq == nil {
		if f.window == 0 {
			f.window = firstWindow
			if f.pos == 0 {
				f.sum = sha256.New()
			}
		} else {
			f.window = min(2*f.window, 64<<20)
		}
		f.seq = f.h.openRange(f.e, f.pos, min(f.e.size, f.pos+f.window))
	}
	n, err := f.seq.Read(p)
	if f.sum != nil {
		f.sum.Write(p[:n])
	}
	f.pos += int64(n)
	if err == io.EOF {
		f.seq.Close()
		f.seq = nil
		err = nil
	}
	return n, err
}

// checkSum is the end of a file read: io.EOF, or, when the whole file was
// read in order and its digest is known, an error if the bytes differ.
func (f *httpFile) checkSum() error {
	if f.sum != nil && f.e.sha256 != "" {
		if got := hex.EncodeToString(f.sum.Sum(nil)); got != f.e.sha256 {
			f.sumErr = &HTTPError{Method: methodGet, URL: f.e.url, Err: fmt.Errorf("%w: sha256 is %s, expected %s (from %s)", ErrIntegrity, got, f.e.sha256, f.e.sumFrom)}
		}
	}
	f.sum = nil
	if f.sumErr != nil {
		return f.sumErr
	}
	return io.EOF
}

func (f *httpFile) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.e.size
	}
	if offset < 0 {
		return 0, fmt.Errorf("%s: seek to negative offset", f.e.name)
	}
	if offset != f.pos {
		f.sum, f.sumErr = nil, nil
		if f.seq != nil {
			f.seq.Close()
			f.seq = nil
		}
		f.window = 0
	}
	f.pos = offset
	return offset, nil
}

// ReadAt reads len(p) bytes at off with one ranged request (resumed if the
// body breaks). It is safe for concurrent use.
func (f *httpFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset", f.e.name)
	}
	if off >= f.e.size {
		return 0, io.EOF
	}
	end := min(f.e.size, off+int64(len(p)))
	r := f.h.openRange(f.e, off, end)
	defer r.Close()
	n, err := io.ReadFull(r, p[:end-off])
	if err == nil && end-off < int64(len(p)) {
		err = io.EOF
	}
	return n, err
}

// OpenRange streams n bytes from off as one request, read in whatever
// pieces the caller likes. A body that breaks off is resumed from the next
// byte with Range and If-Range; a version change is an error (ErrChanged).
func (f *httpFile) OpenRange(off, n int64) (io.ReadCloser, error) {
	if off < 0 || n < 0 || off+n > f.e.size {
		return nil, fmt.Errorf("%s: range [%d, %d) outside the %d-byte file", f.e.url, off, off+n, f.e.size)
	}
	if f.e.d != nil {
		return &downloadRange{f: f, off: off, end: off + n}, nil
	}
	return f.h.openRange(f.e, off, off+n), nil
}

func (f *httpFile) Close() error {
	if f.seq != nil {
		f.seq.Close()
		f.seq = nil
	}
	f.closed = true
	return nil
}

// rangeReader delivers bytes [off, end) of a remote file. It makes its
// request on the first Read, and when the body breaks, a new one for the
// rest: each request asks for the exact remaining range with If-Range, and
// every answer is checked (status, Content-Range, Content-Length, ETag)
// before a byte of it is used.
type rangeReader struct {
	h        *HTTPFS
	e        *remoteFile
	off, end int64
	body     io.ReadCloser
	bodyEnd  int64 // offset just past the bytes the open body will send
	status   int   // status of the open body
	fails    int   // failed tries since the last byte that arrived
	lastErr  error // why the last try failed
	sticky   error // a failure that ends the reader
	pending  int64 // bytes received but not yet reported
	ctx      context.Context
}

func (h *HTTPFS) openRange(e *remoteFile, off, end int64) *rangeReader {
	return &rangeReader{h: h, e: e, off: off, end: end, ctx: h.ctx}
}

func (r *rangeReader) Read(p []byte) (int, error) {
	for {
		if r.sticky != nil {
			return 0, r.sticky
		}
		if r.off >= r.end {
			r.closeBody()
			return 0, io.EOF
		}
		if len(p) == 0 {
			return 0, nil
		}
		if r.body == nil {
			if err := r.open(); err != nil {
				r.sticky = err
				return 0, err
			}
			continue
		}
		want := min(int64(len(p)), r.end-r.off, r.bodyEnd-r.off)
		n, err := r.body.Read(p[:want])
		if n > 0 {
			r.off += int64(n)
			r.fails = 0
			r.count(int64(n))
		}
		if r.off == r.bodyEnd || r.off == r.end {
			r.closeBody() // done with this body, even if the server would send more
		} else if err != nil {
			r.closeBody()
			if r.ctx.Err() != nil {
				r.sticky = &HTTPError{Method: methodGet, URL: r.e.url, Err: context.Cause(r.ctx)}
				if n == 0 {
					return 0, r.sticky
				}
			} else {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				r.fail(fmt.Errorf("body broke off at byte %d of %d: %w", r.off, r.e.size, err))
			}
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (r *rangeReader) count(n int64) {
	r.pending += n
	if final := r.off == r.end; final || r.pending >= 256<<10 {
		r.h.received(r.e, r.pending, final)
		r.pending = 0
	}
}

// fail records a failed try; open gives up when there were too many in a
// row.
func (r *rangeReader) fail(err error) {
	r.fails++
	r.lastErr = err
}

func (r *rangeReader) closeBody() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
}

func (r *rangeReader) Close() error {
	r.closeBody()
	if r.sticky == nil {
		r.sticky = fs.ErrClosed
	}
	return nil
}

// open makes the request for bytes [off, end), after a pause when the last
// try failed.
func (r *rangeReader) open() error {
	for {
		if r.fails > 0 {
			if r.fails > r.h.retries() {
				return &HTTPError{Method: methodGet, URL: r.e.url, Status: r.status, Err: r.lastErr, Attempts: r.fails}
			}
			cause := &HTTPError{Method: methodGet, URL: r.e.url, Status: r.status, Err: r.lastErr}
			if err := r.h.sleep(r.ctx, r.fails, 0, cause); err != nil {
				return &HTTPError{Method: methodGet, URL: r.e.url, Err: err}
			}
		}
		err := r.try()
		if err == nil {
			return nil
		}
		var retry *retryable
		if !errors.As(err, &retry) {
			return err
		}
		r.fail(retry.err)
	}
}

// retryable marks a bad answer that a new request may fix.
type retryable struct{ err error }

func (e *retryable) Error() string { return e.err.Error() }

func (r *rangeReader) try() error {
	hdr := map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", r.off, r.end-1)}
	if et := r.e.strongETag(); et != "" && !r.h.opt.NoIfRange {
		hdr["If-Range"] = et
	}
	resp, err := r.h.roundTrip(r.ctx, methodGet, r.e.url, hdr)
	if err != nil {
		return err // roundTrip has already retried
	}
	r.status = resp.Status
	herr := func(err error) *HTTPError {
		return &HTTPError{Method: methodGet, URL: r.e.url, Status: resp.Status, Err: err}
	}
	changed := func(why string) error {
		resp.Body.Close()
		r.h.forget(r.e.name)
		return herr(fmt.Errorf("%s %w (%s); not mixing two versions of it, load the model again", r.e.name, ErrChanged, why))
	}
	etag := resp.Header.Get("Etag")
	if r.e.etag != "" && etag != "" && etag != r.e.etag {
		return changed(fmt.Sprintf("ETag was %s, now %s", r.e.etag, etag))
	}
	switch resp.Status {
	case statusPartialContent:
		first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case err != nil:
			resp.Body.Close()
			return &retryable{err}
		case total >= 0 && total != r.e.size:
			return changed(fmt.Sprintf("size was %d, now %d", r.e.size, total))
		case first != r.off:
			resp.Body.Close()
			return &retryable{fmt.Errorf("asked for bytes from %d, got Content-Range %q", r.off, resp.Header.Get("Content-Range"))}
		case resp.Encoded:
			resp.Body.Close()
			return herr(fmt.Errorf("the server compressed a byte range (Content-Encoding %q), which cannot be used", resp.Header.Get("Content-Encoding")))
		case resp.ContentLength >= 0 && resp.ContentLength != last-first+1:
			resp.Body.Close()
			return &retryable{fmt.Errorf("Content-Length %d does not match Content-Range %q", resp.ContentLength, resp.Header.Get("Content-Range"))}
		}
		r.body, r.bodyEnd = resp.Body, min(last+1, r.end)
	case statusOK:
		// Either the server ignores Range, or If-Range found another version.
		if r.e.strongETag() != "" && !r.h.opt.NoIfRange && etag == "" {
			return changed("If-Range failed and the answer has no ETag")
		}
		if resp.ContentLength >= 0 && !resp.Encoded && resp.ContentLength != r.e.size {
			if r.e.etag == "" {
				return changed(fmt.Sprintf("size was %d, the whole file is now %d", r.e.size, resp.ContentLength))
			}
			resp.Body.Close()
			return &retryable{fmt.Errorf("Content-Length %d, but the file has %d bytes", resp.ContentLength, r.e.size)}
		}
		// The whole file is coming: skip to the bytes wanted.
		if _, err := io.CopyN(io.Discard, resp.Body, r.off); err != nil {
			resp.Body.Close()
			if r.ctx.Err() != nil {
				return herr(context.Cause(r.ctx))
			}
			return &retryable{fmt.Errorf("skipping to byte %d of a server that ignores Range: %w", r.off, err)}
		}
		r.body, r.bodyEnd = resp.Body, r.end
	case statusRangeNotSatisfiable:
		return changed("the range is past its end now")
	case statusNotFound, statusGone:
		resp.Body.Close()
		r.h.forget(r.e.name)
		return herr(fmt.Errorf("%s %w (it is gone)", r.e.name, ErrChanged))
	default:
		resp.Body.Close()
		return statusError(methodGet, r.e.url, resp)
	}
	return nil
}
