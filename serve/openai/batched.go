package openai

import (
	"context"
	"errors"
	"sync"

	"github.com/mamba2web/mamba2/model"
)

// Batched runs up to Slots generations at once on a model.Scheduler:
// every step is one forward pass for all of them, so concurrent requests
// share the reading of the weights that bounds decoding, and a request
// joins or leaves between any two steps (continuous batching). Each
// request gets exactly what it would get alone (the scheduler's contract),
// so its results are Serial's.
//
// It behaves as Serial does besides running Slots at a time: requests
// beyond the running ones wait in a bounded FIFO queue of Queue (more get
// ErrQueueFull at once), a request whose context ends while it waits
// leaves the queue at once and frees its place, and Close lets the running
// requests finish and fails the waiting ones. The queue is kept here, in
// front of the scheduler, rather than in it, so that its bound, its depth
// and Close's split between running and waiting are exact.
type Batched struct {
	sched    *model.Scheduler
	prefixes *model.PrefixCache
	slots    int
	max      int

	mu      sync.Mutex
	running int       // requests given to the scheduler and not returned
	waiting []*ticket // FIFO
	closed  bool
	idle    sync.WaitGroup // one per running request, for Close
}

// The Handler finds these by type assertion; keep them checked.
var (
	_ PrefixEngine = (*Batched)(nil)
	_ QueueDepther = (*Batched)(nil)
)

// BatchedOptions configure NewBatched.
type BatchedOptions struct {
	// Slots is how many generations run at once. 0 means 8.
	Slots int
	// Queue is how many requests may wait besides the running ones; more
	// get ErrQueueFull. 0 means 32.
	Queue int
	// Prefixes, when set, is the prefix cache GeneratePrefixed uses; nil
	// makes GeneratePrefixed plain Generate.
	Prefixes *model.PrefixCache
}

// ticket is a request waiting for a slot: ready is closed when it gets
// one (err nil) or when the engine closes (err ErrClosed).
type ticket struct {
	ready chan struct{}
	err   error
}

// NewBatched starts a scheduler of o.Slots sequences over m. While the
// engine is open it owns m's backend: nothing else may run m (backends are
// not safe for concurrent use). Close stops it; m stays the caller's.
func NewBatched(m *model.Model, o BatchedOptions) (*Batched, error) {
	if o.Slots <= 0 {
		o.Slots = 8
	}
	if o.Queue <= 0 {
		o.Queue = 32
	}
	s, err := model.NewScheduler(m, o.Slots)
	if err != nil {
		return nil, err
	}
	return &Batched{sched: s, prefixes: o.Prefixes, slots: o.Slots, max: o.Queue}, nil
}

// Slots is how many generations run at once.
func (b *Batched) Slots() int { return b.slots }

// Generate waits for a slot and runs the generation in it.
func (b *Batched) Generate(ctx context.Context, prompt []int, o model.Options) (model.Result, error) {
	if err := b.acquire(ctx); err != nil {
		return model.Result{}, err
	}
	defer b.release()
	res, err := b.sched.Generate(ctx, prompt, o)
	return res, schedErr(err)
}

// GeneratePrefixed is Generate through the prefix cache (see
// PrefixEngine): the saved state is restored into the request's slot on
// the scheduler's goroutine (model.PrefixCache.GenerateOn).
func (b *Batched) GeneratePrefixed(ctx context.Context, prompt, points []int, o model.Options) (model.Result, int, error) {
	if b.prefixes == nil {
		res, err := b.Generate(ctx, prompt, o)
		return res, 0, err
	}
	if err := b.acquire(ctx); err != nil {
		return model.Result{}, 0, err
	}
	defer b.release()
	res, cached, err := b.prefixes.GenerateOn(ctx, b.sched, prompt, points, o)
	return res, cached, schedErr(err)
}

// schedErr is the engine's error for the scheduler's: closed is ErrClosed,
// which the Handler knows (503).
func schedErr(err error) error {
	if errors.Is(err, model.ErrSchedulerClosed) {
		return ErrClosed
	}
	return err
}

// acquire takes a slot for a request, waiting in the queue when all are
// taken: ErrQueueFull when the queue is full too, ctx's error when it ends
// first, ErrClosed once the engine is closed.
func (b *Batched) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return ErrClosed
	case b.running < b.slots && len(b.waiting) == 0:
		b.running++
		b.idle.Add(1)
		b.mu.Unlock()
		return nil
	case len(b.waiting) >= b.max:
		b.mu.Unlock()
		return ErrQueueFull
	}
	t := &ticket{ready: make(chan struct{})}
	b.waiting = append(b.waiting, t)
	b.mu.Unlock()
	select {
	case <-t.ready:
		return t.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	for i, w := range b.waiting {
		if w == t {
			b.waiting = append(b.waiting[:i], b.waiting[i+1:]...)
			b.mu.Unlock()
			return ctx.Err()
		}
	}
	b.mu.Unlock()
	// It was handed a slot (or failed by Close) as ctx ended: give the
	// slot on to the next.
	if t.err == nil {
		b.release()
	}
	return ctx.Err()
}

// release gives a request's slot to the first waiting one, or frees it.
// The scheduler may keep the request's row for one more step (it retires
// a request its caller left at its next step), so the next request can
// wait that step in the scheduler's own queue: the count here is of
// callers, which is what the bound is for.
func (b *Batched) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiting) > 0 {
		t := b.waiting[0]
		b.waiting = b.waiting[1:]
		close(t.ready) // the slot, and its count in running and idle, pass to t
		return
	}
	b.running--
	b.idle.Done()
}

// QueueDepth is how many requests wait for a slot (not counting the
// running ones).
func (b *Batched) QueueDepth() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiting)
}

// Close stops taking requests, fails the waiting ones with ErrClosed, lets
// the running ones finish, then stops the scheduler (freeing its states).
// It is idempotent.
func (b *Batched) Close() error {
	b.mu.Lock()
	b.closed = true
	for _, t := range b.waiting {
		t.err = ErrClosed // under mu: acquire reads it after looking for t there
		close(t.ready)
	}
	b.waiting = nil
	b.mu.Unlock()
	b.idle.Wait()
	return b.sched.Close()
}
