package loader

import (
	"encoding/binary"
	"strings"
	"testing"
)

// rawFile builds a safetensors file from header JSON written out by hand,
// so a test can say what json.Marshal never writes: a name twice.
func rawFile(header string, data int) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(out, header...)
	return append(out, make([]byte, data)...)
}

// TestParseHeaderStrict covers the rules the reference safetensors reader
// enforces beyond bounds: one entry per name (encoding/json alone would keep
// the last of two), tensors that tile the data section with no gap and
// nothing after the last one, and empty tensors accepted wherever they sit
// in that tiling, whatever their names (the old overlap check depended on
// the name order at a shared offset).
func TestParseHeaderStrict(t *testing.T) {
	const f4 = `"dtype":"F32","shape":[1]`
	const empty = `"dtype":"F32","shape":[0]`
	tests := []struct {
		name   string
		header string
		data   int
		want   string   // "" means accepted
		order  []string // accepted: the tensor names in the order returned
	}{
		{name: "duplicate tensor", header: `{"a":{` + f4 + `,"data_offsets":[0,4]},"a":{` + f4 + `,"data_offsets":[4,8]}}`, data: 8,
			want: `m.safetensors: tensor "a" appears twice`},
		{name: "duplicate tensor, second one empty", header: `{"a":{` + f4 + `,"data_offsets":[0,4]},"a":{` + empty + `,"data_offsets":[4,4]}}`, data: 4,
			want: `tensor "a" appears twice`},
		{name: "duplicate metadata", header: `{"__metadata__":{},"__metadata__":{"x":"y"}}`,
			want: `__metadata__ appears twice`},
		{name: "duplicate metadata key", header: `{"__metadata__":{"k":"1","k":"2"}}`,
			want: `__metadata__: key "k" appears twice`},
		{name: "duplicate field of an entry", header: `{"a":{` + f4 + `,"data_offsets":[0,4],"data_offsets":[4,8]}}`, data: 8,
			want: `tensor "a": field "data_offsets" appears twice`},
		{name: "gap at the start", header: `{"a":{` + f4 + `,"data_offsets":[4,8]}}`, data: 8,
			want: `m.safetensors: bytes [0, 4) of the data section belong to no tensor (a gap before tensor "a")`},
		{name: "gap between", header: `{"a":{` + f4 + `,"data_offsets":[0,4]},"b":{` + f4 + `,"data_offsets":[6,10]}}`, data: 10,
			want: `bytes [4, 6) of the data section belong to no tensor (a gap before tensor "b")`},
		{name: "trailing bytes", header: `{"a":{` + f4 + `,"data_offsets":[0,4]}}`, data: 7,
			want: `the last 3 bytes of the data section belong to no tensor (after the last tensor, "a")`},
		{name: "data but no tensors", header: `{}`, data: 2,
			want: `the last 2 bytes of the data section belong to no tensor (there are no tensors)`},
		{name: "overlap", header: `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{` + f4 + `,"data_offsets":[4,8]}}`, data: 8,
			want: `tensors "a" [0, 8) and "b" [4, 8) overlap`},
		{name: "empty tensor inside another", header: `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{` + empty + `,"data_offsets":[4,4]}}`, data: 8,
			want: `tensors "a" [0, 8) and "z" [4, 4) overlap`},
		{name: "text after the object", header: `{} {}`, want: "not a JSON object"},
		{name: "not an object", header: `"a"`, want: "not a JSON object"},

		{name: "no tensors, no data", header: `{}`, order: []string{}},
		{name: "spaces after the object", header: `{"a":{` + f4 + `,"data_offsets":[0,4]}}    `, data: 4, order: []string{"a"}},
		{name: "empty tensor first, name sorts last", header: `{"z":{` + empty + `,"data_offsets":[0,0]},"a":{` + f4 + `,"data_offsets":[0,4]}}`, data: 4,
			order: []string{"z", "a"}},
		{name: "empty tensor first, name sorts first", header: `{"a":{` + empty + `,"data_offsets":[0,0]},"z":{` + f4 + `,"data_offsets":[0,4]}}`, data: 4,
			order: []string{"a", "z"}},
		{name: "empty tensor between, name sorts last", header: `{"a":{` + f4 + `,"data_offsets":[0,4]},"z":{` + empty + `,"data_offsets":[4,4]},"b":{` + f4 + `,"data_offsets":[4,8]}}`, data: 8,
			order: []string{"a", "z", "b"}},
		{name: "empty tensor between, name sorts first", header: `{"b":{` + f4 + `,"data_offsets":[0,4]},"a":{` + empty + `,"data_offsets":[4,4]},"c":{` + f4 + `,"data_offsets":[4,8]}}`, data: 8,
			order: []string{"b", "a", "c"}},
		{name: "empty tensor at the end", header: `{"a":{` + f4 + `,"data_offsets":[0,4]},"0":{` + empty + `,"data_offsets":[4,4]}}`, data: 4,
			order: []string{"a", "0"}},
		{name: "two empty tensors at one offset", header: `{"y":{` + empty + `,"data_offsets":[4,4]},"x":{"dtype":"BF16","shape":[3,0],"data_offsets":[4,4]},"a":{` + f4 + `,"data_offsets":[0,4]}}`, data: 4,
			order: []string{"a", "x", "y"}},
		{name: "only empty tensors", header: `{"e":{` + empty + `,"data_offsets":[0,0]}}`, order: []string{"e"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := rawFile(tt.header, tt.data)
			infos, err := ParseHeader("m.safetensors", f, int64(len(f)))
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, in := range infos {
				got = append(got, in.Name)
			}
			if strings.Join(got, ",") != strings.Join(tt.order, ",") {
				t.Errorf("tensors in order %v, want %v", got, tt.order)
			}
		})
	}
}
