package model

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrSchedulerClosed is the error of a Scheduler's Generate calls that were
// queued or running when it was closed, and of every call after.
var ErrSchedulerClosed = errors.New("scheduler: closed")

// Scheduler runs many generations at once over one batched State of a
// fixed number of slots (continuous batching): Mamba's recurrent state is a
// fixed size per sequence, so a batch of B sequences costs one forward pass
// of B rows whatever their lengths, and a sequence can join or leave the
// batch between any two steps.
//
// Each step it admits queued requests into free slots (each prompt is
// prefilled alone, in a batch-of-one State, and its conv and SSM state is
// copied into the slot's row: CopyRows), then runs one forward pass of one
// token for every slot, samples each active row with that request's own
// Sampler, and retires the requests that are done (a stop id, the length,
// or their caller no longer waiting: a stop string, a callback's error, a
// cancelled context). Free slots run on the pad token and are ignored; a
// slot's state is overwritten when a request is admitted into it, and Mamba
// decoding has no positions, so an idle row never disturbs the others. A
// hybrid's attention rows each keep their own position and KV cache
// length (model/kvcache.go), so its slots are as independent.
//
// Generate has the signature and the results of Model.Generate: each
// request gets exactly the ids it would get alone, a seed giving the same
// stream, because every row of a batch is computed as that sequence alone
// would be (SPEC §2.2) and each request has its own Sampler.
//
// A request with Options.State runs in lockstep with its caller: the batch
// waits for the caller to take each of its tokens before the next step, so
// the state is left exactly as Model.Generate leaves it however it ends (a
// stop string is seen before the next token is fed). Other requests are
// pipelined: the batch runs on while their callers decode and stream, and
// what a caller no longer needs is dropped. PrefixCache.GenerateOn starts
// a request from a cached prefix's state without lockstep: the restore
// runs on the scheduler's goroutine, in place of the prompt's prefill.
//
// A new prompt is prefilled between two steps, so a long one delays the
// other slots' next token by its prefill.
//
// One goroutine, started by NewScheduler, drives the backend; Generate may
// be called from any number of goroutines. While a Scheduler is open,
// nothing else may use the model's backend (backends are not safe for
// concurrent use), Model.Generate included. Close it to free its states.
type Scheduler struct {
	m     *Model
	pool  *State  // the batched state, one row per slot
	pre   *State  // the batch-of-one state prompts are prefilled in
	slots []*slot // nil where free
	pad   int32
	idsT  Tensor // [B] I32: the device sampler's picks, when the backend has one

	mu     sync.Mutex
	queue  []*request
	tasks  []task // work for the loop's goroutine (attaching adapters)
	closed bool
	wake   chan struct{} // cap 1: a request was queued, or Close was called
	done   chan struct{} // closed when the loop has exited
}

// NewScheduler returns a scheduler of slots sequences over m, and starts
// the goroutine that runs them. Close stops it.
func NewScheduler(m *Model, slots int) (*Scheduler, error) {
	if slots < 1 {
		return nil, fmt.Errorf("scheduler: %d slots, want at least 1", slots)
	}
	pad := m.Config.PAD
	if pad < 0 || pad >= m.Config.VocabSize {
		pad = 0
	}
	s := &Scheduler{
		m:     m,
		pool:  m.NewState(slots),
		pre:   m.NewState(1),
		slots: make([]*slot, slots),
		pad:   int32(pad),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	if _, ok := m.Backend.(DeviceSampler); ok {
		s.idsT = m.Backend.Alloc(I32, slots)
	}
	for i := range slots {
		s.pool.releaseRow(i) // a hybrid's free slots never grow its KV caches
	}
	go s.loop()
	return s, nil
}

// Slots is the number of sequences the scheduler runs at once.
func (s *Scheduler) Slots() int { return len(s.slots) }

// Close stops the scheduler: queued and running Generate calls return
// ErrSchedulerClosed (with what they generated so far), and its states are
// freed. It waits for the step being run; it is idempotent.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.signal()
	<-s.done
	return nil
}

func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// request is one Generate call: what the loop needs to run it, and the
// picks it hands to the caller's goroutine, which does everything that
// depends on text (decoding, stop strings, OnToken, OnText) so that a
// slow callback never holds up the other slots.
type request struct {
	prompt []int
	o      Options
	maxNew int
	stop   []int
	start  time.Time
	// lockstep requests (Options.State) wait for the caller to take each
	// pick before their next step, so the caller's state is left exactly
	// as Model.Generate leaves it, however the generation ends.
	lockstep bool
	// prepare, when set, runs on the loop's goroutine at admission with
	// the batch-of-one state just Reset, and brings it through the first
	// n tokens of the prompt (fewer than all), which are then not fed:
	// the prefix cache restores and saves states there (PrefixCache.
	// GenerateOn), where the backend is the loop's, without the lockstep
	// a caller's own Options.State would need. stop says whether the
	// caller has given up, for work between pieces.
	prepare func(st *State, stop func() bool) (n int, err error)
	// ad is the attached adapter the request runs under (nil: none),
	// held from the call to its end so it cannot be detached meanwhile.
	ad      *attached
	release func()

	mu     sync.Mutex
	picks  []pick // chosen and not yet taken by the caller
	ended  bool   // the loop will pick no more
	endErr error
	notify chan struct{} // cap 1: picks or the end are waiting

	quit     atomic.Bool   // the caller needs no more picks
	ack      chan struct{} // cap 1, lockstep: the caller took the last pick (or quit)
	released chan struct{} // closed when the loop is done with the request and its Options.State
}

// pick is one token the loop chose for a request, and when.
type pick struct {
	id  int
	at  time.Time
	eos bool // id is a stop id: the end, not a token of the result
}

func (r *request) push(p pick) {
	r.mu.Lock()
	r.picks = append(r.picks, p)
	r.mu.Unlock()
	r.poke()
}

// end records that the loop is done picking, with the error that ended
// the request (nil for a stop id or the length), and releases it.
func (r *request) end(err error) {
	r.mu.Lock()
	if !r.ended {
		r.ended, r.endErr = true, err
		close(r.released)
		if r.release != nil {
			r.release()
		}
	}
	r.mu.Unlock()
	r.poke()
}

func (r *request) poke() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// take returns the picks waiting and whether (and with which error) the
// loop has ended the request.
func (r *request) take() ([]pick, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.picks
	r.picks = nil
	return p, r.ended, r.endErr
}

// giveUp tells the loop the caller wants no more picks.
func (r *request) giveUp() {
	r.quit.Store(true)
	select {
	case r.ack <- struct{}{}:
	default:
	}
}

// slot is a request running in a row of the pool.
type slot struct {
	r        *request
	sampler  *Sampler
	next     int32 // the token fed at the next step
	count    int   // tokens generated (stop ids not counted)
	steps    int   // picks made, for LogitsError.Step
	pos      int   // positions of the sequence consumed, for Options.State
	awaiting bool  // lockstep: the last pick is not yet acknowledged
}

// Generate continues prompt (token ids) as Model.Generate does, with the
// same options, result and errors, running in one of the scheduler's
// slots alongside other calls. It waits for a free slot first. Callbacks
// run in the calling goroutine.
func (s *Scheduler) Generate(ctx context.Context, prompt []int, o Options) (Result, error) {
	return s.generate(ctx, prompt, o, nil)
}

// generate is Generate with the request's prepare hook (nil for none).
func (s *Scheduler) generate(ctx context.Context, prompt []int, o Options, prepare func(*State, func() bool) (int, error)) (Result, error) {
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
	if st := o.State; st != nil && (st.Batch != 1 || st.m != s.m) {
		return Result{}, errors.New("generate: Options.State must be a state of this model with a batch of one")
	}
	ad, err := s.m.lookupAdapter(o.Adapter)
	if err != nil {
		return Result{}, fmt.Errorf("generate: %w", err)
	}
	if st := o.State; st != nil {
		if err := st.continueUnder(o.Adapter); err != nil {
			return Result{}, err
		}
	}
	for _, id := range prompt {
		if id < 0 || id >= s.m.Config.VocabSize {
			return Result{}, fmt.Errorf("forward: token id %d is outside the vocabulary of %d", id, s.m.Config.VocabSize)
		}
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	r := &request{
		prompt:   slices.Clone(prompt),
		o:        o,
		maxNew:   o.MaxNewTokens,
		stop:     o.StopIDs,
		start:    time.Now(),
		lockstep: o.State != nil,
		prepare:  prepare,
		ad:       ad,
		release:  ad.hold(),
		notify:   make(chan struct{}, 1),
		ack:      make(chan struct{}, 1),
		released: make(chan struct{}),
	}
	if r.maxNew <= 0 {
		r.maxNew = 256
	}
	if r.stop == nil {
		r.stop = []int{s.m.Config.EOS}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		r.release()
		return Result{}, ErrSchedulerClosed
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	s.signal()

	res := Result{Timing: Timing{PromptTokens: len(prompt)}}
	text := newTextTracker(o, r.maxNew)
	var first time.Time
	for {
		select {
		case <-r.notify:
		case <-ctx.Done():
			return res, s.abandon(r, ctx.Err())
		}
		picks, ended, endErr := r.take()
		for _, p := range picks {
			if err := ctx.Err(); err != nil {
				return res, s.abandon(r, err)
			}
			if first.IsZero() {
				first = p.at
				res.Timing.FirstToken = p.at.Sub(r.start)
			} else {
				res.Timing.Steps++
				res.Timing.Decode = p.at.Sub(first)
			}
			if p.eos {
				res.Reason = "eos"
				if r.lockstep {
					<-r.released // the loop is giving the state back
				}
				return res, text.finish(&res)
			}
			done, err := text.add(&res, p.id)
			if err != nil {
				return res, s.abandon(r, err)
			}
			if done {
				s.abandon(r, nil)
				return res, text.finish(&res)
			}
			if r.lockstep {
				select {
				case r.ack <- struct{}{}:
				default:
				}
			}
		}
		if ended {
			if endErr == nil {
				// The loop ends a request without an error only after its
				// stop id or its last token, which returned above.
				endErr = errors.New("scheduler: the request ended without a reason")
			}
			return res, endErr
		}
	}
}

// abandon tells the loop that r's caller is done with it and returns err.
// A request still queued is dropped at once; a running one is retired at
// the loop's next step. A request with Options.State is waited for, so the
// caller's state is not in use once Generate returns.
func (s *Scheduler) abandon(r *request, err error) error {
	s.mu.Lock()
	if i := slices.Index(s.queue, r); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
		r.end(err)
	}
	s.mu.Unlock()
	r.giveUp()
	if r.lockstep {
		<-r.released
	}
	return err
}

// loop is the scheduler's goroutine: admit, step, retire, until closed.
func (s *Scheduler) loop() {
	defer close(s.done)
	defer s.recoverPanic()
	for {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			s.shutdown()
			return
		}
		s.runTasks()
		s.admit()
		s.awaitLockstep()
		for i, sl := range s.slots {
			if sl != nil && sl.r.quit.Load() {
				s.retire(i, nil)
			}
		}
		if !slices.ContainsFunc(s.slots, func(sl *slot) bool { return sl != nil }) {
			s.mu.Lock()
			idle := len(s.queue) == 0 && len(s.tasks) == 0
			s.mu.Unlock()
			if idle {
				<-s.wake
			}
			continue
		}
		s.step()
	}
}

// awaitLockstep waits until the caller of every lockstep slot has taken its
// last pick (or quit), so that a stop string ends it before the next step.
func (s *Scheduler) awaitLockstep() {
	for _, sl := range s.slots {
		if sl != nil && sl.awaiting {
			<-sl.r.ack
			sl.awaiting = false
		}
	}
}

// admit moves queued requests into free slots, prefilling each.
func (s *Scheduler) admit() {
	for {
		i := slices.Index(s.slots, nil)
		if i < 0 {
			return
		}
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.mu.Unlock()
			return
		}
		r := s.queue[0]
		s.queue = s.queue[1:]
		s.mu.Unlock()
		if r.quit.Load() {
			r.end(nil)
			continue
		}
		s.slots[i] = s.start(r, i)
	}
}

// start prefills r's prompt and picks its first token. It returns the slot
// to run r in row i, its state copied there, or nil when r is already
// done (its first pick ended it, or an error did).
func (s *Scheduler) start(r *request, i int) *slot {
	st := r.o.State
	if st == nil {
		st = s.pre
		st.Reset()
		st.setRowAdapter(0, r.ad)
		defer st.setRowAdapter(0, nil) // the adapter stays held by r and its row
	}
	fed := 0
	if r.prepare != nil {
		n, err := r.prepare(st, r.quit.Load)
		if err == nil && (n < 0 || n >= len(r.prompt)) {
			err = fmt.Errorf("scheduler: the prefill hook fed %d of the prompt's %d tokens; at least one must be left to feed", n, len(r.prompt))
		}
		if err != nil {
			r.end(err)
			return nil
		}
		fed = n
	}
	ids := make([]int32, len(r.prompt)-fed)
	for j, v := range r.prompt[fed:] {
		ids[j] = int32(v)
	}
	out, err := st.Forward(ids, nil)
	if err != nil {
		r.end(err)
		return nil
	}
	sl := &slot{r: r, sampler: NewSampler(r.o.Sampling)}
	sl.sampler.Prompt(r.prompt)
	logits, err := s.m.Backend.Read(out)
	if err != nil {
		r.end(err)
		return nil
	}
	id, err := sl.sample(logits)
	if err != nil {
		r.end(err)
		return nil
	}
	if !s.deliver(sl, id) {
		r.end(nil) // st (a caller's Options.State) is after the prompt, as Generate leaves it
		return nil
	}
	if err := copyStateRows(s.pool, i, st, 0, 1); err != nil {
		r.end(fmt.Errorf("scheduler: %w", err))
		return nil
	}
	s.pool.setRowAdapter(i, r.ad)
	if s.pool.Pos == 0 {
		// The pool's rows continue prefilled sequences: its one-token
		// steps are decoding (the recurrence), never a prompt's start.
		s.pool.Pos = 1
	}
	sl.pos = st.Pos
	sl.awaiting = r.lockstep
	return sl
}

// sample picks a token from one row of logits on the host.
func (sl *slot) sample(logits []float32) (int, error) {
	sl.steps++
	id, err := sl.sampler.Sample(logits)
	if le, ok := err.(*LogitsError); ok {
		le.Step = sl.steps
	}
	return id, err
}

// deliver hands a pick to the caller and reports whether the request goes
// on: not after a stop id or its last token (the loop knows both; the text,
// stop strings and callbacks are the caller's). The caller of deliver ends
// a request that does not go on, after giving back its Options.State.
func (s *Scheduler) deliver(sl *slot, id int) bool {
	r, now := sl.r, time.Now()
	if isStop(id, r.stop) {
		r.push(pick{id: id, at: now, eos: true})
		return false
	}
	r.push(pick{id: id, at: now})
	sl.count++
	if sl.count >= r.maxNew {
		return false
	}
	sl.next = int32(id)
	return true
}

// retire frees slot i, ending its request with err (a no-op when it has
// ended). A caller's Options.State gets the slot's state back first: the
// prompt and every token fed, which is every generated token but the last.
func (s *Scheduler) retire(i int, err error) {
	sl := s.slots[i]
	s.slots[i] = nil
	s.pool.setRowAdapter(i, nil)
	if st := sl.r.o.State; st != nil {
		if cerr := copyStateRows(st, 0, s.pool, i, 1); cerr != nil && err == nil {
			err = fmt.Errorf("scheduler: giving the state back: %w", cerr)
		}
		st.Pos = sl.pos
	}
	s.pool.releaseRow(i)
	sl.r.end(err)
}

// step runs one token of every slot and hands each active row its pick.
func (s *Scheduler) step() {
	ids := make([]int32, len(s.slots))
	for i, sl := range s.slots {
		ids[i] = s.pad
		if sl != nil {
			ids[i] = sl.next
			sl.pos++
		}
	}
	out, err := s.pool.Forward(ids, nil)
	var picks []int
	var errs []error
	if err == nil {
		picks, errs, err = s.pick(out)
	}
	for i, sl := range s.slots {
		switch {
		case sl == nil:
		case err != nil:
			s.retire(i, err)
		case errs[i] != nil:
			s.retire(i, errs[i])
		case !s.deliver(sl, picks[i]):
			s.retire(i, nil)
		default:
			sl.awaiting = sl.r.lockstep
		}
	}
}

// pick chooses each active row's token from logits ([B, V]): on the device
// when the backend is a DeviceSampler and every active row samples alike
// but for the seed (no penalties: their counts are per row), reading back
// only the ids; otherwise on the host, each row with its slot's Sampler.
// Both draw each row's random numbers from its own Sampler, exactly when
// the host path does. errs holds each row's error (a *LogitsError); err is
// one that fails every row.
func (s *Scheduler) pick(logits Tensor) (picks []int, errs []error, err error) {
	B, V := len(s.slots), s.m.Config.VocabSize
	picks, errs = make([]int, B), make([]error, B)
	if shared, ok := s.sharedSampling(); ok {
		ds := s.m.Backend.(DeviceSampler)
		u := make([]float32, B)
		for i, sl := range s.slots {
			if sl != nil {
				sl.steps++
				if shared.Temperature != 0 {
					u[i] = sl.sampler.Uniform()
				}
			}
		}
		ds.Sample(s.idsT, logits, nil, shared, u)
		ids, err := ds.ReadIDs(s.idsT)
		if err != nil {
			return nil, nil, err
		}
		for i, sl := range s.slots {
			if sl == nil {
				continue
			}
			if ids[i] < 0 {
				le := DecodeLogits(ids[i])
				le.Step = sl.steps
				errs[i] = le
			}
			picks[i] = int(ids[i])
		}
		return picks, errs, nil
	}
	rows, err := s.m.Backend.Read(logits)
	if err != nil {
		return nil, nil, err
	}
	for i, sl := range s.slots {
		if sl != nil {
			picks[i], errs[i] = sl.sample(rows[i*V : (i+1)*V])
		}
	}
	return picks, errs, nil
}

// sharedSampling returns the settings every active slot samples with, the
// seed aside, when the device sampler can serve them all in one call.
func (s *Scheduler) sharedSampling() (Sampling, bool) {
	if s.idsT == nil {
		return Sampling{}, false
	}
	var shared Sampling
	n := 0
	for _, sl := range s.slots {
		if sl == nil {
			continue
		}
		o := sl.r.o.Sampling
		o.Seed = 0
		if o.Penalized() || (n > 0 && o != shared) {
			return Sampling{}, false
		}
		shared = o
		n++
	}
	return shared, n > 0
}

// shutdown ends every running and queued request with ErrSchedulerClosed
// and frees the scheduler's states.
// recoverPanic turns a panic in the loop (a backend's, say) into the
// error of every request running or queued, and closes the scheduler,
// instead of ending the program (in a browser, the whole wasm runtime).
// The backend is not touched again: it may be what failed.
func (s *Scheduler) recoverPanic() {
	p := recover()
	if p == nil {
		return
	}
	err := fmt.Errorf("scheduler: the decode loop failed: %v", p)
	s.mu.Lock()
	s.closed = true
	queued := s.queue
	s.queue = nil
	s.mu.Unlock()
	for i, sl := range s.slots {
		if sl != nil {
			sl.r.end(err)
			s.slots[i] = nil
		}
	}
	for _, r := range queued {
		r.end(err)
	}
	s.pool.releaseAdapters()
	s.pre.releaseAdapters()
	s.failTasks(err)
}

func (s *Scheduler) shutdown() {
	for i, sl := range s.slots {
		if sl != nil {
			s.retire(i, ErrSchedulerClosed)
		}
	}
	s.mu.Lock()
	queued := s.queue
	s.queue = nil
	s.mu.Unlock()
	for _, r := range queued {
		r.end(ErrSchedulerClosed)
	}
	s.failTasks(ErrSchedulerClosed)
	s.pool.Close()
	s.pre.Close()
	s.m.Backend.Free(s.idsT)
}

// task is a function the loop's goroutine runs between steps, and where
// its error goes.
type task struct {
	fn   func() error
	done chan error // cap 1
}

// do runs fn on the loop's goroutine, between two steps, and returns its
// error: the backend is the loop's alone while the scheduler is open.
func (s *Scheduler) do(fn func() error) error {
	t := task{fn: fn, done: make(chan error, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrSchedulerClosed
	}
	s.tasks = append(s.tasks, t)
	s.mu.Unlock()
	s.signal()
	return <-t.done
}

func (s *Scheduler) runTasks() {
	s.mu.Lock()
	ts := s.tasks
	s.tasks = nil
	s.mu.Unlock()
	for _, t := range ts {
		t.done <- t.fn()
	}
}

// failTasks answers the tasks still queued with err.
func (s *Scheduler) failTasks(err error) {
	s.mu.Lock()
	ts := s.tasks
	s.tasks = nil
	s.mu.Unlock()
	for _, t := range ts {
		t.done <- err
	}
}

// AttachAdapter is Model.AttachAdapter run on the scheduler's goroutine,
// between two steps: requests queued after it returns may select name.
func (s *Scheduler) AttachAdapter(name string, ads ...*Adapter) error {
	return s.do(func() error { return s.m.AttachAdapter(name, ads...) })
}

// DetachAdapter is Model.DetachAdapter run on the scheduler's goroutine.
// It refuses while a queued or running request selects the adapter.
func (s *Scheduler) DetachAdapter(name string) error {
	return s.do(func() error { return s.m.DetachAdapter(name) })
}
