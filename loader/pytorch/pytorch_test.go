package pytorch_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/loader/pytorch"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func read(b []byte) ([]pytorch.Tensor, error) {
	return pytorch.Read(bytes.NewReader(b), int64(len(b)))
}

// halfToFloat decodes an IEEE 754 half.
func halfToFloat(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * frac / 1024 * math.Pow(2, -14)
	case 0x1f:
		if frac == 0 {
			return sign * math.Inf(1)
		}
		return math.NaN()
	}
	return sign * (1 + frac/1024) * math.Pow(2, float64(exp-15))
}

// decode turns a tensor's bytes into float64s.
func decode(t *testing.T, dtype string, b []byte) []float64 {
	var out []float64
	switch dtype {
	case "F32":
		for i := 0; i+4 <= len(b); i += 4 {
			out = append(out, float64(math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))))
		}
	case "F16":
		for i := 0; i+2 <= len(b); i += 2 {
			out = append(out, halfToFloat(binary.LittleEndian.Uint16(b[i:])))
		}
	case "BF16":
		for i := 0; i+2 <= len(b); i += 2 {
			out = append(out, float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[i:]))<<16)))
		}
	default:
		t.Fatalf("no decoder for %s", dtype)
	}
	return out
}

type expected struct {
	DType  string    `json:"dtype"`
	Shape  []int     `json:"shape"`
	Values []float64 `json:"values"`
}

var torchDTypes = map[string]string{"float32": "F32", "float16": "F16", "bfloat16": "BF16"}

func TestSmallFixtures(t *testing.T) {
	var want map[string]expected
	if err := json.Unmarshal(readFixture(t, "small.json"), &want); err != nil {
		t.Fatal(err)
	}
	order := []string{"a", "b", "c", "tied1", "view", "scalar", "empty", "nested.deep.name"}
	for _, file := range []string{"small_zip.bin", "small_legacy.bin"} {
		t.Run(file, func(t *testing.T) {
			b := readFixture(t, file)
			ts, err := read(b)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			byName := map[string]pytorch.Tensor{}
			for _, tn := range ts {
				names = append(names, tn.Name)
				byName[tn.Name] = tn
			}
			if !slices.Equal(names, order) {
				t.Fatalf("names %q, want %q (the state dict's order)", names, order)
			}
			for _, name := range order {
				w, g := want[name], byName[name]
				if g.DType != torchDTypes[w.DType] {
					t.Errorf("%s: dtype %s, want %s", name, g.DType, w.DType)
				}
				if !slices.Equal(g.Shape, w.Shape) {
					t.Errorf("%s: shape %v, want %v", name, g.Shape, w.Shape)
				}
				if g.Size != g.Elements()*int64(pytorch.ElementSize(g.DType)) {
					t.Errorf("%s: size %d for %v %s", name, g.Size, g.Shape, g.DType)
				}
				got := decode(t, g.DType, b[g.Offset:g.Offset+g.Size])
				if len(got) != len(w.Values) {
					t.Errorf("%s: %d values, want %d", name, len(got), len(w.Values))
					continue
				}
				for i := range got {
					if got[i] != w.Values[i] {
						t.Errorf("%s[%d] = %v, want %v", name, i, got[i], w.Values[i])
					}
				}
			}
			if byName["tied1"].Offset != byName["a"].Offset {
				t.Errorf("tied1 at %d, a at %d: they share a storage", byName["tied1"].Offset, byName["a"].Offset)
			}
		})
	}
}

// safetensorsFixture returns the tiny-g1 weights by name, with the file.
func safetensorsFixture(t *testing.T) (map[string]loader.Info, []byte) {
	const file = "../../testdata/fixtures/tiny-g1/model.safetensors"
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	infos, err := loader.ParseHeader(file, b[:8+n], int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]loader.Info{}
	for _, in := range infos {
		m[in.Name] = in
	}
	return m, b
}

func TestTinyAgainstSafetensors(t *testing.T) {
	st, stBytes := safetensorsFixture(t)
	for _, tc := range []struct {
		file string
		// rename maps a checkpoint name to the safetensors one.
		rename func(string) string
		extra  []string // names only the checkpoint has
	}{
		{"tiny_hf_zip.bin", func(s string) string { return s }, nil},
		{"tiny_ss_legacy.bin", func(s string) string {
			if s == "lm_head.weight" {
				return "backbone.embeddings.weight" // tied to the embedding
			}
			return strings.Replace(s, "backbone.embedding.", "backbone.embeddings.", 1)
		}, []string{"lm_head.weight"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b := readFixture(t, tc.file)
			ts, err := read(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(ts) != len(st)+len(tc.extra) {
				t.Errorf("%d tensors, want %d", len(ts), len(st)+len(tc.extra))
			}
			seen := map[string]bool{}
			offsets := map[string]int64{}
			for _, tn := range ts {
				name := tc.rename(tn.Name)
				seen[name] = true
				w, ok := st[name]
				if !ok {
					t.Errorf("%s: not in the safetensors fixture", tn.Name)
					continue
				}
				if tn.DType != string(w.DType) || !slices.Equal(tn.Shape, w.Shape) || tn.Size != w.Size {
					t.Errorf("%s: %s %v %d bytes, want %s %v %d", tn.Name, tn.DType, tn.Shape, tn.Size, w.DType, w.Shape, w.Size)
					continue
				}
				if !bytes.Equal(b[tn.Offset:tn.Offset+tn.Size], stBytes[w.Begin:w.Begin+w.Size]) {
					t.Errorf("%s: bytes differ from the safetensors fixture", tn.Name)
				}
				if o, ok := offsets[name]; ok && o != tn.Offset {
					t.Errorf("%s at %d, but its tied twin at %d", tn.Name, tn.Offset, o)
				}
				offsets[name] = tn.Offset
			}
			for name := range st {
				if !seen[name] {
					t.Errorf("%s missing", name)
				}
			}
		})
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r     *bytes.Reader
	n     atomic.Int64
	calls atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.calls.Add(1)
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

func TestReadsOnlyMetadata(t *testing.T) {
	for _, tc := range []struct {
		file  string
		limit int64
	}{
		{"tiny_hf_zip.bin", 16 << 10},
		// The legacy pickles are read in growing chunks from the start
		// (4 KiB, then 8 KiB), the counts through a 512-byte window.
		{"tiny_ss_legacy.bin", 32 << 10},
	} {
		b := readFixture(t, tc.file)
		c := &countingReader{r: bytes.NewReader(b)}
		if _, err := pytorch.Read(c, int64(len(b))); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d of %d bytes read in %d calls", tc.file, c.n.Load(), len(b), c.calls.Load())
		if c.n.Load() >= tc.limit {
			t.Errorf("%s: Read read %d bytes of %d; want under %d (directory and pickle only)", tc.file, c.n.Load(), len(b), tc.limit)
		}
	}
}

func TestIsPyTorch(t *testing.T) {
	st, _ := os.ReadFile("../../testdata/fixtures/tiny-g1/model.safetensors")
	for _, tc := range []struct {
		name string
		head []byte
		want bool
	}{
		{"zip", readFixture(t, "small_zip.bin"), true},
		{"legacy", readFixture(t, "small_legacy.bin"), true},
		{"legacy protocol 4 framed", append([]byte{0x80, 4, 0x95, 12, 0, 0, 0, 0, 0, 0, 0, 0x8a, 10}, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'), true},
		{"safetensors", st, false},
		{"empty", nil, false},
		{"short", []byte("PK"), false},
		{"other pickle", []byte{0x80, 2, '}', 'q', 0, '.'}, false},
	} {
		head := tc.head[:min(len(tc.head), pytorch.PeekSize)]
		if got := pytorch.IsPyTorch(head); got != tc.want {
			t.Errorf("%s: IsPyTorch = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTruncated(t *testing.T) {
	for _, file := range []string{"small_zip.bin", "small_legacy.bin", "noncontig_zip.bin"} {
		b := readFixture(t, file)
		for n := 0; n < len(b); n++ {
			if ts, err := read(b[:n]); err == nil {
				t.Fatalf("%s cut to %d of %d bytes: accepted, with %d tensors", file, n, len(b), len(ts))
			}
			// A source shorter than it claims: it must fail or, if
			// only weights are missing, succeed; never panic.
			_, _ = pytorch.Read(bytes.NewReader(b[:n]), int64(len(b)))
		}
	}
}
