package loader

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// file builds a safetensors file from a header object and a data section.
func file(header any, data []byte) []byte {
	h, _ := json.Marshal(header)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	out = append(out, h...)
	return append(out, data...)
}

type entry = map[string]any

func TestParseHeaderRejects(t *testing.T) {
	ok := entry{"dtype": "F32", "shape": []int{2, 2}, "data_offsets": []int{0, 16}}
	tests := []struct {
		name   string
		header any
		data   int
		want   string
	}{
		{"not an object", []int{1}, 0, "not a JSON object"},
		{"bad dtype", entry{"a": entry{"dtype": "I64", "shape": []int{1}, "data_offsets": []int{0, 8}}}, 8, `unsupported dtype "I64"`},
		{"offsets past end", entry{"a": ok}, 8, "outside the 8-byte data section"},
		{"reversed offsets", entry{"a": entry{"dtype": "F32", "shape": []int{0}, "data_offsets": []int{8, 4}}}, 8, "outside"},
		{"negative offset", entry{"a": entry{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{-4, 0}}}, 8, "outside"},
		{"one offset", entry{"a": entry{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{0}}}, 8, "2 entries"},
		{"shape mismatch", entry{"a": entry{"dtype": "F16", "shape": []int{2, 2}, "data_offsets": []int{0, 16}}}, 16, "needs 8 bytes"},
		{"negative dim", entry{"a": entry{"dtype": "F32", "shape": []int{-1}, "data_offsets": []int{0, 4}}}, 4, "bad dimension"},
		{"huge shape", entry{"a": entry{"dtype": "F32", "shape": []int{1 << 30, 1 << 30, 1 << 30}, "data_offsets": []int{0, 4}}}, 4, "too large"},
		{"overlap", entry{"a": ok, "b": entry{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{12, 16}}}, 16, "overlap"},
		{"bad metadata", entry{"__metadata__": entry{"k": 1}}, 0, "__metadata__"},
		{"wrong entry type", entry{"a": "x"}, 0, "malformed entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := file(tt.header, make([]byte, tt.data))
			_, err := ParseHeader("m.safetensors", f, int64(len(f)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseHeaderLength(t *testing.T) {
	f := binary.LittleEndian.AppendUint64(nil, 1<<40)
	if _, err := ParseHeader("x", f, 1<<41); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("got %v", err)
	}
	f = binary.LittleEndian.AppendUint64(nil, 100)
	if _, err := ParseHeader("x", append(f, "{}"...), 10); err == nil || !strings.Contains(err.Error(), "past the end") {
		t.Fatalf("got %v", err)
	}
	if _, err := ParseHeader("x", []byte{1, 2}, 2); err == nil {
		t.Fatal("short file accepted")
	}
}

func f32bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func TestReadDTypes(t *testing.T) {
	var data []byte
	data = append(data, f32bytes(1.5, -2)...)
	for _, v := range []float32{0.25, -3} {
		data = binary.LittleEndian.AppendUint16(data, Float32ToHalf(v))
	}
	for _, v := range []float32{0.5, 7} {
		data = binary.LittleEndian.AppendUint16(data, uint16(math.Float32bits(v)>>16))
	}
	hdr := entry{
		"f32":          entry{"dtype": "F32", "shape": []int{2}, "data_offsets": []int{0, 8}},
		"f16":          entry{"dtype": "F16", "shape": []int{2}, "data_offsets": []int{8, 12}},
		"bf16":         entry{"dtype": "BF16", "shape": []int{1, 2}, "data_offsets": []int{12, 16}},
		"__metadata__": entry{"format": "pt"},
	}
	fsys := fstest.MapFS{"model.safetensors": {Data: file(hdr, data)}}
	c, err := Open(fsys)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]float32{"f32": {1.5, -2}, "f16": {0.25, -3}, "bf16": {0.5, 7}} {
		got, err := c.Float32s(name)
		if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("%s: got %v %v, want %v", name, got, err, want)
		}
	}
	if _, err := c.Float32s("missing"); err == nil {
		t.Error("missing tensor read without error")
	}
	// Chunks are whole elements and in order.
	var seen []int64
	if err := c.Stream("f32", 4, func(off int64, b []byte) error { seen = append(seen, off); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[1] != 4 {
		t.Errorf("chunk offsets %v", seen)
	}
}

func TestSharded(t *testing.T) {
	a := file(entry{"x": entry{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{0, 4}}}, f32bytes(1))
	b := file(entry{"y": entry{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{0, 4}}}, f32bytes(2))
	index := func(m map[string]string) []byte { d, _ := json.Marshal(map[string]any{"weight_map": m}); return d }
	good := fstest.MapFS{
		"a.safetensors": {Data: a}, "b.safetensors": {Data: b},
		IndexFile: {Data: index(map[string]string{"x": "a.safetensors", "y": "b.safetensors"})},
	}
	c, err := Open(good)
	if err != nil {
		t.Fatal(err)
	}
	if y, _ := c.Float32s("y"); len(y) != 1 || y[0] != 2 {
		t.Fatalf("y = %v", y)
	}
	bad := []struct {
		name string
		m    map[string]string
		want string
	}{
		{"wrong shard", map[string]string{"x": "b.safetensors", "y": "b.safetensors"}, "does not contain"},
		{"traversal", map[string]string{"x": "../a.safetensors"}, "not a plain relative path"},
		{"missing shard", map[string]string{"x": "c.safetensors"}, "c.safetensors"},
	}
	for _, tt := range bad {
		fsys := fstest.MapFS{"a.safetensors": {Data: a}, "b.safetensors": {Data: b}, IndexFile: {Data: index(tt.m)}}
		if _, err := Open(fsys); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(fstest.MapFS{"pytorch_model.bin": {Data: []byte("x")}}); err == nil || !strings.Contains(err.Error(), "pytorch_model.bin is not a PyTorch checkpoint") {
		t.Errorf("a pytorch_model.bin that is none: %v", err)
	}
	if _, err := Open(fstest.MapFS{}); err == nil {
		t.Error("empty folder accepted")
	}
	f := file(entry{"x": entry{"dtype": "F32", "shape": []int{4}, "data_offsets": []int{0, 16}}}, f32bytes(1, 2, 3, 4))
	if _, err := Open(fstest.MapFS{SingleFile: {Data: f[:len(f)-20]}}); err == nil {
		t.Error("truncated file accepted")
	}
}

func TestHalfRoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := HalfToFloat32(uint16(h))
		if f != f {
			continue
		}
		if back := Float32ToHalf(f); back != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
	for _, c := range []struct {
		f    float32
		want uint16
	}{{1, 0x3c00}, {65504, 0x7bff}, {1e6, 0x7c00}, {-2, 0xc000}, {5.960464477539063e-08, 1}, {1e-9, 0}} {
		if got := Float32ToHalf(c.f); got != c.want {
			t.Errorf("Float32ToHalf(%v) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
}

func TestRealCheckpoint(t *testing.T) {
	c, err := Open(os.DirFS("../testdata/fixtures/tiny-g1"))
	if err != nil {
		t.Fatal(err)
	}
	in, ok := c.Info("backbone.embeddings.weight")
	if !ok || in.DType != F32 || len(in.Shape) != 2 || in.Shape[0] != 512 {
		t.Fatalf("embedding info %+v", in)
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, p := range []string{"../testdata/fixtures/tiny-g1/model.safetensors", "../testdata/fixtures/tiny-g4/expected_logits.safetensors"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		n := binary.LittleEndian.Uint64(data)
		f.Add(data[:8+n+64])
		f.Add(data[:8+n/2])
	}
	f.Add(file(entry{"a": entry{"dtype": "BF16", "shape": []int{3}, "data_offsets": []int{0, 6}}}, make([]byte, 6)))
	// Near misses of the tiling and duplicate-name rules, for the mutator
	// to start from.
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8))
	f.Add(rawFile(`{"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}}`, 8))
	f.Add(rawFile(`{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  `, 6))
	f.Fuzz(func(t *testing.T, b []byte) {
		infos, err := ParseHeader("fuzz", b, int64(len(b)))
		if err != nil {
			return
		}
		// Whatever is accepted must be self-consistent and tile the data
		// section exactly: each tensor starts where the one before ended,
		// the first at the start of the data, the last at the end of the
		// file; names are unique.
		end := int64(8 + binary.LittleEndian.Uint64(b))
		names := map[string]bool{}
		for _, in := range infos {
			if in.Begin != end || in.Begin+in.Size > int64(len(b)) || in.Elements()*int64(in.DType.Size()) != in.Size || names[in.Name] {
				t.Fatalf("accepted inconsistent tensor %+v", in)
			}
			names[in.Name] = true
			end = in.Begin + in.Size
		}
		if end != int64(len(b)) {
			t.Fatalf("accepted %d bytes after the last tensor", int64(len(b))-end)
		}
	})
}
