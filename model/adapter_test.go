package model_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// loraCase is one case of testdata/fixtures/lora/expected.json: a base
// fixture, the adapters PEFT merged into it in order, and the merged
// float64 model's outputs.
type loraCase struct {
	Base       string    `json:"base"`
	Adapters   []string  `json:"adapters"`
	PromptIDs  []int32   `json:"prompt_ids"`
	Last       []float64 `json:"logits_f64_last"`
	First      []float64 `json:"logits_f64_first"`
	GreedyIn   []int     `json:"greedy_prompt_ids"`
	GreedyNew  []int     `json:"greedy_f64_new_ids"`
	TiedHeadIn bool      `json:"lm_head_is_embedding"`
}

func loraCases(t *testing.T) map[string]loraCase {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(modeltest.Root(), "fixtures", "lora", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Cases map[string]loraCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Cases) != 3 {
		t.Fatalf("expected.json has %d cases, want 3", len(e.Cases))
	}
	return e.Cases
}

func openAdapters(t *testing.T, names []string) []*model.Adapter {
	t.Helper()
	var ads []*model.Adapter
	for _, n := range names {
		a, err := model.OpenAdapter(n, os.DirFS(filepath.Join(modeltest.Root(), "fixtures", "lora", n)))
		if err != nil {
			t.Fatal(err)
		}
		ads = append(ads, a)
	}
	return ads
}

// TestAdapterFixtures merges each fixture case's PEFT adapters into its
// base on the CPU backend and checks the first and last logits of the
// prompt against PEFT's merged float64 model (the CPU computes in
// float32), and the 16 greedy ids exactly. tiny-g4's reference is
// transformers', whose gated norm is the full-width one. With --quantize
// int8 the merge comes first, so the merged model is what is quantized:
// its logits stay within int8's error of the reference (far closer than
// the base model's, 4.5 to 7 away), and its greedy ids follow the
// reference up to a step where int8's logit error covers the margin.
func TestAdapterFixtures(t *testing.T) {
	for name, c := range loraCases(t) {
		t.Run(name, func(t *testing.T) {
			base := filepath.Join(modeltest.Root(), "fixtures", c.Base)
			load := func(q model.Quant) *model.Model {
				m, err := model.Load(os.DirFS(base), cpu.New(), model.LoadOptions{Adapters: openAdapters(t, c.Adapters), Quantize: q})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Backend.Close() })
				m.GatedNorm = model.Full
				if len(m.Adapters) != len(c.Adapters) {
					t.Errorf("model lists %d adapters, want %d", len(m.Adapters), len(c.Adapters))
				}
				return m
			}
			f32 := load(model.Quant{})
			t.Run("f32", func(t *testing.T) {
				ids := checkLoRALogits(t, f32, c, 1e-3)
				if !slices.Equal(ids, c.GreedyNew) {
					t.Errorf("greedy ids\n got %v\nwant %v", ids, c.GreedyNew)
				}
			})
			t.Run("int8", func(t *testing.T) {
				q := load(model.Quant{Format: model.FormatInt8})
				ids := checkLoRALogits(t, q, c, 0.5)
				checkMargin(t, q, f32, c, ids)
			})
		})
	}
}

// checkLoRALogits compares the first and last logits of the case's prompt
// with the reference, within tol, and returns the model's greedy ids.
func checkLoRALogits(t *testing.T, m *model.Model, c loraCase, tol float64) []int {
	t.Helper()
	V := m.Config.VocabSize
	all, err := m.NewState(1).Logits(c.PromptIDs, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, last := modeltest.MaxAbsDiff(all[:V], c.First), modeltest.MaxAbsDiff(all[len(all)-V:], c.Last)
	t.Logf("max |Δlogit| first %.3g, last %.3g", first, last)
	if first > tol || last > tol {
		t.Errorf("max |Δlogit| first %.3g, last %.3g > %g", first, last, tol)
	}
	res, err := m.Generate(context.Background(), c.GreedyIn, model.Options{MaxNewTokens: len(c.GreedyNew), StopIDs: []int{}})
	if err != nil {
		t.Fatal(err)
	}
	return res.IDs
}

// checkMargin checks quantized greedy ids against the reference: they may
// part only at a step where the float model (ref, which matches the
// reference's ids) prefers the reference's token by no more than twice
// the largest logit difference between the two models there.
func checkMargin(t *testing.T, q, ref *model.Model, c loraCase, ids []int) {
	t.Helper()
	V := q.Config.VocabSize
	for i, want := range c.GreedyNew {
		if i >= len(ids) {
			t.Fatalf("int8 gave %d ids, want %d", len(ids), len(c.GreedyNew))
		}
		if ids[i] == want {
			continue
		}
		prefix := toInt32(append(slices.Clone(c.GreedyIn), c.GreedyNew[:i]...))
		lq, err := q.NewState(1).Logits(prefix, nil)
		if err != nil {
			t.Fatal(err)
		}
		lr, err := ref.NewState(1).Logits(prefix, nil)
		if err != nil {
			t.Fatal(err)
		}
		lq, lr = lq[len(lq)-V:], lr[len(lr)-V:]
		margin := float64(lr[want] - lr[ids[i]])
		diff := modeltest.MaxAbsDiff(lq, toFloat64(lr))
		if margin > 2*diff {
			t.Errorf("step %d: int8 chose %d over %d although the float model's margin %.3g exceeds twice the logit error %.3g:\n got %v\nwant %v",
				i, ids[i], want, margin, diff, ids, c.GreedyNew)
		} else {
			t.Logf("int8 greedy ids follow the reference for %d of %d steps; at step %d the margin %.3g is within twice the logit error %.3g", i, len(c.GreedyNew), i, margin, diff)
		}
		return
	}
	t.Logf("int8 greedy ids equal the reference's")
}

func toFloat64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func toInt32(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, v := range ids {
		out[i] = int32(v)
	}
	return out
}

// TestAdapterChangesModel checks that each case's merge moves the logits
// well beyond the tolerance TestAdapterFixtures allows, so that test could
// not pass with the adapter ignored.
func TestAdapterChangesModel(t *testing.T) {
	for name, c := range loraCases(t) {
		t.Run(name, func(t *testing.T) {
			m, err := model.Load(os.DirFS(filepath.Join(modeltest.Root(), "fixtures", c.Base)), cpu.New(), model.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Backend.Close()
			m.GatedNorm = model.Full
			all, err := m.NewState(1).Logits(c.PromptIDs, nil)
			if err != nil {
				t.Fatal(err)
			}
			d := modeltest.MaxAbsDiff(all[len(all)-m.Config.VocabSize:], c.Last)
			t.Logf("base vs merged: max |Δlogit| %.3g", d)
			if d < 1 {
				t.Errorf("the base model's logits are within %.3g of the merged reference: the fixture does not test the merge", d)
			}
		})
	}
}

// adapterFS builds an adapter folder in memory: config (a JSON object,
// merged over a valid LoRA config) and tensors (name → shape, F32 zeros
// with one 0.5 so every merge moves something).
func adapterFS(t *testing.T, config map[string]any, tensors map[string][]int) fstest.MapFS {
	t.Helper()
	cfg := map[string]any{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": []string{"in_proj"},
		"bias": "none", "use_dora": false, "fan_in_fan_out": false}
	for k, v := range config {
		if v == nil {
			delete(cfg, k)
		} else {
			cfg[k] = v
		}
	}
	cj, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{"adapter_config.json": {Data: cj}}
	if tensors != nil {
		fsys["adapter_model.safetensors"] = &fstest.MapFile{Data: safetensorsF32(t, tensors)}
	}
	return fsys
}

// safetensorsF32 writes a safetensors file of F32 tensors, each zeros but
// its first element 0.5.
func safetensorsF32(t *testing.T, tensors map[string][]int) []byte {
	t.Helper()
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	slices.Sort(names)
	header := map[string]any{}
	var data []byte
	for _, n := range names {
		elems := 1
		for _, d := range tensors[n] {
			elems *= d
		}
		b := make([]byte, 4*elems)
		if elems > 0 {
			copy(b, []byte{0, 0, 0, 0x3f}) // 0.5
		}
		header[n] = map[string]any{"dtype": "F32", "shape": tensors[n], "data_offsets": []int{len(data), len(data) + len(b)}}
		data = append(data, b...)
	}
	hj, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	out := make([]byte, 8, 8+len(hj)+len(data))
	n := uint64(len(hj))
	for i := range 8 {
		out[i] = byte(n >> (8 * i))
	}
	return append(append(out, hj...), data...)
}

// TestAdapterErrors checks that every adapter the merge cannot do exactly
// is refused, before any weight moves, with an error naming the problem.
// The base is tiny-g1: D 64, in_proj [296, 64], out_proj [64, 128], V 512,
// tied.
func TestAdapterErrors(t *testing.T) {
	const p = "base_model.model.backbone.layers."
	inA, inB := p+"0.mixer.in_proj.lora_A.weight", p+"0.mixer.in_proj.lora_B.weight"
	good := func() map[string][]int {
		m := map[string][]int{}
		for l := range 2 {
			m[strings.Replace(inA, ".0.", "."+string(rune('0'+l))+".", 1)] = []int{2, 64}
			m[strings.Replace(inB, ".0.", "."+string(rune('0'+l))+".", 1)] = []int{296, 2}
		}
		return m
	}
	with := func(change func(m map[string][]int)) map[string][]int {
		m := good()
		change(m)
		return m
	}
	tests := []struct {
		name    string
		config  map[string]any
		tensors map[string][]int
		want    string
	}{
		{"not json", map[string]any{"r": "four"}, good(), "cannot unmarshal"},
		{"not lora", map[string]any{"peft_type": "IA3"}, good(), `peft_type is "IA3"; only LORA adapters are supported`},
		{"dora", map[string]any{"use_dora": true}, good(), "use_dora is true: DoRA"},
		{"bias", map[string]any{"bias": "lora_only"}, good(), `bias is "lora_only"`},
		{"fan in fan out", map[string]any{"fan_in_fan_out": true}, good(), "fan_in_fan_out is true"},
		{"modules to save", map[string]any{"modules_to_save": []string{"lm_head"}}, good(), "modules_to_save is set"},
		{"zero rank", map[string]any{"r": 0}, good(), "r is 0; want a positive rank"},
		{"no targets", map[string]any{"target_modules": nil}, good(), "target_modules is missing or empty"},
		{"bad regex", map[string]any{"target_modules": "in_proj(?<"}, good(), "is not a regular expression Go reads"},
		{"unknown target", map[string]any{"target_modules": []string{"in_proj", "q_proj"}}, good(), `target_modules names "q_proj", which is no module of a Mamba-2 model`},
		{"unsupported target", map[string]any{"target_modules": []string{"in_proj", "conv1d"}}, good(), "takes backbone.layers.0.mixer.conv1d, and LoRA on it is not supported"},
		{"no safetensors", nil, nil, "no adapter_model.safetensors"},
		{"layers_pattern", map[string]any{"layers_to_transform": []int{0}, "layers_pattern": "h"}, good(), `layers_pattern is "h"; Mamba-2's blocks are backbone.layers`},
		{"alora", map[string]any{"alora_invocation_tokens": []int{5, 6}}, good(), "alora_invocation_tokens is set ([5,6]), which is not supported: activated LoRA"},
		{"wrong shape", nil, with(func(m map[string][]int) { m[inB] = []int{295, 2} }),
			"tensor " + inB + " has shape [295 2], but backbone.layers.0.mixer.in_proj.weight of the base model is [296 64] and r is 2: want [296 2]"},
		{"rank differs", map[string]any{"r": 4}, good(), "has shape [2 64], but backbone.layers.0.mixer.in_proj.weight of the base model is [296 64] and r is 4: want [4 64]"},
		{"missing module", nil, with(func(m map[string][]int) {
			delete(m, strings.Replace(inA, ".0.", ".1.", 1))
			delete(m, strings.Replace(inB, ".0.", ".1.", 1))
		}), "target_modules takes backbone.layers.1.mixer.in_proj, but adapter_model.safetensors has no tensors for it"},
		{"missing B", nil, with(func(m map[string][]int) { delete(m, inB) }), "module backbone.layers.0.mixer.in_proj lacks its lora_B.weight"},
		{"untargeted tensor", nil, with(func(m map[string][]int) {
			m[p+"0.mixer.out_proj.lora_A.weight"] = []int{2, 128}
			m[p+"0.mixer.out_proj.lora_B.weight"] = []int{64, 2}
		}), "tensors for module backbone.layers.0.mixer.out_proj, which target_modules does not take"},
		{"dora tensor", nil, with(func(m map[string][]int) { m[p+"0.mixer.in_proj.lora_magnitude_vector"] = []int{1, 296} }), "is a DoRA magnitude"},
		{"other tensor", nil, with(func(m map[string][]int) { m[p+"0.mixer.in_proj.weight"] = []int{296, 64} }), "is not a LoRA tensor"},
		{"embedding as linear", map[string]any{"target_modules": []string{"embeddings"}}, map[string][]int{
			"base_model.model.backbone.embeddings.lora_A.weight": {2, 512}, "base_model.model.backbone.embeddings.lora_B.weight": {64, 2}},
			"module backbone.embeddings is an embedding: its tensors are lora_embedding_A and lora_embedding_B"},
		{"embedding shape", map[string]any{"target_modules": []string{"embeddings"}}, map[string][]int{
			"base_model.model.backbone.embeddings.lora_embedding_A": {2, 64}, "base_model.model.backbone.embeddings.lora_embedding_B": {64, 2}},
			"lora_embedding_A has shape [2 64], but backbone.embeddings.weight of the base model is [512 64] and r is 2: want [2 512]"},
	}
	base := os.DirFS(filepath.Join(modeltest.Root(), "fixtures", "tiny-g1"))
	cfg, ck, err := model.Plan(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := model.OpenAdapter("test", adapterFS(t, tc.config, tc.tensors))
			if err == nil {
				err = model.CheckAdapters(cfg, ck, []*model.Adapter{a})
			}
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
	t.Run("pickle", func(t *testing.T) {
		fsys := adapterFS(t, nil, nil)
		fsys["adapter_model.bin"] = &fstest.MapFile{Data: []byte("PK")}
		_, err := model.OpenAdapter("test", fsys)
		if err == nil || !strings.Contains(err.Error(), "only adapter_model.bin, a pickle") {
			t.Errorf("error %v, want the pickle refused", err)
		}
	})
	t.Run("no config", func(t *testing.T) {
		_, err := model.OpenAdapter("test", fstest.MapFS{})
		if err == nil || !strings.Contains(err.Error(), "adapter test: no adapter_config.json") || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v, want one naming adapter_config.json and matching fs.ErrNotExist", err)
		}
	})
	t.Run("good", func(t *testing.T) {
		a, err := model.OpenAdapter("test", adapterFS(t, nil, good()))
		if err != nil {
			t.Fatal(err)
		}
		if err := model.CheckAdapters(cfg, ck, []*model.Adapter{a}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAdapterTargets checks the ways adapter_config.json names modules
// (PEFT's rules): a list matches a key or its last parts, a string is a
// regular expression over the whole key, "all-linear" takes in_proj and
// out_proj, layers_to_transform and exclude_modules narrow, and
// rank_pattern and alpha_pattern set a module's rank and scale. Each case
// passes CheckAdapters with tensors for exactly the modules it should take.
func TestAdapterTargets(t *testing.T) {
	lin := func(layer int, proj string, r int) map[string][]int {
		p := "base_model.model.backbone.layers." + string(rune('0'+layer)) + ".mixer." + proj
		in, out := 64, 296
		if proj == "out_proj" {
			in, out = 128, 64
		}
		return map[string][]int{p + ".lora_A.weight": {r, in}, p + ".lora_B.weight": {out, r}}
	}
	join := func(ms ...map[string][]int) map[string][]int {
		out := map[string][]int{}
		for _, m := range ms {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	tests := []struct {
		name    string
		config  map[string]any
		tensors map[string][]int
	}{
		{"list", map[string]any{"target_modules": []string{"mixer.in_proj"}}, join(lin(0, "in_proj", 2), lin(1, "in_proj", 2))},
		{"regex", map[string]any{"target_modules": `.*\.1\.mixer\.(in|out)_proj`}, join(lin(1, "in_proj", 2), lin(1, "out_proj", 2))},
		{"all-linear", map[string]any{"target_modules": "all-linear"}, join(lin(0, "in_proj", 2), lin(1, "in_proj", 2), lin(0, "out_proj", 2), lin(1, "out_proj", 2))},
		{"layers", map[string]any{"layers_to_transform": []int{1}}, lin(1, "in_proj", 2)},
		{"layer zero", map[string]any{"layers_to_transform": 0, "layers_pattern": "layers"}, lin(0, "in_proj", 2)},
		{"layers_pattern alone", map[string]any{"layers_pattern": "h"}, join(lin(0, "in_proj", 2), lin(1, "in_proj", 2))},
		{"exclude", map[string]any{"target_modules": []string{"in_proj", "out_proj"}, "exclude_modules": []string{"out_proj"}}, join(lin(0, "in_proj", 2), lin(1, "in_proj", 2))},
		{"rank pattern", map[string]any{"rank_pattern": map[string]int{`layers\.1\.mixer\.in_proj`: 3}}, join(lin(0, "in_proj", 2), lin(1, "in_proj", 3))},
	}
	cfg, ck, err := model.Plan(os.DirFS(filepath.Join(modeltest.Root(), "fixtures", "tiny-g1")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := model.OpenAdapter("test", adapterFS(t, tc.config, tc.tensors))
			if err != nil {
				t.Fatal(err)
			}
			if err := model.CheckAdapters(cfg, ck, []*model.Adapter{a}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// stTensor is one tensor for writeSafetensors.
type stTensor struct {
	name  string
	dt    loader.DType
	shape []int
	vals  []float64
}

// writeSafetensors encodes tensors as a safetensors file (f16 and bf16
// rounded to nearest even through float32).
func writeSafetensors(t *testing.T, ts []stTensor) []byte {
	t.Helper()
	header := map[string]any{}
	var data []byte
	for _, x := range ts {
		start := len(data)
		for _, v := range x.vals {
			f := float32(v)
			switch x.dt {
			case loader.F64:
				data = binary.LittleEndian.AppendUint64(data, math.Float64bits(v))
			case loader.F32:
				data = binary.LittleEndian.AppendUint32(data, math.Float32bits(f))
			case loader.F16:
				data = binary.LittleEndian.AppendUint16(data, loader.Float32ToHalf(f))
			case loader.BF16:
				b := math.Float32bits(f)
				b += 0x7fff + (b>>16)&1
				data = binary.LittleEndian.AppendUint16(data, uint16(b>>16))
			default:
				t.Fatalf("writeSafetensors: dtype %s", x.dt)
			}
		}
		header[x.name] = map[string]any{"dtype": string(x.dt), "shape": x.shape, "data_offsets": []int{start, len(data)}}
	}
	hj, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hj)))
	return append(append(out, hj...), data...)
}

// roundTo is what storing v in dt and reading it back gives.
func roundTo(t *testing.T, v float64, dt loader.DType) float32 {
	t.Helper()
	b := writeSafetensors(t, []stTensor{{"x", dt, []int{1}, []float64{v}}})
	out := make([]float32, 1)
	loader.Decode(out, dt, b[len(b)-dt.Size():])
	return out[0]
}

// tinyIn re-encodes tiny-g1 with every tensor in dt, in memory.
func tinyIn(t *testing.T, dt loader.DType) (fstest.MapFS, *loader.Checkpoint) {
	t.Helper()
	dir := os.DirFS(filepath.Join(modeltest.Root(), "fixtures", "tiny-g1"))
	ck, err := loader.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ts []stTensor
	for _, n := range ck.Names() {
		in, _ := ck.Info(n)
		f, err := ck.Float32s(n)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, stTensor{n, dt, in.Shape, toFloat64(f)})
	}
	cfg, err := fs.ReadFile(dir, "config.json")
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{"config.json": {Data: cfg}, "model.safetensors": {Data: writeSafetensors(t, ts)}}
	ck, err = loader.Open(fsys)
	if err != nil {
		t.Fatal(err)
	}
	return fsys, ck
}

// TestAdapterMergeRule checks the merged weights themselves, element by
// element, against the rule computed here in float64 and rounded once to
// the checkpoint's dtype: for f32, f16 and bf16 checkpoints, for each kind
// of module, with alpha_pattern and rslora setting the scale, and on tied
// tiny-g1 an lm_head adapter landing in the embedding (the head) together
// with the embedding's own.
func TestAdapterMergeRule(t *testing.T) {
	const pre = "base_model.model."
	type mod struct {
		key   string // module key
		base  string // the base tensor it changes
		a, b  []int  // shapes of A and B
		emb   bool
		alpha float64
	}
	const r = 3
	inProj := mod{key: "backbone.layers.1.mixer.in_proj", base: "backbone.layers.1.mixer.in_proj.weight", a: []int{r, 64}, b: []int{296, r}, alpha: 6}
	outProj := mod{key: "backbone.layers.0.mixer.out_proj", base: "backbone.layers.0.mixer.out_proj.weight", a: []int{r, 128}, b: []int{64, r}, alpha: 12}
	emb := mod{key: "backbone.embeddings", base: "backbone.embeddings.weight", a: []int{r, 512}, b: []int{64, r}, emb: true, alpha: 6}
	head := mod{key: "lm_head", base: "backbone.embeddings.weight", a: []int{r, 64}, b: []int{512, r}, alpha: 6}
	tests := []struct {
		name   string
		mods   []mod
		rslora bool
	}{
		{"in_proj", []mod{inProj}, false},
		{"out_proj alpha_pattern", []mod{outProj}, false},
		{"embedding rslora", []mod{emb}, true},
		{"tied lm_head and embedding", []mod{emb, head}, false},
	}
	for _, dt := range []loader.DType{loader.F32, loader.F16, loader.BF16} {
		base, ck := tinyIn(t, dt)
		for _, tc := range tests {
			t.Run(string(dt)+"/"+tc.name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(len(tc.name)), 7))
				var ts []stTensor
				var targets []string
				vals := map[string][2][]float64{}
				for _, m := range tc.mods {
					A := make([]float64, m.a[0]*m.a[1])
					B := make([]float64, m.b[0]*m.b[1])
					for i := range A {
						A[i] = float64(float32(rng.NormFloat64() * 0.1))
					}
					for i := range B {
						B[i] = float64(float32(rng.NormFloat64() * 0.1))
					}
					vals[m.key] = [2][]float64{A, B}
					an, bn := pre+m.key+".lora_A.weight", pre+m.key+".lora_B.weight"
					if m.emb {
						an, bn = pre+m.key+".lora_embedding_A", pre+m.key+".lora_embedding_B"
					}
					ts = append(ts, stTensor{an, loader.F64, m.a, A}, stTensor{bn, loader.F32, m.b, B})
					targets = append(targets, m.key) // the whole key: this module alone
				}
				cfg, _ := json.Marshal(map[string]any{"peft_type": "LORA", "r": r, "lora_alpha": 6, "use_rslora": tc.rslora,
					"target_modules": targets, "alpha_pattern": map[string]float64{`layers\.0\.mixer\.out_proj`: 12}, "bias": "none"})
				ad, err := model.OpenAdapter("rule", fstest.MapFS{"adapter_config.json": {Data: cfg}, "adapter_model.safetensors": {Data: writeSafetensors(t, ts)}})
				if err != nil {
					t.Fatal(err)
				}
				m, err := model.Load(base, cpu.New(), model.LoadOptions{Adapters: []*model.Adapter{ad}})
				if err != nil {
					t.Fatal(err)
				}
				defer m.Backend.Close()
				// The expected tensor: the stored base plus every module's
				// delta, in float64, rounded once to dt.
				want, err := ck.Float32s(tc.mods[0].base)
				if err != nil {
					t.Fatal(err)
				}
				in, _ := ck.Info(tc.mods[0].base)
				N, K := in.Shape[0], in.Shape[1]
				acc := toFloat64(want)
				for _, md := range tc.mods {
					s := md.alpha / r
					if tc.rslora {
						s = md.alpha / math.Sqrt(r)
					}
					A, B := vals[md.key][0], vals[md.key][1]
					for n := range N {
						for k := range K {
							var d float64
							for j := range r {
								if md.emb { // E[v=n, d=k] += s Σ B[k, j] A[j, n]
									d += B[k*r+j] * A[j*N+n]
								} else {
									d += B[n*r+j] * A[j*K+k]
								}
							}
							acc[n*K+k] += s * d
						}
					}
				}
				var tensor model.Tensor
				switch tc.mods[0].base {
				case inProj.base:
					tensor = m.Weights.Layers[1].InProj
				case outProj.base:
					tensor = m.Weights.Layers[0].OutProj
				default:
					tensor = m.Weights.Embed
					if m.Weights.LMHead != m.Weights.Embed {
						t.Fatal("the tied head is not the embedding after a merge")
					}
				}
				got, err := m.Backend.Read(tensor)
				if err != nil {
					t.Fatal(err)
				}
				bad := 0
				for i, v := range acc {
					if w := roundTo(t, v, dt); got[i] != w {
						if bad++; bad <= 3 {
							t.Errorf("element %d: merged %g, want %g (base %g)", i, got[i], w, want[i])
						}
					}
				}
				if bad > 0 {
					t.Errorf("%d of %d elements differ", bad, len(acc))
				}
				// Untouched tensors stay as stored.
				other, _ := m.Backend.Read(m.Weights.Layers[0].InProj)
				if tc.mods[0].base != inProj.base {
					stored, _ := ck.Float32s("backbone.layers.0.mixer.in_proj.weight")
					if !slices.Equal(other, stored) {
						t.Error("layer 0's in_proj changed, though no adapter targets it")
					}
				}
			})
		}
	}
}

// TestAdapterOverflow checks that a merge whose values leave an f16
// checkpoint's range is an error naming the tensor, not infinities.
func TestAdapterOverflow(t *testing.T) {
	base, _ := tinyIn(t, loader.F16)
	A := make([]float64, 64)
	B := make([]float64, 296)
	for i := range A {
		A[i] = 300
	}
	for i := range B {
		B[i] = 300
	}
	const p = "base_model.model.backbone.layers.0.mixer.in_proj."
	cfg, _ := json.Marshal(map[string]any{"peft_type": "LORA", "r": 1, "lora_alpha": 1, "target_modules": []string{"in_proj"}, "layers_to_transform": 0})
	ad, err := model.OpenAdapter("big", fstest.MapFS{"adapter_config.json": {Data: cfg}, "adapter_model.safetensors": {Data: writeSafetensors(t, []stTensor{
		{p + "lora_A.weight", loader.F32, []int{1, 64}, A}, {p + "lora_B.weight", loader.F32, []int{296, 1}, B}})}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = model.Load(base, cpu.New(), model.LoadOptions{Adapters: []*model.Adapter{ad}})
	if want := "merging adapter big into backbone.layers.0.mixer.in_proj.weight (F16): element 0 (row 0) leaves the range of F16"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v\nwant it to contain %q", err, want)
	}
}
