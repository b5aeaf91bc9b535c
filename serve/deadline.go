package serve

import (
	"io"
	"net/http"
	"time"
)

// WriteIdleTimeout is how long a response may make no progress before its
// connection is closed: a client that asks for a file and never reads it
// would otherwise hold a server goroutine and an open file for good (the
// write blocks once the socket buffers are full). It is an idle limit, not
// a limit on the whole response: the deadline moves forward each time a
// piece of at most writeChunk bytes goes out, so a slow download of a
// multi-gigabyte file that keeps moving is never cut. A minute rides out
// a stalled Wi-Fi link or a paused laptop-side reader.
const WriteIdleTimeout = 60 * time.Second

// writeChunk is the most the Handler writes between two extensions of the
// write deadline. A write must finish within WriteIdleTimeout, so the
// slowest client that is still served is writeChunk per WriteIdleTimeout,
// about 2 KiB/s; larger pieces would cut slow clients that are in fact
// reading, smaller ones cost more system calls (each piece of a file is
// one sendfile).
const writeChunk = 128 << 10

// Timeouts of NewServer. ReadHeaderTimeout bounds a client that opens a
// connection and sends its request line and headers slowly or never (a
// request here has no body, so the headers are all there is to read);
// IdleTimeout closes keep-alive connections nobody uses. Both are far
// above what a real client on a slow link needs.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 2 * time.Minute
	// MaxHeaderBytes bounds the request headers: the Handler reads a path,
	// Range and a few conditional headers, never kilobytes of them (the
	// default of net/http is 1 MiB).
	MaxHeaderBytes = 64 << 10
)

// NewServer returns an http.Server for h on addr with the timeouts above
// set. It sets no WriteTimeout, which would cap the length of every
// download: the Handler instead keeps an idle deadline on each response
// (WriteIdleTimeout, Options.WriteIdleTimeout). Set ErrorLog and the like
// on the result as needed.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// idleWriter moves the connection's write deadline idle into the future
// before every piece of at most writeChunk bytes of the body, so a write
// fails (and the handler returns, closing the file and the connection)
// only when the client takes no bytes for that long.
//
// The deadline is left set when the response ends: it then covers the
// server's final flush, and the next request on the connection sets its
// own at once (Handler.ServeHTTP starts with one).
type idleWriter struct {
	http.ResponseWriter
	idle        time.Duration
	setDeadline func(time.Time) error
	now         func() time.Time
}

// newIdleWriter wraps w when its connection supports write deadlines and
// sets the first deadline; otherwise (a ResponseRecorder, a Cloudflare
// Worker) it returns w itself, untouched, so that a RangeWriterFile still
// sees the ResponseWriter it expects.
func newIdleWriter(w http.ResponseWriter, idle time.Duration) http.ResponseWriter {
	if idle <= 0 {
		return w
	}
	rc := http.NewResponseController(w)
	iw := &idleWriter{ResponseWriter: w, idle: idle, setDeadline: rc.SetWriteDeadline, now: time.Now}
	if err := iw.extend(); err != nil {
		return w // http.ErrNotSupported
	}
	return iw
}

func (w *idleWriter) extend() error {
	return w.setDeadline(w.now().Add(w.idle))
}

func (w *idleWriter) WriteHeader(code int) {
	w.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *idleWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		w.extend()
		m, err := w.ResponseWriter.Write(p[:min(len(p), writeChunk)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// ReadFrom keeps the ResponseWriter's own ReadFrom, which hands a file to
// sendfile, but in pieces of writeChunk bytes with the deadline moved
// before each. http.ServeContent copies with io.CopyN, so r is an
// *io.LimitedReader around the file: each piece is a LimitedReader around
// the same file, which sendfile still recognises.
func (w *idleWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{w}, r)
	}
	src, left := r, int64(-1) // -1: until EOF
	lr, limited := r.(*io.LimitedReader)
	if limited {
		src, left = lr.R, lr.N
	}
	var total int64
	for left != 0 {
		want := int64(writeChunk)
		if left > 0 {
			want = min(want, left)
		}
		w.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: src, N: want})
		total += n
		if left > 0 {
			left -= n
			lr.N = left
		}
		if err != nil || n < want {
			return total, err // n < want without an error: src is at EOF
		}
	}
	return total, nil
}

// Unwrap lets http.ResponseController reach the ResponseWriter.
func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
