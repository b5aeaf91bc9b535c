package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/mamba2web/mamba2/loader"
)

// Model is a loaded Mamba-2: its config and its weights on one backend. It is
// read-only during generation; the recurrent state lives in a State.
type Model struct {
	Config    Config
	Backend   Backend
	Weights   *Weights
	GatedNorm GatedNorm
	// Adapters are the LoRA adapters merged into Weights at load, in
	// order (for reports; the weights already hold them).
	Adapters []AdapterInfo
	// PrefillChunk bounds how many positions per sequence one forward call
	// processes, so activations stay bounded for long prompts. Zero picks
	// the most (up to 2048) that keep every activation within 128 MiB.
	PrefillChunk int

	// SubmissionBudget bounds the device time of one submission of a
	// prompt on a device backend (Pacer); 0 means SubmissionBudget, and a
	// negative value turns the timing off: pieces as long as memory allows.
	SubmissionBudget time.Duration

	pace pace    // piece sizes for a device backend (Pacer)
	lora loraSet // adapters attached apart from the weights (lora.go)
}

// LoadConfig reads and validates config.json from fsys.
func LoadConfig(fsys fs.FS) (Config, error) {
	data, err := loader.ReadSideFile(fsys, "config.json")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Config{}, fmt.Errorf("no config.json in the model folder")
		}
		return Config{}, err
	}
	c, err := ParseConfig(data)
	if err != nil {
		return c, err
	}
	// generation_config.json, when present, says which token ends a text;
	// transformers' generate follows it over config.json.
	gen, err := loader.ReadSideFile(fsys, "generation_config.json")
	if errors.Is(err, loader.ErrTooLarge) {
		return c, err
	}
	if err == nil {
		var g struct {
			EOS json.RawMessage `json:"eos_token_id"`
		}
		if err := json.Unmarshal(gen, &g); err != nil {
			return c, fmt.Errorf("generation_config.json: %v", err)
		}
		if c.EOS, err = parseEOS(g.EOS, c.EOS); err != nil {
			return c, fmt.Errorf("generation_config.json: %v", err)
		}
		if c.EOS < 0 || c.EOS >= c.VocabSize {
			return c, fmt.Errorf("generation_config.json: eos_token_id %d is outside the vocabulary of %d", c.EOS, c.VocabSize)
		}
	}
	return c, nil
}

// Plan reads and checks all a load needs before a backend is opened or a
// weight byte moves: config.json (and generation_config.json), every
// safetensors header (loader.Open) and the tensors the config implies,
// with their shapes (CheckWeights). LoadWeights(cfg, ck, …) then uploads.
func Plan(fsys fs.FS) (Config, *loader.Checkpoint, error) {
	cfg, err := LoadConfig(fsys)
	if err != nil {
		return cfg, nil, err
	}
	ck, err := loader.Open(fsys)
	if err != nil {
		return cfg, nil, err
	}
	if err := CheckWeights(cfg, ck); err != nil {
		return cfg, nil, err
	}
	return cfg, ck, nil
}

// Load reads config.json and the safetensors weights from fsys onto backend.
func Load(fsys fs.FS, b Backend, opt LoadOptions) (*Model, error) {
	cfg, ck, err := Plan(fsys)
	if err != nil {
		return nil, err
	}
	w, err := LoadWeights(cfg, ck, b, opt)
	if err != nil {
		return nil, err
	}
	return &Model{Config: cfg, Backend: b, Weights: w, Adapters: AdapterInfos(opt.Adapters)}, nil
}

// Default prefill chunks: at most maxPrefillChunk positions, and no
// activation over maxActivationBytes, the storage binding size every WebGPU
// device offers. Long chunks keep a large GPU busy (on an H200, 2048-token
// chunks prefill 130m half again as fast as 512-token ones).
const (
	maxPrefillChunk    = 2048
	maxActivationBytes = 128 << 20
)

// prefillChunk is how many positions per sequence a forward call of a
// batch of sequences processes at most.
func (m *Model) prefillChunk(batch int) int {
	if m.PrefillChunk > 0 {
		return m.PrefillChunk
	}
	c := m.Config
	widest := max(c.ProjDim(), c.ConvDim(), c.Inner(), c.Hidden) // floats per position
	if hy := c.Hybrid; hy != nil {
		// a fused gate_up product, Zamba2's [h ‖ E[ids]], the queries
		widest = max(widest, 2*hy.Intermediate, 2*c.Hidden, hy.AttnHeads*hy.AttnHeadDim)
	}
	n := min(maxPrefillChunk, maxActivationBytes/(4*max(batch, 1)*max(widest, 1)))
	if c.ChunkSize > 0 && n >= c.ChunkSize {
		n -= n % c.ChunkSize // whole SSD chunks
	}
	return max(n, 1)
}
