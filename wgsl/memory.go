package wgsl

import (
	"fmt"
	"math"
	"slices"

	"github.com/cogentcore/webgpu/wgpu"
	"github.com/mamba2web/mamba2/model"
)

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
		b.plat.forget(g)
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
		b.dropPacks(p.id)
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
