package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedToken is one entry of tokenizer.json's "added_tokens": a string that
// is cut out of the input whole before the model sees it (chat markers,
// <|endoftext|>, byte-fallback tokens declared as special, ...).
type addedToken struct {
	content    string
	singleWord bool // only match where no word character touches it
	lstrip     bool // also swallow the whitespace on its left
	rstrip     bool // also swallow the whitespace on its right
	normalized bool // match against the normalized text, not the raw text
	special    bool // special: skipped by DecodeWith(ids, true)
}

type addedTokenJSON struct {
	ID         *int64 `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	Lstrip     bool   `json:"lstrip"`
	Rstrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

// addedVocab reproduces the reference library's AddedVocabulary, including
// its quirks, because they decide ids:
//   - the "id" written in the file is not used: a token gets the model's id
//     for the same string if there is one, else the next free id after the
//     model vocabulary, in file order (the library only warns on mismatch);
//   - a token with normalized=true is matched against the normalized text
//     and is decoded as its normalized form (with the Metaspace-style
//     normalizers that means a leading "▁");
//   - special tokens are skipped on decode by string, so a special token
//     that decodes to its normalized form is never skipped.
type addedVocab struct {
	byContent map[string]int         // content -> id (TokenID)
	byID      map[int]*addedTokenRef // id -> token (Token, Decode)
	special   map[string]bool        // contents of special tokens
	raw       *trie                  // tokens matched in the raw input
	norm      *trie                  // tokens matched after normalizing
}

type addedTokenRef struct {
	tok    addedToken
	decode string // what Decode and Token return for this id
}

func newAddedVocab(list []addedTokenJSON, m *bpeModel, norm normalizer) (*addedVocab, error) {
	av := &addedVocab{
		byContent: map[string]int{},
		byID:      map[int]*addedTokenRef{},
		special:   map[string]bool{},
		raw:       newTrie(),
		norm:      newTrie(),
	}
	toks := make([]addedToken, len(list))
	for i, j := range list {
		if j.ID == nil {
			return nil, fmt.Errorf("added_tokens[%d]: missing id", i)
		}
		if *j.ID < 0 || *j.ID > maxTokenID {
			return nil, fmt.Errorf("added_tokens[%d]: id %d out of range", i, *j.ID)
		}
		if !utf8.ValidString(j.Content) {
			return nil, fmt.Errorf("added_tokens[%d]: content is not valid UTF-8", i)
		}
		toks[i] = addedToken{
			content:    j.Content,
			singleWord: j.SingleWord,
			lstrip:     j.Lstrip,
			rstrip:     j.Rstrip,
			normalized: j.Normalized == nil || *j.Normalized,
			special:    j.Special,
		}
	}

	var specials, classics []addedToken
	for _, t := range toks {
		if t.special && t.content != "" && !av.special[t.content] {
			specials = append(specials, t)
			av.special[t.content] = true
		}
	}
	modelSize := len(m.vocab)
	// stored counts the tokens currently in byID: a token equal in every
	// field to one of them is ignored, as the reference library does.
	stored := map[addedToken]int{}
	maxID := -1 // largest id in byContent
	for _, t := range toks {
		if t.content == "" || stored[t] > 0 {
			continue
		}
		id, ok := av.byContent[t.content]
		if !ok {
			id, ok = m.vocab[t.content]
		}
		if !ok {
			switch {
			case maxID < 0:
				id = modelSize
			case maxID >= modelSize || modelSize == 0:
				id = maxID + 1
			default:
				id = modelSize
			}
			if id > maxTokenID {
				return nil, fmt.Errorf("added token %q: id out of range", t.content)
			}
		}
		av.byContent[t.content] = id
		maxID = max(maxID, id)
		if old, ok := av.byID[id]; ok {
			stored[old.tok]--
		}
		av.byID[id] = &addedTokenRef{tok: t, decode: t.content}
		stored[t]++
		if !av.special[t.content] {
			classics = append(classics, t)
		}
	}

	for _, t := range append(specials, classics...) {
		id := av.byContent[t.content]
		if !t.normalized {
			av.raw.add(t.content, id)
			continue
		}
		content := t.content
		if norm != nil {
			p, err := norm.normalize(piece{text: content, id: -1, first: true})
			if err != nil {
				return nil, fmt.Errorf("added token %.40q: %w", t.content, err)
			}
			content = p.text
		}
		av.norm.add(content, id)
	}
	// Decoding shows a normalized token in its normalized form.
	if norm != nil {
		for _, ref := range av.byID {
			if ref.tok.normalized {
				p, err := norm.normalize(piece{text: ref.tok.content, id: -1, first: true})
				if err != nil {
					return nil, fmt.Errorf("added token %.40q: %w", ref.tok.content, err)
				}
				ref.decode = p.text
			}
		}
	}
	return av, nil
}

// split cuts a piece at the added tokens found by tr, as the reference
// library's find_matches does: leftmost-longest non-overlapping matches, a
// single_word token rejected when a word character touches it, lstrip and
// rstrip widening the token over neighbouring whitespace. Empty pieces are
// dropped.
func (av *addedVocab) split(p piece, tr *trie, out []piece) []piece {
	s := p.text
	if tr.empty() || s == "" {
		if s != "" {
			out = append(out, p)
		}
		return out
	}
	emit := func(start, end, id int) {
		if end > start {
			out = append(out, piece{text: s[start:end], id: id, first: p.first && start == 0})
		}
	}
	startOffset := 0
	for i := 0; i < len(s); {
		id, end := tr.longest(s, i)
		if id < 0 {
			i++
			continue
		}
		start, stop := i, end
		i = end
		if start < startOffset {
			// An rstrip before already took this text.
			continue
		}
		ref := av.byID[id]
		if ref.tok.singleWord {
			if (start > 0 && endsWithWord(s[:start])) || (stop < len(s) && startsWithWord(s[stop:])) {
				continue
			}
		}
		if ref.tok.lstrip {
			start = max(len(strings.TrimRightFunc(s[:start], unicode.IsSpace)), startOffset)
		}
		if ref.tok.rstrip {
			stop = len(s) - len(strings.TrimLeftFunc(s[stop:], unicode.IsSpace))
		}
		emit(startOffset, start, -1)
		emit(start, stop, id)
		startOffset = stop
	}
	emit(startOffset, len(s), -1)
	return out
}

// isWordRune is the Unicode \w of Rust's regex crate, which the reference
// library uses for single_word: alphabetic, marks, decimal digits,
// connector punctuation and the joiners.
func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.In(r, unicode.M, unicode.Nd, unicode.Nl, unicode.Pc, unicode.Other_Alphabetic) ||
		r == 0x200C || r == 0x200D
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return isWordRune(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return isWordRune(r)
}

// trie is a byte trie for longest-match lookup of added tokens.
type trie struct {
	nodes []trieNode
}

type trieNode struct {
	next map[byte]int32
	id   int // -1: no token ends here
}

func newTrie() *trie { return &trie{nodes: []trieNode{{id: -1}}} }

func (t *trie) empty() bool { return len(t.nodes) == 1 }

// add inserts s; the first token added for a given string wins, as the
// first pattern does in the reference library's Aho-Corasick automaton.
func (t *trie) add(s string, id int) {
	if s == "" {
		return
	}
	n := 0
	for i := 0; i < len(s); i++ {
		nx, ok := t.nodes[n].next[s[i]]
		if !ok {
			if t.nodes[n].next == nil {
				t.nodes[n].next = map[byte]int32{}
			}
			nx = int32(len(t.nodes))
			t.nodes[n].next[s[i]] = nx
			t.nodes = append(t.nodes, trieNode{id: -1})
		}
		n = int(nx)
	}
	if t.nodes[n].id < 0 {
		t.nodes[n].id = id
	}
}

// longest returns the id and end of the longest token starting at s[i:],
// or -1.
func (t *trie) longest(s string, i int) (id, end int) {
	id, end = -1, -1
	n := 0
	for j := i; j < len(s); j++ {
		nx, ok := t.nodes[n].next[s[j]]
		if !ok {
			break
		}
		n = int(nx)
		if t.nodes[n].id >= 0 {
			id, end = t.nodes[n].id, j+1
		}
	}
	return id, end
}

// parseAddedTokens reads the "added_tokens" array.
func parseAddedTokens(raw json.RawMessage) ([]addedTokenJSON, error) {
	if isNull(raw) {
		return nil, nil
	}
	var list []addedTokenJSON
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("added_tokens: %w", err)
	}
	return list, nil
}
