package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/mamba2web/mamba2/serve"
)

// cmdServe serves model folders and the web demo over HTTP until ctx ends
// (Ctrl-C), then lets requests in flight finish for a few seconds.
func cmdServe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("serve")
	modelsDir := fs.String("models", "", "folder of model folders, served as /models/<name>/ (the embedded mamba2-go-tiny is always there too)")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (host:port; port 0 picks a free one)")
	static := fs.String("static", "", "folder served at / (the demo page, its module, worker and wasm)")
	accessLog := fs.Bool("log", false, "print one line per request on stdout: method, path, status, bytes sent, Range, duration")
	if err := parse(fs, args); err != nil {
		return err
	}
	o := serve.Options{ModelsDir: *modelsDir, ErrorLog: log.New(stderr, "mamba2 serve: ", log.LstdFlags)}
	// Links out of the folder are not followed; dotfiles and anything but
	// regular files are not served.
	o.StaticDir = *static
	h, err := serve.New(o)
	if err != nil {
		return err
	}
	defer h.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("serve: %v", err)
	}
	var handler http.Handler = h
	if *accessLog {
		handler = logRequests(h, stdout)
	}
	srv := serve.NewServer(*addr, handler) // header, idle and per-write timeouts
	srv.ErrorLog = o.ErrorLog
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "mamba2 serve: listening on %s/\n", base)
	for _, name := range h.ModelNames() {
		fmt.Fprintf(stdout, "  model %s: %s/models/%s/\n", name, base, name)
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(stderr, "mamba2 serve: %s is reachable from other machines\n", ln.Addr())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve: %v", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdown)
	if errors.Is(err, context.DeadlineExceeded) {
		srv.Close() // a slow client: stop waiting for it
		err = nil
	}
	if serr := <-done; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	fmt.Fprintln(stdout, "mamba2 serve: stopped")
	return err
}

// logRequests writes one line per finished request to w:
//
//	GET /models/mamba2-go-tiny/config.json 200 1234 range="" 0.4ms
func logRequests(h http.Handler, w io.Writer) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: rw, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		mu.Lock()
		fmt.Fprintf(w, "%s %s %d %d range=%q %s\n", r.Method, r.URL.RequestURI(), rec.status, rec.bytes,
			r.Header.Get("Range"), time.Since(start).Round(100*time.Microsecond))
		mu.Unlock()
	})
}

// recorder notes the status and body size of a response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
