//go:build js && wasm

package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
	"syscall/js"
	"time"
)

// sub is the part of the bucket under prefix ("web/", "models/") as a
// read-only fs.FS whose files are serve.ETagFile and serve.RangeWriterFile.
func (b *bucket) sub(prefix string) *r2FS { return &r2FS{b: b, prefix: prefix} }

type r2FS struct {
	b      *bucket
	prefix string
}

var (
	_ fs.FS        = (*r2FS)(nil)
	_ fs.ReadDirFS = (*r2FS)(nil)
)

// Open looks the object up with head(): its size, ETag and upload time.
// No bytes are read.
func (f *r2FS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) || name == "." {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	key := f.prefix + name
	obj, err := await(f.b.v.Call("head", key))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("R2 head %s: %w", key, err)}
	}
	if obj.IsNull() || obj.IsUndefined() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &r2File{
		b:        f.b,
		key:      key,
		name:     path.Base(name),
		size:     int64(obj.Get("size").Float()),
		etag:     obj.Get("etag").String(),
		httpEtag: obj.Get("httpEtag").String(),
		modTime:  time.UnixMilli(int64(obj.Get("uploaded").Call("getTime").Float())),
	}, nil
}

// ReadDir lists the objects and "folders" (delimited prefixes) directly
// under name; the Handler uses it for /models/.
func (f *r2FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrInvalid}
	}
	prefix := f.prefix
	if name != "." {
		prefix += name + "/"
	}
	var out []fs.DirEntry
	cursor := js.Undefined()
	for {
		opt := js.Global().Get("Object").New()
		opt.Set("prefix", prefix)
		opt.Set("delimiter", "/")
		if !cursor.IsUndefined() {
			opt.Set("cursor", cursor)
		}
		res, err := await(f.b.v.Call("list", opt))
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: fmt.Errorf("R2 list %s: %w", prefix, err)}
		}
		objs := res.Get("objects")
		for i := range objs.Length() {
			o := objs.Index(i)
			out = append(out, fs.FileInfoToDirEntry(&entryInfo{
				name:    strings.TrimPrefix(o.Get("key").String(), prefix),
				size:    int64(o.Get("size").Float()),
				modTime: time.UnixMilli(int64(o.Get("uploaded").Call("getTime").Float())),
			}))
		}
		dirs := res.Get("delimitedPrefixes")
		for i := range dirs.Length() {
			d := strings.TrimSuffix(strings.TrimPrefix(dirs.Index(i).String(), prefix), "/")
			out = append(out, fs.FileInfoToDirEntry(&entryInfo{name: d, dir: true}))
		}
		if !res.Get("truncated").Truthy() {
			break
		}
		cursor = res.Get("cursor")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

type entryInfo struct {
	name    string
	size    int64
	modTime time.Time
	dir     bool
}

func (e *entryInfo) Name() string       { return e.name }
func (e *entryInfo) Size() int64        { return e.size }
func (e *entryInfo) ModTime() time.Time { return e.modTime }
func (e *entryInfo) IsDir() bool        { return e.dir }
func (e *entryInfo) Sys() any           { return nil }
func (e *entryInfo) Mode() fs.FileMode {
	if e.dir {
		return fs.ModeDir | 0o555
	}
	return 0o444
}

// r2File is one object, as head() described it.
type r2File struct {
	b        *bucket
	key      string
	name     string
	size     int64
	etag     string // R2's, unquoted
	httpEtag string // the same, quoted: a strong HTTP ETag
	modTime  time.Time
	off      int64
}

func (f *r2File) Stat() (fs.FileInfo, error) {
	return &entryInfo{name: f.name, size: f.size, modTime: f.modTime}, nil
}

func (f *r2File) Close() error { return nil }

// ETag is R2's HTTP ETag (serve.ETagFile): the MD5 of the object for a
// single-part upload, so nothing is hashed here.
func (f *r2File) ETag() (string, error) { return f.httpEtag, nil }

func (f *r2File) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += f.off
	case io.SeekEnd:
		off += f.size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if off < 0 {
		return 0, errors.New("seek: negative offset")
	}
	f.off = off
	return off, nil
}

// maxRead bounds one Read: Read copies through Go memory and is used only
// for what the Handler does not send with WriteRange (sniffing the type
// of a file with an unknown extension).
const maxRead = 1 << 20

func (f *r2File) Read(p []byte) (int, error) {
	if f.off >= f.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), f.size-f.off, maxRead)
	if n == 0 {
		return 0, nil
	}
	body, err := f.get(f.off, n)
	if err != nil {
		return 0, err
	}
	buf, err := await(body.Call("arrayBuffer"))
	if err != nil {
		return 0, fmt.Errorf("R2 read %s: %w", f.key, err)
	}
	got := js.CopyBytesToGo(p[:n], js.Global().Get("Uint8Array").New(buf))
	f.off += int64(got)
	if int64(got) != n {
		return got, io.ErrUnexpectedEOF
	}
	return got, nil
}

// WriteRange (serve.RangeWriterFile) makes bytes [off, off+n) of the
// object the Response body: R2's body stream goes to the client as it
// is, never through Go. If R2 fails, or the object changed since head(),
// the answer becomes a 503 with no body (syumai/workers sends nothing
// before the handler returns, so the status can still change).
func (f *r2File) WriteRange(w http.ResponseWriter, off, n int64) error {
	rw, ok := w.(rawBodyWriter)
	if !ok {
		return errors.New("the ResponseWriter cannot take a JavaScript body")
	}
	body, err := f.get(off, n)
	if err != nil {
		hd := w.Header()
		for _, k := range []string{"Content-Length", "Content-Range", "ETag", "Last-Modified", "Accept-Ranges"} {
			hd.Del(k)
		}
		hd.Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		rw.WriteRawJSBody(js.Null())
		return err
	}
	rw.WriteRawJSBody(body)
	return nil
}

// get starts reading bytes [off, off+n) of this version of the object and
// returns the body stream.
func (f *r2File) get(off, n int64) (js.Value, error) {
	opt := js.Global().Get("Object").New()
	if off != 0 || n != f.size {
		rg := js.Global().Get("Object").New()
		rg.Set("offset", off)
		rg.Set("length", n)
		opt.Set("range", rg)
	}
	cond := js.Global().Get("Object").New()
	cond.Set("etagMatches", f.etag)
	opt.Set("onlyIf", cond)
	obj, err := await(f.b.v.Call("get", f.key, opt))
	if err != nil {
		return js.Value{}, fmt.Errorf("R2 get %s: %w", f.key, err)
	}
	if obj.IsNull() || obj.IsUndefined() {
		return js.Value{}, fmt.Errorf("R2 get %s: the object is gone", f.key)
	}
	body := obj.Get("body")
	if body.IsUndefined() || body.IsNull() {
		return js.Value{}, fmt.Errorf("R2 get %s: the object changed since it was looked up", f.key)
	}
	return body, nil
}

// await waits for a JavaScript promise. It must run on a goroutine of its
// own (the Handler's), never in a JavaScript callback.
func await(p js.Value) (js.Value, error) {
	done := make(chan js.Value, 1)
	fail := make(chan js.Value, 1)
	then := js.FuncOf(func(_ js.Value, args []js.Value) any {
		done <- arg0(args)
		return nil
	})
	defer then.Release()
	catch := js.FuncOf(func(_ js.Value, args []js.Value) any {
		fail <- arg0(args)
		return nil
	})
	defer catch.Release()
	p.Call("then", then, catch)
	select {
	case v := <-done:
		return v, nil
	case e := <-fail:
		if e.Type() == js.TypeObject {
			return js.Value{}, errors.New(e.Call("toString").String())
		}
		return js.Value{}, errors.New(e.String())
	}
}

func arg0(args []js.Value) js.Value {
	if len(args) == 0 {
		return js.Undefined()
	}
	return args[0]
}
