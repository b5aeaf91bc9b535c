package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
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
	logits := func(dir string) []float32 {
		t.Helper()
		m, err := model.Load(os.DirFS(dir), cpu.New(), model.LoadOptions{})
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		l, err := m.NewState(1).Logits([]int32{3, 99, 7, 250}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	want, got := logits(fixtureDir("tiny-g1")), logits(out)
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("logit %d: %v after convert, %v before", i, got[i], want[i])
		}
	}
	var manifest map[string]loader.ManifestEntry
	data, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err := json.Unmarshal(data, &manifest); err != nil {
		t.Fatal(err)
	}
	des, _ := os.ReadDir(out)
	shards := 0
	for _, de := range des {
		if de.Name() == "manifest.json" {
			continue
		}
		shards += map[bool]int{true: 1}[strings.HasSuffix(de.Name(), ".safetensors")]
		body, _ := os.ReadFile(filepath.Join(out, de.Name()))
		sum := sha256.Sum256(body)
		e, ok := manifest[de.Name()]
		if !ok || e.Size == nil || *e.Size != int64(len(body)) || e.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("manifest entry of %s: %+v", de.Name(), e)
		}
		if info, _ := de.Info(); info.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v", de.Name(), info.Mode())
		}
	}
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
