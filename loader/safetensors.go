// Package loader reads model checkpoints in the safetensors format, from a
// single file or a sharded set described by model.safetensors.index.json.
//
// Every number in a safetensors header is untrusted input: the header length
// is bounded, no name may appear twice, each tensor's byte range must lie
// inside the data section, the ranges must tile that section exactly (no
// overlap, no gap, no trailing bytes; an empty tensor is a zero-length tile
// anywhere between two others), and shape × dtype size must equal the byte
// length. These are the rules of the reference implementation. A file that
// breaks any of them is rejected with an error naming the file and the
// tensor, before any of its data is used.
//
// Files are reached through an fs.FS whose files implement io.ReaderAt (a local
// folder, an embedded model, or an HTTP source doing Range requests), so the
// loader reads only the header at open time and streams tensor bytes on demand.
package loader

import (
	"bytes"
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
	// F64 is read for LoRA adapters, which PEFT saves in the dtype of the
	// model they were trained on (float64 for the fixtures); a model's own
	// weights in F64 are refused when they are bound (model/weights.go).
	F64 DType = "F64"
	// I8 and U8 hold quantized weights' packed integers (int8 values;
	// int4 values two per byte), next to F16 scales and zeros.
	I8 DType = "I8"
	U8 DType = "U8"
)

// Size is the number of bytes of one element, or 0 for an unsupported type.
func (d DType) Size() int {
	switch d {
	case F64:
		return 8
	case F32:
		return 4
	case F16, BF16:
		return 2
	case I8, U8:
		return 1
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
// and returns its tensors sorted by offset (an empty tensor before a non-empty
// one at the same offset). file names the file in errors. See the package
// comment for the rules; the JSON is walked token by token, so a name given
// twice is seen and refused rather than silently taking the last value.
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
	dataStart := int64(8 + n)
	dataLen := fileSize - dataStart
	var infos []Info
	err := eachMember(header[8:8+n], func(name string, msg json.RawMessage) error {
		if name == "__metadata__" {
			err := eachMember(msg, func(k string, v json.RawMessage) error {
				var s string
				return json.Unmarshal(v, &s)
			})
			var de *duplicateError
			if errors.As(err, &de) {
				return fmt.Errorf("__metadata__: key %q appears twice", de.name)
			}
			if err != nil {
				return fmt.Errorf("__metadata__ must map strings to strings: %v", err)
			}
			return nil
		}
		err := eachMember(msg, func(string, json.RawMessage) error { return nil })
		var de *duplicateError
		if errors.As(err, &de) {
			return fmt.Errorf("tensor %q: field %q appears twice in its entry", name, de.name)
		}
		if err != nil {
			return fmt.Errorf("tensor %q: malformed entry: %v", name, err)
		}
		var e rawEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return fmt.Errorf("tensor %q: malformed entry: %v", name, err)
		}
		info, err := e.check(name, dataLen)
		if err != nil {
			return err
		}
		info.File = file
		info.Begin += dataStart
		infos = append(infos, info)
		return nil
	})
	if err != nil {
		var se *syntaxError
		var de *duplicateError
		if errors.As(err, &de) {
			what := fmt.Sprintf("tensor %q", de.name)
			if de.name == "__metadata__" {
				what = de.name
			}
			return nil, fmt.Errorf("%s: %s appears twice in the safetensors header (refused: readers disagree on which entry counts)", file, what)
		}
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%s: safetensors header is not a JSON object: %v", file, se.err)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := tile(infos, dataStart, fileSize); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return infos, nil
}

// tile sorts infos by (begin, end, name) and checks that they cover the
// data section [dataStart, fileSize) exactly, end to end, as the reference
// implementation requires: a gap would be bytes that belong to nothing
// (room to smuggle data past a reader that checks only the tensors), an
// overlap two tensors sharing bytes. Sorting by the end after the begin
// puts an empty tensor before a non-empty one that starts at the same
// offset, so whether an empty tensor is accepted depends on its offset
// alone, never on how its name sorts.
func tile(infos []Info, dataStart, fileSize int64) error {
	sort.Slice(infos, func(a, b int) bool {
		p, q := infos[a], infos[b]
		if p.Begin != q.Begin {
			return p.Begin < q.Begin
		}
		if p.Size != q.Size {
			return p.Size < q.Size
		}
		return p.Name < q.Name
	})
	next := dataStart // where the next tensor must begin
	for i, in := range infos {
		switch {
		case in.Begin < next:
			p := infos[i-1] // next > dataStart, so some tensor ended there
			return fmt.Errorf("tensors %q [%d, %d) and %q [%d, %d) overlap", p.Name, p.Begin-dataStart, p.Begin+p.Size-dataStart, in.Name, in.Begin-dataStart, in.Begin+in.Size-dataStart)
		case in.Begin > next:
			return fmt.Errorf("bytes [%d, %d) of the data section belong to no tensor (a gap before tensor %q)", next-dataStart, in.Begin-dataStart, in.Name)
		}
		next = in.Begin + in.Size
	}
	if next != fileSize {
		after := "there are no tensors"
		if len(infos) > 0 {
			after = fmt.Sprintf("after the last tensor, %q", infos[len(infos)-1].Name)
		}
		return fmt.Errorf("the last %d bytes of the data section belong to no tensor (%s)", fileSize-next, after)
	}
	return nil
}

// duplicateError is a name that appears twice in one JSON object.
type duplicateError struct{ name string }

func (e *duplicateError) Error() string { return fmt.Sprintf("%q appears twice", e.name) }

// syntaxError marks JSON that is not a well-formed object.
type syntaxError struct{ err error }

func (e *syntaxError) Error() string { return e.err.Error() }

// eachMember walks the members of the JSON object in data, in order,
// calling fn with each name and raw value, and fails on a name that
// appears twice. encoding/json would keep the last of two equal names
// silently, so a header could say one thing to this reader and another
// to a reader that keeps the first; such a file is refused instead. Only
// whitespace may follow the object (writers pad the header with spaces).
// Errors of the JSON itself are *syntaxError; fn's are returned as they
// are.
func eachMember(data []byte, fn func(name string, value json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return &syntaxError{err}
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return &syntaxError{fmt.Errorf("found %s where an object must begin", describeToken(tok))}
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return &syntaxError{err}
		}
		name, ok := tok.(string)
		if !ok {
			return &syntaxError{fmt.Errorf("found %s where a member name must be", describeToken(tok))}
		}
		if seen[name] {
			return &duplicateError{name}
		}
		seen[name] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return &syntaxError{err}
		}
		if err := fn(name, v); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return &syntaxError{err}
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%s after the end of the object", describeToken(tok))
		}
		return &syntaxError{err}
	}
	return nil
}

func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return fmt.Sprintf("%q", string(v))
	case string:
		return fmt.Sprintf("the string %q", v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

func (e rawEntry) check(name string, dataLen int64) (Info, error) {
	dt := DType(e.DType)
	if dt.Size() == 0 {
		return Info{}, fmt.Errorf("tensor %q: unsupported dtype %q (want F32, F16, BF16, F64, or I8/U8 for quantized weights)", name, e.DType)
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
