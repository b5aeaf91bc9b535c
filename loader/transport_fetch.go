//go:build js

package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall/js"
)

// FetchTransport is the Transport of js/wasm builds: the host's fetch
// (a browser's, or Node's), without net/http. Each request has an
// AbortController tied to its context, which aborts the request and a
// body being read when the context ends; bodies are read chunk by chunk
// from their ReadableStream, never whole. Redirects are followed by the
// browser, which drops Authorization when one leaves the origin (other
// headers of HTTPOptions.Header are not dropped there). Requests are
// cross-origin capable (mode "cors"; the server must allow them and
// expose Content-Length, Content-Range and ETag) and bypass the browser's
// HTTP cache (cache "no-store"): model files are kept in a Store instead,
// and gigabytes of weights in both would be stored twice.
func FetchTransport() Transport { return fetchTransport{} }

func defaultTransport(HTTPOptions) Transport { return fetchTransport{} }

type fetchTransport struct{}

func (fetchTransport) RoundTrip(ctx context.Context, r *Request) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	ctrl := js.Global().Get("AbortController").New()
	stop := context.AfterFunc(ctx, func() { ctrl.Call("abort") })
	hdr := map[string]any{}
	for k, v := range r.Header {
		hdr[k] = v
	}
	init := map[string]any{
		"method": r.Method, "headers": hdr, "signal": ctrl.Get("signal"),
		"redirect": "follow", "mode": "cors", "cache": "no-store",
	}
	resp, err := jsAwait(js.Global().Call("fetch", r.URL, init))
	if err != nil {
		stop()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	h := Header{}
	each := js.FuncOf(func(_ js.Value, args []js.Value) any {
		if len(args) >= 2 {
			h[strings.ToLower(args[1].String())] = args[0].String()
		}
		return nil
	})
	resp.Get("headers").Call("forEach", each)
	each.Release()
	out := &Response{Status: resp.Get("status").Int(), Header: h, ContentLength: -1}
	if n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		out.ContentLength = n
	}
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		out.Encoded = true
	}
	b := &fetchBody{ctx: ctx, ctrl: ctrl, stop: stop}
	if body := resp.Get("body"); body.Truthy() {
		b.reader = body.Call("getReader")
	}
	out.Body = b
	return out, nil
}

// fetchBody reads a response body from its stream's reader.
type fetchBody struct {
	ctx    context.Context
	ctrl   js.Value
	stop   func() bool
	reader js.Value // undefined for a body-less answer (HEAD, 304)
	chunk  js.Value // a Uint8Array partly read
	at     int      // bytes of chunk already read
	err    error
	closed bool
}

func (b *fetchBody) Read(p []byte) (int, error) {
	if b.closed {
		return 0, errors.New("read of a closed body")
	}
	if b.err != nil {
		return 0, b.err
	}
	if !b.reader.Truthy() {
		return 0, io.EOF
	}
	for !b.chunk.Truthy() || b.at >= b.chunk.Length() {
		v, err := jsAwait(b.reader.Call("read"))
		if err != nil {
			if b.ctx.Err() != nil {
				err = context.Cause(b.ctx)
			} else {
				err = fmt.Errorf("reading the body: %w", err)
			}
			b.err = err
			return 0, err
		}
		if v.Get("done").Bool() {
			b.err = io.EOF
			return 0, io.EOF
		}
		b.chunk, b.at = v.Get("value"), 0
	}
	n := min(len(p), b.chunk.Length()-b.at)
	js.CopyBytesToGo(p[:n], b.chunk.Call("subarray", b.at, b.at+n))
	b.at += n
	return n, nil
}

func (b *fetchBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.stop()
	b.ctrl.Call("abort") // ends the download of what was not read
	b.chunk = js.Undefined()
	return nil
}

// jsThrown is an exception or a rejection value from JavaScript.
type jsThrown struct{ name, msg string }

func (e *jsThrown) Error() string {
	if e.name != "" && !strings.HasPrefix(e.msg, e.name) {
		return e.name + ": " + e.msg
	}
	return e.msg
}

// jsErrorName is the name of a JavaScript exception in err ("" if none).
func jsErrorName(err error) string {
	var t *jsThrown
	if errors.As(err, &t) {
		return t.name
	}
	return ""
}

func errorFromJS(v js.Value) error {
	if v.Type() == js.TypeObject {
		name, msg := v.Get("name"), v.Get("message")
		if msg.Type() == js.TypeString {
			n := ""
			if name.Type() == js.TypeString {
				n = name.String()
			}
			return &jsThrown{name: n, msg: msg.String()}
		}
	}
	return &jsThrown{msg: js.Global().Get("String").Invoke(v).String()}
}

// jsAwait blocks the calling goroutine until the promise settles. It must
// not be called from a js.FuncOf callback, only from goroutines.
func jsAwait(p js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	onOK := js.FuncOf(func(_ js.Value, args []js.Value) any {
		v := js.Undefined()
		if len(args) > 0 {
			v = args[0]
		}
		ch <- result{v: v}
		return nil
	})
	onErr := js.FuncOf(func(_ js.Value, args []js.Value) any {
		v := js.Undefined()
		if len(args) > 0 {
			v = args[0]
		}
		ch <- result{err: errorFromJS(v)}
		return nil
	})
	defer onOK.Release()
	defer onErr.Release()
	p.Call("then", onOK, onErr)
	r := <-ch
	return r.v, r.err
}
