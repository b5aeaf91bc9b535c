package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
)

// A pattern finds the non-overlapping matches of a Split pre-tokenizer or a
// Replace normalizer/decoder in a string, as byte offsets, in the order the
// reference library finds them.
type pattern interface {
	find(s string) [][2]int
}

// regexPattern is a regular expression from tokenizer.json. The reference
// library compiles these with Oniguruma (Ruby syntax); regexp2 in its default
// .NET mode accepts the same syntax for what tokenizers use (\p{L}, \p{N},
// look-ahead, (?i:...), \s with Unicode White_Space), and Multiline gives ^
// and $ their Ruby meaning of line anchors.
type regexPattern struct {
	re *regexp2.Regexp
}

func compileRegex(expr string) (*regexPattern, error) {
	expr, err := translateRegex(expr)
	if err != nil {
		return nil, err
	}
	re, err := regexp2.Compile(expr, regexp2.Multiline,
		// With a stack limit regexp2 gives up (an error, not a
		// match) on input needing deep backtracking; Oniguruma as
		// the reference library uses it does not.
		regexp2.OptionMaxBacktrackingStackSize(-1))
	if err != nil {
		return nil, err
	}
	return &regexPattern{re: re}, nil
}

// find iterates like the onig crate's find_iter, which tokenizers uses: an
// empty match right where the previous match ended is skipped by moving on
// one character. regexp2 works on runes, so the string is decoded here once
// (an invalid byte becomes one U+FFFD rune, as in a []rune conversion) and
// rune indices are mapped back to byte offsets.
func (p *regexPattern) find(s string) [][2]int {
	if s == "" {
		// The reference library never searches an empty string.
		return nil
	}
	runes := make([]rune, 0, len(s))
	offs := make([]int, 0, len(s)+1)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		runes = append(runes, r)
		offs = append(offs, i)
		i += n
	}
	offs = append(offs, len(s))

	var out [][2]int
	lastEnd, lastMatchEnd := 0, -1
	for lastEnd <= len(runes) {
		m, err := p.re.FindRunesMatchStartingAt(runes, lastEnd)
		if err != nil || m == nil {
			// Without a stack limit or timeout regexp2 reports no
			// errors; stopping is the only safe answer if it did.
			break
		}
		start, end := m.RuneIndex, m.RuneIndex+m.RuneLength
		if start == end && end == lastMatchEnd {
			lastEnd++
			continue
		}
		lastEnd, lastMatchEnd = end, end
		out = append(out, [2]int{offs[start], offs[end]})
	}
	return out
}

// literalPattern is a {"String": ...} pattern. The reference library
// escapes it and compiles it as a regex, which for a non-empty literal is
// plain leftmost, non-overlapping substring search.
type literalPattern struct {
	lit string
}

func (p *literalPattern) find(s string) [][2]int {
	var out [][2]int
	if p.lit == "" {
		// The empty regex matches at every character boundary.
		for i := 0; i < len(s); {
			out = append(out, [2]int{i, i})
			_, n := utf8.DecodeRuneInString(s[i:])
			i += n
		}
		return append(out, [2]int{len(s), len(s)})
	}
	for i := 0; ; {
		j := strings.Index(s[i:], p.lit)
		if j < 0 {
			return out
		}
		out = append(out, [2]int{i + j, i + j + len(p.lit)})
		i += j + len(p.lit)
	}
}

// funcPattern matches single characters chosen by a predicate, each one its
// own match; the reference library uses these for Digits, Punctuation,
// WhitespaceSplit and CharDelimiterSplit.
type funcPattern func(r rune) bool

func (f funcPattern) find(s string) [][2]int {
	var out [][2]int
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if f(r) {
			out = append(out, [2]int{i, i + n})
		}
		i += n
	}
	return out
}

// parsePattern reads the {"String": "..."} or {"Regex": "..."} objects used
// by Split, Replace and the Replace decoder.
func parsePattern(raw json.RawMessage) (pattern, error) {
	var p struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("pattern: %w", err)
	}
	switch {
	case p.String != nil && p.Regex == nil:
		return &literalPattern{lit: *p.String}, nil
	case p.Regex != nil && p.String == nil:
		re, err := compileRegex(*p.Regex)
		if err != nil {
			return nil, fmt.Errorf("unsupported regex %q: %w", *p.Regex, err)
		}
		return re, nil
	}
	return nil, errors.New(`pattern: want exactly one of "String" or "Regex"`)
}

// span is a piece of a string with a flag telling whether it was a match.
type span struct {
	start, end int
	match      bool
}

// findSpans covers s with its matches and the gaps between them, like the
// Pattern::find_matches of the reference library (including a single empty,
// unmatched span for the empty string). invert swaps the flags.
func findSpans(p pattern, s string, invert bool) []span {
	if s == "" {
		return []span{{0, 0, invert}}
	}
	var out []span
	prev := 0
	for _, m := range p.find(s) {
		if m[0] != prev {
			out = append(out, span{prev, m[0], invert})
		}
		out = append(out, span{m[0], m[1], !invert})
		prev = m[1]
	}
	if prev != len(s) {
		out = append(out, span{prev, len(s), invert})
	}
	return out
}

// splitBehavior says what a split does with the delimiters it finds.
type splitBehavior int

const (
	splitRemoved splitBehavior = iota
	splitIsolated
	splitMergedWithPrevious
	splitMergedWithNext
	splitContiguous
)

func parseBehavior(s string) (splitBehavior, error) {
	switch s {
	case "Removed":
		return splitRemoved, nil
	case "Isolated":
		return splitIsolated, nil
	case "MergedWithPrevious":
		return splitMergedWithPrevious, nil
	case "MergedWithNext":
		return splitMergedWithNext, nil
	case "Contiguous":
		return splitContiguous, nil
	}
	return 0, fmt.Errorf("unsupported split behavior %q", s)
}

// splitBy cuts s at the matches of p according to behavior and returns the
// non-empty pieces as byte ranges, exactly as NormalizedString::split in the
// reference library groups its spans.
func splitBy(s string, p pattern, behavior splitBehavior, invert bool) [][2]int {
	spans := findSpans(p, s, invert)
	type part struct {
		start, end int
		drop       bool
	}
	var parts []part
	switch behavior {
	case splitIsolated:
		for _, sp := range spans {
			parts = append(parts, part{sp.start, sp.end, false})
		}
	case splitRemoved:
		for _, sp := range spans {
			parts = append(parts, part{sp.start, sp.end, sp.match})
		}
	case splitContiguous:
		prevMatch := false
		for _, sp := range spans {
			if sp.match == prevMatch && len(parts) > 0 {
				parts[len(parts)-1].end = sp.end
			} else {
				parts = append(parts, part{sp.start, sp.end, false})
			}
			prevMatch = sp.match
		}
	case splitMergedWithPrevious:
		prevMatch := false
		for _, sp := range spans {
			if sp.match && !prevMatch && len(parts) > 0 {
				parts[len(parts)-1].end = sp.end
			} else {
				parts = append(parts, part{sp.start, sp.end, false})
			}
			prevMatch = sp.match
		}
	case splitMergedWithNext:
		// Walk backwards so that a delimiter joins the piece after it.
		prevMatch := false
		for i := len(spans) - 1; i >= 0; i-- {
			sp := spans[i]
			if sp.match && !prevMatch && len(parts) > 0 {
				parts[len(parts)-1].start = sp.start
			} else {
				parts = append(parts, part{sp.start, sp.end, false})
			}
			prevMatch = sp.match
		}
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	out := make([][2]int, 0, len(parts))
	for _, p := range parts {
		if !p.drop && p.end > p.start {
			out = append(out, [2]int{p.start, p.end})
		}
	}
	return out
}

// replaceAll replaces every match of p in s with content.
func replaceAll(s string, p pattern, content string) string {
	if s == "" {
		return s
	}
	if lp, ok := p.(*literalPattern); ok && lp.lit != "" {
		return strings.ReplaceAll(s, lp.lit, content)
	}
	ms := p.find(s)
	if len(ms) == 0 {
		return s
	}
	var sb strings.Builder
	prev := 0
	for _, m := range ms {
		sb.WriteString(s[prev:m[0]])
		sb.WriteString(content)
		prev = m[1]
	}
	sb.WriteString(s[prev:])
	return sb.String()
}
