package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// minimal is a tiny valid tokenizer: byte-level, with "a b" merged.
const minimal = `{
  "version": "1.0",
  "added_tokens": [{"id": 3, "content": "<eos>", "special": true, "normalized": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": null,
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<eos>": 3, "Ġ": 4}, "merges": ["a b"]}
}`

// withField returns minimal with one top-level field replaced by raw JSON
// (or removed when raw is "").
func withField(t *testing.T, field, raw string) string {
	t.Helper()
	var top map[string]json.RawMessage
	must(t, json.Unmarshal([]byte(minimal), &top))
	if raw == "" {
		delete(top, field)
	} else {
		top[field] = json.RawMessage(raw)
	}
	out, err := json.Marshal(top)
	must(t, err)
	return string(out)
}

func TestLoadMinimal(t *testing.T) {
	tk, err := Load(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if got := tk.Encode("ab a<eos>"); !slices.Equal(got, []int{2, 4, 0, 3}) {
		t.Errorf("Encode = %v", got)
	}
	if got := tk.Decode([]int{2, 4, 0, 3}); got != "ab a<eos>" {
		t.Errorf("Decode = %q", got)
	}
	if tk.VocabSize() != 5 {
		t.Errorf("VocabSize = %d", tk.VocabSize())
	}
}

func TestLoadErrors(t *testing.T) {
	model := func(m string) string { return withField(t, "model", m) }
	cases := []struct {
		name, json, want string
	}{
		{"empty", "", "tokenizer.json"},
		{"truncated", minimal[:len(minimal)/2], "tokenizer.json"},
		{"array", "[]", "tokenizer.json"},
		{"garbage", "\x00\xff{{", "tokenizer.json"},
		{"version", withField(t, "version", `"2.0"`), "version"},
		{"no model", withField(t, "model", ""), "model"},
		{"model type", model(`{"type": "WordPiece", "vocab": {}}`), `unsupported model "WordPiece"`},
		{"vocab type", model(`{"type": "BPE", "vocab": ["a"], "merges": []}`), "model"},
		{"vocab id type", model(`{"type": "BPE", "vocab": {"a": "0"}, "merges": []}`), "model"},
		{"negative id", model(`{"type": "BPE", "vocab": {"a": -1}, "merges": []}`), "out of range"},
		{"huge id", model(`{"type": "BPE", "vocab": {"a": 1099511627776}, "merges": []}`), "out of range"},
		{"sparse ids", model(`{"type": "BPE", "vocab": {"a": 0, "b": 5000}, "merges": []}`), "sparse"},
		{"duplicate id", model(`{"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}`), "used by both"},
		{"merge unknown", model(`{"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}`), "not in vocab"},
		{"merge result", model(`{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}`), `makes "ab"`},
		{"merge parts", model(`{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b c"]}`), "merge 0"},
		{"merge pair", model(`{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a"]]}`), "merge 0"},
		{"merges type", model(`{"type": "BPE", "vocab": {"a": 0}, "merges": 7}`), "merges"},
		{"unk", model(`{"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}`), "unk_token"},
		{"dropout", model(`{"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}`), "dropout"},
		{"normalizer", withField(t, "normalizer", `{"type": "NFC"}`), `unsupported normalizer "NFC"`},
		{"normalizer in seq", withField(t, "normalizer", `{"type": "Sequence", "normalizers": [{"type": "NFKC"}]}`), `unsupported normalizer "NFKC"`},
		{"normalizer type", withField(t, "normalizer", `{"prepend": "x"}`), "normalizer"},
		{"pre_tokenizer", withField(t, "pre_tokenizer", `{"type": "Whitespace"}`), `unsupported pre_tokenizer "Whitespace"`},
		{"split regex", withField(t, "pre_tokenizer", `{"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"}`), "regex"},
		{"split posix", withField(t, "pre_tokenizer", `{"type": "Split", "pattern": {"Regex": "[[:alpha:]]"}, "behavior": "Isolated"}`), "POSIX"},
		{"split behavior", withField(t, "pre_tokenizer", `{"type": "Split", "pattern": {"String": "a"}, "behavior": "Sideways"}`), "behavior"},
		{"split pattern", withField(t, "pre_tokenizer", `{"type": "Split", "pattern": {"String": "a", "Regex": "b"}, "behavior": "Isolated"}`), "pattern"},
		{"metaspace", withField(t, "pre_tokenizer", `{"type": "Metaspace", "replacement": "▁", "add_prefix_space": false}`), "prepend_scheme"},
		{"metaspace rep", withField(t, "pre_tokenizer", `{"type": "Metaspace", "replacement": "ab"}`), "replacement"},
		{"decoder", withField(t, "decoder", `{"type": "WordPiece"}`), `unsupported decoder "WordPiece"`},
		{"strip", withField(t, "decoder", `{"type": "Strip", "content": "ab", "start": 1, "stop": 0}`), "Strip"},
		{"post_processor", withField(t, "post_processor", `{"type": "Foo"}`), `unsupported post_processor "Foo"`},
		{"template", withField(t, "post_processor", `{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {}}`), "missing special token"},
		{"added id", withField(t, "added_tokens", `[{"id": -3, "content": "x"}]`), "out of range"},
		{"added type", withField(t, "added_tokens", `[{"id": 3, "content": 5}]`), "added_tokens"},
		{"added no id", withField(t, "added_tokens", `[{"content": "x"}]`), "missing id"},
	}
	for _, c := range cases {
		_, err := Load(strings.NewReader(c.json))
		if err == nil {
			t.Errorf("%s: Load succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
	if _, err := LoadFile(filepath.Join("testdata", "no-such-file.json")); err == nil {
		t.Error("LoadFile of a missing file succeeded")
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(minimal))
	for _, name := range []string{"bytelevel-bpe.json", "metaspace-bpe.json", "mamba2-go-tiny.json", "suffix-bpe.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		for _, n := range []int{1, 100, 1000, len(data) / 2, len(data) - 1} {
			f.Add(data[:n])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tk, err := Load(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Whatever loads must encode and decode without panicking; the
		// only error Encode may meet is a regex giving up.
		ids, err := tk.EncodeChecked("Hello, wörld! 123 <s> <|endoftext|>  \n\t👩‍💻")
		var le *RegexLimitError
		if err != nil && !errors.As(err, &le) {
			t.Fatalf("EncodeChecked: %v", err)
		}
		for _, id := range ids {
			if _, ok := tk.Token(id); !ok || id >= tk.VocabSize() {
				t.Fatalf("Encode returned id %d without a token", id)
			}
		}
		tk.Decode(append(ids, -1, 0, 1, 1<<20))
		tk.DecodeWith(ids, true)
	})
}

func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", " ", "package main\n\nimport (\n", "héllo 世界 👩‍💻", "<|endoftext|>", "a  \n\n\tb", "don't", "\u00a0\u3000x"} {
		f.Add(s)
	}
	tiny := load(f, "mamba2-go-tiny.json")
	bl := load(f, "bytelevel-bpe.json")
	ms := load(f, "metaspace-bpe.json")
	f.Fuzz(func(t *testing.T, s string) {
		for _, tk := range []*Tokenizer{tiny, bl} {
			ids, err := tk.EncodeChecked(s)
			if err != nil {
				t.Fatalf("EncodeChecked(%q): %v", s, err)
			}
			got := tk.Decode(ids)
			if utf8.ValidString(s) && got != s {
				t.Fatalf("Decode(Encode(%q)) = %q", s, got)
			}
		}
		// SentencePiece-style text does not always round-trip ("▁"
		// decodes as a space); it must still encode in range.
		for _, id := range ms.Encode(s) {
			if id < 0 || id >= ms.VocabSize() {
				t.Fatalf("id %d out of range", id)
			}
		}
	})
}
