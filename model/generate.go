package model

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"
)

// Options control Generate.
type Options struct {
	Sampling
	// MaxNewTokens bounds the tokens generated; 0 means 256.
	MaxNewTokens int
	// StopIDs end generation when sampled (not emitted). Nil means the
	// model's EOS; use an empty non-nil slice to never stop on an id.
	StopIDs []int
	// StopStrings end generation when the text contains one; the text up to
	// it is kept. They need Decode.
	StopStrings []string
	// Decode turns ids into text (a tokenizer's Decode); it is needed for
	// OnText and StopStrings.
	Decode func(ids []int) string
	// OnToken, when set, is called with each new id as soon as it is chosen.
	OnToken func(id int) error
	// OnText, when set, receives the text in pieces as it becomes final:
	// never half a UTF-8 character, never a possible start of a stop string.
	OnText func(piece string) error
	// State, when set (a batch of one), is continued instead of a new
	// state: a restored saved state (State.Restore) or a chat's, so the
	// prompt is only what follows it. It is left after the prompt and
	// every generated token but the last (which was never fed back).
	// The repetition penalty counts only this call's prompt.
	State *State
	// Adapter names the attached adapter (Model.AttachAdapter) to run
	// under; "" runs the base model (with what was merged at load). A
	// continued State must have been made under the same adapter, since
	// its memory is the adapted model's.
	Adapter string
}

// Result is what Generate produced.
type Result struct {
	// IDs are the new token ids, without a stop id. After a stop string,
	// they are the tokens of Text: the shortest prefix whose decoding
	// covers it (when the stop string begins inside a token, that token is
	// the last, and only its part before the stop string is in Text).
	IDs    []int
	Text   string // their text, cut before a stop string (needs Decode)
	Reason string // "eos", "stop", "length"
	Timing Timing
}

// Timing says where a generation's time went.
type Timing struct {
	PromptTokens int
	// FirstToken is the time from the call to the first new token chosen:
	// the prompt's prefill and one sampling step.
	FirstToken time.Duration
	// Decode is the time from the first new token to the last: the steps
	// that chose every other token (Steps of them).
	Decode time.Duration
	Steps  int
}

// PrefillRate is prompt tokens per second, counted up to the first token.
func (t Timing) PrefillRate() float64 {
	if t.FirstToken <= 0 {
		return 0
	}
	return float64(t.PromptTokens) / t.FirstToken.Seconds()
}

// DecodeRate is tokens per second after the first one.
func (t Timing) DecodeRate() float64 {
	if t.Decode <= 0 || t.Steps == 0 {
		return 0
	}
	return float64(t.Steps) / t.Decode.Seconds()
}

// Generate continues prompt (token ids) with one sequence. The prompt is
// prefilled with the chunked form, then each token is one recurrent step.
func (m *Model) Generate(ctx context.Context, prompt []int, o Options) (Result, error) {
	if len(prompt) == 0 {
		return Result{}, errors.New("generate: the prompt is empty")
	}
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	if len(o.StopStrings) > 0 && o.Decode == nil {
		return Result{}, errors.New("generate: stop strings need a Decode function")
	}
	if o.OnText != nil && o.Decode == nil {
		return Result{}, errors.New("generate: OnText needs a Decode function")
	}
	maxNew := o.MaxNewTokens
	if maxNew <= 0 {
		maxNew = 256
	}
	stop := o.StopIDs
	if stop == nil {
		stop = []int{m.Config.EOS}
	}
	ids := make([]int32, len(prompt))
	for i, v := range prompt {
		ids[i] = int32(v)
	}
	st := o.State
	if st == nil {
		st = m.NewState(1)
		defer st.Close()
	} else if st.Batch != 1 || st.m != m {
		return Result{}, errors.New("generate: Options.State must be a state of this model with a batch of one")
	}
	if err := st.continueUnder(o.Adapter); err != nil {
		return Result{}, err
	}
	// Without a caller's state, steps run ahead of the ids read back
	// (DecodeAhead); a continued state must end exactly after what was
	// handed out, so then each step waits for the one before.
	steps := newStepperFor(m, st, ids, maxNew, o, prompt)
	defer steps.close()
	var res Result
	emitted := 0 // bytes of res.Text already passed to OnText
	// Text is decoded incrementally, as streaming decoders do, so a long
	// generation costs linear, not quadratic, time: each token decodes only
	// the window ids[prefix:], and what it adds beyond the text of
	// ids[prefix:read] is new. Decoding from a token before the new ones keeps
	// what depends on context (a stripped leading space, bytes of one
	// character split across tokens) the same in both.
	prefix, read := 0, 0
	maxStop := 0
	for _, s := range o.StopStrings {
		maxStop = max(maxStop, len(s))
	}
	start := time.Now()
	res.Timing.PromptTokens = len(prompt)
	var first time.Time
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		row, err := steps.next()
		if err != nil {
			return res, err
		}
		id := int(row[0])
		if now := time.Now(); first.IsZero() {
			first = now
			res.Timing.FirstToken = now.Sub(start)
		} else {
			res.Timing.Steps++
			res.Timing.Decode = now.Sub(first)
		}
		if isStop(id, stop) {
			res.Reason = "eos"
			break
		}
		res.IDs = append(res.IDs, id)
		if o.OnToken != nil {
			if err := o.OnToken(id); err != nil {
				return res, err
			}
		}
		if o.Decode != nil {
			known := o.Decode(res.IDs[prefix:read])
			window := o.Decode(res.IDs[prefix:])
			if len(window) > len(known) && strings.HasPrefix(window, known) && !strings.HasSuffix(window, "\uFFFD") {
				from := max(0, len(res.Text)-maxStop+1) // a stop string may straddle the old end
				res.Text += window[len(known):]
				prefix, read = read, len(res.IDs)
				if cut, ok := findStop(res.Text[from:], o.StopStrings); ok {
					res.Text, res.Reason = res.Text[:from+cut], "stop"
					break
				}
			}
			if o.OnText != nil {
				safe := stableLen(res.Text, o.StopStrings)
				if safe > emitted {
					if err := o.OnText(res.Text[emitted:safe]); err != nil {
						return res, err
					}
					emitted = safe
				}
			}
		}
		if len(res.IDs) >= maxNew {
			res.Reason = "length"
			break
		}
	}
	if o.Decode != nil {
		// The whole text, decoded at once, is the result: the same as the
		// window's in all but contrived cases, and then it is what counts.
		streamed := res.Text
		res.Text = o.Decode(res.IDs)
		if cut, ok := findStop(res.Text, o.StopStrings); ok {
			res.Text, res.Reason = res.Text[:cut], "stop"
		}
		if o.OnText != nil && len(res.Text) > emitted && res.Text[:emitted] == streamed[:emitted] {
			if err := o.OnText(res.Text[emitted:]); err != nil {
				return res, err
			}
		}
		if res.Reason == "stop" {
			res.IDs = res.IDs[:tokensFor(res.IDs, res.Text, o.Decode)]
		}
	}
	return res, nil
}

// newStepperFor is Generate's stepper: at most maxNew choices (the last
// id is never fed back), running ahead unless o continues a caller's state.
func newStepperFor(m *Model, st *State, ids []int32, maxNew int, o Options, prompt []int) *stepper {
	return m.newStepper(st, ids, maxNew, o.Sampling, prompt, o.State == nil)
}

// tokensFor returns how many of ids, from the first, it takes for their
// decoding to cover text (a prefix of the decoding of all of them): the
// decoding of a prefix grows with the prefix, so a binary search finds it.
func tokensFor(ids []int, text string, decode func([]int) string) int {
	lo, hi := 0, len(ids) // decode(ids[:hi]) covers text
	for lo < hi {
		mid := (lo + hi) / 2
		if len(decode(ids[:mid])) >= len(text) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return hi
}

func isStop(id int, stop []int) bool {
	for _, s := range stop {
		if id == s {
			return true
		}
	}
	return false
}

// findStop returns where the earliest stop string begins.
func findStop(text string, stops []string) (int, bool) {
	best := -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best, best >= 0
}

// stableLen is how much of text can be shown now: it holds back a trailing
// replacement character (a UTF-8 sequence split across tokens) and any suffix
// that could still grow into a stop string.
func stableLen(text string, stops []string) int {
	n := len(text)
	for n > 0 {
		r, size := utf8.DecodeLastRuneInString(text[:n])
		if r != utf8.RuneError {
			break
		}
		n -= size
	}
	hold := n
	for _, s := range stops {
		for k := min(len(s)-1, n); k > 0; k-- {
			if strings.HasSuffix(text[:n], s[:k]) {
				hold = min(hold, n-k)
				break
			}
		}
	}
	return hold
}
