//go:build js

package wgsl

import (
	"errors"
	"fmt"
	"syscall/js"
	"unsafe"

	"github.com/cogentcore/webgpu/jsx"
	"github.com/cogentcore/webgpu/wgpu"
)

const adapterHint = "the browser needs WebGPU (navigator.gpu); headless Chromium needs --enable-unsafe-webgpu"

// platform holds the JS device, for the error scopes the binding lacks,
// and the record of its loss.
type platform struct {
	dev  js.Value
	lost *deviceLoss
	sg   subgroupSupport
	rep  *replayer // how dispatches are recorded (replay_js.go)
	up   *stager   // how bytes reach buffers (writeBuffer)
}

// stager is a JS-owned Uint8Array that writeBuffer copies Go bytes into.
type stager struct {
	queue js.Value
	u8    js.Value
}

// writeBuffer writes data at off into buf. It does not use the binding's
// Queue.WriteBuffer, which hands Dawn a view of the wasm memory made
// before the call's other arguments are converted: a Go allocation there
// that grows the memory detaches the view, and the write fails ("Cannot
// perform Construct on a detached ArrayBuffer", or Dawn's "size +
// dataOffset is larger than data's size"), now and then, wherever the
// heap happens to grow. The bytes are copied into a JS-owned array first,
// in one call that nothing can interrupt, and written from there (the
// queue copies them at once, so the array is reused).
func (p platform) writeBuffer(_ *wgpu.Queue, buf *wgpu.Buffer, off uint64, data []byte) error {
	s := p.up
	for len(data) > 0 {
		n := min(len(data), maxStage)
		if s.u8.Type() != js.TypeObject || s.u8.Length() < n {
			size := 1 << 16
			for size < n {
				size *= 2
			}
			s.u8 = js.Global().Get("Uint8Array").New(size)
		}
		js.CopyBytesToJS(s.u8, data[:n])
		s.queue.Call("writeBuffer", jsBuffer(buf), float64(off), s.u8, 0, n)
		data, off = data[n:], off+uint64(n)
	}
	return nil
}

// maxStage bounds the staging array: longer writes go in pieces of this
// many bytes (a multiple of 4, as writeBuffer wants).
const maxStage = 4 << 20

// subgroupSupport is what openJSDevice found of the subgroups feature.
func (p platform) subgroupSupport() subgroupSupport { return p.sg }

// openDevice opens the device with openJSDevice. Kernels cannot be timed
// in js (errNoTimestamps), so the timestamp-query feature is never asked for.
// The device's lost promise reports into lost.
func openDevice(_ bool, lost *deviceLoss) (platform, *wgpu.Device, wgpu.Limits, wgpu.AdapterInfo, error, error) {
	p, d, l, i, err := openJSDevice()
	if err == nil {
		p.lost = lost
		watchLoss(p.dev, lost)
	}
	return p, d, l, i, errNoTimestamps, err
}

// watchLoss records the loss of dev in lost when its lost promise settles
// (a destroy() by anyone but Close is a loss too: tests simulate a driver
// reset so).
func watchLoss(dev js.Value, lost *deviceLoss) {
	var onLost js.Func
	onLost = js.FuncOf(func(_ js.Value, args []js.Value) any {
		defer onLost.Release()
		reason, msg := "unknown", ""
		if len(args) > 0 && args[0].Type() == js.TypeObject {
			if r := args[0].Get("reason"); r.Type() == js.TypeString {
				reason = r.String()
			}
			if m := args[0].Get("message"); m.Type() == js.TypeString {
				msg = m.String()
			}
		}
		lost.set(lostError(reason, msg)) // ignored after Close began
		return nil
	})
	if p := dev.Get("lost"); p.Type() == js.TypeObject {
		p.Call("then", onLost)
	}
}

// openJSDevice talks to navigator.gpu directly instead of through the
// binding's Instance and Adapter, for three reasons: the binding drops
// RequiredLimits in js, so the device could never get more than WebGPU's
// defaults; it leaves GetInfo empty; and the device's JS object is needed
// for pushErrorScope/popErrorScope, the only way to hear about validation
// errors there. The device is then wrapped with wgpu.NewDevice, so all
// other code is the same as natively.
//
// The device asks for the adapter's own maxStorageBufferBindingSize and
// maxBufferSize (often 1–4 GiB instead of 128/256 MiB), so big matrices
// need fewer parts. It also asks for the subgroups feature where the
// adapter offers it (Dawn does, on SwiftShader as on GPUs): the reductions
// of several kernels have a subgroup variant (subgroups.go). Like every
// blocking call here, it must run on a goroutine that may block, not
// inside a synchronous js.FuncOf callback.
func openJSDevice() (platform, *wgpu.Device, wgpu.Limits, wgpu.AdapterInfo, error) {
	var none wgpu.Limits
	gpu := js.Global().Get("navigator")
	if gpu.Truthy() {
		gpu = gpu.Get("gpu")
	}
	if !gpu.Truthy() {
		return platform{}, nil, none, wgpu.AdapterInfo{}, errors.New("no WebGPU adapter: navigator.gpu is not available (" + adapterHint + ")")
	}
	adapter, ok := jsx.Await(gpu.Call("requestAdapter", map[string]any{"powerPreference": "high-performance"}))
	if !ok || !adapter.Truthy() {
		return platform{}, nil, none, wgpu.AdapterInfo{}, fmt.Errorf("no WebGPU adapter: navigator.gpu.requestAdapter() gave %s (%s)", describe(adapter), adapterHint)
	}
	lim := adapter.Get("limits")
	required := map[string]any{}
	for _, name := range []string{"maxStorageBufferBindingSize", "maxBufferSize"} {
		if v := lim.Get(name); v.Type() == js.TypeNumber {
			required[name] = v.Float()
		}
	}
	desc := map[string]any{"label": "mamba2", "requiredLimits": required}
	var sg subgroupSupport
	if hasFeature(adapter, "subgroups") {
		desc["requiredFeatures"] = []any{"subgroups"}
		sg.min, sg.max = subgroupSizes(adapter)
	}
	dev, ok := jsx.Await(adapter.Call("requestDevice", desc))
	if !ok || !dev.Truthy() {
		return platform{}, nil, none, wgpu.AdapterInfo{}, fmt.Errorf("no WebGPU device: %s", describe(dev))
	}
	sg.on = hasFeature(dev, "subgroups")
	d := wgpu.NewDevice(dev)
	return platform{dev: dev, sg: sg, rep: newReplayer(), up: &stager{queue: dev.Get("queue"), u8: js.Undefined()}}, &d, jsLimits(lim), jsInfo(adapter), nil
}

// hasFeature reports whether a GPUAdapter or GPUDevice lists feature.
func hasFeature(obj js.Value, feature string) bool {
	f := obj.Get("features")
	return f.Type() == js.TypeObject && f.Call("has", feature).Truthy()
}

// subgroupSizes reads the adapter's smallest and largest subgroup size
// from GPUAdapterInfo (0 where the browser does not say).
func subgroupSizes(adapter js.Value) (lo, hi uint32) {
	in := adapter.Get("info")
	if in.Type() != js.TypeObject {
		return 0, 0
	}
	return uint32(jsNum(in, "subgroupMinSize")), uint32(jsNum(in, "subgroupMaxSize"))
}

// describe renders a JS value (an Error, null) for an error message.
func describe(v js.Value) string {
	if v.Type() == js.TypeObject && v.Get("message").Type() == js.TypeString {
		return v.Get("message").String()
	}
	return v.String()
}

func jsNum(obj js.Value, name string) uint64 {
	if v := obj.Get(name); v.Type() == js.TypeNumber {
		return uint64(v.Float())
	}
	return 0
}

// jsLimits reads the limits the backend consults from a GPUSupportedLimits.
func jsLimits(l js.Value) wgpu.Limits {
	return wgpu.Limits{
		MaxStorageBufferBindingSize:       jsNum(l, "maxStorageBufferBindingSize"),
		MaxBufferSize:                     jsNum(l, "maxBufferSize"),
		MaxUniformBufferBindingSize:       jsNum(l, "maxUniformBufferBindingSize"),
		MaxStorageBuffersPerShaderStage:   uint32(jsNum(l, "maxStorageBuffersPerShaderStage")),
		MinUniformBufferOffsetAlignment:   uint32(jsNum(l, "minUniformBufferOffsetAlignment")),
		MinStorageBufferOffsetAlignment:   uint32(jsNum(l, "minStorageBufferOffsetAlignment")),
		MaxComputeWorkgroupStorageSize:    uint32(jsNum(l, "maxComputeWorkgroupStorageSize")),
		MaxComputeInvocationsPerWorkgroup: uint32(jsNum(l, "maxComputeInvocationsPerWorkgroup")),
		MaxComputeWorkgroupsPerDimension:  uint32(jsNum(l, "maxComputeWorkgroupsPerDimension")),
	}
}

// jsInfo reads GPUAdapter.info where the browser has it.
func jsInfo(adapter js.Value) wgpu.AdapterInfo {
	var info wgpu.AdapterInfo
	in := adapter.Get("info")
	if in.Type() != js.TypeObject {
		return info
	}
	str := func(name string) string {
		if v := in.Get(name); v.Type() == js.TypeString {
			return v.String()
		}
		return ""
	}
	info.VendorName, info.Architecture, info.Name, info.DriverDescription = str("vendor"), str("architecture"), str("device"), str("description")
	info.BackendType = wgpu.BackendTypeWebGPU
	info.AdapterType = wgpu.AdapterTypeUnknown
	if in.Get("isFallbackAdapter").Truthy() || adapter.Get("isFallbackAdapter").Truthy() {
		info.AdapterType = wgpu.AdapterTypeCPU
	}
	return info
}

// release destroys the device, so the browser frees its memory at once
// rather than when the page's garbage collector finds it.
func (p platform) release() {
	if p.lost != nil {
		p.lost.close()
	}
	if p.dev.Truthy() {
		p.dev.Call("destroy")
	}
}

// jsBuffer is the GPUBuffer behind a binding's Buffer, whose only field
// is that JS value (checked by the two array sizes below at compile time).
func jsBuffer(buf *wgpu.Buffer) js.Value { return *(*js.Value)(unsafe.Pointer(buf)) }

var (
	_ [unsafe.Sizeof(wgpu.Buffer{}) - unsafe.Sizeof(js.Value{})]struct{}
	_ [unsafe.Sizeof(js.Value{}) - unsafe.Sizeof(wgpu.Buffer{})]struct{}
)

// mapBuffer maps buf and returns a copy of its first size bytes. It calls
// mapAsync itself: the binding's MapAsync reports success even when the
// promise is rejected (a lost device), and its GetMappedRange would then
// throw.
func (b *Backend) mapBuffer(buf *wgpu.Buffer, size uint64) ([]byte, error) {
	jb := jsBuffer(buf)
	v, ok := jsx.Await(jb.Call("mapAsync", uint32(wgpu.MapModeRead), 0, size))
	if !ok {
		if err := b.lost.get(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("wgsl: mapping the read-back of %s failed: %s", b.lastSub, describe(v))
	}
	if err := b.lost.get(); err != nil {
		return nil, err
	}
	src := js.Global().Get("Uint8Array").New(jb.Call("getMappedRange", 0, size))
	out := make([]byte, src.Length())
	js.CopyBytesToGo(out, src)
	jb.Call("unmap")
	return out, nil
}

// waitIdle waits until the device has finished all submitted work.
func (b *Backend) waitIdle() error {
	v, ok := jsx.Await(b.plat.dev.Get("queue").Call("onSubmittedWorkDone"))
	if err := b.lost.get(); err != nil {
		b.stop(err)
		return err
	}
	if !ok {
		return fmt.Errorf("wgsl: waiting for %s failed: %s", b.lastSub, describe(v))
	}
	return nil
}

// push opens error scopes for out-of-memory and validation errors.
func (p platform) push() {
	p.dev.Call("pushErrorScope", "out-of-memory")
	p.dev.Call("pushErrorScope", "validation")
}

// pop closes the scopes push opened and returns a check that waits for
// their verdict. The promises settle on the device timeline, without
// waiting for the GPU; submissions are checked after the next map, when they
// have long settled, and object creation right away.
func (p platform) pop() func() error {
	promises := []js.Value{p.dev.Call("popErrorScope"), p.dev.Call("popErrorScope")}
	return func() error {
		for _, promise := range promises {
			v, ok := jsx.Await(promise)
			if !ok {
				return fmt.Errorf("popErrorScope failed: %s", describe(v))
			}
			if v.Truthy() {
				return errors.New(describe(v))
			}
		}
		return nil
	}
}

// endPass ends a compute pass, replaying its dispatches first; the js
// binding reports no error here.
func (p platform) endPass(pass *wgpu.ComputePassEncoder) error {
	p.flush(pass)
	pass.End()
	return nil
}
