package openai

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/mamba2web/mamba2/model"
)

// Engine runs generations for the Handler. Generate has model.Generate's
// contract: it returns when the generation ends, calling o.OnToken and
// o.OnText as it goes (from any goroutine; the Handler's callbacks never
// block), and stops with ctx's error when ctx ends. It returns
// ErrQueueFull at once when it cannot take more work, which the Handler
// answers with 429.
//
// Batched is the engine that runs concurrent requests together, one
// forward pass a step for all (model.Scheduler); Serial runs one sequence
// at a time. Both have the same queue, errors and Close.
type Engine interface {
	Generate(ctx context.Context, prompt []int, o model.Options) (model.Result, error)
}

// PrefixEngine is an Engine that can also start from saved states of
// prompt prefixes (model.PrefixCache.Generate): points are the lengths of
// prefixes worth saving (the end of a chat's system prompt, of its earlier
// turns), cached is how many prompt tokens were restored instead of fed.
// The Handler uses it for chat requests when the engine has it, and plain
// Generate otherwise, so an engine without a cache needs nothing more.
type PrefixEngine interface {
	Engine
	GeneratePrefixed(ctx context.Context, prompt, points []int, o model.Options) (res model.Result, cached int, err error)
}

// QueueDepther is an Engine that says how many requests wait (for the
// queue depth metric).
type QueueDepther interface {
	QueueDepth() int
}

var (
	// ErrQueueFull: the engine's queue holds as many requests as it may.
	ErrQueueFull = errors.New("the server is busy: the generation queue is full")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("the generation engine is closed")
)

// Serial runs one generation at a time on a goroutine that owns the model:
// a backend is not safe for concurrent use. Decoding is bound by reading
// the weights, which Batched shares between the requests of a step, so
// Serial is the simpler engine, not the faster one under load; each gives
// a request the same result.
// Requests wait in a bounded FIFO queue; a request whose context ends while
// it waits leaves the queue at once and frees its place.
type Serial struct {
	m        *model.Model
	prefixes *model.PrefixCache
	max      int

	mu      sync.Mutex
	waiting []*job
	closed  bool
	wake    chan struct{} // a job was queued, or the engine closed
	stopped chan struct{} // the worker has returned
}

// SerialOptions configure NewSerial.
type SerialOptions struct {
	// Queue is how many requests may wait besides the one running; more
	// get ErrQueueFull. 0 means 32.
	Queue int
	// Prefixes, when set, is the prefix cache GeneratePrefixed uses; nil
	// makes GeneratePrefixed plain Generate.
	Prefixes *model.PrefixCache
}

// job states: queued until the worker takes it or its caller gives up.
const (
	jobQueued int32 = iota
	jobRunning
	jobAbandoned
)

type job struct {
	ctx      context.Context
	prompt   []int
	points   []int
	prefixed bool
	o        model.Options
	state    atomic.Int32
	res      model.Result
	cached   int
	err      error
	done     chan struct{}
}

// NewSerial starts the worker of m. Close stops it; m stays the caller's.
func NewSerial(m *model.Model, o SerialOptions) *Serial {
	if o.Queue <= 0 {
		o.Queue = 32
	}
	s := &Serial{m: m, prefixes: o.Prefixes, max: o.Queue, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go s.work()
	return s
}

// Generate queues a generation and waits for it.
func (s *Serial) Generate(ctx context.Context, prompt []int, o model.Options) (model.Result, error) {
	j, err := s.submit(ctx, &job{prompt: prompt, o: o})
	if err != nil {
		return model.Result{}, err
	}
	return j.res, j.err
}

// GeneratePrefixed is Generate through the prefix cache (see PrefixEngine).
func (s *Serial) GeneratePrefixed(ctx context.Context, prompt, points []int, o model.Options) (model.Result, int, error) {
	j, err := s.submit(ctx, &job{prompt: prompt, points: points, prefixed: s.prefixes != nil, o: o})
	if err != nil {
		return model.Result{}, 0, err
	}
	return j.res, j.cached, j.err
}

func (s *Serial) submit(ctx context.Context, j *job) (*job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	j.ctx, j.done = ctx, make(chan struct{})
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, ErrClosed
	case len(s.waiting) >= s.max:
		s.mu.Unlock()
		return nil, ErrQueueFull
	}
	s.waiting = append(s.waiting, j)
	s.mu.Unlock()
	s.signal()
	select {
	case <-j.done:
		return j, nil
	case <-ctx.Done():
	}
	if j.state.CompareAndSwap(jobQueued, jobAbandoned) {
		s.mu.Lock()
		for i, w := range s.waiting {
			if w == j {
				s.waiting = append(s.waiting[:i], s.waiting[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		return nil, ctx.Err()
	}
	// Running: the generation sees ctx end at its next token.
	<-j.done
	return j, nil
}

func (s *Serial) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// QueueDepth is how many requests wait (not counting the one running).
func (s *Serial) QueueDepth() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting)
}

func (s *Serial) work() {
	defer close(s.stopped)
	for {
		s.mu.Lock()
		if s.closed {
			rest := s.waiting
			s.waiting = nil
			s.mu.Unlock()
			for _, j := range rest {
				if j.state.CompareAndSwap(jobQueued, jobRunning) {
					j.err = ErrClosed
					close(j.done)
				}
			}
			return
		}
		if len(s.waiting) == 0 {
			s.mu.Unlock()
			<-s.wake
			continue
		}
		j := s.waiting[0]
		s.waiting = s.waiting[1:]
		s.mu.Unlock()
		if !j.state.CompareAndSwap(jobQueued, jobRunning) {
			continue // its caller gave up
		}
		if j.prefixed {
			j.res, j.cached, j.err = s.prefixes.Generate(j.ctx, s.m, j.prompt, j.points, j.o)
		} else {
			j.res, j.err = s.m.Generate(j.ctx, j.prompt, j.o)
		}
		close(j.done)
	}
}

// Close stops taking requests, lets the running one finish, fails the
// waiting ones with ErrClosed and waits for the worker to return.
func (s *Serial) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.signal()
	<-s.stopped
	return nil
}
