package model

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/mamba2web/mamba2/loader"
)

// Layer holds the weights of one Mamba-2 block (SPEC §1.3).
type Layer struct {
	Norm    Tensor // [D]
	InProj  Tensor // [ProjDim, D]
	InBias  Tensor // [ProjDim], only with use_bias
	ConvW   Tensor // [ConvDim, K] (stored [ConvDim, 1, K])
	ConvB   Tensor // [ConvDim], only with use_conv_bias
	DtBias  Tensor // [H]
	ALog    Tensor // [H]
	D       Tensor // [H]
	MixNorm Tensor // [I]
	OutProj Tensor // [D, I]
	OutBias Tensor // [D], only with use_bias
}

// Weights are the whole model's tensors, owned by one backend.
type Weights struct {
	Embed Tensor // [V, D]
	// Layers are the Mamba-2 mixers' weights, by block (zero for a block
	// without one); Blocks point into them.
	Layers []Layer
	// Blocks are the stack the forward pass runs, one per layer
	// (blocks.go); for a Mamba-2 model each is Layers[l] with its norm.
	Blocks []Block
	// Shared are Zamba2's shared transformer blocks.
	Shared []*SharedBlock
	NormF  Tensor // [D]
	LMHead Tensor // [V, D]; the same tensor as Embed when tied
	// MupVector is Falcon-H1's per-column in_proj multiplier
	// (ssm_multipliers over z, x, B, C, dt, times ssm_in_multiplier),
	// made at load; nil for the other families.
	MupVector Tensor
}

// binding ties a checkpoint name to a field, with the shape the config implies.
type binding struct {
	names []string // accepted names, first preferred
	shape []int    // shape in the checkpoint
	use   []int    // shape the model uses; nil means shape
	role  Role
	dst   *Tensor
}

func (c Config) bindings(w *Weights) []binding {
	if c.Hybrid != nil {
		return c.hybridBindings(w)
	}
	defer mamba2Blocks(w)
	D, I, V, H, K, C, PD := c.Hidden, c.Inner(), c.VocabSize, c.Heads, c.ConvKernel, c.ConvDim(), c.ProjDim()
	bs := []binding{
		{names: []string{"backbone.embeddings.weight", "backbone.embedding.weight"}, shape: []int{V, D}, role: RoleEmbedding, dst: &w.Embed},
		{names: []string{"backbone.norm_f.weight"}, shape: []int{D}, role: RoleVector, dst: &w.NormF},
	}
	if !c.TieEmbeddings {
		bs = append(bs, binding{names: []string{"lm_head.weight"}, shape: []int{V, D}, role: RoleLMHead, dst: &w.LMHead})
	}
	w.Layers = make([]Layer, c.Layers)
	for l := range w.Layers {
		L := &w.Layers[l]
		p := fmt.Sprintf("backbone.layers.%d.", l)
		vec := func(name string, n int, dst *Tensor) binding {
			return binding{names: []string{p + name}, shape: []int{n}, role: RoleVector, dst: dst}
		}
		bs = append(bs,
			vec("norm.weight", D, &L.Norm),
			binding{names: []string{p + "mixer.in_proj.weight"}, shape: []int{PD, D}, role: RoleInProj, dst: &L.InProj},
			binding{names: []string{p + "mixer.conv1d.weight"}, shape: []int{C, 1, K}, use: []int{C, K}, role: RoleConv, dst: &L.ConvW},
			vec("mixer.dt_bias", H, &L.DtBias),
			vec("mixer.A_log", H, &L.ALog),
			vec("mixer.D", H, &L.D),
			vec("mixer.norm.weight", I, &L.MixNorm),
			binding{names: []string{p + "mixer.out_proj.weight"}, shape: []int{D, I}, role: RoleOutProj, dst: &L.OutProj},
		)
		if c.ConvBias {
			bs = append(bs, vec("mixer.conv1d.bias", C, &L.ConvB))
		}
		if c.UseBias {
			bs = append(bs, vec("mixer.in_proj.bias", PD, &L.InBias), vec("mixer.out_proj.bias", D, &L.OutBias))
		}
	}
	return bs
}

// WeightRoles maps every checkpoint tensor name the config binds (all
// accepted spellings) to its role; Role.Quantizable says which of them a
// quantized checkpoint stores as int8 or int4.
func (c Config) WeightRoles() map[string]Role {
	out := map[string]Role{}
	for _, bd := range c.bindings(&Weights{}) {
		for _, n := range bd.names {
			out[n] = bd.role
		}
	}
	return out
}

// Progress says how far a load has come, in tensor bytes handed to the
// backend: in all, and in the file being read.
type Progress struct {
	Done, Total         int64
	File                string // the safetensors file of the current tensor
	FileDone, FileTotal int64
}

// LoadOptions are the choices of a weight load.
type LoadOptions struct {
	// Progress, when not nil, is called after every chunk; Done never
	// decreases.
	Progress func(Progress)
	// Quantize quantizes the float in_proj, out_proj, embedding and
	// lm_head weights while they stream (the zero value keeps them as
	// they are). A checkpoint stored in another quantized format is
	// refused: quantizing quantized values compounds their error.
	Quantize Quant
	// Adapters are PEFT LoRA adapters (OpenAdapter) merged into the
	// weights as they stream, one after another in this order, before
	// any quantization (docs/adapters.md).
	Adapters []*Adapter
}

// source is where one binding's tensor comes from: its data and, for a
// quantized tensor, its scales and zeros, as the checkpoint stores them.
type source struct {
	format              Format
	group               int // int4
	data, scales, zeros loader.Info
}

func (s source) size() int64 { return s.data.Size + s.scales.Size + s.zeros.Size }

// LoadWeights checks every tensor the config implies against the checkpoint
// (presence and shape, all before any data moves) and then hands each one to
// the backend. A missing or misshapen tensor is an error naming it, and so
// is a NaN or infinite value, found as the bytes stream past (before the
// backend sees them) by its exponent bits.
func LoadWeights(c Config, ck *loader.Checkpoint, b Backend, opt LoadOptions) (*Weights, error) {
	if err := opt.Quantize.Check(); err != nil {
		return nil, err
	}
	if c.Hybrid != nil {
		if _, err := RequireHybrid(c, b); err != nil {
			return nil, err
		}
	}
	w := &Weights{}
	bs, srcs, err := c.bind(ck, w)
	if err != nil {
		return nil, err
	}
	if err := checkQuantize(bs, srcs, opt.Quantize); err != nil {
		return nil, err
	}
	merges, err := planAdapters(c, bs, srcs, opt.Adapters)
	if err != nil {
		return nil, err
	}
	var total int64
	fileTotal := map[string]int64{}
	for _, s := range srcs {
		total += s.size()
		for _, in := range []loader.Info{s.data, s.scales, s.zeros} {
			fileTotal[in.File] += in.Size
		}
	}
	// Stream in file order: over HTTP, a weight file being stored in the
	// browser cache is read once, front to back (loader/download.go), and on a
	// disk reads stay sequential.
	order := make([]int, len(bs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		if c := strings.Compare(srcs[a].data.File, srcs[b].data.File); c != 0 {
			return c
		}
		return cmp.Compare(srcs[a].data.Begin, srcs[b].data.Begin)
	})
	// Progress is reported per chunk, so a large tensor (an embedding of a
	// big vocabulary) still moves the bar; it never goes back, even when a
	// backend reads a tensor twice.
	var done, reported int64
	fileDone := map[string]int64{}
	for _, i := range order {
		bd, src := bs[i], srcs[i]
		shape := bd.use
		if shape == nil {
			shape = bd.shape
		}
		var bad error // a non-finite value, reported as it is rather than as the backend wraps it
		base := done
		stream := func(in loader.Info, at int64) Stream {
			fileBase := fileDone[in.File]
			return func(fn func(off int64, b []byte) error) error {
				scan := finiteScan{es: in.DType.Size()}
				return ck.Stream(in.Name, 0, func(off int64, b []byte) error {
					if i, ok := scan.next(in.DType, b); !ok {
						bad = nonFiniteError(in, i, scan.bits)
						return bad
					}
					if err := fn(off, b); err != nil {
						return err
					}
					if k := base + at + off + int64(len(b)); opt.Progress != nil && k > reported {
						reported = k
						opt.Progress(Progress{Done: k, Total: total, File: in.File,
							FileDone: fileBase + at + off + int64(len(b)), FileTotal: fileTotal[in.File]})
					}
					return nil
				})
			}
		}
		spec := WeightSpec{Name: src.data.Name, Role: bd.role, Shape: shape, Format: src.format, GroupSize: src.group,
			Data: stream(src.data, 0)}
		if parts := merges[i]; len(parts) > 0 {
			// Read here, one tensor's adapters at a time: an adapter is a
			// few percent of the model, but all of them at once need not be.
			d, err := loadLowRank(shape[0], shape[1], parts)
			if err != nil {
				return nil, err
			}
			quantize := opt.Quantize.On() && bd.role.Quantizable() && len(shape) == 2
			to := src.data.DType
			if quantize {
				to = loader.F32 // rounded once, by the quantizer
			}
			spec = mergeSpec(spec, src.data.DType, to, d, adapterNames(parts))
		}
		if src.format.Quantized() {
			spec.Scales = stream(src.scales, src.data.Size)
			if src.format == FormatInt4 {
				spec.Zeros = stream(src.zeros, src.data.Size+src.scales.Size)
			}
		} else if opt.Quantize.On() && bd.role.Quantizable() && len(shape) == 2 {
			spec = QuantizeSpec(spec, spec.Format.DType(), opt.Quantize)
		}
		t, err := b.Weight(spec)
		if bad != nil {
			if err == nil {
				b.Free(t)
			}
			return nil, bad
		}
		if err != nil {
			return nil, fmt.Errorf("loading %s: %w", src.data.Name, err)
		}
		*bd.dst = t
		done += src.size()
		for _, in := range []loader.Info{src.data, src.scales, src.zeros} {
			fileDone[in.File] += in.Size
		}
		if opt.Progress != nil && done > reported {
			reported = done
			opt.Progress(Progress{Done: done, Total: total, File: src.data.File, FileDone: fileDone[src.data.File], FileTotal: fileTotal[src.data.File]})
		}
	}
	if c.TieEmbeddings {
		w.LMHead = w.Embed
	}
	if c.Hybrid != nil && c.Hybrid.SSMMul != nil {
		w.MupVector = mupVector(c, b)
	}
	return w, nil
}

// mupVector is Falcon-H1's in_proj output multiplier per column: the five
// ssm_multipliers over z [I], x [I], B [GN], C [GN] and dt [H], each times
// ssm_in_multiplier (in_proj is linear, so scaling its input is scaling
// its output).
func mupVector(c Config, b Backend) Tensor {
	hy := c.Hybrid
	I, GN, H := c.Inner(), c.Groups*c.State, c.Heads
	v := make([]float32, 0, c.ProjDim())
	for part, n := range []int{I, I, GN, GN, H} {
		for range n {
			v = append(v, float32(hy.SSMMul[part]*hy.SSMInMul))
		}
	}
	t := b.Alloc(F32, len(v))
	b.Write(t, v)
	return t
}

// checkQuantize refuses to quantize a tensor that is quantized already in
// another format. A stored quantized table (embedding, lm_head) is taken
// as it is unless q names the tables' format.
func checkQuantize(bs []binding, srcs []source, q Quant) error {
	if !q.On() {
		return nil
	}
	for i, s := range srcs {
		f, gs := q.For(bs[i].role)
		if r := bs[i].role; (r == RoleEmbedding || r == RoleLMHead) && q.Embedding == 0 {
			continue // the tables as they are stored, unless their format is asked for
		}
		if s.format.Quantized() && (s.format != f || s.group != gs) {
			return fmt.Errorf("tensor %s is stored as %s%s; quantizing it to %s would compound the error: start from the float checkpoint",
				bs[i].names[0], s.format, groupNote(s), f)
		}
	}
	return nil
}

func groupNote(s source) string {
	if s.format == FormatInt4 {
		return fmt.Sprintf(" (group size %d)", s.group)
	}
	return ""
}

// CheckWeights is LoadWeights' check alone: every tensor the config
// implies is in the checkpoint, with its shape. A load plans with it
// (config, headers, tensors) before it opens a backend.
func CheckWeights(c Config, ck *loader.Checkpoint) error {
	_, _, err := c.bind(ck, &Weights{})
	return err
}

// bind finds the checkpoint's tensors for every binding of w.
func (c Config) bind(ck *loader.Checkpoint, w *Weights) ([]binding, []source, error) {
	// The tables below grow with the layer count, so the config's counts
	// are bounded first, and a config promising more layers than the
	// checkpoint holds fails on its last layer before anything is built.
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	if last := fmt.Sprintf("backbone.layers.%d.mixer.in_proj.weight", c.Layers-1); c.Hybrid == nil && !has(ck, last) {
		return nil, nil, fmt.Errorf("checkpoint lacks tensor %s, but config.json has %d layers", last, c.Layers)
	}
	bs := c.bindings(w)
	srcs := make([]source, len(bs))
	for i, bd := range bs {
		var in loader.Info
		found := false
		for _, n := range bd.names {
			if in, found = ck.Info(n); found {
				break
			}
		}
		if !found {
			return nil, nil, fmt.Errorf("checkpoint lacks tensor %s", bd.names[0])
		}
		src, err := c.sourceOf(ck, bd, in)
		if err != nil {
			return nil, nil, err
		}
		srcs[i] = src
	}
	return bs, srcs, nil
}

// sourceOf checks one tensor's dtype and shape against its binding, and
// finds a quantized tensor's scales and zeros (docs/quantization.md: for
// X.weight they are X.scales and X.zeros, both F16).
func (c Config) sourceOf(ck *loader.Checkpoint, bd binding, in loader.Info) (source, error) {
	if f, ok := FloatFormat(in.DType); ok {
		if !slices.Equal(in.Shape, bd.shape) {
			return source{}, fmt.Errorf("tensor %s has shape %v, but the config implies %v", in.Name, in.Shape, bd.shape)
		}
		return source{format: f, data: in}, nil
	}
	if in.DType != loader.I8 && in.DType != loader.U8 {
		return source{}, fmt.Errorf("tensor %s is %s; the runtime reads F32, F16 and BF16 weights (and I8/U8 quantized ones): convert the checkpoint to one of them", in.Name, in.DType)
	}
	f := FormatInt8
	if in.DType == loader.U8 {
		f = FormatInt4
	}
	if !bd.role.Quantizable() || len(bd.shape) != 2 {
		return source{}, fmt.Errorf("tensor %s is %s, but only in_proj, out_proj, the embedding and lm_head may be quantized", in.Name, in.DType)
	}
	expect, group := c.Quant.For(bd.role)
	if !c.Quant.On() || expect != f {
		return source{}, fmt.Errorf("tensor %s is %s (%s data), but config.json's quantization_config says %s",
			in.Name, in.DType, f, quantName(c.Quant, bd.role))
	}
	N, K := bd.shape[0], bd.shape[1]
	src := source{format: f, data: in, group: group}
	if want := []int{N, f.RowBytes(K)}; !slices.Equal(in.Shape, want) {
		return source{}, fmt.Errorf("tensor %s has shape %v, but %s data for the config's %v is %v", in.Name, in.Shape, f, bd.shape, want)
	}
	base := strings.TrimSuffix(in.Name, ".weight")
	want := []int{N}
	if f == FormatInt4 {
		want = []int{N, Groups(K, src.group)}
	}
	side := func(suffix string) (loader.Info, error) {
		name := base + suffix
		s, ok := ck.Info(name)
		if !ok {
			return s, fmt.Errorf("checkpoint lacks tensor %s, the %s of %s %s", name, strings.TrimPrefix(suffix, "."), f, in.Name)
		}
		if s.DType != loader.F16 || !slices.Equal(s.Shape, want) {
			return s, fmt.Errorf("tensor %s is %s %v, want F16 %v", name, s.DType, s.Shape, want)
		}
		return s, nil
	}
	var err error
	if src.scales, err = side(".scales"); err != nil {
		return source{}, err
	}
	if f == FormatInt4 {
		if src.zeros, err = side(".zeros"); err != nil {
			return source{}, err
		}
	}
	return src, nil
}

func quantName(q Quant, r Role) string {
	if !q.On() {
		return "nothing (it has none)"
	}
	f, _ := q.For(r)
	return fmt.Sprintf("%s for %s", f, r)
}

func has(ck *loader.Checkpoint, name string) bool {
	_, ok := ck.Info(name)
	return ok
}

// finiteScan finds the first NaN or infinity in a tensor streamed in chunks.
// Chunks from loader.Checkpoint.Stream hold whole elements, but an element
// split across two chunks is still checked whole.
type finiteScan struct {
	es   int     // element size in bytes
	done int64   // elements checked so far
	part [4]byte // the start of an element split across chunks
	np   int     // bytes in part
	bits uint32  // the bits of the bad element, once found
}

// next checks the chunk b. It returns false and the index of the first bad
// element in the whole tensor when the chunk holds one.
func (s *finiteScan) next(dt loader.DType, b []byte) (int64, bool) {
	if s.es == 0 {
		return 0, true
	}
	if s.np > 0 {
		k := copy(s.part[s.np:s.es], b)
		s.np += k
		b = b[k:]
		if s.np < s.es {
			return 0, true
		}
		s.np = 0
		if j := firstNonFinite(dt, s.part[:s.es]); j >= 0 {
			s.bits = elementBits(dt, s.part[:s.es])
			return s.done, false
		}
		s.done++
	}
	whole := len(b) - len(b)%s.es
	if j := firstNonFinite(dt, b[:whole]); j >= 0 {
		s.bits = elementBits(dt, b[j*s.es:])
		return s.done + int64(j), false
	}
	s.done += int64(whole / s.es)
	s.np = copy(s.part[:], b[whole:])
	return 0, true
}

func elementBits(dt loader.DType, b []byte) uint32 {
	if dt == loader.F32 {
		return binary.LittleEndian.Uint32(b)
	}
	return uint32(binary.LittleEndian.Uint16(b))
}

// nonFiniteError names the tensor, its file and the element.
func nonFiniteError(in loader.Info, i int64, bits uint32) error {
	var mant, sign uint32
	switch in.DType {
	case loader.F32:
		mant, sign = bits&0x7fffff, bits>>31
	case loader.F16:
		mant, sign = bits&0x3ff, bits>>15
	case loader.BF16:
		mant, sign = bits&0x7f, bits>>15
	}
	what := "NaN"
	if mant == 0 {
		what = "+Inf"
		if sign != 0 {
			what = "-Inf"
		}
	}
	return fmt.Errorf("%s: tensor %s (%s %v) holds %s at element %d: weights must be finite",
		in.File, in.Name, in.DType, in.Shape, what, i)
}

// firstNonFinite returns the index of the first element of b (little-endian
// values of type dt; len(b) a multiple of the element size) whose exponent
// bits are all ones, a NaN or an infinity, or -1 when there is none.
//
// It tests a 64-bit word of 2 or 4 elements at a time: with e the exponent
// mask in every lane, y = (x & e) ^ e has a zero lane exactly where an
// exponent is all ones, and since no lane of y has its top bit set,
// (y - 1 in every lane) sets a lane's top bit only when some lane is zero.
// That costs a few integer operations per word, next to reading the bytes
// from the file; only a word that holds a bad element is looked at closer.
func firstNonFinite(dt loader.DType, b []byte) int {
	var e, ones, top uint64
	var es int
	switch dt {
	case loader.F32:
		e, ones, top, es = 0x7f800000_7f800000, 0x00000001_00000001, 0x80000000_80000000, 4
	case loader.F16:
		e, ones, top, es = 0x7c00_7c00_7c00_7c00, 0x0001_0001_0001_0001, 0x8000_8000_8000_8000, 2
	case loader.BF16:
		e, ones, top, es = 0x7f80_7f80_7f80_7f80, 0x0001_0001_0001_0001, 0x8000_8000_8000_8000, 2
	default:
		return -1
	}
	i := 0
	for ; i+32 <= len(b); i += 32 {
		y0 := binary.LittleEndian.Uint64(b[i:])&e ^ e
		y1 := binary.LittleEndian.Uint64(b[i+8:])&e ^ e
		y2 := binary.LittleEndian.Uint64(b[i+16:])&e ^ e
		y3 := binary.LittleEndian.Uint64(b[i+24:])&e ^ e
		if ((y0-ones)|(y1-ones)|(y2-ones)|(y3-ones))&top != 0 {
			break
		}
	}
	for ; i+es <= len(b); i += es {
		var v uint64
		if es == 4 {
			v = uint64(binary.LittleEndian.Uint32(b[i:]))
		} else {
			v = uint64(binary.LittleEndian.Uint16(b[i:]))
		}
		if m := e & (1<<(8*es) - 1); v&m == m {
			return i / es
		}
	}
	return -1
}

// Free releases every weight tensor on b (the tied head once). The
// weights cannot be used afterwards.
func (w *Weights) Free(b Backend) {
	for _, t := range w.tensors() {
		if t != nil {
			b.Free(t)
		}
	}
}
