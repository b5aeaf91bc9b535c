package model_test

import (
	"context"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/models"
	"github.com/mamba2web/mamba2/tokenizer"
)

func tinyModel(t *testing.T) (*model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	fsys := models.Tiny()
	m, err := model.Load(fsys, cpu.New(), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Backend.Close() })
	f, err := fsys.Open("tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.(fs.File).Close()
	tok, err := tokenizer.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}

// TestGenerateStreaming checks the incremental decoding of Generate: the
// streamed pieces join to the text, which is the decoding of all the ids,
// with decoders whose output depends on where a window starts, and with stop
// strings that may straddle pieces.
func TestGenerateStreaming(t *testing.T) {
	m, tok := tinyModel(t)
	prompt := tok.Encode("package main\n\nimport (\n")
	decoders := map[string]func([]int) string{
		"tokenizer": tok.Decode,
		// Strips one leading space of whatever it decodes, like a SentencePiece
		// Strip decoder: a naive tail decode would lose spaces.
		"strip": func(ids []int) string { return strings.TrimPrefix(tok.Decode(ids), " ") },
		// Decodes byte by byte into a replacement character until a rune is
		// whole, like byte-fallback tokens split across a character.
		"bytes": func(ids []int) string { return strings.ToValidUTF8(tok.Decode(ids)+"\xe2\x82", "\uFFFD") },
	}
	for name, decode := range decoders {
		for seed := uint64(1); seed <= 2; seed++ {
			var pieces []string
			o := model.Options{
				Sampling:     model.Sampling{Temperature: 1, Seed: seed},
				MaxNewTokens: 48,
				Decode:       decode,
				OnText:       func(s string) error { pieces = append(pieces, s); return nil },
			}
			res, err := m.Generate(context.Background(), prompt, o)
			if err != nil {
				t.Fatal(err)
			}
			want := decode(res.IDs)
			if res.Text != want {
				t.Errorf("%s/seed %d: text %q, want the decoding of all ids %q", name, seed, res.Text, want)
			}
			if got := strings.Join(pieces, ""); got != res.Text {
				t.Errorf("%s/seed %d: pieces join to %q, want %q", name, seed, got, res.Text)
			}
			if name != "tokenizer" || len(want) < 40 {
				continue
			}
			// A stop string from the middle of that text, as long as a few
			// pieces: the same seed stops there.
			stop := want[len(want)/2 : len(want)/2+7]
			pieces = nil
			o.StopStrings = []string{stop}
			res2, err := m.Generate(context.Background(), prompt, o)
			if err != nil {
				t.Fatal(err)
			}
			cut := want[:strings.Index(want, stop)]
			if res2.Reason != "stop" || res2.Text != cut {
				t.Errorf("seed %d, stop %q: reason %q, text %q; want stop and %q", seed, stop, res2.Reason, res2.Text, cut)
			}
			if got := strings.Join(pieces, ""); got != cut {
				t.Errorf("seed %d, stop %q: pieces join to %q, want %q", seed, stop, got, cut)
			}
			// The ids are the text's: their decoding covers it, and one
			// fewer does not.
			n := len(res2.IDs)
			if all := decode(res2.IDs); !strings.HasPrefix(all, cut) || (n > 0 && len(decode(res2.IDs[:n-1])) >= len(cut)) {
				t.Errorf("seed %d, stop %q: ids %v decode to %q for the text %q", seed, stop, res2.IDs, all, cut)
			}
			if !slices.Equal(res2.IDs, res.IDs[:n]) {
				t.Errorf("seed %d, stop %q: ids %v are not the start of %v", seed, stop, res2.IDs, res.IDs)
			}
		}
	}
}
