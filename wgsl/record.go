package wgsl

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unsafe"

	"github.com/cogentcore/webgpu/wgpu"
)

func b2u(v bool) uint32 {
	if v {
		return 1
	}
	return 0
}

func ceilDiv(a, b uint32) uint32 { return (a + b - 1) / b }

// paramWords is the memory of a kernel's parameter struct, which
// newKernel checked is 32-bit words without padding.
func paramWords[P any](p *P) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p))
}

// dispatch records one launch of kernel k (kernel.dispatch) of groups
// workgroups (folded into a 2-D grid when needed), with params p, the
// memory of its parameter struct. It checks binds against k's bindings
// and the WebGPU rule that a buffer bound writable is bound nowhere else
// in the same dispatch.
func (b *Backend) dispatch(k *kernelInfo, d defines, note string, binds []bind, p []byte, groups uint32) {
	shader := k.file
	if len(d) == 0 {
		d = k.pass
	}
	d = b.withSubgroups(k, d)
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
	access := k.accessFor(d)
	if !b.bindsFit(k, access, binds) {
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
	pipe, err := b.pipelineFor(shader, d, access)
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
	dst := b.host[off:]
	for i := 0; i+4 <= len(p); i += 4 {
		putU32(dst[i:], binary.NativeEndian.Uint32(p[i:]))
	}
	b.slots++
	x, y := groups, uint32(1)
	if x > b.maxGroups {
		x = b.maxGroups
		y = ceilDiv(groups, x)
	}
	b.plat.dispatch(b.pass, pipe.pipe, group, uint32(off), x, y)
	b.stats.Dispatches++
	if b.rec.dispatches == 0 {
		b.rec.first = pipe.name
	}
	b.rec.last = pipe.name
	b.rec.dispatches++
	if b.prof.on {
		// The dispatch gets a pass of its own, closed by a timestamp.
		b.closePass()
		name := pipe.name
		if note != "" {
			name += "(" + note + ")"
		}
		b.prof.stamp(b, name)
	}
}

// closePass ends the open compute pass, if there is one. In js its
// dispatches are replayed into it first (replay_js.go).
func (b *Backend) closePass() {
	if b.pass == nil {
		return
	}
	if err := b.plat.endPass(b.pass); err != nil {
		b.fail(fmt.Errorf("wgsl: %v", err))
	}
	b.pass.Release()
	b.pass = nil
}

// bindsFit checks binds against kernel k's bindings of access pattern
// access: their number, their access modes, and that only optional ones
// are absent (the dummy buffer, id 0).
func (b *Backend) bindsFit(k *kernelInfo, access string, binds []bind) bool {
	name := strings.TrimSuffix(k.file, ".wgsl")
	if len(binds) != len(access) {
		b.failf("%s: %d bindings, the kernel has %d", name, len(binds), len(access))
		return false
	}
	for i, x := range binds {
		want := k.binds[i]
		if x.write != (access[i] == 'w') {
			b.failf("%s: binding %d (%s) is bound with the wrong access (write %v)", name, i+1, want.name, x.write)
			return false
		}
		if x.id == 0 && !want.opt {
			b.failf("%s: binding %d (%s) is required", name, i+1, want.name)
			return false
		}
	}
	return true
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
	b.closePass()
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
		b.closeScope()
		b.releaseDead()
		return
	}
	defer cmd.Release()
	if b.slots > 0 {
		if err := b.plat.writeBuffer(b.queue, b.arena, 0, b.host[:uint64(b.slots)*b.slot]); err != nil {
			b.fail(fmt.Errorf("wgsl: uploading parameters: %v", err))
		}
	}
	b.slots = 0
	b.queue.Submit(cmd)
	b.stats.Submissions++
	b.rec.seq = b.stats.Submissions
	b.lastSub, b.rec = b.rec, submission{}
	b.releaseDead()
	if timed {
		b.prof.collect(b)
	}
}

// beginEncoder starts recording a submission, inside the error scopes of
// submitted work where the platform has them (js).
//
// Those scopes are opened by the first submission after a check and closed
// by the next check (checkSubmitted, after a read-back or a Sync), so all
// the submissions in between share one pair instead of costing each four
// calls across syscall/js and two waits for promises at the check. Errors
// are reported at the check either way. Object creation opens scopes of
// its own inside them.
func (b *Backend) beginEncoder() bool {
	if !b.scoped {
		b.plat.push()
		b.scoped = true
	}
	enc, err := b.dev.CreateCommandEncoder(nil)
	if err != nil {
		b.closeScope()
		b.fail(fmt.Errorf("wgsl: creating a command encoder: %v", err))
		return false
	}
	b.enc = enc
	return true
}

// closeScope closes the open error scopes of submitted work, keeping
// their verdict for checkSubmitted.
func (b *Backend) closeScope() {
	if b.scoped {
		b.pending = append(b.pending, b.plat.pop())
		b.scoped = false
	}
}

// checkSubmitted reports the first error the device found in submitted
// work (in js, where the binding returns none), consuming the checks. The
// scopes stay open while commands are being recorded, so that their
// submission is inside them too.
func (b *Backend) checkSubmitted() error {
	if b.enc == nil {
		b.closeScope()
	}
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
