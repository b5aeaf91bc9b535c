package serve

import (
	"io"
	"net/http"
)

// Files of Options.Static and Options.Models may implement two optional
// interfaces, for sources that are not local disks (an object store, as in
// the Cloudflare Worker of serve/worker, where weights live in R2). The
// Handler's HTTP logic (ranges, conditional requests, HEAD, CORS, the
// isolation headers, paths) stays the same; only where bytes and ETags come
// from changes.

// ETagFile is a file that knows its own strong ETag, e.g. an object
// store's hash of the object ("\"…\"", quotes included). The Handler uses it
// instead of size-mtime or a content hash (also with ContentETags), so it
// never reads the file to tag it.
type ETagFile interface {
	ETag() (string, error)
}

// RangeWriterFile is a file that can send bytes [off, off+n) of itself as
// the body of a response without passing them through Read, e.g. by handing
// the response a stream from its store. The file must also be an
// io.ReadSeeker (Read serves what ranges do not: content sniffing, gzip).
//
// The Handler calls WriteRange at most once per response, after the status
// and every header, Content-Length included, are set, and never for HEAD or
// 304. w is the ResponseWriter given to ServeHTTP, so the file may use its
// other methods. An error after WriteRange has begun the body cannot change
// the status any more: the implementation should then make the body
// shorter than Content-Length (the client sees a broken transfer, never
// wrong bytes).
type RangeWriterFile interface {
	WriteRange(w http.ResponseWriter, off, n int64) error
}

// rangeWriter wraps the ResponseWriter while http.ServeContent sends a
// RangeWriterFile. ServeContent seeks the content to the start of what it
// sends and copies with io.CopyN(w, content, n), which io.Copy hands to
// w.ReadFrom as an *io.LimitedReader over the content: ReadFrom turns that
// into one WriteRange call. (net/http's own sendfile path rests on the same
// property.) Anything else is copied as usual, so if ServeContent ever
// stopped doing this the bytes would still be right, only slower;
// TestRangeWriterFastPath checks the fast path is taken.
type rangeWriter struct {
	http.ResponseWriter
	file    RangeWriterFile
	content *ownContent // what ServeContent was given
	onError func(error)
}

// ownContent wraps the file given to ServeContent, so that ReadFrom can
// recognise it by pointer (the file's own type need not be comparable).
type ownContent struct{ io.ReadSeeker }

func (rw *rangeWriter) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok && lr.R == io.Reader(rw.content) && lr.N > 0 {
		off, err := rw.content.Seek(0, io.SeekCurrent)
		if err == nil {
			err = rw.file.WriteRange(rw.ResponseWriter, off, lr.N)
		}
		if err != nil {
			rw.onError(err)
			return 0, err
		}
		n := lr.N
		lr.N = 0
		return n, nil
	}
	if rf, ok := rw.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{rw.ResponseWriter}, r)
}

// writerOnly hides ReadFrom, so io.Copy does not loop back into it.
type writerOnly struct{ io.Writer }

// Unwrap lets http.ResponseController reach the ResponseWriter.
func (rw *rangeWriter) Unwrap() http.ResponseWriter { return rw.ResponseWriter }
