package wgsl

import (
	"fmt"
	"math"
	"strings"

	"github.com/cogentcore/webgpu/wgpu"
)

// params are a kernel's uniform fields, each one 32-bit word.
type params []uint32

func f32bits(v float32) uint32 { return math.Float32bits(v) }

func b2u(v bool) uint32 {
	if v {
		return 1
	}
	return 0
}

func ceilDiv(a, b uint32) uint32 { return (a + b - 1) / b }

// dispatch records one kernel launch of groups workgroups (folded into a 2-D
// grid when needed). It checks the WebGPU rule that a buffer bound writable
// is bound nowhere else in the same dispatch.
func (b *Backend) dispatch(shader string, d defines, binds []bind, p params, groups uint32) {
	b.dispatchAs(shader, d, "", binds, p, groups)
}

// dispatchAs is dispatch with a note that profiles add to the kernel's name
// (the weight a matmul multiplies by).
func (b *Backend) dispatchAs(shader string, d defines, note string, binds []bind, p params, groups uint32) {
	if b.closed {
		b.failf("%s: the backend is closed", shader)
		return
	}
	if b.broken != nil {
		b.fail(b.broken)
		return
	}
	if groups == 0 {
		return
	}
	for i, x := range binds {
		if !x.write {
			continue
		}
		for j, y := range binds {
			if i != j && x.id == y.id {
				b.failf("%s: one tensor is passed for two arguments (bindings %d and %d) and one of them is written; WebGPU forbids aliasing a writable binding",
					strings.TrimSuffix(shader, ".wgsl"), min(i, j)+1, max(i, j)+1)
				return
			}
		}
	}
	access := make([]byte, len(binds))
	for i, x := range binds {
		access[i] = 'r'
		if x.write {
			access[i] = 'w'
		}
	}
	pipe, err := b.pipelineFor(shader, d, string(access))
	if err != nil {
		b.fail(fmt.Errorf("wgsl: %v", err))
		return
	}
	group, err := b.groupFor(pipe.layout, binds)
	if err != nil {
		b.fail(fmt.Errorf("wgsl: %s: %v", shader, err))
		return
	}
	if b.slots*int(b.slot) >= len(b.host) || b.prof.full() {
		b.submit(nil) // the arena (or query set) is full: run what is recorded and start over
	}
	if b.enc == nil && !b.beginEncoder() {
		return
	}
	if b.prof.on && !b.prof.begin(b) {
		return
	}
	if b.pass == nil {
		b.pass = b.enc.BeginComputePass(nil)
	}
	off := uint64(b.slots) * b.slot
	clear(b.host[off : off+b.slot])
	for i, v := range p {
		putU32(b.host[off+uint64(4*i):], v)
	}
	b.slots++
	x, y := groups, uint32(1)
	if x > b.maxGroups {
		x = b.maxGroups
		y = ceilDiv(groups, x)
	}
	b.pass.SetPipeline(pipe.pipe)
	b.pass.SetBindGroup(0, group, []uint32{uint32(off)})
	b.pass.DispatchWorkgroups(x, y, 1)
	b.stats.Dispatches++
	if b.rec.dispatches == 0 {
		b.rec.first = pipe.name
	}
	b.rec.last = pipe.name
	b.rec.dispatches++
	if b.prof.on {
		// The dispatch gets a pass of its own, closed by a timestamp.
		if err := endPass(b.pass); err != nil {
			b.fail(fmt.Errorf("wgsl: %v", err))
		}
		b.pass.Release()
		b.pass = nil
		name := pipe.name
		if note != "" {
			name += "(" + note + ")"
		}
		b.prof.stamp(b, name)
	}
}

// submit ends the pass, lets extra add commands after it (the copy of a
// Read), uploads the parameter arena and submits everything as one command
// buffer. The arena upload is queued before the submission, and after the
// previous one, so every dispatch sees its own parameters.
func (b *Backend) submit(extra func(*wgpu.CommandEncoder) error) {
	if b.enc == nil && (extra == nil || !b.beginEncoder()) {
		return
	}
	enc := b.enc
	b.enc = nil
	defer enc.Release()
	if b.pass != nil {
		if err := endPass(b.pass); err != nil {
			b.fail(fmt.Errorf("wgsl: %v", err))
		}
		b.pass.Release()
		b.pass = nil
	}
	if extra != nil {
		if err := extra(enc); err != nil {
			b.fail(fmt.Errorf("wgsl: %v", err))
		}
	}
	timed := b.prof.resolve(enc)
	cmd, err := enc.Finish(nil)
	if err != nil {
		b.fail(fmt.Errorf("wgsl: recording commands: %v", err))
		b.rec = submission{}
		b.slots = 0
		b.prof.discard()
		b.pending = append(b.pending, b.plat.pop())
		b.releaseDead()
		return
	}
	defer cmd.Release()
	if b.slots > 0 {
		if err := b.queue.WriteBuffer(b.arena, 0, b.host[:uint64(b.slots)*b.slot]); err != nil {
			b.fail(fmt.Errorf("wgsl: uploading parameters: %v", err))
		}
	}
	b.slots = 0
	b.queue.Submit(cmd)
	b.pending = append(b.pending, b.plat.pop())
	b.stats.Submissions++
	b.rec.seq = b.stats.Submissions
	b.lastSub, b.rec = b.rec, submission{}
	b.releaseDead()
	if timed {
		b.prof.collect(b)
	}
}

// beginEncoder starts recording a submission, inside an error scope where
// the platform has them (js), closed by submit.
func (b *Backend) beginEncoder() bool {
	b.plat.push()
	enc, err := b.dev.CreateCommandEncoder(nil)
	if err != nil {
		b.plat.pop()
		b.fail(fmt.Errorf("wgsl: creating a command encoder: %v", err))
		return false
	}
	b.enc = enc
	return true
}

// checkSubmitted reports the first error the device found in submitted
// work (in js, where the binding returns none), consuming the checks.
func (b *Backend) checkSubmitted() error {
	var first error
	for _, check := range b.pending {
		if err := check(); err != nil && first == nil {
			first = fmt.Errorf("wgsl: the device rejected recorded work: %v", err)
		}
	}
	b.pending = b.pending[:0]
	return first
}

// Flush submits the recorded operations without waiting for them.
func (b *Backend) Flush() { b.submit(nil) }
