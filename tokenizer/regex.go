package tokenizer

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// The reference library compiles tokenizer.json regexes with Oniguruma in
// its Ruby-like default syntax; regexp2 speaks .NET syntax. The two agree on
// what tokenizers actually use (alternation, classes, \p{..}, \s, \d,
// look-around, (?i)), but a few constructs mean different things, and
// translateRegex rewrites or rejects those so that a pattern never
// silently matches differently:
//
//   - \w, \W and \b, \B: Oniguruma's word characters are Alphabetic,
//     marks, decimal digits, connector punctuation and a few Latin-1
//     numbers; .NET leaves out some marks and adds the zero-width joiners.
//     They are spelled out (see wordClass).
//   - (?m): in Ruby syntax it lets . match a newline, which is .NET's s.
//   - \x{HHHH}: Oniguruma's code point escape, unknown to .NET.
//   - POSIX brackets ([[:alpha:]]) and class intersection (&&) have no
//     .NET equivalent (.NET would read them as literal characters), so they
//     are rejected.
//
// Constructs .NET does not know at all (\h, \R, \X, possessive
// quantifiers, ...) make regexp2.Compile fail, which Load reports.
func translateRegex(expr string) (string, error) {
	word := wordClass
	var sb strings.Builder
	inClass := false
	// ci tracks case-insensitivity, saved per group: .NET applies it to
	// \p{Lu} and friends (so (?i)\p{Lu} matches "a"), Oniguruma does not.
	ci := false
	var saved []bool
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case c == '\\':
			if i+1 >= len(expr) {
				return "", fmt.Errorf("trailing backslash")
			}
			e := expr[i+1]
			i++
			switch {
			case (e == 'p' || e == 'P') && ci && casedProperty(expr[i+1:]):
				return "", fmt.Errorf("case-insensitive \\%c{...} of a cased letter category is not supported", e)
			case e == 'w' && inClass:
				sb.WriteString(word)
			case e == 'w':
				sb.WriteString("[" + word + "]")
			case e == 'W' && inClass:
				return "", fmt.Errorf(`\W inside a character class is not supported`)
			case e == 'W':
				sb.WriteString("[^" + word + "]")
			case e == 'b' && !inClass:
				sb.WriteString(`(?:(?<=[` + word + `])(?![` + word + `])|(?<![` + word + `])(?=[` + word + `]))`)
			case e == 'B' && !inClass:
				sb.WriteString(`(?:(?<=[` + word + `])(?=[` + word + `])|(?<![` + word + `])(?![` + word + `]))`)
			case e == 'x' && i+1 < len(expr) && expr[i+1] == '{':
				end := strings.IndexByte(expr[i+1:], '}')
				if end < 0 {
					return "", fmt.Errorf(`unterminated \x{`)
				}
				hex := expr[i+2 : i+1+end]
				v, err := strconv.ParseUint(hex, 16, 32)
				if err != nil || v > 0x10FFFF {
					return "", fmt.Errorf(`bad \x{%s}`, hex)
				}
				i += 1 + end
				if v <= 0xFFFF {
					fmt.Fprintf(&sb, `\u%04X`, v)
				} else {
					// Beyond the BMP regexp2 matches the rune
					// itself, and such runes are never syntax.
					sb.WriteRune(rune(v))
				}
			default:
				sb.WriteByte('\\')
				sb.WriteByte(e)
			}
		case inClass:
			switch {
			case c == ']':
				inClass = false
			case c == '[':
				return "", fmt.Errorf("nested character classes and POSIX brackets are not supported")
			case c == '&' && i+1 < len(expr) && expr[i+1] == '&':
				return "", fmt.Errorf("character class intersection (&&) is not supported")
			}
			sb.WriteByte(c)
		case c == '[':
			inClass = true
			sb.WriteByte(c)
			// A ']' (after an optional '^') right at the start is a
			// literal in both syntaxes.
			if i+1 < len(expr) && expr[i+1] == '^' {
				sb.WriteByte('^')
				i++
			}
			if i+1 < len(expr) && expr[i+1] == ']' {
				sb.WriteByte(']')
				i++
			}
		case c == '(' && strings.HasPrefix(expr[i:], "(?"):
			// Inline options: (?imx-imx) or (?imx-imx:...).
			j := i + 2
			for j < len(expr) && (isLetter(expr[j]) || expr[j] == '-') {
				j++
			}
			if j > i+2 {
				opts := expr[i+2 : j]
				if j >= len(expr) || (expr[j] != ')' && expr[j] != ':') || strings.Trim(opts, "imx-") != "" {
					return "", fmt.Errorf("unsupported inline options %q", expr[i:min(len(expr), j+1)])
				}
				on, off, _ := strings.Cut(opts, "-")
				if expr[j] == ':' {
					saved = append(saved, ci)
				}
				if strings.Contains(on, "i") {
					ci = true
				}
				if strings.Contains(off, "i") {
					ci = false
				}
				sb.WriteString("(?" + strings.ReplaceAll(opts, "m", "s") + string(expr[j]))
				i = j
				continue
			}
			saved = append(saved, ci)
			sb.WriteByte(c)
		case c == '(':
			saved = append(saved, ci)
			sb.WriteByte(c)
		case c == ')':
			if n := len(saved); n > 0 {
				ci, saved = saved[n-1], saved[:n-1]
			}
			sb.WriteByte(c)
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String(), nil
}

// casedProperty reports whether s (after \p or \P) names a cased letter
// category.
func casedProperty(s string) bool {
	for _, name := range []string{"{Lu}", "{Ll}", "{Lt}", "{LC}", "{L&}", "{Uppercase", "{Lowercase", "{Titlecase", "{Cased"} {
		if strings.HasPrefix(s, name) {
			return true
		}
	}
	return false
}

func isLetter(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// wordClass is the body of a character class holding Oniguruma's \w, as
// measured against the reference library: Alphabetic (letters, letter
// numbers, Other_Alphabetic), marks, decimal digits, connector punctuation,
// and the Latin-1 superscript digits and fractions.
var wordClass = func() string {
	var sb strings.Builder
	sb.WriteString(`\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\u00B2\u00B3\u00B9\u00BC-\u00BE`)
	// Other_Alphabetic characters outside those categories, such as
	// the circled letters.
	in := func(r rune) bool {
		return unicode.Is(unicode.Other_Alphabetic, r) && !unicode.In(r, unicode.L, unicode.Nl, unicode.M, unicode.Nd, unicode.Pc)
	}
	esc := func(r rune) string {
		if r <= 0xFFFF {
			return fmt.Sprintf(`\u%04X`, r)
		}
		return string(r)
	}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !in(r) {
			continue
		}
		lo := r
		for r+1 <= unicode.MaxRune && in(r+1) {
			r++
		}
		sb.WriteString(esc(lo))
		if r > lo {
			sb.WriteString("-" + esc(r))
		}
	}
	return sb.String()
}()

// backtrackRisk reports why expr may take exponential time in a
// backtracking engine such as regexp2, or "" when it sees no reason. The
// shapes it looks for are a group repeated many times (*, +, {n,} or more
// than maxSafeRepeat) that itself holds a repetition or an alternation, as
// in (\w+\s?)* and (a|b|ab)*: the ways to split a text among the
// repetitions then grow exponentially with its length. It is conservative:
// (?:ab|cd)* is reported although it cannot backtrack much. The patterns
// tokenizers ship repeat only characters and classes, and pass.
func backtrackRisk(expr string) string {
	type frame struct {
		start    int
		rep, alt bool // holds a repetition / an alternation
	}
	stack := []frame{{start: 0}}
	var closed frame    // the group that ended just before a quantifier
	afterGroup := false // the previous atom was a group
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		top := &stack[len(stack)-1]
		switch c {
		case '\\':
			i++
			if i+1 < len(expr) && strings.IndexByte("pPx", expr[i]) >= 0 && expr[i+1] == '{' {
				if end := strings.IndexByte(expr[i:], '}'); end >= 0 {
					i += end
				}
			}
			afterGroup = false
			continue
		case '[':
			i++
			if i < len(expr) && expr[i] == '^' {
				i++
			}
			if i < len(expr) && expr[i] == ']' {
				i++ // a leading ] is a literal
			}
			for i < len(expr) && expr[i] != ']' {
				if expr[i] == '\\' {
					i++
				}
				i++
			}
			afterGroup = false
			continue
		case '(':
			stack = append(stack, frame{start: i})
			afterGroup = false
			continue
		case ')':
			if len(stack) > 1 {
				closed = *top
				stack = stack[:len(stack)-1]
				p := &stack[len(stack)-1]
				p.rep = p.rep || closed.rep
				p.alt = p.alt || closed.alt
				afterGroup = true
			}
			continue
		case '|':
			top.alt = true
			afterGroup = false
			continue
		}
		hi, n := quantifier(expr[i:])
		if n == 0 {
			afterGroup = false
			continue
		}
		if hi < 0 || hi > 1 {
			top.rep = true
			if afterGroup && (closed.rep || closed.alt) && (hi < 0 || hi > maxSafeRepeat) {
				what := "a repetition"
				if !closed.rep {
					what = "an alternation"
				}
				end := i + n
				return fmt.Sprintf("the group %q repeats %s, which can backtrack exponentially", expr[closed.start:end], what)
			}
		}
		i += n - 1
		if i+1 < len(expr) && (expr[i+1] == '?' || expr[i+1] == '+') {
			i++ // lazy or possessive
		}
		afterGroup = false
	}
	return ""
}

// maxSafeRepeat is the most repetitions of a group holding a repetition
// or an alternation that backtrackRisk lets pass: a bounded count keeps
// the ways to split a text bounded too.
const maxSafeRepeat = 8

// quantifier parses a quantifier at the start of s (*, +, ?, {n}, {n,},
// {n,m}) and returns its upper bound (-1 for none) and its length, or
// n = 0 when s does not start with one.
func quantifier(s string) (hi, n int) {
	switch s[0] {
	case '*', '+':
		return -1, 1
	case '?':
		return 1, 1
	case '{':
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return 0, 0
		}
		a, b, comma := strings.Cut(s[1:end], ",")
		x, err := strconv.Atoi(a)
		if err != nil || x < 0 {
			return 0, 0
		}
		if !comma {
			return x, end + 1
		}
		if b == "" {
			return -1, end + 1
		}
		y, err := strconv.Atoi(b)
		if err != nil || y < x {
			return 0, 0
		}
		return y, end + 1
	}
	return 0, 0
}
