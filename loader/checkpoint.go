package loader

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path"
	"sort"
	"strings"

	"github.com/mamba2web/mamba2/loader/pytorch"
)

// File names in a Hugging Face model folder.
const (
	SingleFile = "model.safetensors"
	IndexFile  = "model.safetensors.index.json"
	// PyTorch's torch.save files, read only where no safetensors exist
	// (the original state-spaces checkpoints ship nothing else).
	PyTorchFile      = "pytorch_model.bin"
	PyTorchIndexFile = "pytorch_model.bin.index.json"
)

// Checkpoint is the set of tensors of one model, possibly spread over shards.
// It holds only headers; tensor bytes are read on demand.
type Checkpoint struct {
	fsys    fs.FS
	tensors map[string]Info
	files   []string
}

// Open finds the weights in fsys and validates every header: safetensors
// (model.safetensors, or the index and its shards), else PyTorch's
// pytorch_model.bin (or its index and shards), whose pickle is read by a
// restricted unpickler that understands tensor storage and nothing else
// (loader/pytorch): it never runs code, and names any other global it
// meets.
func Open(fsys fs.FS) (*Checkpoint, error) {
	for _, idx := range []string{IndexFile, "", PyTorchIndexFile, PyTorchFile} {
		if idx == "" { // between the two indexes: the single safetensors file
			if _, err := fs.Stat(fsys, SingleFile); err == nil {
				return OpenFiles(fsys, SingleFile)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			continue
		}
		if idx == PyTorchFile {
			if _, err := fs.Stat(fsys, PyTorchFile); err == nil {
				return OpenFiles(fsys, PyTorchFile)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			continue
		}
		data, err := ReadSideFile(fsys, idx)
		if err == nil {
			return openIndex(fsys, idx, data)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading %s: %w", idx, err)
		}
	}
	return nil, fmt.Errorf("no weights found: none of %s, %s, %s or %s", SingleFile, IndexFile, PyTorchFile, PyTorchIndexFile)
}

// OpenFiles reads the headers of the named safetensors files in fsys. A tensor
// name that appears in two files is an error.
func OpenFiles(fsys fs.FS, files ...string) (*Checkpoint, error) {
	c := &Checkpoint{fsys: fsys, tensors: map[string]Info{}, files: files}
	for _, f := range files {
		read := readHeader
		if !strings.HasSuffix(f, ".safetensors") {
			read = readPyTorch
		}
		infos, err := read(fsys, f)
		if err != nil {
			return nil, err
		}
		for _, in := range infos {
			if prev, dup := c.tensors[in.Name]; dup {
				return nil, fmt.Errorf("tensor %q is in both %s and %s", in.Name, prev.File, f)
			}
			c.tensors[in.Name] = in
		}
	}
	return c, nil
}

// parseIndex reads the weight map of an index file and lists the shard
// files it names, sorted, each checked to be a plain relative path.
func parseIndex(data []byte) (weightMap map[string]string, files []string, err error) {
	return parseIndexOf(IndexFile, data)
}

// parseIndexOf is parseIndex for the index file called index.
func parseIndexOf(index string, data []byte) (weightMap map[string]string, files []string, err error) {
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, nil, fmt.Errorf("%s: %v", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, fmt.Errorf("%s: weight_map is empty", index)
	}
	ext := ".safetensors"
	if index == PyTorchIndexFile {
		ext = ".bin"
	}
	seen := map[string]bool{}
	for _, f := range idx.WeightMap {
		if !fs.ValidPath(f) || path.Clean(f) != f {
			return nil, nil, fmt.Errorf("%s: shard name %q is not a plain relative path", index, f)
		}
		if !strings.HasSuffix(f, ext) {
			return nil, nil, fmt.Errorf("%s: shard name %q does not end in %s", index, f, ext)
		}
		if !seen[f] {
			seen[f] = true
			files = append(files, f)
		}
	}
	sort.Strings(files)
	return idx.WeightMap, files, nil
}

func openIndex(fsys fs.FS, index string, data []byte) (*Checkpoint, error) {
	weightMap, files, err := parseIndexOf(index, data)
	if err != nil {
		return nil, err
	}
	c, err := OpenFiles(fsys, files...)
	if err != nil {
		return nil, err
	}
	for name, f := range weightMap {
		in, ok := c.tensors[name]
		if !ok {
			return nil, fmt.Errorf("%s: tensor %q is mapped to %s, which does not contain it", index, name, f)
		}
		if in.File != f {
			return nil, fmt.Errorf("%s: tensor %q is mapped to %s but found in %s", index, name, f, in.File)
		}
	}
	return c, nil
}

// Files lists the safetensors files of the checkpoint.
func (c *Checkpoint) Files() []string { return c.files }

// Names lists every tensor name, sorted.
func (c *Checkpoint) Names() []string {
	names := make([]string, 0, len(c.tensors))
	for n := range c.tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Info describes a tensor; ok is false when the checkpoint lacks it.
func (c *Checkpoint) Info(name string) (Info, bool) {
	in, ok := c.tensors[name]
	return in, ok
}

// ChunkSize is how many bytes Stream hands over at a time: large enough to
// amortise a GPU upload call, small enough never to hold a whole tensor.
const ChunkSize = 4 << 20

// RangeOpener is implemented by files for which one sequential read of a
// byte range is much cheaper than many ReadAt calls: an HTTP file, where
// each ReadAt is a request but a range is one streamed response. Stream
// prefers it to io.ReaderAt.
type RangeOpener interface {
	// OpenRange returns a reader of the n bytes at off; it reads exactly
	// those bytes, then io.EOF.
	OpenRange(off, n int64) (io.ReadCloser, error)
}

// Stream reads the bytes of a tensor in order, handing fn chunks of at most
// chunk bytes (ChunkSize when chunk <= 0). fn must not keep the slice. Over
// HTTP (a file with OpenRange) the whole tensor is one request, read
// chunk by chunk as it arrives, so memory stays at one chunk.
func (c *Checkpoint) Stream(name string, chunk int, fn func(off int64, b []byte) error) error {
	in, ok := c.tensors[name]
	if !ok {
		return fmt.Errorf("tensor %q not found", name)
	}
	if chunk <= 0 {
		chunk = ChunkSize
	}
	f, err := c.fsys.Open(in.File)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader
	if ro, ok := f.(RangeOpener); ok {
		rc, err := ro.OpenRange(in.Begin, in.Size)
		if err != nil {
			return fmt.Errorf("tensor %q in %s: %w", name, in.File, err)
		}
		defer rc.Close()
		r = rc
	} else if ra, ok := f.(io.ReaderAt); ok {
		r = io.NewSectionReader(ra, in.Begin, in.Size)
	} else if s, ok := f.(io.Seeker); ok {
		if _, err := s.Seek(in.Begin, io.SeekStart); err != nil {
			return err
		}
		r = io.LimitReader(f, in.Size)
	} else {
		if _, err := io.CopyN(io.Discard, f, in.Begin); err != nil {
			return fmt.Errorf("%s: %w", in.File, truncated(err))
		}
		r = io.LimitReader(f, in.Size)
	}
	buf := make([]byte, min(int64(chunk), max(in.Size, 1)))
	for off := int64(0); off < in.Size; {
		n := int(min(int64(len(buf)), in.Size-off))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("tensor %q in %s: %w", name, in.File, truncated(err))
		}
		if err := fn(off, buf[:n]); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// Float32s reads a whole tensor converted to float32. It is for the CPU path
// and small tensors; GPU uploads use Stream.
func (c *Checkpoint) Float32s(name string) ([]float32, error) {
	in, ok := c.tensors[name]
	if !ok {
		return nil, fmt.Errorf("tensor %q not found", name)
	}
	out := make([]float32, in.Elements())
	es := int64(in.DType.Size())
	err := c.Stream(name, 0, func(off int64, b []byte) error {
		Decode(out[off/es:], in.DType, b)
		return nil
	})
	return out, err
}

// Decode converts little-endian elements of type dt in src to float32 in dst.
// Chunks from Stream always hold whole elements, since ChunkSize is a
// multiple of 8. F64 values are rounded to the nearest float32.
func Decode(dst []float32, dt DType, src []byte) {
	switch dt {
	case F64:
		for i := 0; i+8 <= len(src); i += 8 {
			dst[i/8] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[i:])))
		}
	case F32:
		for i := 0; i+4 <= len(src); i += 4 {
			dst[i/4] = math.Float32frombits(binary.LittleEndian.Uint32(src[i:]))
		}
	case F16:
		for i := 0; i+2 <= len(src); i += 2 {
			dst[i/2] = HalfToFloat32(binary.LittleEndian.Uint16(src[i:]))
		}
	case BF16:
		for i := 0; i+2 <= len(src); i += 2 {
			dst[i/2] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[i:])) << 16)
		}
	case I8:
		for i, b := range src {
			dst[i] = float32(int8(b))
		}
	case U8:
		for i, b := range src {
			dst[i] = float32(b)
		}
	}
}

// HalfToFloat32 converts an IEEE 754 binary16 value to float32 exactly.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or nan
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: value = mant · 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// Float32ToHalf rounds a float32 to the nearest binary16 (ties to even).
func Float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	if b&0x7fffffff > 0x7f800000 { // nan
		return sign | 0x7e00
	}
	if exp >= 0x1f {
		return sign | 0x7c00
	}
	if exp <= 0 {
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		half := uint32(1) << (shift - 1)
		r := mant >> shift
		rem := mant & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, which is the correct rounding
	}
	return sign | uint16(r)
}

// readPyTorch lists the tensors of a torch.save file through its
// directory and pickle only (pytorch.Read); the weights stay where they
// are, to be streamed like safetensors'. Tied weights share bytes there.
func readPyTorch(fsys fs.FS, name string) ([]Info, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	ra, ok := f.(io.ReaderAt)
	if !ok {
		return nil, fmt.Errorf("%s: cannot be read at offsets (%T), as a PyTorch file must be", name, f)
	}
	var head [pytorch.PeekSize]byte
	n, err := ra.ReadAt(head[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if !pytorch.IsPyTorch(head[:n]) {
		return nil, fmt.Errorf("%s is not a PyTorch checkpoint (neither a torch.save zip nor its legacy format)", name)
	}
	ts, err := pytorch.Read(ra, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	infos := make([]Info, 0, len(ts))
	for _, t := range ts {
		dt := DType(t.DType)
		if dt.Size() == 0 {
			return nil, fmt.Errorf("%s: tensor %q is %s; the runtime reads F32, F16 and BF16 weights", name, t.Name, t.DType)
		}
		infos = append(infos, Info{Name: t.Name, DType: dt, Shape: t.Shape, File: name, Begin: t.Offset, Size: t.Size})
	}
	return infos, nil
}
