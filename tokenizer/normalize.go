package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
)

// piece is a stretch of the input on its way through the pipeline: either an
// added token already resolved to id, or text (id < 0) still to be
// normalized, pre-tokenized and given to the model.
type piece struct {
	text string
	id   int
	// first is set when the piece starts at the very beginning of the
	// input. Metaspace's prepend_scheme "first" depends on it: the
	// reference library prepends "▁" only to the piece whose original
	// offset is 0, not to the text after a leading special token. (The
	// library tracks full offset alignments; this flag is exact except
	// for a Metaspace "first" placed after another splitting
	// pre-tokenizer that cuts inside text inserted at offset 0.)
	first bool
}

// A normalizer rewrites the text of a piece before pre-tokenization. It
// runs separately on each stretch of text between raw-matched added tokens,
// as in the reference library (so Prepend also prepends after a special
// token).
type normalizer interface {
	// normalize fails only when a regex search hits its bounds.
	normalize(p piece) (piece, error)
}

type seqNormalizer []normalizer

func (s seqNormalizer) normalize(p piece) (piece, error) {
	for _, n := range s {
		var err error
		if p, err = n.normalize(p); err != nil {
			return p, err
		}
	}
	return p, nil
}

// prependNormalizer prepends a string to non-empty text (SentencePiece's
// "dummy prefix", usually "▁").
type prependNormalizer struct{ prefix string }

func (n prependNormalizer) normalize(p piece) (piece, error) {
	if p.text != "" {
		p.text = n.prefix + p.text
	}
	return p, nil
}

type replaceNormalizer struct {
	pat     pattern
	content string
}

func (n replaceNormalizer) normalize(p piece) (piece, error) {
	var err error
	if p.text, err = replaceAll(p.text, n.pat, n.content); err != nil {
		return p, fmt.Errorf("normalizer Replace: %w", err)
	}
	return p, nil
}

// lowercaseNormalizer applies Rust's char::to_lowercase to each character.
// It is Go's simple lowercase mapping except for U+0130, whose full
// lowercase form has two characters.
type lowercaseNormalizer struct{}

func (lowercaseNormalizer) normalize(p piece) (piece, error) {
	p.text = strings.Map(unicode.ToLower, strings.ReplaceAll(p.text, "\u0130", "i\u0307"))
	return p, nil
}

// stripNormalizer removes whitespace from either end.
type stripNormalizer struct{ left, right bool }

func (n stripNormalizer) normalize(p piece) (piece, error) {
	if n.left {
		t := strings.TrimLeftFunc(p.text, unicode.IsSpace)
		if len(t) != len(p.text) {
			// The text now starts after the original offset 0.
			p.first = false
		}
		p.text = t
	}
	if n.right {
		p.text = strings.TrimRightFunc(p.text, unicode.IsSpace)
	}
	return p, nil
}

// byteLevelNormalizer is the ByteLevel normalizer: the byte-to-character
// mapping of the ByteLevel pre-tokenizer, without any splitting.
type byteLevelNormalizer struct{}

func (byteLevelNormalizer) normalize(p piece) (piece, error) {
	p.text = byteLevelEncode(p.text)
	return p, nil
}

// parseNormalizer builds a normalizer from its JSON; nil means none.
func parseNormalizer(raw json.RawMessage) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	typ, err := typeOf(raw)
	if err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	switch typ {
	case "Sequence":
		var v struct {
			Normalizers []json.RawMessage `json:"normalizers"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("normalizer Sequence: %w", err)
		}
		var seq seqNormalizer
		for _, r := range v.Normalizers {
			n, err := parseNormalizer(r)
			if err != nil {
				return nil, err
			}
			if n != nil {
				seq = append(seq, n)
			}
		}
		return seq, nil
	case "Prepend":
		var v struct {
			Prepend *string `json:"prepend"`
		}
		if err := json.Unmarshal(raw, &v); err != nil || v.Prepend == nil {
			return nil, fmt.Errorf("normalizer Prepend: want a string \"prepend\" (%v)", err)
		}
		return prependNormalizer{prefix: *v.Prepend}, nil
	case "Replace":
		var v struct {
			Pattern json.RawMessage `json:"pattern"`
			Content *string         `json:"content"`
		}
		if err := json.Unmarshal(raw, &v); err != nil || v.Content == nil {
			return nil, fmt.Errorf("normalizer Replace: want \"pattern\" and a string \"content\" (%v)", err)
		}
		pat, err := parsePattern(v.Pattern)
		if err != nil {
			return nil, fmt.Errorf("normalizer Replace: %w", err)
		}
		return replaceNormalizer{pat: pat, content: *v.Content}, nil
	case "Lowercase":
		return lowercaseNormalizer{}, nil
	case "Strip":
		var v struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("normalizer Strip: %w", err)
		}
		return stripNormalizer{left: v.Left, right: v.Right}, nil
	case "ByteLevel":
		return byteLevelNormalizer{}, nil
	}
	return nil, fmt.Errorf("unsupported normalizer %q", typ)
}
