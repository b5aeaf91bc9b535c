// Package wgsl is the WebGPU backend of the runtime: every model.Backend
// operation is a WGSL compute kernel (shaders/, one file per operation), run
// natively through wgpu-native and in the browser through navigator.gpu by
// the same Go code (github.com/cogentcore/webgpu).
//
// Performance comes from the design rather than from tuning:
//
//   - Operations are recorded into one command encoder and compute pass;
//     Read and ReadIDs end the pass, submit once and map one staging buffer.
//     A decoded token (every layer plus sampling) is one submission, and
//     only the sampled ids come back.
//   - Buffers are created by Alloc and Weight, once, and destroyed by Free
//     (State.Close frees a state's), with the bind groups that bind them.
//     Bind groups are cached by the buffers they bind, and the per-dispatch
//     parameters (sizes, offsets, eps) live in a uniform arena reached
//     through a dynamic offset, so a repeated decode step creates no GPU
//     object at all; the arena is uploaded with one WriteBuffer per
//     submission.
//   - Pipelines are cached by a comparable key (shader file + defines).
//   - Weights keep their checkpoint format: f16 and bf16 matrices stay packed
//     two per u32 and are widened in the shader; the format is a define, so
//     the layer code never branches on it.
//   - Nothing exceeds the device's buffer and binding limits: big matrices
//     (embedding, lm_head) are split by rows into several buffers, and the
//     kernels run once per part.
//
// With Options.Profile, natively, every dispatch is timed on the device with
// timestamp queries (profile.go); model.Profiler reads the times.
//
// Interface methods cannot return errors, so the backend keeps the first one
// and returns it from the next Read or ReadIDs; an operation whose tensors
// are unusable is skipped rather than submitted.
package wgsl

import (
	"github.com/cogentcore/webgpu/wgpu"
	"github.com/mamba2web/mamba2/model"
)

// Stats counts what the backend has created and done, so tests can check
// that steady-state decoding creates nothing and that freeing gives
// everything back.
type Stats struct {
	Buffers, BindGroups, Pipelines int // created so far
	Submissions, Dispatches        int // so far
	SplitWeights                   int // weights stored in more than one buffer

	// What is alive now: buffers (the backend's own included) with their
	// bytes, and cached bind groups. Free and State.Close bring them down.
	LiveBuffers, LiveBindGroups int
	LiveBytes                   uint64
}

// Backend runs the model on a WebGPU device. It is not safe for concurrent
// use; one goroutine drives it, as model.Generate does.
type Backend struct {
	opts  Options
	lanes int // Options.MatvecLanes, checked
	// Options.MatvecTokens, checked
	mvTokens int
	plat     platform // what the platform needs besides the device
	dev      *wgpu.Device
	queue    *wgpu.Queue
	info     wgpu.AdapterInfo

	// AdapterLimits are what the adapter could offer; Limits are what the
	// device has (WebGPU's defaults, since the device is requested without
	// RequiredLimits: see PLATFORM.md).
	AdapterLimits, Limits wgpu.Limits
	maxBinding            uint64 // bytes in one storage binding (and buffer)
	maxGroups             uint32 // workgroups per grid dimension

	err     error          // the first error since the last Read
	pending []func() error // error checks of submitted work (js error scopes)
	scoped  bool           // the error scopes of submitted work are open (beginEncoder)
	lost    *deviceLoss    // set when the device is lost
	broken  error          // set by stop: nothing works any more
	hung    bool           // a wait ran out: the device may still be running

	rec     submission // the submission being recorded
	lastSub submission // the last one submitted

	// recording
	enc   *wgpu.CommandEncoder
	pass  *wgpu.ComputePassEncoder
	arena *wgpu.Buffer
	host  []byte // the arena's contents for the submission being recorded
	slot  uint64 // bytes per slot (minUniformBufferOffsetAlignment, ≥ 256)
	slots int    // slots used

	dummy   *wgpu.Buffer   // bound where an optional input is absent
	staging *wgpu.Buffer   // MapRead buffer for Read, grown on demand
	idBufs  []*wgpu.Buffer // MapRead buffers of StageIDs not in use, idBufSize bytes each
	stSize  uint64

	pipes   map[pipeKey]*pipeline
	layouts map[string]*layout
	groups  map[groupKey]*wgpu.BindGroup
	byID    map[uint64]map[groupKey]struct{} // the cached groups binding each buffer
	scratch map[string]*tensor               // internal buffers of multi-pass kernels
	packs   map[packKey]*tensor              // convPack's copies, made on first use

	all map[*wgpu.Buffer]uint64 // every live buffer and its size, for Close
	// Freed objects that work being recorded may still use: they are
	// destroyed right after the next submission (WebGPU keeps them alive
	// until submitted work that uses them completes).
	deadBufs   []*wgpu.Buffer
	deadGroups []*wgpu.BindGroup

	prof   profiler
	nextID uint64
	stats  Stats
	closed bool
}

// New opens the default WebGPU adapter and device. Without one it returns
// Name implements model.Backend.
func (b *Backend) Name() string { return "webgpu" }

// Stats returns the counters.
func (b *Backend) Stats() Stats { return b.stats }

// Counts is the submissions and dispatches so far (bench reports them per
// decoded token).
func (b *Backend) Counts() (submissions, dispatches int) {
	return b.stats.Submissions, b.stats.Dispatches
}

// DeviceBytes implements model.DeviceMemory: the bytes of the live buffers.
func (b *Backend) DeviceBytes() int64 { return int64(b.stats.LiveBytes) }

var _ model.DeviceMemory = (*Backend)(nil)

// MaxBinding is the largest storage binding the backend uses, in bytes.
func (b *Backend) MaxBinding() uint64 { return b.maxBinding }

var _ model.Backend = (*Backend)(nil)
var _ model.DeviceSampler = (*Backend)(nil)
