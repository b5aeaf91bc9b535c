package tokenizer

import (
	"strings"
	"testing"
)

// TestLongRuns encodes long runs of one kind of character, where a naive
// merge loop or regex iteration turns quadratic, and checks the round trip.
func TestLongRuns(t *testing.T) {
	runs := []string{
		strings.Repeat(" ", 100000) + "x", strings.Repeat("a", 100000), strings.Repeat("👩‍💻", 20000),
		strings.Repeat("1", 100000), strings.Repeat("\n", 100000), strings.Repeat(" \t", 50000) + "y",
		strings.Repeat("é", 50000),
	}
	tk := load(t, "mamba2-go-tiny.json")
	for _, s := range runs {
		if got := tk.Decode(tk.Encode(s)); got != s {
			t.Errorf("round trip of a run of %q failed", abbrev(s[:10]))
		}
	}
	ms := load(t, "metaspace-bpe.json")
	for _, s := range runs {
		if got := ms.Decode(ms.Encode(s)); got != s {
			t.Errorf("metaspace round trip of a run of %q failed", abbrev(s[:10]))
		}
	}
}
