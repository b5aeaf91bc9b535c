// Package pytorch lists the tensors of a PyTorch checkpoint (a state dict
// written by torch.save, such as pytorch_model.bin) without executing
// anything and without reading the weights.
//
// A torch.save file is a Python pickle plus raw tensor storages. Loading it
// with Python's pickle runs whatever the file asks for; this package instead
// interprets the pickle with a small, restricted virtual machine that knows
// only the few objects a state dict is made of (dicts, OrderedDicts, lists,
// tuples, strings, numbers, booleans, None) and a fixed list of torch
// constructors, which it applies symbolically. Any other global, such as
// os.system or builtins.eval, is refused by name before anything else
// happens. The result is, for each tensor, where its bytes lie in the file
// (Offset, Size), so that a caller streams them exactly as it streams a
// safetensors tensor: from a local file or over HTTP Range requests.
//
// Two layouts are read:
//
//   - the zip archive that torch.save writes by default since torch 1.6:
//     <archive>/data.pkl is the pickle, <archive>/data/<key> holds each
//     storage as raw little-endian bytes, stored uncompressed;
//     <archive>/byteorder, when present, must say "little";
//   - the legacy stream (torch.save(..., _use_new_zipfile_serialization=False)):
//     the pickles of a magic number, a protocol version, a sys-info dict, the
//     state dict and its list of storage keys, followed, for each key in that
//     list, by an 8-byte little-endian element count and the storage bytes.
//
// Only the zip directory, the pickle and a few bytes of framing are read
// (a zip's local headers, a legacy file's element counts): never the weights.
//
// The top-level object must be a dict (or OrderedDict) of name → tensor. A
// checkpoint that nests its state dict, such as {"model": {...}, "epoch": 3}
// or {"state_dict": {...}}, is accepted when exactly one dict, at any depth,
// holds tensors, it holds all of them, and all its values are tensors; its
// keys are then the names (without the outer keys). Anything else is refused
// with an error that says where the tensors are.
//
// Every tensor must be contiguous in row-major order (dimensions of size 1,
// and tensors with no elements, may have any stride) and must lie inside its
// storage. Several names may share a storage (tied weights, views): each is
// listed with its own Offset.
//
// The input is untrusted: every count, length and offset is checked, memory
// and work are bounded by the constants below, and a hostile file makes Read
// return an error, never panic. Errors do not name the file: the caller
// prefixes them, e.g. fmt.Errorf("%s: %w", name, err). An error returned by
// the io.ReaderAt is wrapped (errors.Is/As see it).
//
// # Using it
//
// Detect the file by name (pytorch_model.bin, or the shards named by
// pytorch_model.bin.index.json, whose weight_map has the safetensors index's
// layout) and, if in doubt, by IsPyTorch on its first PeekSize bytes. Call
// Read once per file with the file's io.ReaderAt and size; then each Tensor
// is a byte range [Offset, Offset+Size) of that file holding the elements in
// row-major order, little-endian, exactly as a safetensors tensor's range
// does: stream it with one Range request (or an io.SectionReader) and decode
// it as DType. Unlike safetensors, the ranges do not tile the file: zip
// headers lie between storages, and tied weights or views share or overlap
// bytes, so no tiling check applies. Storages of a zip file start 64-byte
// aligned (torch's .storage_alignment); those of a legacy file are not
// aligned at all. A zip costs Read about three reads for its directory and
// pickle plus one 30-byte read per storage (made eight at a time); a legacy
// file one to three reads for its pickles plus, in turn, one small read per
// storage that does not follow a small one.
package pytorch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// Tensor is one tensor of a state dict: where its bytes are in the file.
type Tensor struct {
	Name string
	// DType is "F32", "F16" or "BF16", or one the runtime has no use for
	// but that a checkpoint may hold: "F64", "I64", "I32", "I16", "I8",
	// "U8", "BOOL". The caller refuses what it cannot use.
	DType  string
	Shape  []int
	Offset int64 // absolute byte offset of the first element in the file
	Size   int64 // bytes: product(Shape) * element size, little-endian, row-major
}

// Elements is the number of elements, the product of Shape (1 for a scalar).
func (t Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// ElementSize is the size in bytes of one element of dtype, or 0 for a name
// this package never reports.
func ElementSize(dtype string) int {
	for _, d := range storageTypes {
		if d.name == dtype {
			return d.size
		}
	}
	return 0
}

// Bounds on what a checkpoint may make Read do. Each is far above any real
// checkpoint and low enough that a hostile one cannot exhaust memory or time.
const (
	// maxPickleBytes bounds the pickle of the state dict (and, in a legacy
	// file, all the pickles before the storages). A state dict's pickle
	// costs about 300 bytes per tensor: a 7B model's is about 100 KB.
	maxPickleBytes = 64 << 20
	// maxTensors bounds the tensors (and storages) a checkpoint may hold.
	// The largest real models have a few tens of thousands.
	maxTensors = 1 << 17
	// maxMemo bounds the pickle's memo, and maxItems the elements of all
	// containers together: torch uses about 9 memo entries and 13 + 2 × (its
	// dimensions) elements per tensor.
	maxMemo  = 16 * maxTensors
	maxItems = 32 * maxTensors
	// maxStack bounds the unpickler's stack: Python's pickle pushes at most
	// 1000 dict entries (2000 values) before a SETITEMS, but another writer
	// may push a whole state dict (two values per tensor) at once.
	maxStack = 8 * maxTensors
	// maxMarks bounds nested MARKs; a tensor needs three.
	maxMarks = 256
	// maxNesting bounds how deep containers may nest in the object that
	// holds the tensors: a state dict is one or two levels deep.
	maxNesting = 64
	// maxString bounds one string or bytes object: names are under 1 KB,
	// but a checkpoint may carry, say, its config as a string.
	maxString = 16 << 20
	// maxLine bounds a text-protocol line (a GLOBAL's module or name, a
	// text integer).
	maxLine = 1024
	// maxIntBytes bounds a LONG1/LONG4 integer: anything used as a number
	// must fit in an int64; the legacy magic number is 10 bytes.
	maxIntBytes = 16
	// maxDims bounds the dimensions of a tensor.
	maxDims = 8
	// maxZipDirectory bounds the bytes of the zip directory Read may fetch
	// (the end record search reads up to 64 KiB; each entry's record is
	// about 100 bytes, two entries or fewer per tensor).
	maxZipDirectory = 64<<10 + 200*maxTensors
	// maxFraming bounds the other bytes Read may fetch: zip local headers
	// (30 bytes each) and small entries, legacy element counts (each
	// read is a window of at most windowSize bytes, one per storage at worst).
	maxFraming = 1<<20 + windowSize*maxTensors
)

// PeekSize is how many leading bytes IsPyTorch needs for a sure answer.
const PeekSize = 32

// legacyMagic is the little-endian body of the LONG1 that starts a legacy
// torch.save file: the integer 0x1950a86a20f9469cfc6c.
var legacyMagic = []byte{0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}

// legacyProtocol is the protocol version a legacy file writes after the magic.
const legacyProtocol = 1001

// IsPyTorch reports whether head, the first bytes of a file (PeekSize of
// them, or the whole file if shorter), looks like a torch.save file: a zip
// archive (which Read then checks is a torch one) or the legacy format's
// pickled magic number. A safetensors file never matches in practice: its
// first 8 bytes are a header length, which would have to be over 1 GB for
// the zip signature.
func IsPyTorch(head []byte) bool {
	if bytes.HasPrefix(head, []byte("PK\x03\x04")) {
		return true
	}
	return isLegacy(head)
}

// isLegacy reports whether head starts with the legacy magic pickle:
// PROTO n, perhaps a FRAME, then LONG1 of the 10 magic bytes.
func isLegacy(head []byte) bool {
	if len(head) < 2 || head[0] != opPROTO || head[1] < 2 || head[1] > 5 {
		return false
	}
	b := head[2:]
	if len(b) > 0 && b[0] == opFRAME {
		if len(b) < 9 {
			return false
		}
		b = b[9:]
	}
	return len(b) >= 2+len(legacyMagic) && b[0] == opLONG1 && int(b[1]) == len(legacyMagic) &&
		bytes.Equal(b[2:2+len(legacyMagic)], legacyMagic)
}

// Read lists the tensors of a torch.save'd state dict held in r, a file of
// size bytes, in the order the state dict holds them. It reads the zip
// directory and the pickle (or a legacy file's pickles and element counts),
// never tensor data; a zip's local headers are read concurrently, so r must
// allow parallel ReadAt calls, as io.ReaderAt requires.
func Read(r io.ReaderAt, size int64) ([]Tensor, error) {
	if size < 0 {
		return nil, fmt.Errorf("negative file size %d", size)
	}
	br := &budgetReader{r: r, size: size}
	br.limit.Store(PeekSize)
	head := make([]byte, min(size, PeekSize))
	if err := readFull(br, head, 0); err != nil {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return readZip(br, size)
	case isLegacy(head):
		return readLegacy(br, size)
	case len(head) < 4:
		return nil, fmt.Errorf("file of %d bytes is too short for a PyTorch checkpoint", size)
	}
	return nil, fmt.Errorf("not a PyTorch checkpoint: it starts with neither a zip signature nor the pickled torch.save magic number (first bytes % x)", head[:min(len(head), 8)])
}

// budgetReader bounds the bytes Read fetches from the file, whatever the
// zip directory or the pickle claims, and refuses reads outside the file.
type budgetReader struct {
	r     io.ReaderAt
	size  int64
	limit atomic.Int64 // total bytes that may be read
	used  atomic.Int64
}

var errBudget = errors.New("the checkpoint's metadata is larger than the limits allow")

func (b *budgetReader) grant(n int64) { b.limit.Add(n) }

func (b *budgetReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > b.size {
		return 0, fmt.Errorf("read at offset %d outside the %d-byte file", off, b.size)
	}
	n := int64(len(p))
	short := false
	if n > b.size-off {
		n, short = b.size-off, true
	}
	if b.used.Add(n) > b.limit.Load() {
		return 0, errBudget
	}
	m, err := b.r.ReadAt(p[:n], off)
	if int64(m) == n && short {
		return m, io.EOF
	}
	if int64(m) == n {
		return m, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return m, fmt.Errorf("reading %d bytes at offset %d: %w (is the file shorter than %d bytes?)", n, off, err, b.size)
}

// readFull reads len(p) bytes at off, which the caller has checked lie in the file.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
