package tokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A decoder turns the token strings of a sequence of ids back into text.
// Decoders work on the whole list because some of them join or reorder
// (ByteFallback, Fuse), and a Sequence feeds each one's output to the next.
type decoder interface {
	// decodeChain fails only when a regex search hits its bounds; the
	// tokens are then returned as they came.
	decodeChain(tokens []string) ([]string, error)
}

type seqDecoder []decoder

func (s seqDecoder) decodeChain(tokens []string) ([]string, error) {
	for _, d := range s {
		var err error
		if tokens, err = d.decodeChain(tokens); err != nil {
			return tokens, err
		}
	}
	return tokens, nil
}

// byteLevelDecoder undoes the byte-to-character mapping and reads the bytes
// as UTF-8, lossily: a token list cut inside a character decodes to U+FFFD
// rather than failing. A token containing a character outside the byte map
// (an added token like "<|im_start|>" is fine, "é" is not) contributes its
// raw UTF-8 instead.
type byteLevelDecoder struct{}

func (byteLevelDecoder) decodeChain(tokens []string) ([]string, error) {
	var buf []byte
	for _, t := range tokens {
		start := len(buf)
		for _, r := range t {
			b, ok := runeToByte[r]
			if !ok {
				buf = append(buf[:start], t...)
				break
			}
			buf = append(buf, b)
		}
	}
	return []string{lossyUTF8(buf)}, nil
}

// metaspaceDecoder turns the replacement character back into spaces. In
// the first token it drops it instead (unless the scheme is "never"),
// removing the space the pre-tokenizer prepended.
type metaspaceDecoder struct {
	rep    rune
	scheme string
}

func (d metaspaceDecoder) decodeChain(tokens []string) ([]string, error) {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		repl := " "
		if i == 0 && d.scheme != "never" {
			repl = ""
		}
		out[i] = strings.ReplaceAll(t, string(d.rep), repl)
	}
	return out, nil
}

type replaceDecoder struct {
	pat     pattern
	content string
}

func (d replaceDecoder) decodeChain(tokens []string) ([]string, error) {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		var err error
		if out[i], err = replaceAll(t, d.pat, d.content); err != nil {
			return tokens, fmt.Errorf("decoder Replace: %w", err)
		}
	}
	return out, nil
}

// byteFallbackDecoder turns runs of "<0xXX>" tokens into the string their
// bytes spell. A run that is not valid UTF-8 becomes one U+FFFD per byte,
// as in the reference library.
type byteFallbackDecoder struct{}

func (byteFallbackDecoder) decodeChain(tokens []string) ([]string, error) {
	out := make([]string, 0, len(tokens))
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			for range run {
				out = append(out, "\uFFFD")
			}
		}
		run = run[:0]
	}
	for _, t := range tokens {
		if b, ok := fallbackByte(t); ok {
			run = append(run, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out, nil
}

// fallbackByte parses "<0xXX>". The two characters are read with Rust's
// u8::from_str_radix, which also takes a leading '+'.
func fallbackByte(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	h := t[3:5]
	if h[0] == '+' {
		h = h[1:]
	}
	if h == "" || h[0] == '+' || h[0] == '-' {
		return 0, false
	}
	v, err := strconv.ParseUint(h, 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}

// fuseDecoder joins all tokens into one.
type fuseDecoder struct{}

func (fuseDecoder) decodeChain(tokens []string) ([]string, error) {
	return []string{strings.Join(tokens, "")}, nil
}

// stripDecoder removes up to start copies of content from the beginning of
// each token and up to stop from its end (SentencePiece decoders use it to
// drop the dummy-prefix space).
type stripDecoder struct {
	content     rune
	start, stop int
}

func (d stripDecoder) decodeChain(tokens []string) ([]string, error) {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		rs := []rune(t)
		lo := 0
		for lo < d.start && lo < len(rs) && rs[lo] == d.content {
			lo++
		}
		hi := len(rs)
		for k := 0; k < d.stop && hi > lo && rs[hi-1] == d.content; k++ {
			hi--
		}
		out[i] = string(rs[lo:hi])
	}
	return out, nil
}

// bpeSuffixDecoder is the "BPEDecoder": the end-of-word suffix becomes a
// space, except in the last token.
type bpeSuffixDecoder struct{ suffix string }

func (d bpeSuffixDecoder) decodeChain(tokens []string) ([]string, error) {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		repl := " "
		if i == len(tokens)-1 {
			repl = ""
		}
		out[i] = strings.ReplaceAll(t, d.suffix, repl)
	}
	return out, nil
}

// parseDecoder builds a decoder from its JSON; nil means none.
func parseDecoder(raw json.RawMessage) (decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	typ, err := typeOf(raw)
	if err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	bad := func(err error) error { return fmt.Errorf("decoder %s: %w", typ, err) }
	switch typ {
	case "Sequence":
		var v struct {
			Decoders []json.RawMessage `json:"decoders"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		var seq seqDecoder
		for _, r := range v.Decoders {
			d, err := parseDecoder(r)
			if err != nil {
				return nil, err
			}
			if d != nil {
				seq = append(seq, d)
			}
		}
		return seq, nil
	case "ByteLevel":
		return byteLevelDecoder{}, nil
	case "Metaspace":
		var v struct {
			Replacement    *string `json:"replacement"`
			AddPrefixSpace *bool   `json:"add_prefix_space"`
			PrependScheme  *string `json:"prepend_scheme"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		rep, scheme, err := metaspaceConfig(v.Replacement, v.AddPrefixSpace, v.PrependScheme)
		if err != nil {
			return nil, bad(err)
		}
		r, _ := singleRune(rep)
		return metaspaceDecoder{rep: r, scheme: scheme}, nil
	case "Replace":
		var v struct {
			Pattern json.RawMessage `json:"pattern"`
			Content *string         `json:"content"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		if v.Content == nil {
			return nil, bad(fmt.Errorf("missing content"))
		}
		pat, err := parsePattern(v.Pattern)
		if err != nil {
			return nil, bad(err)
		}
		return replaceDecoder{pat: pat, content: *v.Content}, nil
	case "ByteFallback":
		return byteFallbackDecoder{}, nil
	case "Fuse":
		return fuseDecoder{}, nil
	case "Strip":
		var v struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		c, ok := singleRune(v.Content)
		if !ok {
			return nil, bad(fmt.Errorf("content %q is not one character", v.Content))
		}
		if v.Start < 0 || v.Stop < 0 {
			return nil, bad(fmt.Errorf("negative start or stop"))
		}
		return stripDecoder{content: c, start: v.Start, stop: v.Stop}, nil
	case "BPEDecoder":
		v := struct {
			Suffix *string `json:"suffix"`
		}{}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		suffix := "</w>"
		if v.Suffix != nil {
			suffix = *v.Suffix
		}
		return bpeSuffixDecoder{suffix: suffix}, nil
	}
	return nil, fmt.Errorf("unsupported decoder %q", typ)
}
