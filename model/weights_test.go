package model_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/models"
)

// TestLoadWeightsConfigMismatch checks that a config whose counts the
// checkpoint does not back fails before the per-layer tables are built,
// naming the tensor, and that an unvalidated Config is validated.
func TestLoadWeightsConfigMismatch(t *testing.T) {
	fsys := models.Tiny()
	base, err := model.LoadConfig(fsys)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := loader.Open(fsys)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(c *model.Config)
		want   string
	}{
		{"more layers", func(c *model.Config) { c.Layers = model.MaxLayers },
			"checkpoint lacks tensor backbone.layers.1023.mixer.in_proj.weight, but config.json has 1024 layers"},
		{"absurd layers", func(c *model.Config) { c.Layers = 1 << 24 }, "num_hidden_layers = 16777216 is above the limit of 1024"},
		{"absurd vocab", func(c *model.Config) { c.VocabSize = 1 << 40 }, "vocab_size = 1099511627776 is above the limit"},
		{"NaN eps", func(c *model.Config) { c.Eps = math.NaN() }, "layer_norm_epsilon must be in (0, 1], got NaN"},
		{"wider", func(c *model.Config) { c.Hidden *= 2; c.Heads *= 2 }, "backbone.embeddings.weight has shape [4096 384], but the config implies [4096 768]"},
	}
	for _, tt := range tests {
		c := base
		tt.change(&c)
		b := cpu.New()
		_, err := model.LoadWeights(c, ck, b, model.LoadOptions{})
		b.Close()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

// tinyConfig is a two-layer model small enough to write out in a test.
const tinyConfig = `{"model_type":"mamba2","vocab_size":16,"hidden_size":8,"num_hidden_layers":2,"state_size":4,
	"num_heads":4,"head_dim":4,"n_groups":1,"expand":2,"conv_kernel":4,"chunk_size":8,"tie_word_embeddings":true,
	"eos_token_id":0,"pad_token_id":0}`

// tinyTensors are its tensors (SPEC §1.3), I = 16, G·N = 4.
func tinyTensors() []struct {
	name  string
	shape []int
} {
	ts := []struct {
		name  string
		shape []int
	}{{"backbone.embeddings.weight", []int{16, 8}}, {"backbone.norm_f.weight", []int{8}}}
	for l := range 2 {
		p := fmt.Sprintf("backbone.layers.%d.", l)
		for _, t := range []struct {
			name  string
			shape []int
		}{
			{"norm.weight", []int{8}}, {"mixer.in_proj.weight", []int{44, 8}}, {"mixer.conv1d.weight", []int{24, 1, 4}},
			{"mixer.conv1d.bias", []int{24}}, {"mixer.dt_bias", []int{4}}, {"mixer.A_log", []int{4}}, {"mixer.D", []int{4}},
			{"mixer.norm.weight", []int{16}}, {"mixer.out_proj.weight", []int{8, 16}},
		} {
			ts = append(ts, struct {
				name  string
				shape []int
			}{p + t.name, t.shape})
		}
	}
	return ts
}

// poison replaces one element of a tensor (every element, with all) with
// raw bits.
type poison struct {
	tensor string
	index  int
	bits   uint32
	all    bool
}

// tinyCheckpoint writes tinyConfig's weights as one safetensors file of
// dtype dt, small finite values except where p says.
func tinyCheckpoint(t *testing.T, dt loader.DType, p poison) fstest.MapFS {
	t.Helper()
	header := map[string]any{}
	var data []byte
	for _, ts := range tinyTensors() {
		n := 1
		for _, d := range ts.shape {
			n *= d
		}
		begin := len(data)
		for i := range n {
			v := float32(i%7)/8 - 0.375
			if ts.name == p.tensor && (i == p.index || p.all) {
				if dt == loader.F32 {
					data = binary.LittleEndian.AppendUint32(data, p.bits)
				} else {
					data = binary.LittleEndian.AppendUint16(data, uint16(p.bits))
				}
				continue
			}
			switch dt {
			case loader.F32:
				data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
			case loader.F16:
				data = binary.LittleEndian.AppendUint16(data, loader.Float32ToHalf(v))
			case loader.BF16:
				data = binary.LittleEndian.AppendUint16(data, uint16(math.Float32bits(v)>>16))
			}
		}
		header[ts.name] = map[string]any{"dtype": dt, "shape": ts.shape, "data_offsets": []int{begin, len(data)}}
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	file = append(append(file, h...), data...)
	return fstest.MapFS{
		"config.json":       {Data: []byte(tinyConfig)},
		"model.safetensors": {Data: file},
	}
}

// TestLoadNonFinite checks that a NaN or an infinity anywhere in a
// checkpoint fails the load with the file, the tensor and the element
// named, in each dtype, and that the same checkpoint without one loads.
func TestLoadNonFinite(t *testing.T) {
	tests := []struct {
		dt   loader.DType
		p    poison
		want string // "" for a clean load
	}{
		{loader.F32, poison{}, ""},
		{loader.F16, poison{}, ""},
		{loader.BF16, poison{}, ""},
		{loader.F32, poison{tensor: "backbone.embeddings.weight", index: 0, bits: 0x7fc00000},
			"model.safetensors: tensor backbone.embeddings.weight (F32 [16 8]) holds NaN at element 0: weights must be finite"},
		{loader.F32, poison{tensor: "backbone.embeddings.weight", index: 127, bits: 0xff800000}, "backbone.embeddings.weight (F32 [16 8]) holds -Inf at element 127"},
		{loader.F32, poison{tensor: "backbone.layers.1.mixer.in_proj.weight", index: 300, bits: 0x7f800000}, "backbone.layers.1.mixer.in_proj.weight (F32 [44 8]) holds +Inf at element 300"},
		{loader.F16, poison{tensor: "backbone.layers.0.mixer.D", index: 3, bits: 0x7e00}, "backbone.layers.0.mixer.D (F16 [4]) holds NaN at element 3"},
		{loader.F16, poison{tensor: "backbone.layers.1.mixer.conv1d.weight", index: 95, bits: 0xfc00}, "backbone.layers.1.mixer.conv1d.weight (F16 [24 1 4]) holds -Inf at element 95"},
		{loader.BF16, poison{tensor: "backbone.norm_f.weight", index: 5, bits: 0x7f80}, "backbone.norm_f.weight (BF16 [8]) holds +Inf at element 5"},
		{loader.BF16, poison{tensor: "backbone.layers.1.mixer.A_log", index: 1, bits: 0xffc1}, "backbone.layers.1.mixer.A_log (BF16 [4]) holds NaN at element 1"},
		// The largest finite values are not errors.
		{loader.F32, poison{tensor: "backbone.layers.0.mixer.D", index: 0, bits: 0x7f7fffff}, ""},
		{loader.F16, poison{tensor: "backbone.layers.0.mixer.D", index: 0, bits: 0xfbff}, ""},
		{loader.BF16, poison{tensor: "backbone.layers.0.mixer.D", index: 0, bits: 0x7f7f}, ""},
	}
	for _, tt := range tests {
		fsys := tinyCheckpoint(t, tt.dt, tt.p)
		b := cpu.New()
		m, err := model.Load(fsys, b, model.LoadOptions{})
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s %+v: %v", tt.dt, tt.p, err)
		case tt.want == "" && m.Weights.LMHead == nil:
			t.Errorf("%s %+v: loaded without an lm_head", tt.dt, tt.p)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s %+v: error %v, want %q", tt.dt, tt.p, err, tt.want)
		}
		b.Close()
	}
}

// BenchmarkLoadTiny loads the embedded model (36 MB of F32) on the CPU
// backend, scan for non-finite values included, to set the scan's cost
// (BenchmarkFiniteScan) against a whole load.
func BenchmarkLoadTiny(b *testing.B) {
	fsys := models.Tiny()
	for b.Loop() {
		be := cpu.New()
		if _, err := model.Load(fsys, be, model.LoadOptions{}); err != nil {
			b.Fatal(err)
		}
		be.Close()
	}
}
