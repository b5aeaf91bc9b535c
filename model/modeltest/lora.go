package modeltest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// LoRACase is one case of fixtures/lora/expected.json: a base fixture, the
// PEFT adapters merged into it in order, and PEFT's merged float64
// model's outputs.
type LoRACase struct {
	Name      string
	Base      string    `json:"base"`
	Adapters  []string  `json:"adapters"`
	PromptIDs []int32   `json:"prompt_ids"`
	Last      []float64 `json:"logits_f64_last"`
	First     []float64 `json:"logits_f64_first"`
	GreedyIn  []int     `json:"greedy_prompt_ids"`
	GreedyNew []int     `json:"greedy_f64_new_ids"`
}

// LoRACases reads fixtures/lora/expected.json, in name order.
func LoRACases(t testing.TB) []LoRACase {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(Root(), "fixtures", "lora", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Cases map[string]LoRACase `json:"cases"`
	}
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	var out []LoRACase
	for n, c := range e.Cases {
		c.Name = n
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) < 3 {
		t.Fatalf("expected.json has %d cases, want at least 3", len(out))
	}
	return out
}

// OpenLoRA opens fixture adapters by folder name.
func OpenLoRA(t testing.TB, names ...string) []*model.Adapter {
	t.Helper()
	var ads []*model.Adapter
	for _, n := range names {
		a, err := model.OpenAdapter(n, os.DirFS(filepath.Join(Root(), "fixtures", "lora", n)))
		if err != nil {
			t.Fatal(err)
		}
		ads = append(ads, a)
	}
	return ads
}

// RunLoRA checks adapters kept apart (Model.AttachAdapter) on the backends
// newBackend makes, against the same adapters merged at load on such a
// backend, against PEFT's merged float64 model, and, over an int8 base,
// against the CPU reference (ref) attached over the same int8 base:
// switching adapters between calls, a batch whose rows run under
// different adapters (and none), and the errors.
func RunLoRA(t *testing.T, newBackend, ref func(t *testing.T) model.Backend) {
	for _, c := range LoRACases(t) {
		t.Run(c.Name, func(t *testing.T) { loraCase(t, newBackend, c) })
	}

	// One model, two adapters attached, switched call by call, and a batch
	// whose rows run under one, the other and neither.
	t.Run("switch", func(t *testing.T) {
		var c LoRACase
		for _, k := range LoRACases(t) {
			if k.Name == "g4-rslora" {
				c = k
			}
		}
		b := newBackend(t)
		defer b.Close()
		m := loraLoad(t, b, "tiny-g4", model.LoadOptions{})
		for n, ads := range map[string][]string{"rs": {"g4-rslora"}, "two0": {"g4-two-0"}} {
			if err := m.AttachAdapter(n, OpenLoRA(t, ads...)...); err != nil {
				t.Fatal(err)
			}
		}
		rs := loraLoad(t, b, "tiny-g4", model.LoadOptions{Adapters: OpenLoRA(t, "g4-rslora")})
		two0 := loraLoad(t, b, "tiny-g4", model.LoadOptions{Adapters: OpenLoRA(t, "g4-two-0")})
		plain := loraLoad(t, b, "tiny-g4", model.LoadOptions{})
		refs := map[string]*model.Model{"rs": rs, "two0": two0, "": plain}
		for _, n := range []string{"rs", "", "two0", "rs"} {
			want := loraGreedy(t, refs[n], "", c)
			if got := loraGreedy(t, m, n, c); !slices.Equal(got, want) {
				t.Errorf("adapter %q: greedy ids\n got %v\nwant %v (merged)", n, got, want)
			}
		}
		if slices.Equal(loraGreedy(t, rs, "", c), loraGreedy(t, plain, "", c)) {
			t.Error("the adapter does not change the greedy ids, so the comparison above proves nothing")
		}

		rows := []string{"rs", "two0", "", "rs"}
		ids := c.PromptIDs[:9]
		L := len(ids)
		st := m.NewState(len(rows))
		defer st.Close()
		batch := make([]int32, 0, len(rows)*L)
		for r, n := range rows {
			if err := st.UseAdapter(r, n); err != nil {
				t.Fatal(err)
			}
			// Each row its own prompt: the ids rotated by the row.
			batch = append(batch, append(slices.Clone(ids[r:]), ids[:r]...)...)
		}
		all, err := st.Logits(batch, nil)
		if err != nil {
			t.Fatal(err)
		}
		V := m.Config.VocabSize
		for r, n := range rows {
			alone := loraLogits(t, m, n, batch[r*L:(r+1)*L])
			if d := maxDiff32(all[r*L*V:(r+1)*L*V], alone); d > 1e-4 {
				t.Errorf("row %d (adapter %q): batched vs alone max |Δlogit| %.3g > 1e-4", r, n, d)
			}
		}
	})

	// An int8 base, which a merge would quantize after merging, with the
	// adapter beside it in f32: the same as the CPU's, and not the base's.
	t.Run("int8", func(t *testing.T) {
		var c LoRACase
		for _, k := range LoRACases(t) {
			if k.Name == "g1-emb-in-out" {
				c = k
			}
		}
		q := model.LoadOptions{Quantize: model.Quant{Format: model.FormatInt8}}
		b, rb := newBackend(t), ref(t)
		defer b.Close()
		defer rb.Close()
		m, r := loraLoad(t, b, c.Base, q), loraLoad(t, rb, c.Base, q)
		for _, mm := range []*model.Model{m, r} {
			if err := mm.AttachAdapter("a", OpenLoRA(t, c.Adapters...)...); err != nil {
				t.Fatal(err)
			}
		}
		got, want := loraLogits(t, m, "a", c.PromptIDs), loraLogits(t, r, "a", c.PromptIDs)
		if d := maxDiff32(got, want); d > 2e-3 {
			t.Errorf("attached over int8: max |Δlogit| against the CPU's %.3g > 2e-3", d)
		}
		if d := maxDiff32(got, loraLogits(t, m, "", c.PromptIDs)); d < 0.1 {
			t.Errorf("attached over int8: max |Δlogit| against the int8 base is only %.3g", d)
		}
		if last := MaxAbsDiff(got[len(got)-m.Config.VocabSize:], c.Last); last > 0.5 {
			t.Errorf("attached over int8: max |Δlogit| against PEFT's float model %.3g > 0.5", last)
		}
	})

	t.Run("errors", func(t *testing.T) {
		b := newBackend(t)
		defer b.Close()
		m := loraLoad(t, b, "tiny-g4", model.LoadOptions{})
		if err := m.AttachAdapter("a", OpenLoRA(t, "g4-rslora")...); err != nil {
			t.Fatal(err)
		}
		_, err := m.Generate(context.Background(), []int{1, 2}, model.Options{Adapter: "nope", MaxNewTokens: 1})
		wantErr(t, "unknown adapter", err, `adapter "nope"`, "attached: [a]")
		if !errors.Is(err, model.ErrUnknownAdapter) {
			t.Errorf("unknown adapter: %v does not match ErrUnknownAdapter", err)
		}
		wantErr(t, "duplicate", m.AttachAdapter("a", OpenLoRA(t, "g4-two-0")...), "attached already")
		wantErr(t, "another model's", m.AttachAdapter("g1", OpenLoRA(t, "g1-emb-in-out")...), "shape")
		wantErr(t, "empty name", m.AttachAdapter("", OpenLoRA(t, "g4-two-0")...), "name is empty")
		st := m.NewState(2)
		if err := st.UseAdapter(1, "a"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "detach in use", m.DetachAdapter("a"), "1 sequence(s) run under it")
		// A state's memory is its adapter's: continuing it under another is refused.
		one := m.NewState(1)
		if _, err := m.Generate(context.Background(), []int{1, 2}, model.Options{State: one, Adapter: "a", MaxNewTokens: 2, StopIDs: []int{}}); err != nil {
			t.Fatal(err)
		}
		_, err = m.Generate(context.Background(), []int{3}, model.Options{State: one, MaxNewTokens: 1})
		wantErr(t, "continue under another", err, `made under adapter "a"`)
		saved, err := one.Save()
		if err != nil {
			t.Fatal(err)
		}
		base := m.NewState(1)
		wantErr(t, "restore under another", base.Restore(saved), `made under adapter "a"`)
		if err := base.UseAdapter(0, "a"); err != nil {
			t.Fatal(err)
		}
		if err := base.Restore(saved); err != nil {
			t.Errorf("restore under its own adapter: %v", err)
		}
		plainSaved, err := m.NewState(1).Save()
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, "restore a base state", base.Restore(plainSaved), "made under the base model")
		st.Close()
		one.Close()
		base.Close()
		if err := m.DetachAdapter("a"); err != nil {
			t.Errorf("detach once no state uses it: %v", err)
		}
		wantErr(t, "detach twice", m.DetachAdapter("a"), "none is")
		if n := len(m.AttachedAdapters()); n != 0 {
			t.Errorf("%d adapters attached after the detach", n)
		}
	})
}

func wantErr(t *testing.T, what string, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q does not say %q", what, err, s)
		}
	}
}

func maxDiff32(a, b []float32) float64 {
	if len(a) != len(b) {
		return 1e9
	}
	d := 0.0
	for i := range a {
		d = max(d, float64(abs32(a[i]-b[i])))
	}
	return d
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

func maxAbs32(a []float32) float64 {
	m := 0.0
	for _, v := range a {
		m = max(m, float64(abs32(v)))
	}
	return m
}

// RandomLoRA is a PEFT adapter folder for models of config c: rank r on
// every layer's in_proj and out_proj, alpha 2r, A and B drawn from seed at
// a scale that changes a model's greedy output. Tests of packages without
// an adapter fixture of their model's shape (the embedded tiny model) use
// it.
func RandomLoRA(c model.Config, r int, seed uint64) fstest.MapFS {
	rng := rand.New(rand.NewPCG(seed, 0x10ad))
	type entry struct {
		name  string
		shape []int
	}
	var ts []entry
	for l := range c.Layers {
		p := fmt.Sprintf("base_model.model.backbone.layers.%d.mixer.", l)
		ts = append(ts,
			entry{p + "in_proj.lora_A.weight", []int{r, c.Hidden}},
			entry{p + "in_proj.lora_B.weight", []int{c.ProjDim(), r}},
			entry{p + "out_proj.lora_A.weight", []int{r, c.Inner()}},
			entry{p + "out_proj.lora_B.weight", []int{c.Hidden, r}})
	}
	header := map[string]any{}
	var body []byte
	for _, e := range ts {
		n := e.shape[0] * e.shape[1]
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.5)
		}
		raw := Encode(v, loader.F32)
		header[e.name] = map[string]any{"dtype": "F32", "shape": e.shape, "data_offsets": []int{len(body), len(body) + len(raw)}}
		body = append(body, raw...)
	}
	h, _ := json.Marshal(header)
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	st := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	st = append(append(st, h...), body...)
	cfg, _ := json.Marshal(map[string]any{"peft_type": "LORA", "r": r, "lora_alpha": 2 * r,
		"target_modules": []string{"in_proj", "out_proj"}, "bias": "none"})
	return fstest.MapFS{
		model.AdapterConfigFile:  {Data: cfg},
		model.AdapterWeightsFile: {Data: st},
	}
}

// RunLoRACase is RunLoRA's check of one fixture case (LoRACases' name):
// an attached adapter against the merged one, PEFT's logits and greedy
// ids, and the base model with none selected. It is what a slow engine
// runs instead of the whole of RunLoRA.
func RunLoRACase(t *testing.T, newBackend func(t *testing.T) model.Backend, name string) {
	for _, c := range LoRACases(t) {
		if c.Name == name {
			loraCase(t, newBackend, c)
			return
		}
	}
	t.Fatalf("no LoRA case %q", name)
}

func loraCase(t *testing.T, newBackend func(t *testing.T) model.Backend, c LoRACase) {
	b := newBackend(t)
	defer b.Close()
	apart := loraLoad(t, b, c.Base, model.LoadOptions{})
	if err := apart.AttachAdapter("a", OpenLoRA(t, c.Adapters...)...); err != nil {
		t.Fatal(err)
	}
	merged := loraLoad(t, b, c.Base, model.LoadOptions{Adapters: OpenLoRA(t, c.Adapters...)})
	got := loraLogits(t, apart, "a", c.PromptIDs)
	want := loraLogits(t, merged, "", c.PromptIDs)
	V := apart.Config.VocabSize
	// The two round differently (W+ΔW once, against W·x and
	// B·(A·x) apart), and tiny random models amplify float32's
	// rounding through the layers: 1e-4 of the logits' scale.
	d, scale := maxDiff32(got, want), max(1, maxAbs32(want))
	t.Logf("attached vs merged: max |Δlogit| %.3g (logits up to %.3g)", d, scale)
	if d > 1e-4*scale {
		t.Errorf("attached vs merged: max |Δlogit| over every position %.3g > 1e-4 × %.3g", d, scale)
	}
	first, last := MaxAbsDiff(got[:V], c.First), MaxAbsDiff(got[len(got)-V:], c.Last)
	if first > 1e-3 || last > 1e-3 {
		t.Errorf("attached vs PEFT: max |Δlogit| first %.3g, last %.3g > 1e-3", first, last)
	}
	if ids := loraGreedy(t, apart, "a", c); !slices.Equal(ids, c.GreedyNew) {
		t.Errorf("attached greedy ids\n got %v\nwant %v (PEFT's)", ids, c.GreedyNew)
	}
	// The base model stays what it was: "" selects no adapter. (Not
	// bit for bit on a device backend, whose prompt pieces are sized
	// from measured timings, so may differ between two models.)
	plain := loraLoad(t, b, c.Base, model.LoadOptions{})
	if d := maxDiff32(loraLogits(t, apart, "", c.PromptIDs), loraLogits(t, plain, "", c.PromptIDs)); d > 1e-4*scale {
		t.Errorf("with no adapter selected, logits differ from the plain base by %.3g", d)
	}
}

func loraLoad(t *testing.T, b model.Backend, base string, o model.LoadOptions) *model.Model {
	t.Helper()
	m, err := model.Load(os.DirFS(filepath.Join(Root(), "fixtures", base)), b, o)
	if err != nil {
		t.Fatal(err)
	}
	m.GatedNorm = model.Full // the reference is transformers'
	return m
}
func loraLogits(t *testing.T, m *model.Model, adapter string, ids []int32) []float32 {
	t.Helper()
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
func loraGreedy(t *testing.T, m *model.Model, adapter string, c LoRACase) []int {
	t.Helper()
	res, err := m.Generate(context.Background(), c.GreedyIn, model.Options{MaxNewTokens: len(c.GreedyNew), StopIDs: []int{}, Adapter: adapter})
	if err != nil {
		t.Fatal(err)
	}
	return res.IDs
}
