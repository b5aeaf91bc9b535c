//go:build !js

package wgsl

import (
	"fmt"

	"github.com/cogentcore/webgpu/wgpu"
)

// timer is the query set of timestamps and the buffers they are resolved
// into and read back from.
type timer struct {
	b        *Backend
	qs       *wgpu.QuerySet
	resolved *wgpu.Buffer // QueryResolve
	out      *wgpu.Buffer // MapRead
}

func newTimer(b *Backend, n int) (*timer, error) {
	qs, err := b.dev.CreateQuerySet(&wgpu.QuerySetDescriptor{Label: "kernel times", Type: wgpu.QueryTypeTimestamp, Count: uint32(n)})
	if err != nil {
		return nil, err
	}
	t := &timer{b: b, qs: qs}
	if t.resolved, err = b.newBuffer("timestamps", uint64(n)*8, wgpu.BufferUsageQueryResolve|wgpu.BufferUsageCopySrc); err != nil {
		t.release()
		return nil, err
	}
	if t.out, err = b.newBuffer("timestamps read back", uint64(n)*8, wgpu.BufferUsageMapRead|wgpu.BufferUsageCopyDst); err != nil {
		t.release()
		return nil, err
	}
	return t, nil
}

// write records timestamp i on the encoder, outside any pass.
func (t *timer) write(enc *wgpu.CommandEncoder, i uint32) error { return enc.WriteTimestamp(t.qs, i) }

// resolve records the copy of timestamps [0, n) into the read-back buffer.
func (t *timer) resolve(enc *wgpu.CommandEncoder, n uint32) error {
	if err := enc.ResolveQuerySet(t.qs, 0, n, t.resolved, 0); err != nil {
		return fmt.Errorf("wgsl: resolving timestamps: %v", err)
	}
	if err := enc.CopyBufferToBuffer(t.resolved, 0, t.out, 0, uint64(n)*8); err != nil {
		return fmt.Errorf("wgsl: copying timestamps: %v", err)
	}
	return nil
}

// read waits for the submission and returns its n timestamps, in ticks.
func (t *timer) read(b *Backend, n int) ([]uint64, error) {
	raw, err := b.mapRead(t.out, uint64(n)*8)
	if err != nil {
		return nil, err
	}
	return fromBytes[uint64](raw), nil
}

func (t *timer) release() {
	if t.qs != nil {
		t.qs.Release()
		t.qs = nil
	}
	for _, buf := range []*wgpu.Buffer{t.resolved, t.out} {
		if buf != nil {
			t.b.dropBuffer(buf)
		}
	}
	t.resolved, t.out = nil, nil
}
