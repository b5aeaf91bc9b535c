//go:build js && wasm

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"syscall/js"
	"time"

	"github.com/mamba2web/mamba2/model"
)

// A state is a model.State of one sequence that JavaScript holds by
// handle, so a prompt prefilled once can be continued many times, saved
// (State.Save's bytes) and restored in a later visit. It belongs to the
// session that made it: its tensors live on that session's backend, so
// every use holds the session alone (exclusive), and disposing the model
// closes it.
type stateRef struct {
	s      *session
	st     *model.State
	closed bool
}

var states = map[int]*stateRef{} // by handle; guarded by mu

// newStateRef registers st under a new handle.
func newStateRef(s *session, st *model.State) int {
	mu.Lock()
	defer mu.Unlock()
	h := nextID
	nextID++
	states[h] = &stateRef{s: s, st: st}
	return h
}

// getState finds the state with handle v, which must belong to s: a state
// holds tensors of one backend and is meaningless to another model.
func getState(v js.Value, s *session) (*stateRef, error) {
	if v.Type() != js.TypeNumber {
		return nil, codef(codeBadArg, "the state handle must be a number")
	}
	mu.Lock()
	defer mu.Unlock()
	r, ok := states[v.Int()]
	switch {
	case !ok || r.closed:
		return nil, codef(codeDisposed, "the state has been closed (State.close, or its model was disposed)")
	case r.s != s:
		return nil, codef(codeBadArg, "the state belongs to another model: states continue only the model that made them (save it and restore it into this one, if it is of the same architecture)")
	}
	return r, nil
}

// closeStatesOf marks every state and chat of s closed, for dispose: the
// backend that held their tensors is being closed.
func closeStatesOf(s *session) {
	mu.Lock()
	defer mu.Unlock()
	for h, r := range states {
		if r.s == s {
			r.closed = true
			delete(states, h)
		}
	}
	for h, c := range chats {
		if c.s == s {
			c.closed = true
			delete(chats, h)
		}
	}
}

// exclusive runs fn holding s alone (no batched generation runs meanwhile:
// acquire), in the order calls arrive; disposing the model cancels ctx
// (done ends the job).
func (s *session) exclusive(ctx context.Context, done func(), fn func() (any, error)) (any, error) {
	stop := context.AfterFunc(s.ctx, done)
	defer stop()
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	return fn()
}

// promptIDs reads a prompt (text, which needs the tokenizer, or token ids)
// and checks it is not empty and within the vocabulary.
func (s *session) promptIDs(prompt js.Value) ([]int, error) {
	var ids []int
	var err error
	if prompt.Type() == js.TypeString {
		if s.tok == nil {
			return nil, codef(codeBadArg, "this model has no tokenizer.json: give the prompt as token ids")
		}
		if ids, err = s.tok.EncodeChecked(prompt.String()); err != nil {
			return nil, coded(codeBadModel, err)
		}
	} else if ids, err = intsFromJS(prompt, "prompt"); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, codef(codeBadArg, "the prompt is empty")
	}
	if err := s.checkIDs(ids); err != nil {
		return nil, err
	}
	return ids, nil
}

func (s *session) checkIDs(ids []int) error {
	for _, id := range ids {
		if id < 0 || id >= s.m.Config.VocabSize {
			return codef(codeBadArg, "token id %d is outside the vocabulary of %d", id, s.m.Config.VocabSize)
		}
	}
	return nil
}

func int32s(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, v := range ids {
		out[i] = int32(v)
	}
	return out
}

// optState reads opts.state, a state handle of s; nil when absent.
func optState(opts js.Value, s *session) (*stateRef, error) {
	if !opts.Truthy() {
		return nil, nil
	}
	v, set := optValue(opts, "state")
	if !set {
		return nil, nil
	}
	return getState(v, s)
}

// prefill(handle, prompt, {state, job}) → Promise<{state, pos,
// promptTokens, seconds}>: runs the prompt through a new state (or the
// given one, continuing it) without generating, and returns the state's
// handle and how many positions it now holds. Prefilling a long prompt
// once and continuing it many times (generate's state option) saves its
// prefill every time; its saved bytes let a later visit skip it too.
func jsPrefill(_ js.Value, args []js.Value) any {
	hv, prompt, opts := argOr(args, 0), argOr(args, 1), argOr(args, 2)
	ctx, done, err := startJob(opts)
	if err != nil {
		return promise(func() (any, error) { return nil, err })
	}
	return promise(func() (any, error) {
		defer done()
		s, err := getSession(hv)
		if err != nil {
			return nil, err
		}
		ref, err := optState(opts, s)
		if err != nil {
			return nil, err
		}
		ids, err := s.promptIDs(prompt)
		if err != nil {
			return nil, err
		}
		return s.exclusive(ctx, done, func() (any, error) {
			if ref != nil && ref.closed { // closed while this call waited
				return nil, codef(codeDisposed, "the state has been closed (State.close, or its model was disposed)")
			}
			if ctx.Err() != nil {
				return nil, codef(codeAborted, "prefill was aborted")
			}
			start := time.Now()
			var st *model.State
			if ref != nil {
				st = ref.st
			} else {
				st = s.m.NewState(1)
			}
			if _, err := st.Forward(int32s(ids), nil); err != nil {
				if ref == nil {
					st.Close()
				}
				return nil, s.runError(err)
			}
			if err := s.gpuAfter(); err != nil {
				if ref == nil {
					st.Close()
				}
				return nil, err
			}
			var h int
			if ref != nil {
				h = opts.Get("state").Int()
			} else {
				h = newStateRef(s, st)
			}
			return map[string]any{
				"state":        h,
				"pos":          st.Pos,
				"promptTokens": len(ids),
				"seconds":      time.Since(start).Seconds(),
			}, nil
		})
	})
}

// runError gives a failure of the model's computation its code.
func (s *session) runError(err error) error {
	if codeOf(err) != "" {
		return err
	}
	if errors.Is(err, model.ErrDeviceLost) {
		return codef(codeLost, "%v; load the model again: its weights come from the browser cache", err)
	}
	return coded(codeInternal, err)
}

// gpuAfter reports WebGPU errors caught during the work just done (see
// gpuCheck); on the CPU there are none.
func (s *session) gpuAfter() error {
	if s.device == "webgpu" {
		return gpuCheck()
	}
	return nil
}

// saveState(handle, state) → Promise<Uint8Array>: the state's bytes
// (model.State.Save: a versioned header naming the model's architecture by
// its config hash, then every layer's conv and SSM state as float32).
func jsSaveState(_ js.Value, args []js.Value) any {
	hv, sv := argOr(args, 0), argOr(args, 1)
	return promise(func() (any, error) {
		s, err := getSession(hv)
		if err != nil {
			return nil, err
		}
		ref, err := getState(sv, s)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return s.exclusive(ctx, cancel, func() (any, error) {
			if ref.closed {
				return nil, codef(codeDisposed, "the state has been closed (State.close, or its model was disposed)")
			}
			data, err := ref.st.Save()
			if err != nil {
				return nil, s.runError(err)
			}
			return bytesToJS(data), nil
		})
	})
}

// restoreState(handle, bytes) → Promise<{state, pos}>: a new state holding
// saved bytes (saveState's). Bytes that are not a saved state, of another
// format version, of another model (its config hash) or cut short are a
// bad-state error saying which.
func jsRestoreState(_ js.Value, args []js.Value) any {
	hv, bv := argOr(args, 0), argOr(args, 1)
	return promise(func() (any, error) {
		s, err := getSession(hv)
		if err != nil {
			return nil, err
		}
		data, err := bytesFromJS(bv, "the saved state")
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return s.exclusive(ctx, cancel, func() (any, error) {
			st := s.m.NewState(1)
			if err := st.Restore(data); err != nil {
				st.Close()
				return nil, coded(codeBadState, err)
			}
			return map[string]any{"state": newStateRef(s, st), "pos": st.Pos}, nil
		})
	})
}

// closeState(handle, state) → Promise<void>: frees the state's tensors.
// Closing twice, or after the model was disposed, is harmless.
func jsCloseState(_ js.Value, args []js.Value) any {
	hv, sv := argOr(args, 0), argOr(args, 1)
	return promise(func() (any, error) {
		s, err := getSession(hv)
		if err != nil {
			if codeOf(err) == codeDisposed {
				return nil, nil // dispose closed it
			}
			return nil, err
		}
		ref, err := getState(sv, s)
		if err != nil {
			if codeOf(err) == codeDisposed {
				return nil, nil
			}
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return s.exclusive(ctx, cancel, func() (any, error) {
			mu.Lock()
			ref.closed = true
			delete(states, sv.Int())
			mu.Unlock()
			return nil, ref.st.Close()
		})
	})
}

// hiddenStates(handle, prompt, {layers, mean, state, job}) →
// Promise<{layers, shape, hidden, tokens}>: transformers'
// output_hidden_states (model.State.HiddenStates): index k < num layers is
// the residual stream after layer k, index num layers the final norm's
// output. layers is 'all', 'last' (the default: the final norm's output)
// or an index; hidden holds one Float32Array per index in layers, each
// [tokens, hiddenSize] row-major, or [hiddenSize] with mean (the average
// over the positions: one embedding vector). With state the prompt
// continues that state (which then holds it), else a new one is used.
func jsHiddenStates(_ js.Value, args []js.Value) any {
	hv, prompt, opts := argOr(args, 0), argOr(args, 1), argOr(args, 2)
	ctx, done, err := startJob(opts)
	if err != nil {
		return promise(func() (any, error) { return nil, err })
	}
	return promise(func() (any, error) {
		defer done()
		s, err := getSession(hv)
		if err != nil {
			return nil, err
		}
		pick, err := layersOption(opts, s.m.Config.Layers)
		if err != nil {
			return nil, err
		}
		mean := false
		if v, set := optValue(opts, "mean"); set {
			if v.Type() != js.TypeBoolean {
				return nil, codef(codeBadArg, "option mean must be a boolean, got %s", jsDescribe(v))
			}
			mean = v.Bool()
		}
		ref, err := optState(opts, s)
		if err != nil {
			return nil, err
		}
		ids, err := s.promptIDs(prompt)
		if err != nil {
			return nil, err
		}
		return s.exclusive(ctx, done, func() (any, error) {
			if ctx.Err() != nil {
				return nil, codef(codeAborted, "hiddenStates was aborted")
			}
			var st *model.State
			if ref != nil {
				if ref.closed {
					return nil, codef(codeDisposed, "the state has been closed (State.close, or its model was disposed)")
				}
				st = ref.st
			} else {
				st = s.m.NewState(1)
				defer st.Close()
			}
			hs, err := st.HiddenStates(int32s(ids), nil)
			if err != nil {
				return nil, s.runError(err)
			}
			if err := s.gpuAfter(); err != nil {
				return nil, err
			}
			D := s.m.Config.Hidden
			out := make([]any, len(pick))
			layers := make([]any, len(pick))
			for i, k := range pick {
				layers[i] = k
				if mean {
					out[i] = float32sToJS(model.MeanPool(hs[k], nil, 1, D)[0])
				} else {
					out[i] = float32sToJS(hs[k])
				}
			}
			shape := []any{len(ids), D}
			if mean {
				shape = []any{D}
			}
			return map[string]any{"layers": layers, "shape": shape, "hidden": out, "tokens": len(ids)}, nil
		})
	})
}

// layersOption reads hiddenStates' layers: 'all' (0..L), 'last' (L, the
// final norm's output; the default) or an index from 0 to L, as the CLI's
// `mamba2 hidden --layers`.
func layersOption(opts js.Value, L int) ([]int, error) {
	v, set := optValue(opts, "layers")
	if !set {
		return []int{L}, nil
	}
	bad := func() ([]int, error) {
		return nil, codef(codeBadArg, "option layers must be 'all', 'last' or an index from 0 to %d (%d is the final norm's output), got %s", L, L, jsDescribe(v))
	}
	switch v.Type() {
	case js.TypeString:
		switch v.String() {
		case "all":
			out := make([]int, L+1)
			for k := range out {
				out[k] = k
			}
			return out, nil
		case "last":
			return []int{L}, nil
		}
		return bad()
	case js.TypeNumber:
		f := v.Float()
		if f != math.Trunc(f) || f < 0 || f > float64(L) {
			return bad()
		}
		return []int{int(f)}, nil
	}
	return bad()
}

// float32sToJS copies v into a new Float32Array (little-endian, as wasm
// and every browser's typed arrays are).
func float32sToJS(v []float32) js.Value {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	u8 := bytesToJS(b)
	return js.Global().Get("Float32Array").New(u8.Get("buffer"), 0, len(v))
}

func bytesToJS(b []byte) js.Value {
	u8 := js.Global().Get("Uint8Array").New(len(b))
	js.CopyBytesToJS(u8, b)
	return u8
}

// bytesFromJS reads a Uint8Array or an ArrayBuffer.
func bytesFromJS(v js.Value, what string) ([]byte, error) {
	u8 := js.Global().Get("Uint8Array")
	arr := js.Undefined()
	if v.Type() == js.TypeObject {
		if v.InstanceOf(u8) {
			arr = v
		} else if v.InstanceOf(js.Global().Get("ArrayBuffer")) {
			arr = u8.New(v)
		}
	}
	if arr.Type() != js.TypeObject {
		return nil, codef(codeBadArg, "%s must be a Uint8Array or an ArrayBuffer, got %s", what, jsDescribe(v))
	}
	b := make([]byte, arr.Length())
	js.CopyBytesToGo(b, arr)
	return b, nil
}
