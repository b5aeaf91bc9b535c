package wgsl

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/cogentcore/webgpu/wgpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// Weight implements model.Backend.
//
// Matrices (rank ≥ 2: in_proj, out_proj, conv1d, the embedding and lm_head)
// keep their checkpoint format: f16 and bf16 stay packed two per u32, each
// row padded to an even length so it starts on a word, and the kernels
// widen them (the format picks the shader variant). Vectors (norm weights,
// biases, dt_bias, A_log, D) are widened to f32 on upload: they are a
// negligible share of the bytes, and keeping them f32 lets a kernel read
// several of them without a variant for every combination of formats.
//
// A matrix larger than one storage binding is split by rows into several
// buffers. The bytes arrive through w.Stream in chunks and go to the GPU
// through a bounded window, never as a whole tensor in Go memory.
func (b *Backend) Weight(w model.WeightSpec) (model.Tensor, error) {
	t, err := b.weight(w)
	if err != nil {
		return nil, fmt.Errorf("wgsl: tensor %s: %w", w.Name, err)
	}
	return t, nil
}

func (b *Backend) weight(w model.WeightSpec) (*tensor, error) {
	srcSize := w.DType.Size()
	if srcSize == 0 {
		return nil, fmt.Errorf("unsupported dtype %s (want F32, F16 or BF16)", w.DType)
	}
	if w.Stream == nil {
		return nil, fmt.Errorf("no data stream")
	}
	n, err := shapeSize(w.Shape)
	if err != nil {
		return nil, err
	}
	t := &tensor{name: w.Name, shape: slices.Clone(w.Shape), kind: model.F32, rows: 1, cols: n, role: roleOf(w.Name)}
	if len(w.Shape) >= 2 {
		t.rows = w.Shape[0]
		if t.rows > 0 {
			t.cols = n / t.rows
		}
		switch w.DType {
		case loader.F16:
			t.format = fmtF16
		case loader.BF16:
			t.format = fmtBF16
		}
	}
	t.stride = t.cols
	if t.format != fmtF32 {
		t.stride += t.cols & 1
	}
	rowBytes := uint64(t.stride) * uint64(t.format.elemBytes())
	if rowBytes > b.maxBinding {
		return nil, fmt.Errorf("one row of %d elements needs %d bytes, more than the largest storage binding of %d bytes this device allows",
			t.cols, rowBytes, b.maxBinding)
	}
	perPart := max(1, t.rows)
	if rowBytes > 0 {
		perPart = min(perPart, int(b.maxBinding/rowBytes))
	}
	usage := wgpu.BufferUsageStorage | wgpu.BufferUsageCopyDst
	for r := 0; r < max(1, t.rows); r += perPart {
		if err := b.addPart(t, r, min(perPart, max(1, t.rows)-r), usage); err != nil {
			return nil, err
		}
	}
	if t.rows == 0 {
		t.parts[0].rows = 0
	}
	if len(t.parts) > 1 {
		b.stats.SplitWeights++
	}
	if b.enc != nil {
		b.submit(nil) // uploads must not overtake recorded work
	}
	u := &uploader{b: b, t: t, dtype: w.DType, srcSize: srcSize, perPart: perPart,
		widen: t.format == fmtF32 && w.DType != loader.F32, win: make([]byte, uploadWindow)}
	if err := w.Stream(u.chunk); err != nil {
		return nil, err
	}
	if err := u.finish(int64(n)); err != nil {
		return nil, err
	}
	return t, nil
}

// uploadWindow bounds the bytes staged in Go memory per WriteBuffer.
const uploadWindow = 1 << 20

// uploader places streamed elements at their place in the tensor's parts
// (row padding, part boundaries, widening) through a window of destination
// bytes that is written whenever the next bytes do not fit or go elsewhere.
// WriteBuffer wants 4-byte aligned offsets and sizes, so the window starts
// on a word, and a half-filled last word is carried into the next window.
type uploader struct {
	b       *Backend
	t       *tensor
	dtype   loader.DType
	srcSize int
	perPart int  // rows per part
	widen   bool // 16-bit source stored as f32
	next    int64
	partial []byte // bytes of an element split across chunks

	win    []byte
	wn     int // bytes used in win
	wpart  int
	wstart uint64 // destination offset of win[0], a multiple of 4
	carry  struct {
		part  int
		start uint64
		bytes []byte
	}
	tmp []byte
}

func (u *uploader) chunk(off int64, data []byte) error {
	if want := u.next*int64(u.srcSize) + int64(len(u.partial)); off != want {
		return fmt.Errorf("stream chunk at byte %d, expected %d", off, want)
	}
	if len(u.partial) > 0 {
		need := u.srcSize - len(u.partial)
		if len(data) < need {
			u.partial = append(u.partial, data...)
			return nil
		}
		el := append(u.partial, data[:need]...)
		u.partial = nil
		data = data[need:]
		if err := u.elements(el); err != nil {
			return err
		}
	}
	whole := len(data) / u.srcSize * u.srcSize
	if err := u.elements(data[:whole]); err != nil {
		return err
	}
	u.partial = append([]byte(nil), data[whole:]...)
	return nil
}

// elements places whole source elements, starting at element u.next.
func (u *uploader) elements(data []byte) error {
	t := u.t
	total := int64(t.elems())
	for len(data) > 0 {
		e := u.next
		if e >= total {
			return fmt.Errorf("the stream holds more bytes than shape %v needs (%d)", t.shape, total*int64(u.srcSize))
		}
		r, c := int(e/int64(t.cols)), int(e%int64(t.cols))
		p := r / u.perPart
		lr := r - p*u.perPart
		// A run is contiguous in the destination: the rest of the row, or
		// with unpadded rows the rest of the part.
		run := int64(t.cols - c)
		if t.stride == t.cols {
			run = int64(min((p+1)*u.perPart, t.rows))*int64(t.cols) - e
		}
		run = min(run, int64(len(data)/u.srcSize))
		src := data[:run*int64(u.srcSize)]
		data = data[len(src):]
		dst := uint64(lr*t.stride+c) * uint64(t.format.elemBytes())
		for len(src) > 0 {
			// Convert at most a window's worth at a time.
			n := min(len(src), uploadWindow/4*u.srcSize)
			out := src[:n]
			if u.widen {
				u.tmp = widen(u.tmp[:0], u.dtype, src[:n])
				out = u.tmp
			}
			if err := u.put(p, dst, out); err != nil {
				return err
			}
			dst += uint64(len(out))
			src = src[n:]
		}
		u.next += run
	}
	return nil
}

func widen(dst []byte, dt loader.DType, src []byte) []byte {
	for i := 0; i+2 <= len(src); i += 2 {
		h := binary.LittleEndian.Uint16(src[i:])
		var f float32
		if dt == loader.BF16 {
			f = math.Float32frombits(uint32(h) << 16)
		} else {
			f = loader.HalfToFloat32(h)
		}
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(f))
	}
	return dst
}

// put copies data to byte dst of part p through the window.
func (u *uploader) put(p int, dst uint64, data []byte) error {
	for len(data) > 0 {
		if u.wn > 0 && (p != u.wpart || dst < u.wstart+uint64(u.wn) || dst-u.wstart >= uint64(len(u.win))) {
			if err := u.flush(); err != nil {
				return err
			}
		}
		if u.wn == 0 {
			u.wpart, u.wstart = p, dst&^3
			if c := u.carry; c.bytes != nil && c.part == p && c.start == u.wstart {
				u.wn = copy(u.win, c.bytes)
			}
			u.carry.bytes = nil
		}
		pos := int(dst - u.wstart)
		n := copy(u.win[pos:], data)
		u.wn = pos + n
		data = data[n:]
		dst += uint64(n)
	}
	return nil
}

// flush writes the window, padded to a word with zeros, and carries a
// half-filled last word over to the next window.
func (u *uploader) flush() error {
	if u.wn == 0 {
		return nil
	}
	size := (u.wn + 3) &^ 3
	part := u.t.parts[u.wpart]
	if u.wstart+uint64(size) > part.size {
		return fmt.Errorf("upload past the end of part %d (internal error)", u.wpart)
	}
	if err := u.b.queue.WriteBuffer(part.buf, u.wstart, u.win[:size]); err != nil {
		return fmt.Errorf("uploading: %v", err)
	}
	if rem := u.wn & 3; rem != 0 {
		whole := u.wn &^ 3
		u.carry.part, u.carry.start = u.wpart, u.wstart+uint64(whole)
		u.carry.bytes = append(u.carry.bytes[:0], u.win[whole:u.wn]...)
	}
	clear(u.win[:size])
	u.wn = 0
	return nil
}

func (u *uploader) finish(n int64) error {
	if err := u.flush(); err != nil {
		return err
	}
	if u.next != n || len(u.partial) != 0 {
		return fmt.Errorf("the stream held %d bytes, shape %v needs %d",
			u.next*int64(u.srcSize)+int64(len(u.partial)), u.t.shape, n*int64(u.srcSize))
	}
	return nil
}
