package wgsl

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/cogentcore/webgpu/wgpu"
	"github.com/mamba2web/mamba2/model"
)

// Profiling (Options.Profile) times every dispatch on the device with
// timestamp queries. The binding has no timestampWrites for compute passes,
// so the timestamps are written on the command encoder between passes:
// while recording, each dispatch is a compute pass of its own, and the
// encoder gets a timestamp before the first pass and after every pass. The
// time between two consecutive timestamps is the dispatch between them
// (including the barrier before it); a submission resolves its timestamps
// into a buffer, and submit waits for them and adds them up per kernel.

// maxQueries is the most timestamps one submission writes (WebGPU's limit
// on a query set is 4096); a longer recording is submitted early.
const maxQueries = 4096

// profiler is the profiling state of a Backend.
type profiler struct {
	t      *timer // nil when kernels cannot be timed
	why    error  // why not, when t is nil
	on     bool
	period float64 // nanoseconds per timestamp tick
	cap    int     // timestamps per submission

	n     int      // timestamps written into the encoder being recorded
	names []string // names[i]: the kernel between timestamps i and i+1
	acc   map[string]*kernelAcc
}

type kernelAcc struct {
	calls int
	ns    float64
}

// init sets up the query set when the device has timestamp queries
// (timestamps is nil) and measures the tick; recording starts on.
func (p *profiler) init(b *Backend, timestamps error, capacity int) {
	p.acc = map[string]*kernelAcc{}
	if timestamps != nil {
		p.why = timestamps
		return
	}
	t, err := newTimer(b, capacity)
	if err != nil {
		p.why = fmt.Errorf("timestamp queries failed: %v", err)
		return
	}
	p.t, p.cap = t, capacity
	if p.period, err = p.calibrate(b); err != nil {
		p.t.release()
		p.t, p.why = nil, fmt.Errorf("timestamp queries failed: %v", err)
		return
	}
	p.on = true
}

func (p *profiler) release() {
	if p.t != nil {
		p.t.release()
		p.t = nil
	}
	p.on = false
}

// full says whether the encoder has no room for another dispatch's
// timestamp.
func (p *profiler) full() bool { return p.on && p.n >= p.cap }

// begin writes the first timestamp of the encoder, before its first pass.
func (p *profiler) begin(b *Backend) bool {
	if p.n > 0 {
		return true
	}
	if err := p.t.write(b.enc, 0); err != nil {
		b.fail(fmt.Errorf("wgsl: writing a timestamp: %v", err))
		return false
	}
	p.n = 1
	return true
}

// stamp writes the timestamp that ends the dispatch of kernel name.
func (p *profiler) stamp(b *Backend, name string) {
	if err := p.t.write(b.enc, uint32(p.n)); err != nil {
		b.fail(fmt.Errorf("wgsl: writing a timestamp: %v", err))
	}
	p.n++
	p.names = append(p.names, name)
}

// resolve records the copy of the encoder's timestamps to the read-back
// buffer; it says whether there are any to collect after the submission.
func (p *profiler) resolve(enc *wgpu.CommandEncoder) bool {
	if p.n < 2 {
		p.discard()
		return false
	}
	if err := p.t.resolve(enc, uint32(p.n)); err != nil {
		p.discard()
		return false
	}
	return true
}

func (p *profiler) discard() {
	p.n = 0
	p.names = p.names[:0]
}

// collect waits for the submission's timestamps and adds them up.
func (p *profiler) collect(b *Backend) {
	ticks, err := p.t.read(b, p.n)
	if err != nil {
		b.fail(err)
	} else {
		for i, name := range p.names {
			a := p.acc[name]
			if a == nil {
				a = &kernelAcc{}
				p.acc[name] = a
			}
			a.calls++
			if ticks[i+1] > ticks[i] { // a counter that went back counts as 0
				a.ns += float64(ticks[i+1]-ticks[i]) * p.period
			}
		}
	}
	p.discard()
}

// calibrate measures the nanoseconds per timestamp tick. wgpu-native v22
// resolves raw device ticks (Vulkan's timestampPeriod is not applied, and
// the binding cannot ask for it), so two timestamps are taken some 50 ms
// apart and compared with the host clock. The error is the submissions'
// latency over 50 ms, about 1% on lavapipe; a period that close to 1 ns,
// as lavapipe, NVIDIA and most drivers report, is taken as exactly 1.
func (p *profiler) calibrate(b *Backend) (float64, error) {
	sample := func() (tick uint64, at time.Time, spread time.Duration, err error) {
		start := time.Now()
		enc, err := b.dev.CreateCommandEncoder(nil)
		if err != nil {
			return 0, start, 0, err
		}
		defer enc.Release()
		if err := p.t.write(enc, 0); err != nil {
			return 0, start, 0, err
		}
		if err := p.t.resolve(enc, 1); err != nil {
			return 0, start, 0, err
		}
		cmd, err := enc.Finish(nil)
		if err != nil {
			return 0, start, 0, err
		}
		defer cmd.Release()
		b.queue.Submit(cmd)
		ticks, err := p.t.read(b, 1)
		if err != nil {
			return 0, start, 0, err
		}
		end := time.Now()
		return ticks[0], start.Add(end.Sub(start) / 2), end.Sub(start), nil
	}
	if _, _, _, err := sample(); err != nil { // the first submission warms up
		return 0, err
	}
	t0, at0, s0, err := sample()
	if err != nil {
		return 0, err
	}
	time.Sleep(50 * time.Millisecond)
	t1, at1, s1, err := sample()
	if err != nil {
		return 0, err
	}
	host := at1.Sub(at0)
	if t1 <= t0 || host <= 0 {
		return 0, fmt.Errorf("the device's timestamps did not advance (%d, then %d over %v)", t0, t1, host)
	}
	period := float64(host.Nanoseconds()) / float64(t1-t0)
	uncertainty := float64(s0+s1) / 2 / float64(host)
	if math.Abs(period-1) <= max(0.02, 2*uncertainty) {
		period = 1
	}
	return period, nil
}

// TimestampPeriod is the nanoseconds per device timestamp tick that kernel
// times are converted with, or 0 when kernels cannot be timed.
func (b *Backend) TimestampPeriod() float64 {
	if b.prof.t == nil {
		return 0
	}
	return b.prof.period
}

// SetProfiling implements model.Profiler: it starts or stops recording
// kernel times, submitting what is recorded first. Starting fails, saying
// why, without Options.Profile or timestamp queries.
func (b *Backend) SetProfiling(on bool) error {
	if b.closed {
		return errors.New("wgsl: the backend is closed")
	}
	if on && b.prof.t == nil {
		return b.prof.why
	}
	if on != b.prof.on {
		if b.enc != nil {
			b.submit(nil)
		}
		b.prof.on = on
	}
	return nil
}

// Profile implements model.Profiler: the device time and dispatches of each
// kernel since the last call, including work recorded but not yet
// submitted (it is submitted now). Kernels are named by kernelName, and a
// matmul also by its weight: "matmul.matvec_f16(in_proj)".
func (b *Backend) Profile() map[string]model.KernelTime {
	if b.prof.on && b.enc != nil {
		b.submit(nil)
	}
	out := make(map[string]model.KernelTime, len(b.prof.acc))
	for name, a := range b.prof.acc {
		out[name] = model.KernelTime{Calls: a.calls, Time: time.Duration(math.Round(a.ns))}
	}
	clear(b.prof.acc)
	return out
}

// kernelName names a kernel variant for profiles: the shader, then what its
// defines select, the weight format last: "rmsnorm", "embed.f16",
// "matmul.matvec_bf16", "matmul.tiled_f32", "ssm_scan.chunk_states",
// "sample.scan".
func kernelName(shader string, d defines) string {
	base := strings.TrimSuffix(shader, ".wgsl")
	var parts []string
	switch base {
	case "matmul":
		if d.has("MATVEC") {
			parts = append(parts, "matvec")
		} else {
			parts = append(parts, "tiled")
		}
	case "conv":
		if d.has("PROMPT") {
			parts = append(parts, "prompt")
		} else if d.has("SHIFT") {
			parts = append(parts, "state")
		}
	case "sample":
		if d.has("PASS_SCAN") {
			parts = append(parts, "scan")
		}
	case "ssm_scan":
		for _, pass := range []struct{ define, name string }{
			{"PASS_CUM", "dt_cumsum"}, {"PASS_CB", "cb"}, {"PASS_STATES", "chunk_states"},
			{"PASS_CARRY", "carry"}, {"PASS_OUT", "output"},
		} {
			if d.has(pass.define) {
				parts = append(parts, pass.name)
			}
		}
	}
	for _, f := range []struct{ define, name string }{
		{"WF32", "f32"}, {"WF16", "f16"}, {"WBF16", "bf16"}, {"WQ8", "int8"}, {"WQ4", "int4"},
	} {
		if d.has(f.define) {
			parts = append(parts, f.name)
		}
	}
	if len(parts) == 0 {
		return base
	}
	return base + "." + strings.Join(parts, "_")
}

// roleName is how profiles name a matmul by its weight: the embedding is
// lm_head there, which is all a matmul uses it for; vectors have none.
func roleName(r model.Role) string {
	switch r {
	case model.RoleEmbedding:
		return string(model.RoleLMHead)
	case model.RoleVector:
		return ""
	}
	return string(r)
}

var _ model.Profiler = (*Backend)(nil)
