package serve

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// TestServeHidesDotfiles checks that no path with a segment that begins
// with a dot is served, from the models folder, StaticDir or a Static
// fs.FS: a served folder is often a checkout, and with
// Access-Control-Allow-Origin: * any web page could read its .git/config
// or .env. The answer is the 404 of a missing file, so that whether the
// file exists is not revealed.
func TestServeHidesDotfiles(t *testing.T) {
	const secret = "token=hunter2"
	models := t.TempDir()
	static := t.TempDir()
	for _, p := range []string{
		".env", ".git/config", "m1/.env", "m1/.git/HEAD", "m1/sub/.secret.json", ".hidden/config.json",
	} {
		for _, root := range []string{models, static} {
			must(t, os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755))
			must(t, os.WriteFile(filepath.Join(root, p), []byte(secret), 0o644))
		}
	}
	must(t, os.WriteFile(filepath.Join(models, "m1", "config.json"), []byte("{}"), 0o644))
	must(t, os.WriteFile(filepath.Join(static, "index.html"), []byte("<p>hi</p>"), 0o644))
	mapStatic := fstest.MapFS{".env": {Data: []byte(secret)}, ".git/config": {Data: []byte(secret)}, "a/.b/c.js": {Data: []byte(secret)}, "index.html": {Data: []byte("<p>hi</p>")}}

	hDir, err := New(Options{ModelsDir: models, StaticDir: static, NoEmbedded: true})
	must(t, err)
	defer hDir.Close()
	hMap, err := New(Options{Static: mapStatic})
	must(t, err)
	defer hMap.Close()

	tests := []struct {
		name   string
		h      *Handler
		target string
		status int
	}{
		{"models .env", hDir, "/models/m1/.env", 404},
		{"models .git", hDir, "/models/m1/.git/HEAD", 404},
		{"models nested dotfile", hDir, "/models/m1/sub/.secret.json", 404},
		{"dot model folder", hDir, "/models/.hidden/config.json", 404},
		{"dot model folder, encoded", hDir, "/models/%2Ehidden/config.json", 404},
		{"static .env", hDir, "/.env", 404},
		{"static .git/config", hDir, "/.git/config", 404},
		{"static dot folder index", hDir, "/.git/", 404},
		{"map .env", hMap, "/.env", 404},
		{"map .git/config", hMap, "/.git/config", 404},
		{"map dot folder inside", hMap, "/a/.b/c.js", 404},
		{"embedded model dotfile", hMap, "/models/" + EmbeddedModel + "/.gitattributes", 404},
		{"dot-dot is still a bad path", hDir, "/models/m1/../.env", 400},
		{"plain file still served", hDir, "/models/m1/config.json", 200},
		{"static index still served", hDir, "/", 200},
		{"map index still served", hMap, "/", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD"} {
				w := httptest.NewRecorder()
				tt.h.ServeHTTP(w, httptest.NewRequest(method, tt.target, nil))
				if w.Code != tt.status {
					t.Errorf("%s: status %d, want %d", method, w.Code, tt.status)
				}
				if strings.Contains(w.Body.String(), "hunter2") {
					t.Errorf("%s: the secret was sent", method)
				}
			}
		})
	}
	w := httptest.NewRecorder()
	hDir.ServeHTTP(w, httptest.NewRequest("GET", "/models/", nil))
	if strings.Contains(w.Body.String(), ".hidden") {
		t.Errorf("models list shows a dot folder: %s", w.Body.String())
	}
	if _, err := New(Options{Static: mapStatic, StaticDir: static}); err == nil {
		t.Error("Static and StaticDir together accepted")
	}
}

// TestServeRanges checks that every Range header, satisfiable or not,
// well-formed or not, gets a valid HTTP answer (RFC 9110, section 14):
// 206 only with a Content-Range that describes exactly the body sent, 416
// with "bytes */size", otherwise the whole file with 200. bytes=-0 used to
// get 206 with an impossible Content-Range and an empty body.
func TestServeRanges(t *testing.T) {
	data := randomBytes(1000, 9)
	n := len(data)
	h, err := New(Options{NoEmbedded: true, Models: fstest.MapFS{
		"m/w.safetensors":     {Data: data, ModTime: time.Unix(1700000000, 0)},
		"m/empty.safetensors": {Data: nil, ModTime: time.Unix(1700000000, 0)},
	}})
	must(t, err)
	etag := func() string {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("HEAD", "/models/m/w.safetensors", nil))
		return w.Header().Get("ETag")
	}()
	const (
		whole = -1 // 200 and the whole file
		unsat = -2 // 416
	)
	tests := []struct {
		name        string
		file        string   // default w.safetensors
		method      string   // default GET
		hdr         []string // header lines, name then value; Range may repeat
		first, last int      // for 206; or whole / unsat in first
	}{
		{name: "suffix of zero", hdr: []string{"Range", "bytes=-0"}, first: unsat},
		{name: "suffix of zero, HEAD", method: "HEAD", hdr: []string{"Range", "bytes=-0"}, first: unsat},
		{name: "suffix of zero, leading zeros", hdr: []string{"Range", "bytes=-000"}, first: unsat},
		{name: "open end from 0", hdr: []string{"Range", "bytes=0-"}, first: 0, last: n - 1},
		{name: "one byte", hdr: []string{"Range", "bytes=0-0"}, first: 0, last: 0},
		{name: "last byte", hdr: []string{"Range", "bytes=-1"}, first: n - 1, last: n - 1},
		{name: "reversed", hdr: []string{"Range", "bytes=5-2"}, first: unsat},
		{name: "suffix longer than the file", hdr: []string{"Range", "bytes=-" + strconv.Itoa(n+100)}, first: 0, last: n - 1},
		{name: "suffix that overflows int64", hdr: []string{"Range", "bytes=-99999999999999999999999"}, first: 0, last: n - 1},
		{name: "end past the file", hdr: []string{"Range", "bytes=990-5000"}, first: 990, last: n - 1},
		{name: "end that overflows int64", hdr: []string{"Range", "bytes=10-99999999999999999999999"}, first: 10, last: n - 1},
		{name: "start at the end", hdr: []string{"Range", "bytes=" + strconv.Itoa(n) + "-"}, first: unsat},
		{name: "start that overflows int64", hdr: []string{"Range", "bytes=99999999999999999999999-"}, first: unsat},
		{name: "two ranges", hdr: []string{"Range", "bytes=0-1,5-6"}, first: whole},
		{name: "two ranges, one unsatisfiable", hdr: []string{"Range", "bytes=0-1, 5000-6000"}, first: whole},
		{name: "two Range lines", hdr: []string{"Range", "bytes=0-1", "Range", "bytes=5-6"}, first: whole},
		{name: "empty list elements", hdr: []string{"Range", "bytes=, 3-4 ,"}, first: 3, last: 4},
		{name: "unit in capitals", hdr: []string{"Range", "Bytes=3-4"}, first: 3, last: 4},
		{name: "unknown unit is ignored", hdr: []string{"Range", "items=0-5"}, first: whole},
		{name: "no unit", hdr: []string{"Range", "0-5"}, first: whole},
		{name: "empty set", hdr: []string{"Range", "bytes="}, first: unsat},
		{name: "no dash", hdr: []string{"Range", "bytes=5"}, first: unsat},
		{name: "two dashes", hdr: []string{"Range", "bytes=1--2"}, first: unsat},
		{name: "signed start", hdr: []string{"Range", "bytes=+1-2"}, first: unsat},
		{name: "letters", hdr: []string{"Range", "bytes=a-b"}, first: unsat},
		{name: "bare dash", hdr: []string{"Range", "bytes=-"}, first: unsat},
		{name: "If-Range mismatch beats an unsatisfiable range", hdr: []string{"Range", "bytes=-0", "If-Range", `"other"`}, first: whole},
		{name: "If-Range match with an unsatisfiable range", hdr: []string{"Range", "bytes=-0", "If-Range", etag}, first: unsat},
		{name: "empty file, suffix", file: "empty.safetensors", hdr: []string{"Range", "bytes=-5"}, first: whole},
		{name: "empty file, suffix of zero", file: "empty.safetensors", hdr: []string{"Range", "bytes=-0"}, first: whole},
		{name: "empty file, first byte", file: "empty.safetensors", hdr: []string{"Range", "bytes=0-0"}, first: whole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file, body := "w.safetensors", data
			if tt.file != "" {
				file, body = tt.file, nil
			}
			method := tt.method
			if method == "" {
				method = "GET"
			}
			r := httptest.NewRequest(method, "/models/m/"+file, nil)
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				r.Header.Add(tt.hdr[i], tt.hdr[i+1])
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if err := validRangeAnswer(w, method, body); err != nil {
				t.Fatal(err)
			}
			cr := w.Header().Get("Content-Range")
			switch tt.first {
			case whole:
				if w.Code != 200 {
					t.Fatalf("status %d (Content-Range %q), want 200 and the whole file", w.Code, cr)
				}
			case unsat:
				if w.Code != 416 {
					t.Fatalf("status %d (Content-Range %q), want 416", w.Code, cr)
				}
			default:
				if want := fmt.Sprintf("bytes %d-%d/%d", tt.first, tt.last, len(body)); w.Code != 206 || cr != want {
					t.Fatalf("status %d, Content-Range %q; want 206 with %q", w.Code, cr, want)
				}
			}
		})
	}
}

// validRangeAnswer checks the invariants of any answer to a GET or HEAD of
// a file whose bytes are data: a 206 has one well-formed Content-Range
// inside the file and exactly those bytes as its body (none for HEAD), a
// 416 has "bytes */size", a 200 has the whole file.
func validRangeAnswer(w *httptest.ResponseRecorder, method string, data []byte) error {
	size := len(data)
	cr := w.Header().Get("Content-Range")
	got := w.Body.Bytes()
	switch w.Code {
	case 206:
		var a, b, total int
		if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &a, &b, &total); err != nil || fmt.Sprintf("bytes %d-%d/%d", a, b, total) != cr {
			return fmt.Errorf("206 with malformed Content-Range %q", cr)
		}
		if a < 0 || b < a || b >= size || total != size {
			return fmt.Errorf("206 with impossible Content-Range %q for a %d-byte file", cr, size)
		}
		if cl := w.Header().Get("Content-Length"); cl != strconv.Itoa(b-a+1) {
			return fmt.Errorf("206 %q with Content-Length %q", cr, cl)
		}
		if method != "HEAD" && !bytes.Equal(got, data[a:b+1]) {
			return fmt.Errorf("206 %q: body of %d bytes is not that range", cr, len(got))
		}
	case 416:
		if want := fmt.Sprintf("bytes */%d", size); cr != want {
			return fmt.Errorf("416 with Content-Range %q, want %q", cr, want)
		}
	case 200:
		if cr != "" {
			return fmt.Errorf("200 with Content-Range %q", cr)
		}
		if method != "HEAD" && !bytes.Equal(got, data) {
			return fmt.Errorf("200 with %d bytes, not the %d-byte file", len(got), size)
		}
	default:
		return fmt.Errorf("status %d", w.Code)
	}
	return nil
}

// fakeConn is the ResponseWriter an idleWriter wraps in TestIdleWriter:
// it records each write and each deadline, on a clock that advances one
// second per write, as a slow client would make it.
type fakeConn struct {
	now       time.Time
	deadline  time.Time
	writes    []int
	late      int // writes that began after their deadline
	body      bytes.Buffer
	header    http.Header
	extends   int
	noReadFrm bool
}

func (c *fakeConn) Header() http.Header { return c.header }
func (c *fakeConn) WriteHeader(int)     {}
func (c *fakeConn) Write(p []byte) (int, error) {
	if !c.now.Before(c.deadline) {
		c.late++
	}
	c.writes = append(c.writes, len(p))
	c.now = c.now.Add(time.Second)
	return c.body.Write(p)
}

// readerFromConn adds ReadFrom, as net/http's response has (sendfile).
type readerFromConn struct{ *fakeConn }

func (c readerFromConn) ReadFrom(r io.Reader) (int64, error) {
	if !c.now.Before(c.deadline) {
		c.late++
	}
	n, err := io.Copy(&c.body, r)
	c.writes = append(c.writes, int(n))
	c.now = c.now.Add(time.Second)
	return n, err
}

// TestIdleWriter checks the idle write deadline without a clock or a
// network: however the body is written (one large Write, ReadFrom of a
// limited file as ServeContent does, ReadFrom of an unlimited reader, a
// ResponseWriter without ReadFrom), it reaches the connection in pieces of
// at most writeChunk bytes, and each piece begins with the deadline moved
// idle past the current time. So a client that keeps taking bytes, however
// long the whole download lasts (here one second per piece, 90 s in all,
// against a 2 s limit), is never cut; one that takes nothing for idle is.
func TestIdleWriter(t *testing.T) {
	const idle = 2 * time.Second
	data := randomBytes(45*writeChunk+17, 3)
	tests := []struct {
		name       string
		noReadFrom bool
		write      func(w *idleWriter) (int64, error)
	}{
		{"one Write", false, func(w *idleWriter) (int64, error) {
			n, err := w.Write(data)
			return int64(n), err
		}},
		{"ReadFrom a LimitedReader, as ServeContent", false, func(w *idleWriter) (int64, error) {
			src := bytes.NewReader(append(append([]byte(nil), data...), "not sent"...))
			lr := &io.LimitedReader{R: src, N: int64(len(data))}
			n, err := w.ReadFrom(lr)
			if lr.N != 0 {
				t.Errorf("LimitedReader left with N = %d", lr.N)
			}
			return n, err
		}},
		{"ReadFrom until EOF", false, func(w *idleWriter) (int64, error) { return w.ReadFrom(bytes.NewReader(data)) }},
		{"ReadFrom on a writer without it", true, func(w *idleWriter) (int64, error) { return w.ReadFrom(bytes.NewReader(data)) }},
		{"io.CopyN", false, func(w *idleWriter) (int64, error) { return io.CopyN(w, bytes.NewReader(data), int64(len(data))) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeConn{now: time.Unix(1e9, 0), header: http.Header{}}
			var rw http.ResponseWriter = readerFromConn{c}
			if tt.noReadFrom {
				rw = c
			}
			w := &idleWriter{ResponseWriter: rw, idle: idle, now: func() time.Time { return c.now },
				setDeadline: func(d time.Time) error { c.deadline = d; c.extends++; return nil }}
			n, err := tt.write(w)
			if err != nil || n != int64(len(data)) {
				t.Fatalf("wrote %d of %d bytes: %v", n, len(data), err)
			}
			if !bytes.Equal(c.body.Bytes(), data) {
				t.Fatal("bytes differ")
			}
			for i, m := range c.writes {
				if m > writeChunk {
					t.Fatalf("write %d is %d bytes, more than writeChunk", i, m)
				}
			}
			if c.late > 0 || c.extends < len(c.writes) {
				t.Errorf("%d writes began past their deadline; %d extensions for %d writes", c.late, c.extends, len(c.writes))
			}
			if total := c.now.Sub(time.Unix(1e9, 0)); total <= 10*idle {
				t.Errorf("test is too short to show anything: %v", total)
			}
		})
	}
}

// TestNewServer checks that the server NewServer builds bounds slow
// request headers and idle connections, and leaves the length of a whole
// response unbounded (the Handler's idle deadline does that job).
func TestNewServer(t *testing.T) {
	s := NewServer("127.0.0.1:0", http.NotFoundHandler())
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"Addr", s.Addr == "127.0.0.1:0"},
		{"Handler", s.Handler != nil},
		{"ReadHeaderTimeout", s.ReadHeaderTimeout == ReadHeaderTimeout && ReadHeaderTimeout > 0},
		{"IdleTimeout", s.IdleTimeout == IdleTimeout && IdleTimeout > 0},
		{"MaxHeaderBytes", s.MaxHeaderBytes == MaxHeaderBytes && MaxHeaderBytes > 0},
		{"no WriteTimeout", s.WriteTimeout == 0},
		{"no ReadTimeout", s.ReadTimeout == 0},
	} {
		if !c.ok {
			t.Errorf("%s: not as documented", c.name)
		}
	}
}
