package wgsl

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cogentcore/webgpu/wgpu"
	"github.com/mamba2web/mamba2/model"
)

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
	if err := b.plat.writeBuffer(b.queue, t.parts[0].buf, 0, data); err != nil {
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
		zeroKernel.dispatch(b, nil, []bind{rw(p)}, zeroParams{N: words}, ceilDiv(words, zeroKernel.workgroup))
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

// idBufSize is the size of each StageIDs buffer: the ids of 1024 rows.
const idBufSize = 4096

// StageIDs implements model.IDStager: one submission copies the ids
// tensors into a MapRead buffer of their own after everything recorded so
// far; mapping that buffer waits for that submission only, so steps
// recorded after it keep the GPU busy while the host waits.
func (b *Backend) StageIDs(ids ...model.Tensor) func() ([]int32, error) {
	fail := func(err error) func() ([]int32, error) { return func() ([]int32, error) { return nil, err } }
	if b.closed {
		return fail(errors.New("wgsl: the backend is closed"))
	}
	if b.broken != nil {
		return fail(b.broken)
	}
	var ts []*tensor
	size := uint64(0)
	for _, x := range ids {
		t := b.asTensor("stage ids", x, "ids")
		if t == nil || !b.usable("stage ids", t) {
			break
		}
		if t.kind != model.I32 || len(t.parts) != 1 {
			b.failf("stage ids: %s is not an I32 tensor", t)
			break
		}
		ts = append(ts, t)
		size += uint64(t.elems()) * 4
	}
	if size > idBufSize {
		b.failf("stage ids: %d ids are more than the %d one read takes", size/4, idBufSize/4)
	}
	if err := b.takeErr(); err != nil {
		if b.enc != nil {
			b.submit(nil)
		}
		b.takeErr()
		return fail(err)
	}
	var buf *wgpu.Buffer
	if n := len(b.idBufs); n > 0 {
		buf, b.idBufs = b.idBufs[n-1], b.idBufs[:n-1]
	} else {
		var err error
		if buf, err = b.newBuffer("ids read", idBufSize, wgpu.BufferUsageMapRead|wgpu.BufferUsageCopyDst); err != nil {
			return fail(err)
		}
	}
	b.submit(func(enc *wgpu.CommandEncoder) error {
		off := uint64(0)
		for _, t := range ts {
			n := uint64(t.elems()) * 4
			if err := enc.CopyBufferToBuffer(t.parts[0].buf, 0, buf, off, n); err != nil {
				return err
			}
			off += n
		}
		return nil
	})
	if err := b.takeErr(); err != nil {
		b.idBufs = append(b.idBufs, buf)
		return fail(err)
	}
	return func() ([]int32, error) {
		if b.closed {
			return nil, errors.New("wgsl: the backend is closed")
		}
		raw, err := b.mapRead(buf, size)
		if err == nil {
			b.idBufs = append(b.idBufs, buf) // unmapped again by mapBuffer
		}
		if cerr := b.checkSubmitted(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		return slices.Clone(fromBytes[int32](raw)), nil
	}
}

var _ model.IDStager = (*Backend)(nil)

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

func bytesOf[E any](s []E) []byte   { return wgpu.ToBytes(s) }
func fromBytes[E any](b []byte) []E { return wgpu.FromBytes[E](b) }

func putU32(dst []byte, v uint32) {
	dst[0], dst[1], dst[2], dst[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
