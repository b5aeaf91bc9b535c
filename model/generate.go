package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Sampling chooses the next token from logits (SPEC §3).
type Sampling struct {
	// Temperature 0 is greedy: the highest logit, the lowest id on ties.
	Temperature float64
	// TopK keeps the K most likely tokens; 0 keeps all.
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probability
	// reaches P; 0 or 1 keeps all.
	TopP float64
	// Seed makes sampling reproducible: the same seed, prompt and options
	// give the same tokens.
	Seed uint64
}

// Validate rejects options that have no meaning.
func (s Sampling) Validate() error {
	switch {
	case math.IsNaN(s.Temperature) || s.Temperature < 0:
		return fmt.Errorf("temperature must be >= 0, got %v", s.Temperature)
	case s.TopK < 0:
		return fmt.Errorf("top-k must be >= 0, got %d", s.TopK)
	case math.IsNaN(s.TopP) || s.TopP < 0 || s.TopP > 1:
		return fmt.Errorf("top-p must be in [0, 1], got %v", s.TopP)
	}
	return nil
}

// Argmax returns the index of the largest value, the lowest on ties. NaN
// never wins.
func Argmax(logits []float32) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] || (logits[best] != logits[best] && v == v) {
			best = i
		}
	}
	return best
}

// SampleRow picks a token from one row of logits, given u uniform in [0, 1).
// It is the definition every backend's sampler follows:
//
//   - temperature 0: Argmax;
//   - otherwise rank tokens by logit, highest first, lower id first on ties;
//     keep the first TopK (all when 0); weigh each by exp((l − l_max)/T);
//     with 0 < TopP < 1 keep the shortest prefix whose weight reaches TopP of
//     the kept total; return the token where u · (prefix total) falls.
//
// idx is scratch space that may be nil; the grown slice is returned for reuse.
//
// The row must pass CheckLogits, as Sampler.Sample and the host Picker
// check; what SampleRow returns for a row that does not means nothing.
func SampleRow(logits []float32, s Sampling, u float64, idx []int) (int, []int) {
	if s.Temperature == 0 {
		return Argmax(logits), idx
	}
	idx = idx[:0]
	for i, v := range logits {
		if v == v { // not NaN
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return 0, idx
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	keep := len(idx)
	if s.TopK > 0 && s.TopK < keep {
		keep = s.TopK
	}
	maxv := float64(logits[idx[0]])
	weight := func(j int) float64 { return math.Exp((float64(logits[idx[j]]) - maxv) / s.Temperature) }
	total := 0.0
	for j := range keep {
		total += weight(j)
	}
	if s.TopP > 0 && s.TopP < 1 {
		cum := 0.0
		for j := range keep {
			cum += weight(j)
			if cum >= s.TopP*total {
				keep = j + 1
				break
			}
		}
		total = cum
	}
	r := u * total
	for j := range keep {
		r -= weight(j)
		if r < 0 {
			return idx[j], idx
		}
	}
	return idx[keep-1], idx
}

// Sampler draws tokens from logits with a fixed set of options.
type Sampler struct {
	opts Sampling
	rng  *rand.Rand
	idx  []int
}

// NewSampler returns a sampler; its random stream depends only on the seed.
func NewSampler(s Sampling) *Sampler {
	return &Sampler{opts: s, rng: rand.New(rand.NewPCG(s.Seed, 0x6d616d626132))}
}

// Uniform draws the next random number in [0, 1), as float32 so host and
// device samplers see the same value.
func (s *Sampler) Uniform() float32 {
	for {
		if u := float32(s.rng.Float64()); u < 1 {
			return u
		}
	}
}

// Sample picks a token id from one row of logits. A row CheckLogits
// refuses is an error (a *LogitsError), and no random number is drawn.
func (s *Sampler) Sample(logits []float32) (int, error) {
	if err := CheckLogits(logits); err != nil {
		return 0, err
	}
	if s.opts.Temperature == 0 {
		return Argmax(logits), nil
	}
	var id int
	id, s.idx = SampleRow(logits, s.opts, float64(s.Uniform()), s.idx)
	return id, nil
}

// LogitsError reports a row of logits that no token can be chosen from.
type LogitsError struct {
	// Step is the pick that met the row, counting from 1 (the first token
	// after the prompt); 0 when not known.
	Step int
	// ID is the first token whose logit is What; -1 when the row holds no
	// finite logit at all.
	ID   int
	What string // "NaN" or "+Inf"; "-Inf" when every logit is -Inf
}

func (e *LogitsError) Error() string {
	s := "model produced " + e.What + " logits"
	if e.ID < 0 {
		s = "model produced no finite logit (all " + e.What + ")"
	}
	if e.Step > 0 {
		s += fmt.Sprintf(" at step %d", e.Step)
	}
	if e.ID >= 0 {
		s += fmt.Sprintf(" (first at token id %d)", e.ID)
	}
	return s
}

// LogitsCode is how a DeviceSampler reports a refused row in place of a
// token: -1 - (kind + 3·ID), kind 0 for NaN, 1 for +Inf, 2 for no finite
// logit (ID 0). Vocabularies are far below 2^29 tokens, so it fits.
func LogitsCode(e *LogitsError) int32 {
	switch e.What {
	case "NaN":
		return -1 - 3*int32(e.ID)
	case "+Inf":
		return -1 - (1 + 3*int32(e.ID))
	}
	return -1 - 2
}

// DecodeLogits turns a negative id from a DeviceSampler back into the
// *LogitsError it stands for.
func DecodeLogits(code int32) *LogitsError {
	n := -1 - int(code)
	switch n % 3 {
	case 0:
		return &LogitsError{ID: n / 3, What: "NaN"}
	case 1:
		return &LogitsError{ID: n / 3, What: "+Inf"}
	}
	return &LogitsError{ID: -1, What: "-Inf"}
}

// CheckLogits returns a *LogitsError when no token can be chosen from row:
// when it holds a NaN or a +Inf (in a forward pass, what an overflow
// leaves, even from finite weights: softmax has no value there), or when
// no logit is finite. -Inf logits next to finite ones are fine (they
// only rule tokens out). Argmax and SampleRow expect rows that pass.
func CheckLogits(row []float32) error {
	finite := false
	for i, v := range row {
		switch {
		case v != v:
			return &LogitsError{ID: i, What: "NaN"}
		case v > math.MaxFloat32:
			return &LogitsError{ID: i, What: "+Inf"}
		case v >= -math.MaxFloat32:
			finite = true
		}
	}
	if !finite {
		return &LogitsError{ID: -1, What: "-Inf"}
	}
	return nil
}

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
	st := m.NewState(1)
	defer st.Close()
	next, free := m.picker(o.Sampling)
	defer free()
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
		out, err := st.Forward(ids, nil)
		if err != nil {
			return res, err
		}
		id, err := next(out)
		if err != nil {
			return res, err
		}
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
		ids = []int32{int32(id)}
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

// Picker returns the function that chooses the next token from a row of
// logits: on the device when the backend is a DeviceSampler (only the id is
// read back), otherwise on the host. Generate and benchmarks share it.
//
// On a device sampler it holds a one-id tensor until Backend.Close.
func (m *Model) Picker(o Sampling) func(logits Tensor) (int, error) {
	pick, _ := m.picker(o)
	return pick
}

// picker is Picker with the function that frees what it holds.
func (m *Model) picker(o Sampling) (pick func(logits Tensor) (int, error), free func()) {
	sampler := NewSampler(o)
	if ds, ok := m.Backend.(DeviceSampler); ok {
		return m.deviceSample(ds, sampler, o)
	}
	return m.hostSample(sampler), func() {}
}

// hostSample reads the logits back and samples on the CPU. A row it cannot
// sample from is a *LogitsError carrying the step: the count of its calls.
func (m *Model) hostSample(s *Sampler) func(Tensor) (int, error) {
	step := 0
	return func(out Tensor) (int, error) {
		step++
		logits, err := m.Backend.Read(out)
		if err != nil {
			return 0, err
		}
		id, err := s.Sample(logits)
		if le, ok := err.(*LogitsError); ok {
			le.Step = step
		}
		return id, err
	}
}

// deviceSample samples where the logits are and reads back only the id. It
// draws random numbers exactly when the host path does, so a seed gives the
// same stream on every backend.
func (m *Model) deviceSample(ds DeviceSampler, s *Sampler, o Sampling) (func(Tensor) (int, error), func()) {
	idT := m.Backend.Alloc(I32, 1)
	u := []float32{0}
	free := func() { m.Backend.Free(idT) }
	step := 0
	return func(out Tensor) (int, error) {
		step++
		if o.Temperature != 0 {
			u[0] = s.Uniform()
		}
		ds.Sample(idT, out, o, u)
		ids, err := ds.ReadIDs(idT)
		if err != nil {
			return 0, err
		}
		if ids[0] < 0 {
			le := DecodeLogits(ids[0])
			le.Step = step
			return 0, le
		}
		return int(ids[0]), nil
	}, free
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
