package modeltest

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// OpsTolerance is RunOps' bound on |got − want| / (1 + |want|) per element:
// float32 kernels against the CPU's loops, some of which sum in float64.
const OpsTolerance = 1e-4

// RunOps is the conformance suite of single operations: every model.Backend
// operation, and model.DeviceSampler when b implements it, on seeded random
// inputs, compared with the CPU reference (cpu.New) run on the same inputs.
// It covers sizes that are not multiples of a workgroup or chunk, two
// sequences with a left-padding mask, one decoded token (Chunked false) and
// prompts (Chunked true, with a finite dt clamp) continuing from nonzero
// conv and SSM state, F32, F16 and BF16 weights and int8 and int4 matrices (odd row lengths
// and ragged int4 groups included),
// norms in groups fused into the products, the gate, one layer's decode
// step op by op, and sampling ties. It also reads back the
// inputs an operation must leave alone. b must be fresh; RunOps does not
// close it.
func RunOps(t *testing.T, b model.Backend) {
	h := &opsHarness{b: b, ref: cpu.New(), rng: rand.New(rand.NewPCG(2024, 11))}
	t.Run("WriteReadZero", h.writeRead)
	t.Run("Embed", h.embed)
	t.Run("RMSNorm", h.rmsNorm)
	t.Run("MatMul", h.matMul)
	t.Run("Conv", h.conv)
	t.Run("SSM", h.ssm)
	t.Run("DecodeLayer", h.decodeLayer)
	t.Run("Last", h.last)
	if ds, ok := b.(model.DeviceSampler); ok {
		t.Run("Sample", func(t *testing.T) { h.sample(t, ds) })
	}
}

type opsHarness struct {
	b, ref model.Backend
	rng    *rand.Rand
}

// pair is the same tensor on the tested backend and on the CPU, with the
// data it was given (to check inputs that must not change).
type pair struct {
	got, want model.Tensor
	data      []float32
	weight    bool
}

// on returns p's tensor on the CPU (ref) or on the tested backend; nil for
// an absent optional argument.
func (p pair) on(ref bool) model.Tensor {
	if p.got == nil && p.want == nil {
		return nil
	}
	if ref {
		return p.want
	}
	return p.got
}

// rand fills n values uniform in [lo, hi).
func (h *opsHarness) rand(n int, lo, hi float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(lo + (hi-lo)*h.rng.Float64())
	}
	return out
}

func size(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// act allocates an F32 tensor on both backends and writes data (random in
// [-1, 1) when nil).
func (h *opsHarness) act(t *testing.T, data []float32, shape ...int) pair {
	if data == nil {
		data = h.rand(size(shape), -1, 1)
	}
	p := pair{got: h.b.Alloc(model.F32, shape...), want: h.ref.Alloc(model.F32, shape...), data: data}
	h.b.Write(p.got, data)
	h.ref.Write(p.want, data)
	return p
}

func (h *opsHarness) ids(ids []int32) pair {
	p := pair{got: h.b.Alloc(model.I32, len(ids)), want: h.ref.Alloc(model.I32, len(ids))}
	h.b.WriteIDs(p.got, ids)
	h.ref.WriteIDs(p.want, ids)
	return p
}

// Encode returns data as little-endian bytes of dtype dt, rounding to
// nearest even for F16 and BF16, as a checkpoint would hold them.
func Encode(data []float32, dt loader.DType) []byte {
	var out []byte
	for _, v := range data {
		switch dt {
		case loader.F16:
			out = binary.LittleEndian.AppendUint16(out, loader.Float32ToHalf(v))
		case loader.BF16:
			bits := math.Float32bits(v)
			bits += 0x7fff + (bits>>16)&1
			out = binary.LittleEndian.AppendUint16(out, uint16(bits>>16))
		default:
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	}
	return out
}

// SpecOf builds a WeightSpec over data encoded as dt, streamed in chunks of
// chunk elements (deliberately not aligned with rows).
func SpecOf(name string, dt loader.DType, shape []int, data []float32, chunk int) model.WeightSpec {
	raw := Encode(data, dt)
	step := chunk * dt.Size()
	format, ok := model.FloatFormat(dt)
	if !ok {
		panic("SpecOf: not a float dtype: " + dt)
	}
	return model.WeightSpec{Name: name, Format: format, Role: role(name, shape), Shape: shape, Data: func(fn func(off int64, b []byte) error) error {
		for off := 0; off < len(raw); off += step {
			if err := fn(int64(off), raw[off:min(off+step, len(raw))]); err != nil {
				return err
			}
		}
		return nil
	}}
}

// QuantSpecOf builds the WeightSpec of data ([N, K]) quantized as q with
// model's quantizers, its streams in chunks of chunk bytes.
func QuantSpecOf(name string, shape []int, data []float32, q model.Quant, chunk int) model.WeightSpec {
	N, K := shape[0], shape[1]
	f, gs := q.Format, q.GroupSize
	if gs == 0 {
		gs = model.DefaultGroupSize
	}
	rb := f.RowBytes(K)
	per := 1
	if f == model.FormatInt4 {
		per = model.Groups(K, gs)
	}
	packed := make([]byte, N*rb)
	scales, zeros := make([]uint16, N*per), make([]uint16, N*per)
	for r := range N {
		row := data[r*K : (r+1)*K]
		if f == model.FormatInt8 {
			scales[r] = model.QuantizeInt8(row, packed[r*rb:])
		} else {
			model.QuantizeInt4(row, gs, packed[r*rb:(r+1)*rb], scales[r*per:], zeros[r*per:], model.Int4Search)
		}
	}
	stream := func(raw []byte) model.Stream {
		return func(fn func(off int64, b []byte) error) error {
			for off := 0; off < len(raw); off += chunk {
				if err := fn(int64(off), raw[off:min(off+chunk, len(raw))]); err != nil {
					return err
				}
			}
			return nil
		}
	}
	halves := func(v []uint16) []byte {
		var b []byte
		for _, h := range v {
			b = binary.LittleEndian.AppendUint16(b, h)
		}
		return b
	}
	spec := model.WeightSpec{Name: name, Role: model.RoleInProj, Shape: shape, Format: f,
		Data: stream(packed), Scales: stream(halves(scales))}
	if f == model.FormatInt4 {
		spec.GroupSize, spec.Zeros = gs, stream(halves(zeros))
	}
	return spec
}

// role guesses a test tensor's role from its name and rank: the conv
// weight is the conv's, other matrices are in_proj.
func role(name string, shape []int) model.Role {
	if strings.HasSuffix(name, "conv1d.weight") {
		return model.RoleConv
	}
	if len(shape) >= 2 {
		return model.RoleInProj
	}
	return model.RoleVector
}

// weight loads random weights (in [lo, hi)) as dt on both backends.
func (h *opsHarness) weight(t *testing.T, name string, dt loader.DType, lo, hi float64, shape ...int) pair {
	t.Helper()
	data := h.rand(size(shape), lo, hi)
	spec := SpecOf(name, dt, shape, data, 37)
	got, err := h.b.Weight(spec)
	if err != nil {
		t.Fatalf("weight %s: %v", name, err)
	}
	want, err := h.ref.Weight(spec)
	if err != nil {
		t.Fatalf("cpu weight %s: %v", name, err)
	}
	return pair{got: got, want: want, weight: true}
}

// wformat is a weight format the suite runs matrices in: a float dtype, or
// a quantization.
type wformat struct {
	dt loader.DType
	q  model.Quant
}

func (f wformat) String() string {
	if f.q.On() {
		return fmt.Sprintf("%s-g%d", f.q.Format, f.q.GroupSize)
	}
	return string(f.dt)
}

// matrixFormats are the float dtypes and both quantizations, int4 with
// groups of 32 so that rows of most test shapes hold several, one ragged.
var matrixFormats = []wformat{{dt: loader.F32}, {dt: loader.F16}, {dt: loader.BF16},
	{q: model.Quant{Format: model.FormatInt8}}, {q: model.Quant{Format: model.FormatInt4, GroupSize: 32}}}

// matrix loads a random matrix in format f on both backends.
func (h *opsHarness) matrix(t *testing.T, name string, f wformat, lo, hi float64, shape ...int) pair {
	t.Helper()
	if !f.q.On() {
		return h.weight(t, name, f.dt, lo, hi, shape...)
	}
	// The spec's streams replay, so both backends read the same bytes.
	spec := QuantSpecOf(name, shape, h.rand(size(shape), lo, hi), f.q, 37)
	got, err := h.b.Weight(spec)
	if err != nil {
		t.Fatalf("weight %s: %v", name, err)
	}
	want, err := h.ref.Weight(spec)
	if err != nil {
		t.Fatalf("cpu weight %s: %v", name, err)
	}
	return pair{got: got, want: want, weight: true}
}

// close compares the backend's tensor with the CPU's after an op.
func (h *opsHarness) close(t *testing.T, what string, p pair) {
	t.Helper()
	got, err := h.b.Read(p.got)
	if err != nil {
		t.Fatalf("%s: read: %v", what, err)
	}
	want, err := h.ref.Read(p.want)
	if err != nil {
		t.Fatalf("%s: cpu read: %v", what, err)
	}
	compare(t, what, got, want, OpsTolerance)
}

// unchanged checks that an input still holds what was written.
func (h *opsHarness) unchanged(t *testing.T, what string, p pair) {
	t.Helper()
	if p.weight || p.got == nil {
		return
	}
	got, err := h.b.Read(p.got)
	if err != nil {
		t.Fatalf("%s: read: %v", what, err)
	}
	compare(t, what+" (an input, must be unchanged)", got, p.data, 0)
}

func compare(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return
	}
	bad := 0
	worst := 0.0
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		d := math.Abs(g-w) / (1 + math.Abs(w))
		if math.IsNaN(g) != math.IsNaN(w) || d > tol {
			if bad < 5 {
				t.Errorf("%s[%d] = %v, want %v", what, i, g, w)
			}
			bad++
		}
		if !math.IsNaN(d) {
			worst = max(worst, d)
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values differ (worst relative %.3g)", what, bad, len(got), worst)
	}
}

var dtypes = []loader.DType{loader.F32, loader.F16, loader.BF16}

func (h *opsHarness) writeRead(t *testing.T) {
	x := h.act(t, nil, 3, 5)
	h.unchanged(t, "written", x)
	h.b.Zero(x.got)
	h.ref.Zero(x.want)
	h.close(t, "zeroed", x)
	// a write after recorded work must not overtake it
	y := h.act(t, nil, 2, 70)
	out := h.act(t, nil, 2, 70)
	h.b.Last(out.got, y.got)
	h.ref.Last(out.want, y.want)
	h.b.Write(y.got, make([]float32, 140))
	h.ref.Write(y.want, make([]float32, 140))
	h.close(t, "out of an op recorded before a write", out)
}

func (h *opsHarness) embed(t *testing.T) {
	for _, wf := range matrixFormats {
		for _, D := range []int{70, 300, 33} {
			t.Run(fmt.Sprintf("%s/D%d", wf, D), func(t *testing.T) {
				const V = 37
				table := h.matrix(t, "embed", wf, -1, 1, V, D)
				ids := h.ids([]int32{0, 36, 5, 5, 17, 1, 35, 0, 20})
				out := h.act(t, nil, 9, D)
				h.b.Embed(out.got, table.got, ids.got)
				h.ref.Embed(out.want, table.want, ids.want)
				h.close(t, "out", out)
			})
		}
	}
}

func (h *opsHarness) rmsNorm(t *testing.T) {
	cases := []struct{ D, groups int }{{70, 1}, {70, 5}, {300, 1}, {300, 4}, {512, 2}}
	for i, c := range cases {
		for _, withMask := range []bool{false, true} {
			dt := dtypes[(i+2*b2i(withMask))%3]
			t.Run(fmt.Sprintf("D%d/groups%d/mask=%v/w=%s", c.D, c.groups, withMask, dt), func(t *testing.T) {
				const B, L = 2, 5
				hh := h.act(t, h.rand(B*L*c.D, -2, 2), B, L, c.D)
				w := h.weight(t, "norm", dt, 0.5, 1.5, c.D)
				out := h.act(t, nil, B, L, c.D)
				var mask pair
				if withMask {
					mask = h.act(t, []float32{1, 1, 1, 1, 1, 0, 0, 1, 1, 1}, B, L)
				}
				h.b.RMSNorm(out.got, hh.got, w.got, mask.on(false), c.groups, 1e-5)
				h.ref.RMSNorm(out.want, hh.want, w.want, mask.on(true), c.groups, 1e-5)
				h.close(t, "out", out)
				h.unchanged(t, "h", hh)
				h.unchanged(t, "mask", mask)
			})
		}
	}
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

func (h *opsHarness) matMul(t *testing.T) {
	shapes := []struct{ T, N, K int }{
		{1, 33, 17}, {2, 129, 70}, {3, 5, 1}, {4, 64, 256}, {5, 33, 17}, {70, 129, 71}, {1, 300, 255}, {9, 7, 130},
		// A decoded batch of 8 (WebGPU's matrix-vector kernel takes up to 8 tokens).
		{8, 65, 200}, {1, 17, 3000},
		// 128 tokens and more: WebGPU's large-tile kernel, with ragged edges.
		{128, 128, 16}, {131, 257, 33}, {260, 5, 3},
		// Deep and narrow: WebGPU splits k and sums the partial products.
		{9, 70, 600}, {130, 33, 1100}, {6, 20, 1031},
	}
	for i, s := range shapes {
		for j, wf := range matrixFormats {
			withBias := (i+j)%2 == 0
			t.Run(fmt.Sprintf("T%d/N%d/K%d/%s/bias=%v", s.T, s.N, s.K, wf, withBias), func(t *testing.T) {
				x := h.act(t, nil, s.T, s.K)
				w := h.matrix(t, "w", wf, -1, 1, s.N, s.K)
				var bias pair
				if withBias {
					bias = h.weight(t, "bias", dtypes[j%3], -1, 1, s.N)
				}
				out := h.act(t, nil, s.T, s.N)
				h.b.MatMul(out.got, x.got, w.got, bias.on(false), model.Plain)
				h.ref.MatMul(out.want, x.want, w.want, bias.on(true), model.Plain)
				h.close(t, "out", out)
				h.unchanged(t, "x", x)
			})
		}
	}
	// Products that normalise x first (in groups, with a padding mask) and
	// add into out: the in_proj, out_proj and LM head of a layer.
	fused := []struct{ T, N, K, groups int }{
		{1, 33, 40, 1}, {2, 129, 64, 4}, {4, 64, 256, 2}, {3, 5, 30, 5}, {1, 70, 96, 3},
		{5, 33, 40, 2}, {8, 70, 96, 2}, {7, 20, 3200, 8}, {70, 129, 72, 3}, {9, 70, 600, 1}, {131, 257, 40, 2},
	}
	for i, s := range fused {
		for j, wf := range matrixFormats {
			if (i+j)%2 == 1 {
				continue // half of the pairs keep the suite short
			}
			withBias, withMask, add := j%3 == 0, i%2 == 1, (i+j)%4 == 0
			t.Run(fmt.Sprintf("norm/T%d/N%d/K%d/groups%d/%s/bias=%v/mask=%v/add=%v", s.T, s.N, s.K, s.groups, wf, withBias, withMask, add), func(t *testing.T) {
				x := h.act(t, h.rand(s.T*s.K, -2, 2), s.T, s.K)
				w := h.matrix(t, "w", wf, -1, 1, s.N, s.K)
				nw := h.weight(t, "norm", dtypes[i%3], 0.5, 1.5, s.K)
				var bias, mask pair
				if withBias {
					bias = h.weight(t, "bias", dtypes[j%3], -1, 1, s.N)
				}
				if withMask {
					m := make([]float32, s.T)
					for k := range m {
						m[k] = float32((k + 1) % 3 % 2) // 1, 0, 1, 1, 0, ...
					}
					mask = h.act(t, m, s.T)
				}
				out := h.act(t, nil, s.T, s.N)
				p := func(ref bool) model.Product {
					return model.Product{Norm: nw.on(ref), Mask: mask.on(ref), Groups: s.groups, Eps: 1e-5, Add: add}
				}
				h.b.MatMul(out.got, x.got, w.got, bias.on(false), p(false))
				h.ref.MatMul(out.want, x.want, w.want, bias.on(true), p(true))
				h.close(t, "out", out)
				h.unchanged(t, "x", x)
				h.unchanged(t, "mask", mask)
			})
		}
	}
}

// opsConfig is a small Mamba-2 shape with nothing a multiple of anything:
// 6 heads of 5 in 2 groups, state 7, chunk 5.
func opsConfig() model.Config {
	return model.Config{VocabSize: 50, Hidden: 30, Layers: 1, State: 7, Expand: 1, Heads: 6, HeadDim: 5,
		Groups: 2, ConvKernel: 4, ChunkSize: 5, ConvBias: true, Eps: 1e-5,
		TimeStepMin: 0.05, TimeStepMax: 0.7}
}

// opsConfigWide has a state above 32 and heads of 16, one group.
func opsConfigWide() model.Config {
	return model.Config{VocabSize: 50, Hidden: 32, Layers: 1, State: 40, Expand: 2, Heads: 4, HeadDim: 16,
		Groups: 1, ConvKernel: 3, ChunkSize: 8, ConvBias: true, Eps: 1e-5,
		TimeStepMin: 0, TimeStepMax: math.Inf(1)}
}

// opsConfigLong has chunks of 70 tokens, heads of 66 channels and a state
// of 70, so each spans two of WebGPU's 64-wide tiles.
func opsConfigLong() model.Config {
	return model.Config{VocabSize: 50, Hidden: 66, Layers: 1, State: 70, Expand: 2, Heads: 2, HeadDim: 66,
		Groups: 1, ConvKernel: 4, ChunkSize: 70, ConvBias: true, Eps: 1e-5,
		TimeStepMin: 0.001, TimeStepMax: 0.1}
}

// opsConfigHuge has chunks of 300 tokens, more than one workgroup scans at
// once on WebGPU.
func opsConfigHuge() model.Config {
	c := opsConfig()
	c.ChunkSize = 300
	return c
}

// leftPad is a [B, L] mask whose second row starts with pad zeros.
func leftPad(B, L, pad int) []float32 {
	m := make([]float32, B*L)
	for b := range B {
		for t := range L {
			if b != 1 || t >= pad {
				m[b*L+t] = 1
			}
		}
	}
	return m
}

func (h *opsHarness) conv(t *testing.T) {
	cases := []struct {
		cfg        model.Config
		L          int
		mask, bias bool
	}{
		{opsConfig(), 1, false, true},
		{opsConfig(), 7, true, true},
		{opsConfig(), 2, true, false},
		{opsConfigWide(), 9, false, true},
		{opsConfigWide(), 1, true, false},
	}
	for i, c := range cases {
		dt := dtypes[i%3]
		t.Run(fmt.Sprintf("L%d/K%d/mask=%v/bias=%v/w=%s", c.L, c.cfg.ConvKernel, c.mask, c.bias, dt), func(t *testing.T) {
			const B = 2
			C, K, PD := c.cfg.ConvDim(), c.cfg.ConvKernel, c.cfg.ProjDim()
			proj := h.act(t, h.rand(B*c.L*PD, -2, 2), B, c.L, PD)
			state := h.act(t, nil, B, K-1, C)
			w := h.weight(t, "conv1d.weight", dt, -1, 1, C, K)
			var bias, mask pair
			if c.bias {
				bias = h.weight(t, "conv1d.bias", dt, -1, 1, C)
			}
			if c.mask {
				mask = h.act(t, leftPad(B, c.L, min(3, c.L)), B, c.L)
			}
			out := h.act(t, nil, B, c.L, C)
			h.b.Conv(out.got, proj.got, state.got, w.got, bias.on(false), mask.on(false), c.cfg)
			h.ref.Conv(out.want, proj.want, state.want, w.want, bias.on(true), mask.on(true), c.cfg)
			h.close(t, "out", out)
			h.close(t, "state", state)
			h.unchanged(t, "proj", proj)
			h.unchanged(t, "mask", mask)
		})
	}
}

func (h *opsHarness) ssm(t *testing.T) {
	cases := []struct {
		cfg     model.Config
		L       int
		chunked bool
	}{
		{opsConfig(), 1, false},      // a decoded token (gated: see below)
		{opsConfig(), 13, true},      // a prompt: 2 chunks and a tail, with the dt clamp
		{opsConfig(), 13, false},     // the recurrence over many tokens, no clamp
		{opsConfig(), 3, true},       // shorter than a chunk
		{opsConfig(), 1, true},       // a one-token prompt
		{opsConfigWide(), 20, true},  // N > 32
		{opsConfigWide(), 1, false},  // N > 32, decoding
		{opsConfigWide(), 16, false}, // exactly two chunks' worth, recurrent
		{opsConfigLong(), 150, true}, // chunks, heads and state wider than WebGPU's 64 × 64 output tiles
		{opsConfigHuge(), 310, true}, // a chunk longer than a 256-invocation workgroup
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("H%d/P%d/N%d/G%d/L%d/chunked=%v/gate=%v", c.cfg.Heads, c.cfg.HeadDim, c.cfg.State, c.cfg.Groups, c.L, c.chunked, c.L%2 == 1), func(t *testing.T) {
			const B = 2
			cfg := c.cfg
			H, P, N, I, CD, PD := cfg.Heads, cfg.HeadDim, cfg.State, cfg.Inner(), cfg.ConvDim(), cfg.ProjDim()
			xbc := h.act(t, nil, B, c.L, CD)
			proj := h.act(t, h.rand(B*c.L*PD, -3, 3), B, c.L, PD)
			state := h.act(t, h.rand(B*H*P*N, -0.5, 0.5), B, H, P, N)
			dtBias := h.weight(t, "dt_bias", loader.F32, -1, 1, H)
			aLog := h.weight(t, "A_log", loader.BF16, -1, 1.5, H)
			d := h.weight(t, "D", loader.F16, -1, 1, H)
			y := h.act(t, nil, B, c.L, I)
			args := model.SSMArgs{Config: cfg, Chunked: c.chunked, Gate: c.L%2 == 1}
			h.b.SSM(y.got, xbc.got, proj.got, state.got, dtBias.got, aLog.got, d.got, args)
			h.ref.SSM(y.want, xbc.want, proj.want, state.want, dtBias.want, aLog.want, d.want, args)
			h.close(t, "y", y)
			h.close(t, "state", state)
			h.unchanged(t, "xbc", xbc)
			h.unchanged(t, "proj", proj)
		})
	}
}

// decodeLayer runs one layer's operations on one decoded token of B
// sequences, as forward.go issues them (the conv as the in_proj product's
// epilogue, Product.Conv), against the CPU's operations one by one, so a
// backend that fuses neighbouring operations when decoding is checked
// against the unfused path. B = 5 is more rows than a matrix-vector
// kernel takes at once.
func (h *opsHarness) decodeLayer(t *testing.T) {
	n := 0 // cases so far: the batch size, mask and bias rotate over them
	for i, cfg := range []model.Config{opsConfig(), opsConfigWide()} {
		for j, wf := range matrixFormats {
			if (i+j)%2 == 1 {
				continue
			}
			B, masked, biased := []int{2, 5, 1}[n%3], n%2 == 1, n%3 != 1
			n++
			t.Run(fmt.Sprintf("D%d/H%d/G%d/%s/B%d/mask=%v/bias=%v", cfg.Hidden, cfg.Heads, cfg.Groups, wf, B, masked, biased), func(t *testing.T) {
				h.decodeLayerCase(t, cfg, wf, j, B, masked, biased)
			})
		}
	}
}

func (h *opsHarness) decodeLayerCase(t *testing.T, cfg model.Config, wf wformat, j, B int, masked, biased bool) {
	D, I, C, K, PD := cfg.Hidden, cfg.Inner(), cfg.ConvDim(), cfg.ConvKernel, cfg.ProjDim()
	H, P, N := cfg.Heads, cfg.HeadDim, cfg.State
	hh := h.act(t, h.rand(B*D, -2, 2), B, 1, D)
	norm := h.weight(t, "norm", dtypes[j%3], 0.5, 1.5, D)
	inW := h.matrix(t, "in_proj", wf, -0.5, 0.5, PD, D)
	var inB, mask pair
	if biased {
		inB = h.weight(t, "in_proj.bias", loader.F32, -1, 1, PD)
	}
	if masked { // the first sequence is padding at this step
		m := make([]float32, B)
		for r := 1; r < B; r++ {
			m[r] = 1
		}
		mask = h.act(t, m, B, 1)
	}
	convW := h.weight(t, "conv1d.weight", dtypes[(j+1)%3], -1, 1, C, K)
	convB := h.weight(t, "conv1d.bias", loader.F32, -1, 1, C)
	conv := h.act(t, h.rand(B*(K-1)*C, -1, 1), B, K-1, C)
	ssm := h.act(t, h.rand(B*H*P*N, -0.5, 0.5), B, H, P, N)
	dtBias := h.weight(t, "dt_bias", loader.F32, -1, 1, H)
	aLog := h.weight(t, "A_log", loader.F32, -1, 1.5, H)
	d := h.weight(t, "D", loader.F32, -1, 1, H)
	mix := h.weight(t, "norm", dtypes[(j+2)%3], 0.5, 1.5, I)
	outW := h.matrix(t, "out_proj", wf, -0.5, 0.5, D, I)
	proj, xbc, y := h.act(t, nil, B, 1, PD), h.act(t, nil, B, 1, C), h.act(t, nil, B, 1, I)
	for step := range 2 { // the second step sees the first's conv and SSM state
		for _, ref := range []bool{false, true} {
			b := h.b
			if ref {
				b = h.ref
			}
			in := model.Product{Norm: norm.on(ref), Mask: mask.on(ref), Groups: 1, Eps: 1e-5}
			cv := &model.ConvArgs{Out: xbc.on(ref), State: conv.on(ref), W: convW.on(ref), Bias: convB.on(ref), Mask: mask.on(ref), Config: cfg}
			if ref {
				b.MatMul(proj.on(ref), hh.on(ref), inW.on(ref), inB.on(ref), in)
				b.Conv(cv.Out, proj.on(ref), cv.State, cv.W, cv.Bias, cv.Mask, cfg)
			} else {
				in.Conv = cv
				b.MatMul(proj.on(ref), hh.on(ref), inW.on(ref), inB.on(ref), in)
			}
			b.SSM(y.on(ref), xbc.on(ref), proj.on(ref), ssm.on(ref), dtBias.on(ref), aLog.on(ref), d.on(ref),
				model.SSMArgs{Config: cfg, Chunked: false, Gate: true})
			b.MatMul(hh.on(ref), y.on(ref), outW.on(ref), nil,
				model.Product{Norm: mix.on(ref), Groups: cfg.Groups, Eps: 1e-5, Add: true})
		}
		h.close(t, fmt.Sprintf("step %d: proj", step), proj)
		h.close(t, fmt.Sprintf("step %d: xbc", step), xbc)
		h.close(t, fmt.Sprintf("step %d: h", step), hh)
		h.close(t, fmt.Sprintf("step %d: conv state", step), conv)
		h.close(t, fmt.Sprintf("step %d: SSM state", step), ssm)
	}
}

func (h *opsHarness) last(t *testing.T) {
	for _, s := range [][3]int{{2, 5, 70}, {3, 1, 300}, {1, 7, 1}} {
		t.Run(fmt.Sprint(s), func(t *testing.T) {
			x := h.act(t, nil, s[0], s[1], s[2])
			out := h.act(t, nil, s[0], s[2])
			h.b.Last(out.got, x.got)
			h.ref.Last(out.want, x.want)
			h.close(t, "out", out)
			h.unchanged(t, "x", x)
		})
	}
}

// sample checks DeviceSampler.Sample against model.Argmax and
// model.SampleRow on the same logits and random numbers, and that rows
// model.CheckLogits refuses (NaN, +Inf, nothing finite) come back as
// model.LogitsCode of the same error.
func (h *opsHarness) sample(t *testing.T, ds model.DeviceSampler) {
	// V spans several of a device sampler's chunks (the WebGPU one's are
	// 1024 logits), so ties and refusals are also settled across chunks.
	const V = 2500
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	base := func() []float32 { return h.rand(V, -3, 3) }
	var rows [][]float32
	r := base()
	r[5], r[9], r[700], r[2400] = 4, 4, 3.5, 4 // a tie for the maximum: the lower id wins
	rows = append(rows, r)
	r = base()
	r[2100], r[1100], r[1030], r[2] = 4, 4, 4, 3.9 // a tie within a later chunk and across chunks
	rows = append(rows, r)
	r = base()
	r[700], r[3], r[0] = 5, nan, nan // refused: NaN at id 0
	rows = append(rows, r)
	r = base()
	r[900], r[41] = inf, nan // refused: NaN at id 41 comes first
	rows = append(rows, r)
	r = base()
	r[12] = inf // refused: +Inf at 12
	rows = append(rows, r)
	r = base()
	r[2300], r[1500] = nan, inf // refused: +Inf at 1500, in another chunk than the NaN
	rows = append(rows, r)
	r = make([]float32, V)
	for i := range r {
		r[i] = -inf
	}
	rows = append(rows, r) // refused: nothing finite
	r[2200] = -7
	rows = append(rows, slices.Clone(r))    // one finite logit among -Inf: it wins
	rows = append(rows, make([]float32, V)) // all equal: id 0
	r = make([]float32, V)
	for i := range r {
		r[i] = nan
	}
	r[V-1] = -inf // -inf beats NaN
	rows = append(rows, r)
	r = make([]float32, V)
	for i := range r {
		r[i] = nan
	}
	rows = append(rows, r) // all NaN: id 0
	r = base()
	r[998], r[999] = 0, float32(math.Copysign(0, -1))
	for i := range r[:998] {
		r[i] = -1
	}
	for i := range r[1000:] {
		r[1000+i] = -1
	}
	rows = append(rows, r) // +0 and -0 are equal: the lower id
	h.sampleRows(t, ds, "greedy", rows, model.Sampling{}, nil, nil)

	// Sampling: logits rounded to quarters, so many tokens tie.
	rows = nil
	for range 3 {
		r := make([]float32, V)
		for i := range r {
			r[i] = float32(math.Round(h.rng.NormFloat64()*8)) / 4
		}
		rows = append(rows, r)
	}
	rows[2][17] = nan
	us := [][]float32{{0, 0.5, 0.999}, {0.3, 0.77, 0.01}, {0.6180339, 0.1, 0.9}}
	h.samplePenalties(t, ds)
	for _, temp := range []float64{0.7, 1.5} {
		for _, topK := range []int{0, 1, 5, 50} {
			for _, topP := range []float64{0, 0.3, 0.9} {
				for _, minP := range []float64{0, 0.05, 0.5} {
					s := model.Sampling{Temperature: temp, TopK: topK, TopP: topP, MinP: minP}
					for _, u := range us {
						h.sampleRows(t, ds, fmt.Sprintf("T=%v/k=%d/p=%v/minp=%v/u=%v", temp, topK, topP, minP, u), rows, s, u, nil)
					}
				}
			}
		}
	}

	// More tokens tied at the top than the WebGPU sampler keeps as
	// candidates (1024): none is above its cut, so every step takes the
	// whole row. (Settings whose top-p goal falls exactly on a token are
	// left out: with equal weights float32 and float64 round them apart.)
	r = base()
	for i := range 1500 {
		r[(i*7)%V] = 3.5
	}
	ties := [][]float32{r, make([]float32, V)}
	for _, s := range []model.Sampling{
		{Temperature: 0.7}, {Temperature: 1.5, TopP: 0.9}, {Temperature: 1, TopK: 7, TopP: 0.3},
		{Temperature: 0.8, MinP: 0.05}, {Temperature: 1.2, TopK: 1200, TopP: 0.95},
	} {
		for _, u := range [][]float32{{0, 0.999}, {0.5, 0.31}} {
			h.sampleRows(t, ds, fmt.Sprintf("ties/%+v/u=%v", s, u), ties, s, u, nil)
		}
	}
}

// samplePenalties checks the repetition, presence and frequency penalties
// (greedy and sampled, with min-p) against Sampling.Penalize on the host,
// with histories of random counts and prompt tokens.
func (h *opsHarness) samplePenalties(t *testing.T, ds model.DeviceSampler) {
	const V = 700
	var rows, hist [][]float32
	for range 3 {
		r := h.rand(V, -4, 4)
		hr := make([]float32, 2*V)
		for v := range V {
			switch h.rng.IntN(6) {
			case 0:
				hr[v] = float32(1 + h.rng.IntN(4)) // generated 1-4 times
			case 1:
				hr[V+v] = 1 // in the prompt
			case 2:
				hr[v], hr[V+v] = 2, 1
			}
		}
		rows, hist = append(rows, r), append(hist, hr)
	}
	// The top tokens of row 0 are all penalized: the penalty decides.
	for v := range 5 {
		rows[0][v], hist[0][v] = 10, 1
	}
	for _, s := range []model.Sampling{
		{RepetitionPenalty: 1.3},
		{RepetitionPenalty: 0.7},
		{PresencePenalty: 1.5},
		{FrequencyPenalty: 0.6, PresencePenalty: -0.4},
		{RepetitionPenalty: 1.2, FrequencyPenalty: 2, PresencePenalty: 2},
		{Temperature: 0.9, RepetitionPenalty: 1.3, FrequencyPenalty: 0.5},
		{Temperature: 1.2, TopK: 40, TopP: 0.8, MinP: 0.1, PresencePenalty: 1, RepetitionPenalty: 1.1},
	} {
		u := []float32{0.25, 0.5, 0.9}
		h.sampleRows(t, ds, fmt.Sprintf("penalties %+v", s), rows, s, u, hist)
	}
}

// sampleRows samples rows on the device and checks each id against the
// host's choice; hist, when not nil, is each row's [2, V] penalty record,
// which the device must update by counting its choice.
func (h *opsHarness) sampleRows(t *testing.T, ds model.DeviceSampler, name string, rows [][]float32, s model.Sampling, u []float32, hist [][]float32) {
	t.Helper()
	B, V := len(rows), len(rows[0])
	var flat, hflat []float32
	for b, r := range rows {
		flat = append(flat, r...)
		if hist != nil {
			hflat = append(hflat, hist[b]...)
		}
	}
	logits := h.b.Alloc(model.F32, B, V)
	h.b.Write(logits, flat)
	ids := h.b.Alloc(model.I32, B)
	var ht model.Tensor
	if hist != nil {
		ht = h.b.Alloc(model.F32, B, 2, V)
		h.b.Write(ht, hflat)
	}
	ds.Sample(ids, logits, ht, s, u)
	got, err := ds.ReadIDs(ids)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for b, row := range rows {
		if hist != nil {
			row = slices.Clone(row)
			s.Penalize(row, hist[b])
		}
		var want int
		if le, ok := model.CheckLogits(row).(*model.LogitsError); ok {
			want = int(model.LogitsCode(le))
		} else if s.Temperature == 0 {
			want = model.Argmax(row)
		} else {
			want, _ = model.SampleRow(row, s, float64(u[b]), nil)
		}
		if b >= len(got) || int(got[b]) != want {
			t.Errorf("%s: row %d: sampled %v, SampleRow says %d", name, b, got, want)
		}
		if hist != nil && want >= 0 {
			hflat[b*2*V+want]++ // what the device must have counted
		}
	}
	if hist != nil {
		back, err := h.b.Read(ht)
		if err != nil {
			t.Fatal(err)
		}
		compare(t, name+": history after the choice", back, hflat, 0)
	}
	back, err := h.b.Read(logits)
	if err != nil {
		t.Fatal(err)
	}
	compare(t, name+": logits (an input, must be unchanged)", back, flat, 0)
}
