//go:build js && wasm

package main

import (
	"errors"
	"fmt"
	"syscall/js"
)

// Error codes carried to JavaScript as Error.code, so the page can explain a
// failure in plain words without parsing messages.
const (
	codeBadURL   = "bad-url"      // the model URL cannot be fetched at all
	codeNotFound = "not-found"    // HTTP 404 for a file the model needs
	codeHTTP     = "http"         // another HTTP failure
	codeNoWebGPU = "no-webgpu"    // device 'webgpu' without a usable adapter
	codeTooBig   = "too-big"      // the model does not fit the device
	codeBadModel = "bad-model"    // config, weights or tokenizer rejected
	codeAborted  = "aborted"      // cancelled through abort()
	codeBadArg   = "bad-argument" // a call with meaningless arguments
	codeDisposed = "disposed"     // the model was disposed
	codeLost     = "device-lost"  // the GPU device is gone: load the model again
	codeInternal = "internal"     // a bug: a Go panic
	codeBadState = "bad-state"    // saved state bytes refused: not a state, another version or model, cut short
)

// apiError is an error with a code for JavaScript.
type apiError struct {
	code string
	err  error
}

func (e *apiError) Error() string { return e.err.Error() }
func (e *apiError) Unwrap() error { return e.err }

// coded wraps err with a code unless it already has one.
func coded(code string, err error) error {
	if err == nil {
		return nil
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	return &apiError{code: code, err: err}
}

func codef(code, format string, args ...any) error {
	return &apiError{code: code, err: fmt.Errorf(format, args...)}
}

// codeOf returns the code of err, "" when it has none.
func codeOf(err error) string {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.code
	}
	return ""
}

// jsError turns a Go error into a JavaScript Error with name "Mamba2Error"
// and a code property.
func jsError(err error) js.Value {
	e := js.Global().Get("Error").New(err.Error())
	e.Set("name", "Mamba2Error")
	code := codeOf(err)
	if code == "" {
		code = codeInternal
	}
	e.Set("code", code)
	return e
}

// promise runs fn in a new goroutine and returns a Promise of its result.
// JavaScript calls into Go synchronously; blocking there (on fetch, on a GPU
// map) would deadlock, so every exported function returns at once and does
// its work here.
func promise(fn func() (any, error)) js.Value {
	executor := js.FuncOf(func(_ js.Value, args []js.Value) any {
		resolve, reject := args[0], args[1]
		go func() {
			v, err := safely(fn)
			if err != nil {
				reject.Invoke(jsError(err))
				return
			}
			resolve.Invoke(v)
		}()
		return nil
	})
	defer executor.Release() // the executor runs inside the constructor
	return js.Global().Get("Promise").New(executor)
}

// safely runs fn, turning a panic into an internal error so that one bad
// call cannot end the whole Go program and every model in it.
func safely(fn func() (any, error)) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = codef(codeInternal, "internal error: %v", r)
		}
	}()
	return fn()
}

// await blocks the calling goroutine until the promise settles. It must not
// be called from a js.FuncOf callback (only from goroutines).
func await(p js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	onOK := js.FuncOf(func(_ js.Value, args []js.Value) any {
		ch <- result{v: arg0(args)}
		return nil
	})
	onErr := js.FuncOf(func(_ js.Value, args []js.Value) any {
		ch <- result{err: errorFromJS(arg0(args))}
		return nil
	})
	defer onOK.Release()
	defer onErr.Release()
	p.Call("then", onOK, onErr)
	r := <-ch
	return r.v, r.err
}

func arg0(args []js.Value) js.Value {
	if len(args) == 0 {
		return js.Undefined()
	}
	return args[0]
}

// jsThrown is an exception or rejection value from JavaScript.
type jsThrown struct {
	name, msg string
}

func (e *jsThrown) Error() string { return e.msg }

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
	return &jsThrown{msg: v.Call("toString").String()}
}

// Reading JavaScript option objects.

func optString(o js.Value, key, def string) string {
	if !o.Truthy() {
		return def
	}
	v := o.Get(key)
	if v.Type() != js.TypeString {
		return def
	}
	return v.String()
}

func optNumber(o js.Value, key string, def float64) (float64, error) {
	if !o.Truthy() {
		return def, nil
	}
	v := o.Get(key)
	switch v.Type() {
	case js.TypeUndefined, js.TypeNull:
		return def, nil
	case js.TypeNumber:
		return v.Float(), nil
	}
	return 0, codef(codeBadArg, "option %s must be a number", key)
}

func optInt(o js.Value, key string, def int) (int, error) {
	f, err := optNumber(o, key, float64(def))
	if err != nil {
		return 0, err
	}
	if f != float64(int(f)) {
		return 0, codef(codeBadArg, "option %s must be an integer, got %v", key, f)
	}
	return int(f), nil
}

func optFunc(o js.Value, key string) js.Value {
	if !o.Truthy() {
		return js.Undefined()
	}
	if v := o.Get(key); v.Type() == js.TypeFunction {
		return v
	}
	return js.Undefined()
}

// intsFromJS reads an array of integers.
func intsFromJS(v js.Value, what string) ([]int, error) {
	if !js.Global().Get("Array").Call("isArray", v).Bool() {
		return nil, codef(codeBadArg, "%s must be an array of token ids", what)
	}
	n := v.Length()
	out := make([]int, n)
	for i := range n {
		e := v.Index(i)
		if e.Type() != js.TypeNumber || e.Float() != float64(e.Int()) {
			return nil, codef(codeBadArg, "%s[%d] is not an integer", what, i)
		}
		out[i] = e.Int()
	}
	return out, nil
}

func stringsFromJS(v js.Value, what string) ([]string, error) {
	switch v.Type() {
	case js.TypeUndefined, js.TypeNull:
		return nil, nil
	case js.TypeString:
		return []string{v.String()}, nil
	}
	if !js.Global().Get("Array").Call("isArray", v).Bool() {
		return nil, codef(codeBadArg, "%s must be a string or an array of strings", what)
	}
	out := make([]string, v.Length())
	for i := range out {
		e := v.Index(i)
		if e.Type() != js.TypeString {
			return nil, codef(codeBadArg, "%s[%d] is not a string", what, i)
		}
		out[i] = e.String()
	}
	return out, nil
}

func intsToJS(ids []int) js.Value {
	a := js.Global().Get("Array").New(len(ids))
	for i, id := range ids {
		a.SetIndex(i, id)
	}
	return a
}
