package wgsl

import (
	"fmt"

	"github.com/cogentcore/webgpu/wgpu"

	"github.com/mamba2web/mamba2/model"
)

// SSM implements model.Backend (SPEC §2.1). Prompts (a.Chunked, L > 1) run
// the chunked SSD form as five passes (ssm_scan.wgsl); single decoded tokens,
// and everything when Options.SequentialScan is set, run the recurrence
// kernel (ssm_step.wgsl), which carries the state in registers token by
// token. The dt clamp applies exactly when a.Chunked is set, as on the CPU.
func (b *Backend) SSM(y, xbc, proj, state, dtBias, aLog, d model.Tensor, a model.SSMArgs) {
	const op = "ssm"
	yt, xt, pt, st := b.need(op, "y", y), b.need(op, "xbc", xbc), b.need(op, "proj", proj), b.need(op, "state", state)
	bt, at, dt := b.need(op, "dt_bias", dtBias), b.need(op, "A_log", aLog), b.need(op, "D", d)
	if yt == nil || xt == nil || pt == nil || st == nil || bt == nil || at == nil || dt == nil {
		return
	}
	c := a.Config
	H, P, N, G, I := c.Heads, c.HeadDim, c.State, c.Groups, c.Inner()
	CD, PD := c.ConvDim(), c.ProjDim()
	if H <= 0 || P <= 0 || N <= 0 || G <= 0 || H%G != 0 {
		b.failf("%s: bad config: %d heads, %d groups", op, H, G)
		return
	}
	if len(xt.shape) != 3 || xt.shape[2] != CD {
		b.failf("%s: xbc has shape %v, want [B, L, %d]", op, xt.shape, CD)
		return
	}
	B, L := xt.shape[0], xt.shape[1]
	if !b.activation(op, "y", yt, B*L*I) || !b.activation(op, "proj", pt, B*L*PD) ||
		!b.activation(op, "state", st, B*H*P*N) || !b.vector(op, "dt_bias", bt, H) ||
		!b.vector(op, "A_log", at, H) || !b.vector(op, "D", dt, H) || B*L == 0 {
		return
	}
	if N > 32*maxStatePerLane {
		b.failf("%s: state size %d is above the supported %d", op, N, 32*maxStatePerLane)
		return
	}
	if a.Chunked && L > 1 && !b.opts.SequentialScan {
		b.ssmChunked(yt, xt, pt, st, bt, at, dt, a, B, L)
		return
	}
	b.ssmStep(yt, xt, pt, st, bt, at, dt, a, B, L)
}

// ssmStep records the recurrence kernel; the clamp follows a.Chunked.
func (b *Backend) ssmStep(yt, xt, pt, st, bt, at, dt *tensor, a model.SSMArgs, B, L int) {
	c := a.Config
	npl := (c.State + 31) / 32
	ssmStepKernel.dispatch(b, defs(fmt.Sprintf("NPL=%du", npl)),
		[]bind{ro(xt.parts[0]), ro(pt.parts[0]), rw(st.parts[0]), ro(bt.parts[0]), ro(at.parts[0]), ro(dt.parts[0]), rw(yt.parts[0])},
		ssmParams(c, B, L, a.Chunked, a.Gate),
		uint32(B*c.Heads)*ceilDiv(uint32(c.HeadDim), 8))
}

// ssmParams are the parameters ssm_step.wgsl and ssm_scan.wgsl share.
func ssmParams(c model.Config, B, L int, clamp, gate bool) ssmStepParams {
	H, P, N, G, I := c.Heads, c.HeadDim, c.State, c.Groups, c.Inner()
	CD, PD := c.ConvDim(), c.ProjDim()
	return ssmStepParams{B: uint32(B), L: uint32(L), H: uint32(H), P: uint32(P), N: uint32(N), Hpg: uint32(H / G),
		I: uint32(I), GN: uint32(G * N), CD: uint32(CD), PD: uint32(PD), Dtoff: uint32(I + CD), ClampOn: b2u(clamp),
		Lo: finite(c.TimeStepMin), Hi: finite(c.TimeStepMax), Gate: b2u(gate)}
}

// maxStatePerLane bounds the state elements one invocation of ssm_step keeps
// in registers (N ≤ 32·maxStatePerLane).
const maxStatePerLane = 16

// ssmChunked records the five passes of ssm_scan.wgsl. Their intermediates
// live in scratch buffers owned by the backend, grown on demand and reused by
// every layer (the passes are ordered within the submission). When they
// would not fit in a storage binding it falls back to the recurrence kernel,
// which needs no scratch and computes the same values.
func (b *Backend) ssmChunked(yt, xt, pt, st, bt, at, dt *tensor, a model.SSMArgs, B, L int) {
	c := a.Config
	H, P, N, G := c.Heads, c.HeadDim, c.State, c.Groups
	Q := min(c.ChunkSize, L)
	nc := (L + Q - 1) / Q
	names := []string{"ssm.dt", "ssm.cum", "ssm.cb", "ssm.states"}
	sizes := []int{B * H * L, B * H * L, B * G * nc * Q * Q, B * H * nc * P * N}
	for _, n := range sizes {
		if uint64(n)*4 > b.maxBinding {
			b.ssmStep(yt, xt, pt, st, bt, at, dt, a, B, L)
			return
		}
	}
	var scr [4]part
	for i, name := range names {
		t := b.scratchFor(name, sizes[i])
		if t == nil {
			return
		}
		scr[i] = t.parts[0]
	}
	pr := ssmScanParams{ssmStepParams: ssmParams(c, B, L, true, a.Gate), Q: uint32(Q), Nc: uint32(nc), G: uint32(G)}
	dtb, cumb, cb, cs := scr[0], scr[1], scr[2], scr[3]
	tiles := func(n int) uint32 { return ceilDiv(uint32(n), 64) } // tile.wgsl's edge
	ssmCumKernel.dispatch(b, nil,
		[]bind{ro(pt.parts[0]), ro(bt.parts[0]), ro(at.parts[0]), rw(dtb), rw(cumb)}, pr, uint32(B*H*nc))
	ssmCBKernel.dispatch(b, nil,
		[]bind{ro(xt.parts[0]), rw(cb)}, pr, uint32(B*G*nc)*tiles(Q)*tiles(Q))
	ssmStatesKernel.dispatch(b, nil,
		[]bind{ro(xt.parts[0]), ro(dtb), ro(cumb), rw(cs)}, pr, uint32(B*H*nc)*tiles(P)*tiles(N))
	ssmCarryKernel.dispatch(b, nil,
		[]bind{ro(cumb), rw(cs), rw(st.parts[0])}, pr, ceilDiv(uint32(B*H*P*N), ssmCarryKernel.workgroup))
	ssmOutKernel.dispatch(b, nil,
		[]bind{ro(xt.parts[0]), ro(cb), ro(dtb), ro(cumb), ro(cs), ro(dt.parts[0]), rw(yt.parts[0]), ro(pt.parts[0])}, pr,
		uint32(B*H*nc)*tiles(Q)*tiles(P))
}

// scratchFor returns the backend's scratch buffer called name with at least
// n floats, replacing a smaller one, which is freed (after the next
// submission, since recorded work may still use it).
func (b *Backend) scratchFor(name string, n int) *tensor {
	old, ok := b.scratch[name]
	if ok && old.elems() >= n {
		return old
	}
	if ok {
		b.Free(old)
		delete(b.scratch, name)
	}
	t := &tensor{name: name, shape: []int{n}, kind: model.F32, format: model.FormatF32, rows: 1, cols: n, stride: n}
	if err := b.addPart(t, 0, 1, wgpu.BufferUsageStorage); err != nil {
		b.fail(err)
		return nil
	}
	b.scratch[name] = t
	return t
}
