package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
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
	// MinP keeps the tokens whose probability is at least MinP times the
	// most likely token's (before TopK and TopP); 0 keeps all.
	MinP float64
	// RepetitionPenalty, as in transformers and vLLM: the logit of a token
	// that is in the prompt or was generated is divided by it when positive
	// and multiplied by it otherwise. 0 and 1 change nothing.
	RepetitionPenalty float64
	// PresencePenalty and FrequencyPenalty, as in OpenAI's API and vLLM:
	// the logit of a generated token is lowered by PresencePenalty, and by
	// FrequencyPenalty for each time it was generated. In [-2, 2].
	PresencePenalty, FrequencyPenalty float64
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
	case math.IsNaN(s.MinP) || s.MinP < 0 || s.MinP > 1:
		return fmt.Errorf("min-p must be in [0, 1], got %v", s.MinP)
	case math.IsNaN(s.RepetitionPenalty) || s.RepetitionPenalty < 0 || math.IsInf(s.RepetitionPenalty, 0) ||
		(s.RepetitionPenalty > 0 && float32(s.RepetitionPenalty) == 0):
		return fmt.Errorf("repetition penalty must be a positive number (1: none), got %v", s.RepetitionPenalty)
	case math.IsNaN(s.PresencePenalty) || math.Abs(s.PresencePenalty) > 2:
		return fmt.Errorf("presence penalty must be in [-2, 2], got %v", s.PresencePenalty)
	case math.IsNaN(s.FrequencyPenalty) || math.Abs(s.FrequencyPenalty) > 2:
		return fmt.Errorf("frequency penalty must be in [-2, 2], got %v", s.FrequencyPenalty)
	}
	return nil
}

// Penalized reports whether s changes logits by what came before.
func (s Sampling) Penalized() bool {
	return (s.RepetitionPenalty != 0 && s.RepetitionPenalty != 1) || s.PresencePenalty != 0 || s.FrequencyPenalty != 0
}

// Penalize applies the repetition, presence and frequency penalties to one
// row of V logits, in place. history is the row's [2, V] record: history[v]
// is how many times token v was generated, history[V+v] is 1 when v is in
// the prompt. The arithmetic is float32, as on the GPU: l·(1/p) when l > 0,
// else l·p, then l − (f·c + r) for a generated token (c times).
func (s Sampling) Penalize(row, history []float32) {
	V := len(row)
	rep, repInv := float32(1), float32(1)
	if s.RepetitionPenalty != 0 {
		rep, repInv = float32(s.RepetitionPenalty), float32(1/s.RepetitionPenalty)
	}
	freq, pres := float32(s.FrequencyPenalty), float32(s.PresencePenalty)
	for v := range V {
		c, inPrompt := history[v], history[V+v] > 0
		if c == 0 && !inPrompt {
			continue
		}
		l := row[v]
		if rep != 1 {
			if l > 0 {
				l *= repInv
			} else {
				l *= rep
			}
		}
		if c > 0 {
			l -= freq*c + pres
		}
		row[v] = l
	}
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
//     with MinP > 0 keep those with l ≥ l_max + T·ln(MinP) (in float32:
//     the same as a probability of at least MinP times the top one's);
//     keep the first TopK of them (all when 0); weigh each by exp((l − l_max)/T);
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
	if s.MinP > 0 {
		thr := logits[idx[0]] + MinPDelta(s)
		keep = sort.Search(len(idx), func(j int) bool { return logits[idx[j]] < thr })
	}
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

// MinPDelta is T·ln(MinP) in float32: a token is kept by MinP when its
// logit is at least the largest plus this (both samplers add in float32).
func MinPDelta(s Sampling) float32 {
	return float32(s.Temperature * math.Log(s.MinP))
}

// Sampler draws tokens from logits with a fixed set of options, and keeps
// what the penalties need: the prompt and how often each token was drawn.
type Sampler struct {
	opts    Sampling
	rng     *rand.Rand
	idx     []int
	prompt  []int     // until the first Sample, which learns V
	history []float32 // [2, V] as Penalize reads it; nil without penalties
	row     []float32 // scratch for the penalized row
}

// Prompt tells the sampler the prompt's ids, which the repetition penalty
// counts as seen. Call it before the first Sample.
func (s *Sampler) Prompt(ids []int) { s.prompt = append(s.prompt[:0], ids...) }

// History returns the [2, V] record Penalize reads, for a vocabulary of V,
// with the prompt marked: what a DeviceSampler starts from.
func (s *Sampler) History(V int) []float32 {
	h := make([]float32, 2*V)
	for _, id := range s.prompt {
		if id >= 0 && id < V {
			h[V+id] = 1
		}
	}
	return h
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
//
// With penalties the row is penalized first (a copy: logits is not
// changed), and the chosen token is counted for the next rows.
func (s *Sampler) Sample(logits []float32) (int, error) {
	if s.opts.Penalized() {
		if s.history == nil || len(s.history) != 2*len(logits) {
			s.history = s.History(len(logits))
		}
		s.row = append(s.row[:0], logits...)
		s.opts.Penalize(s.row, s.history)
		logits = s.row
	}
	if err := CheckLogits(logits); err != nil {
		return 0, err
	}
	var id int
	if s.opts.Temperature == 0 {
		id = Argmax(logits)
	} else {
		id, s.idx = SampleRow(logits, s.opts, float64(s.Uniform()), s.idx)
	}
	if s.history != nil {
		s.history[id]++
	}
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

// Picker returns the function that chooses the next token from a row of
// logits: on the device when the backend is a DeviceSampler (only the id is
// read back), otherwise on the host. Generate and benchmarks share it.
//
// On a device sampler it holds a one-id tensor until Backend.Close.
func (m *Model) Picker(o Sampling) func(logits Tensor) (int, error) {
	pick, _ := m.picker(o, nil)
	return pick
}

// picker is Picker with the function that frees what it holds; prompt is
// what the repetition penalty counts as seen.
func (m *Model) picker(o Sampling, prompt []int) (pick func(logits Tensor) (int, error), free func()) {
	sampler := NewSampler(o)
	sampler.Prompt(prompt)
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
	var hist Tensor // the penalties' record, counted on the device
	if o.Penalized() {
		V := m.Config.VocabSize
		hist = m.Backend.Alloc(F32, 1, 2, V)
		m.Backend.Write(hist, s.History(V))
	}
	u := []float32{0}
	free := func() { m.Backend.Free(idT); m.Backend.Free(hist) }
	step := 0
	return func(out Tensor) (int, error) {
		step++
		if o.Temperature != 0 {
			u[0] = s.Uniform()
		}
		ds.Sample(idT, out, hist, o, u)
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
