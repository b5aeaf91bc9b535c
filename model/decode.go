package model

import (
	"errors"
	"fmt"
)

// DecodeAhead is how many decode steps a device backend records before it
// reads back the first of their ids (IDStager): the ids stay on the device,
// each step's sampler writing what the next step's embedding reads, so the
// GPU runs steps back to back instead of idling while the host waits for
// each token. Batches of steps start at one (the first token comes at
// once) and double up to DecodeAhead; two batches are in flight at a time.
// Steps past a stop token are computed and discarded.
const DecodeAhead = 8

// stepper chooses the tokens of a batch of sequences step by step: every
// call of next returns one id per sequence. On a backend that samples on
// the device and stages reads (DeviceSampler and IDStager) it runs ahead
// of its caller as DecodeAhead says; otherwise each step is a forward pass
// and a read, as Generate always did.
type stepper struct {
	st     *State
	prompt []int32 // the first step's input (a prefill), then nil
	left   int     // steps that may still be recorded
	ahead  int     // the largest batch; 1 runs no step ahead

	// the host path
	host  []*Sampler // one stream per row
	hstep int
	last  []int32

	// the device path
	dev     *devicePick
	stager  IDStager
	ring    []Tensor // [B] I32 each: what each recorded step chose
	slot    int
	prev    Tensor // the ids the next step embeds
	batch   int
	flight  []func() ([]int32, error)
	counts  []int // steps in each batch in flight
	ready   []int32
	stopped error
}

// newStepper returns a stepper that starts by running prompt ([B, L]
// row-major) on st and makes at most steps choices. With ahead false it
// never runs a step before its caller asks for it, so st is left exactly
// after the ids handed out but the last (Options.State needs that).
func (m *Model) newStepper(st *State, prompt []int32, steps int, o Sampling, history []int, ahead bool) *stepper {
	t := &stepper{st: st, prompt: prompt, left: steps, ahead: 1, batch: 1}
	ds, isDev := m.Backend.(DeviceSampler)
	if !isDev {
		for range st.Batch {
			s := NewSampler(o)
			s.Prompt(history)
			t.host = append(t.host, s)
		}
		return t
	}
	t.dev = m.newDevicePick(ds, o, history, st.Batch)
	if sg, ok := m.Backend.(IDStager); ok && ahead {
		t.stager, t.ahead = sg, DecodeAhead
	}
	n := 2*t.ahead + 1
	for range n {
		t.ring = append(t.ring, m.Backend.Alloc(I32, st.Batch))
	}
	return t
}

// next returns the next id of every sequence ([B]).
func (t *stepper) next() ([]int32, error) {
	if t.stopped != nil {
		return nil, t.stopped
	}
	if t.dev == nil {
		return t.hostNext()
	}
	if len(t.ready) == 0 {
		for len(t.flight) < 2 && t.left > 0 && (t.ahead > 1 || len(t.flight) == 0) {
			if err := t.record(); err != nil {
				t.stopped = err
				return nil, err
			}
		}
		if len(t.flight) == 0 {
			return nil, errors.New("decode: no steps left")
		}
		ids, err := t.flight[0]()
		t.flight, t.counts = t.flight[1:], t.counts[1:]
		if err != nil {
			t.stopped = err
			return nil, err
		}
		t.ready = ids
	}
	B := t.st.Batch
	row := t.ready[:B]
	t.ready = t.ready[B:]
	if err := t.dev.check(row); err != nil {
		t.stopped = err
		return nil, err
	}
	return row, nil
}

// hostNext is one step on the host path.
func (t *stepper) hostNext() ([]int32, error) {
	if t.left <= 0 {
		return nil, errors.New("decode: no steps left")
	}
	t.left--
	ids := t.prompt
	if ids == nil {
		ids = t.last
	}
	t.prompt = nil
	out, err := t.st.Forward(ids, nil)
	if err != nil {
		return nil, err
	}
	logits, err := t.st.m.Backend.Read(out)
	if err != nil {
		return nil, err
	}
	t.hstep++
	V := t.st.m.Config.VocabSize
	row := make([]int32, len(t.host))
	for b, s := range t.host {
		id, err := s.Sample(logits[b*V : (b+1)*V])
		if le, ok := err.(*LogitsError); ok {
			le.Step = t.hstep
		}
		if err != nil {
			return nil, err
		}
		row[b] = int32(id)
	}
	t.last = row
	return row, nil
}

// record records the next batch of steps and stages the read of their ids.
func (t *stepper) record() error {
	n := min(t.batch, t.left)
	slots := make([]Tensor, 0, n)
	for range n {
		var logits Tensor
		var err error
		if t.prompt != nil {
			logits, err = t.st.Forward(t.prompt, nil)
			t.prompt = nil
		} else {
			logits, err = t.st.forwardIDs(t.prev)
		}
		if err != nil {
			return err
		}
		ids := t.ring[t.slot]
		t.slot = (t.slot + 1) % len(t.ring)
		t.dev.sample(ids, logits)
		t.prev = ids
		slots = append(slots, ids)
		if p, ok := t.st.m.Backend.(Pacer); ok && t.stager != nil {
			p.Flush() // one submission per step: the GPU starts at once
		}
	}
	t.left -= n
	if t.stager != nil {
		t.flight = append(t.flight, t.stager.StageIDs(slots...))
	} else {
		ds, ids := t.dev.ds, slots[0]
		t.flight = append(t.flight, func() ([]int32, error) { return ds.ReadIDs(ids) })
	}
	t.counts = append(t.counts, n)
	t.batch = min(2*t.batch, t.ahead)
	return nil
}

// close waits for the steps still in flight (their ids are dropped) and
// frees what the stepper holds.
func (t *stepper) close() {
	for _, wait := range t.flight {
		wait() // an error here was, or will be, reported by the state's next use
	}
	t.flight = nil
	for _, r := range t.ring {
		t.st.m.Backend.Free(r)
	}
	t.ring = nil
	if t.dev != nil {
		t.dev.free()
	}
}

// devicePick samples rows on the device. It draws random numbers exactly
// when the host path does, so a seed gives the same stream on every
// backend, and keeps the penalties' record on the device.
type devicePick struct {
	m    *Model
	ds   DeviceSampler
	o    Sampling
	s    []*Sampler // one stream per row
	hist Tensor     // [B, 2, V] or nil
	u    []float32
	step int
}

func (m *Model) newDevicePick(ds DeviceSampler, o Sampling, history []int, B int) *devicePick {
	p := &devicePick{m: m, ds: ds, o: o, u: make([]float32, B)}
	for range B {
		s := NewSampler(o)
		s.Prompt(history)
		p.s = append(p.s, s)
	}
	if o.Penalized() {
		V := m.Config.VocabSize
		p.hist = m.Backend.Alloc(F32, B, 2, V)
		all := make([]float32, 0, B*2*V)
		for _, s := range p.s {
			all = append(all, s.History(V)...)
		}
		m.Backend.Write(p.hist, all)
	}
	return p
}

// sample records the choice of ids from logits.
func (p *devicePick) sample(ids, logits Tensor) {
	if p.o.Temperature != 0 {
		for i, s := range p.s {
			p.u[i] = s.Uniform()
		}
	}
	p.ds.Sample(ids, logits, p.hist, p.o, p.u)
}

// check turns a row's negative id (a LogitsCode) into its error, counting
// steps as the host path does.
func (p *devicePick) check(row []int32) error {
	p.step++
	for _, id := range row {
		if id < 0 {
			le := DecodeLogits(id)
			le.Step = p.step
			return le
		}
		if int(id) >= p.m.Config.VocabSize {
			return fmt.Errorf("decode: the device chose id %d outside the vocabulary of %d", id, p.m.Config.VocabSize)
		}
	}
	return nil
}

func (p *devicePick) free() {
	p.m.Backend.Free(p.hist)
	p.hist = nil
}

// Decode continues every sequence of s for n steps from ids ([B]: each
// sequence's last chosen token, not yet fed back) and returns the n·B ids
// chosen, step by step. It is Generate's decoding without the text: the
// ids stay on the device with up to DecodeAhead steps in flight, so the
// state ends up to that many steps past the last id returned only when it
// is read back early; here all n are returned, and s ends after the n-th
// step's input (the last returned ids are not fed back).
func (s *State) Decode(ids []int32, n int, o Sampling) ([]int32, error) {
	if len(ids) != s.Batch {
		return nil, fmt.Errorf("decode: %d ids for %d sequences", len(ids), s.Batch)
	}
	if n <= 0 {
		return nil, nil
	}
	t := s.m.newStepper(s, ids, n, o, nil, true)
	defer t.close()
	out := make([]int32, 0, n*s.Batch)
	for range n {
		row, err := t.next()
		if err != nil {
			return out, err
		}
		out = append(out, row...)
	}
	return out, nil
}
