package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// testdata/expected.json holds, for each fixture tokenizer, texts with the
// ids and decoded strings produced by the Rust tokenizers library (through
// transformers): encode(text) with add_special_tokens=true and
// decode(ids) with skip_special_tokens=false.
type expectedCase struct {
	Text    string `json:"text"`
	IDs     []int  `json:"ids"`
	Decoded string `json:"decoded"`
}

func readExpected(t testing.TB, name string) map[string][]expectedCase {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var exp map[string][]expectedCase
	if err := json.Unmarshal(data, &exp); err != nil {
		t.Fatal(err)
	}
	return exp
}

var (
	loadedMu sync.Mutex
	loaded   = map[string]*Tokenizer{}
)

// load returns the tokenizer in testdata/name, loading each file once.
func load(t testing.TB, name string) *Tokenizer {
	t.Helper()
	loadedMu.Lock()
	defer loadedMu.Unlock()
	if tk, ok := loaded[name]; ok {
		return tk
	}
	tk, err := LoadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	loaded[name] = tk
	return tk
}

func TestExpected(t *testing.T) {
	exp := readExpected(t, "expected.json")
	if len(exp) != 2 {
		t.Fatalf("expected.json has %d tokenizers, want 2", len(exp))
	}
	for file, cases := range exp {
		tk := load(t, file)
		for _, c := range cases {
			if got := tk.Encode(c.Text); !slices.Equal(got, c.IDs) {
				t.Errorf("%s: Encode(%q)\n got %v\nwant %v", file, c.Text, got, c.IDs)
			}
			if got := tk.Decode(c.IDs); got != c.Decoded {
				t.Errorf("%s: Decode(%v) = %q, want %q", file, c.IDs, got, c.Decoded)
			}
			got, err := tk.DecodeChecked(c.IDs)
			if err != nil || got != c.Decoded {
				t.Errorf("%s: DecodeChecked(%v) = %q, %v", file, c.IDs, got, err)
			}
		}
	}
}
