//go:build js

package wgsl

import (
	"syscall/js"
	"unsafe"

	"github.com/cogentcore/webgpu/wgpu"
)

// Recording a dispatch through the binding is three calls across
// syscall/js (setPipeline, setBindGroup with a fresh JS array for the
// dynamic offset, dispatchWorkgroups), each with its arguments converted
// one by one: at 75 dispatches per token that is a large part of a decoded
// token's time in wasm (issue 12 item 5). The replayer instead appends each
// dispatch to a list of words in Go, and when the pass ends it copies the
// list into JS in one go and calls one JS function that makes the calls
// there, where they are cheap: two crossings per pass instead of three per
// dispatch. Pipelines and bind groups are named in the list by their slot
// in a JS array, filled once when each is first used.
//
// The replay function is made with the Function constructor. A page whose
// Content-Security-Policy forbids that ('unsafe-eval') gets the direct
// calls instead, which record the same commands.
type replayer struct {
	fn    js.Value // the replay function; undefined: direct calls
	objs  js.Value // JS array: the pipelines and bind groups by slot
	pipes map[*wgpu.ComputePipeline]uint32
	grps  map[*wgpu.BindGroup]uint32
	free  []uint32 // slots of released bind groups, to reuse
	next  uint32   // the first slot never used
	cmds  []uint32 // replayWords per dispatch
	u8    js.Value // Uint8Array the list is copied into, and a
	u32   js.Value // Uint32Array over the same memory
}

// replayWords is what the list holds per dispatch: the pipeline's slot, the
// bind group's slot, the parameter slot's dynamic offset, and the x and y
// workgroup counts.
const replayWords = 5

// replaySource is the body of the replay function. setPipeline is skipped
// when the pipeline is the one already set; setBindGroup reads its one
// dynamic offset from the list itself (the Uint32Array form of
// setBindGroup), so nothing is allocated per dispatch.
const replaySource = `
let last = -1;
for (let i = 0; i < n; i += 5) {
	const p = cmds[i];
	if (p !== last) {
		pass.setPipeline(objs[p]);
		last = p;
	}
	pass.setBindGroup(0, objs[cmds[i + 1]], cmds, i + 2, 1);
	pass.dispatchWorkgroups(cmds[i + 3], cmds[i + 4], 1);
}`

func newReplayer() (r *replayer) {
	r = &replayer{
		fn:    js.Undefined(),
		objs:  js.Global().Get("Array").New(),
		pipes: map[*wgpu.ComputePipeline]uint32{},
		grps:  map[*wgpu.BindGroup]uint32{},
	}
	defer func() {
		if recover() != nil { // the page's CSP refuses Function: direct calls
			r.fn = js.Undefined()
		}
	}()
	r.fn = js.Global().Get("Function").New("pass", "objs", "cmds", "n", replaySource)
	return r
}

// on reports whether dispatches go through the replay function.
func (r *replayer) on() bool { return r != nil && r.fn.Type() == js.TypeFunction }

// slot returns the JS array slot of obj, putting it there on first use.
func (r *replayer) slot(obj js.Value) uint32 {
	var s uint32
	if n := len(r.free); n > 0 {
		s, r.free = r.free[n-1], r.free[:n-1]
	} else {
		s = r.next
		r.next++
	}
	r.objs.SetIndex(int(s), obj)
	return s
}

// dispatch records one dispatch of pipe with bind group g, whose parameter
// slot is at offset off.
func (p platform) dispatch(pass *wgpu.ComputePassEncoder, pipe *wgpu.ComputePipeline, g *wgpu.BindGroup, off, x, y uint32) {
	r := p.rep
	if !r.on() {
		pass.SetPipeline(pipe)
		pass.SetBindGroup(0, g, []uint32{off})
		pass.DispatchWorkgroups(x, y, 1)
		return
	}
	ps, ok := r.pipes[pipe]
	if !ok {
		ps = r.slot(*(*js.Value)(unsafe.Pointer(pipe)))
		r.pipes[pipe] = ps
	}
	gs, ok := r.grps[g]
	if !ok {
		gs = r.slot(*(*js.Value)(unsafe.Pointer(g)))
		r.grps[g] = gs
	}
	r.cmds = append(r.cmds, ps, gs, off, x, y)
}

// flush replays the dispatches recorded for pass, before it ends.
func (p platform) flush(pass *wgpu.ComputePassEncoder) {
	r := p.rep
	if !r.on() || len(r.cmds) == 0 {
		return
	}
	n := len(r.cmds)
	if r.u32.Type() != js.TypeObject || r.u32.Length() < n {
		size := max(1024, 2*n)
		mem := js.Global().Get("ArrayBuffer").New(4 * size)
		r.u8 = js.Global().Get("Uint8Array").New(mem)
		r.u32 = js.Global().Get("Uint32Array").New(mem)
	}
	js.CopyBytesToJS(r.u8, unsafe.Slice((*byte)(unsafe.Pointer(&r.cmds[0])), 4*n))
	r.cmds = r.cmds[:0]
	r.fn.Invoke(*(*js.Value)(unsafe.Pointer(pass)), r.objs, r.u32, n)
}

// forget drops a released bind group's slot.
func (p platform) forget(g *wgpu.BindGroup) {
	r := p.rep
	if r == nil {
		return
	}
	if s, ok := r.grps[g]; ok {
		delete(r.grps, g)
		r.objs.SetIndex(int(s), js.Undefined())
		r.free = append(r.free, s)
	}
}

// The binding's pass, pipeline and bind group are each just their JS value
// (checked at compile time, as for jsBuffer).
var (
	_ [unsafe.Sizeof(wgpu.ComputePassEncoder{}) - unsafe.Sizeof(js.Value{})]struct{}
	_ [unsafe.Sizeof(js.Value{}) - unsafe.Sizeof(wgpu.ComputePassEncoder{})]struct{}
	_ [unsafe.Sizeof(wgpu.ComputePipeline{}) - unsafe.Sizeof(js.Value{})]struct{}
	_ [unsafe.Sizeof(js.Value{}) - unsafe.Sizeof(wgpu.ComputePipeline{})]struct{}
	_ [unsafe.Sizeof(wgpu.BindGroup{}) - unsafe.Sizeof(js.Value{})]struct{}
	_ [unsafe.Sizeof(js.Value{}) - unsafe.Sizeof(wgpu.BindGroup{})]struct{}
)
