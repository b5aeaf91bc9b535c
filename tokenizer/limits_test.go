package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// hangLimit is how long a call that must give up may run before the test
// calls it hung: generous, far above MaxMatchTime, since the machine may
// be loaded. It detects hangs; it times nothing.
const hangLimit = 2 * time.Minute

// bounded runs f and fails the test if it has not returned by hangLimit.
func bounded(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(hangLimit):
		t.Fatalf("%s still running after %v", what, hangLimit)
	}
}

// tokenizerWith returns minimal with the given top-level fields replaced.
func tokenizerWith(t *testing.T, fields map[string]string) string {
	t.Helper()
	var top map[string]json.RawMessage
	must(t, json.Unmarshal([]byte(minimal), &top))
	for k, v := range fields {
		top[k] = json.RawMessage(v)
	}
	out, err := json.Marshal(top)
	must(t, err)
	return string(out)
}

func regexJSON(expr string) string {
	b, _ := json.Marshal(expr)
	return `{"Regex": ` + string(b) + `}`
}

// Inputs on which a pattern gives up: catastrophic backtracking (a line of
// words ending in a symbol, for a loop of loops anchored at the line's end),
// and a capturing loop over more characters than the stack holds.
var (
	catastrophic = `^(\w+\s?)*$`
	wordsLine    = strings.Repeat("word ", 30) + "!"
	deepLoop     = `(.)*`
	longLine     = strings.Repeat("word ", 400_000)
)

// TestEncodeRegexLimits checks that a tokenizer.json whose regexes cannot
// finish on a text makes EncodeChecked (and DecodeChecked, and Load for
// added tokens it normalizes) fail with the pattern named, in bounded
// time, and that Encode then returns nil rather than hanging or panicking.
func TestEncodeRegexLimits(t *testing.T) {
	split := func(expr string) string {
		return `{"type": "Split", "pattern": ` + regexJSON(expr) + `, "behavior": "Isolated"}`
	}
	replace := func(expr string) string {
		return `{"type": "Replace", "pattern": ` + regexJSON(expr) + `, "content": "-"}`
	}
	tests := []struct {
		name   string
		fields map[string]string
		text   string
		stack  bool   // the stack limit, not the time limit
		want   string // in the error
	}{
		{"split, time", map[string]string{"pre_tokenizer": split(catastrophic)}, wordsLine, false,
			`tokenizer: pre_tokenizer Split: regex "^(\\w+\\s?)*$" gave up on a 151-character text: it found no match within 1s (tokenizer.MaxMatchTime)`},
		{"split, stack", map[string]string{"pre_tokenizer": split(deepLoop)}, longLine, true,
			`tokenizer: pre_tokenizer Split: regex "(.)*" gave up on a 2000000-character text: it needed more than 8388608 backtracking stack slots (tokenizer.MaxBacktrackStack)`},
		{"split in a sequence", map[string]string{"pre_tokenizer": `{"type": "Sequence", "pretokenizers": [{"type": "Digits"}, ` + split(deepLoop) + `]}`},
			"1" + longLine, true, `tokenizer: pre_tokenizer Split: regex "(.)*" gave up on a 2000000-character text`},
		{"normalizer", map[string]string{"normalizer": replace(deepLoop)}, longLine, true,
			`tokenizer: normalizer Replace: regex "(.)*" gave up on a 2000000-character text`},
		{"normalizer after an added token", map[string]string{"normalizer": replace(deepLoop)}, "<eos>" + longLine, true,
			`tokenizer: normalizer Replace: regex "(.)*"`},
	}
	for _, tt := range tests {
		tk, err := Load(strings.NewReader(tokenizerWith(t, tt.fields)))
		if noMatchTimeout && !tt.stack {
			// On wasm the time limit cannot fire; Load refuses instead.
			if err == nil || !strings.Contains(err.Error(), "can backtrack exponentially") {
				t.Errorf("%s: Load on wasm: %v", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var ids, plain []int
		bounded(t, tt.name, func() {
			ids, err = tk.EncodeChecked(tt.text)
			if tt.stack { // quick to give up: Encode too
				plain = tk.Encode(tt.text)
			}
		})
		var le *RegexLimitError
		want := tt.want
		if errors.As(err, &le) && tt.stack && !le.Stack {
			// A machine busy enough not to reach the stack bound within
			// MaxMatchTime gives up on time: bounded either way, and the
			// error still names the pattern and the text.
			t.Logf("%s: the time limit fired before the stack limit: %v", tt.name, err)
			want, _, _ = strings.Cut(tt.want, ": it needed")
			want += ": it found no match within"
		} else if le != nil && le.Stack != tt.stack {
			t.Errorf("%s: stack limit %v, want %v", tt.name, le.Stack, tt.stack)
		}
		if le == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: EncodeChecked error %v, want %q", tt.name, err, want)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || len(err.Error()) > 300) {
			t.Errorf("%s: error is not one short line: %.300q", tt.name, err)
		}
		if ids != nil || plain != nil {
			t.Errorf("%s: ids %v and %v, want nil", tt.name, ids, plain)
		}
		// The same tokenizer encodes a text its regex handles.
		if ids, err := tk.EncodeChecked("ab"); err != nil {
			t.Errorf("%s: EncodeChecked(\"ab\") = %v, %v", tt.name, ids, err)
		}
	}
}

// TestDecodeRegexLimit checks a Replace decoder whose regex gives up on a
// token: DecodeChecked names it and still returns the text, unreplaced.
func TestDecodeRegexLimit(t *testing.T) {
	long := strings.Repeat("a", 28) + "!"
	tk, err := Load(strings.NewReader(tokenizerWith(t, map[string]string{
		"decoder": `{"type": "Replace", "pattern": ` + regexJSON(catastrophic) + `, "content": "-"}`,
		"model":   `{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<eos>": 3, "Ġ": 4, "` + long + `": 5}, "merges": ["a b"]}`,
	})))
	if noMatchTimeout {
		if err == nil || !strings.Contains(err.Error(), `decoder Replace: unsupported regex "^(\\w+\\s?)*$": the group`) {
			t.Errorf("Load on wasm: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var text string
	bounded(t, "DecodeChecked", func() { text, err = tk.DecodeChecked([]int{2, 5}) })
	var le *RegexLimitError
	if !errors.As(err, &le) || le.Stack || !strings.Contains(err.Error(), `tokenizer: decoder Replace: regex "^(\\w+\\s?)*$" gave up on a 29-character text`) {
		t.Errorf("DecodeChecked error %v", err)
	}
	if text != "ab"+long {
		t.Errorf("decoded %q, want the tokens unreplaced", text)
	}
}

// TestLoadRegexLimit checks that an added token the normalizer cannot
// normalize fails Load, naming the token's pattern.
func TestLoadRegexLimit(t *testing.T) {
	added, _ := json.Marshal([]map[string]any{{"id": 5, "content": longLine, "normalized": true}})
	_, err := Load(strings.NewReader(tokenizerWith(t, map[string]string{
		"normalizer":   `{"type": "Replace", "pattern": ` + regexJSON(deepLoop) + `, "content": "-"}`,
		"added_tokens": string(added),
	})))
	var le *RegexLimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), `added token "word word`) || !strings.Contains(err.Error(), `: normalizer Replace: regex "(.)*" gave up`) {
		t.Errorf("Load error %.300v", err)
	}
	if err != nil && len(err.Error()) > 300 {
		t.Errorf("Load error is %d bytes long", len(err.Error()))
	}
}

// TestRegexLimits checks the pattern-level bounds with small limits, so
// that it runs quickly: each search either finds its matches or gives up
// with the reason, never with the input in the message.
func TestRegexLimits(t *testing.T) {
	tests := []struct {
		expr, text string
		want       string // "" for success, "time" or "stack"
	}{
		{`\w+`, "hello world", ""},
		{gpt2Split, strings.Repeat(" ", 10000) + "x", ""},
		{gpt2Split, strings.Repeat("héllo wörld ", 1000), ""},
		{catastrophic, wordsLine, "time"},
		{`(a|b|ab)*bc`, strings.Repeat("ab", 30) + "acbc", "time"},
		{deepLoop, strings.Repeat("x", 100), ""},
		{deepLoop, strings.Repeat("x", 10000), "stack"},
		{`(?:\S+\s*)+`, strings.Repeat("word ", 2000), "stack"},
	}
	for _, tt := range tests {
		if noMatchTimeout && tt.want == "time" {
			continue // cannot fire on wasm, and would hang
		}
		p, err := compileRegexLimits(tt.expr, 20*time.Millisecond, 4096)
		if err != nil {
			t.Fatal(err)
		}
		var ms [][2]int
		bounded(t, tt.expr, func() { ms, err = p.find(tt.text) })
		var le *RegexLimitError
		got := ""
		if errors.As(err, &le) {
			got = map[bool]string{false: "time", true: "stack"}[le.Stack]
			if le.Pattern != tt.expr || le.Runes != len([]rune(tt.text)) || strings.Contains(err.Error(), tt.text) {
				t.Errorf("%s: error %v", tt.expr, err)
			}
		} else if err != nil {
			t.Errorf("%s: error %v of type %T", tt.expr, err, err)
		}
		if got != tt.want || (got == "" && len(ms) == 0) {
			t.Errorf("%s on %d characters: %d matches, gave up on %q; want %q", tt.expr, len(tt.text), len(ms), got, tt.want)
		}
	}
}

// endless is a reader that never ends: a JSON object opened and then
// padded with spaces forever.
type endless struct{ n int64 }

func (e *endless) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = ' '
	}
	if e.n == 0 && len(b) > 0 {
		b[0] = '{'
	}
	e.n += int64(len(b))
	return len(b), nil
}

// TestLoadSizeLimits checks the bounds Load puts on a file: its size, read
// no further than one byte past MaxTokenizerJSON, and the count of merges,
// read one at a time.
func TestLoadSizeLimits(t *testing.T) {
	r := &endless{}
	_, err := Load(r)
	if err == nil || err.Error() != "tokenizer.json: larger than 67108864 bytes (tokenizer.MaxTokenizerJSON)" {
		t.Errorf("endless file: %v", err)
	}
	if r.n > MaxTokenizerJSON+64<<10 {
		t.Errorf("read %d bytes of an endless file", r.n)
	}
	if _, err := Load(io.LimitReader(&endless{}, MaxTokenizerJSON)); err == nil || !strings.Contains(err.Error(), "tokenizer.json: unexpected end of JSON") {
		t.Errorf("file of exactly MaxTokenizerJSON bytes: %v", err)
	}

	var sb strings.Builder
	sb.WriteString(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [`)
	for i := range MaxMerges + 1 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`"a b"`)
	}
	sb.WriteString(`]}}`)
	_, err = Load(strings.NewReader(sb.String()))
	if err == nil || err.Error() != "model BPE: more than 4194304 merges (tokenizer.MaxMerges)" {
		t.Errorf("%d merges: %v", MaxMerges+1, err)
	}
}

func TestBacktrackRisk(t *testing.T) {
	tests := []struct {
		expr, want string // want: the group reported, "" for none
	}{
		// The splits tokenizers ship pass.
		{gpt2Split, ""},
		{`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`, ""},
		{`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}`, ""},
		{` ?[^(\s|[.,!?…。，、।۔،])]+`, ""},
		{`\d+|[a-z]+|\b\w|x*|o+|\s+`, ""},
		{`(.)*`, ""},                 // a repeated group of one character
		{`(?:a|b){1,3}`, ""},         // a bounded count
		{`\(a|b\)*`, ""},             // escaped parentheses
		{`[(|)]+`, ""},               // a class
		{`\p{L}{2,}`, ""},            // a class, counted
		{`a{x}(b|c)*`, "(b|c)*"},     // a literal brace, then a risk
		{`^(\w+\s?)*$`, `(\w+\s?)*`}, // a repetition repeated
		{`(a|b|ab)*bc`, "(a|b|ab)*"}, // an alternation repeated
		{`(?:\S+\s*)+`, `(?:\S+\s*)+`},
		{`x((a|b)c)+?`, "((a|b)c)+"},
		{`(?:a+){0,20}`, "(?:a+){0,20}"},
		{`(?:a|b){2,}`, "(?:a|b){2,}"},
	}
	for _, tt := range tests {
		got := backtrackRisk(tt.expr)
		if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, fmt.Sprintf("the group %q", tt.want)) {
			t.Errorf("backtrackRisk(%q) = %q, want the group %q", tt.expr, got, tt.want)
		}
	}
}
