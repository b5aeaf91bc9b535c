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

