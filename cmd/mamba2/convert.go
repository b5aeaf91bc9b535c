package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	iofs "io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// defaultShardSize is the most bytes of weights convert puts in one
// safetensors file: transformers' save_pretrained splits at 5 GB by
// default, and browsers fetch and cache a file at a time, so smaller
// shards also make a cut download cheaper to resume.
const defaultShardSize = 2 << 30

// sideFiles are copied along with the weights when the source has them.
var sideFiles = []string{"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md"}

// cmdConvert writes a model's weights as safetensors in Hugging Face
// layout: shards with model.safetensors.index.json when there is more than
// one, the side files, and a manifest.json of every file's size and sha256
// (loader.ManifestFile), which loaders check downloads against.
func cmdConvert(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("convert")
	var mf modelFlags
	fs.StringVar(&mf.model, "model", "", "the model to convert: a folder, an http(s) URL or a hub id (safetensors or pytorch_model.bin); default: the embedded mamba2-go-tiny")
	out := fs.String("out", "", "the folder to write (created; it must not exist or be empty)")
	dtype := fs.String("dtype", "", "store the weights as f32, f16 or bf16 (default: as they are)")
	shard := fs.Int64("shard-size", defaultShardSize, "the most bytes of weights in one safetensors file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("convert: --out DIR is required")
	}
	var to loader.DType
	if *dtype != "" {
		var err error
		if to, err = parseDType(*dtype); err != nil {
			return fmt.Errorf("convert: --dtype: %v", err)
		}
	}
	if *shard <= 0 {
		return fmt.Errorf("convert: --shard-size must be positive, got %d", *shard)
	}
	fsys, name, err := mf.source(ctx, stderr)
	if err != nil {
		return err
	}
	cfg, err := model.LoadConfig(fsys)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	ck, err := loader.Open(fsys)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	if err := emptyDir(*out); err != nil {
		return err
	}
	tensors, err := plan(ck, cfg, to, *shard)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	manifest := map[string]loader.ManifestEntry{}
	weightMap := map[string]string{}
	files := shardNames(tensors)
	for i, file := range files {
		var these []outTensor
		for _, t := range tensors {
			if t.shard == i {
				these = append(these, t)
				weightMap[t.name] = file
			}
		}
		e, err := writeShard(ctx, ck, filepath.Join(*out, file), these)
		if err != nil {
			return err
		}
		manifest[file] = e
		fmt.Fprintf(stderr, "mamba2: wrote %s (%s)\n", file, humanBytes(*e.Size))
	}
	if len(files) > 1 {
		idx, _ := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": totalSize(tensors)}, "weight_map": weightMap}, "", "  ")
		if manifest[loader.IndexFile], err = writeFile(filepath.Join(*out, loader.IndexFile), idx); err != nil {
			return err
		}
	}
	for _, f := range sideFiles {
		data, err := loader.ReadSideFile(fsys, f)
		if errors.Is(err, iofs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %v", f, err)
		}
		if manifest[f], err = writeFile(filepath.Join(*out, f), data); err != nil {
			return err
		}
	}
	mj, _ := json.MarshalIndent(manifest, "", "  ")
	if _, err := writeFile(filepath.Join(*out, loader.ManifestFile), mj); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mamba2: converted %s (%d tensors) into %s\n", name, len(tensors), *out)
	return nil
}

// outTensor is a tensor as it will be written.
type outTensor struct {
	name  string // as the checkpoint names it
	in    loader.Info
	dtype loader.DType
	size  int64
	shard int
}

// plan lists the tensors to write, in checkpoint order, and puts them in
// shards. A tied lm_head (state-spaces checkpoints save the embedding twice)
// is left out, as transformers leaves it out: safetensors cannot share
// bytes between tensors, and loaders tie it again from the config.
func plan(ck *loader.Checkpoint, cfg model.Config, to loader.DType, shardSize int64) ([]outTensor, error) {
	var ts []outTensor
	for _, n := range ck.Names() {
		in, _ := ck.Info(n)
		if n == "lm_head.weight" && cfg.TieEmbeddings {
			continue
		}
		dt := in.DType
		if to != "" {
			dt = to
		}
		ts = append(ts, outTensor{name: n, in: in, dtype: dt, size: in.Elements() * int64(dt.Size())})
	}
	// File order, so that a source is read front to back.
	sort.SliceStable(ts, func(a, b int) bool {
		if ts[a].in.File != ts[b].in.File {
			return ts[a].in.File < ts[b].in.File
		}
		return ts[a].in.Begin < ts[b].in.Begin
	})
	shard, used := 0, int64(0)
	for i := range ts {
		if used > 0 && used+ts[i].size > shardSize {
			shard, used = shard+1, 0
		}
		ts[i].shard = shard
		used += ts[i].size
	}
	return ts, nil
}

func shardNames(ts []outTensor) []string {
	n := 1
	if len(ts) > 0 {
		n = ts[len(ts)-1].shard + 1
	}
	if n == 1 {
		return []string{loader.SingleFile}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
	}
	return names
}

func totalSize(ts []outTensor) int64 {
	var n int64
	for _, t := range ts {
		n += t.size
	}
	return n
}

// writeShard writes one safetensors file: the header, then each tensor
// streamed from the source and converted chunk by chunk, so memory stays at
// a chunk whatever the model's size. It is written under a temporary name
// and renamed when complete.
func writeShard(ctx context.Context, ck *loader.Checkpoint, path string, ts []outTensor) (loader.ManifestEntry, error) {
	type entry struct {
		DType   loader.DType `json:"dtype"`
		Shape   []int        `json:"shape"`
		Offsets [2]int64     `json:"data_offsets"`
	}
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, t := range ts {
		header[t.name] = entry{t.dtype, t.in.Shape, [2]int64{off, off + t.size}}
		off += t.size
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return loader.ManifestEntry{}, err
	}
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	return writeAtomically(path, func(w io.Writer) error {
		if err := binary.Write(w, binary.LittleEndian, uint64(len(hj))); err != nil {
			return err
		}
		if _, err := w.Write(hj); err != nil {
			return err
		}
		var buf []byte
		var f32 []float32
		for _, t := range ts {
			if err := ctx.Err(); err != nil {
				return err
			}
			err := ck.Stream(t.name, 0, func(_ int64, b []byte) error {
				if t.dtype == t.in.DType {
					_, err := w.Write(b)
					return err
				}
				n := len(b) / t.in.DType.Size()
				f32 = append(f32[:0], make([]float32, n)...)
				loader.Decode(f32, t.in.DType, b)
				buf = encode(buf[:0], f32, t.dtype)
				_, err := w.Write(buf)
				return err
			})
			if err != nil {
				return fmt.Errorf("tensor %s: %w", t.name, err)
			}
		}
		return nil
	})
}

// encode appends v in dtype dt, little-endian (f16 and bf16 rounded to
// nearest even).
func encode(dst []byte, v []float32, dt loader.DType) []byte {
	for _, x := range v {
		switch dt {
		case loader.F32:
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
		case loader.F16:
			dst = binary.LittleEndian.AppendUint16(dst, loader.Float32ToHalf(x))
		case loader.BF16:
			dst = binary.LittleEndian.AppendUint16(dst, float32ToBF16(x))
		}
	}
	return dst
}

// float32ToBF16 rounds to the nearest bfloat16, ties to even; NaN stays NaN.
func float32ToBF16(x float32) uint16 {
	b := math.Float32bits(x)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func writeFile(path string, data []byte) (loader.ManifestEntry, error) {
	return writeAtomically(path, func(w io.Writer) error { _, err := w.Write(data); return err })
}

// writeAtomically writes a file through fill under a temporary name in the
// same folder and renames it into place, returning its size and sha256.
func writeAtomically(path string, fill func(io.Writer) error) (loader.ManifestEntry, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".part-*")
	if err != nil {
		return loader.ManifestEntry{}, err
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h), h: h}
	bw := bufio.NewWriterSize(cw, 1<<20)
	err = fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Chmod(0o644) // CreateTemp makes it private; a model is for reading
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return loader.ManifestEntry{}, fmt.Errorf("writing %s: %w", path, err)
	}
	size := cw.n
	return loader.ManifestEntry{Size: &size, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// emptyDir creates dir, or accepts it when it exists and is empty: convert
// never overwrites a model.
func emptyDir(dir string) error {
	des, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		return os.MkdirAll(dir, 0o755)
	case err != nil:
		return fmt.Errorf("--out: %v", err)
	case len(des) > 0:
		names := make([]string, 0, 3)
		for _, de := range des[:min(3, len(des))] {
			names = append(names, de.Name())
		}
		return fmt.Errorf("--out %s is not empty (%s…); convert writes only into a new or empty folder", dir, strings.Join(names, ", "))
	}
	return nil
}
