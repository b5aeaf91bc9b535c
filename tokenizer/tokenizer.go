// Package tokenizer encodes and decodes text with Hugging Face
// tokenizer.json BPE tokenizers, giving the same ids as the Rust
// "tokenizers" library (and so as transformers) for the components it
// supports. It is pure Go, so the runtime can tokenize in the browser
// (GOOS=js GOARCH=wasm) without the Rust library.
//
// Encoding follows the library's pipeline: added tokens are cut out of the
// raw text; each remaining stretch is normalized, cut again at added tokens
// that match normalized text, pre-tokenized into words, and each word is
// encoded by the BPE model; finally the post-processor may add special
// tokens. Decoding maps ids back to token strings and runs the decoder
// chain.
//
// Supported components (anything else makes Load fail with an error naming
// it, rather than encode differently from the reference):
//   - model: BPE (merges as "a b" strings or ["a","b"] pairs, byte_fallback,
//     unk_token, fuse_unk, continuing_subword_prefix, end_of_word_suffix,
//     ignore_merges; dropout must be null or 0);
//   - normalizers: Sequence, Prepend, Replace, Lowercase, Strip, ByteLevel;
//   - pre-tokenizers: Sequence, ByteLevel, Split, Metaspace, Digits,
//     Punctuation, WhitespaceSplit, CharDelimiterSplit;
//   - post-processors: ByteLevel, TemplateProcessing (single sequence),
//     BertProcessing, RobertaProcessing, Sequence;
//   - decoders: Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse,
//     Strip, BPEDecoder.
//
// The "truncation" and "padding" sections are ignored: Encode never cuts or
// pads, which is what transformers does unless asked to.
//
// Regexes (Split, Replace) are run by regexp2 after a translation from the
// reference's Oniguruma syntax (see regex.go); character classes come
// from Go's Unicode tables, so the only known differences are characters
// assigned after Go's Unicode version (15.0 for Go 1.26), which Oniguruma
// may already classify. testdata/oracle.json, produced by the Rust library,
// checks thousands of encodings and decodings.
//
// A tokenizer.json is untrusted input: Load refuses files over
// MaxTokenizerJSON bytes and more than MaxMerges merges, and each regex
// search is bounded by MaxMatchTime and MaxBacktrackStack, past which
// EncodeChecked and DecodeChecked return a *RegexLimitError naming the
// pattern (on wasm, where no time limit can fire, Load refuses the
// patterns that can backtrack exponentially instead).
package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Tokenizer is a loaded tokenizer.json. It is safe for concurrent use.
type Tokenizer struct {
	model *bpeModel
	added *addedVocab
	norm  normalizer
	pre   preTokenizer
	post  postProcessor
	dec   decoder
	size  int
}

type fileJSON struct {
	Version       *string         `json:"version"`
	AddedTokens   json.RawMessage `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	Model         json.RawMessage `json:"model"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
}

// LoadFile reads a tokenizer.json file.
func LoadFile(path string) (*Tokenizer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := Load(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// MaxTokenizerJSON bounds the size of the tokenizer.json Load reads. The
// largest in use are around 35 MB (Gemma 3's 262k tokens); Load needs a
// few times the file's size in memory, so a bound on the file bounds it.
const MaxTokenizerJSON = 64 << 20

// Load parses a tokenizer.json. It fails on a file over MaxTokenizerJSON
// bytes, on malformed JSON, on inconsistent contents (an id used twice, a
// merge or unk_token naming an unknown token, ids out of range, more than
// MaxMerges merges) and on any component this package does not implement.
func Load(r io.Reader) (*Tokenizer, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxTokenizerJSON+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxTokenizerJSON {
		return nil, fmt.Errorf("tokenizer.json: larger than %d bytes (tokenizer.MaxTokenizerJSON)", MaxTokenizerJSON)
	}
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if f.Version != nil && *f.Version != "1.0" {
		return nil, fmt.Errorf("tokenizer.json: unsupported version %q", *f.Version)
	}
	t := &Tokenizer{}
	if t.model, err = parseModel(f.Model); err != nil {
		return nil, err
	}
	if t.norm, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	list, err := parseAddedTokens(f.AddedTokens)
	if err != nil {
		return nil, err
	}
	if t.added, err = newAddedVocab(list, t.model, t.norm); err != nil {
		return nil, err
	}
	if t.pre, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if t.post, err = parsePostProcessor(f.PostProcessor); err != nil {
		return nil, err
	}
	if t.dec, err = parseDecoder(f.Decoder); err != nil {
		return nil, err
	}
	t.size = len(t.model.tokens)
	for id := range t.added.byID {
		t.size = max(t.size, id+1)
	}
	return t, nil
}

// Encode returns the ids of text as the reference library's
// encode(text, add_special_tokens=true) does: special tokens written in
// the text (such as "<|endoftext|>") are recognized, and the
// post-processor's special tokens are added. The fixture tokenizers'
// post-processors (ByteLevel, or none) add nothing. Text that is not valid
// UTF-8, which the reference cannot receive, is processed as it is: an
// invalid byte counts as U+FFFD for splitting, and byte-level tokenizers
// keep it in the ids (Decode, which returns valid UTF-8, shows U+FFFD).
//
// Encode returns nil when a regex of the tokenizer gives up on the text
// (MaxMatchTime, MaxBacktrackStack); EncodeChecked says so instead.
func (t *Tokenizer) Encode(text string) []int {
	ids, _ := t.EncodeWithChecked(text, true)
	return ids
}

// EncodeWith is Encode with the choice of add_special_tokens: false leaves
// out what the post-processor would add (special tokens written in the
// text are still recognized).
func (t *Tokenizer) EncodeWith(text string, addSpecialTokens bool) []int {
	ids, _ := t.EncodeWithChecked(text, addSpecialTokens)
	return ids
}

// EncodeChecked is Encode, but returns the error (a *RegexLimitError,
// wrapped with the component) when a regex of the tokenizer gives up on
// the text, rather than nil ids. It is the only way Encode can fail.
func (t *Tokenizer) EncodeChecked(text string) ([]int, error) {
	return t.EncodeWithChecked(text, true)
}

// EncodeWithChecked is EncodeWith with the error of EncodeChecked.
func (t *Tokenizer) EncodeWithChecked(text string, addSpecialTokens bool) ([]int, error) {
	ids := []int{}
	if text != "" {
		// Cut out the added tokens that match the raw text, then
		// normalize what is left and cut out those matching the
		// normalized text.
		raw := t.added.split(piece{text: text, id: -1, first: true}, t.added.raw, nil)
		var pieces []piece
		for _, p := range raw {
			if p.id >= 0 {
				pieces = append(pieces, p)
				continue
			}
			if t.norm != nil {
				var err error
				if p, err = t.norm.normalize(p); err != nil {
					return nil, fmt.Errorf("tokenizer: %w", err)
				}
			}
			pieces = t.added.split(p, t.added.norm, pieces)
		}
		var words []piece
		for _, p := range pieces {
			if p.id >= 0 || t.pre == nil {
				words = append(words, p)
				continue
			}
			var err error
			if words, err = t.pre.split(p, words); err != nil {
				return nil, fmt.Errorf("tokenizer: %w", err)
			}
		}
		for _, w := range words {
			if w.id >= 0 {
				ids = append(ids, w.id)
			} else {
				ids = t.model.tokenize(w.text, ids)
			}
		}
	}
	if addSpecialTokens && t.post != nil {
		ids = t.post.process(ids)
	}
	return ids, nil
}

// Decode returns the text of ids as the reference library's
// decode(ids, skip_special_tokens=false) does: special tokens are kept
// (expected.json decodes id 0 to "<|endoftext|>"). Ids that name no token
// are skipped, as the reference library skips them; use DecodeChecked to
// have them reported.
func (t *Tokenizer) Decode(ids []int) string {
	s, _ := t.decode(ids, false)
	return s
}

// DecodeWith is Decode with the choice of skip_special_tokens.
func (t *Tokenizer) DecodeWith(ids []int, skipSpecialTokens bool) string {
	s, _ := t.decode(ids, skipSpecialTokens)
	return s
}

// DecodeChecked is Decode, but fails if an id names no token or a regex of
// a Replace decoder gives up (see MaxMatchTime). The text decoded from the
// valid ids is returned either way, without that replacement.
func (t *Tokenizer) DecodeChecked(ids []int) (string, error) {
	return t.decode(ids, false)
}

func (t *Tokenizer) decode(ids []int, skipSpecial bool) (string, error) {
	tokens := make([]string, 0, len(ids))
	var bad []int
	for _, id := range ids {
		s, ok := t.Token(id)
		if !ok {
			bad = append(bad, id)
			continue
		}
		// The reference library decides by string, not by id.
		if skipSpecial && t.added.special[s] {
			continue
		}
		tokens = append(tokens, s)
	}
	var err error
	if len(bad) > 0 {
		err = fmt.Errorf("tokenizer: %d invalid token id(s), first %d (vocabulary size %d)", len(bad), bad[0], t.size)
	}
	if t.dec == nil {
		return strings.Join(tokens, " "), err
	}
	out, derr := t.dec.decodeChain(tokens)
	if derr != nil {
		err = fmt.Errorf("tokenizer: %w", derr)
	}
	return strings.Join(out, ""), err
}

// VocabSize returns one more than the largest id in use (model vocabulary
// and added tokens). For every real tokenizer the ids are contiguous, so
// this is also the number of tokens, and it bounds the ids Encode returns.
func (t *Tokenizer) VocabSize() int { return t.size }

// TokenID returns the id of a token string: an added token's content, or a
// model vocabulary entry (in its encoded form, e.g. "Ġthe" or "▁the").
func (t *Tokenizer) TokenID(token string) (int, bool) {
	if id, ok := t.added.byContent[token]; ok {
		return id, true
	}
	id, ok := t.model.vocab[token]
	return id, ok
}

// Token returns the token string of id, as the decoder receives it. An
// added token with normalized=true is returned in its normalized form, as
// the reference library does.
func (t *Tokenizer) Token(id int) (string, bool) {
	if ref, ok := t.added.byID[id]; ok {
		return ref.decode, true
	}
	if id >= 0 && id < len(t.model.tokens) && t.model.has[id] {
		return t.model.tokens[id], true
	}
	return "", false
}

// IsSpecial reports whether id is an added token marked special, such as
// an end-of-text marker.
func (t *Tokenizer) IsSpecial(id int) bool {
	ref, ok := t.added.byID[id]
	return ok && ref.tok.special
}

// isNull reports whether a JSON value is absent or null.
func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// typeOf returns the "type" field of a component object.
func typeOf(raw json.RawMessage) (string, error) {
	var v struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	if v.Type == nil {
		return "", errors.New(`missing "type"`)
	}
	return *v.Type, nil
}
