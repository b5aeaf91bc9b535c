package wgsl

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cogentcore/webgpu/wgpu"
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
	// MatvecLanes is how many invocations share one row of a weight in the
	// matrix-vector kernel that decodes (8, 16, 32 or 64; 0 means 64, or
	// the environment's MAMBA2_WGSL_MATVEC_LANES). Fewer lanes give each
	// invocation more of the row and a workgroup more rows, so the
	// reduction at the end is shorter; it is a tuning knob for benchmarks.
	MatvecLanes int
	// MatvecTokens is the most tokens a product runs through the
	// matrix-vector kernel rather than the tiled one (1 to 64; 0 means 8, or
	// the environment's MAMBA2_WGSL_MATVEC_TOKENS). That kernel reads the
	// weight once per 4 tokens, and decodes in 3 dispatches per layer (norm
	// and conv inside in_proj, grouped norm and residual inside out_proj);
	// the tiled one reads it once per 64 tokens but takes up to 8. It is a
	// tuning knob for benchmarks of batched decoding.
	MatvecTokens int
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
	// NoSubgroups keeps the kernels on their workgroup-memory reductions
	// even where the device has the subgroups feature (subgroups.go), to
	// cross-check and benchmark the two variants on one engine. The
	// environment variable MAMBA2_WGSL_SUBGROUPS=0 sets it for every
	// backend of the process.
	NoSubgroups bool
}

// ErrSoftwareAdapter is matched by New's error when Options.RefuseSoftware
// turned down an adapter that runs on the CPU.
var ErrSoftwareAdapter = errors.New("the only WebGPU adapter is a software renderer on the CPU")

// an error that starts with "no WebGPU adapter:".
func New(opts Options) (*Backend, error) {
	lanes, err := matvecLanes(opts.MatvecLanes)
	if err != nil {
		return nil, err
	}
	mvTokens, err := matvecTokens(opts.MatvecTokens)
	if err != nil {
		return nil, err
	}
	noSub, err := noSubgroupsFromEnv()
	if err != nil {
		return nil, err
	}
	opts.NoSubgroups = opts.NoSubgroups || noSub
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
		opts: opts, plat: plat, dev: dev, queue: dev.GetQueue(), info: info, lost: lost, lanes: lanes, mvTokens: mvTokens,
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

// maxStorageBindings is the most storage buffers one kernel binds (the
// output pass of ssm_scan); WebGPU's default limit is 8.
const maxStorageBindings = 8

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
// type, and the subgroup sizes where the kernels use subgroups.
func (b *Backend) Describe() string {
	s := describeAdapter(b.info)
	if sg := b.describeSubgroups(); sg != "" {
		s = s[:len(s)-1] + sg + ")"
	}
	return s
}

// describeAdapter names an adapter for a message.
func describeAdapter(info wgpu.AdapterInfo) string {
	name := info.DriverDescription
	if name == "" {
		name = info.Name
	}
	return fmt.Sprintf("%q (%s, %s)", name, info.BackendType, info.AdapterType)
}

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
	b.closePass()
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

// matvecLanes checks Options.MatvecLanes, or, when it is 0, the
// environment's MAMBA2_WGSL_MATVEC_LANES, and returns the lanes per row of
// the matrix-vector kernel.
func matvecLanes(n int) (int, error) {
	src := "Options.MatvecLanes"
	if n == 0 {
		v := os.Getenv("MAMBA2_WGSL_MATVEC_LANES")
		if v == "" {
			return 64, nil
		}
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			n = -1
		}
		src = "MAMBA2_WGSL_MATVEC_LANES"
	}
	switch n {
	case 8, 16, 32, 64:
		return n, nil
	}
	return 0, fmt.Errorf("wgsl: %s is %d: want 8, 16, 32 or 64 lanes per row", src, n)
}

// defaultMatvecTokens is Options.MatvecTokens' default: batches of up to 8
// decode in 3 dispatches per layer, reading each weight twice at 8.
const defaultMatvecTokens = 8

// matvecTokens checks Options.MatvecTokens, or, when it is 0, the
// environment's MAMBA2_WGSL_MATVEC_TOKENS, and returns the most tokens of
// a matrix-vector product.
func matvecTokens(n int) (int, error) {
	setting := fmt.Sprintf("Options.MatvecTokens is %d", n)
	if n == 0 {
		v := os.Getenv("MAMBA2_WGSL_MATVEC_TOKENS")
		if v == "" {
			return defaultMatvecTokens, nil
		}
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			n = -1
		}
		setting = fmt.Sprintf("MAMBA2_WGSL_MATVEC_TOKENS=%q", v)
	}
	if n < 1 || n > 64 {
		return 0, fmt.Errorf("wgsl: %s: want 1 to 64 tokens", setting)
	}
	return n, nil
}
