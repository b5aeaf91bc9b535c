//go:build js && wasm

package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"syscall/js"
	"time"

	"github.com/mamba2web/mamba2/model"
)

// yieldEvery is how long generation may run before it lets the worker's
// event loop run (to receive an abort), when the backend itself never waits
// (the CPU backend computes without pause).
const yieldEvery = 25 * time.Millisecond

// generateOptionNames are the options generate reads, as web/options.js
// names them (its entries marked go); info() reports them so a test can
// hold the two lists equal.
var generateOptionNames = []string{"maxNewTokens", "temperature", "topK", "topP", "minP",
	"repetitionPenalty", "presencePenalty", "frequencyPenalty", "seed", "stop", "stopIds", "state"}

// generate(handle, prompt, {generateOptionNames..., job, onText}) →
// Promise<{text, ids, reason, seed, promptTokens, newTokens, seconds,
// firstTokenSeconds, tokensPerSecond, statePos, stateExtraIds}>.
//
// prompt is text (needs the model's tokenizer) or an array of token ids.
// onText(piece, newTokens) receives the text as it becomes final. An aborted
// generation resolves with what it produced and reason "aborted".
//
// state (a handle from prefill or restoreState) is continued instead of a
// new state, so the prompt is only what follows it; afterwards it holds the
// prompt and every id of the result (see continueState), statePos
// positions in all.
func jsGenerate(_ js.Value, args []js.Value) any {
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
		o, err := genOptions(opts)
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
		if len(o.StopStrings) > 0 && s.tok == nil {
			return nil, codef(codeBadArg, "stop strings need the model's tokenizer.json")
		}
		return s.exclusive(ctx, done, func() (any, error) {
			var st *model.State
			if ref != nil {
				if ref.closed {
					return nil, codef(codeDisposed, "the state has been closed (State.close, or its model was disposed)")
				}
				st = ref.st
			}
			run, err := s.generate(ctx, ids, o, optFunc(opts, "onText"), st)
			if err != nil {
				return nil, err
			}
			out := run.js()
			if st != nil {
				out["statePos"] = st.Pos
				out["stateExtraIds"] = intsToJS(run.extra)
			}
			return out, nil
		})
	})
}

func genOptions(opts js.Value) (model.Options, error) {
	var o model.Options
	var err error
	if o.MaxNewTokens, err = optInt(opts, "maxNewTokens", 64); err != nil {
		return o, err
	}
	if o.MaxNewTokens <= 0 {
		return o, codef(codeBadArg, "maxNewTokens must be positive, got %d", o.MaxNewTokens)
	}
	if o.Temperature, err = optNumber(opts, "temperature", 0); err != nil {
		return o, err
	}
	if o.TopK, err = optInt(opts, "topK", 0); err != nil {
		return o, err
	}
	if o.TopP, err = optNumber(opts, "topP", 1); err != nil {
		return o, err
	}
	if o.MinP, err = optNumber(opts, "minP", 0); err != nil {
		return o, err
	}
	if o.RepetitionPenalty, err = optNumber(opts, "repetitionPenalty", 1); err != nil {
		return o, err
	}
	if o.PresencePenalty, err = optNumber(opts, "presencePenalty", 0); err != nil {
		return o, err
	}
	if o.FrequencyPenalty, err = optNumber(opts, "frequencyPenalty", 0); err != nil {
		return o, err
	}
	// Without a seed each sampled generation draws one (53 bits, exact in
	// a JavaScript number); the result reports it, so a run can be repeated.
	seed, err := optNumber(opts, "seed", -1)
	if err != nil {
		return o, err
	}
	switch {
	case seed == -1:
		o.Seed = rand.Uint64() >> 11
	case seed < 0 || seed != float64(uint64(seed)):
		return o, codef(codeBadArg, "seed must be a non-negative integer, got %v", seed)
	default:
		o.Seed = uint64(seed)
	}
	if opts.Truthy() {
		if o.StopStrings, err = stringsFromJS(opts.Get("stop"), "stop"); err != nil {
			return o, err
		}
		if v := opts.Get("stopIds"); v.Truthy() {
			if o.StopIDs, err = intsFromJS(v, "stopIds"); err != nil {
				return o, err
			}
		}
	}
	if err := o.Validate(); err != nil {
		return o, coded(codeBadArg, err)
	}
	return o, nil
}

// acquire waits for the model to be free (or for ctx to end).
func (s *session) acquire(ctx context.Context) error {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return codef(codeAborted, "aborted before it started")
	}
	mu.Lock()
	closed := s.closed
	mu.Unlock()
	if closed {
		<-s.lock
		return codef(codeDisposed, "the model has been disposed")
	}
	return nil
}

func (s *session) release() { <-s.lock }

// genRun is one generation: the model's result, the prompt's length, the
// options' seed, timings, and, with a state, what the state holds of it.
type genRun struct {
	res          model.Result
	reason       string
	seed         uint64
	promptTokens int
	start, first time.Time
	end          time.Time
	n            int   // tokens chosen (stop ids excepted)
	extra        []int // ids the state holds past res.IDs (continueState)
}

// generate runs one generation on st (a new state when nil; continued
// otherwise, and left holding the prompt and res.IDs: continueState).
func (s *session) generate(ctx context.Context, ids []int, o model.Options, onText js.Value, st *model.State) (*genRun, error) {
	r := &genRun{seed: o.Seed, promptTokens: len(ids), start: time.Now()}
	lastYield := r.start
	var chosen []int // every id chosen, also past a stop string's cut
	if s.tok != nil {
		o.Decode = s.tok.Decode
	}
	o.OnToken = func(id int) error {
		r.n++
		chosen = append(chosen, id)
		now := time.Now()
		if r.n == 1 {
			r.first = now
		}
		if now.Sub(lastYield) >= yieldEvery {
			// Sleeping hands control back to the event loop, so queued
			// messages (an abort) are delivered; ctx is checked next step.
			time.Sleep(time.Millisecond)
			lastYield = time.Now()
		}
		return nil
	}
	if onText.Type() == js.TypeFunction && s.tok != nil {
		o.OnText = func(piece string) error {
			onText.Invoke(piece, r.n)
			return nil
		}
	}
	pos0 := 0
	if st != nil {
		o.State = st
		pos0 = st.Pos
	}
	res, err := s.m.Generate(ctx, ids, o)
	if gerr := s.gpuAfter(); gerr != nil {
		return nil, gerr // the text is not to be trusted
	}
	r.res, r.reason = res, res.Reason
	if err != nil {
		if errors.Is(err, model.ErrDeviceLost) {
			return nil, codef(codeLost, "%v; load the model again: its weights come from the browser cache", err)
		}
		if ctx.Err() == nil {
			return nil, coded(codeInternal, err)
		}
		r.reason = "aborted"
	}
	if st != nil {
		if r.extra, err = continueState(st, st.Pos-pos0-len(ids), chosen, res.IDs); err != nil {
			return nil, s.runError(err)
		}
	}
	r.end = time.Now()
	return r, nil
}

// continueState leaves a state that model.Generate continued holding the
// prompt and every id of the result, so a later call can go on from the
// result as from a prompt. Generate feeds back each chosen token but the
// last (it never needs its logits), so the last id of the result is fed
// here (one step). After a stop string the state may instead hold ids past
// the result's (the tokens up to the one that completed it, which the
// result cuts off); those are returned, for the caller to account for
// (a chat matches them against its next turn). fed is how many chosen ids
// the state consumed.
func continueState(st *model.State, fed int, chosen, ids []int) (extra []int, err error) {
	if fed >= len(ids) {
		return chosen[len(ids):fed], nil
	}
	if _, err := st.Forward(int32s(ids[fed:]), nil); err != nil {
		return nil, err
	}
	return []int{}, nil
}

// js is the generation's result for JavaScript.
func (r *genRun) js() map[string]any {
	out := map[string]any{
		"text":              r.res.Text,
		"ids":               intsToJS(r.res.IDs),
		"reason":            r.reason,
		"seed":              float64(r.seed),
		"promptTokens":      r.promptTokens,
		"newTokens":         len(r.res.IDs),
		"seconds":           r.end.Sub(r.start).Seconds(),
		"firstTokenSeconds": 0.0,
		"tokensPerSecond":   0.0,
	}
	if n := r.n; n > 0 {
		out["firstTokenSeconds"] = r.first.Sub(r.start).Seconds()
		if n > 1 && r.end.After(r.first) {
			// Decoding speed: tokens after the first over the time they took.
			out["tokensPerSecond"] = float64(n-1) / r.end.Sub(r.first).Seconds()
		} else {
			out["tokensPerSecond"] = float64(n) / r.end.Sub(r.start).Seconds()
		}
	}
	return out
}

// encode(handle, text) → Promise<number[]>.
func jsEncode(_ js.Value, args []js.Value) any {
	hv, text := argOr(args, 0), argOr(args, 1)
	return promise(func() (any, error) {
		s, err := getSession(hv)
		if err != nil {
			return nil, err
		}
		if s.tok == nil {
			return nil, codef(codeBadArg, "this model has no tokenizer.json")
		}
		if text.Type() != js.TypeString {
			return nil, codef(codeBadArg, "encode wants a string")
		}
		ids, err := s.tok.EncodeChecked(text.String())
		if err != nil {
			return nil, coded(codeBadModel, err)
		}
		return intsToJS(ids), nil
	})
}

// decode(handle, ids) → Promise<string>.
func jsDecode(_ js.Value, args []js.Value) any {
	hv, idv := argOr(args, 0), argOr(args, 1)
	return promise(func() (any, error) {
		s, err := getSession(hv)
		if err != nil {
			return nil, err
		}
		if s.tok == nil {
			return nil, codef(codeBadArg, "this model has no tokenizer.json")
		}
		ids, err := intsFromJS(idv, "ids")
		if err != nil {
			return nil, err
		}
		text, err := s.tok.DecodeChecked(ids)
		if err != nil {
			return nil, coded(codeBadArg, err)
		}
		return text, nil
	})
}

// dispose(handle) → Promise<void>: cancels the model's running and queued
// generations, waits for them, and frees its backend.
func jsDispose(_ js.Value, args []js.Value) any {
	hv := argOr(args, 0)
	return promise(func() (any, error) {
		s, err := getSession(hv)
		if err != nil {
			if codeOf(err) == codeDisposed {
				return nil, nil // disposing twice is harmless
			}
			return nil, err
		}
		mu.Lock()
		s.closed = true
		delete(sessions, hv.Int())
		mu.Unlock()
		s.cancel()
		s.lock <- struct{}{} // wait for the running generation
		defer func() { <-s.lock }()
		closeStatesOf(s) // their tensors go with the backend
		return nil, s.m.Backend.Close()
	})
}
