package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
)

// Bounds on one regex search, so that a tokenizer.json whose pattern
// backtracks catastrophically (^(\w+\s?)*$ on a long line of words that
// ends in a symbol takes exponential time) fails instead of hanging. The
// reference library's engine is bounded too: Oniguruma gives up a search
// after 10,000,000 backtracking retries by default
// (ONIG_DEFAULT_RETRY_LIMIT_IN_MATCH), and the onig crate the Rust
// tokenizers library searches with then panics. regexp2 counts no
// retries, so here the bounds are the time of a search and the size of its
// backtracking stack, and going over either is an error.
const (
	// MaxMatchTime bounds the search for one match. The patterns
	// tokenizers ship (GPT-2, Llama 3, o200k splits) find a match in
	// microseconds, in time linear in the match (100,000 spaces take the
	// GPT-2 split under a millisecond); ten million retries are a fraction
	// of a second of work. One second leaves room for regexp2 being slower
	// than Oniguruma and for a loaded machine, and still ends an
	// exponential search in a second instead of minutes.
	//
	// regexp2 reads the time from a clock goroutine, which on GOARCH=wasm
	// (one thread, no preemption) cannot run while a search does: there
	// the limit never fires, and compileRegex refuses the patterns that
	// can backtrack exponentially instead (see backtrackRisk).
	MaxMatchTime = time.Second
	// MaxBacktrackStack bounds the backtracking stack of one search, in
	// regexp2's slots of one int (8 bytes): 64 MiB. The patterns of the
	// oracle tokenizers need at most about 250 slots whatever the input
	// length (measured on runs of 100 to 100,000 characters); a
	// capturing loop such as (.)* needs about 6 slots a character, so
	// even it still matches over a million characters at once.
	MaxBacktrackStack = 1 << 23
)

// A pattern finds the non-overlapping matches of a Split pre-tokenizer or a
// Replace normalizer/decoder in a string, as byte offsets, in the order the
// reference library finds them.
type pattern interface {
	find(s string) ([][2]int, error)
}

// regexPattern is a regular expression from tokenizer.json. The reference
// library compiles these with Oniguruma (Ruby syntax); regexp2 in its default
// .NET mode accepts the same syntax for what tokenizers use (\p{L}, \p{N},
// look-ahead, (?i:...), \s with Unicode White_Space), and Multiline gives ^
// and $ their Ruby meaning of line anchors.
type regexPattern struct {
	re   *regexp2.Regexp
	expr string // as written in tokenizer.json, for errors
}

func compileRegex(expr string) (*regexPattern, error) {
	if noMatchTimeout {
		if why := backtrackRisk(expr); why != "" {
			return nil, fmt.Errorf("%s; on %s/wasm no time limit can stop a search, so such patterns are refused", why, runtime.GOOS)
		}
	}
	return compileRegexLimits(expr, MaxMatchTime, MaxBacktrackStack)
}

// noMatchTimeout is true where MaxMatchTime cannot interrupt a search: on
// wasm, the Go runtime neither preempts a goroutine nor runs another one
// in parallel, so regexp2's clock stands still while it searches.
const noMatchTimeout = runtime.GOARCH == "wasm"

// compileRegexLimits is compileRegex with other bounds, for tests.
func compileRegexLimits(expr string, timeout time.Duration, stack int) (*regexPattern, error) {
	tr, err := translateRegex(expr)
	if err != nil {
		return nil, err
	}
	re, err := regexp2.Compile(tr, regexp2.Multiline, regexp2.OptionMaxBacktrackingStackSize(stack))
	if err != nil {
		return nil, err
	}
	re.MatchTimeout = timeout
	return &regexPattern{re: re, expr: expr}, nil
}

// RegexLimitError reports a regex search that hit MaxMatchTime or
// MaxBacktrackStack: the tokenizer's pattern is unfit for the input.
type RegexLimitError struct {
	Pattern string // the regex as written in tokenizer.json
	Runes   int    // the length of the text searched, in characters
	Stack   bool   // the stack limit, not the time limit, was hit
}

func (e *RegexLimitError) Error() string {
	why := fmt.Sprintf("found no match within %v (tokenizer.MaxMatchTime)", MaxMatchTime)
	if e.Stack {
		why = fmt.Sprintf("needed more than %d backtracking stack slots (tokenizer.MaxBacktrackStack)", MaxBacktrackStack)
	}
	return fmt.Sprintf("regex %.200q gave up on a %d-character text: it %s", e.Pattern, e.Runes, why)
}

// find iterates like the onig crate's find_iter, which tokenizers uses: an
// empty match right where the previous match ended is skipped by moving on
// one character. regexp2 works on runes, so the string is decoded here once
// (an invalid byte becomes one U+FFFD rune, as in a []rune conversion) and
// rune indices are mapped back to byte offsets.
func (p *regexPattern) find(s string) ([][2]int, error) {
	if s == "" {
		// The reference library never searches an empty string.
		return nil, nil
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
		if err != nil {
			// regexp2's own message quotes the whole input.
			return nil, &RegexLimitError{Pattern: p.expr, Runes: len(runes), Stack: errors.Is(err, regexp2.ErrBacktrackingStackLimit)}
		}
		if m == nil {
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
	return out, nil
}

// literalPattern is a {"String": ...} pattern. The reference library
// escapes it and compiles it as a regex, which for a non-empty literal is
// plain leftmost, non-overlapping substring search.
type literalPattern struct {
	lit string
}

func (p *literalPattern) find(s string) ([][2]int, error) {
	var out [][2]int
	if p.lit == "" {
		// The empty regex matches at every character boundary.
		for i := 0; i < len(s); {
			out = append(out, [2]int{i, i})
			_, n := utf8.DecodeRuneInString(s[i:])
			i += n
		}
		return append(out, [2]int{len(s), len(s)}), nil
	}
	for i := 0; ; {
		j := strings.Index(s[i:], p.lit)
		if j < 0 {
			return out, nil
		}
		out = append(out, [2]int{i + j, i + j + len(p.lit)})
		i += j + len(p.lit)
	}
}

// funcPattern matches single characters chosen by a predicate, each one its
// own match; the reference library uses these for Digits, Punctuation,
// WhitespaceSplit and CharDelimiterSplit.
type funcPattern func(r rune) bool

func (f funcPattern) find(s string) ([][2]int, error) {
	var out [][2]int
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if f(r) {
			out = append(out, [2]int{i, i + n})
		}
		i += n
	}
	return out, nil
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
func findSpans(p pattern, s string, invert bool) ([]span, error) {
	if s == "" {
		return []span{{0, 0, invert}}, nil
	}
	ms, err := p.find(s)
	if err != nil {
		return nil, err
	}
	var out []span
	prev := 0
	for _, m := range ms {
		if m[0] != prev {
			out = append(out, span{prev, m[0], invert})
		}
		out = append(out, span{m[0], m[1], !invert})
		prev = m[1]
	}
	if prev != len(s) {
		out = append(out, span{prev, len(s), invert})
	}
	return out, nil
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
func splitBy(s string, p pattern, behavior splitBehavior, invert bool) ([][2]int, error) {
	spans, err := findSpans(p, s, invert)
	if err != nil {
		return nil, err
	}
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
	return out, nil
}

// replaceAll replaces every match of p in s with content. On an error s is
// returned unchanged.
func replaceAll(s string, p pattern, content string) (string, error) {
	if s == "" {
		return s, nil
	}
	if lp, ok := p.(*literalPattern); ok && lp.lit != "" {
		return strings.ReplaceAll(s, lp.lit, content), nil
	}
	ms, err := p.find(s)
	if err != nil || len(ms) == 0 {
		return s, err
	}
	var sb strings.Builder
	prev := 0
	for _, m := range ms {
		sb.WriteString(s[prev:m[0]])
		sb.WriteString(content)
		prev = m[1]
	}
	sb.WriteString(s[prev:])
	return sb.String(), nil
}
