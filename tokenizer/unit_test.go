package tokenizer

import (
	"slices"
	"strings"
	"sync"
	"testing"
)

// The ids below come from the Rust tokenizers library.
func TestGoTinyTable(t *testing.T) {
	tk := load(t, "mamba2-go-tiny.json")
	cases := []struct {
		text string
		ids  []int
	}{
		{"package main\n\nimport (\n", []int{816, 2021, 199, 199, 811, 326, 199}},
		{"\t\"fmt\"\n)\n", []int{198, 2, 785, 2, 199, 9, 199}},
		{"func main() {\n\tfmt.Println(\"hello, 世界\")\n}\n", []int{342, 2021, 311, 268, 199, 198, 785, 14, 2734, 348, 2556, 12, 221, 161, 117, 245, 164, 244, 235, 420, 199, 93, 199}},
		{"if err != nil {\n\t\treturn nil, err\n\t}", []int{296, 313, 356, 350, 268, 259, 198, 315, 350, 12, 313, 199, 198, 93}},
		{"// Copyright 2009 The Go Authors. All rights reserved.", []int{265, 1001, 3660, 573, 732, 1062, 14, 987, 1036, 1018, 14}},
		{"x := map[string]int{\"a\": 1}<|endoftext|>", []int{88, 294, 924, 59, 372, 61, 276, 484, 65, 647, 366, 93, 0}},
	}
	for _, c := range cases {
		if got := tk.Encode(c.text); !slices.Equal(got, c.ids) {
			t.Errorf("Encode(%q)\n got %v\nwant %v", c.text, got, c.ids)
		}
		if got := tk.Decode(c.ids); got != c.text {
			t.Errorf("Decode(%v) = %q, want %q", c.ids, got, c.text)
		}
	}
	if got := tk.VocabSize(); got != 4096 {
		t.Errorf("VocabSize = %d, want 4096", got)
	}
	if id, ok := tk.TokenID("<|endoftext|>"); !ok || id != 0 {
		t.Errorf("TokenID(<|endoftext|>) = %d, %v", id, ok)
	}
	if id, ok := tk.TokenID("Ġreader"); !ok || id != 4092 {
		t.Errorf("TokenID(Ġreader) = %d, %v", id, ok)
	}
	if s, ok := tk.Token(4095); !ok || s != "label" {
		t.Errorf("Token(4095) = %q, %v", s, ok)
	}
	if !tk.IsSpecial(0) || tk.IsSpecial(1) {
		t.Error("IsSpecial: want only id 0")
	}
}

// TestRoundTrip checks Decode(Encode(s)) == s for byte-level tokenizers,
// which can represent every string, on real Go source and Unicode.
func TestRoundTrip(t *testing.T) {
	texts := []string{
		"", " ", "\n\n\n", "\t\t}\n", "héllo wörld", "日本語のテキスト", "👩‍💻 🇺🇸 🏳️‍🌈", "e\u0301\u0301",
		"\u00a0\u3000\u2028\u0085", "<|endoftext|>x<|endoftext|>", "\x00\x01\x7f", "a" + strings.Repeat(" ", 100) + "b",
		"\ufeffpackage p", "Ünïcödé ñ ß Ω ж ل 한국어", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀",
	}
	texts = append(texts, syntheticGo(1, 3000), syntheticGo(2, 20000))
	for _, name := range []string{"mamba2-go-tiny.json", "bytelevel-bpe.json"} {
		tk := load(t, name)
		for _, s := range texts {
			ids := tk.Encode(s)
			if got := tk.Decode(ids); got != s {
				t.Errorf("%s: round trip of %q gave %q", name, abbrev(s), abbrev(got))
			}
			for _, id := range ids {
				if id < 0 || id >= tk.VocabSize() {
					t.Fatalf("%s: id %d out of range", name, id)
				}
			}
		}
	}
}

func abbrev(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Invalid UTF-8 cannot reach the reference library; here a byte-level
// tokenizer keeps every byte in the ids, and Decode, which returns valid
// UTF-8, shows the bad bytes as U+FFFD.
func TestInvalidUTF8(t *testing.T) {
	tk := load(t, "mamba2-go-tiny.json")
	for _, s := range []string{"\xff", "a\xc3", "\xe4\xb8x", "ok\x80\x80 go"} {
		ids := tk.Encode(s)
		var raw []byte
		for _, id := range ids {
			tok, _ := tk.Token(id)
			for _, r := range tok {
				raw = append(raw, runeToByte[r])
			}
		}
		if string(raw) != s {
			t.Errorf("Encode(%q) holds bytes %q", s, raw)
		}
		if got, want := tk.Decode(ids), lossyUTF8([]byte(s)); got != want {
			t.Errorf("Decode(Encode(%q)) = %q, want %q", s, got, want)
		}
	}
}

func TestDecodeInvalidIDs(t *testing.T) {
	tk := load(t, "bytelevel-bpe.json")
	ids := []int{-1, 1842, 1 << 40, 310, 2048, 13}
	if got, want := tk.Decode(ids), tk.Decode([]int{1842, 310, 13}); got != want {
		t.Errorf("Decode skipping invalid ids = %q, want %q", got, want)
	}
	s, err := tk.DecodeChecked(ids)
	if err == nil || !strings.Contains(err.Error(), "invalid token id") {
		t.Errorf("DecodeChecked error = %v", err)
	}
	if s != "Hello," {
		t.Errorf("DecodeChecked text = %q", s)
	}
	if _, ok := tk.Token(-5); ok {
		t.Error("Token(-5) ok")
	}
	if got := tk.Decode(nil); got != "" {
		t.Errorf("Decode(nil) = %q", got)
	}
}

func TestSkipSpecial(t *testing.T) {
	tk := load(t, "bytelevel-bpe.json")
	ids := tk.Encode("<|endoftext|>Hi<|padding|>")
	if ids[0] != 0 || ids[len(ids)-1] != 1 {
		t.Fatalf("special tokens not matched: %v", ids)
	}
	if got := tk.DecodeWith(ids, true); got != "Hi" {
		t.Errorf("DecodeWith(skip) = %q", got)
	}
	if got := tk.Decode(ids); got != "<|endoftext|>Hi<|padding|>" {
		t.Errorf("Decode = %q", got)
	}
}

func TestConcurrentEncode(t *testing.T) {
	tk := load(t, "mamba2-go-tiny.json")
	srcs := []string{syntheticGo(3, 5000), syntheticGo(4, 5000), syntheticGo(5, 5000)}
	want := make([][]int, len(srcs))
	for i, s := range srcs {
		want[i] = tk.Encode(s)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, s := range srcs {
				if got := tk.Encode(s); !slices.Equal(got, want[i]) {
					t.Errorf("concurrent Encode differs for source %d", i)
				}
			}
		}()
	}
	wg.Wait()
}

func TestLossyUTF8(t *testing.T) {
	cases := []struct{ in, want string }{
		{"abc", "abc"},
		// The Unicode standard's example for maximal subparts.
		{"\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64", "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd"},
		{"\xF0\x80\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xED\xA0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xE4\xB8", "\uFFFD"},
		{"\xE4\xB8\xAD", "中"},
		{"\xF4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xC0\xAF", "\uFFFD\uFFFD"},
		{"\xFF", "\uFFFD"},
	}
	for _, c := range cases {
		if got := lossyUTF8([]byte(c.in)); got != c.want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestByteTable(t *testing.T) {
	seen := map[rune]bool{}
	for b := 0; b < 256; b++ {
		r := byteToRune[b]
		if seen[r] || runeToByte[r] != byte(b) {
			t.Fatalf("byte %d maps to %U, not a bijection", b, r)
		}
		seen[r] = true
	}
	if byteToRune[' '] != 'Ġ' || byteToRune['\n'] != 'Ċ' || byteToRune['\t'] != 'ĉ' || byteToRune['A'] != 'A' {
		t.Error("byte table differs from GPT-2's")
	}
}

func TestTranslateRegex(t *testing.T) {
	ok := []struct{ in, want string }{
		{`'s|\p{L}+|\s+(?!\S)`, `'s|\p{L}+|\s+(?!\S)`},
		{`(?m).`, `(?s).`},
		{`(?i:'s|'t)`, `(?i:'s|'t)`},
		{`\x{41}\x{1F600}`, "\\u0041\U0001F600"},
		{`[]a]`, `[]a]`},
		{`[^]a]`, `[^]a]`},
	}
	for _, c := range ok {
		got, err := translateRegex(c.in)
		if err != nil || got != c.want {
			t.Errorf("translateRegex(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`[[:alpha:]]`, `[a-z&&[^e]]`, `(?i)\p{Lu}`, `(?i:x\p{Ll})`, `[\W]`, `(?s).`, `x\`} {
		if got, err := translateRegex(bad); err == nil {
			t.Errorf("translateRegex(%q) = %q, want an error", bad, got)
		}
	}
	// Case-insensitivity ends with its group.
	if _, err := translateRegex(`(?i:'s)\p{Lu}`); err != nil {
		t.Errorf("scoped (?i:) rejected: %v", err)
	}
	// \w and \b follow Oniguruma: U+200D is not a word character, ² is.
	p, err := compileRegex(`\w+`)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.find("a\u200db²"); err != nil || len(got) != 2 || got[1] != [2]int{4, 7} {
		t.Errorf(`\w+ matches %v, %v`, got, err)
	}
}

func TestSplitBehaviors(t *testing.T) {
	// "a-b--c" split on "-".
	dash := &literalPattern{lit: "-"}
	s := "a-b--c"
	cases := []struct {
		b    splitBehavior
		want []string
	}{
		{splitRemoved, []string{"a", "b", "c"}},
		{splitIsolated, []string{"a", "-", "b", "-", "-", "c"}},
		{splitMergedWithPrevious, []string{"a-", "b-", "-", "c"}},
		{splitMergedWithNext, []string{"a", "-b", "-", "-c"}},
		{splitContiguous, []string{"a", "-", "b", "--", "c"}},
	}
	for _, c := range cases {
		var got []string
		ranges, err := splitBy(s, dash, c.b, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range ranges {
			got = append(got, s[r[0]:r[1]])
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("behavior %d: got %q, want %q", c.b, got, c.want)
		}
	}
}

func TestGPT2Split(t *testing.T) {
	// Byte offsets must survive multi-byte runes around the matches.
	s := "héllo  wörld's 日本 👩‍💻!!  \n"
	var got []string
	ranges, err := splitBy(s, gpt2Pattern, splitIsolated, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		got = append(got, s[r[0]:r[1]])
	}
	want := []string{"héllo", " ", " wörld", "'s", " 日本", " 👩\u200d💻!!", "  \n"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
