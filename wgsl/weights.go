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
// Matrices (rank ≥ 2: in_proj, out_proj, the embedding and lm_head) keep
// their stored format: f16 and bf16 stay packed two per u32, int8 four
// and int4 eight, each row padded to a whole word so it starts on one, and
// the kernels widen or dequantize them in registers (the format picks the
// shader variant, unpack.wgsl). A quantized matrix has a second buffer per
// part of its rows' scales and zeros. Vectors (norm weights, biases,
// dt_bias, A_log, D) and the conv1d weight are widened to f32 on upload
// (the decode step copies the conv's and the norm's into one buffer the
// in_proj product reads, convPack): they are a negligible
// share of the bytes, and keeping them f32 lets a kernel read several of
// them without a variant for every combination of formats.
//
// A matrix larger than one storage binding is split by rows into several
// buffers. The bytes arrive through the spec's streams in chunks and go to
// the GPU through a bounded window, never as a whole tensor in Go memory.
func (b *Backend) Weight(w model.WeightSpec) (model.Tensor, error) {
	t, err := b.weight(w)
	if err != nil {
		return nil, fmt.Errorf("wgsl: tensor %s: %w", w.Name, err)
	}
	return t, nil
}

func (b *Backend) weight(w model.WeightSpec) (*tensor, error) {
	if err := w.Check(); err != nil {
		return nil, err
	}
	n, err := shapeSize(w.Shape)
	if err != nil {
		return nil, err
	}
	t := &tensor{name: w.Name, shape: slices.Clone(w.Shape), kind: model.F32, rows: 1, cols: n, role: roleName(w.Role)}
	if len(w.Shape) >= 2 {
		t.rows = w.Shape[0]
		if t.rows > 0 {
			t.cols = n / t.rows
		}
		t.format = w.Format
		if w.Role == model.RoleConv && !w.Format.Quantized() {
			t.format = model.FormatF32 // widened, as a vector: see convPack
		}
	}
	if w.Format.Quantized() {
		t.group = w.GroupSize
		t.qrow = 1
		if w.Format == model.FormatInt4 {
			t.qrow = model.Groups(t.cols, t.group)
		}
	}
	perWord := 32 / elemBits(t.format)
	t.stride = (t.cols + perWord - 1) / perWord * perWord
	rowBytes := t.rowBytes()
	if rowBytes > b.maxBinding {
		return nil, fmt.Errorf("one row of %d elements needs %d bytes, more than the largest storage binding of %d bytes this device allows",
			t.cols, rowBytes, b.maxBinding)
	}
	perPart := max(1, t.rows)
	if rowBytes > 0 {
		perPart = min(perPart, int(b.maxBinding/rowBytes))
	}
	usage := wgpu.BufferUsageStorage | wgpu.BufferUsageCopyDst | wgpu.BufferUsageCopySrc // CopySrc: convPack copies vectors
	for r := 0; r < max(1, t.rows); r += perPart {
		if err := b.addPart(t, r, min(perPart, max(1, t.rows)-r), usage); err != nil {
			b.Free(t)
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
	if err := b.uploadWeight(t, w, perPart); err != nil {
		b.Free(t)
		return nil, err
	}
	return t, nil
}

// uploadWeight streams a weight's bytes into its parts.
func (b *Backend) uploadWeight(t *tensor, w model.WeightSpec, perPart int) error {
	bufs := make([]*wgpu.Buffer, len(t.parts))
	sizes := make([]uint64, len(t.parts))
	for i, p := range t.parts {
		bufs[i], sizes[i] = p.buf, p.size
	}
	u := &uploader{b: b, bufs: bufs, sizes: sizes, rows: max(1, t.rows), perPart: perPart, win: make([]byte, uploadWindow)}
	src := w.Format.DType()
	if t.format.Quantized() {
		// Packed bytes, placed row by row: the source rows are
		// RowBytes(cols) bytes, the stored rows rowBytes().
		u.srcSize, u.dstSize = 1, 1
		u.cols, u.stride = w.Format.RowBytes(t.cols), int(t.rowBytes())
	} else {
		u.srcSize, u.dstSize = src.Size(), elemBits(t.format)/8
		u.cols, u.stride = t.cols, t.stride
		u.widen = t.format == model.FormatF32 && src != loader.F32
		u.dtype = src
	}
	if t.rows == 0 {
		u.rows = 0
	}
	if err := w.Data(u.chunk); err != nil {
		return err
	}
	if err := u.finish(); err != nil {
		return err
	}
	if t.format.Quantized() {
		return b.uploadScales(t, w)
	}
	return nil
}

// uploadScales reads a quantized weight's scales (and zeros) and writes
// them to each part's q buffer as one u32 per parameter: the scale's f16
// bits in the low half, the zero's in the high half. The scales are kept
// whole while the zeros stream (two bytes per row, or per group of 128:
// under 3 MB for the largest tensor of a 7B model).
func (b *Backend) uploadScales(t *tensor, w model.WeightSpec) error {
	n := t.rows * t.qrow
	words := make([]uint32, n)
	if err := readHalves(w.Scales, words, 0, "scales"); err != nil {
		return err
	}
	if w.Format == model.FormatInt4 {
		if err := readHalves(w.Zeros, words, 16, "zeros"); err != nil {
			return err
		}
	}
	buf := make([]byte, 0, uploadWindow)
	for _, p := range t.parts {
		vals := words[p.row0*t.qrow : (p.row0+p.rows)*t.qrow]
		for off := 0; off < len(vals); {
			k := min(len(vals)-off, uploadWindow/4)
			buf = buf[:0]
			for _, v := range vals[off : off+k] {
				buf = binary.LittleEndian.AppendUint32(buf, v)
			}
			if err := b.plat.writeBuffer(b.queue, p.q.buf, uint64(4*off), buf); err != nil {
				return fmt.Errorf("uploading scales: %v", err)
			}
			off += k
		}
	}
	return nil
}

// readHalves ORs the f16 values of s, shifted left by shift, into dst.
func readHalves(s model.Stream, dst []uint32, shift uint, what string) error {
	var next int64
	var half []byte // the first byte of a value split across chunks
	err := s(func(off int64, b []byte) error {
		if off != next {
			return fmt.Errorf("%s: chunk at byte %d, expected %d", what, off, next)
		}
		next += int64(len(b))
		if next > 2*int64(len(dst)) {
			return fmt.Errorf("%s: the stream holds more than the %d values the shape needs", what, len(dst))
		}
		i := int(off / 2)
		if len(half) == 1 {
			dst[i] |= uint32(uint16(half[0])|uint16(b[0])<<8) << shift
			half, b, i = nil, b[1:], i+1
		}
		for ; len(b) >= 2; b, i = b[2:], i+1 {
			dst[i] |= uint32(binary.LittleEndian.Uint16(b)) << shift
		}
		if len(b) == 1 {
			half = []byte{b[0]}
		}
		return nil
	})
	if err == nil && next != 2*int64(len(dst)) {
		err = fmt.Errorf("%s: the stream held %d bytes, the shape needs %d", what, next, 2*len(dst))
	}
	return err
}

// uploadWindow bounds the bytes staged in Go memory per WriteBuffer.
const uploadWindow = 1 << 20

// uploader places streamed elements at their place in the tensor's parts
// (row padding, part boundaries, widening) through a window of destination
// bytes that is written whenever the next bytes do not fit or go elsewhere.
// WriteBuffer wants 4-byte aligned offsets and sizes, so the window starts
// on a word, and a half-filled last word is carried into the next window.
type uploader struct {
	b                *Backend
	bufs             []*wgpu.Buffer // the parts' buffers
	sizes            []uint64
	rows, cols       int // the source's rows and elements per row
	stride           int // stored elements per row
	srcSize, dstSize int // bytes per element in the stream and stored
	dtype            loader.DType
	perPart          int  // rows per part
	widen            bool // 16-bit source stored as f32
	next             int64
	partial          []byte // bytes of an element split across chunks

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
	total := int64(u.rows) * int64(u.cols)
	for len(data) > 0 {
		e := u.next
		if e >= total {
			return fmt.Errorf("the stream holds more than the %d bytes the shape needs", total*int64(u.srcSize))
		}
		r, c := int(e/int64(u.cols)), int(e%int64(u.cols))
		p := r / u.perPart
		lr := r - p*u.perPart
		// A run is contiguous in the destination: the rest of the row, or
		// with unpadded rows the rest of the part.
		run := int64(u.cols - c)
		if u.stride == u.cols {
			run = int64(min((p+1)*u.perPart, u.rows))*int64(u.cols) - e
		}
		run = min(run, int64(len(data)/u.srcSize))
		src := data[:run*int64(u.srcSize)]
		data = data[len(src):]
		dst := uint64(lr*u.stride+c) * uint64(u.dstSize)
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
	if u.wstart+uint64(size) > u.sizes[u.wpart] {
		return fmt.Errorf("upload past the end of part %d (internal error)", u.wpart)
	}
	if err := u.b.plat.writeBuffer(u.b.queue, u.bufs[u.wpart], u.wstart, u.win[:size]); err != nil {
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

func (u *uploader) finish() error {
	if err := u.flush(); err != nil {
		return err
	}
	if n := int64(u.rows) * int64(u.cols); u.next != n || len(u.partial) != 0 {
		return fmt.Errorf("the stream held %d bytes, the shape needs %d",
			u.next*int64(u.srcSize)+int64(len(u.partial)), n*int64(u.srcSize))
	}
	return nil
}
