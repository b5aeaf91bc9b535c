package pytorch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
)

// readLegacy reads the legacy torch.save stream: the pickles of the magic
// number, the protocol version, the sys info, the state dict and the list
// of storage keys, then each storage as an 8-byte little-endian element
// count and its bytes, in the order of that list.
func readLegacy(br *budgetReader, size int64) ([]Tensor, error) {
	br.grant(2*maxPickleBytes + maxFraming)
	src := &source{r: br, limit: min(size, maxPickleBytes), capped: size > maxPickleBytes, what: "the pickle"}
	items, tensors := 0, 0
	next := func(what string, persist persistentLoader) (value, error) {
		src.what = what
		u := newUnpickler(src, persist, &items, &tensors)
		return u.run()
	}
	v, err := next("the magic-number pickle", nil)
	if err != nil {
		return nil, err
	}
	if b, ok := v.(*bigInt); !ok || !bytes.Equal(b.b, legacyMagic) {
		return nil, fmt.Errorf("the file does not start with torch.save's magic number")
	}
	v, err = next("the protocol-version pickle", nil)
	if err != nil {
		return nil, err
	}
	if p, ok := v.(int64); !ok || p != legacyProtocol {
		return nil, fmt.Errorf("legacy torch.save protocol version %s, not %d", describe(v), legacyProtocol)
	}
	v, err = next("the sys-info pickle", nil)
	if err != nil {
		return nil, err
	}
	info, ok := v.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("the sys info is a %s, not a dict", kindOf(v))
	}
	for i, k := range info.keys {
		if k == "little_endian" && info.vals[i] != true {
			return nil, fmt.Errorf("the checkpoint was written big-endian; only little-endian checkpoints are read")
		}
	}
	st := &storages{byKey: map[string]*storageInfo{}}
	root, err := next("the state-dict pickle", st.load)
	if err != nil {
		return nil, err
	}
	ts, err := stateDict(root)
	if err != nil {
		return nil, err
	}
	v, err = next("the storage-key pickle", nil)
	if err != nil {
		return nil, err
	}
	list, ok := v.(*pyList)
	if !ok {
		return nil, fmt.Errorf("the storage keys are a %s, not a list", kindOf(v))
	}
	// Walk the storages: read each element count, skip the bytes.
	spans := make(map[string]span, len(list.items))
	tail := &window{r: br, size: size}
	pos := src.pos
	for _, k := range list.items {
		key, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("a storage key is a %s, not a string", kindOf(k))
		}
		q := strconv.Quote(show(key))
		if _, dup := spans[key]; dup {
			return nil, fmt.Errorf("storage %s is listed twice", q)
		}
		si := st.byKey[key]
		if si == nil {
			// Its element size is unknown, so the storages after it
			// cannot be found.
			return nil, fmt.Errorf("storage %s is listed, but no storage reference in the pickle names it", q)
		}
		if size-pos < 8 {
			return nil, fmt.Errorf("the file ends before storage %s (byte %d of %d)", q, pos, size)
		}
		b, err := tail.at(pos)
		if err != nil {
			return nil, fmt.Errorf("reading the size of storage %s: %w", q, err)
		}
		n := binary.LittleEndian.Uint64(b)
		elem := uint64(si.dtype.size)
		if n > math.MaxInt64/elem || int64(n*elem) > size-pos-8 {
			return nil, fmt.Errorf("storage %s claims %d elements of %d bytes at byte %d, past the end of the %d-byte file", q, n, elem, pos, size)
		}
		spans[key] = span{pos + 8, int64(n * elem)}
		pos += 8 + int64(n*elem)
	}
	return place(ts, spans)
}

// window reads the 8-byte counts of the legacy storages through a small
// cached window, so that the counts of small neighbouring storages (biases,
// norms) cost one read between them.
type window struct {
	r     *budgetReader
	size  int64
	buf   []byte
	start int64
}

const windowSize = 512

// at returns the 8 bytes at off (which the caller has checked lie in the file).
func (w *window) at(off int64) ([]byte, error) {
	if off < w.start || off+8 > w.start+int64(len(w.buf)) {
		n := min(windowSize, w.size-off)
		if w.buf == nil {
			w.buf = make([]byte, windowSize)
		}
		if err := readFull(w.r, w.buf[:n], off); err != nil {
			return nil, err
		}
		w.buf, w.start = w.buf[:n], off
	}
	i := off - w.start
	return w.buf[i : i+8], nil
}
