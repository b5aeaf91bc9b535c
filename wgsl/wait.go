package wgsl

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/mamba2web/mamba2/model"
)

// Waiting for the device.
//
// wgpu-native 22, the engine of the native build, decides how this backend
// waits: a blocking poll (wgpuDevicePoll with wait set) gives up after 5 s
// and then treats the awaited submission as finished (gfx-rs/wgpu#3601,
// fixed only in wgpu 25). Map callbacks then report success over buffers
// the GPU has not written yet, and the submission's resources are freed
// under the running work: on lavapipe the read-back is all zeros and the
// process dies in the driver's worker threads soon after. So the backend
// never blocks inside wgpu. It polls without waiting, which only reads the
// fence and runs the callbacks of work that has really finished, and naps
// in between; and it keeps submissions short (model.Pacer), which keeps
// GPU watchdogs away too (browsers and Windows reset a device whose work
// runs for seconds).

const (
	// MaxWait bounds one wait for the device. A submission is meant to
	// take well under a second (model.SubmissionBudget); one that has not
	// finished after two minutes, even on a software rasteriser shared with
	// other work, is taken for a hung device, and the backend stops rather
	// than waiting forever.
	MaxWait = 2 * time.Minute
	// spinFor is how long a wait polls back to back before it starts to
	// nap: a decoded token on a fast GPU is done within a millisecond or
	// two, and sleeping would add the scheduler's latency to every token.
	spinFor = 2 * time.Millisecond
	// maxNap is the longest nap between two polls once spinning is over:
	// short enough to add little to a long prompt's piece, long enough to
	// leave the CPU to a software driver's threads.
	maxNap = time.Millisecond
)

// ErrDeviceLost is wrapped by every error after the WebGPU device was lost
// (a driver reset, a GPU watchdog, the browser reclaiming it) or stopped
// answering. The backend cannot be used any more; open a new one and load
// the model again (in the browser its weights come from the cache).
var ErrDeviceLost = model.ErrDeviceLost

// deviceLoss records that the device was lost. The native callback may run
// on a driver thread, hence the mutex.
type deviceLoss struct {
	mu      sync.Mutex
	err     error
	closing bool // Close is destroying the device on purpose
}

func (l *deviceLoss) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closing = true
}

func (l *deviceLoss) set(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil && !l.closing {
		l.err = err
	}
}

func (l *deviceLoss) get() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// lostError is the error for a lost device, with the driver's reason.
func lostError(reason, message string) error {
	msg := strings.TrimSpace(message)
	if msg == "" {
		msg = "no message"
	}
	return fmt.Errorf("wgsl: %w (%s: %s)", ErrDeviceLost, reason, msg)
}

// submission describes the work of one submission, for messages about it.
type submission struct {
	seq         int    // 1 for the backend's first submission
	dispatches  int    // kernels in it
	first, last string // the first and last kernel's names
}

func (s submission) String() string {
	switch s.dispatches {
	case 0:
		return fmt.Sprintf("submission %d (copies only)", s.seq)
	case 1:
		return fmt.Sprintf("submission %d (1 dispatch: %s)", s.seq, s.first)
	}
	return fmt.Sprintf("submission %d (%d dispatches, %s ... %s)", s.seq, s.dispatches, s.first, s.last)
}

// await polls the device until done reports true. It fails when the device
// is lost, or, after MaxWait, naming the last submission; either way the
// backend is stopped (stop), since the GPU may still be using its buffers.
func (b *Backend) await(done func() bool) error {
	start := time.Now()
	nap := time.Duration(0)
	for !done() {
		if err := b.lost.get(); err != nil {
			b.stop(err)
			return err
		}
		b.dev.Poll(false, nil) // natively this runs the callbacks; in js waits happened already
		if done() {
			break
		}
		waited := time.Since(start)
		if waited > b.maxWait() {
			err := fmt.Errorf("wgsl: %w: %s has not finished after %v", ErrDeviceLost, b.lastSub, waited.Round(time.Millisecond))
			b.hung = true
			b.stop(err)
			return err
		}
		if waited < spinFor {
			runtime.Gosched()
			continue
		}
		nap = min(maxNap, 2*nap+20*time.Microsecond)
		time.Sleep(nap)
	}
	return b.lost.get()
}

func (b *Backend) maxWait() time.Duration {
	if b.opts.MaxWait > 0 {
		return b.opts.MaxWait
	}
	return MaxWait
}

// stop makes every later operation fail with err. The device may still run
// work that uses the backend's buffers, so Close then leaves them to the
// process's end instead of freeing them under the GPU.
func (b *Backend) stop(err error) {
	if b.broken == nil {
		b.broken = err
	}
}

// Sync implements model.Pacer: it submits the recorded work and waits until
// the device has finished everything submitted.
func (b *Backend) Sync() error {
	if b.broken != nil {
		return b.broken
	}
	b.submit(nil)
	if err := b.takeErr(); err != nil {
		return err
	}
	if err := b.waitIdle(); err != nil {
		return err
	}
	return b.checkSubmitted()
}

var _ model.Pacer = (*Backend)(nil)

// errIsLost reports whether err says the device is gone.
func errIsLost(err error) bool { return errors.Is(err, ErrDeviceLost) }
