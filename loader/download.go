package loader

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"sync"
)

// download is the one whole-file GET of a file going into the Cache
// (resumed with Range and If-Range when the body breaks; see rangeReader),
// its bytes written to a StoreWriter as they arrive. The same download
// serves both ways a file gets into the Cache (HTTPOptions.ReadThrough):
// fetchWhole reads it to the end before anything uses the file; in a
// ReadThrough load, readers take byte ranges of it in file order as they
// pass (take), so that one pass feeds the loader and the Cache.
//
// Readers ask for ranges at or after the bytes already taken; skipped
// bytes still go to the Cache. A reader that asks for bytes already passed
// (errBehind) reads them elsewhere: from the Cache once the file is
// stored, else with a ranged request of its own.
type download struct {
	h *HTTPFS
	e *remoteFile

	mu      sync.Mutex // one reader at a time; held for a whole fetchWhole
	started bool
	w       StoreWriter // nil when the Cache declined the file
	r       *rangeReader
	pos     int64  // bytes of the file received, from 0
	buf     []byte // receive buffer
	chunk   []byte // received but not yet taken: [pos-len(chunk), pos)
	sum     hash.Hash
	err     error       // sticky failure
	stored  *StoreEntry // the entry, once committed
	resumed bool        // began from bytes the Cache kept from before
	done    bool        // every byte received and checked
}

// reset forgets a failed try, keeping the lock.
func (d *download) reset() {
	d.started, d.w, d.r, d.pos, d.chunk, d.sum, d.err, d.stored, d.resumed, d.done = false, nil, nil, 0, nil, nil, nil, nil, false, false
}

// errBehind says a range starts before the download's position.
var errBehind = errors.New("range already passed")

// start opens the Cache's writer and the body, from the bytes the Cache
// already holds. d.mu is held.
func (d *download) start(ctx context.Context) error {
	d.started = true
	e, c := d.e, d.h.opt.Cache
	if c != nil {
		w, err := c.Create(e.url, e.entry())
		switch {
		case err == nil:
			d.w = w
		case errors.Is(err, ErrNotStored):
			d.h.note(err.Error())
		default:
			return err
		}
	}
	if d.w != nil {
		d.pos = d.w.Offset()
		d.resumed = d.pos > 0
		if d.pos > 0 {
			d.h.received(e, d.pos, false) // progress starts where the part ends
		}
	} else if e.sha256 != "" {
		d.sum = sha256.New() // the Cache does not check it: check it here
	}
	d.r = d.h.openRange(e, d.pos, e.size)
	d.r.ctx = ctx
	return nil
}

// receive reads the next piece of the body into d.chunk, and on into the
// Cache; after the last byte it commits the entry. d.mu is held.
func (d *download) receive() error {
	if cap(d.buf) == 0 {
		d.buf = make([]byte, 1<<20)
	}
	n, err := d.r.Read(d.buf)
	if n > 0 {
		b := d.buf[:n]
		if d.w != nil {
			if _, werr := d.w.Write(b); werr != nil {
				if !errors.Is(werr, ErrNotStored) {
					return werr
				}
				d.h.note(werr.Error())
				d.w.Abort(false)
				d.w = nil
			}
		}
		if d.sum != nil {
			d.sum.Write(b)
		}
		d.pos += int64(n)
		d.chunk = b
		if isWeights(d.e.name) {
			d.h.mu.Lock()
			d.h.stats.Fetched += int64(n)
			d.h.mu.Unlock()
		}
	}
	if err == io.EOF || (err == nil && d.pos == d.e.size) {
		return d.complete()
	}
	return err
}

// complete verifies the whole file and commits its Cache entry.
func (d *download) complete() error {
	e := d.e
	d.r.Close()
	if d.pos != e.size {
		return &HTTPError{Method: methodGet, URL: e.url, Err: fmt.Errorf("%w: received %d bytes, the file has %d", ErrIntegrity, d.pos, e.size)}
	}
	if e.size == 0 {
		d.h.report(e.name, 0, 0)
	}
	if d.sum != nil {
		if got := hex.EncodeToString(d.sum.Sum(nil)); got != e.sha256 {
			return &HTTPError{Method: methodGet, URL: e.url, Err: fmt.Errorf("%w: sha256 of the download is %s, expected %s (from %s)", ErrIntegrity, got, e.sha256, e.sumFrom)}
		}
	}
	d.done = true
	if d.w == nil {
		return nil
	}
	w := d.w
	d.w = nil
	sum, err := w.Commit()
	switch {
	case err == nil:
		m := e.entry()
		m.SHA256 = sum
		if got, ok := d.h.opt.Cache.Lookup(e.url); ok && !got.Missing && got.Size == e.size {
			m = got
		}
		d.stored = &m
		return nil
	case errors.Is(err, ErrNotStored):
		d.h.note(err.Error())
		return nil
	case errors.Is(err, ErrIntegrity):
		if e.sumFrom != "" {
			err = fmt.Errorf("%w (the sha256 comes from %s)", err, e.sumFrom)
		}
		return &HTTPError{Method: methodGet, URL: e.url, Err: err}
	}
	return err
}

// fail ends the download: nothing of it is stored, except that a Cache
// that can resume keeps what arrived of a download that was cut off (not
// one that was wrong).
func (d *download) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	if d.w != nil {
		d.w.Abort(!errors.Is(err, ErrChanged) && !errors.Is(err, ErrIntegrity))
		d.w = nil
	}
	if d.r != nil {
		d.r.Close()
	}
}

// take returns up to max bytes at off (>= the bytes taken so far),
// receiving and skipping as needed; io.EOF at the end. The slice is valid
// until the next call. d.mu is held.
func (d *download) take(ctx context.Context, off int64, max int) ([]byte, error) {
	if d.err != nil {
		return nil, d.err
	}
	if off < d.pos-int64(len(d.chunk)) {
		return nil, errBehind
	}
	if !d.started {
		d.h.aheadOnce.Do(func() { go d.h.downloadAhead() })
		if err := d.start(ctx); err != nil {
			d.fail(err)
			return nil, err
		}
		if off < d.pos { // resumed past off: the bytes are not in the body
			return nil, errBehind
		}
	}
	for {
		if len(d.chunk) == 0 {
			if d.done {
				return nil, io.EOF
			}
			if err := d.receive(); err != nil {
				d.fail(err)
				return nil, err
			}
			continue
		}
		first := d.pos - int64(len(d.chunk))
		if skip := off - first; skip > 0 {
			k := min(skip, int64(len(d.chunk)))
			d.chunk = d.chunk[k:]
			continue
		}
		n := min(max, len(d.chunk))
		b := d.chunk[:n]
		d.chunk = d.chunk[n:]
		return b, nil
	}
}

// drain receives the rest of the file, completing it. d.mu is held.
func (d *download) drain(ctx context.Context) error {
	for {
		_, err := d.take(ctx, d.pos, 1<<30)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		d.chunk = nil
	}
}

// fetchWhole downloads the file into the Cache before anything reads it
// (the native way). When the bytes kept from an interrupted download do
// not check out (a disk error, a part edited by hand), the Cache has
// dropped them, and the file is fetched once more from zero.
func (d *download) fetchWhole(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for try := 0; ; try++ {
		if err := d.start(ctx); err != nil {
			return err
		}
		err := d.drain(ctx)
		if err == nil {
			return nil
		}
		if !(d.resumed && try == 0 && errors.Is(err, ErrIntegrity)) {
			return err
		}
		d.reset()
	}
}

// fetchRest downloads what is left of a ReadThrough file into the Cache
// (Prefetch), whether or not a reader has begun it.
func (d *download) fetchRest(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil || d.done {
		return d.err
	}
	if !d.started {
		if err := d.start(ctx); err != nil {
			d.fail(err)
			return err
		}
	}
	return d.drain(ctx)
}

// ahead downloads the whole file into the Cache unless a reader has begun
// it. It reports false when the file cannot be cached: then the reader
// takes it as it arrives, and downloading more ahead would only hold
// connections open.
func (d *download) ahead() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return true
	}
	if err := d.start(d.h.ctx); err != nil {
		d.fail(err)
		return false
	}
	if d.w == nil {
		return false
	}
	if err := d.drain(d.h.ctx); err != nil {
		return false // d.err is set: the reader reports it
	}
	return true
}

// downloadAhead downloads the ReadThrough weight files, in name order
// (the order the loader reads them), into the Cache while the loader reads
// the first, up to Ahead at a time. A file the loader reaches while it is
// still downloading waits for it, then comes from the Cache; one the
// loader reaches first is read as it arrives.
func (h *HTTPFS) downloadAhead() {
	n := h.opt.Ahead
	if n == 0 {
		n = 2
	}
	if n < 0 || h.opt.Cache == nil {
		return
	}
	h.mu.Lock()
	ds := append([]*download(nil), h.downloads...)
	h.mu.Unlock()
	sort.Slice(ds, func(i, j int) bool { return ds[i].e.name < ds[j].e.name })
	next := make(chan *download)
	quit := make(chan struct{})
	var once sync.Once
	for range n {
		go func() {
			for d := range next {
				if !d.ahead() {
					once.Do(func() { close(quit) })
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

// Finish completes the ReadThrough downloads of a load that succeeded: the
// bytes the loader skipped (a tensor it does not use, the end of a file)
// are fetched into the Cache, and each entry is committed. Without it,
// those files are not stored. Call Abort instead after a failed load.
func (h *HTTPFS) Finish() error {
	h.mu.Lock()
	ds := append([]*download(nil), h.downloads...)
	h.mu.Unlock()
	for _, d := range ds {
		d.mu.Lock()
		var err error
		switch {
		case d.err != nil:
			err = d.err
		case !d.started, d.w == nil:
			if d.r != nil {
				d.r.Close() // nothing to store: stop the body
			}
		default:
			err = d.drain(h.ctx)
		}
		d.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// Abort ends the ReadThrough downloads of a load that failed: nothing of
// them is stored.
func (h *HTTPFS) Abort() {
	h.mu.Lock()
	ds := append([]*download(nil), h.downloads...)
	h.mu.Unlock()
	for _, d := range ds {
		if d.mu.TryLock() {
			if d.started && d.err == nil && d.stored == nil {
				d.fail(errors.New("the load failed"))
			}
			d.mu.Unlock()
		}
	}
}

// downloadRange reads [off, end) of a file being downloaded: from the
// download while it has not passed off, else from the Cache (once the
// file is stored) or with ranged requests.
type downloadRange struct {
	f        *httpFile
	off, end int64
	own      io.ReadCloser // not from the download
	ownAt    io.ReaderAt
	closer   io.Closer
}

func (r *downloadRange) Read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), r.end-r.off))
	if r.own == nil && r.ownAt == nil {
		d := r.f.e.d
		d.mu.Lock()
		b, err := d.take(r.f.h.ctx, r.off, want)
		n := copy(p, b)
		stored := d.stored
		d.mu.Unlock()
		if err == nil {
			r.off += int64(n)
			return n, nil
		}
		if !errors.Is(err, errBehind) {
			return 0, err
		}
		if stored != nil {
			if f, err := r.f.h.opt.Cache.Open(r.f.e.url, *stored); err == nil {
				r.ownAt, r.closer = f, f
			}
		}
		if r.ownAt == nil {
			r.own = r.f.h.openRange(r.f.e, r.off, r.end)
			r.closer = r.own
		}
	}
	var n int
	var err error
	if r.ownAt != nil {
		n, err = r.ownAt.ReadAt(p[:want], r.off)
		if err == io.EOF && n == want {
			err = nil
		}
	} else {
		n, err = r.own.Read(p[:want])
	}
	r.off += int64(n)
	if err == io.EOF && r.off < r.end {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *downloadRange) Close() error {
	if r.closer != nil {
		r.closer.Close()
	}
	return nil
}
