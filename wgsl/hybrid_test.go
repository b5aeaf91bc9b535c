package wgsl

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestHybridOps is the hybrid operations' conformance suite on the device.
func TestHybridOps(t *testing.T) {
	modeltest.RunHybridOps(t, open(t, Options{}))
}

// TestHybridFixtures runs every hybrid family's transformers fixture on
// the device: every prompt position's logits, the prompt in pieces, 16
// greedy ids exactly and a left-padded batch. The bound is 1e-4, tighter
// than TestFixtures' 1e-3: on these tiny random models a wrong attention
// scale, rotary width or gated-norm grouping moves the logits by only 6e-4
// to 8e-3 (cpu's TestHybridFixtures), so 1e-3 would let some through;
// lavapipe agrees to 2e-6, which leaves a GPU's exp and f32 sums room. The
// models are tiny, so it stays fast on lavapipe. Under js/wasm (Dawn on
// SwiftShader, 25 times slower) only GraniteMoeHybrid runs, the family
// with the most kinds of block: the kernels are the same, and what js
// changes (buffer mapping, error scopes) one family exercises.
func TestHybridFixtures(t *testing.T) {
	for _, family := range jsFew(modeltest.HybridFamilies) {
		t.Run(family, func(t *testing.T) {
			modeltest.RunHybridFixtures(t, func(t *testing.T) model.Backend { return open(t, Options{}) }, family, 1e-4)
		})
	}
}

// TestHybridMoEFormats checks MoE against the CPU with the experts in each
// float format, and with storage bindings of 176 bytes, so gate_up and
// down are split by experts and moe_gate_up and moe_down run once per part,
// later parts adding to the first. (Quantized experts do not exist:
// WeightSpec.Check refuses int8 and int4 for anything but a matrix.)
func TestHybridMoEFormats(t *testing.T) {
	const T, D, E, I, K = 6, 7, 5, 3, 2
	rng := rand.New(rand.NewPCG(11, 5))
	rnd := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(rng.Float64()*2 - 1)
		}
		return out
	}
	x, rw, gw, dw := rnd(T*D), rnd(E*D), rnd(E*2*I*D), rnd(E*D*I)
	for _, f := range []loader.DType{loader.F32, loader.F16, loader.BF16} {
		for _, limit := range []uint64{0, 176} {
			t.Run(fmt.Sprintf("%s/binding%d", f, limit), func(t *testing.T) {
				b, ref := open(t, Options{MaxBindingSize: limit}), cpu.New()
				spec := func(name string, data []float32, shape ...int) model.WeightSpec {
					return modeltest.SpecOf(name, f, shape, data, 29)
				}
				var gt, ct [3]model.Tensor
				for i, s := range []model.WeightSpec{spec("router.weight", rw, E, D), spec("experts.gate_up_proj", gw, E, 2*I, D), spec("experts.down_proj", dw, E, D, I)} {
					var err error
					if gt[i], err = b.Weight(s); err != nil {
						t.Fatal(err)
					}
					if ct[i], err = ref.Weight(s); err != nil {
						t.Fatal(err)
					}
				}
				if limit > 0 && (len(gt[1].(*tensor).parts) < 2 || len(gt[2].(*tensor).parts) < 2) {
					t.Fatalf("gate_up in %d parts, down in %d: the test wants both split", len(gt[1].(*tensor).parts), len(gt[2].(*tensor).parts))
				}
				gx, cx := b.Alloc(model.F32, T, D), ref.Alloc(model.F32, T, D)
				b.Write(gx, x)
				ref.Write(cx, x)
				gout, cout := b.Alloc(model.F32, T, D), ref.Alloc(model.F32, T, D)
				a := model.MoEArgs{TopK: K, Act: model.GELUTanh}
				b.MoE(gout, gx, gt[0], gt[1], gt[2], a)
				ref.MoE(cout, cx, ct[0], ct[1], ct[2], a)
				got, err := b.Read(gout)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := ref.Read(cout)
				for i := range want {
					if d := math.Abs(float64(got[i] - want[i])); d > 1e-5*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("out[%d] = %v, want %v", i, got[i], want[i])
					}
				}
			})
		}
	}
}

// TestHybridKVGrowth: 150 positions in one call, and 60 then one decode
// step at a time (the caches grow past 64 and 128 by StoreKV moving them
// on the device), give the CPU's last logits. Under js/wasm 70 positions,
// past 64 only.
func TestHybridKVGrowth(t *testing.T) {
	dir, exp, _ := modeltest.LoadHybrid(t, "bamba")
	n := 150
	if runtime.GOOS == "js" {
		n = 70
	}
	ids := slices.Repeat(exp.PromptIDs, 10)[:n]
	cm, err := model.Load(os.DirFS(dir), cpu.New(), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := cm.NewState(1).Forward(ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := cm.Backend.Read(out)
	b := open(t, Options{})
	m, err := model.Load(os.DirFS(dir), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, out model.Tensor) {
		got, err := b.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		if d := modeltest.MaxAbsDiff(got, f64s(want)); d > 1e-4 {
			t.Errorf("%s: max |Δlogit| = %.3g against the CPU", name, d)
		}
	}
	st := m.NewState(1)
	defer st.Close()
	if out, err = st.Forward(ids, nil); err != nil {
		t.Fatal(err)
	}
	check("one call", out)
	st2 := m.NewState(1)
	defer st2.Close()
	if _, err := st2.Forward(ids[:60], nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[60:] {
		if out, err = st2.Forward([]int32{id}, nil); err != nil {
			t.Fatal(err)
		}
	}
	check("one step at a time", out)
}

// jsFew is the families a test runs: all natively, GraniteMoeHybrid alone
// under js/wasm, where SwiftShader under Node is too slow for the four.
func jsFew(families []string) []string {
	if runtime.GOOS == "js" {
		return []string{"granitemoehybrid"}
	}
	return families
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestHybridDecodeSteadyState: a hybrid's decode step (attention over the
// KV cache, MLPs, the experts routed on the device) creates no GPU object
// once warm and is one submission per token, as a Mamba-2 model's; the
// batch of two is left-padded, so the key mask is read too. Under js/wasm
// one family (jsFew).
func TestHybridDecodeSteadyState(t *testing.T) {
	for _, family := range jsFew(modeltest.HybridFamilies) {
		t.Run(family, func(t *testing.T) {
			dir, exp, _ := modeltest.LoadHybrid(t, family)
			b := open(t, Options{})
			m, err := model.Load(os.DirFS(dir), b, model.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			st := m.NewState(2)
			defer st.Close()
			var ids []int32
			var mask []float32
			for i := range 2 {
				ids = append(ids, exp.BatchIDs[i]...)
				mask = append(mask, exp.BatchMask[i]...)
			}
			idT := b.Alloc(model.I32, 2)
			out, err := st.Forward(ids, mask)
			if err != nil {
				t.Fatal(err)
			}
			step := func() {
				b.Sample(idT, out, nil, model.Sampling{}, []float32{0.5, 0.5})
				next, err := b.ReadIDs(idT)
				if err != nil {
					t.Fatal(err)
				}
				if out, err = st.Forward(next, nil); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 { // warm-up: the L=1 scratch and pipelines
				step()
			}
			before := b.Stats()
			const steps = 3
			for range steps {
				step()
			}
			after := b.Stats()
			if after.Buffers != before.Buffers || after.BindGroups != before.BindGroups || after.Pipelines != before.Pipelines {
				t.Errorf("decode steps created GPU objects: before %+v, after %+v", before, after)
			}
			if subs := after.Submissions - before.Submissions; subs != steps {
				t.Errorf("%d submissions for %d steps, want one per step", subs, steps)
			}
			t.Logf("%s: %d dispatches per decode step", family, (after.Dispatches-before.Dispatches)/steps)
		})
	}
}

// TestHybridSaveRestore: a left-padded batch's state, saved (the KV caches
// read back from the device) and restored into a fresh state (written
// back, the key mask with them), continues as the state that ran it all.
func TestHybridSaveRestore(t *testing.T) {
	dir, exp, _ := modeltest.LoadHybrid(t, "falcon-h1")
	b := open(t, Options{})
	m, err := model.Load(os.DirFS(dir), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var x, xy []int32
	var mask, maskXY []float32
	y := [][]int32{{7, 8, 9}, {10, 11, 12}}
	for i := range 2 {
		x = append(x, exp.BatchIDs[i]...)
		mask = append(mask, exp.BatchMask[i]...)
		xy = append(append(xy, exp.BatchIDs[i]...), y[i]...)
		maskXY = append(append(maskXY, exp.BatchMask[i]...), 1, 1, 1)
	}
	whole := m.NewState(2)
	defer whole.Close()
	out, err := whole.Forward(xy, maskXY)
	if err != nil {
		t.Fatal(err)
	}
	want, err := b.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	first := m.NewState(2)
	defer first.Close()
	if _, err := first.Forward(x, mask); err != nil {
		t.Fatal(err)
	}
	saved, err := first.Save()
	if err != nil {
		t.Fatal(err)
	}
	again := m.NewState(2)
	defer again.Close()
	if err := again.Restore(saved); err != nil {
		t.Fatal(err)
	}
	if out, err = again.Forward(append(append([]int32{}, y[0]...), y[1]...), nil); err != nil {
		t.Fatal(err)
	}
	got, err := b.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	if d := modeltest.MaxAbsDiff(got, f64s(want)); d > 1e-5 {
		t.Errorf("after restore: max |Δlogit| = %.3g", d)
	}
}
