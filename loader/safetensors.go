// Package loader reads model checkpoints in the safetensors format, from a
// single file or a sharded set described by model.safetensors.index.json.
//
// Every number in a safetensors header is untrusted input: the header length
// is bounded, each tensor's byte range must lie inside the data section, ranges
// may not overlap, and shape × dtype size must equal the byte length. A file
// that breaks any of these rules is rejected with an error naming the tensor,
// before any of its data is used.
//
// Files are reached through an fs.FS whose files implement io.ReaderAt (a local
// folder, an embedded model, or an HTTP source doing Range requests), so the
// loader reads only the header at open time and streams tensor bytes on demand.
package loader

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"sort"
)

// MaxHeaderSize bounds the JSON header of a safetensors file. Real headers are
// tens of kilobytes even for thousand-tensor checkpoints; 100 MB matches the
// limit of the reference implementation.
const MaxHeaderSize = 100 << 20

// DType is a tensor element type.
type DType string

// The element types the runtime reads.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
)

// Size is the number of bytes of one element, or 0 for an unsupported type.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	}
	return 0
}

// Info describes one tensor of a checkpoint.
type Info struct {
	Name  string
	DType DType
	Shape []int
	File  string // the file holding it, relative to the checkpoint root
	Begin int64  // absolute byte offset of the data in File
	Size  int64  // byte length
}

// Elements is the number of elements, the product of Shape.
func (i Info) Elements() int64 {
	n := int64(1)
	for _, d := range i.Shape {
		n *= int64(d)
	}
	return n
}

// rawEntry is one tensor as written in the header.
type rawEntry struct {
	DType   string  `json:"dtype"`
	Shape   []int64 `json:"shape"`
	Offsets []int64 `json:"data_offsets"`
}

// ParseHeader validates the safetensors header of a file of fileSize bytes,
// given the whole header (its 8-byte length prefix and the JSON that follows),
// and returns its tensors sorted by offset. file names the file in errors.
func ParseHeader(file string, header []byte, fileSize int64) ([]Info, error) {
	if len(header) < 8 {
		return nil, fmt.Errorf("%s: file too short for a safetensors header (%d bytes)", file, len(header))
	}
	n := binary.LittleEndian.Uint64(header[:8])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%s: safetensors header length %d exceeds the %d-byte limit", file, n, MaxHeaderSize)
	}
	if int64(n)+8 > fileSize {
		return nil, fmt.Errorf("%s: safetensors header length %d runs past the end of the %d-byte file", file, n, fileSize)
	}
	if uint64(len(header)) < 8+n {
		return nil, fmt.Errorf("%s: header truncated: have %d of %d bytes", file, len(header)-8, n)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header[8:8+n], &raw); err != nil {
		return nil, fmt.Errorf("%s: safetensors header is not a JSON object: %v", file, err)
	}
	dataStart := int64(8 + n)
	dataLen := fileSize - dataStart
	infos := make([]Info, 0, len(raw))
	for name, msg := range raw {
		if name == "__metadata__" {
			var meta map[string]string
			if err := json.Unmarshal(msg, &meta); err != nil {
				return nil, fmt.Errorf("%s: __metadata__ must map strings to strings: %v", file, err)
			}
			continue
		}
		var e rawEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: malformed entry: %v", file, name, err)
		}
		info, err := e.check(name, dataLen)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		info.File = file
		info.Begin += dataStart
		infos = append(infos, info)
	}
	sort.Slice(infos, func(a, b int) bool {
		if infos[a].Begin != infos[b].Begin {
			return infos[a].Begin < infos[b].Begin
		}
		return infos[a].Name < infos[b].Name
	})
	for i := 1; i < len(infos); i++ {
		p, q := infos[i-1], infos[i]
		if p.Begin+p.Size > q.Begin {
			return nil, fmt.Errorf("%s: tensors %q and %q overlap", file, p.Name, q.Name)
		}
	}
	return infos, nil
}

func (e rawEntry) check(name string, dataLen int64) (Info, error) {
	dt := DType(e.DType)
	if dt.Size() == 0 {
		return Info{}, fmt.Errorf("tensor %q: unsupported dtype %q (want F32, F16 or BF16)", name, e.DType)
	}
	if len(e.Offsets) != 2 {
		return Info{}, fmt.Errorf("tensor %q: data_offsets must have 2 entries, has %d", name, len(e.Offsets))
	}
	begin, end := e.Offsets[0], e.Offsets[1]
	if begin < 0 || end < begin || end > dataLen {
		return Info{}, fmt.Errorf("tensor %q: data_offsets [%d, %d) outside the %d-byte data section", name, begin, end, dataLen)
	}
	if len(e.Shape) > 8 {
		return Info{}, fmt.Errorf("tensor %q: %d dimensions is too many", name, len(e.Shape))
	}
	elems := int64(1)
	shape := make([]int, len(e.Shape))
	for i, d := range e.Shape {
		if d < 0 || d > math.MaxInt32 {
			return Info{}, fmt.Errorf("tensor %q: bad dimension %d in shape %v", name, d, e.Shape)
		}
		if d != 0 && elems > math.MaxInt64/d/8 {
			return Info{}, fmt.Errorf("tensor %q: shape %v is too large", name, e.Shape)
		}
		elems *= d
		shape[i] = int(d)
	}
	if want := elems * int64(dt.Size()); want != end-begin {
		return Info{}, fmt.Errorf("tensor %q: shape %v of %s needs %d bytes but data_offsets span %d", name, e.Shape, dt, want, end-begin)
	}
	return Info{Name: name, DType: dt, Shape: shape, Begin: begin, Size: end - begin}, nil
}

// readHeader reads and validates the header of one file.
func readHeader(fsys fs.FS, name string) ([]Info, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	var prefix [8]byte
	if _, err := io.ReadFull(f, prefix[:]); err != nil {
		return nil, fmt.Errorf("%s: reading header length: %w", name, truncated(err))
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	if n > MaxHeaderSize || int64(n)+8 > size {
		return ParseHeader(name, prefix[:], size) // reports the bad length
	}
	buf := make([]byte, 8+n)
	copy(buf, prefix[:])
	if _, err := io.ReadFull(f, buf[8:]); err != nil {
		return nil, fmt.Errorf("%s: reading header: %w", name, truncated(err))
	}
	return ParseHeader(name, buf, size)
}

func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("file is truncated")
	}
	return err
}
