//go:build !js

package wgsl

import (
	"fmt"
	"runtime"
	"slices"

	"github.com/cogentcore/webgpu/wgpu"
)

// adapterHint says what to install when no adapter is found.
const adapterHint = "natively this needs a Vulkan driver; without a GPU install Mesa's lavapipe (apt-get install mesa-vulkan-drivers libvulkan1)"

// createInstance creates the wgpu instance: Vulkan only on Linux
// (vulkanInstance says why it bypasses the binding), otherwise, or when
// that fails, the binding's default instance with all backends. No
// InstanceDescriptor is passed to the binding on purpose: see vulkanInstance.
func createInstance() (inst *wgpu.Instance, err error) {
	if inst := vulkanInstance(); inst != nil {
		return inst, nil
	}
	defer func() {
		// wgpu-native's binding panics when it cannot create an instance.
		if r := recover(); r != nil {
			inst, err = nil, fmt.Errorf("creating a wgpu instance: %v", r)
		}
	}()
	inst = wgpu.CreateInstance(nil)
	if inst == nil {
		return nil, fmt.Errorf("creating a wgpu instance failed")
	}
	return inst, nil
}

// requestAdapter picks the adapter. On Linux it enumerates the Vulkan
// adapters (the one backend that runs compute shaders everywhere there, GPUs
// and lavapipe alike; this wgpu-native ignores RequestAdapterOptions'
// backend type) and prefers a discrete GPU, then an integrated one, then
// anything else. Elsewhere, or when Vulkan has none, wgpu chooses among the
// instance's backends.
func requestAdapter(inst *wgpu.Instance) (*wgpu.Adapter, error) {
	if runtime.GOOS == "linux" {
		rank := map[wgpu.AdapterType]int{wgpu.AdapterTypeDiscreteGPU: 3, wgpu.AdapterTypeIntegratedGPU: 2, wgpu.AdapterTypeCPU: 1}
		var best *wgpu.Adapter
		bestRank := -1
		for _, a := range inst.EnumerateAdapters(&wgpu.InstanceEnumerateAdapterOptons{Backends: wgpu.InstanceBackendVulkan}) {
			if r := rank[a.GetInfo().AdapterType]; r > bestRank {
				if best != nil {
					best.Release()
				}
				best, bestRank = a, r
			} else {
				a.Release()
			}
		}
		if best != nil {
			return best, nil
		}
	}
	return inst.RequestAdapter(&wgpu.RequestAdapterOptions{PowerPreference: wgpu.PowerPreferenceHighPerformance})
}

// platform holds the native objects behind the device.
type platform struct {
	inst    *wgpu.Instance
	adapter *wgpu.Adapter
}

// openDevice opens the adapter and its device. RequiredLimits stays nil:
// the binding fills that struct unreliably (PLATFORM.md), so the device gets
// WebGPU's default limits, which the backend reads back and respects. With
// timestamps it also asks for the timestamp-query feature when the adapter
// has it; tsErr is nil when the device has it and says why not otherwise.
// (wgpu-native v22 lets a command encoder write timestamps with that
// feature alone; it has no separate "inside encoders" feature.)
func openDevice(timestamps bool, _ *deviceLoss) (p platform, dev *wgpu.Device, limits wgpu.Limits, info wgpu.AdapterInfo, tsErr error, err error) {
	inst, err := createInstance()
	if err != nil {
		return p, nil, limits, info, nil, fmt.Errorf("no WebGPU adapter: %v (%s)", err, adapterHint)
	}
	adapter, err := requestAdapter(inst)
	if err != nil || adapter == nil {
		inst.Release()
		if err == nil {
			err = fmt.Errorf("none found")
		}
		return p, nil, limits, info, nil, fmt.Errorf("no WebGPU adapter: %v (%s)", err, adapterHint)
	}
	info = adapter.GetInfo()
	// No DeviceLostCallback: the binding passes the Go pointer of its
	// handle to C (cgo rejects that at run time) and lets it dangle. A lost
	// device shows natively in the status of a map or a work-done wait.
	desc := &wgpu.DeviceDescriptor{Label: "mamba2"}
	tsErr = fmt.Errorf("timestamp queries were not requested")
	if timestamps {
		if adapter.HasFeature(wgpu.FeatureNameTimestampQuery) {
			desc.RequiredFeatures = []wgpu.FeatureName{wgpu.FeatureNameTimestampQuery}
			tsErr = nil
		} else {
			tsErr = fmt.Errorf("the adapter %s lacks the timestamp-query feature", describeAdapter(info))
		}
	}
	dev, err = adapter.RequestDevice(desc)
	if err != nil || dev == nil {
		adapter.Release()
		inst.Release()
		return p, nil, limits, info, nil, fmt.Errorf("no WebGPU device: %v", err)
	}
	return platform{inst, adapter}, dev, adapter.GetLimits().Limits, info, tsErr, nil
}

// subgroupSupport is none: the binding has no subgroups feature and
// wgpu-native 22's shader compiler rejects `enable subgroups;`
// (PLATFORM.md), so native kernels keep their workgroup-memory reductions.
func (platform) subgroupSupport() subgroupSupport { return subgroupSupport{} }

func (p platform) release() {
	if p.adapter != nil {
		p.adapter.Release()
	}
	if p.inst != nil {
		p.inst.Release()
	}
}

// Natively every call returns its own validation error, so there are no
// error scopes to open and close.
func (platform) push()             {}
func (platform) pop() func() error { return noError }

func noError() error { return nil }

// endPass ends a compute pass; natively validation errors surface here.
func (platform) endPass(pass *wgpu.ComputePassEncoder) error { return pass.End() }

// dispatch records one dispatch of pipe with bind group g, whose parameter
// slot is at offset off. Natively the binding's calls are cheap, so they
// are made as they come (in js they are batched: replay_js.go).
func (platform) dispatch(pass *wgpu.ComputePassEncoder, pipe *wgpu.ComputePipeline, g *wgpu.BindGroup, off, x, y uint32) {
	pass.SetPipeline(pipe)
	pass.SetBindGroup(0, g, []uint32{off})
	pass.DispatchWorkgroups(x, y, 1)
}

// writeBuffer writes data at off into buf through the queue.
func (platform) writeBuffer(q *wgpu.Queue, buf *wgpu.Buffer, off uint64, data []byte) error {
	return q.WriteBuffer(buf, off, data)
}

// forget is for the js replayer's table of bind groups; natively nothing
// keeps them.
func (platform) forget(*wgpu.BindGroup) {}

// mapBuffer maps the first size bytes of the MapRead buffer buf once the
// work submitted before has finished, and returns a copy of them. It polls
// (await) rather than block in wgpu: see wait.go.
func (b *Backend) mapBuffer(buf *wgpu.Buffer, size uint64) ([]byte, error) {
	done := false
	status := wgpu.BufferMapAsyncStatusSuccess
	err := buf.MapAsync(wgpu.MapModeRead, 0, size, func(s wgpu.BufferMapAsyncStatus) {
		status, done = s, true
	})
	if err != nil {
		return nil, fmt.Errorf("wgsl: mapping a read-back buffer: %v", err)
	}
	if err := b.await(func() bool { return done }); err != nil {
		return nil, err
	}
	switch status {
	case wgpu.BufferMapAsyncStatusSuccess:
	case wgpu.BufferMapAsyncStatusDeviceLost:
		return nil, lostError("map", "the device was lost while "+b.lastSub.String()+" ran")
	default:
		return nil, fmt.Errorf("wgsl: mapping the read-back of %s failed: %v", b.lastSub, status)
	}
	out := slices.Clone(buf.GetMappedRange(0, uint(size)))
	buf.Unmap()
	return out, nil
}

// waitIdle waits until the device has finished all submitted work.
func (b *Backend) waitIdle() error {
	done := false
	status := wgpu.QueueWorkDoneStatusSuccess
	b.queue.OnSubmittedWorkDone(func(s wgpu.QueueWorkDoneStatus) { status, done = s, true })
	if err := b.await(func() bool { return done }); err != nil {
		return err
	}
	if status == wgpu.QueueWorkDoneStatusDeviceLost {
		return lostError("queue", "the device was lost while "+b.lastSub.String()+" ran")
	}
	if status != wgpu.QueueWorkDoneStatusSuccess {
		return fmt.Errorf("wgsl: waiting for %s failed: %v", b.lastSub, status)
	}
	return nil
}
