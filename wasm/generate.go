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
	"repetitionPenalty", "presencePenalty", "frequencyPenalty", "seed", "stop", "stopIds"}

// generate(handle, prompt, {generateOptionNames..., job, onText}) →
// Promise<{text, ids, reason, seed, promptTokens, newTokens, seconds,
// firstTokenSeconds, tokensPerSecond}>.
//
// prompt is text (needs the model's tokenizer) or an array of token ids.
// onText(piece, newTokens) receives the text as it becomes final. An aborted
// generation resolves with what it produced and reason "aborted".
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
		var ids []int
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
		for _, id := range ids {
			if id < 0 || id >= s.m.Config.VocabSize {
				return nil, codef(codeBadArg, "token id %d is outside the vocabulary of %d", id, s.m.Config.VocabSize)
			}
		}
		if len(o.StopStrings) > 0 && s.tok == nil {
			return nil, codef(codeBadArg, "stop strings need the model's tokenizer.json")
		}
		stop := context.AfterFunc(s.ctx, done) // dispose ends this generation
		defer stop()
		if err := s.acquire(ctx); err != nil {
			return nil, err
		}
		defer s.release()
		return s.generate(ctx, ids, o, optFunc(opts, "onText"))
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

func (s *session) generate(ctx context.Context, ids []int, o model.Options, onText js.Value) (any, error) {
	start := time.Now()
	var first time.Time
	n := 0
	lastYield := start
	if s.tok != nil {
		o.Decode = s.tok.Decode
	}
	o.OnToken = func(int) error {
		n++
		now := time.Now()
		if n == 1 {
			first = now
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
			onText.Invoke(piece, n)
			return nil
		}
	}
	res, err := s.m.Generate(ctx, ids, o)
	if s.device == "webgpu" {
		if gerr := gpuCheck(); gerr != nil {
			return nil, gerr // the text is not to be trusted
		}
	}
	reason := res.Reason
	if err != nil {
		if errors.Is(err, model.ErrDeviceLost) {
			return nil, codef(codeLost, "%v; load the model again: its weights come from the browser cache", err)
		}
		if ctx.Err() == nil {
			return nil, coded(codeInternal, err)
		}
		reason = "aborted"
	}
	end := time.Now()
	out := map[string]any{
		"text":              res.Text,
		"ids":               intsToJS(res.IDs),
		"reason":            reason,
		"seed":              float64(o.Seed),
		"promptTokens":      len(ids),
		"newTokens":         len(res.IDs),
		"seconds":           end.Sub(start).Seconds(),
		"firstTokenSeconds": 0.0,
		"tokensPerSecond":   0.0,
	}
	if n > 0 {
		out["firstTokenSeconds"] = first.Sub(start).Seconds()
		if n > 1 && end.After(first) {
			// Decoding speed: tokens after the first over the time they took.
			out["tokensPerSecond"] = float64(n-1) / end.Sub(first).Seconds()
		} else {
			out["tokensPerSecond"] = float64(n) / end.Sub(start).Seconds()
		}
	}
	return out, nil
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
		return nil, s.m.Backend.Close()
	})
}
