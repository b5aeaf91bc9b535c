package wgsl

import (
	"fmt"
	"reflect"
	"strings"
)

// Typed kernels. Every kernel file in shaders/ (the files with an entry
// point; common, reduce, tile, ssm_common, unpack and w_* are helpers they
// include) has a descriptor here: its parameter struct P, whose fields are
// the WGSL `struct Params` in order, its storage bindings (@binding(1),
// @binding(2)...) and its workgroup size. A dispatch takes a P built with
// named fields, so a parameter cannot land in the wrong slot, and its
// bindings are checked against the descriptor's access modes. TestKernels
// checks every descriptor against its WGSL, field by field and binding by
// binding, in every variant that changes them.

// binding is one storage binding of a kernel.
type binding struct {
	name  string // the WGSL variable
	write bool   // var<storage, read_write>; read-only otherwise
	opt   bool   // may be absent: the dummy buffer is bound (Backend.opt)
	under string // the define without which the binding does not exist ("" for always)
}

func read(name string) binding  { return binding{name: name} }
func write(name string) binding { return binding{name: name, write: true} }

// optional marks a binding that may be the dummy buffer.
func (x binding) optional() binding { x.opt = true; return x }

// only makes a binding exist only under the define name.
func (x binding) only(name string) binding { x.under = name; return x }

// kernelInfo is a descriptor without its parameter type parameter.
type kernelInfo struct {
	file      string    // in shaders/
	pass      defines   // a pass of a multi-pass file: its define, the defines of every dispatch
	weight    bool      // the kernel reads a weight: a format define (tensor.formatDefines) picks its accessors
	variants  []string  // defines that change the kernel's code (each alone, or none; SUBGROUPS also with each other); for the test and withSubgroups
	binds     []binding // @binding(1), @binding(2)...; the uniform Params is @binding(0)
	workgroup uint32    // @workgroup_size

	params reflect.Type // P
	under  string       // the one define some bindings are under, or ""
	access [2]string    // pipeline access patterns ('r', 'w' per binding): without and with the under bindings
}

// kernel is the descriptor of a kernel whose Params are P.
type kernel[P any] struct{ kernelInfo }

// kernels are every descriptor, for TestKernels.
var kernels []*kernelInfo

// paramsBytes is the most bytes of Params: one arena slot is at least 256.
const paramsBytes = 256

// newKernel completes and registers a descriptor. P must be a struct of
// 32-bit fields (uint32, int32, float32, arrays of them, embedded structs
// of them) without padding, since dispatch copies its memory into the
// uniform arena; anything else panics when the package is initialised.
func newKernel[P any](k kernelInfo) *kernel[P] {
	k.complete(reflect.TypeFor[P]())
	out := &kernel[P]{k}
	kernels = append(kernels, &out.kernelInfo)
	return out
}

// complete fills in what follows from the declared fields and the
// parameter type p, and panics if they do not fit together.
func (k *kernelInfo) complete(p reflect.Type) {
	k.params = p
	if err := checkWords(p); err != nil || p.Size() > paramsBytes {
		panic(fmt.Sprintf("wgsl: %s: parameters %s: %v (%d bytes)", k.file, p, err, p.Size()))
	}
	var all, some strings.Builder
	k.under = ""
	for _, x := range k.binds {
		c := byte('r')
		if x.write {
			c = 'w'
		}
		all.WriteByte(c)
		if x.under == "" {
			if k.under != "" {
				panic(fmt.Sprintf("wgsl: %s: binding %s follows one under %s: those come last", k.file, x.name, k.under))
			}
			some.WriteByte(c)
			continue
		}
		if k.under != "" && k.under != x.under {
			panic(fmt.Sprintf("wgsl: %s: bindings under two defines, %s and %s", k.file, k.under, x.under))
		}
		k.under = x.under
	}
	k.access = [2]string{some.String(), all.String()}
}

// checkWords checks that t is made of 32-bit words with no padding.
func checkWords(t reflect.Type) error {
	switch t.Kind() {
	case reflect.Uint32, reflect.Int32, reflect.Float32:
		return nil
	case reflect.Array:
		return checkWords(t.Elem())
	case reflect.Struct:
		var off uintptr
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.Anonymous && !f.IsExported() {
				return fmt.Errorf("field %s is not exported", f.Name)
			}
			if f.Offset != off {
				return fmt.Errorf("padding before field %s", f.Name)
			}
			if err := checkWords(f.Type); err != nil {
				return fmt.Errorf("field %s: %v", f.Name, err)
			}
			off += f.Type.Size()
		}
		return nil
	}
	return fmt.Errorf("%s is not a 32-bit word", t)
}

// accessFor is the access pattern of the kernel variant with defines d.
func (k *kernelInfo) accessFor(d defines) string {
	if k.under != "" && d.has(k.under) {
		return k.access[1]
	}
	return k.access[0]
}

// dispatch records one launch of groups workgroups of the kernel variant d
// (the pass's defines when d is empty), binding binds in order and p as
// its Params.
func (k *kernel[P]) dispatch(b *Backend, d defines, binds []bind, p P, groups uint32) {
	b.dispatch(&k.kernelInfo, d, "", binds, paramWords(&p), groups)
}

// dispatchAs is dispatch with a note that profiles add to the kernel's name
// (the weight a matmul multiplies by).
func (k *kernel[P]) dispatchAs(b *Backend, d defines, note string, binds []bind, p P, groups uint32) {
	b.dispatch(&k.kernelInfo, d, note, binds, paramWords(&p), groups)
}

// The parameter structs, one per kernel file, field for field its WGSL
// `struct Params` (names match ignoring case and underscores); booleans are
// 0 or 1 (b2u).

type matmulParams struct {
	T, N, K, Stride, Ldo, Col0, HasBias, Kper, Pstride, Qstride uint32
	Add, HasNorm, Groups, Gs                                    uint32
	Eps                                                         float32
	HasMask                                                     uint32
}

// matvecConvParams are matmul.wgsl's with CONV (and MATVEC).
type matvecConvParams struct {
	matmulParams
	C, Xoff, NwOff, BOff, CwOff, CbOff, HasCbias, ConvMask uint32
}

type matmulSumParams struct {
	T, N, Splits, Pstride, HasBias, Add uint32
}

type embedParams struct {
	T, D, Stride, Row0, Rows, Vocab, First, Qstride uint32
}

type rmsnormParams struct {
	T, D, Groups, Gs uint32
	Eps              float32
	HasMask          uint32
}

type convParams struct {
	B, L, C, PD, Xoff, Stride, HasBias, HasMask uint32
}

type lastParams struct {
	B, L, X uint32
}

type zeroParams struct {
	N uint32 // words
}

// ssmStepParams are also the start of ssmScanParams.
type ssmStepParams struct {
	B, L, H, P, N, Hpg, I, GN, CD, PD, Dtoff, ClampOn uint32
	Lo, Hi                                            float32
	Gate                                              uint32
}

type ssmScanParams struct {
	ssmStepParams
	Q, Nc, G uint32
}

type sampleParams struct {
	V, Rows, Row0, Greedy   uint32
	Temp                    float32
	Topk                    uint32
	Topp                    float32
	Idbits, Minp            uint32
	Mdelta                  float32
	Pen                     uint32
	Rep, Repinv, Freq, Pres float32
	Chunks                  uint32
	U                       [sampleRowsPerDispatch / 4][4]float32 // u[row - row0], four per vec4
}

// The descriptors.
var (
	matmulKernel = newKernel[matmulParams](kernelInfo{
		file: "matmul.wgsl", weight: true, variants: []string{"MATVEC", subgroupsDefine}, workgroup: 256,
		binds: []binding{read("x"), read("W"), read("bias").optional(), write("out"),
			read("nw").optional(), read("mask").optional(), read("Q").only("WQ")},
	})
	// matvecConvKernel is the decode product with the causal conv in its
	// epilogue (Product.Conv): another binding table of matmul.wgsl.
	matvecConvKernel = newKernel[matvecConvParams](kernelInfo{
		file: "matmul.wgsl", pass: defs("MATVEC", "CONV"), weight: true, variants: []string{subgroupsDefine}, workgroup: 256,
		binds: []binding{read("x"), read("W"), read("vec"), write("out"), read("mask").optional(),
			write("cstate"), write("xbc"), read("Q").only("WQ")},
	})
	matmulSumKernel = newKernel[matmulSumParams](kernelInfo{
		file: "matmul_sum.wgsl", workgroup: 256,
		binds: []binding{read("part"), read("bias").optional(), write("out")},
	})
	embedKernel = newKernel[embedParams](kernelInfo{
		file: "embed.wgsl", weight: true, workgroup: 256,
		binds: []binding{read("ids"), read("W"), write("out"), read("Q").only("WQ")},
	})
	rmsnormKernel = newKernel[rmsnormParams](kernelInfo{
		file: "rmsnorm.wgsl", variants: []string{subgroupsDefine}, workgroup: 256,
		binds: []binding{read("h"), read("w"), read("mask").optional(), write("out")},
	})
	convKernel = newKernel[convParams](kernelInfo{
		file: "conv.wgsl", weight: true, variants: []string{"PROMPT", "SHIFT"}, workgroup: 256,
		binds: []binding{read("proj"), write("state"), read("W"), read("bias").optional(), read("mask").optional(), write("out")},
	})
	lastKernel = newKernel[lastParams](kernelInfo{
		file: "last.wgsl", workgroup: 256,
		binds: []binding{read("x"), write("out")},
	})
	zeroKernel = newKernel[zeroParams](kernelInfo{
		file: "zero.wgsl", workgroup: 256,
		binds: []binding{write("buf")},
	})
	// The two passes of sample.wgsl: the scan of the logits in chunks,
	// then the choice per row.
	sampleScanKernel = newKernel[sampleParams](kernelInfo{
		file: "sample.wgsl", pass: defs("PASS_SCAN"), variants: []string{subgroupsDefine}, workgroup: 256,
		binds: []binding{read("logits"), read("hist").optional(), write("part")},
	})
	sampleKernel = newKernel[sampleParams](kernelInfo{
		file: "sample.wgsl", variants: []string{subgroupsDefine}, workgroup: 256,
		binds: []binding{read("logits"), write("ids"), write("hist").optional(), read("part")},
	})
	ssmStepKernel = newKernel[ssmStepParams](kernelInfo{
		file: "ssm_step.wgsl", workgroup: 256,
		binds: []binding{read("xbc"), read("proj"), write("state"), read("dt_bias"), read("a_log"), read("dskip"), write("y")},
	})

	// The passes of ssm_scan.wgsl, one define each.
	ssmCumKernel = newKernel[ssmScanParams](kernelInfo{
		file: "ssm_scan.wgsl", pass: defs("PASS_CUM"), workgroup: 256,
		binds: []binding{read("proj"), read("dt_bias"), read("a_log"), write("dtb"), write("cumb")},
	})
	ssmCBKernel = newKernel[ssmScanParams](kernelInfo{
		file: "ssm_scan.wgsl", pass: defs("PASS_CB"), workgroup: 256,
		binds: []binding{read("xbc"), write("cb")},
	})
	ssmStatesKernel = newKernel[ssmScanParams](kernelInfo{
		file: "ssm_scan.wgsl", pass: defs("PASS_STATES"), workgroup: 256,
		binds: []binding{read("xbc"), read("dtb"), read("cumb"), write("cs")},
	})
	ssmCarryKernel = newKernel[ssmScanParams](kernelInfo{
		file: "ssm_scan.wgsl", pass: defs("PASS_CARRY"), workgroup: 256,
		binds: []binding{read("cumb"), write("cs"), write("state")},
	})
	ssmOutKernel = newKernel[ssmScanParams](kernelInfo{
		file: "ssm_scan.wgsl", pass: defs("PASS_OUT"), workgroup: 256,
		binds: []binding{read("xbc"), read("cb"), read("dtb"), read("cumb"), read("cs"), read("dskip"), write("y"), read("proj")},
	})
)
