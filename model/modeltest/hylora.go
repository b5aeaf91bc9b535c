package modeltest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// LoRASpec describes a random PEFT LoRA adapter for a checkpoint
// (RandomLoRAFor).
type LoRASpec struct {
	// Targets are target_modules: each takes the modules whose name is it
	// or ends in "." + it, as PEFT matches a list. Only matrices (2-D
	// ".weight" tensors) are adapted; a tied lm_head (no lm_head.weight)
	// adapts the embedding, as PEFT's merge of the shared matrix does.
	Targets []string
	Layers  []int // layers_to_transform (the number after ".layers."); nil for all
	R       int
	Alpha   float64
	RSLoRA  bool
	Seed    uint64
	// Aliases also writes a Zamba2 shared block's tensors under the
	// names of every hybrid layer using it, as PEFT's save_pretrained
	// stores copies of a module used in several places.
	Aliases bool
}

// RandomLoRAFor makes a random adapter for the checkpoint in the folder
// dir, as PEFT lays one out (adapter_config.json, adapter_model.safetensors
// with base_model.model.MODULE.lora_A.weight, .lora_B.weight, or
// .lora_embedding_A/B for an embedding), and, worked out here apart from
// the model package, the base folder with the adapter merged in float64
// (W += scale·B·A, rounded once to f32), to load as the reference. It
// returns the modules it adapted too.
func RandomLoRAFor(t testing.TB, dir string, s LoRASpec) (adapter, merged fstest.MapFS, modules []string) {
	t.Helper()
	ck, err := loader.OpenFiles(os.DirFS(dir), "model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	cfgData, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		HybridIDs []int `json:"hybrid_layer_ids"`
		MemBlocks int   `json:"num_mem_blocks"`
	}
	if err := json.Unmarshal(cfgData, &cfg); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x4b1d))
	scale := s.Alpha / float64(s.R)
	if s.RSLoRA {
		scale = s.Alpha / math.Sqrt(float64(s.R))
	}
	layerRE := regexp.MustCompile(`\.layers\.(\d+)\.`)
	hit := func(key string) bool {
		if !slices.ContainsFunc(s.Targets, func(t string) bool { return key == t || strings.HasSuffix(key, "."+t) }) {
			return false
		}
		if s.Layers == nil {
			return true
		}
		m := layerRE.FindStringSubmatch(key + ".")
		if m == nil {
			return false
		}
		l, _ := strconv.Atoi(m[1])
		return slices.Contains(s.Layers, l)
	}
	random := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.15)
		}
		return v
	}
	ad := map[string]stTensor{}
	// put adds ΔW = scale·B·A (or its transpose) into w [N, K] in float64.
	put := func(w []float64, N, K int, A, B []float32, emb bool) {
		r := s.R
		for n := range N {
			for k := range K {
				var d float64
				for j := range r {
					if emb { // ΔE[v, d] = Σ_j Bᴱ[d, j]·Aᴱ[j, v]
						d += float64(B[k*r+j]) * float64(A[j*N+n])
					} else {
						d += float64(B[n*r+j]) * float64(A[j*K+k])
					}
				}
				w[n*K+k] += scale * d
			}
		}
	}
	weights := map[string][]float64{}
	shapes := map[string][]int{}
	names := ck.Names()
	slices.Sort(names)
	for _, n := range names {
		in, _ := ck.Info(n)
		v, err := ck.Float32s(n)
		if err != nil {
			t.Fatal(err)
		}
		w := make([]float64, len(v))
		for i, x := range v {
			w[i] = float64(x)
		}
		weights[n], shapes[n] = w, in.Shape
	}
	_, hasHead := weights["lm_head.weight"]
	for _, n := range names {
		sh := shapes[n]
		key, ok := strings.CutSuffix(n, ".weight")
		if !ok || len(sh) != 2 {
			continue
		}
		N, K := sh[0], sh[1]
		emb := strings.HasSuffix(key, "embed_tokens")
		keys := []string{key}
		if emb && !hasHead && hit("lm_head") {
			keys = append(keys, "lm_head") // tied: the head's update is the table's
		}
		for _, k := range keys {
			if !hit(k) {
				continue
			}
			asEmb := emb && k == key
			A, B := random(s.R*K), random(N*s.R)
			shA, shB := []int{s.R, K}, []int{N, s.R}
			pa, pb := ".lora_A.weight", ".lora_B.weight"
			if asEmb {
				A, B = random(s.R*N), random(K*s.R)
				shA, shB = []int{s.R, N}, []int{K, s.R}
				pa, pb = ".lora_embedding_A", ".lora_embedding_B"
			}
			put(weights[n], N, K, A, B, asEmb)
			saved := []string{k}
			if s.Aliases && strings.Contains(k, ".shared_transformer.") {
				saved = append(saved, sharedAliases(k, cfg.HybridIDs, cfg.MemBlocks)...)
			}
			for _, name := range saved {
				ad["base_model.model."+name+pa] = stTensor{shA, A}
				ad["base_model.model."+name+pb] = stTensor{shB, B}
			}
			modules = append(modules, k)
		}
	}
	if len(modules) == 0 {
		t.Fatalf("targets %v take no matrix of %s", s.Targets, dir)
	}
	conf := map[string]any{"peft_type": "LORA", "r": s.R, "lora_alpha": s.Alpha, "use_rslora": s.RSLoRA,
		"target_modules": s.Targets, "bias": "none", "fan_in_fan_out": false, "use_dora": false}
	if s.Layers != nil {
		conf["layers_to_transform"] = s.Layers
		conf["layers_pattern"] = "layers"
	}
	cj, _ := json.Marshal(conf)
	adapter = fstest.MapFS{
		model.AdapterConfigFile:  {Data: cj},
		model.AdapterWeightsFile: {Data: writeSafetensors(ad)},
	}
	base := map[string]stTensor{}
	for n, w := range weights {
		v := make([]float32, len(w))
		for i, x := range w {
			v[i] = float32(x)
		}
		base[n] = stTensor{shapes[n], v}
	}
	merged = fstest.MapFS{"model.safetensors": {Data: writeSafetensors(base)}}
	for _, f := range []string{"config.json", "generation_config.json"} {
		if data, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			merged[f] = &fstest.MapFile{Data: data}
		}
	}
	return adapter, merged, modules
}

// sharedAliases are the names of Zamba2 shared block module key under the
// other hybrid layers using the same block.
func sharedAliases(key string, ids []int, mem int) []string {
	m := regexp.MustCompile(`^model\.layers\.(\d+)\.`).FindStringSubmatch(key)
	if m == nil || mem == 0 {
		return nil
	}
	first, _ := strconv.Atoi(m[1])
	k0 := slices.Index(ids, first)
	var out []string
	for k, l := range ids {
		if k != k0 && k%mem == k0%mem {
			out = append(out, fmt.Sprintf("model.layers.%d.%s", l, key[len(m[0]):]))
		}
	}
	return out
}

type stTensor struct {
	shape []int
	v     []float32
}

// writeSafetensors lays out F32 tensors as a safetensors file.
func writeSafetensors(ts map[string]stTensor) []byte {
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	slices.Sort(names)
	header := map[string]any{}
	var body []byte
	for _, n := range names {
		raw := Encode(ts[n].v, loader.F32)
		header[n] = map[string]any{"dtype": "F32", "shape": ts[n].shape, "data_offsets": []int{len(body), len(body) + len(raw)}}
		body = append(body, raw...)
	}
	h, _ := json.Marshal(header)
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	return append(append(out, h...), body...)
}

// HybridLoRACase is one hybrid fixture with an adapter on a mix of its
// module kinds.
type HybridLoRACase struct {
	Family string
	Spec   LoRASpec
}

// HybridLoRACases adapt every kind of matrix each family has: the Mamba
// mixers, attention, the MLPs (Granite's shared MLP, Zamba2's shared
// block, its per-use adapters and linear), the embedding and the head
// (tied for Granite and Zamba2); Falcon-H1's in_proj runs under its mup
// multipliers, Zamba2's shared tensors come as PEFT saves them, under
// every name.
var HybridLoRACases = []HybridLoRACase{
	{"bamba", LoRASpec{Targets: []string{"in_proj", "out_proj", "q_proj", "o_proj", "gate_proj", "down_proj", "embed_tokens", "lm_head"},
		R: 4, Alpha: 8, Seed: 1}},
	{"bamba", LoRASpec{Targets: []string{"in_proj", "v_proj", "up_proj"}, Layers: []int{1, 2}, R: 3, Alpha: 5, RSLoRA: true, Seed: 2}},
	{"falcon-h1", LoRASpec{Targets: []string{"in_proj", "out_proj", "k_proj", "v_proj", "up_proj", "down_proj", "embed_tokens", "lm_head"},
		R: 4, Alpha: 8, Seed: 3}},
	{"granitemoehybrid", LoRASpec{Targets: []string{"in_proj", "q_proj", "o_proj", "shared_mlp.input_linear", "shared_mlp.output_linear", "lm_head"},
		R: 4, Alpha: 8, Seed: 4}},
	{"zamba2", LoRASpec{Targets: []string{"in_proj", "out_proj", "q_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj", "linear",
		"linear_k_adapter_list.1.0", "gate_up_proj_adapter_list.0.1", "embed_tokens"}, R: 4, Alpha: 8, Seed: 5, Aliases: true}},
}

func (c HybridLoRACase) name() string { return fmt.Sprintf("%s-%d", c.Family, c.Spec.Seed) }

// RunHybridLoRA checks adapters on the hybrid fixtures on the backends
// newBackend makes: merged at load against the reference merge of
// RandomLoRAFor on ref's backend (the CPU), kept apart against merged,
// and a batch whose rows run under two adapters and none against each
// row alone.
func RunHybridLoRA(t *testing.T, newBackend, ref func(t *testing.T) model.Backend) {
	cases := HybridLoRACases
	prompt := []int32{3, 77, 140, 9, 201, 45, 300, 12, 88, 460, 7}
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			dir := filepath.Join(Root(), "fixtures", "hybrid-"+c.Family)
			afs, mfs, mods := RandomLoRAFor(t, dir, c.Spec)
			t.Logf("adapted: %v", mods)
			ad, err := model.OpenAdapter(c.name(), afs)
			if err != nil {
				t.Fatal(err)
			}
			rb, b := ref(t), newBackend(t)
			defer rb.Close()
			defer b.Close()
			want := hyLogits(t, hyLoad(t, mfs, rb, model.LoadOptions{}), "", prompt)
			plain := hyLoad(t, os.DirFS(dir), b, model.LoadOptions{})
			base := hyLogits(t, plain, "", prompt)
			scale := max(1, maxAbs32(want))
			if d := maxDiff32(base, want); d < 0.05*scale {
				t.Fatalf("the adapter moves the logits by only %.3g (of %.3g): the checks below would prove little", d, scale)
			}
			merged := hyLoad(t, os.DirFS(dir), b, model.LoadOptions{Adapters: []*model.Adapter{ad}})
			got := hyLogits(t, merged, "", prompt)
			d := maxDiff32(got, want)
			t.Logf("merged vs the reference merge: max |Δlogit| %.3g (logits up to %.3g)", d, scale)
			if d > 1e-4*scale {
				t.Errorf("merged vs the reference merge: max |Δlogit| %.3g > 1e-4 × %.3g", d, scale)
			}
			if err := plain.AttachAdapter("a", ad); err != nil {
				t.Fatal(err)
			}
			apart := hyLogits(t, plain, "a", prompt)
			d = maxDiff32(apart, got)
			t.Logf("attached vs merged: max |Δlogit| %.3g", d)
			if d > 1e-4*scale {
				t.Errorf("attached vs merged: max |Δlogit| %.3g > 1e-4 × %.3g", d, scale)
			}
			if d := maxDiff32(hyLogits(t, plain, "", prompt), base); d > 1e-4*scale {
				t.Errorf("with no adapter selected, logits differ from the plain base by %.3g", d)
			}
			// A second adapter, and a batch of rows under a, b and none.
			spec := c.Spec
			spec.Seed += 100
			afs2, _, _ := RandomLoRAFor(t, dir, spec)
			ad2, err := model.OpenAdapter("b", afs2)
			if err != nil {
				t.Fatal(err)
			}
			if err := plain.AttachAdapter("b", ad2); err != nil {
				t.Fatal(err)
			}
			hyBatch(t, plain, []string{"a", "", "b", "a"}, prompt)
		})
	}
}

func hyLoad(t *testing.T, fsys fs.FS, b model.Backend, o model.LoadOptions) *model.Model {
	t.Helper()
	m, err := model.Load(fsys, b, o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func hyLogits(t *testing.T, m *model.Model, adapter string, ids []int32) []float32 {
	t.Helper()
	return loraLogits(t, m, adapter, ids)
}

// hyBatch runs one batch whose rows run under the adapters rows names
// (each its own rotation of ids) and checks each row against it alone.
func hyBatch(t *testing.T, m *model.Model, rows []string, ids []int32) {
	t.Helper()
	L := len(ids)
	st := m.NewState(len(rows))
	defer st.Close()
	batch := make([]int32, 0, len(rows)*L)
	for r, n := range rows {
		if err := st.UseAdapter(r, n); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, append(slices.Clone(ids[r:]), ids[:r]...)...)
	}
	all, err := st.Logits(batch, nil)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	for r, n := range rows {
		alone := loraLogits(t, m, n, batch[r*L:(r+1)*L])
		if d := maxDiff32(all[r*L*V:(r+1)*L*V], alone); d > 1e-4*max(1, maxAbs32(alone)) {
			t.Errorf("row %d (adapter %q): batched vs alone max |Δlogit| %.3g", r, n, d)
		}
	}
}

// RunHybridLoRAScheduler runs greedy requests under the adapters attached
// to m (and none) at once through a Scheduler: each must get the ids it
// gets alone, and an adapter must change them.
func RunHybridLoRAScheduler(t *testing.T, m *model.Model, names []string) {
	prompt := []int{5, 17, 101, 33, 8, 250, 40}
	o := func(n string) model.Options { return model.Options{Adapter: n, MaxNewTokens: 10, StopIDs: []int{}} }
	want := map[string][]int{}
	for _, n := range names {
		res, err := m.Generate(context.Background(), prompt, o(n))
		if err != nil {
			t.Fatal(err)
		}
		want[n] = res.IDs
	}
	for _, n := range names {
		if n != "" && slices.Equal(want[n], want[""]) {
			t.Fatalf("adapter %q does not change the greedy ids; the test would prove nothing", n)
		}
	}
	s, err := model.NewScheduler(m, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make([][]int, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			res, err := s.Generate(context.Background(), prompt, o(n))
			got[i], errs[i] = res.IDs, err
		})
	}
	wg.Wait()
	for i, n := range names {
		if errs[i] != nil {
			t.Errorf("request %d (adapter %q): %v", i, n, errs[i])
		} else if !slices.Equal(got[i], want[n]) {
			t.Errorf("request %d (adapter %q): ids\n got %v\nwant %v (alone)", i, n, got[i], want[n])
		}
	}
}
