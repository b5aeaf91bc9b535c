package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A preTokenizer cuts the text of a piece into words; the model then
// encodes each word on its own, so no token ever spans two words.
type preTokenizer interface {
	// split appends the words of p (a text piece) to out. It fails only
	// when a regex search hits its bounds.
	split(p piece, out []piece) ([]piece, error)
}

// appendRanges appends the sub-pieces of p at ranges, with text mapped by
// f (nil for none). Only a sub-piece at offset 0 keeps p.first.
func appendRanges(out []piece, p piece, s string, ranges [][2]int, f func(string) string) []piece {
	for _, r := range ranges {
		t := s[r[0]:r[1]]
		if f != nil {
			t = f(t)
		}
		out = append(out, piece{text: t, id: -1, first: p.first && r[0] == 0})
	}
	return out
}

type seqPreTokenizer []preTokenizer

func (s seqPreTokenizer) split(p piece, out []piece) ([]piece, error) {
	cur := []piece{p}
	var next []piece
	for _, pt := range s {
		next = next[:0]
		for _, q := range cur {
			var err error
			if next, err = pt.split(q, next); err != nil {
				return out, err
			}
		}
		cur, next = next, cur
	}
	return append(out, cur...), nil
}

// gpt2Split is the GPT-2 pre-tokenization regex used by ByteLevel: English
// contractions, runs of letters, of digits and of other symbols (each with
// at most one leading space), and whitespace; the look-ahead keeps the last
// space of a run for the word that follows it.
const gpt2Split = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

var gpt2Pattern pattern

func init() {
	re, err := compileRegex(gpt2Split)
	if err != nil {
		panic("tokenizer: GPT-2 split pattern: " + err.Error())
	}
	gpt2Pattern = re
}

// byteLevelPre is the ByteLevel pre-tokenizer: optional prefix space,
// optional GPT-2 split, then every byte mapped to its printable stand-in.
type byteLevelPre struct {
	addPrefixSpace bool
	useRegex       bool
}

func (b byteLevelPre) split(p piece, out []piece) ([]piece, error) {
	s := p.text
	if b.addPrefixSpace && !strings.HasPrefix(s, " ") {
		s = " " + s
	}
	ranges := [][2]int{{0, len(s)}}
	if b.useRegex {
		var err error
		if ranges, err = splitBy(s, gpt2Pattern, splitIsolated, false); err != nil {
			return out, fmt.Errorf("pre_tokenizer ByteLevel: %w", err)
		}
	}
	return appendRanges(out, p, s, ranges, byteLevelEncode), nil
}

// splitPre is the Split pre-tokenizer.
type splitPre struct {
	pat      pattern
	behavior splitBehavior
	invert   bool
}

func (sp splitPre) split(p piece, out []piece) ([]piece, error) {
	ranges, err := splitBy(p.text, sp.pat, sp.behavior, sp.invert)
	if err != nil {
		return out, fmt.Errorf("pre_tokenizer Split: %w", err)
	}
	return appendRanges(out, p, p.text, ranges, nil), nil
}

// metaspacePre is SentencePiece-style pre-tokenization: spaces become the
// replacement character (usually "▁"), which is prepended according to the
// prepend scheme and, with split, starts each word.
type metaspacePre struct {
	rep     string
	scheme  string // "always", "first" or "never"
	doSplit bool
}

func (m metaspacePre) split(p piece, out []piece) ([]piece, error) {
	s := strings.ReplaceAll(p.text, " ", m.rep)
	if !strings.HasPrefix(s, m.rep) && (m.scheme == "always" || (m.scheme == "first" && p.first)) {
		s = m.rep + s
	}
	if s == "" {
		return out, nil
	}
	ranges := [][2]int{{0, len(s)}}
	if m.doSplit {
		ranges, _ = splitBy(s, &literalPattern{lit: m.rep}, splitMergedWithNext, false) // a literal never fails
	}
	return appendRanges(out, p, s, ranges, nil), nil
}

// funcPre splits on characters chosen by a predicate (Digits, Punctuation,
// WhitespaceSplit, CharDelimiterSplit).
type funcPre struct {
	f        funcPattern
	behavior splitBehavior
}

func (fp funcPre) split(p piece, out []piece) ([]piece, error) {
	ranges, _ := splitBy(p.text, fp.f, fp.behavior, false) // a predicate never fails
	return appendRanges(out, p, p.text, ranges, nil), nil
}

// isPunctuation is the reference library's punctuation test: ASCII
// punctuation (which includes symbols such as $ and +) or Unicode P*, as
// of the old Unicode tables of the Rust crate it uses (unicode_categories).
func isPunctuation(r rune) bool {
	if r < utf8.RuneSelf {
		return unicode.IsPunct(r) || unicode.IsSymbol(r)
	}
	if r == 0x166D || r == 0x111C9 {
		// Punctuation in those tables, reclassified since.
		return true
	}
	return unicode.IsPunct(r) && !unicode.Is(newerPunctuation, r)
}

// newerPunctuation lists the characters that are punctuation in Go's
// Unicode tables but not in the reference library's (measured against it
// over all code points).
var newerPunctuation = &unicode.RangeTable{
	R16: []unicode.Range16{
		{Lo: 0x061D, Hi: 0x061D, Stride: 1},
		{Lo: 0x09FD, Hi: 0x09FD, Stride: 1},
		{Lo: 0x0A76, Hi: 0x0A76, Stride: 1},
		{Lo: 0x0C77, Hi: 0x0C77, Stride: 1},
		{Lo: 0x0C84, Hi: 0x0C84, Stride: 1},
		{Lo: 0x1B7D, Hi: 0x1B7E, Stride: 1},
		{Lo: 0x2E43, Hi: 0x2E4F, Stride: 1},
		{Lo: 0x2E52, Hi: 0x2E5D, Stride: 1},
	},
	R32: []unicode.Range32{
		{Lo: 0x10EAD, Hi: 0x10EAD, Stride: 1},
		{Lo: 0x10F55, Hi: 0x10F59, Stride: 1},
		{Lo: 0x10F86, Hi: 0x10F89, Stride: 1},
		{Lo: 0x1144B, Hi: 0x1144F, Stride: 1},
		{Lo: 0x1145A, Hi: 0x1145B, Stride: 1},
		{Lo: 0x1145D, Hi: 0x1145D, Stride: 1},
		{Lo: 0x11660, Hi: 0x1166C, Stride: 1},
		{Lo: 0x116B9, Hi: 0x116B9, Stride: 1},
		{Lo: 0x1183B, Hi: 0x1183B, Stride: 1},
		{Lo: 0x11944, Hi: 0x11946, Stride: 1},
		{Lo: 0x119E2, Hi: 0x119E2, Stride: 1},
		{Lo: 0x11A3F, Hi: 0x11A46, Stride: 1},
		{Lo: 0x11A9A, Hi: 0x11A9C, Stride: 1},
		{Lo: 0x11A9E, Hi: 0x11AA2, Stride: 1},
		{Lo: 0x11B00, Hi: 0x11B09, Stride: 1},
		{Lo: 0x11C41, Hi: 0x11C45, Stride: 1},
		{Lo: 0x11C70, Hi: 0x11C71, Stride: 1},
		{Lo: 0x11EF7, Hi: 0x11EF8, Stride: 1},
		{Lo: 0x11F43, Hi: 0x11F4F, Stride: 1},
		{Lo: 0x11FFF, Hi: 0x11FFF, Stride: 1},
		{Lo: 0x12FF1, Hi: 0x12FF2, Stride: 1},
		{Lo: 0x16E97, Hi: 0x16E9A, Stride: 1},
		{Lo: 0x16FE2, Hi: 0x16FE2, Stride: 1},
		{Lo: 0x1E95E, Hi: 0x1E95F, Stride: 1},
	},
}

// parsePreTokenizer builds a pre-tokenizer from its JSON; nil means none.
func parsePreTokenizer(raw json.RawMessage) (preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	typ, err := typeOf(raw)
	if err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	bad := func(err error) error { return fmt.Errorf("pre_tokenizer %s: %w", typ, err) }
	switch typ {
	case "Sequence":
		var v struct {
			PreTokenizers []json.RawMessage `json:"pretokenizers"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		var seq seqPreTokenizer
		for _, r := range v.PreTokenizers {
			pt, err := parsePreTokenizer(r)
			if err != nil {
				return nil, err
			}
			if pt != nil {
				seq = append(seq, pt)
			}
		}
		return seq, nil
	case "ByteLevel":
		v := struct {
			AddPrefixSpace *bool `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}{}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		return byteLevelPre{addPrefixSpace: boolOr(v.AddPrefixSpace, true), useRegex: boolOr(v.UseRegex, true)}, nil
	case "Split":
		var v struct {
			Pattern  json.RawMessage `json:"pattern"`
			Behavior string          `json:"behavior"`
			Invert   bool            `json:"invert"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		pat, err := parsePattern(v.Pattern)
		if err != nil {
			return nil, bad(err)
		}
		beh, err := parseBehavior(v.Behavior)
		if err != nil {
			return nil, bad(err)
		}
		return splitPre{pat: pat, behavior: beh, invert: v.Invert}, nil
	case "Metaspace":
		var v struct {
			Replacement    *string `json:"replacement"`
			AddPrefixSpace *bool   `json:"add_prefix_space"`
			PrependScheme  *string `json:"prepend_scheme"`
			Split          *bool   `json:"split"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		rep, scheme, err := metaspaceConfig(v.Replacement, v.AddPrefixSpace, v.PrependScheme)
		if err != nil {
			return nil, bad(err)
		}
		return metaspacePre{rep: rep, scheme: scheme, doSplit: boolOr(v.Split, true)}, nil
	case "Digits":
		var v struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		beh := splitContiguous
		if v.Individual {
			beh = splitIsolated
		}
		return funcPre{f: unicode.IsNumber, behavior: beh}, nil
	case "Punctuation":
		var v struct {
			Behavior *string `json:"behavior"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		beh := splitIsolated
		if v.Behavior != nil {
			if beh, err = parseBehavior(*v.Behavior); err != nil {
				return nil, bad(err)
			}
		}
		return funcPre{f: isPunctuation, behavior: beh}, nil
	case "WhitespaceSplit":
		return funcPre{f: unicode.IsSpace, behavior: splitRemoved}, nil
	case "CharDelimiterSplit":
		var v struct {
			Delimiter string `json:"delimiter"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		d, ok := singleRune(v.Delimiter)
		if !ok {
			return nil, bad(fmt.Errorf("delimiter %q is not one character", v.Delimiter))
		}
		return funcPre{f: func(r rune) bool { return r == d }, behavior: splitRemoved}, nil
	}
	return nil, fmt.Errorf("unsupported pre_tokenizer %q", typ)
}

// metaspaceConfig resolves the Metaspace fields shared by the
// pre-tokenizer and the decoder, accepting both the current
// prepend_scheme and the older add_prefix_space.
func metaspaceConfig(replacement *string, addPrefixSpace *bool, prependScheme *string) (rep, scheme string, err error) {
	if replacement == nil {
		return "", "", fmt.Errorf("missing replacement")
	}
	if _, ok := singleRune(*replacement); !ok {
		return "", "", fmt.Errorf("replacement %q is not one character", *replacement)
	}
	scheme = "always"
	if prependScheme != nil {
		scheme = *prependScheme
		if scheme != "always" && scheme != "first" && scheme != "never" {
			return "", "", fmt.Errorf("unsupported prepend_scheme %q", scheme)
		}
	}
	// As in the reference library, an explicit add_prefix_space=false
	// needs prepend_scheme "never" (whose default is "always").
	if addPrefixSpace != nil && !*addPrefixSpace && scheme != "never" {
		return "", "", fmt.Errorf("add_prefix_space false does not match prepend_scheme %q", scheme)
	}
	return *replacement, scheme, nil
}

func singleRune(s string) (rune, bool) {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 || n != len(s) || (r == utf8.RuneError && n == 1) {
		return 0, false
	}
	return r, true
}

func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}
