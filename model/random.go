package model

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/mamba2web/mamba2/loader"
)

// Shapes are the released Mamba-2 sizes (SPEC §1.2), for benchmarks and
// tests that need a real model's dimensions but not its weights.
var Shapes = map[string]Config{
	"130m":      releaseShape(768, 24, 1, 50288, true),
	"370m":      releaseShape(1024, 48, 1, 50288, true),
	"780m":      releaseShape(1536, 48, 1, 50288, true),
	"1.3b":      releaseShape(2048, 48, 1, 50288, true),
	"2.7b":      releaseShape(2560, 64, 1, 50288, true),
	"codestral": releaseShape(4096, 64, 8, 32768, false),
	// Hybrids (docs/architectures.md), from their released configs'
	// sizes (testdata/configs).
	"bamba-9b":            mustHybrid(`{"model_type": "bamba", "vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8, "attn_layer_indices": [9, 18, 27], "mamba_n_heads": 128, "mamba_d_head": 64, "mamba_d_state": 128, "mamba_n_groups": 1, "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 0}`),
	"falcon-h1-0.5b":      mustHybrid(`{"model_type": "falcon_h1", "vocab_size": 32784, "hidden_size": 1024, "num_hidden_layers": 36, "intermediate_size": 2048, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64, "mamba_d_ssm": 1536, "mamba_n_heads": 24, "mamba_d_head": 64, "mamba_d_state": 128, "mamba_n_groups": 1, "mamba_chunk_size": 128, "rope_theta": 1e11, "embedding_multiplier": 5.656854249492381, "lm_head_multiplier": 0.0390625, "key_multiplier": 0.39062499999999994, "attention_out_multiplier": 0.9375, "mlp_multipliers": [0.8838834764831844, 0.5859375], "ssm_multipliers": [0.3535533905932738, 0.25, 0.3535533905932738, 0.5, 0.3535533905932738], "ssm_in_multiplier": 1.25, "ssm_out_multiplier": 0.23570226039551587, "eos_token_id": 11}`),
	"falcon-h1-1.5b":      mustHybrid(`{"model_type": "falcon_h1", "vocab_size": 32784, "hidden_size": 2048, "num_hidden_layers": 24, "intermediate_size": 6144, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128, "mamba_d_ssm": 3072, "mamba_n_heads": 48, "mamba_d_head": 64, "mamba_d_state": 256, "mamba_n_groups": 1, "mamba_chunk_size": 128, "rope_theta": 1e11, "embedding_multiplier": 5.656854249492381, "lm_head_multiplier": 0.0390625, "key_multiplier": 0.390625, "attention_out_multiplier": 0.9375, "mlp_multipliers": [0.8838834764831844, 0.5859375], "ssm_multipliers": [0.3535533905932738, 0.25, 0.3535533905932738, 0.5, 0.3535533905932738], "ssm_in_multiplier": 1.25, "ssm_out_multiplier": 0.23570226039551587, "eos_token_id": 11}`),
	"granite-4.0-h-micro": mustHybrid(`{"model_type": "granitemoehybrid", "vocab_size": 100352, "hidden_size": 2048, "num_hidden_layers": 40, "intermediate_size": 8192, "shared_intermediate_size": 8192, "num_local_experts": 0, "num_experts_per_tok": 0, "num_attention_heads": 32, "num_key_value_heads": 8, "layer_types": ` + graniteLayers + `, "mamba_n_heads": 64, "mamba_d_head": 64, "mamba_d_state": 128, "mamba_n_groups": 1, "position_embedding_type": "nope", "embedding_multiplier": 12, "residual_multiplier": 0.22, "attention_multiplier": 0.015625, "logits_scaling": 8, "tie_word_embeddings": true, "bos_token_id": 100257, "eos_token_id": 100257, "pad_token_id": 100256}`),
	"granite-4.0-h-tiny":  mustHybrid(`{"model_type": "granitemoehybrid", "vocab_size": 100352, "hidden_size": 1536, "num_hidden_layers": 40, "intermediate_size": 512, "shared_intermediate_size": 1024, "num_local_experts": 64, "num_experts_per_tok": 6, "num_attention_heads": 12, "num_key_value_heads": 4, "layer_types": ` + graniteLayers + `, "mamba_n_heads": 48, "mamba_d_head": 64, "mamba_d_state": 128, "mamba_n_groups": 1, "position_embedding_type": "nope", "embedding_multiplier": 12, "residual_multiplier": 0.22, "attention_multiplier": 0.0078125, "logits_scaling": 6, "tie_word_embeddings": true, "bos_token_id": 100257, "eos_token_id": 100257, "pad_token_id": 100256}`),
	"zamba2-1.2b":         mustHybrid(`{"model_type": "zamba2", "vocab_size": 32000, "hidden_size": 2048, "num_hidden_layers": 38, "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 32, "layers_block_type": ` + zamba2Layers + `, "n_mamba_heads": 64, "mamba_headdim": 64, "mamba_d_state": 128, "mamba_ngroups": 1, "chunk_size": 256, "num_mem_blocks": 1, "adapter_rank": 128, "use_shared_attention_adapter": true, "use_mem_rope": true, "hidden_act": "gelu", "tie_word_embeddings": true}`),
}

// The block patterns of the hybrid shapes: attention every tenth layer
// from the sixth (Granite 4.0 H), a shared block every sixth (Zamba2-1.2B).
var (
	graniteLayers = blockPattern(40, "mamba", "attention", 5, 15, 25, 35)
	zamba2Layers  = blockPattern(38, "mamba", "hybrid", 5, 11, 17, 23, 29, 35)
)

func blockPattern(n int, base, other string, at ...int) string {
	out := make([]string, n)
	for i := range out {
		out[i] = base
	}
	for _, i := range at {
		out[i] = other
	}
	js, _ := json.Marshal(out)
	return string(js)
}

func mustHybrid(js string) Config {
	c, err := ParseConfig([]byte(js))
	if err != nil {
		panic("model: a built-in hybrid shape does not parse: " + err.Error())
	}
	return c
}

func releaseShape(d, layers, groups, vocab int, tied bool) Config {
	return Config{VocabSize: vocab, Hidden: d, Layers: layers, State: 128, Expand: 2,
		Heads: 2 * d / 64, HeadDim: 64, Groups: groups, ConvKernel: 4, ChunkSize: 256,
		ConvBias: true, Eps: 1e-5, TimeStepMax: math.Inf(1), TieEmbeddings: tied, EOS: 0}
}

// NewRandom builds a model of config c with seeded random weights of the
// kind training starts from (dt in [0.001, 0.1], A in [1, 16], D = 1, unit
// norms, small projections), stored as dtype. It needs no checkpoint.
func NewRandom(c Config, b Backend, dtype loader.DType, seed uint64) (*Model, error) {
	return NewRandomQuantized(c, b, dtype, seed, Quant{})
}

// NewRandomQuantized is NewRandom with the large products quantized as a
// load with LoadOptions.Quantize q would: the same model a checkpoint of
// NewRandom's weights gives when loaded with --quantize.
func NewRandomQuantized(c Config, b Backend, dtype loader.DType, seed uint64, q Quant) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := q.Check(); err != nil {
		return nil, err
	}
	if c.Hybrid != nil {
		if _, err := RequireHybrid(c, b); err != nil {
			return nil, err
		}
	}
	w := &Weights{}
	err := c.randomTensors(w, dtype, seed, func(spec WeightSpec, dst *Tensor) error {
		if q.On() && spec.Role.Quantizable() && len(spec.Shape) == 2 {
			spec = QuantizeSpec(spec, dtype, q)
		}
		t, err := b.Weight(spec)
		*dst = t
		return err
	})
	if err != nil {
		return nil, err
	}
	if c.TieEmbeddings {
		w.LMHead = w.Embed
	}
	if c.Hybrid != nil && c.Hybrid.SSMMul != nil {
		w.MupVector = mupVector(c, b)
	}
	return &Model{Config: c, Backend: b, Weights: w}, nil
}

// randomTensors hands each tensor of config c, in binding order, with its
// seeded random contents as a stream of dtype values, to fn. Each chunk of
// randomChunk elements of a tensor has its own generator, seeded by the
// seed, the tensor's place and the chunk's, so chunks are generated in
// parallel (a 7B shape's weights take seconds, not minutes) and every
// stream of the same tensor is the same.
func (c Config) randomTensors(w *Weights, dtype loader.DType, seed uint64, fn func(spec WeightSpec, dst *Tensor) error) error {
	for ti, bd := range c.bindings(w) {
		shape := bd.use
		if shape == nil {
			shape = bd.shape
		}
		n := 1
		for _, d := range shape {
			n *= d
		}
		name := bd.names[0]
		stream := seed<<20 ^ uint64(ti)
		format, _ := FloatFormat(dtype)
		spec := WeightSpec{Name: name, Role: bd.role, Format: format, Shape: shape,
			Data: func(fn func(off int64, b []byte) error) error {
				es := dtype.Size()
				chunks := (n + randomChunk - 1) / randomChunk
				workers := max(1, min(runtime.GOMAXPROCS(0), chunks))
				bufs := make([][]byte, workers)
				for c0 := 0; c0 < chunks; c0 += workers {
					var wg sync.WaitGroup
					for k := range min(workers, chunks-c0) {
						wg.Go(func() {
							ch := c0 + k
							gen := randomInit(name, shape, rand.New(rand.NewPCG(stream, uint64(ch))))
							buf := bufs[k][:0]
							for j := ch * randomChunk; j < min((ch+1)*randomChunk, n); j++ {
								buf = appendValue(buf, dtype, gen(j))
							}
							bufs[k] = buf
						})
					}
					wg.Wait()
					for k := range min(workers, chunks-c0) {
						if err := fn(int64((c0+k)*randomChunk*es), bufs[k]); err != nil {
							return err
						}
					}
				}
				return nil
			}}
		if err := fn(spec, bd.dst); err != nil {
			return err
		}
	}
	return nil
}

// randomChunk is the elements of a tensor one random generator makes.
const randomChunk = 1 << 16

// WriteRandom writes a checkpoint folder of config c into dir: config.json
// in transformers' format and one model.safetensors of dtype holding
// NewRandom's weights for seed (a model loaded from it is NewRandom's).
// Tests and benchmarks use it for models of any shape on disk.
func WriteRandom(dir string, c Config, dtype loader.DType, seed uint64) error {
	if err := c.Validate(); err != nil {
		return err
	}
	limit := []float64{c.TimeStepMin, c.TimeStepMax}
	if math.IsInf(c.TimeStepMax, 1) {
		limit = nil // JSON has no infinity: absent means (0, inf)
	}
	cfg := map[string]any{
		"model_type": "mamba2", "vocab_size": c.VocabSize, "hidden_size": c.Hidden,
		"num_hidden_layers": c.Layers, "state_size": c.State, "expand": c.Expand,
		"num_heads": c.Heads, "head_dim": c.HeadDim, "n_groups": c.Groups,
		"conv_kernel": c.ConvKernel, "chunk_size": c.ChunkSize, "use_bias": c.UseBias,
		"use_conv_bias": c.ConvBias, "layer_norm_epsilon": c.Eps,
		"tie_word_embeddings": c.TieEmbeddings, "bos_token_id": c.BOS,
		"eos_token_id": c.EOS, "pad_token_id": c.PAD, "rms_norm": true,
	}
	if limit != nil {
		cfg["time_step_limit"] = limit
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644); err != nil {
		return err
	}
	// The header first: every tensor's place, in the order they follow.
	type entry struct {
		DType   string   `json:"dtype"`
		Shape   []int    `json:"shape"`
		Offsets [2]int64 `json:"data_offsets"`
	}
	header := map[string]any{}
	var specs []WeightSpec
	var off int64
	err = c.randomTensors(&Weights{}, dtype, seed, func(spec WeightSpec, _ *Tensor) error {
		n := int64(dtype.Size())
		for _, d := range spec.Shape {
			n *= int64(d)
		}
		shape := spec.Shape
		if strings.HasSuffix(spec.Name, "conv1d.weight") {
			shape = []int{shape[0], 1, shape[1]} // the checkpoint's [C, 1, K]
		}
		header[spec.Name] = entry{DType: string(dtype), Shape: shape, Offsets: [2]int64{off, off + n}}
		off += n
		specs = append(specs, spec)
		return nil
	})
	if err != nil {
		return err
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	f, err := os.Create(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	binary.Write(bw, binary.LittleEndian, uint64(len(hj)))
	bw.Write(hj)
	for _, spec := range specs {
		if err := spec.Data(func(_ int64, b []byte) error { _, err := bw.Write(b); return err }); err != nil {
			f.Close()
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// randomInit returns the generator of element j of the named tensor.
func randomInit(name string, shape []int, rng *rand.Rand) func(j int) float32 {
	suffix := func(s string) bool { return len(name) >= len(s) && name[len(name)-len(s):] == s }
	switch {
	case suffix("norm.weight") || suffix("norm_f.weight") || suffix(".D"):
		return func(int) float32 { return 1 }
	case suffix("A_log"):
		return func(int) float32 { return float32(math.Log(1 + 15*rng.Float64())) }
	case suffix("dt_bias"):
		return func(int) float32 {
			dt := math.Exp(math.Log(0.001) + rng.Float64()*(math.Log(0.1)-math.Log(0.001)))
			return float32(dt + math.Log(-math.Expm1(-dt))) // softplus⁻¹(dt)
		}
	case suffix("bias"):
		return func(int) float32 { return float32(rng.NormFloat64() * 0.02) }
	}
	fanIn := shape[len(shape)-1]
	scale := 1 / math.Sqrt(float64(fanIn))
	if suffix("embeddings.weight") || suffix("embedding.weight") {
		scale = 0.5
	}
	return func(int) float32 { return float32(rng.NormFloat64() * scale) }
}

func appendValue(b []byte, dt loader.DType, v float32) []byte {
	switch dt {
	case loader.F16:
		return binary.LittleEndian.AppendUint16(b, loader.Float32ToHalf(v))
	case loader.BF16:
		return binary.LittleEndian.AppendUint16(b, uint16(math.Float32bits(v)>>16))
	}
	return binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
}
