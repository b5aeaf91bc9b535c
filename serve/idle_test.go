//go:build !js && !wasip1

// These tests run an HTTP server on 127.0.0.1, which js/wasm and wasip1
// cannot do.

package serve

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"
)

// smallBuffers shrinks the send buffer of every accepted connection, so
// that a client that does not read blocks the server after a few hundred
// kilobytes rather than after however many megabytes the system allows.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

// idleFixture serves an 8 MiB file both from a models folder (an
// *os.File: net/http sends it with sendfile through idleWriter.ReadFrom)
// and from an fs.FS in memory (copied through Write), and reports on done
// the path of each request whose handler has returned. small shrinks the
// server's socket buffers (smallBuffers).
func idleFixture(t *testing.T, idle time.Duration, small bool) (srv *httptest.Server, data []byte, done chan string) {
	t.Helper()
	data = randomBytes(8<<20, 5)
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "disk"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "disk", "big.safetensors"), data, 0o644))
	h, err := New(Options{ModelsDir: dir, NoEmbedded: true, WriteIdleTimeout: idle,
		Models: fstest.MapFS{"mem/big.safetensors": {Data: data, ModTime: time.Unix(1700000000, 0)}}})
	must(t, err)
	t.Cleanup(func() { h.Close() })
	done = make(chan string, 16)
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- r.URL.Path }()
		h.ServeHTTP(w, r)
	}))
	if small {
		srv.Listener = smallBuffers{srv.Listener}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, data, done
}

// TestClientThatNeverReads asks for a large file and never reads the
// answer. The handler must give up once nothing has gone out for
// WriteIdleTimeout (200 ms here) and close the connection, freeing its
// goroutine and file; before, it blocked in write for good. The bound of
// 60 s only detects that hang; nothing here depends on timing.
func TestClientThatNeverReads(t *testing.T) {
	srv, data, done := idleFixture(t, 200*time.Millisecond, true)
	for _, path := range []string{"/models/disk/big.safetensors", "/models/mem/big.safetensors"} {
		t.Run(path, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			must(t, err)
			defer c.Close()
			c.(*net.TCPConn).SetReadBuffer(4 << 10)
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path)
			select {
			case p := <-done:
				if p != path {
					t.Fatalf("handler of %s returned, want %s", p, path)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the handler still writes to a client that has read nothing for 60 s")
			}
			// The server has closed the connection: reading now gets what
			// was in the buffers, then the end, well short of the file.
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			n, _ := io.Copy(io.Discard, c)
			if n >= int64(len(data)) {
				t.Errorf("the client got %d bytes of a %d-byte file that it never read", n, len(data))
			}
		})
	}
}

// TestIdleDeadlineKeepsDownloads checks that the idle deadline, moved
// forward as pieces go out, leaves a whole download intact, by sendfile
// and by Write, also for a range and for two requests on one kept-alive
// connection (the deadline of the first must not cut the second).
func TestIdleDeadlineKeepsDownloads(t *testing.T) {
	srv, data, _ := idleFixture(t, 30*time.Second, false)
	client := srv.Client()
	for _, tt := range []struct {
		path, rng  string
		start, end int
	}{
		{"/models/disk/big.safetensors", "", 0, len(data)},
		{"/models/mem/big.safetensors", "", 0, len(data)},
		{"/models/disk/big.safetensors", "bytes=1000-5000000", 1000, 5000001},
		{"/models/mem/big.safetensors", "bytes=-3000000", len(data) - 3000000, len(data)},
	} {
		t.Run(tt.path+" "+tt.rng, func(t *testing.T) {
			req, err := http.NewRequest("GET", srv.URL+tt.path, nil)
			must(t, err)
			if tt.rng != "" {
				req.Header.Set("Range", tt.rng)
			}
			// Twice: the second goes over the connection the first kept.
			for range 2 {
				resp, err := client.Do(req)
				must(t, err)
				got, err := io.ReadAll(bufio.NewReader(resp.Body))
				resp.Body.Close()
				if err != nil || !bytes.Equal(got, data[tt.start:tt.end]) {
					t.Fatalf("status %d, %d bytes (%v), want bytes [%d, %d)", resp.StatusCode, len(got), err, tt.start, tt.end)
				}
			}
		})
	}
}
