package model_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestLoRAHybrid runs adapters merged and kept apart on every hybrid
// family on the CPU backend (modeltest.RunHybridLoRA).
func TestLoRAHybrid(t *testing.T) { modeltest.RunHybridLoRA(t, newCPU, newCPU) }

// TestLoRAHybridScheduler serves requests under two adapters and none at
// once on each hybrid family.
func TestLoRAHybridScheduler(t *testing.T) {
	for _, fam := range modeltest.HybridFamilies {
		t.Run(fam, func(t *testing.T) {
			var spec modeltest.LoRASpec
			for _, c := range modeltest.HybridLoRACases {
				if c.Family == fam {
					spec = c.Spec
					break
				}
			}
			dir := filepath.Join(modeltest.Root(), "fixtures", "hybrid-"+fam)
			m, err := model.Load(os.DirFS(dir), newCPU(t), model.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Backend.Close()
			for i, n := range []string{"a", "b"} {
				spec.Seed += uint64(10 * (i + 1))
				afs, _, _ := modeltest.RandomLoRAFor(t, dir, spec)
				ad, err := model.OpenAdapter(n, afs)
				if err != nil {
					t.Fatal(err)
				}
				if err := m.AttachAdapter(n, ad); err != nil {
					t.Fatal(err)
				}
			}
			modeltest.RunHybridLoRAScheduler(t, m, []string{"a", "", "b", "a", ""})
		})
	}
}

// TestLoRAHybridRefusals: what LoRA cannot adapt on a hybrid is refused
// with the module named, in both modes.
func TestLoRAHybridRefusals(t *testing.T) {
	dir := func(fam string) string { return filepath.Join(modeltest.Root(), "fixtures", "hybrid-"+fam) }
	good := func(fam string, targets ...string) fstest.MapFS {
		afs, _, _ := modeltest.RandomLoRAFor(t, dir(fam), modeltest.LoRASpec{Targets: targets, R: 2, Alpha: 4, Seed: 9})
		return afs
	}
	// edit rewrites an adapter's config, or swaps one tensor for another
	// of the same dtype, to make it wrong.
	withConfig := func(afs fstest.MapFS, cfg string) fstest.MapFS {
		out := fstest.MapFS{}
		for k, v := range afs {
			out[k] = v
		}
		out[model.AdapterConfigFile] = &fstest.MapFile{Data: []byte(cfg)}
		return out
	}
	granite := good("granitemoehybrid", "q_proj")
	for _, c := range []struct {
		name, family string
		afs          fstest.MapFS
		want         string
	}{
		{"expert target", "granitemoehybrid", withConfig(granite, `{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj","input_linear"]}`),
			"model.layers.0.block_sparse_moe.input_linear, and LoRA on it is not supported: it is a stack of the 4 experts' matrices"},
		{"expert regex", "granitemoehybrid", withConfig(granite, `{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":".*(q_proj|output_linear)"}`),
			"block_sparse_moe.output_linear, and LoRA on it is not supported"},
		{"unknown module", "bamba", withConfig(good("bamba", "q_proj"), `{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj","wq"]}`),
			`target_modules names "wq", which is no module of this bamba model`},
		{"conv1d", "falcon-h1", withConfig(good("falcon-h1", "q_proj"), `{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj","conv1d"]}`),
			"model.layers.0.mamba.conv1d, and LoRA on it is not supported"},
		{"wrong shape", "bamba", withConfig(good("bamba", "q_proj"), `{"peft_type":"LORA","r":3,"lora_alpha":4,"target_modules":["q_proj"]}`),
			"model.layers.1.self_attn.q_proj.lora_A.weight has shape [2 64], but model.layers.1.self_attn.q_proj.weight of the base model is [64 64] and r is 3: want [3 64]"},
		{"another family's", "falcon-h1", good("zamba2", "q_proj"),
			"which target_modules does not take (or the model has no such module)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ad, err := model.OpenAdapter(c.name, c.afs)
			if err != nil {
				t.Fatal(err)
			}
			_, err = model.Load(os.DirFS(dir(c.family)), newCPU(t), model.LoadOptions{Adapters: []*model.Adapter{ad}})
			wantErrHas(t, "merge", err, c.want)
			m, err := model.Load(os.DirFS(dir(c.family)), newCPU(t), model.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Backend.Close()
			wantErrHas(t, "attach", m.AttachAdapter("x", ad), c.want)
		})
	}

	// "all-linear" takes every nn.Linear but lm_head: an adapter file with
	// tensors for exactly those loads (one more module taken would lack
	// its tensors, one fewer would leave tensors no target takes), and
	// matches the same adapter listing the modules.
	t.Run("all-linear", func(t *testing.T) {
		for fam, targets := range map[string][]string{
			"bamba":  {"in_proj", "out_proj", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
			"zamba2": zamba2Linear(),
		} {
			afs, _, _ := modeltest.RandomLoRAFor(t, dir(fam), modeltest.LoRASpec{Targets: targets, R: 2, Alpha: 4, Seed: 3})
			all := withConfig(afs, `{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":"all-linear"}`)
			var out [][]float32
			for _, fsys := range []fstest.MapFS{afs, all} {
				ad, err := model.OpenAdapter(fam, fsys)
				if err != nil {
					t.Fatal(err)
				}
				m, err := model.Load(os.DirFS(dir(fam)), newCPU(t), model.LoadOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if err := m.AttachAdapter("a", ad); err != nil {
					t.Fatalf("%s: %v", fam, err)
				}
				st := m.NewState(1)
				if err := st.UseAdapter(0, "a"); err != nil {
					t.Fatal(err)
				}
				l, err := st.Logits([]int32{4, 99, 230, 17}, nil)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, l)
				st.Close()
				m.Backend.Close()
			}
			if !slices.Equal(out[0], out[1]) {
				t.Errorf("%s: all-linear gives other logits than the list of its modules", fam)
			}
		}
	})

	// layers_to_transform reads a module's layer as PEFT's regular
	// expressions do: for a Zamba2 per-use adapter without layers_pattern
	// the number after the last ".NAME." (its index in the list), with
	// "layers" the block's; the shared block's modules are at the first
	// layer using them.
	t.Run("layers_to_transform", func(t *testing.T) {
		afs, _, _ := modeltest.RandomLoRAFor(t, dir("zamba2"), modeltest.LoRASpec{Targets: []string{"linear_k_adapter_list.0.0", "o_proj"}, R: 2, Alpha: 4, Seed: 3})
		for _, c := range []struct{ extra, err string }{
			{`"layers_to_transform":[0,1]`, ""},
			{`"layers_to_transform":[1],"layers_pattern":"layers"`, ""},
			{`"layers_to_transform":[1]`, "tensors for module model.layers.1.shared_transformer.self_attn.linear_k_adapter_list.0.0, which target_modules does not take"},
			{`"layers_to_transform":[0,3],"layers_pattern":"layers"`, "target_modules takes no module of this model"}, // layer 3 holds only a copy
		} {
			ad, err := model.OpenAdapter(c.extra, withConfig(afs, `{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["linear_k_adapter_list.0.0","o_proj"],`+c.extra+`}`))
			if err != nil {
				t.Fatal(err)
			}
			m, err := model.Load(os.DirFS(dir("zamba2")), newCPU(t), model.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			err = m.AttachAdapter("a", ad)
			m.Backend.Close()
			if c.err == "" && err != nil {
				t.Errorf("%s: %v", c.extra, err)
			} else if c.err != "" {
				wantErrHas(t, c.extra, err, c.err)
			}
		}
	})

	// A hybrid's saved state records its rows' adapters as a Mamba-2
	// state does, and restores only under them.
	t.Run("saved state", func(t *testing.T) {
		afs, _, _ := modeltest.RandomLoRAFor(t, dir("falcon-h1"), modeltest.LoRASpec{Targets: []string{"in_proj", "q_proj"}, R: 2, Alpha: 4, Seed: 5})
		ad, err := model.OpenAdapter("a", afs)
		if err != nil {
			t.Fatal(err)
		}
		m, err := model.Load(os.DirFS(dir("falcon-h1")), newCPU(t), model.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Backend.Close()
		if err := m.AttachAdapter("a", ad); err != nil {
			t.Fatal(err)
		}
		st := m.NewState(1)
		defer st.Close()
		if err := st.UseAdapter(0, "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Forward([]int32{5, 6, 7}, nil); err != nil {
			t.Fatal(err)
		}
		saved, err := st.Save()
		if err != nil {
			t.Fatal(err)
		}
		base := m.NewState(1)
		defer base.Close()
		wantErrHas(t, "restore under the base", base.Restore(saved), `row 0 of the saved state was made under adapter "a"`)
		if err := base.UseAdapter(0, "a"); err != nil {
			t.Fatal(err)
		}
		if err := base.Restore(saved); err != nil {
			t.Errorf("restore under its own adapter: %v", err)
		}
		plain, err := m.NewState(1).Save()
		if err != nil {
			t.Fatal(err)
		}
		wantErrHas(t, "restore a base state", base.Restore(plain), "made under the base model")
	})

	// The MoE router is an nn.Linear: merged at load it is adapted, kept
	// apart it is refused, since its product runs inside the MoE.
	t.Run("router", func(t *testing.T) {
		afs, mfs, _ := modeltest.RandomLoRAFor(t, dir("granitemoehybrid"), modeltest.LoRASpec{Targets: []string{"router.layer"}, R: 2, Alpha: 4, Seed: 9})
		ad, err := model.OpenAdapter("router", afs)
		if err != nil {
			t.Fatal(err)
		}
		ids := []int32{4, 99, 230, 17, 5, 61}
		logits := func(m *model.Model) []float32 {
			defer m.Backend.Close()
			st := m.NewState(1)
			defer st.Close()
			out, err := st.Logits(ids, nil)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		load := func(fsys fstest.MapFS, o model.LoadOptions) *model.Model {
			m, err := model.Load(fsys, newCPU(t), o)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		base, err := model.Load(os.DirFS(dir("granitemoehybrid")), newCPU(t), model.LoadOptions{Adapters: []*model.Adapter{ad}})
		if err != nil {
			t.Fatal(err)
		}
		got, want := logits(base), logits(load(mfs, model.LoadOptions{}))
		for i := range got {
			if d := got[i] - want[i]; d > 1e-4 || d < -1e-4 {
				t.Fatalf("router merged: logit %d is %g, the reference merge's %g", i, got[i], want[i])
			}
		}
		m, err := model.Load(os.DirFS(dir("granitemoehybrid")), newCPU(t), model.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Backend.Close()
		wantErrHas(t, "attach", m.AttachAdapter("r", ad), "block_sparse_moe.router.layer is a mixture of experts' router: an adapter on it merges at load only")
	})
}

func wantErrHas(t *testing.T, what string, err error, sub string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one saying %q", what, sub)
	} else if !strings.Contains(err.Error(), sub) {
		t.Errorf("%s: error %q does not say %q", what, err, sub)
	}
}

// zamba2Linear names every nn.Linear of the Zamba2 fixture but lm_head:
// its per-use adapters' two layers by list and index (a bare "0" would
// take the Sequential holding them, and "1" the block model.layers.1).
func zamba2Linear() []string {
	out := []string{"in_proj", "out_proj", "q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj", "linear"}
	for _, l := range []string{"linear_q_adapter_list", "linear_k_adapter_list", "linear_v_adapter_list", "gate_up_proj_adapter_list"} {
		for k := range 2 {
			out = append(out, fmt.Sprintf("%s.%d.0", l, k), fmt.Sprintf("%s.%d.1", l, k))
		}
	}
	return out
}

// TestLoRAHybridInt8 attaches an adapter over a hybrid base quantized at
// load (in_proj, out_proj, the embedding and head in int8, the rest
// float): the adapter runs in f32 beside the quantized products, so the
// logits stay near the float reference merge and far from the int8 base.
func TestLoRAHybridInt8(t *testing.T) {
	dir := filepath.Join(modeltest.Root(), "fixtures", "hybrid-bamba")
	afs, mfs, _ := modeltest.RandomLoRAFor(t, dir, modeltest.LoRASpec{Targets: []string{"in_proj", "out_proj", "q_proj", "down_proj", "embed_tokens"}, R: 4, Alpha: 8, Seed: 7})
	ad, err := model.OpenAdapter("a", afs)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int32{4, 99, 230, 17, 5, 61, 300, 2}
	logits := func(m *model.Model, adapter string) []float32 {
		st := m.NewState(1)
		defer st.Close()
		if err := st.UseAdapter(0, adapter); err != nil {
			t.Fatal(err)
		}
		out, err := st.Logits(ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	ref, err := model.Load(mfs, newCPU(t), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Backend.Close()
	q, err := model.Load(os.DirFS(dir), newCPU(t), model.LoadOptions{Quantize: model.Quant{Format: model.FormatInt8}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Backend.Close()
	if err := q.AttachAdapter("a", ad); err != nil {
		t.Fatal(err)
	}
	want, got, base := logits(ref, ""), logits(q, "a"), logits(q, "")
	diff := func(x, y []float32) float64 {
		d := 0.0
		for i := range x {
			d = max(d, math.Abs(float64(x[i]-y[i])))
		}
		return d
	}
	near, far := diff(got, want), diff(base, want)
	t.Logf("int8 + attached vs the float merge: %.3g; the int8 base: %.3g", near, far)
	if near > 0.05 || far < 10*near {
		t.Errorf("int8 + attached is %.3g from the float merge, the int8 base %.3g: want under 0.05 and a tenth of the base's", near, far)
	}
}
