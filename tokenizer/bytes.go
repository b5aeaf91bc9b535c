package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// Byte-level BPE (GPT-2, GPT-NeoX) never sees raw bytes: every byte of the
// input is first replaced by a printable character, so that the vocabulary is
// a set of ordinary strings and no byte is ever unknown. Printable Latin-1
// bytes stand for themselves; the 68 others (controls, space, NBSP, soft
// hyphen) are moved to U+0100 and up, in byte order. This is the table that
// every byte-level tokenizer.json was trained with, so it must not change.
var (
	byteToRune   [256]rune
	byteToString [256]string
	runeToByte   map[rune]byte
)

func init() {
	runeToByte = make(map[rune]byte, 256)
	next := rune(256)
	for b := 0; b < 256; b++ {
		r := rune(b)
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if !printable {
			r = next
			next++
		}
		byteToRune[b] = r
		byteToString[b] = string(r)
		runeToByte[r] = byte(b)
	}
}

// byteLevelEncode maps every byte of s to its printable stand-in.
func byteLevelEncode(s string) string {
	var sb strings.Builder
	sb.Grow(len(s) * 2)
	for i := 0; i < len(s); i++ {
		sb.WriteString(byteToString[s[i]])
	}
	return sb.String()
}

// lossyUTF8 converts b to a string the way Rust's String::from_utf8_lossy
// does, which is what the reference library returns from its decoders: each
// maximal ill-formed subsequence (as defined by the Unicode standard, chapter
// 3, "U+FFFD substitution of maximal subparts") becomes one U+FFFD. Go's own
// conversions differ (one U+FFFD per bad byte, or one per run), so decoding
// a truncated multi-byte character would otherwise give a different string.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			sb.WriteByte(c)
			i++
			continue
		}
		// need is the number of continuation bytes, lo/hi the allowed
		// range of the first one (the later ones are always 80..BF).
		var need int
		lo, hi := byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c == 0xE0:
			need, lo = 2, 0xA0
		case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
			need = 2
		case c == 0xED:
			need, hi = 2, 0x9F
		case c == 0xF0:
			need, lo = 3, 0x90
		case c >= 0xF1 && c <= 0xF3:
			need = 3
		case c == 0xF4:
			need, hi = 3, 0x8F
		default:
			sb.WriteRune(utf8.RuneError)
			i++
			continue
		}
		j := i + 1
		ok := true
		for k := 0; k < need; k++ {
			if j >= len(b) || b[j] < lo || b[j] > hi {
				ok = false
				break
			}
			j++
			lo, hi = 0x80, 0xBF
		}
		if ok {
			sb.Write(b[i:j])
		} else {
			sb.WriteRune(utf8.RuneError)
		}
		i = j
	}
	return sb.String()
}
