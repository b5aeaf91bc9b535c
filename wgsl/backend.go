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
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cogentcore/webgpu/wgpu"
	"github.com/mamba2web/mamba2/model"
)

// Options configure New. The zero value is what applications want.
type Options struct {
	// MaxBindingSize, when not zero, lowers the largest storage binding and
	// buffer the backend creates below the device's limits. Tests use it to
	// exercise the split of big matrices on tiny models; it can also keep a
	// margin on devices that misreport their limits.
	MaxBindingSize uint64
	// SequentialScan makes SSM run prompts through the token-by-token
	// recurrence kernel (with the dt clamp) instead of the chunked SSD
	// passes. It is for cross-checking and benchmarking the two.
	SequentialScan bool
	// ArenaSlots is how many dispatches one submission may record before the
	// backend submits early to reuse the parameter arena; 0 means 4096.
	ArenaSlots int
	// Profile requests the timestamp-query feature, when the adapter has
	// it, and records the device time of every dispatch from the start
	// (SetProfiling turns recording off and on, Profile reads the times).
	// Each dispatch then runs in its own compute pass between two
	// timestamps, and every submission waits for its timestamps, so a
	// profiled run is slower than a plain one. Without Profile nothing of
	// this exists: the feature is not requested and dispatches share a pass.
	Profile bool
	// MaxWait, when not zero, replaces MaxWait as the longest wait for one
	// submission (tests shorten it).
	MaxWait time.Duration
	// RefuseSoftware makes New fail with ErrSoftwareAdapter when the best
	// adapter runs on the CPU (Mesa's lavapipe, SwiftShader, a browser's
	// fallback adapter): there the CPU backend is many times faster, so
	// "auto" choices ask for a real GPU and fall back to the CPU instead.
	RefuseSoftware bool
}

// ErrSoftwareAdapter is matched by New's error when Options.RefuseSoftware
// turned down an adapter that runs on the CPU.
var ErrSoftwareAdapter = errors.New("the only WebGPU adapter is a software renderer on the CPU")

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
	plat  platform // what the platform needs besides the device
	dev   *wgpu.Device
	queue *wgpu.Queue
	info  wgpu.AdapterInfo

	// AdapterLimits are what the adapter could offer; Limits are what the
	// device has (WebGPU's defaults, since the device is requested without
	// RequiredLimits: see PLATFORM.md).
	AdapterLimits, Limits wgpu.Limits
	maxBinding            uint64 // bytes in one storage binding (and buffer)
	maxGroups             uint32 // workgroups per grid dimension

	err     error          // the first error since the last Read
	pending []func() error // error checks of submitted work (js error scopes)
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

	dummy   *wgpu.Buffer // bound where an optional input is absent
	staging *wgpu.Buffer // MapRead buffer for Read, grown on demand
	stSize  uint64

	pipes   map[pipeKey]*pipeline
	layouts map[string]*layout
	groups  map[groupKey]*wgpu.BindGroup
	byID    map[uint64]map[groupKey]struct{} // the cached groups binding each buffer
	scratch map[string]*tensor               // internal buffers of multi-pass kernels

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
// an error that starts with "no WebGPU adapter:".
func New(opts Options) (*Backend, error) {
	lost := &deviceLoss{}
	plat, dev, adapterLimits, info, timestamps, err := openDevice(opts.Profile, lost)
	if err != nil {
		return nil, err
	}
	if opts.RefuseSoftware && IsSoftware(info) {
		dev.Release()
		plat.release()
		return nil, fmt.Errorf("%w: %s", ErrSoftwareAdapter, describeAdapter(info))
	}
	b := &Backend{
		opts: opts, plat: plat, dev: dev, queue: dev.GetQueue(), info: info, lost: lost,
		AdapterLimits: adapterLimits,
		Limits:        dev.GetLimits().Limits,
		pipes:         map[pipeKey]*pipeline{},
		layouts:       map[string]*layout{},
		groups:        map[groupKey]*wgpu.BindGroup{},
		byID:          map[uint64]map[groupKey]struct{}{},
		scratch:       map[string]*tensor{},
		all:           map[*wgpu.Buffer]uint64{},
	}
	l := b.Limits
	b.maxBinding = min(l.MaxStorageBufferBindingSize, l.MaxBufferSize)
	if opts.MaxBindingSize > 0 {
		b.maxBinding = min(b.maxBinding, opts.MaxBindingSize)
	}
	b.maxBinding &^= 15 // buffer sizes are multiples of 16
	b.maxGroups = l.MaxComputeWorkgroupsPerDimension
	if b.maxGroups == 0 {
		b.maxGroups = 65535
	}
	if l.MaxStorageBuffersPerShaderStage != 0 && l.MaxStorageBuffersPerShaderStage < maxStorageBindings {
		b.Close()
		return nil, fmt.Errorf("WebGPU device allows %d storage buffers per shader stage; the kernels need %d",
			l.MaxStorageBuffersPerShaderStage, maxStorageBindings)
	}
	if l.MaxComputeInvocationsPerWorkgroup != 0 && l.MaxComputeInvocationsPerWorkgroup < 256 {
		b.Close()
		return nil, fmt.Errorf("WebGPU device allows %d invocations per workgroup; the kernels need 256",
			l.MaxComputeInvocationsPerWorkgroup)
	}
	b.slot = max(256, uint64(l.MinUniformBufferOffsetAlignment))
	n := opts.ArenaSlots
	if n <= 0 {
		n = 4096
	}
	b.host = make([]byte, uint64(n)*b.slot)
	if b.arena, err = b.newBuffer("params", uint64(len(b.host)), wgpu.BufferUsageUniform|wgpu.BufferUsageCopyDst); err != nil {
		b.Close()
		return nil, err
	}
	if b.dummy, err = b.newBuffer("absent", 16, wgpu.BufferUsageStorage|wgpu.BufferUsageCopyDst); err != nil {
		b.Close()
		return nil, err
	}
	if opts.Profile {
		b.prof.init(b, timestamps, min(n+1, maxQueries))
	} else {
		b.prof.why = errors.New("the backend was opened without wgsl.Options.Profile, so it did not ask for timestamp queries")
	}
	return b, nil
}

// maxStorageBindings is the most storage buffers one kernel binds (ssm_step,
// ssm_scan); WebGPU's default limit is 8.
const maxStorageBindings = 7

// Adapter describes the adapter in use (in js, what GPUAdapter.info tells).
func (b *Backend) Adapter() wgpu.AdapterInfo { return b.info }

// IsSoftware reports whether an adapter runs on the CPU: its type is CPU
// (lavapipe and SwiftShader report so through Vulkan; browsers mark their
// fallback adapter), or its name is one of the known software renderers.
func IsSoftware(info wgpu.AdapterInfo) bool {
	if info.AdapterType == wgpu.AdapterTypeCPU {
		return true
	}
	name := strings.ToLower(info.Name + " " + info.DriverDescription + " " + info.VendorName)
	for _, s := range []string{"llvmpipe", "lavapipe", "swiftshader", "softpipe", "microsoft basic render"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// Describe names the adapter in use for a message: its name, backend and
// type.
func (b *Backend) Describe() string { return describeAdapter(b.info) }

// describeAdapter names an adapter for a message.
func describeAdapter(info wgpu.AdapterInfo) string {
	name := info.DriverDescription
	if name == "" {
		name = info.Name
	}
	return fmt.Sprintf("%q (%s, %s)", name, info.BackendType, info.AdapterType)
}

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

// fail records err if it is the first since the last Read.
func (b *Backend) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *Backend) failf(format string, args ...any) { b.fail(fmt.Errorf("wgsl: "+format, args...)) }

// takeErr returns and clears the recorded error.
func (b *Backend) takeErr() error {
	err := b.err
	b.err = nil
	return err
}

// Close releases every GPU object. The backend cannot be used afterwards.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if b.hung {
		// The device did not answer: it may still be running work that
		// uses these buffers, and freeing them (or the device) under it is
		// what crashes drivers. They go with the process.
		return nil
	}
	if b.enc == nil && b.broken == nil {
		// wgpu-native releases the device with a blocking wait of its own
		// (the one that gives up after 5 s); let nothing be running then.
		_ = b.waitIdle()
	}
	if b.pass != nil {
		endPass(b.pass)
		b.pass.Release()
		b.pass = nil
	}
	if b.enc != nil {
		b.enc.Release()
		b.enc = nil
	}
	b.releaseDead()
	b.prof.release()
	for _, g := range b.groups {
		g.Release()
	}
	for _, p := range b.pipes {
		p.pipe.Release()
	}
	for _, l := range b.layouts {
		l.pipeLayout.Release()
		l.bgl.Release()
	}
	for buf := range b.all {
		buf.Destroy()
		buf.Release()
	}
	b.groups, b.byID, b.pipes, b.layouts, b.all = nil, nil, nil, nil, nil
	b.stats.LiveBuffers, b.stats.LiveBindGroups, b.stats.LiveBytes = 0, 0, 0
	if b.queue != nil {
		b.queue.Release()
	}
	if b.dev != nil {
		b.dev.Release()
	}
	b.plat.release()
	err := b.takeErr()
	if b.broken != nil {
		return nil // the loss was reported by the call that found it
	}
	return err
}

// ---- tensors ---------------------------------------------------------------

// A tensor's format is a model.Format: activations and state are f32 (or
// i32 ids), weights keep their stored format (unpack.wgsl).

// elemBits is the bits per stored element of format f.
func elemBits(f model.Format) int {
	switch f {
	case model.FormatF16, model.FormatBF16:
		return 16
	case model.FormatInt8:
		return 8
	case model.FormatInt4:
		return 4
	}
	return 32
}

// formatDefines are the defines that pick a weight's accessors
// (unpack.wgsl): one per format, plus WQ and the group size for the
// quantized ones.
func (t *tensor) formatDefines() []string {
	switch t.format {
	case model.FormatF16:
		return []string{"WF16"}
	case model.FormatBF16:
		return []string{"WBF16"}
	case model.FormatInt8:
		return []string{"WQ8", "WQ"}
	case model.FormatInt4:
		return []string{"WQ4", "WQ", fmt.Sprintf("QGS=%du", t.group)}
	}
	return []string{"WF32"}
}

// withFormat is defs of the tensor's format defines and more.
func (t *tensor) withFormat(more ...string) defines {
	return defs(append(t.formatDefines(), more...)...)
}

// rowBytes is the bytes of one stored row.
func (t *tensor) rowBytes() uint64 { return uint64(t.stride) * uint64(elemBits(t.format)) / 8 }

// part is one buffer of a tensor, holding rows [row0, row0+rows), and for
// a quantized weight the buffer q of those rows' scales and zeros.
type part struct {
	buf        *wgpu.Buffer
	id         uint64
	row0, rows int
	size       uint64 // bytes, a multiple of 16
	q          *part
}

// tensor is a model.Tensor on the GPU: rows of cols elements (a 1-D tensor is
// one row), stored in one or more parts of whole rows. Activations and state
// always have one part; only weights are split.
type tensor struct {
	name   string
	shape  []int
	kind   model.Kind
	format model.Format
	group  int // int4: elements per group
	rows   int // shape[0] for a matrix, 1 for a vector
	cols   int // elements per row
	stride int // stored elements per row: cols, rounded up to a whole u32 when packed
	qrow   int // quantized: parameters (u32) per row of a part's q buffer
	parts  []part
	role   string // for a weight, what it is (in_proj, lm_head...): profiles name matmuls by it
	freed  bool
}

func (t *tensor) Shape() []int { return t.shape }

// elems is the number of logical elements.
func (t *tensor) elems() int { return t.rows * t.cols }

// ok is false for a tensor whose creation failed (the error is recorded)
// or that was freed.
func (t *tensor) ok() bool { return t != nil && len(t.parts) > 0 }

func (t *tensor) String() string {
	if t.name != "" {
		return fmt.Sprintf("%s %v", t.name, t.shape)
	}
	return fmt.Sprintf("tensor %v", t.shape)
}

// newBuffer creates and tracks a buffer; size is rounded up to 16 bytes.
func (b *Backend) newBuffer(label string, size uint64, usage wgpu.BufferUsage) (*wgpu.Buffer, error) {
	size = max(16, (size+15)&^15)
	b.plat.push()
	buf, err := b.dev.CreateBuffer(&wgpu.BufferDescriptor{Label: label, Size: size, Usage: usage})
	if perr := b.plat.pop()(); err == nil && perr != nil {
		err = perr
		buf.Destroy()
	}
	if err != nil {
		return nil, fmt.Errorf("wgsl: creating buffer %s of %d bytes: %v", label, size, err)
	}
	b.all[buf] = size
	b.stats.Buffers++
	b.stats.LiveBuffers++
	b.stats.LiveBytes += size
	return buf, nil
}

// dropBuffer forgets buf and destroys it, after the next submission when
// work is being recorded (it may use buf), at once otherwise. Cached bind
// groups that bind it must be dropped first (dropGroups).
func (b *Backend) dropBuffer(buf *wgpu.Buffer) {
	size, ok := b.all[buf]
	if !ok {
		return
	}
	delete(b.all, buf)
	b.stats.LiveBuffers--
	b.stats.LiveBytes -= size
	b.deadBufs = append(b.deadBufs, buf)
	if b.enc == nil {
		b.releaseDead()
	}
}

// dropGroups removes the cached bind groups that bind buffer id; they are
// released with the freed buffers.
func (b *Backend) dropGroups(id uint64) {
	for key := range b.byID[id] {
		if g, ok := b.groups[key]; ok {
			delete(b.groups, key)
			b.stats.LiveBindGroups--
			b.deadGroups = append(b.deadGroups, g)
		}
		for _, other := range key.ids[:key.n] {
			if set := b.byID[other]; set != nil {
				delete(set, key)
				if len(set) == 0 {
					delete(b.byID, other)
				}
			}
		}
	}
	delete(b.byID, id)
}

// releaseDead releases the bind groups and destroys the buffers that were
// freed while work was being recorded.
func (b *Backend) releaseDead() {
	for _, g := range b.deadGroups {
		g.Release()
	}
	for _, buf := range b.deadBufs {
		buf.Destroy()
		buf.Release()
	}
	clear(b.deadGroups)
	clear(b.deadBufs)
	b.deadGroups, b.deadBufs = b.deadGroups[:0], b.deadBufs[:0]
}

// Free implements model.Backend: it destroys t's buffers and drops the
// cached bind groups that bind them. Operations recorded before Free still
// see t (the buffers go after the next submission); t cannot be used
// afterwards. Freeing nil or a freed tensor does nothing.
func (b *Backend) Free(x model.Tensor) {
	if x == nil || b.closed {
		return
	}
	t := b.asTensor("free", x, "tensor")
	if t == nil || t.freed {
		return
	}
	for _, p := range t.parts {
		b.dropGroups(p.id)
		b.dropBuffer(p.buf)
		if p.q != nil {
			b.dropGroups(p.q.id)
			b.dropBuffer(p.q.buf)
		}
	}
	t.parts, t.freed = nil, true
}

func (b *Backend) addPart(t *tensor, row0, rows int, usage wgpu.BufferUsage) error {
	size := uint64(rows) * t.rowBytes()
	size = max(16, (size+15)&^15)
	if size > b.maxBinding {
		return fmt.Errorf("wgsl: %s needs %d bytes in one buffer, more than the largest storage binding of %d bytes", t, size, b.maxBinding)
	}
	buf, err := b.newBuffer(t.name, size, usage)
	if err != nil {
		return err
	}
	b.nextID++
	p := part{buf: buf, id: b.nextID, row0: row0, rows: rows, size: size}
	if t.format.Quantized() {
		qsize := max(16, (uint64(rows)*uint64(t.qrow)*4+15)&^15)
		qbuf, err := b.newBuffer(t.name+" scales", qsize, usage)
		if err != nil {
			b.dropBuffer(buf)
			return err
		}
		b.nextID++
		p.q = &part{buf: qbuf, id: b.nextID, row0: row0, rows: rows, size: qsize}
	}
	t.parts = append(t.parts, p)
	return nil
}

func shapeSize(shape []int) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d > 0 && n > math.MaxInt32/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

// Alloc implements model.Backend. A tensor larger than one storage binding
// cannot be bound by a kernel; it is returned unusable and the error is
// reported by the next Read.
func (b *Backend) Alloc(kind model.Kind, shape ...int) model.Tensor {
	t := &tensor{shape: slices.Clone(shape), kind: kind, format: model.FormatF32, rows: 1}
	n, err := shapeSize(shape)
	if err != nil {
		b.failf("alloc: %v", err)
		return t
	}
	t.cols, t.stride = n, n
	usage := wgpu.BufferUsageStorage | wgpu.BufferUsageCopySrc | wgpu.BufferUsageCopyDst
	if err := b.addPart(t, 0, 1, usage); err != nil {
		b.fail(fmt.Errorf("alloc %s: %w", t, err))
	}
	return t
}

// asTensor checks that a model.Tensor came from this backend.
func (b *Backend) asTensor(op string, x model.Tensor, what string) *tensor {
	if x == nil {
		return nil
	}
	t, ok := x.(*tensor)
	if !ok {
		b.failf("%s: %s is a %T, not a tensor of the webgpu backend", op, what, x)
		return nil
	}
	return t
}

// usable says whether t can be used, recording an error when it was freed
// (a tensor whose creation failed has its error recorded already).
func (b *Backend) usable(op string, t *tensor) bool {
	if t != nil && t.freed {
		b.failf("%s: %s was freed", op, t)
		return false
	}
	return t.ok()
}

// Write implements model.Backend. Operations recorded before it are
// submitted first, so they see the old contents.
func (b *Backend) Write(x model.Tensor, data []float32) {
	t := b.asTensor("write", x, "tensor")
	if !b.usable("write", t) {
		return
	}
	if t.kind != model.F32 {
		b.failf("write: %s is not F32", t)
		return
	}
	b.upload(t, bytesOf(data[:min(len(data), t.elems())]))
}

// WriteIDs implements model.Backend.
func (b *Backend) WriteIDs(x model.Tensor, ids []int32) {
	t := b.asTensor("write ids", x, "tensor")
	if !b.usable("write ids", t) {
		return
	}
	if t.kind != model.I32 {
		b.failf("write ids: %s is not I32", t)
		return
	}
	b.upload(t, bytesOf(ids[:min(len(ids), t.elems())]))
}

func (b *Backend) upload(t *tensor, data []byte) {
	if len(data) == 0 {
		return
	}
	if t.format != model.FormatF32 || len(t.parts) != 1 {
		b.failf("write: %s is a weight", t)
		return
	}
	if b.enc != nil {
		b.submit(nil)
	}
	if err := b.queue.WriteBuffer(t.parts[0].buf, 0, data); err != nil {
		b.fail(fmt.Errorf("wgsl: write %s: %v", t, err))
	}
}

// Zero implements model.Backend with a recorded kernel, so it is ordered
// with the operations around it.
func (b *Backend) Zero(x model.Tensor) {
	t := b.asTensor("zero", x, "tensor")
	if !b.usable("zero", t) {
		return
	}
	for _, p := range t.parts {
		words := uint32(p.size / 4)
		b.dispatch("zero.wgsl", nil, []bind{rw(p)}, params{words}, ceilDiv(words, 256))
	}
}

// Read implements model.Backend.
func (b *Backend) Read(x model.Tensor) ([]float32, error) {
	t := b.asTensor("read", x, "tensor")
	raw, err := b.readBack(t)
	if err != nil {
		return nil, err
	}
	if t.kind == model.I32 {
		out := make([]float32, t.elems())
		for i, v := range fromBytes[int32](raw) {
			out[i] = float32(v)
		}
		return out, nil
	}
	return slices.Clone(fromBytes[float32](raw)), nil
}

// ReadIDs implements model.DeviceSampler.
func (b *Backend) ReadIDs(x model.Tensor) ([]int32, error) {
	t := b.asTensor("read ids", x, "tensor")
	if t != nil && t.kind != model.I32 {
		b.failf("read ids: %s is not I32", t)
	}
	raw, err := b.readBack(t)
	if err != nil {
		return nil, err
	}
	return slices.Clone(fromBytes[int32](raw)), nil
}

// readBack submits everything recorded plus a copy of t into the staging
// buffer, waits, and returns the mapped bytes (valid until the next call).
func (b *Backend) readBack(t *tensor) ([]byte, error) {
	if b.closed {
		return nil, errors.New("wgsl: the backend is closed")
	}
	if b.broken != nil {
		return nil, b.broken
	}
	if err := b.lost.get(); err != nil {
		b.stop(err)
		return nil, err
	}
	if t == nil {
		b.failf("read: nil tensor")
	}
	if b.err == nil && t.freed {
		b.failf("read: %s was freed", t)
	}
	if b.err == nil && !t.ok() {
		b.failf("read: %s was never created", t)
	}
	if b.err == nil && (t.format != model.FormatF32 || len(t.parts) != 1) {
		b.failf("read: %s is a weight", t)
	}
	if err := b.takeErr(); err != nil {
		if b.enc != nil {
			b.submit(nil) // keep the recorded work consistent with the state
		}
		b.takeErr()
		return nil, err
	}
	size := uint64(t.elems()) * 4
	if size == 0 {
		return nil, nil
	}
	if b.staging == nil || b.stSize < size {
		if b.staging != nil {
			b.dropBuffer(b.staging)
		}
		var err error
		b.stSize = max(size, 4096)
		if b.staging, err = b.newBuffer("staging", b.stSize, wgpu.BufferUsageMapRead|wgpu.BufferUsageCopyDst); err != nil {
			b.staging = nil
			return nil, err
		}
	}
	src := t.parts[0].buf
	b.submit(func(enc *wgpu.CommandEncoder) error {
		return enc.CopyBufferToBuffer(src, 0, b.staging, 0, size)
	})
	if err := b.takeErr(); err != nil {
		return nil, err
	}
	out, err := b.mapRead(b.staging, size)
	if cerr := b.checkSubmitted(); cerr != nil {
		return nil, cerr
	}
	return out, err
}

// mapRead waits for the submitted work and returns a copy of the first
// size bytes of the MapRead buffer buf (mapBuffer, per platform, waits).
func (b *Backend) mapRead(buf *wgpu.Buffer, size uint64) ([]byte, error) {
	if b.broken != nil {
		return nil, b.broken
	}
	out, err := b.mapBuffer(buf, size)
	if err != nil && errIsLost(err) {
		b.stop(err)
	}
	return out, err
}

// ---- pipelines and bind groups ---------------------------------------------

// pipeKey identifies a kernel variant: its file and its defines. The access
// pattern of its bindings follows from the file, but is part of the key so a
// mismatch between Go and WGSL is a cache miss, not a wrong layout.
type pipeKey struct {
	shader, defines, access string
}

type pipeline struct {
	pipe   *wgpu.ComputePipeline
	layout *layout
	name   string // the kernel's name in profiles (kernelName)
}

// layout is a bind group layout (a uniform with a dynamic offset, then the
// storage bindings) and its pipeline layout, shared by kernels with the
// same access pattern.
type layout struct {
	bgl        *wgpu.BindGroupLayout
	pipeLayout *wgpu.PipelineLayout
}

// groupKey identifies a bind group by its layout and buffers. The parameter
// slot is a dynamic offset, so it is not part of the key.
type groupKey struct {
	layout *layout
	n      int
	ids    [maxStorageBindings]uint64
}

// bind is one storage binding of a dispatch.
type bind struct {
	buf   *wgpu.Buffer
	id    uint64 // 0 for the dummy buffer
	size  uint64
	write bool
}

func ro(p part) bind { return bind{buf: p.buf, id: p.id, size: p.size} }
func rw(p part) bind { return bind{buf: p.buf, id: p.id, size: p.size, write: true} }

// opt binds t read-only, or the dummy buffer when t is nil.
func (b *Backend) opt(t *tensor) bind {
	if t == nil {
		return bind{buf: b.dummy, size: 16}
	}
	return ro(t.parts[0])
}

func (b *Backend) layoutFor(access string) (*layout, error) {
	if l, ok := b.layouts[access]; ok {
		return l, nil
	}
	entries := []wgpu.BindGroupLayoutEntry{{
		Binding: 0, Visibility: wgpu.ShaderStageCompute,
		Buffer: wgpu.BufferBindingLayout{Type: wgpu.BufferBindingTypeUniform, HasDynamicOffset: true, MinBindingSize: 0},
	}}
	for i, c := range access {
		typ := wgpu.BufferBindingTypeReadOnlyStorage
		if c == 'w' {
			typ = wgpu.BufferBindingTypeStorage
		}
		entries = append(entries, wgpu.BindGroupLayoutEntry{
			Binding: uint32(i + 1), Visibility: wgpu.ShaderStageCompute,
			Buffer: wgpu.BufferBindingLayout{Type: typ},
		})
	}
	bgl, err := b.dev.CreateBindGroupLayout(&wgpu.BindGroupLayoutDescriptor{Label: access, Entries: entries})
	if err != nil {
		return nil, err
	}
	pl, err := b.dev.CreatePipelineLayout(&wgpu.PipelineLayoutDescriptor{Label: access, BindGroupLayouts: []*wgpu.BindGroupLayout{bgl}})
	if err != nil {
		bgl.Release()
		return nil, err
	}
	l := &layout{bgl: bgl, pipeLayout: pl}
	b.layouts[access] = l
	return l, nil
}

func (b *Backend) pipelineFor(shader string, d defines, access string) (*pipeline, error) {
	key := pipeKey{shader, d.key(), access}
	if p, ok := b.pipes[key]; ok {
		return p, nil
	}
	src, err := preprocess(shader, d)
	if err != nil {
		return nil, err
	}
	l, err := b.layoutFor(access)
	if err != nil {
		return nil, err
	}
	label := strings.TrimSuffix(shader, ".wgsl")
	if len(d) > 0 {
		label += "[" + d.key() + "]"
	}
	b.plat.push()
	mod, err := b.dev.CreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: label, WGSLDescriptor: &wgpu.ShaderModuleWGSLDescriptor{Code: src}})
	if err != nil {
		b.plat.pop()
		return nil, fmt.Errorf("compiling %s: %v", label, err)
	}
	defer mod.Release()
	pipe, err := b.dev.CreateComputePipeline(&wgpu.ComputePipelineDescriptor{
		Layout:  l.pipeLayout,
		Compute: wgpu.ProgrammableStageDescriptor{Module: mod, EntryPoint: "main"},
	})
	if perr := b.plat.pop()(); err == nil && perr != nil {
		err = perr
	}
	if err != nil {
		return nil, fmt.Errorf("creating pipeline %s: %v", label, err)
	}
	p := &pipeline{pipe: pipe, layout: l, name: kernelName(shader, d)}
	b.pipes[key] = p
	b.stats.Pipelines++
	return p, nil
}

func (b *Backend) groupFor(l *layout, binds []bind) (*wgpu.BindGroup, error) {
	key := groupKey{layout: l, n: len(binds)}
	for i, x := range binds {
		key.ids[i] = x.id
	}
	if g, ok := b.groups[key]; ok {
		return g, nil
	}
	entries := []wgpu.BindGroupEntry{{Binding: 0, Buffer: b.arena, Offset: 0, Size: b.slot}}
	for i, x := range binds {
		entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(i + 1), Buffer: x.buf, Offset: 0, Size: x.size})
	}
	g, err := b.dev.CreateBindGroup(&wgpu.BindGroupDescriptor{Layout: l.bgl, Entries: entries})
	if err != nil {
		return nil, err
	}
	b.groups[key] = g
	for _, id := range key.ids[:key.n] {
		if id == 0 {
			continue // the dummy buffer, never freed
		}
		if b.byID[id] == nil {
			b.byID[id] = map[groupKey]struct{}{}
		}
		b.byID[id][key] = struct{}{}
	}
	b.stats.BindGroups++
	b.stats.LiveBindGroups++
	return g, nil
}

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

func bytesOf[E any](s []E) []byte   { return wgpu.ToBytes(s) }
func fromBytes[E any](b []byte) []E { return wgpu.FromBytes[E](b) }

func putU32(dst []byte, v uint32) {
	dst[0], dst[1], dst[2], dst[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

var _ model.Backend = (*Backend)(nil)
var _ model.DeviceSampler = (*Backend)(nil)
