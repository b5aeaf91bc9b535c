package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// TestConvert turns the tiny fixture, saved by torch as pytorch_model.bin,
// into sharded safetensors: the result loads with the original's logits,
// its index names every tensor, and manifest.json gives every file's size
// and sha256. With --dtype f16 each weight is the f16 rounding of the
// original; an existing, non-empty --out is refused.
func TestConvert(t *testing.T) {
	src := t.TempDir()
	cfg, _ := os.ReadFile(filepath.Join(fixtureDir("tiny-g1"), "config.json"))
	bin, err := os.ReadFile(filepath.Join("..", "..", "loader", "pytorch", "testdata", "tiny_hf_zip.bin"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "config.json"), cfg, 0o644)
	os.WriteFile(filepath.Join(src, "pytorch_model.bin"), bin, 0o644)

	out := filepath.Join(t.TempDir(), "st")
	if _, err := runCLI(t, "", "convert", "--model", src, "--out", out, "--shard-size", "100000"); err != nil {
		t.Fatal(err)
	}
	sameLogits(t, out, model.LoadOptions{}, fixtureDir("tiny-g1"), model.LoadOptions{})
	shards := checkManifest(t, out)
	if shards < 2 {
		t.Errorf("%d shards with --shard-size 100000", shards)
	}

	f16 := filepath.Join(t.TempDir(), "f16")
	if _, err := runCLI(t, "", "convert", "--model", out, "--out", f16, "--dtype", "f16"); err != nil {
		t.Fatal(err)
	}
	a, err := loader.Open(os.DirFS(out))
	if err != nil {
		t.Fatal(err)
	}
	b, err := loader.Open(os.DirFS(f16))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Files()) != 1 || len(a.Names()) != len(b.Names()) {
		t.Fatalf("f16: files %v, %d tensors (want 1 file, %d tensors)", b.Files(), len(b.Names()), len(a.Names()))
	}
	for _, n := range a.Names() {
		in, _ := b.Info(n)
		x, _ := a.Float32s(n)
		y, err := b.Float32s(n)
		if err != nil || in.DType != loader.F16 {
			t.Fatalf("%s: %v, dtype %s", n, err, in.DType)
		}
		for i := range x {
			if y[i] != loader.HalfToFloat32(loader.Float32ToHalf(x[i])) {
				t.Fatalf("%s[%d]: %v in f16, %v in f32", n, i, y[i], x[i])
			}
		}
	}
	if _, err := runCLI(t, "", "convert", "--model", src, "--out", out); err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Errorf("converting into a non-empty folder: %v", err)
	}
}

// checkManifest checks that dir's manifest.json gives the size and sha256
// of every other file in dir, each readable by all (0644), and returns how
// many safetensors files there are.
func checkManifest(t *testing.T, dir string) int {
	t.Helper()
	var manifest map[string]loader.ManifestEntry
	data, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err := json.Unmarshal(data, &manifest); err != nil {
		t.Fatal(err)
	}
	des, _ := os.ReadDir(dir)
	shards := 0
	for _, de := range des {
		if de.Name() == "manifest.json" {
			continue
		}
		shards += map[bool]int{true: 1}[strings.HasSuffix(de.Name(), ".safetensors")]
		body, _ := os.ReadFile(filepath.Join(dir, de.Name()))
		sum := sha256.Sum256(body)
		e, ok := manifest[de.Name()]
		if !ok || e.Size == nil || *e.Size != int64(len(body)) || e.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("manifest entry of %s: %+v", de.Name(), e)
		}
		if info, _ := de.Info(); info.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v", de.Name(), info.Mode())
		}
	}
	if len(manifest) != len(des)-1 {
		t.Errorf("manifest has %d entries for %d files", len(manifest), len(des)-1)
	}
	return shards
}

// sameLogits loads two models on the CPU and wants bitwise equal logits.
func sameLogits(t *testing.T, dir string, opt model.LoadOptions, wantDir string, wantOpt model.LoadOptions) {
	t.Helper()
	logits := func(dir string, opt model.LoadOptions) []float32 {
		t.Helper()
		m, err := model.Load(os.DirFS(dir), cpu.New(), opt)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		l, err := m.NewState(1).Logits([]int32{3, 90, 7, 25, 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	want, got := logits(wantDir, wantOpt), logits(dir, opt)
	if len(got) != len(want) {
		t.Fatalf("%d logits after convert, %d before", len(got), len(want))
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("logit %d: %v after convert, %v before", i, got[i], want[i])
		}
	}
}

// randomCheckpoint writes a small model.WriteRandom checkpoint with an
// untied lm_head, biases and an odd hidden size (in_proj's and the
// embedding's rows hold an odd number of elements, so int4's last byte
// of a row is half full).
func randomCheckpoint(t *testing.T, dtype loader.DType) string {
	t.Helper()
	c := model.Config{VocabSize: 96, Hidden: 33, Layers: 2, State: 8, Expand: 2, Heads: 6, HeadDim: 11, Groups: 1,
		ConvKernel: 4, ChunkSize: 8, UseBias: true, ConvBias: true, Eps: 1e-5, TimeStepMax: math.Inf(1), EOS: 0}
	dir := t.TempDir()
	if err := model.WriteRandom(dir, c, dtype, 7); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConvertQuantized converts float checkpoints to int8 and int4: the
// result, loaded as it is, gives bitwise the logits of the float source
// loaded with LoadOptions.Quantize (the same quantizer), its quantized
// tensors are laid out as docs/quantization.md says (data, scales, zeros,
// consecutive in one file), config.json gains quantization_config and
// keeps everything else, and the manifest verifies. Converting the result
// again to its own format copies it byte for byte; to anything else is an
// error.
func TestConvertQuantized(t *testing.T) {
	tiny := fixtureDir("tiny-g1")
	random := randomCheckpoint(t, loader.BF16)
	cases := []struct {
		name   string
		src    string
		args   []string
		quant  model.Quant
		shards int // at least
	}{
		{"tiny int8", tiny, []string{"--dtype", "int8"}, model.Quant{Format: model.FormatInt8}, 1},
		{"tiny int4", tiny, []string{"--dtype", "int4"}, model.Quant{Format: model.FormatInt4, GroupSize: 128}, 1},
		{"tiny int4 g64", tiny, []string{"--dtype", "INT4", "--group-size", "64"}, model.Quant{Format: model.FormatInt4, GroupSize: 64}, 1},
		{"random int8 sharded", random, []string{"--dtype", "int8", "--shard-size", "8000"}, model.Quant{Format: model.FormatInt8}, 3},
		{"random int4 g16 sharded", random, []string{"--dtype", "int4", "--group-size", "16", "--shard-size", "8000"}, model.Quant{Format: model.FormatInt4, GroupSize: 16}, 3},
		{"random int4 with int4 tables", random, []string{"--dtype", "int4", "--embedding-dtype", "int4", "--group-size", "32"},
			model.Quant{Format: model.FormatInt4, GroupSize: 32, Embedding: model.FormatInt4}, 1},
		{"tiny int8 with int4 tables", tiny, []string{"--dtype", "int8", "--embedding-dtype", "int4"},
			model.Quant{Format: model.FormatInt8, Embedding: model.FormatInt4}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "q")
			if _, err := runCLI(t, "", append([]string{"convert", "--model", c.src, "--out", out}, c.args...)...); err != nil {
				t.Fatal(err)
			}
			sameLogits(t, out, model.LoadOptions{}, c.src, model.LoadOptions{Quantize: c.quant})
			shards := checkManifest(t, out)
			if shards < c.shards {
				t.Errorf("%d shards, want at least %d", shards, c.shards)
			}
			if _, err := os.Stat(filepath.Join(out, loader.IndexFile)); (err == nil) != (shards > 1) {
				t.Errorf("%d shards, and the index: %v", shards, err)
			}

			// config.json: quantization_config added, the rest as it was.
			var before, after map[string]json.RawMessage
			b, _ := os.ReadFile(filepath.Join(c.src, "config.json"))
			a, _ := os.ReadFile(filepath.Join(out, "config.json"))
			if err := json.Unmarshal(b, &before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(a, &after); err != nil {
				t.Fatal(err)
			}
			var qc map[string]any
			json.Unmarshal(after["quantization_config"], &qc)
			emb, _ := c.quant.For(model.RoleEmbedding)
			wantQC := map[string]any{"quant_method": "mamba2-web", "format": c.quant.Format.String(), "embedding_format": emb.String()}
			if c.quant.Format == model.FormatInt4 || emb == model.FormatInt4 {
				wantQC["group_size"] = float64(model.DefaultGroupSize)
				if c.quant.GroupSize != 0 {
					wantQC["group_size"] = float64(c.quant.GroupSize)
				}
			}
			if !maps.Equal(qc, wantQC) {
				t.Errorf("quantization_config %v, want %v", qc, wantQC)
			}
			delete(after, "quantization_config")
			if !maps.EqualFunc(before, after, func(x, y json.RawMessage) bool { return string(x) == string(y) }) {
				t.Errorf("config.json changed beyond quantization_config:\n%s\nwas\n%s", a, b)
			}

			// The layout of every tensor.
			src, err := loader.Open(os.DirFS(c.src))
			if err != nil {
				t.Fatal(err)
			}
			ck, err := loader.Open(os.DirFS(out))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := model.LoadConfig(os.DirFS(c.src))
			if err != nil {
				t.Fatal(err)
			}
			roles := cfg.WeightRoles()
			quantized := 0
			for _, n := range src.Names() {
				in, _ := src.Info(n)
				got, ok := ck.Info(n)
				if !ok {
					if n == "lm_head.weight" && cfg.TieEmbeddings {
						continue
					}
					t.Fatalf("%s is missing", n)
				}
				if !roles[n].Quantizable() || len(in.Shape) != 2 {
					if got.DType != in.DType || !slices.Equal(got.Shape, in.Shape) {
						t.Errorf("%s is %s %v, was %s %v", n, got.DType, got.Shape, in.DType, in.Shape)
					}
					continue
				}
				quantized++
				N, K := in.Shape[0], in.Shape[1]
				base := strings.TrimSuffix(n, ".weight")
				want := []struct {
					name  string
					dtype loader.DType
					shape []int
				}{{n, loader.I8, []int{N, K}}, {base + ".scales", loader.F16, []int{N}}}
				if f, gs := c.quant.For(roles[n]); f == model.FormatInt4 {
					g := (K + gs - 1) / gs
					want = []struct {
						name  string
						dtype loader.DType
						shape []int
					}{{n, loader.U8, []int{N, (K + 1) / 2}}, {base + ".scales", loader.F16, []int{N, g}}, {base + ".zeros", loader.F16, []int{N, g}}}
				}
				end := got.Begin
				for _, w := range want {
					p, ok := ck.Info(w.name)
					if !ok || p.DType != w.dtype || !slices.Equal(p.Shape, w.shape) {
						t.Fatalf("%s: %v %s %v, want %s %v", w.name, ok, p.DType, p.Shape, w.dtype, w.shape)
					}
					if p.File != got.File || p.Begin != end {
						t.Errorf("%s is at %s:%d, want %s:%d, right after the one before", w.name, p.File, p.Begin, got.File, end)
					}
					end = p.Begin + p.Size
				}
			}
			if want := 2*cfg.Layers + 1 + map[bool]int{false: 1}[cfg.TieEmbeddings]; quantized != want {
				t.Errorf("%d quantized tensors, want %d", quantized, want)
			}

			// Again to the same format: a copy, byte for byte (an int4
			// source keeps its group size unless told otherwise).
			again := filepath.Join(t.TempDir(), "again")
			args := []string{"convert", "--model", out, "--out", again, "--dtype", c.quant.Format.String()}
			if _, err := runCLI(t, "", append(args, c.args[2:]...)...); err != nil {
				t.Fatal(err)
			}
			m1, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
			m2, _ := os.ReadFile(filepath.Join(again, "manifest.json"))
			if string(m1) != string(m2) {
				t.Errorf("converting %s to %s again changed it:\n%s\nwas\n%s", c.quant.Format, c.quant.Format, m2, m1)
			}
			// With no --dtype (and so no --group-size): a copy too.
			asIs := filepath.Join(t.TempDir(), "as-is")
			args = []string{"convert", "--model", out, "--out", asIs}
			if i := slices.Index(c.args, "--shard-size"); i >= 0 {
				args = append(args, c.args[i:i+2]...)
			}
			msg, err := runCLI(t, "", args...)
			if err != nil {
				t.Fatal(err)
			}
			if m3, _ := os.ReadFile(filepath.Join(asIs, "manifest.json")); string(m3) != string(m1) {
				t.Errorf("converting %s with no --dtype changed it:\n%s\nwas\n%s", c.quant.Format, m3, m1)
			}
			if want := fmt.Sprintf("of them %s", c.quant.Format); !strings.Contains(msg, want) {
				t.Errorf("convert says %q, want it to say %q", msg, want)
			}
			// To anything else: an error, and nothing written.
			other := "int8"
			if c.quant.Format == model.FormatInt8 {
				other = "int4"
			}
			regroup := "32"
			if c.quant.GroupSize == 32 {
				regroup = "64"
			}
			for _, bad := range []struct {
				args []string
				want string
			}{
				{[]string{"--dtype", "f16"}, "is stored as " + c.quant.Format.String()},
				{[]string{"--dtype", "f32"}, "convert --dtype f32 from the float checkpoint"},
				{[]string{"--dtype", other}, "would compound the quantization error"},
				{[]string{"--dtype", "int4", "--group-size", regroup}, map[bool]string{true: "regrouping it to " + regroup, false: "would compound"}[c.quant.Format == model.FormatInt4]},
			} {
				dir := filepath.Join(t.TempDir(), "bad")
				_, err := runCLI(t, "", append([]string{"convert", "--model", out, "--out", dir}, bad.args...)...)
				if err == nil || !strings.Contains(err.Error(), bad.want) {
					t.Errorf("%v of a %s checkpoint: %v, want an error with %q", bad.args, c.quant.Format, err, bad.want)
				}
				if _, err := os.Stat(dir); err == nil {
					t.Errorf("%v: a refused conversion made --out", bad.args)
				}
			}
		})
	}
}

// TestConvertFlagErrors: a bad --dtype or --group-size is refused before
// anything is read, with an error naming the flag and what it wants.
func TestConvertFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--dtype", "int3"}, `--dtype "int3": want f32, f16, bf16, int8 or int4`},
		{[]string{"--dtype", "fp8"}, `--dtype "fp8"`},
		{[]string{"--group-size", "64"}, "--group-size needs --dtype int4"},
		{[]string{"--dtype", "int8", "--group-size", "64"}, "--group-size is for --dtype int4 only, not int8"},
		{[]string{"--dtype", "f16", "--group-size", "128"}, "--group-size is for --dtype int4 only, not f16"},
		{[]string{"--dtype", "int4", "--group-size", "7"}, "--group-size 7: want a positive even number"},
		{[]string{"--dtype", "int4", "--group-size", "0"}, "--group-size 0: want a positive even number"},
		{[]string{"--dtype", "int4", "--group-size", "-2"}, "--group-size -2: want a positive even number"},
		{[]string{"--dtype", "int4", "--group-size", "131072"}, "up to 65536"},
		{[]string{"--dtype", "int4", "--group-size", "x"}, "invalid value"},
	} {
		dir := filepath.Join(t.TempDir(), "out")
		_, err := runCLI(t, "", append([]string{"convert", "--model", fixtureDir("tiny-g1"), "--out", dir}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%v: a refused conversion made --out", c.args)
		}
	}
}

// TestConvertQuantizeNonFinite: a NaN in a weight to quantize is an error
// naming the tensor, not a row of nonsense.
func TestConvertQuantizeNonFinite(t *testing.T) {
	src := randomCheckpoint(t, loader.F32)
	ck, err := loader.Open(os.DirFS(src))
	if err != nil {
		t.Fatal(err)
	}
	in, _ := ck.Info("backbone.layers.1.mixer.out_proj.weight")
	f, err := os.OpenFile(filepath.Join(src, in.File), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0, 0, 0xc0, 0x7f}, in.Begin+4*70) // a NaN, element 70
	f.Close()
	_, err = runCLI(t, "", "convert", "--model", src, "--out", filepath.Join(t.TempDir(), "q"), "--dtype", "int4")
	if err == nil || !strings.Contains(err.Error(), in.Name) || !strings.Contains(err.Error(), "NaN or an infinity at element 70") {
		t.Errorf("quantizing a NaN: %v", err)
	}
}

// TestSetJSONField: config.json gains a member with every other byte kept,
// Python's bare Infinity included; a present member's value is replaced.
func TestSetJSONField(t *testing.T) {
	v := map[string]int{"x": 1}
	for _, c := range []struct{ in, want string }{
		{"{\n  \"a\": [0.0, Infinity],\n  \"b\": \"x}{\\\"\",\n  \"c\": {\"d\": 1e-05}\n}\n",
			"{\n  \"a\": [0.0, Infinity],\n  \"b\": \"x}{\\\"\",\n  \"c\": {\"d\": 1e-05},\n  \"k\": {\n    \"x\": 1\n  }\n}\n"},
		{`{"a":1,"k":null,"b":[2]}`, `{"a":1,"k":{"x":1},"b":[2]}`},
		{"{\"a\": 1, \"k\": {\"old\": [1, 2]} }", "{\"a\": 1, \"k\": {\"x\":1} }"},
		{`{"a":{"k":2}}`, `{"a":{"k":2},"k": {"x":1}}`},
		{"{}", `{"k": {"x":1}}`},
		{"\t{\n\t\"a\": NaN\n}", "\t{\n\t\"a\": NaN,\n\t\"k\": {\n\t\t\"x\": 1\n\t}\n}"},
	} {
		got, err := setJSONField([]byte(c.in), "k", v)
		if err != nil || string(got) != c.want {
			t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "[1]", `{"a": 1`, `{"a": "}`, `{"a": 1} x`} {
		if got, err := setJSONField([]byte(in), "k", v); err == nil {
			t.Errorf("%q: %q, want an error", in, got)
		}
	}
}
