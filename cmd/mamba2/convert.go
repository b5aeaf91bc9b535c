package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
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
// (loader.ManifestFile), which loaders check downloads against. With
// --dtype int8 or int4 the large products (in_proj, out_proj, the embedding
// and lm_head) are quantized as they stream (docs/quantization.md) and
// config.json gains a quantization_config.
func cmdConvert(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("convert")
	var mf modelFlags
	fs.StringVar(&mf.model, "model", "", "the model to convert: a folder, an http(s) URL or a hub id (safetensors or pytorch_model.bin); default: the embedded mamba2-go-tiny")
	out := fs.String("out", "", "the folder to write (created; it must not exist or be empty)")
	dtype := fs.String("dtype", "", "f32, f16 or bf16 stores every weight so; int8 (a scale per row) or int4 (a scale and a zero per group)\n"+
		"quantizes in_proj, out_proj, the embedding and lm_head, the small tensors staying as they are; default: as they are.\n"+
		"A quantized source converts only to its own format (a copy): quantize from the float checkpoint")
	group := fs.Int("group-size", model.DefaultGroupSize, "with --dtype int4: elements per group along a row, a positive even number (an int4 source keeps its own unless this is given)")
	embedding := fs.String("embedding-dtype", "", "with --dtype int8 or int4: the embedding and lm_head's format, int8 (the default: they cost the most quality per byte) or int4")
	shard := fs.Int64("shard-size", defaultShardSize, "the most bytes of weights in one safetensors file")
	fs.Func("adapter", "a PEFT LoRA adapter `DIR` to merge into the written weights (a folder, URL or hub id); repeat it to merge several, in order (docs/adapters.md)", func(s string) error {
		mf.adapters = append(mf.adapters, s)
		return nil
	})
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("convert: --out DIR is required")
	}
	groupSet := false
	fs.Visit(func(f *flag.Flag) { groupSet = groupSet || f.Name == "group-size" })
	to, err := parseTarget(*dtype, *embedding, *group, groupSet)
	if err != nil {
		return err
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
	// Every tensor the config needs is there with its shape, so a
	// conversion that would not load fails before anything is written.
	if err := model.CheckWeights(cfg, ck); err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	ads, err := mf.openAdapters(ctx, cfg, ck, stderr)
	if err != nil {
		return err
	}
	merge, err := model.PlanMerge(cfg, ck, ads)
	if err != nil {
		return err
	}
	for _, a := range ads {
		fmt.Fprintf(stderr, "mamba2: merging adapter %s\n", a.Name)
	}
	tensors, q, err := plan(ck, cfg, to, *shard)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	if err := emptyDir(*out); err != nil {
		return err
	}
	manifest := map[string]loader.ManifestEntry{}
	weightMap := map[string]string{}
	files := shardNames(tensors)
	for i, file := range files {
		var these []outTensor
		for _, t := range tensors {
			if t.shard == i {
				these = append(these, t)
				for _, p := range t.parts {
					weightMap[p.name] = file
				}
			}
		}
		e, err := writeShard(ctx, ck, filepath.Join(*out, file), these, q, merge)
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
		if f == "config.json" && q.On() && q != cfg.Quant {
			if data, err = setJSONField(data, "quantization_config", quantConfigOf(q)); err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
		}
		if manifest[f], err = writeFile(filepath.Join(*out, f), data); err != nil {
			return err
		}
	}
	mj, _ := json.MarshalIndent(manifest, "", "  ")
	if _, err := writeFile(filepath.Join(*out, loader.ManifestFile), mj); err != nil {
		return err
	}
	note := ""
	if n := countQuantized(tensors); n > 0 {
		note = fmt.Sprintf(", %d of them %s", n, quantName(q))
	}
	fmt.Fprintf(stdout, "mamba2: converted %s (%d tensors%s) into %s\n", name, len(tensors), note, *out)
	return nil
}

// convertTarget is what --dtype and --group-size ask for.
type convertTarget struct {
	dtype    loader.DType // every float tensor's dtype; "" keeps each as it is
	quant    model.Quant  // int8 or int4: the large products quantized
	groupSet bool         // --group-size was given (int4)
	// --embedding-dtype was given
	embeddingSet bool
}

func parseTarget(dtype, embedding string, group int, groupSet bool) (convertTarget, error) {
	var t convertTarget
	if dtype != "" {
		f, err := model.ParseFormat(dtype)
		if err != nil {
			return t, fmt.Errorf("convert: --dtype %q: want f32, f16, bf16, int8 or int4", dtype)
		}
		if f.Quantized() {
			t.quant.Format = f
		} else {
			t.dtype = f.DType()
		}
	}
	if embedding != "" {
		e, err := model.ParseFormat(embedding)
		if err != nil || !e.Quantized() {
			return t, fmt.Errorf("convert: --embedding-dtype %q: want int8 or int4", embedding)
		}
		if !t.quant.On() {
			return t, errors.New("convert: --embedding-dtype needs --dtype int8 or int4")
		}
		t.quant.Embedding, t.embeddingSet = e, true
	}
	if groupSet && t.quant.Format != model.FormatInt4 && t.quant.Embedding != model.FormatInt4 {
		if dtype == "" {
			return t, errors.New("convert: --group-size needs --dtype int4")
		}
		return t, fmt.Errorf("convert: --group-size is for --dtype int4 only, not %s", strings.ToLower(dtype))
	}
	if t.quant.Format == model.FormatInt4 || t.quant.Embedding == model.FormatInt4 {
		if group <= 0 || group%2 != 0 || group > 1<<16 {
			return t, fmt.Errorf("convert: --group-size %d: want a positive even number up to 65536 (each group starts on a byte)", group)
		}
		t.quant.GroupSize, t.groupSet = group, groupSet
	}
	return t, nil
}

// outTensor is one tensor of the source as it will be written: one
// safetensors entry, or a quantized weight's data, scales and (int4) zeros,
// which stay consecutive in one file so a loader reads them front to back.
type outTensor struct {
	name     string      // the (data) tensor's name in the checkpoint
	in       loader.Info // its source
	parts    []outPart
	quantize bool       // the parts are model.QuantizeSpec's streams over in
	role     model.Role // when quantizing
	shard    int
}

// outPart is one safetensors entry of an outTensor.
type outPart struct {
	name  string
	dtype loader.DType
	shape []int
	size  int64
	src   loader.Info // the tensor copied or converted (not when quantizing)
}

func (t outTensor) size() int64 {
	var n int64
	for _, p := range t.parts {
		n += p.size
	}
	return n
}

// plan lists the tensors to write, in checkpoint order, and puts them in
// shards, a quantized tensor's parts always in one shard. It returns the
// quantization of the result's quantized tensors (zero when there are
// none to make). A tied lm_head (state-spaces checkpoints save the
// embedding twice) is left out, as transformers leaves it out: safetensors
// cannot share bytes between tensors, and loaders tie it again from the
// config.
//
// A source stored quantized is copied (with no --dtype, or --dtype of its
// own format and group size); anything else is an error: quantizing
// quantized values again compounds their error, and convert does not
// dequantize.
func plan(ck *loader.Checkpoint, cfg model.Config, to convertTarget, shardSize int64) ([]outTensor, model.Quant, error) {
	roles := cfg.WeightRoles()
	packed := func(in loader.Info) bool {
		r, ok := roles[in.Name]
		return ok && r.Quantizable() && (in.DType == loader.I8 || in.DType == loader.U8)
	}
	sides := func(in loader.Info) []string { // by the packed dtype: U8 is int4
		if in.DType == loader.U8 {
			return []string{".scales", ".zeros"}
		}
		return []string{".scales"}
	}
	// A stored quantized tensor's scales and zeros are written with it.
	var stored model.Quant
	var first string // a stored quantized tensor, for messages
	side := map[string]bool{}
	for _, n := range ck.Names() {
		if in, _ := ck.Info(n); packed(in) {
			stored = cfg.Quant // model.CheckWeights matched every packed tensor to it
			if first == "" {
				first = n
			}
			for _, s := range sides(in) {
				side[strings.TrimSuffix(n, ".weight")+s] = true
			}
		}
	}
	q := to.quant
	if stored.On() {
		what := stored.Format.String()
		if stored.Format == model.FormatInt4 {
			what = fmt.Sprintf("int4 (group size %d)", stored.GroupSize)
		}
		switch {
		case to.dtype != "":
			return nil, q, fmt.Errorf("tensor %s is stored as %s and convert does not dequantize: convert --dtype %s from the float checkpoint",
				first, what, strings.ToLower(string(to.dtype)))
		case q.On() && (q.Format != stored.Format || q.Embedding != stored.Embedding && to.embeddingSet):
			return nil, q, fmt.Errorf("tensor %s is stored as %s; converting it to %s would compound the quantization error: convert from the float checkpoint",
				first, stored, q)
		case q.On() && to.groupSet && q.GroupSize != stored.GroupSize:
			return nil, q, fmt.Errorf("tensor %s is stored as %s; regrouping it to %d would compound the quantization error: convert from the float checkpoint",
				first, what, q.GroupSize)
		}
		q = stored // what the copied tensors are
	}
	var ts []outTensor
	names := map[string]bool{}
	for _, n := range ck.Names() {
		in, _ := ck.Info(n)
		if side[n] {
			continue
		}
		if cfg.TieEmbeddings && strings.HasPrefix(n, "lm_head.") {
			if lm, ok := ck.Info("lm_head.weight"); ok && (n == lm.Name || lm.DType == loader.I8 || lm.DType == loader.U8) {
				continue // with its scales and zeros, if any
			}
		}
		t := outTensor{name: n, in: in}
		role, bound := roles[n]
		_, float := model.FloatFormat(in.DType)
		switch {
		case packed(in):
			t.parts = []outPart{copyPart(in)}
			base := strings.TrimSuffix(n, ".weight")
			for _, s := range sides(in) {
				si, _ := ck.Info(base + s) // present: model.CheckWeights
				t.parts = append(t.parts, copyPart(si))
			}
		case to.quant.On() && bound && role.Quantizable() && float && len(in.Shape) == 2:
			t.quantize, t.role = true, role
			t.parts = quantParts(n, in.Shape, q, role)
		case to.dtype != "" && float:
			t.parts = []outPart{{name: n, dtype: to.dtype, shape: in.Shape, size: in.Elements() * int64(to.dtype.Size()), src: in}}
		default:
			t.parts = []outPart{copyPart(in)}
		}
		for _, p := range t.parts {
			if names[p.name] {
				return nil, q, fmt.Errorf("tensor %s would be written twice: the source holds a tensor of that name, and it is also the scales or zeros of a quantized weight", p.name)
			}
			names[p.name] = true
		}
		ts = append(ts, t)
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
		if used > 0 && used+ts[i].size() > shardSize {
			shard, used = shard+1, 0
		}
		ts[i].shard = shard
		used += ts[i].size()
	}
	if countQuantized(ts) == 0 {
		q = model.Quant{} // nothing to say in config.json
	}
	return ts, q, nil
}

func copyPart(in loader.Info) outPart {
	return outPart{name: in.Name, dtype: in.DType, shape: in.Shape, size: in.Size, src: in}
}

// quantParts are the entries of float matrix name of shape [N, K]
// quantized as q (docs/quantization.md): BASE.weight, the packed integers,
// [N, K] I8 or [N, ceil(K/2)] U8; BASE.scales, F16 [N] (int8) or
// [N, groups] (int4); and for int4 BASE.zeros, F16 [N, groups].
func quantParts(name string, shape []int, q model.Quant, role model.Role) []outPart {
	N, K := shape[0], shape[1]
	f, gs := q.For(role)
	base := strings.TrimSuffix(name, ".weight")
	ps := []outPart{{name: name, dtype: f.DType(), shape: []int{N, f.RowBytes(K)}, size: int64(N) * int64(f.RowBytes(K))}}
	if f == model.FormatInt8 {
		return append(ps, outPart{name: base + ".scales", dtype: loader.F16, shape: []int{N}, size: 2 * int64(N)})
	}
	g := model.Groups(K, gs)
	for _, s := range []string{".scales", ".zeros"} {
		ps = append(ps, outPart{name: base + s, dtype: loader.F16, shape: []int{N, g}, size: 2 * int64(N) * int64(g)})
	}
	return ps
}

// countQuantized counts the tensors written in a quantized format.
func countQuantized(ts []outTensor) int {
	n := 0
	for _, t := range ts {
		if len(t.parts) > 1 {
			n++
		}
	}
	return n
}

func quantName(q model.Quant) string { return q.String() }

// quantConfig is config.json's quantization_config as model.ParseConfig
// reads it (docs/quantization.md).
type quantConfig struct {
	Method    string `json:"quant_method"`
	Format    string `json:"format"`
	GroupSize int    `json:"group_size,omitempty"` // int4
	Embedding string `json:"embedding_format"`     // the embedding and lm_head
}

func quantConfigOf(q model.Quant) quantConfig {
	c := quantConfig{Method: model.QuantMethod, Format: q.Format.String()}
	e, gs := q.For(model.RoleEmbedding)
	c.Embedding = e.String()
	if q.Format == model.FormatInt4 || e == model.FormatInt4 {
		_, c.GroupSize = q.For(model.RoleInProj)
		c.GroupSize = max(c.GroupSize, gs)
	}
	return c
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
		n += t.size()
	}
	return n
}

// writeShard writes one safetensors file: the header, then each tensor
// streamed from the source and converted chunk by chunk, so memory stays at
// a chunk whatever the model's size (a quantized tensor's scales and zeros,
// a few percent of it, are kept until its data is written). It is written
// under a temporary name and renamed when complete.
func writeShard(ctx context.Context, ck *loader.Checkpoint, path string, ts []outTensor, q model.Quant, merge *model.MergePlan) (loader.ManifestEntry, error) {
	type entry struct {
		DType   loader.DType `json:"dtype"`
		Shape   []int        `json:"shape"`
		Offsets [2]int64     `json:"data_offsets"`
	}
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, t := range ts {
		for _, p := range t.parts {
			header[p.name] = entry{p.dtype, p.shape, [2]int64{off, off + p.size}}
			off += p.size
		}
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
			if t.quantize {
				if err := writeQuantized(w, ck, t, q, merge); err != nil {
					return fmt.Errorf("tensor %s: %w", t.name, err)
				}
				continue
			}
			for _, p := range t.parts {
				if merge.Merges(p.src.Name) {
					// Merged straight into the written dtype: one rounding.
					s, err := merge.Stream(p.src.Name, p.src.DType, p.dtype, func(fn func(off int64, b []byte) error) error {
						return ck.Stream(p.src.Name, 0, fn)
					})
					if err == nil {
						err = s(func(_ int64, b []byte) error { _, err := w.Write(b); return err })
					}
					if err != nil {
						return fmt.Errorf("tensor %s: %w", p.src.Name, err)
					}
					continue
				}
				err := ck.Stream(p.src.Name, 0, func(_ int64, b []byte) error {
					if p.dtype == p.src.DType {
						_, err := w.Write(b)
						return err
					}
					n := len(b) / p.src.DType.Size()
					f32 = append(f32[:0], make([]float32, n)...)
					loader.Decode(f32, p.src.DType, b)
					buf = encode(buf[:0], f32, p.dtype)
					_, err := w.Write(buf)
					return err
				})
				if err != nil {
					return fmt.Errorf("tensor %s: %w", p.src.Name, err)
				}
			}
		}
		return nil
	})
}

// writeQuantized streams a float matrix through model.QuantizeSpec, the
// quantizer a load with --quantize uses, and writes its packed data, then
// its scales, then (int4) its zeros.
func writeQuantized(w io.Writer, ck *loader.Checkpoint, t outTensor, q model.Quant, merge *model.MergePlan) error {
	f, _ := model.FloatFormat(t.in.DType)
	es := int64(t.in.DType.Size())
	spec := model.WeightSpec{Name: t.name, Role: t.role, Shape: t.in.Shape, Format: f, Data: func(fn func(off int64, b []byte) error) error {
		return ck.Stream(t.name, 0, func(off int64, b []byte) error {
			// A NaN or an infinity would quantize into a whole row of
			// nonsense (or be clamped away unseen): refuse it, as a load does.
			if i := nonFinite(t.in.DType, b); i >= 0 {
				return fmt.Errorf("%s holds a NaN or an infinity at element %d: weights must be finite", t.in.File, off/es+int64(i))
			}
			return fn(off, b)
		})
	}}
	dt := t.in.DType
	if merge.Merges(t.name) { // merged first, handed on as f32: rounded once, by the quantizer
		s, err := merge.Stream(t.name, dt, loader.F32, spec.Data)
		if err != nil {
			return err
		}
		spec.Data, spec.Format, dt = s, model.FormatF32, loader.F32
	}
	qs := model.QuantizeSpec(spec, dt, q)
	for i, s := range []model.Stream{qs.Data, qs.Scales, qs.Zeros}[:len(t.parts)] {
		var n int64
		err := s(func(_ int64, b []byte) error {
			n += int64(len(b))
			_, err := w.Write(b)
			return err
		})
		if err != nil {
			return err
		}
		if p := t.parts[i]; n != p.size {
			return fmt.Errorf("quantizing gave %d bytes of %s, want %d", n, p.name, p.size)
		}
	}
	return nil
}

// nonFinite is the index of the first NaN or infinity among the float
// elements b (dtype dt), or -1.
func nonFinite(dt loader.DType, b []byte) int {
	switch dt {
	case loader.F32:
		for i := 0; i+4 <= len(b); i += 4 {
			if binary.LittleEndian.Uint32(b[i:])&0x7f800000 == 0x7f800000 {
				return i / 4
			}
		}
	case loader.F16, loader.BF16:
		m := uint16(0x7c00)
		if dt == loader.BF16 {
			m = 0x7f80
		}
		for i := 0; i+2 <= len(b); i += 2 {
			if binary.LittleEndian.Uint16(b[i:])&m == m {
				return i / 2
			}
		}
	}
	return -1
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

// setJSONField returns the JSON object text obj with its member key set to
// value: the value replaced where the key is present, else the member
// added after the last one, indented as the first one is. Every other byte
// stays as it was (key order, number spellings, layout): only strings and
// nesting are tracked, so the bare Infinity and NaN that Python's json
// module writes (transformers' time_step_limit) pass through untouched.
func setJSONField(obj []byte, key string, value any) ([]byte, error) {
	bad := func(why string) ([]byte, error) { return nil, fmt.Errorf("config.json: %s", why) }
	open := skipSpace(obj, 0)
	if open == len(obj) || obj[open] != '{' {
		return bad("not a JSON object")
	}
	depth, inStr, esc := 0, false, false
	expectKey := true
	keyStart, valStart := -1, -1 // of the member being read
	var curKey string
	first, last, close := -1, -1, -1 // the first key's start, the last value's end, the closing brace
	found := [2]int{-1, -1}          // key's value, when present
	for i := open; i < len(obj) && close < 0; i++ {
		c := obj[i]
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
				if keyStart >= 0 {
					if err := json.Unmarshal(obj[keyStart:i+1], &curKey); err != nil {
						return bad(fmt.Sprintf("key %s: %v", obj[keyStart:i+1], err))
					}
					keyStart = -1
				}
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
			if depth == 1 && expectKey {
				keyStart, expectKey = i, false
				if first < 0 {
					first = i
				}
			}
		case ':':
			if depth == 1 {
				valStart = skipSpace(obj, i+1)
			}
		case '{', '[':
			depth++
		case ',', '}', ']':
			if depth == 1 && c != ']' && valStart >= 0 {
				end := i
				for end > valStart && isSpace(obj[end-1]) {
					end--
				}
				if curKey == key {
					found = [2]int{valStart, end}
				}
				last, valStart = end, -1
			}
			if c == ',' {
				expectKey = depth == 1
			} else if depth--; depth == 0 {
				close = i
			}
		}
	}
	if close < 0 {
		return bad("the object is not closed")
	}
	if skipSpace(obj, close+1) != len(obj) {
		return bad("text after the object")
	}
	indent := "" // before each member
	if first >= 0 {
		indent = string(obj[open+1 : first])
	}
	var v []byte
	var err error
	if nl := strings.LastIndexByte(indent, '\n'); nl >= 0 {
		prefix := indent[nl+1:]
		unit := prefix
		if unit == "" {
			unit = "  "
		}
		v, err = json.MarshalIndent(value, prefix, unit)
	} else {
		v, err = json.Marshal(value)
	}
	if err != nil {
		return nil, err
	}
	var out []byte
	if found[0] >= 0 {
		out = append(out, obj[:found[0]]...)
		out = append(out, v...)
		return append(out, obj[found[1]:]...), nil
	}
	k, _ := json.Marshal(key)
	member := append(append(k, ": "...), v...)
	if last < 0 { // an empty object
		out = append(out, obj[:open+1]...)
		out = append(out, member...)
		return append(out, obj[open+1:]...), nil
	}
	out = append(out, obj[:last]...)
	out = append(out, ',')
	out = append(out, indent...)
	out = append(out, member...)
	return append(out, obj[last:]...), nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}
