package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/mamba2web/mamba2/loader"
)

// PEFT adapter folder files.
const (
	AdapterConfigFile  = "adapter_config.json"
	AdapterWeightsFile = "adapter_model.safetensors"
	// adapterPickleFile is PEFT's older torch.save format: a pickle, which
	// for an adapter (unlike a base checkpoint) we have no reason to read.
	adapterPickleFile = "adapter_model.bin"
	// peftPrefix starts every key PEFT saves: the PeftModel's base_model
	// (LoraModel) and its model (the Mamba2ForCausalLM).
	peftPrefix = "base_model.model."
)

// Adapter is a PEFT LoRA adapter (adapter_config.json and
// adapter_model.safetensors), read by OpenAdapter and merged into the base
// weights while they stream to the backend (LoadOptions.Adapters):
//
//	linear (in_proj, out_proj, lm_head;  W[n, k] += scale · Σ_r B[n, r] · A[r, k]
//	  a hybrid's every nn.Linear)
//	embedding                            E[v, d] += scale · Σ_r B[d, r] · A[r, v]
//	scale = lora_alpha / r  (lora_alpha / √r with use_rslora)
//
// exactly PEFT's merge_and_unload. Merging at load, rather than keeping
// B·A apart and adding x·Aᵀ·Bᵀ at every matmul, costs nothing per token;
// the price is that one loaded model carries one fixed set of adapters.
// Model.AttachAdapter keeps an adapter apart instead (lora.go), for
// adapters switched per request and over quantized weights.
type Adapter struct {
	Name string // where it came from (a folder or URL), for errors and reports
	cfg  adapterConfig
	ck   *loader.Checkpoint
	mods map[string]*loraModule // by module key, e.g. backbone.layers.0.mixer.in_proj
}

// loraModule is the pair of tensors an adapter holds for one module.
type loraModule struct {
	key       string
	embedding bool // lora_embedding_A/B (an nn.Embedding) rather than lora_A/B.weight
	a, b      loader.Info
	hasA      bool
	hasB      bool
	r         int     // in plan's copies: the rank the config gives this module
	scale     float64 // in plan's copies
}

// adapterConfig is what adapter_config.json says that the merge needs.
type adapterConfig struct {
	PeftType          string          `json:"peft_type"`
	R                 int             `json:"r"`
	Alpha             float64         `json:"lora_alpha"`
	RSLoRA            bool            `json:"use_rslora"`
	Targets           json.RawMessage `json:"target_modules"`
	Exclude           json.RawMessage `json:"exclude_modules"`
	LayersToTransform json.RawMessage `json:"layers_to_transform"`
	LayersPattern     json.RawMessage `json:"layers_pattern"`
	FanInFanOut       bool            `json:"fan_in_fan_out"`
	DoRA              bool            `json:"use_dora"`
	Bias              string          `json:"bias"`

	targets     []string       // target_modules as a list, or
	targetRE    *regexp.Regexp // as a regular expression (a JSON string)
	allLinear   bool           // "all-linear"
	excludes    []string
	excludeRE   *regexp.Regexp
	layers      []int // layers_to_transform; nil means every layer
	rankPattern []pattern[int]
	alphaPat    []pattern[float64]
}

// pattern is one entry of rank_pattern or alpha_pattern, in file order.
type pattern[T any] struct {
	key string
	re  *regexp.Regexp
	v   T
}

// unsupportedFields are adapter_config.json settings that change what a
// LoRA computes beyond W += scale·B·A (or add weights besides A and B): an
// adapter that sets one is refused, since merging it by that rule alone
// would silently give another model than PEFT does. Settings that only
// shape training or initialisation (dropout, init_lora_weights, loftq,
// eva, corda, lora_ga) do not matter to a merge and are ignored.
var unsupportedFields = map[string]string{
	"modules_to_save":         "it replaces whole modules with trained copies",
	"lora_bias":               "it trains a bias for lora_B",
	"use_qalora":              "QA-LoRA pools the input before A",
	"trainable_token_indices": "it trains embedding rows outside LoRA",
	"layer_replication":       "it duplicates layers",
	"target_parameters":       "it adapts parameters rather than modules",
	"alora_invocation_tokens": "activated LoRA applies only after its invocation tokens, which a merge cannot express",
	"use_bdlora":              "block-diagonal LoRA",
	"arrow_config":            "Arrow routes among several LoRAs per token",
	"monteclora_config":       "MonteCLoRA samples its adapter",
	"kasa_config":             "KaSA changes the base weights' singular values",
	"velora_config":           "VeLoRA",
}

// OpenAdapter reads a PEFT LoRA adapter folder: adapter_config.json (every
// setting checked, anything but a plain LoRA refused with the reason) and
// the header of adapter_model.safetensors (the tensor bytes are read when
// they are merged). name says where the folder is, for errors.
func OpenAdapter(name string, fsys fs.FS) (*Adapter, error) {
	a := &Adapter{Name: name, mods: map[string]*loraModule{}}
	data, err := loader.ReadSideFile(fsys, AdapterConfigFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound{fmt.Sprintf("adapter %s: no %s (a PEFT adapter folder has %s and %s)", name, AdapterConfigFile, AdapterConfigFile, AdapterWeightsFile)}
	}
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", name, err)
	}
	if a.cfg, err = parseAdapterConfig(data); err != nil {
		return nil, fmt.Errorf("adapter %s: %s: %w", name, AdapterConfigFile, err)
	}
	if _, err := fs.Stat(fsys, AdapterWeightsFile); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("adapter %s: %w", name, err)
		}
		if _, e := fs.Stat(fsys, adapterPickleFile); e == nil {
			return nil, fmt.Errorf("adapter %s: only %s, a pickle, which is not read for adapters: save it as safetensors (PEFT's save_pretrained does by default; or load it in Python and save_pretrained(..., safe_serialization=True))", name, adapterPickleFile)
		}
		return nil, notFound{fmt.Sprintf("adapter %s: no %s", name, AdapterWeightsFile)}
	}
	if a.ck, err = loader.OpenFiles(fsys, AdapterWeightsFile); err != nil {
		return nil, fmt.Errorf("adapter %s: %w", name, err)
	}
	for _, n := range a.ck.Names() {
		if err := a.addTensor(n); err != nil {
			return nil, fmt.Errorf("adapter %s: %w", name, err)
		}
	}
	if len(a.mods) == 0 {
		return nil, fmt.Errorf("adapter %s: %s holds no LoRA tensors", name, AdapterWeightsFile)
	}
	return a, nil
}

// notFound is a missing adapter file: its message says which, and it
// matches fs.ErrNotExist, so callers (the JS API's error codes) can tell a
// wrong folder from a broken adapter.
type notFound struct{ msg string }

func (e notFound) Error() string { return e.msg }
func (e notFound) Unwrap() error { return fs.ErrNotExist }

// addTensor files one tensor of adapter_model.safetensors under its module.
func (a *Adapter) addTensor(name string) error {
	in, _ := a.ck.Info(name)
	key := strings.TrimPrefix(name, peftPrefix)
	var part string
	for _, p := range []string{".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B"} {
		if strings.HasSuffix(key, p) {
			part, key = p, strings.TrimSuffix(key, p)
			break
		}
	}
	switch {
	case part == "" && strings.HasSuffix(key, ".lora_magnitude_vector"):
		return fmt.Errorf("tensor %s is a DoRA magnitude, and DoRA is not supported", name)
	case part == "":
		return fmt.Errorf("tensor %s is not a LoRA tensor (want MODULE.lora_A.weight, .lora_B.weight, .lora_embedding_A or .lora_embedding_B)", name)
	}
	switch in.DType {
	case loader.F64, loader.F32, loader.F16, loader.BF16:
	default:
		return fmt.Errorf("tensor %s is %s; LoRA tensors must be F64, F32, F16 or BF16", name, in.DType)
	}
	if len(in.Shape) != 2 {
		return fmt.Errorf("tensor %s has shape %v; LoRA tensors are matrices", name, in.Shape)
	}
	m := a.mods[key]
	if m == nil {
		m = &loraModule{key: key}
		a.mods[key] = m
	}
	emb := strings.Contains(part, "embedding")
	if (m.hasA || m.hasB) && m.embedding != emb {
		return fmt.Errorf("module %s has both lora_A/B and lora_embedding_A/B tensors", key)
	}
	m.embedding = emb
	if strings.Contains(part, "_A") {
		m.a, m.hasA = in, true
	} else {
		m.b, m.hasB = in, true
	}
	return nil
}

// parseAdapterConfig reads and checks adapter_config.json.
func parseAdapterConfig(data []byte) (adapterConfig, error) {
	var c adapterConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return c, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return c, err
	}
	if c.PeftType != "LORA" {
		return c, fmt.Errorf("peft_type is %q; only LORA adapters are supported", c.PeftType)
	}
	if c.DoRA {
		return c, errors.New("use_dora is true: DoRA rescales each merged column by a learned magnitude, which is not supported (merge it in Python with merge_and_unload and load the merged model)")
	}
	if c.Bias != "" && c.Bias != "none" {
		return c, fmt.Errorf("bias is %q: adapters that train biases are not supported (want \"none\")", c.Bias)
	}
	if c.FanInFanOut {
		return c, errors.New("fan_in_fan_out is true, which is for GPT-2's Conv1D layers; these models' projections are nn.Linear (want false)")
	}
	keys := make([]string, 0, len(unsupportedFields))
	for k := range unsupportedFields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v, ok := raw[k]; ok && set(v) {
			return c, fmt.Errorf("%s is set (%s), which is not supported: %s", k, bytes.TrimSpace(v), unsupportedFields[k])
		}
	}
	if _, ok := raw["r"]; !ok {
		c.R = 8 // PEFT's default
	}
	if c.R <= 0 {
		return c, fmt.Errorf("r is %d; want a positive rank", c.R)
	}
	if math.IsNaN(c.Alpha) || math.IsInf(c.Alpha, 0) {
		return c, errors.New("lora_alpha is not a finite number")
	}
	if _, ok := raw["lora_alpha"]; !ok {
		c.Alpha = 8 // PEFT's default
	}
	var err error
	if c.targets, c.targetRE, c.allLinear, err = parseModuleList("target_modules", c.Targets); err != nil {
		return c, err
	}
	if c.targets == nil && c.targetRE == nil && !c.allLinear {
		return c, errors.New("target_modules is missing or empty")
	}
	var all bool
	if c.excludes, c.excludeRE, all, err = parseModuleList("exclude_modules", c.Exclude); err != nil {
		return c, err
	}
	if all {
		return c, errors.New(`exclude_modules is "all-linear", which excludes every module`)
	}
	if c.layers, err = parseLayers(c.LayersToTransform); err != nil {
		return c, err
	}
	if c.layers != nil && set(c.LayersPattern) { // PEFT reads it only with layers_to_transform
		var s string
		var l []string
		if json.Unmarshal(c.LayersPattern, &s) == nil {
			l = []string{s}
		} else if err := json.Unmarshal(c.LayersPattern, &l); err != nil {
			return c, fmt.Errorf("layers_pattern: %v", err)
		}
		if !slices.Equal(l, []string{"layers"}) {
			return c, fmt.Errorf("layers_pattern is %s; Mamba-2's blocks are backbone.layers, the hybrids' model.layers (want \"layers\" or null)", bytes.TrimSpace(c.LayersPattern))
		}
	}
	if c.rankPattern, err = parsePatterns[int]("rank_pattern", raw["rank_pattern"]); err != nil {
		return c, err
	}
	if c.alphaPat, err = parsePatterns[float64]("alpha_pattern", raw["alpha_pattern"]); err != nil {
		return c, err
	}
	return c, nil
}

// set reports whether a JSON value is other than null, false, 0, "", [] or {}.
func set(v json.RawMessage) bool {
	switch s := string(bytes.TrimSpace(v)); s {
	case "", "null", "false", "0", `""`, "[]", "{}":
		return false
	}
	return true
}

// parseModuleList reads target_modules or exclude_modules as PEFT does: a
// list of names, each matching a module whose key is the name or ends in
// "." + name; a string, a regular expression that must match a whole key;
// or "all-linear".
func parseModuleList(field string, v json.RawMessage) ([]string, *regexp.Regexp, bool, error) {
	if !set(v) {
		return nil, nil, false, nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		if s == "all-linear" {
			return nil, nil, true, nil
		}
		re, err := regexp.Compile(`^(?:` + s + `)$`)
		if err != nil {
			return nil, nil, false, fmt.Errorf("%s %q is not a regular expression Go reads: %v", field, s, err)
		}
		return nil, re, false, nil
	}
	var l []string
	if err := json.Unmarshal(v, &l); err != nil {
		return nil, nil, false, fmt.Errorf("%s must be a list of names or a regular expression: %v", field, err)
	}
	return l, nil, false, nil
}

// parseLayers reads layers_to_transform: a layer index or a list of them.
func parseLayers(v json.RawMessage) ([]int, error) {
	if t := string(bytes.TrimSpace(v)); t == "" || t == "null" { // 0 is layer 0
		return nil, nil
	}
	var one int
	if json.Unmarshal(v, &one) == nil {
		return []int{one}, nil
	}
	var l []int
	if err := json.Unmarshal(v, &l); err != nil {
		return nil, fmt.Errorf("layers_to_transform must be a layer index or a list of them: %v", err)
	}
	return l, nil
}

// parsePatterns reads rank_pattern or alpha_pattern in file order (the
// first matching entry wins, as in PEFT's get_pattern_key): each key is a
// regular expression that must match the end of a module key after a dot,
// or the whole key.
func parsePatterns[T int | float64](field string, v json.RawMessage) ([]pattern[T], error) {
	if !set(v) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("%s must be an object", field)
	}
	var out []pattern[T]
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", field, err)
		}
		key := t.(string)
		var val T
		if err := dec.Decode(&val); err != nil {
			return nil, fmt.Errorf("%s[%q]: %v", field, key, err)
		}
		re, err := regexp.Compile(`^(?:.*\.)?(?:` + key + `)$`)
		if err != nil {
			return nil, fmt.Errorf("%s key %q is not a regular expression Go reads: %v", field, key, err)
		}
		out = append(out, pattern[T]{key: key, re: re, v: val})
	}
	return out, nil
}

func lookupPattern[T any](ps []pattern[T], key string, def T) T {
	for _, p := range ps {
		if p.re.MatchString(key) {
			return p.v
		}
	}
	return def
}

// peftModule is a module of the transformers model a checkpoint is (a
// Mamba2ForCausalLM, or a hybrid family's ForCausalLM) that a
// target_modules entry may name.
type peftModule struct {
	key       string
	layer     int  // -1 outside the blocks
	peftLayer bool // layer is worked out from key as PEFT does, per config (hybrids)
	linear    bool // an nn.Linear ("all-linear" takes these, lm_head aside)
	lora      bool // one this runtime merges LoRA into
	embedding bool // an nn.Embedding: lora_embedding_A/B
	binding   string
	// refusal, when set, says why LoRA on this module is refused although
	// it holds weights (the stacked expert matrices of a mixture of experts).
	refusal string
}

// modules lists the modules of the model c describes, so a target that
// names one LoRA is not merged into here (conv1d, a norm) is told from
// one that names nothing at all; aliases maps the other names of a module
// used in several places (Zamba2's shared blocks) to its PEFT name.
func (c Config) modules() (mods []peftModule, aliases map[string]string) {
	if c.Hybrid != nil {
		return c.hybridModules()
	}
	out := []peftModule{
		{key: "backbone", layer: -1},
		{key: "backbone.embeddings", layer: -1, lora: true, embedding: true, binding: "backbone.embeddings.weight"},
		{key: "backbone.layers", layer: -1},
		{key: "backbone.norm_f", layer: -1},
		{key: "lm_head", layer: -1, lora: true, binding: "lm_head.weight"},
	}
	for l := range c.Layers {
		p := fmt.Sprintf("backbone.layers.%d", l)
		out = append(out,
			peftModule{key: p, layer: l},
			peftModule{key: p + ".norm", layer: l},
			peftModule{key: p + ".mixer", layer: l},
			peftModule{key: p + ".mixer.act", layer: l},
			peftModule{key: p + ".mixer.conv1d", layer: l},
			peftModule{key: p + ".mixer.norm", layer: l},
			peftModule{key: p + ".mixer.in_proj", layer: l, linear: true, lora: true, binding: p + ".mixer.in_proj.weight"},
			peftModule{key: p + ".mixer.out_proj", layer: l, linear: true, lora: true, binding: p + ".mixer.out_proj.weight"},
		)
	}
	return out, nil
}

// loraRole reports whether a matrix of role r is an nn.Linear or
// nn.Embedding of transformers' model, which LoRA may adapt.
func loraRole(r Role) bool {
	switch r {
	case RoleEmbedding, RoleLMHead, RoleInProj, RoleOutProj, RoleAttention, RoleMLP, RoleAdapter, RoleRouter:
		return true
	}
	return false
}

// hybridModules derives a hybrid's modules from its bindings (blocks.go),
// so no module name is written twice: a tensor's name less its last part
// (".weight", ".dt_bias") is the module holding it, and every prefix of
// that at a dot is a module too. A binding of a matrix LoRA adapts names a
// module it adapts; its first name is the PEFT name (PEFT walks
// named_modules, which lists a module used in several places once, under
// its first name), and its other names, of a module of the same kind, are
// aliases under which PEFT's save_pretrained stores copies of its tensors.
func (c Config) hybridModules() ([]peftModule, map[string]string) {
	var out []peftModule
	at := map[string]int{}
	aliases := map[string]string{}
	add := func(m peftModule) {
		m.peftLayer, m.layer = true, peftLayerIndex(m.key, false)
		if i, ok := at[m.key]; ok {
			if m.lora || m.refusal != "" {
				out[i] = m
			}
			return
		}
		at[m.key] = len(out)
		out = append(out, m)
	}
	module := func(name string) string { return name[:max(0, strings.LastIndexByte(name, '.'))] }
	last := func(key string) string { return key[strings.LastIndexByte(key, '.')+1:] }
	for _, bd := range c.hybridBindings(&Weights{}) {
		name := bd.names[0]
		key := module(name)
		for i := range len(key) {
			if key[i] == '.' {
				add(peftModule{key: key[:i]})
			}
		}
		switch {
		case loraRole(bd.role) && len(bd.shape) == 2 && strings.HasSuffix(name, ".weight"):
			emb := bd.role == RoleEmbedding
			add(peftModule{key: key, lora: true, embedding: emb, linear: !emb && bd.role != RoleLMHead, binding: name})
			for _, n := range bd.names[1:] {
				if k := module(n); k != key && last(k) == last(key) {
					aliases[k] = key
				}
			}
		case bd.role == RoleExpert:
			add(peftModule{key: key, refusal: fmt.Sprintf("it is a stack of the %d experts' matrices (%v), not an nn.Linear, and LoRA on experts is not supported", c.Hybrid.Experts, bd.shape)})
		default:
			add(peftModule{key: key})
		}
	}
	if c.TieEmbeddings { // no tensor of its own, but a module PEFT may target
		add(peftModule{key: "lm_head", lora: true, binding: "lm_head.weight"})
	}
	return out, aliases
}

// peftLayerIndex is the layer of a module key as PEFT's
// check_target_module_exists reads it for layers_to_transform: with
// layers_pattern "layers", the number after the last ".layers."; without,
// the number after the last ".NAME." that is followed by a dot (the greedy
// match of its regular expression). -1 when there is none.
func peftLayerIndex(key string, patterned bool) int {
	re := peftLayerRE
	if patterned {
		re = peftLayersRE
	}
	m := re.FindStringSubmatch(key)
	if m == nil {
		return -1
	}
	var n int
	fmt.Sscan(m[1], &n)
	return n
}

var (
	peftLayerRE  = regexp.MustCompile(`^.*\.[^.]*\.(\d+)\.`)
	peftLayersRE = regexp.MustCompile(`^.*\.layers\.(\d+)\.`)
)

func matchName(key, name string) bool { return key == name || strings.HasSuffix(key, "."+name) }

// targeted reports whether the config adapts module m (PEFT's
// check_target_module_exists, with exclude_modules and layers_to_transform).
func (c *adapterConfig) targeted(m peftModule) bool {
	hit := false
	switch {
	case c.allLinear:
		hit = m.linear
	case c.targetRE != nil:
		hit = c.targetRE.MatchString(m.key)
	default:
		hit = slices.ContainsFunc(c.targets, func(t string) bool { return matchName(m.key, t) })
	}
	if !hit {
		return false
	}
	if c.excludeRE != nil && c.excludeRE.MatchString(m.key) ||
		slices.ContainsFunc(c.excludes, func(t string) bool { return matchName(m.key, t) }) {
		return false
	}
	layer := m.layer
	if m.peftLayer {
		layer = peftLayerIndex(m.key, set(c.LayersPattern))
	}
	if c.layers != nil && (layer < 0 || !slices.Contains(c.layers, layer)) {
		return false
	}
	return true
}

// plan checks the adapter against the model c and binds each of its
// modules to a binding name (the base tensor it changes): every target
// names a module LoRA is merged into, every tensor belongs to a targeted
// module, each module has both A and B, and their shapes fit the base
// tensor and the rank the config gives the module. shapes maps binding
// names to the base tensors' shapes.
func (a *Adapter) plan(c Config, shapes map[string][]int) (map[string]*loraModule, error) {
	mods, aliases := c.modules()
	kinds := "in_proj, out_proj, embeddings and lm_head"
	model := "a Mamba-2 model"
	if c.Hybrid != nil {
		kinds = "every nn.Linear and the embedding, not the experts' stacked matrices"
		model = "this " + c.Hybrid.Family + " model"
	}
	for _, t := range a.cfg.targets {
		i := slices.IndexFunc(mods, func(m peftModule) bool { return matchName(m.key, t) })
		if i < 0 {
			return nil, fmt.Errorf("target_modules names %q, which is no module of %s (LoRA merges into %s)", t, model, kinds)
		}
	}
	targeted := map[string]peftModule{}
	byKey := map[string]peftModule{}
	for _, m := range mods {
		byKey[m.key] = m
		if !a.cfg.targeted(m) {
			continue
		}
		if m.refusal != "" {
			return nil, fmt.Errorf("target_modules takes %s, and LoRA on it is not supported: %s", m.key, m.refusal)
		}
		if !m.lora {
			return nil, fmt.Errorf("target_modules takes %s, and LoRA on it is not supported (only %s)", m.key, kinds)
		}
		targeted[m.key] = m
	}
	if len(targeted) == 0 {
		return nil, errors.New("target_modules takes no module of this model")
	}
	// A module used in several places (Zamba2's shared blocks) may have
	// its tensors under each of its names, copies PEFT saves since
	// safetensors holds no aliases: the PEFT name's are used, and the
	// copies must at least have their shapes.
	amods := map[string]*loraModule{}
	keys := make([]string, 0, len(a.mods))
	for k := range a.mods {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		lm, canon := a.mods[k], k
		if c, ok := aliases[k]; ok {
			canon = c
		}
		if prev, dup := amods[canon]; dup || (canon != k && a.mods[canon] != nil) {
			if !dup {
				prev = a.mods[canon]
			}
			if !sameShapes(prev, lm) {
				return nil, fmt.Errorf("module %s: its tensors' shapes differ from those saved under %s, another name of the same shared module", k, canon)
			}
			continue
		}
		amods[canon] = lm
	}
	keys = keys[:0]
	for k := range amods {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := map[string]*loraModule{}
	for _, k := range keys {
		lm := amods[k]
		m, ok := targeted[k]
		if !ok {
			if bm, ok := byKey[k]; ok && bm.refusal != "" {
				return nil, fmt.Errorf("tensors for module %s, and LoRA on it is not supported: %s", k, bm.refusal)
			}
			return nil, fmt.Errorf("tensors for module %s, which target_modules does not take (or the model has no such module)", k)
		}
		what := "lora_A.weight"
		if !lm.hasA || !lm.hasB {
			if lm.embedding {
				what = "lora_embedding_A"
			}
			if lm.hasA {
				what = strings.Replace(what, "A", "B", 1)
			}
			return nil, fmt.Errorf("module %s lacks its %s", k, what)
		}
		emb := m.embedding
		if lm.embedding != emb {
			if emb {
				return nil, fmt.Errorf("module %s is an embedding: its tensors are lora_embedding_A and lora_embedding_B, not lora_A/B.weight", k)
			}
			return nil, fmt.Errorf("module %s is linear: its tensors are lora_A.weight and lora_B.weight, not lora_embedding_A/B", k)
		}
		base, ok := shapes[m.binding]
		if !ok {
			return nil, fmt.Errorf("module %s: the model has no tensor %s", k, m.binding)
		}
		r := lookupPattern(a.cfg.rankPattern, k, a.cfg.R)
		alpha := lookupPattern(a.cfg.alphaPat, k, a.cfg.Alpha)
		if r <= 0 {
			return nil, fmt.Errorf("rank_pattern gives module %s rank %d", k, r)
		}
		N, K := base[0], base[1]
		wantA, wantB := []int{r, K}, []int{N, r}
		if emb { // E [V, D]: lora_embedding_A [r, V], lora_embedding_B [D, r]
			wantA, wantB = []int{r, N}, []int{K, r}
		}
		for _, p := range []struct {
			in   loader.Info
			want []int
		}{{lm.a, wantA}, {lm.b, wantB}} {
			if !slices.Equal(p.in.Shape, p.want) {
				return nil, fmt.Errorf("tensor %s has shape %v, but %s of the base model is %v and r is %d: want %v",
					p.in.Name, p.in.Shape, m.binding, base, r, p.want)
			}
		}
		// A copy: the Adapter stays read-only, so one may serve several
		// loads at once, of models with different patterns' matches.
		bound := *lm
		bound.key = k
		bound.r = r
		bound.scale = alpha / float64(r)
		if a.cfg.RSLoRA {
			bound.scale = alpha / math.Sqrt(float64(r))
		}
		out[m.binding] = &bound
	}
	// A targeted module with no tensors would load as the base module (PEFT
	// warns of missing keys and keeps B at zero): a truncated or mismatched
	// file, most likely, so it is refused.
	names := make([]string, 0, len(targeted))
	for k := range targeted {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if _, ok := amods[k]; !ok {
			return nil, fmt.Errorf("target_modules takes %s, but %s has no tensors for it", k, AdapterWeightsFile)
		}
	}
	return out, nil
}

// sameShapes reports whether two modules' tensors have the same shapes.
func sameShapes(x, y *loraModule) bool {
	return x.embedding == y.embedding && x.hasA == y.hasA && x.hasB == y.hasB &&
		slices.Equal(x.a.Shape, y.a.Shape) && slices.Equal(x.b.Shape, y.b.Shape)
}

// adapterPart is one adapter's module to merge into one base tensor.
type adapterPart struct {
	ad *Adapter
	m  *loraModule
}

// planAdapters checks every adapter against the bound tensors and returns,
// per binding index, the adapter modules to merge into it, in the order
// the adapters are given. With a tied head, lm_head's LoRA goes into the
// embedding, which is the head: PEFT's merge changes the one shared
// matrix too. A tensor stored quantized is refused: its float values are
// gone, and requantizing dequantized-plus-delta values would compound the
// error; merge into the float checkpoint and quantize at load instead.
func planAdapters(c Config, bs []binding, srcs []source, ads []*Adapter) (map[int][]adapterPart, error) {
	if len(ads) == 0 {
		return nil, nil
	}
	shapes := map[string][]int{}
	index := map[string]int{}
	for i, bd := range bs {
		if loraRole(bd.role) && len(bd.shape) == 2 {
			shapes[bd.names[0]] = bd.shape
			index[bd.names[0]] = i
		}
	}
	return groupAdapters(c, shapes, index, ads, func(ad *Adapter, i int) error {
		if s := srcs[i]; s.format.Quantized() {
			return fmt.Errorf("adapter %s: %s is stored as %s%s, and adapters merge into float weights only: load the float checkpoint with the adapter (and --quantize to quantize after the merge), or attach it kept apart (docs/adapters.md)",
				ad.Name, s.data.Name, s.format, groupNote(s))
		}
		return nil
	})
}

// CheckAdapters is LoadWeights' check of the adapters alone, for a load
// that plans (Plan) before it opens a backend: each fits the model, and
// every tensor it changes is stored as floats.
func CheckAdapters(c Config, ck *loader.Checkpoint, ads []*Adapter) error {
	bs, srcs, err := c.bind(ck, &Weights{})
	if err != nil {
		return err
	}
	_, err = planAdapters(c, bs, srcs, ads)
	return err
}

// lowRank is the sum of several adapters' updates of one [N, K] matrix as
// one product: delta = B · A with B [N, R] (each adapter's scale folded
// in) and A [R, K], R the sum of the ranks. An embedding's update (Bᴱ·Aᴱ)ᵀ
// is put in the same form: B = Aᴱᵀ, A = Bᴱᵀ.
type lowRank struct {
	N, K, R int
	b, a    []float64
}

// loadLowRank reads the tensors of parts, all for one [N, K] base tensor.
func loadLowRank(N, K int, parts []adapterPart) (*lowRank, error) {
	d := &lowRank{N: N, K: K}
	for _, p := range parts {
		d.R += p.m.r
	}
	d.b = make([]float64, N*d.R)
	d.a = make([]float64, d.R*K)
	j0 := 0
	for _, p := range parts {
		A, err := readFloat64s(p.ad, p.m.a)
		if err != nil {
			return nil, err
		}
		B, err := readFloat64s(p.ad, p.m.b)
		if err != nil {
			return nil, err
		}
		r, s := p.m.r, p.m.scale
		for j := range r {
			for n := range N {
				if p.m.embedding { // Aᴱ [r, V=N]
					d.b[n*d.R+j0+j] = s * A[j*N+n]
				} else { // B [N, r]
					d.b[n*d.R+j0+j] = s * B[n*r+j]
				}
			}
			for k := range K {
				if p.m.embedding { // Bᴱ [D=K, r]
					d.a[(j0+j)*K+k] = B[k*r+j]
				} else { // A [r, K]
					d.a[(j0+j)*K+k] = A[j*K+k]
				}
			}
		}
		j0 += r
	}
	return d, nil
}

// readFloat64s reads a whole adapter tensor as float64, refusing NaN and
// infinities as the base weights' load does.
func readFloat64s(ad *Adapter, in loader.Info) ([]float64, error) {
	out := make([]float64, 0, in.Elements())
	var f32 []float32
	err := ad.ck.Stream(in.Name, 0, func(_ int64, b []byte) error {
		if in.DType == loader.F64 {
			for i := 0; i+8 <= len(b); i += 8 {
				out = append(out, math.Float64frombits(binary.LittleEndian.Uint64(b[i:])))
			}
			return nil
		}
		n := len(b) / in.DType.Size()
		f32 = slices.Grow(f32[:0], n)[:n]
		loader.Decode(f32, in.DType, b)
		for _, v := range f32 {
			out = append(out, float64(v))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", ad.Name, err)
	}
	for i, v := range out {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("adapter %s: tensor %s (%s %v) holds %v at element %d: weights must be finite", ad.Name, in.Name, in.DType, in.Shape, v, i)
		}
	}
	return out, nil
}

// mergeSpec returns spec (a float matrix whose Data is in dtype dt) with
// d added as its Data streams: rows are gathered into blocks of about a
// mebibyte, each row decoded to float64, B[n]·A added, and encoded in
// dtype to (rounded to nearest even), so the matrix is never whole in
// memory. A load keeps the checkpoint's dtype (to = dt: the model keeps
// its size on the backend), except that what will be quantized is handed
// on as f32, so the merged values are rounded once, by the quantizer. The
// stream may be read more than once. A merged value that does not fit to
// (an f16 overflow) is an error naming the tensor.
func mergeSpec(spec WeightSpec, dt, to loader.DType, d *lowRank, who string) WeightSpec {
	src := spec.Data
	out := spec
	out.Format, _ = FloatFormat(to)
	out.Data = func(fn func(off int64, b []byte) error) error {
		es := dt.Size()
		rowIn := d.K * es
		rowOut := d.K * to.Size()
		block := max(1, (1<<20)/max(rowIn, 1))
		in := make([]byte, 0, block*rowIn)
		merged := make([]byte, block*rowOut)
		row0 := 0
		var off int64
		flush := func() error {
			rows := len(in) / rowIn
			if rows == 0 {
				return nil
			}
			if row0+rows > d.N {
				return fmt.Errorf("merging %s into %s: the stream holds more than %d rows", who, spec.Name, d.N)
			}
			n := rows * rowOut
			mergeRows(in[:rows*rowIn], merged[:n], dt, to, d, row0)
			if i := firstNonFinite(to, merged[:n]); i >= 0 {
				return fmt.Errorf("merging %s into %s (%s): element %d (row %d) leaves the range of %s: the adapter's update is too large for this dtype",
					who, spec.Name, dt, row0*d.K+i, row0+i/d.K, to)
			}
			if err := fn(off, merged[:n]); err != nil {
				return err
			}
			off += int64(n)
			row0 += rows
			in = in[:0]
			return nil
		}
		err := src(func(_ int64, b []byte) error {
			for len(b) > 0 {
				k := min(len(b), cap(in)-len(in))
				in = append(in, b[:k]...)
				b = b[k:]
				if len(in) == cap(in) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(in)%rowIn != 0 {
			return fmt.Errorf("merging %s into %s: the stream ended inside a row", who, spec.Name)
		}
		if err := flush(); err != nil {
			return err
		}
		if row0 != d.N {
			return fmt.Errorf("merging %s into %s: the stream held %d rows, want %d", who, spec.Name, row0, d.N)
		}
		return nil
	}
	return out
}

// mergeRows merges whole rows (from row row0 on) of in (dtype dt) into
// out (dtype to), across the cores: out[n] = encode(decode(in[n]) +
// Σ_j B[n, j]·A[j]), summed in float64 and rounded once.
func mergeRows(in, out []byte, dt, to loader.DType, d *lowRank, row0 int) {
	es := dt.Size()
	rowIn := d.K * es
	rowOut := d.K * to.Size()
	rows := len(in) / rowIn
	workers := min(runtime.GOMAXPROCS(0), rows)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*rows/workers, (w+1)*rows/workers
		wg.Go(func() {
			row := make([]float32, d.K)
			acc := make([]float64, d.K)
			for r := lo; r < hi; r++ {
				loader.Decode(row, dt, in[r*rowIn:(r+1)*rowIn])
				for k, v := range row {
					acc[k] = float64(v)
				}
				n := row0 + r
				for j, c := range d.b[n*d.R : (n+1)*d.R] {
					if c == 0 {
						continue
					}
					for k, a := range d.a[j*d.K : (j+1)*d.K] {
						acc[k] += c * a
					}
				}
				encodeRow(out[r*rowOut:(r+1)*rowOut], acc, to)
			}
		})
	}
	wg.Wait()
}

// encodeRow writes v in dtype dt, little-endian, rounded to nearest even
// (through float32, which is exact for f16 and bf16's range and step).
func encodeRow(dst []byte, v []float64, dt loader.DType) {
	for i, x := range v {
		f := float32(x)
		switch dt {
		case loader.F32:
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(f))
		case loader.F16:
			binary.LittleEndian.PutUint16(dst[2*i:], loader.Float32ToHalf(f))
		case loader.BF16:
			binary.LittleEndian.PutUint16(dst[2*i:], bf16(f))
		}
	}
}

// bf16 rounds to the nearest bfloat16, ties to even; NaN stays NaN.
func bf16(x float32) uint16 {
	b := math.Float32bits(x)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// Summary describes the adapter for reports (mamba2 --json, the JS
// info()): its name, and per module kind the rank and scale.
func (a *Adapter) Summary() AdapterInfo {
	info := AdapterInfo{Name: a.Name, R: a.cfg.R, Alpha: a.cfg.Alpha, RSLoRA: a.cfg.RSLoRA}
	seen := map[string]bool{}
	for k := range a.mods {
		// The last part of the name that is not an index: Zamba2's
		// per-use adapters are linear_q_adapter_list.K.0 and .K.1.
		parts := strings.Split(k, ".")
		t := parts[len(parts)-1]
		for i := len(parts) - 1; i >= 0; i-- {
			if _, err := strconv.Atoi(parts[i]); err != nil {
				t = parts[i]
				break
			}
		}
		if !seen[t] {
			seen[t] = true
			info.Targets = append(info.Targets, t)
		}
	}
	slices.Sort(info.Targets)
	return info
}

// AdapterInfo is a merged adapter as reports show it.
type AdapterInfo struct {
	Name    string   `json:"name"`
	R       int      `json:"r"`
	Alpha   float64  `json:"alpha"`
	RSLoRA  bool     `json:"rslora,omitempty"`
	Targets []string `json:"targets"`
}

// adapterNames names the adapters of parts for errors.
func adapterNames(parts []adapterPart) string {
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.ad.Name
	}
	return "adapter " + strings.Join(names, ", ")
}

// AdapterInfos summarises ads, in order (nil for none).
func AdapterInfos(ads []*Adapter) []AdapterInfo {
	var out []AdapterInfo
	for _, a := range ads {
		out = append(out, a.Summary())
	}
	return out
}

// MergePlan is LoadWeights' merge of adapters, for a writer of checkpoints
// (mamba2 convert --adapter): which checkpoint tensors the adapters change,
// and their bytes with the adapters merged.
type MergePlan struct {
	byName map[string]mergeTarget // by the tensor's name in the checkpoint
}

type mergeTarget struct {
	parts []adapterPart
	shape []int
}

// PlanMerge checks ads against the model (as CheckAdapters does) and plans
// their merge.
func PlanMerge(c Config, ck *loader.Checkpoint, ads []*Adapter) (*MergePlan, error) {
	bs, srcs, err := c.bind(ck, &Weights{})
	if err != nil {
		return nil, err
	}
	merges, err := planAdapters(c, bs, srcs, ads)
	if err != nil {
		return nil, err
	}
	p := &MergePlan{byName: map[string]mergeTarget{}}
	for i, parts := range merges {
		p.byName[srcs[i].data.Name] = mergeTarget{parts: parts, shape: bs[i].shape}
	}
	return p, nil
}

// Merges reports whether the adapters change the checkpoint tensor name.
func (p *MergePlan) Merges(name string) bool {
	if p == nil {
		return false
	}
	_, ok := p.byName[name]
	return ok
}

// Stream returns src, the bytes of the checkpoint tensor name in dtype dt,
// with the adapters merged and encoded in dtype to (mergeSpec). It is for
// the tensors Merges reports.
func (p *MergePlan) Stream(name string, dt, to loader.DType, src Stream) (Stream, error) {
	t, ok := p.byName[name]
	if !ok {
		return nil, fmt.Errorf("no adapter changes tensor %s", name)
	}
	d, err := loadLowRank(t.shape[0], t.shape[1], t.parts)
	if err != nil {
		return nil, err
	}
	return mergeSpec(WeightSpec{Name: name, Shape: t.shape, Data: src}, dt, to, d, adapterNames(t.parts)).Data, nil
}
