//go:build js && wasm

package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"syscall/js"
	"time"

	"github.com/mamba2web/mamba2/model"
)

// generateOptionNames are the options generate reads, as web/options.js
// names them (its entries marked go); info() reports them so a test can
// hold the two lists equal.
var generateOptionNames = []string{"maxNewTokens", "temperature", "topK", "topP", "minP",
	"repetitionPenalty", "presencePenalty", "frequencyPenalty", "seed", "stop", "stopIds", "state", "adapter"}

// generate(handle, prompt, {generateOptionNames..., job, onText}) →
// Promise<{text, ids, reason, seed, promptTokens, newTokens, seconds,
// firstTokenSeconds, tokensPerSecond, statePos, stateExtraIds}>.
//
// prompt is text (needs the model's tokenizer) or an array of token ids.
// onText(piece, newTokens) receives the text as it becomes final. An aborted
// generation resolves with what it produced and reason "aborted".
//
// Without state, generations run through the session's scheduler
// (batch.go): calls made while others run decode together with them, each
// with its own options, callbacks and job, and each gets exactly what it
// would alone. prompt may also be an array of prompts (each text or an
// array of ids): they run together with the same options (each its own
// Sampler: with a seed, each as a call with that seed would), and the
// Promise resolves to an array of results in their order; onText then
// gets the prompt's index as a third argument, and the job aborts them all.
// Without a seed each prompt draws its own.
//
// state (a handle from prefill or restoreState) is continued instead of a
// new state, so the prompt is only what follows it; afterwards it holds the
// prompt and every id of the result (see continueState), statePos
// positions in all. Such a call runs alone, as every call that keeps a
// state does (a state must be left exactly as the result says, which the
// scheduler would make every other slot wait for at each step).
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
		if err := s.m.CheckAdapter(o.Adapter); err != nil {
			return nil, coded(codeBadArg, err)
		}
		ref, err := optState(opts, s)
		if err != nil {
			return nil, err
		}
		prompts, batch := promptsFromJS(prompt)
		if batch && ref != nil {
			return nil, codef(codeBadArg, "option state continues one sequence: give one prompt, not an array of %d", len(prompts))
		}
		all := make([][]int, len(prompts))
		for i, p := range prompts {
			if all[i], err = s.promptIDs(p); err != nil {
				if batch {
					return nil, codef(codeOf(err), "prompt %d: %v", i, err)
				}
				return nil, err
			}
		}
		if len(o.StopStrings) > 0 && s.tok == nil {
			return nil, codef(codeBadArg, "stop strings need the model's tokenizer.json")
		}
		onText := optFunc(opts, "onText")
		if ref != nil {
			return s.exclusive(ctx, done, func() (any, error) {
				if ref.closed {
					return nil, codef(codeDisposed, "the state has been closed (State.close, or its model was disposed)")
				}
				st := ref.st
				run, err := s.generate(ctx, s.m.Generate, all[0], o, onText, st)
				if err != nil {
					return nil, err
				}
				out := run.js()
				out["statePos"] = st.Pos
				out["stateExtraIds"] = intsToJS(run.extra)
				return out, nil
			})
		}
		seed, _ := optNumber(opts, "seed", -1) // checked by genOptions; -1 draws one
		return s.batched(ctx, done, all, o, onText, batch, seed != -1)
	})
}

// batched runs prompts through the scheduler together, each in its own
// goroutine, and returns their results (one, or an array with batch).
// Without seeded, each prompt after the first draws its own seed.
func (s *session) batched(ctx context.Context, done func(), prompts [][]int, o model.Options, onText js.Value, batch, seeded bool) (any, error) {
	stop := context.AfterFunc(s.ctx, done)
	defer stop()
	sched, err := s.enterBatch(ctx)
	if err != nil {
		return nil, err
	}
	defer s.leaveBatch()
	outs := make([]any, len(prompts))
	errs := make([]error, len(prompts))
	var wg sync.WaitGroup
	for i, ids := range prompts {
		oi := o
		if i > 0 && !seeded {
			oi.Seed = rand.Uint64() >> 11
		}
		var index []any // onText's third argument, in a batch
		if batch {
			index = []any{i}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = safely(func() (any, error) {
				run, err := s.generate(ctx, sched.Generate, ids, oi, onText, nil, index...)
				if err != nil {
					return nil, err
				}
				return run.js(), nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			if batch {
				return nil, codef(codeOf(err), "prompt %d: %v", i, err)
			}
			return nil, err
		}
	}
	if !batch {
		return outs[0], nil
	}
	return outs, nil
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
		if v, set := optValue(opts, "adapter"); set {
			if v.Type() != js.TypeString {
				return o, codef(codeBadArg, "option adapter must be the name of a loaded adapter (loadAdapter), got %s", jsDescribe(v))
			}
			o.Adapter = v.String()
		}
	}
	if err := o.Validate(); err != nil {
		return o, coded(codeBadArg, err)
	}
	return o, nil
}

// acquire waits for the model to be free of every other call, batched
// generations included (or for ctx to end), and closes the scheduler, so
// the caller alone drives the backend until release.
func (s *session) acquire(ctx context.Context) error {
	if err := s.gate.enter(ctx, true); err != nil {
		return codef(codeAborted, "aborted before it started")
	}
	mu.Lock()
	closed := s.closed
	mu.Unlock()
	if closed {
		s.gate.leave(true)
		return codef(codeDisposed, "the model has been disposed")
	}
	s.stopBatch()
	return nil
}

func (s *session) release() { s.gate.leave(true) }

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

// generator is Model.Generate or Scheduler.Generate: the same contract.
type generator func(ctx context.Context, prompt []int, o model.Options) (model.Result, error)

// generate runs one generation with gen on st (a new state when nil;
// continued otherwise, and left holding the prompt and res.IDs:
// continueState; then gen must be s.m.Generate, run holding the session).
// onText gets (piece, tokens so far, extra...).
func (s *session) generate(ctx context.Context, gen generator, ids []int, o model.Options, onText js.Value, st *model.State, extra ...any) (*genRun, error) {
	r := &genRun{seed: o.Seed, promptTokens: len(ids), start: time.Now()}
	var chosen []int // every id chosen, also past a stop string's cut
	if s.tok != nil {
		o.Decode = s.tok.Decode
	}
	o.OnToken = func(id int) error {
		r.n++
		chosen = append(chosen, id)
		if r.n == 1 {
			r.first = time.Now()
		}
		return nil
	}
	if onText.Type() == js.TypeFunction && s.tok != nil {
		o.OnText = func(piece string) error {
			onText.Invoke(append([]any{piece, r.n}, extra...)...)
			return nil
		}
	}
	pos0 := 0
	if st != nil {
		o.State = st
		pos0 = st.Pos
	}
	res, err := gen(ctx, ids, o)
	if gerr := s.gpuAfter(); gerr != nil {
		return nil, gerr // the text is not to be trusted
	}
	r.res, r.reason = res, res.Reason
	if err != nil {
		if errors.Is(err, model.ErrDeviceLost) {
			return nil, codef(codeLost, "%v; load the model again: its weights come from the browser cache", err)
		}
		if errors.Is(err, model.ErrSchedulerClosed) || (ctx.Err() != nil && r.n == 0 && s.ctx.Err() != nil) {
			// Dispose ended it before its first token (waiting for a
			// slot, as a call queued behind another used to wait).
			return nil, codef(codeDisposed, "the model has been disposed")
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
		// Wait for the running generations (and close the scheduler).
		s.gate.enter(context.Background(), true)
		defer s.gate.leave(true)
		s.stopBatch()
		closeStatesOf(s) // their tensors go with the backend
		return nil, s.m.Backend.Close()
	})
}
