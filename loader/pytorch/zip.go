package pytorch

import (
	"archive/zip"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
	"sync"
)

// zipWorkers is how many local headers are read at once: over HTTP each is
// a request, and a large checkpoint has hundreds of storages.
const zipWorkers = 8

// readZip reads a torch.save zip archive.
func readZip(br *budgetReader, size int64) ([]Tensor, error) {
	br.grant(maxZipDirectory)
	zr, err := zip.NewReader(br, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, fmt.Errorf("reading the zip directory: %w", err)
	}
	if len(zr.File) > 2*maxTensors+16 {
		return nil, fmt.Errorf("the zip holds %d entries, more than a checkpoint of at most %d tensors", len(zr.File), maxTensors)
	}
	br.grant(maxPickleBytes + maxFraming)
	files := make(map[string]*zip.File, len(zr.File))
	var pkl []string
	for _, f := range zr.File {
		if files[f.Name] != nil {
			return nil, fmt.Errorf("the zip holds %s twice", strconv.Quote(show(f.Name)))
		}
		files[f.Name] = f
		if dir, ok := strings.CutSuffix(f.Name, "/data.pkl"); ok && dir != "" && !strings.Contains(dir, "/") {
			pkl = append(pkl, dir)
		}
	}
	if len(pkl) != 1 {
		return nil, fmt.Errorf("a zip, but not a torch.save archive: it holds %d <archive>/data.pkl entries, not one", len(pkl))
	}
	prefix := pkl[0] + "/"
	if f := files[prefix+"byteorder"]; f != nil {
		b, err := readEntry(br, f, 16)
		if err != nil {
			return nil, err
		}
		if string(b) != "little" {
			return nil, fmt.Errorf("the storages are in byte order %s; only little-endian checkpoints are read", strconv.Quote(show(string(b))))
		}
	}
	data, err := readEntry(br, files[prefix+"data.pkl"], maxPickleBytes)
	if err != nil {
		return nil, err
	}
	st := &storages{byKey: map[string]*storageInfo{}}
	items, tensors := 0, 0
	u := newUnpickler(memSource(data, prefix+"data.pkl"), st.load, &items, &tensors)
	root, err := u.run()
	if err != nil {
		return nil, err
	}
	ts, err := stateDict(root)
	if err != nil {
		return nil, err
	}
	// Locate only the storages the state dict uses.
	var keys []string
	used := map[string]bool{}
	for _, t := range ts {
		if k := t.t.st.info.key; !used[k] {
			used[k] = true
			keys = append(keys, k)
		}
	}
	found := make([]span, len(keys))
	errs := make([]error, len(keys))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(zipWorkers, len(keys)) {
		wg.Go(func() {
			for i := range next {
				found[i], errs[i] = locate(files, prefix, keys[i], size)
			}
		})
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()
	spans := make(map[string]span, len(keys))
	for i, k := range keys {
		if errs[i] != nil {
			return nil, errs[i]
		}
		spans[k] = found[i]
	}
	return place(ts, spans)
}

// locate finds storage key's bytes: the entry <archive>/data/<key>, which
// must be stored uncompressed so that it can be read in place.
func locate(files map[string]*zip.File, prefix, key string, size int64) (span, error) {
	name := prefix + "data/" + key
	q := strconv.Quote(show(key))
	f := files[name]
	if f == nil {
		return span{}, fmt.Errorf("storage %s has no %s entry in the zip", q, strconv.Quote(show(name)))
	}
	if f.Method != zip.Store {
		return span{}, fmt.Errorf("storage %s is compressed (zip method %d); torch stores storages uncompressed, and the weights must be readable in place", q, f.Method)
	}
	if f.CompressedSize64 != f.UncompressedSize64 {
		return span{}, fmt.Errorf("storage %s: stored entry with %d compressed but %d uncompressed bytes", q, f.CompressedSize64, f.UncompressedSize64)
	}
	off, err := f.DataOffset()
	if err != nil {
		return span{}, fmt.Errorf("storage %s: reading its zip header: %w", q, err)
	}
	n := f.UncompressedSize64
	if off < 0 || off > size || n > uint64(size-off) {
		return span{}, fmt.Errorf("storage %s: %d bytes at offset %d run past the end of the %d-byte file", q, n, off, size)
	}
	return span{off, int64(n)}, nil
}

// readEntry reads a small entry whole, refusing one over limit bytes.
func readEntry(br *budgetReader, f *zip.File, limit uint64) ([]byte, error) {
	q := strconv.Quote(show(f.Name))
	if f.UncompressedSize64 > limit {
		return nil, fmt.Errorf("%s is %d bytes, over the %d-byte limit", q, f.UncompressedSize64, limit)
	}
	if f.Method == zip.Store {
		// One read where zip's reader would make several small ones.
		if f.CompressedSize64 != f.UncompressedSize64 {
			return nil, fmt.Errorf("%s: stored entry with %d compressed but %d uncompressed bytes", q, f.CompressedSize64, f.UncompressedSize64)
		}
		off, err := f.DataOffset()
		if err != nil {
			return nil, fmt.Errorf("%s: reading its zip header: %w", q, err)
		}
		n := f.UncompressedSize64
		if off < 0 || off > br.size || n > uint64(br.size-off) {
			return nil, fmt.Errorf("%s: %d bytes at offset %d run past the end of the file", q, n, off)
		}
		b := make([]byte, n)
		if err := readFull(br, b, off); err != nil {
			return nil, fmt.Errorf("reading %s: %w", q, err)
		}
		if f.CRC32 != 0 && crc32.ChecksumIEEE(b) != f.CRC32 {
			return nil, fmt.Errorf("%s is damaged: its CRC-32 does not match", q)
		}
		return b, nil
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", q, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", q, err)
	}
	if uint64(len(b)) > limit {
		return nil, fmt.Errorf("%s expands past the %d-byte limit", q, limit)
	}
	return b, nil
}
