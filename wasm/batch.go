//go:build js && wasm

package main

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"syscall/js"
	"time"

	"github.com/mamba2web/mamba2/model"
)

// Batched generation: generate calls without a state run through a
// model.Scheduler of the session, so concurrent calls on one model decode
// together, one forward pass per step for all of them, each with its own
// options, callbacks and abort. Everything else that drives the backend
// (generate with a state, chats, prefill, hiddenStates, states) runs
// alone, as before: the scheduler's goroutine owns the backend while it is
// open, and backends are not safe for concurrent use.
//
// The session's gate orders the two kinds of users in arrival order:
// batched generations hold it shared (any number at once), the rest
// exclusively. An exclusive holder first closes the scheduler, which waits
// for the step it is running, so nothing else touches the backend while it
// works; the next batched generation opens a new one. Closing rather than
// pausing is the only way model.Scheduler offers to know its goroutine has
// let go of the backend (a request's Generate returns while the batch may
// still be running a step for it).

// gate admits holders in arrival order: a run of shared holders together,
// an exclusive holder alone once every earlier holder has left. A shared
// waiter behind an exclusive one waits for it, so a stream of generations
// never starves a prefill.
type gate struct {
	mu      sync.Mutex
	waiters []*gateWaiter
	shared  int  // batched generations inside
	excl    bool // an exclusive holder is inside
}

type gateWaiter struct {
	excl  bool
	ready chan struct{} // closed when admitted
}

// enter waits for the gate (shared or exclusive), or for ctx to end.
func (g *gate) enter(ctx context.Context, excl bool) error {
	w := &gateWaiter{excl: excl, ready: make(chan struct{})}
	g.mu.Lock()
	g.waiters = append(g.waiters, w)
	g.admit()
	g.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	if i := slices.Index(g.waiters, w); i >= 0 {
		g.waiters = slices.Delete(g.waiters, i, i+1)
		g.admit() // an exclusive waiter may have held up shared ones behind it
		g.mu.Unlock()
		return ctx.Err()
	}
	g.mu.Unlock()
	g.leave(excl) // admitted just as ctx ended
	return ctx.Err()
}

// leave lets the next waiters in.
func (g *gate) leave(excl bool) {
	g.mu.Lock()
	if excl {
		g.excl = false
	} else {
		g.shared--
	}
	g.admit()
	g.mu.Unlock()
}

// admit lets in waiters from the head of the queue while they may enter.
// g.mu is held.
func (g *gate) admit() {
	for len(g.waiters) > 0 && !g.excl {
		w := g.waiters[0]
		if w.excl && g.shared > 0 {
			return
		}
		g.waiters = g.waiters[1:]
		close(w.ready)
		if w.excl {
			g.excl = true
			return
		}
		g.shared++
	}
}

// maxSlots bounds loadModel's slots: each slot holds a whole recurrent
// state, so a larger batch is mostly a way to run out of memory.
const maxSlots = 64

// defaultPoolBytes is how much memory the default slots may hold on WebGPU.
const defaultPoolBytes = 256 << 20

// slotsOption reads loadModel's slots: how many generations decode
// together. Without it: on a GPU as many as fit in defaultPoolBytes of
// state (at most 8; a step of 8 rows costs a GPU about what one does); on
// the CPU, and on a software WebGPU adapter (which computes on the CPU), 1,
// because there every slot costs its share of each step, an idle one too
// (the scheduler runs free slots on the pad token), so a lone generation
// would run several times slower, for a modest gain in all (the tiny model
// in Node: 4 slots run a lone call at 0.4 times the speed of 1 slot, and 4
// concurrent calls at 1.5 times their total tokens per second).
// device is "webgpu" or "cpu", software whether the adapter is a
// software renderer.
func slotsOption(opts js.Value, device string, software bool, c model.Config) (int, error) {
	if v, set := optValue(opts, "slots"); opts.Truthy() && set {
		if v.Type() != js.TypeNumber || v.Float() != float64(int(v.Float())) || v.Int() < 1 || v.Int() > maxSlots {
			return 0, codef(codeBadArg, "option slots must be an integer from 1 to %d, got %s", maxSlots, jsDescribe(v))
		}
		return v.Int(), nil
	}
	if device != "webgpu" || software {
		return 1, nil
	}
	per := int64(c.Layers) * int64(c.Heads*c.HeadDim*c.State+(c.ConvKernel-1)*c.ConvDim()) * 4
	return int(min(8, max(1, defaultPoolBytes/max(per, 1)))), nil
}

// enterBatch waits for the gate as a batched generation and returns the
// session's scheduler, opening it if an exclusive holder closed it. Leave
// with leaveBatch.
func (s *session) enterBatch(ctx context.Context) (*model.Scheduler, error) {
	if err := s.gate.enter(ctx, false); err != nil {
		return nil, codef(codeAborted, "aborted before it started")
	}
	mu.Lock()
	closed := s.closed
	mu.Unlock()
	if closed {
		s.gate.leave(false)
		return nil, codef(codeDisposed, "the model has been disposed")
	}
	// Shared holders never overlap an exclusive one, who alone closes the
	// scheduler; schedMu keeps two of them from both opening one.
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	if s.sched == nil {
		sc, err := model.NewScheduler(s.m, s.slots)
		if err != nil {
			s.gate.leave(false)
			return nil, coded(codeInternal, err)
		}
		s.sched = sc
	}
	return s.sched, nil
}

func (s *session) leaveBatch() { s.gate.leave(false) }

// stopBatch closes the scheduler, if open, for an exclusive holder: Close
// waits until its goroutine has finished the step it was running and
// freed its states, after which the backend is the holder's alone.
func (s *session) stopBatch() {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	if s.sched != nil {
		s.sched.Close()
		s.sched = nil
	}
}

// yielding wraps the CPU backend so that a long computation lets the
// JavaScript event loop run now and then. Go under js/wasm returns to the
// event loop only when no goroutine can run, and the CPU backend computes
// without ever waiting: a scheduler decoding on the CPU would keep its
// goroutine runnable for as long as any generation lasts, so no abort
// message, timer or other call could be received meanwhile. Every step
// reads its logits back, so Read is where it pauses (WebGPU's Read waits
// for the device, which lets the event loop run by itself). The CPU
// backend implements none of model's optional extensions (DeviceSampler,
// Pacer, RowCopier...), which this wrapper would hide.
type yielding struct {
	model.Backend
	last time.Time
}

// yieldEvery is how long computation may run before it lets the worker's
// event loop run.
const yieldEvery = 25 * time.Millisecond

func (y *yielding) Read(t model.Tensor) ([]float32, error) {
	v, err := y.Backend.Read(t)
	if now := time.Now(); now.Sub(y.last) >= yieldEvery {
		// Sleeping parks this goroutine; once the others block too, Go
		// hands control back to the event loop for a moment.
		time.Sleep(time.Millisecond)
		y.last = time.Now()
	} else {
		// Let the callers of a scheduler take the token just picked (their
		// streams, stop strings and timings follow each step, not each
		// yield), without the cost of a trip through the event loop.
		runtime.Gosched()
	}
	return v, err
}

// promptsFromJS reads generate's prompt argument: one prompt (text or an
// array of token ids), or an array of prompts (each text or an array of
// ids) to run together. batch says which.
func promptsFromJS(v js.Value) (prompts []js.Value, batch bool) {
	if !js.Global().Get("Array").Call("isArray", v).Bool() || v.Length() == 0 {
		return []js.Value{v}, false
	}
	if t := v.Index(0).Type(); t != js.TypeString && t != js.TypeObject {
		return []js.Value{v}, false // token ids
	}
	prompts = make([]js.Value, v.Length())
	for i := range prompts {
		prompts[i] = v.Index(i)
	}
	return prompts, true
}
