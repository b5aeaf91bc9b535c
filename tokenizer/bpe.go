package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// maxTokenID bounds the ids accepted from a file. Real vocabularies stay
// far below it; the bound keeps a corrupt file from making Load allocate
// gigabytes for the id-to-token table.
const maxTokenID = 1<<24 - 1

// MaxMerges bounds the merges of a BPE model: 4M, some ten times the
// largest lists in use (a few hundred thousand; SentencePiece conversions
// list more merges than tokens). Merges are read one at a time, so a file
// of millions of tiny merges fails here rather than after gigabytes of
// allocation.
const MaxMerges = 1 << 22

// bpeModel is the BPE model of tokenizer.json: a vocabulary plus an ordered
// list of merges, applied to each word independently.
type bpeModel struct {
	vocab  map[string]int
	tokens []string // id -> token; "" where no token has the id
	has    []bool   // id -> whether tokens[id] is a token
	merges map[uint64]mergeRule

	unk          int // id of unk_token, or -1
	fuseUnk      bool
	byteFallback bool
	byteIDs      [256]int // id of "<0xXX>", or -1
	ignoreMerges bool
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix

	mu    sync.Mutex
	cache map[string][]int
}

// mergeRule says that a pair of adjacent tokens becomes id, rank being the
// position of the merge in the file (lower merges first).
type mergeRule struct {
	rank int32
	id   int32
}

// maxCacheEntries bounds the per-word cache. Words repeat a lot in code and
// prose, so even a small cache saves most of the merge work.
const maxCacheEntries = 1 << 16

func pairKey(a, b int) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

type bpeJSON struct {
	Type                    string          `json:"type"`
	Dropout                 *float64        `json:"dropout"`
	UnkToken                *string         `json:"unk_token"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	Vocab                   map[string]int  `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
}

func parseModel(raw json.RawMessage) (*bpeModel, error) {
	if isNull(raw) {
		return nil, errors.New("model: missing")
	}
	var v bpeJSON
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if v.Type == "" && v.Merges == nil {
		return nil, errors.New("model: missing type")
	}
	if v.Type != "" && v.Type != "BPE" {
		return nil, fmt.Errorf("unsupported model %.40q (only BPE is supported)", v.Type)
	}
	if v.Dropout != nil && *v.Dropout != 0 {
		// Dropout makes encoding random; the reference library
		// applies it on every encode, so no fixed answer exists.
		return nil, fmt.Errorf("model BPE: unsupported dropout %v", *v.Dropout)
	}
	if v.Vocab == nil {
		return nil, errors.New("model BPE: missing vocab")
	}
	m := &bpeModel{
		vocab:        v.Vocab,
		unk:          -1,
		fuseUnk:      v.FuseUnk,
		byteFallback: v.ByteFallback,
		ignoreMerges: v.IgnoreMerges,
		cache:        map[string][]int{},
	}
	if v.ContinuingSubwordPrefix != nil {
		m.prefix = *v.ContinuingSubwordPrefix
	}
	if v.EndOfWordSuffix != nil {
		m.suffix = *v.EndOfWordSuffix
	}
	maxID := -1
	for tok, id := range v.Vocab {
		if id < 0 || id > maxTokenID {
			return nil, fmt.Errorf("model BPE: vocab id %d of %.40q out of range", id, tok)
		}
		if !utf8.ValidString(tok) {
			return nil, fmt.Errorf("model BPE: vocab token %.40q is not valid UTF-8", tok)
		}
		maxID = max(maxID, id)
	}
	if maxID >= 2*len(v.Vocab)+1024 {
		// Real vocabularies are dense; refusing very sparse ones keeps a
		// corrupt file from making the id table huge.
		return nil, fmt.Errorf("model BPE: vocab ids are sparse (largest %d for %d tokens)", maxID, len(v.Vocab))
	}
	m.tokens = make([]string, maxID+1)
	m.has = make([]bool, maxID+1)
	for tok, id := range v.Vocab {
		if m.has[id] {
			return nil, fmt.Errorf("model BPE: id %d used by both %.40q and %.40q", id, m.tokens[id], tok)
		}
		m.tokens[id], m.has[id] = tok, true
	}
	if v.UnkToken != nil {
		id, ok := v.Vocab[*v.UnkToken]
		if !ok {
			// The reference library fails on the first unknown
			// character instead; failing early is clearer.
			return nil, fmt.Errorf("model BPE: unk_token %.40q not in vocab", *v.UnkToken)
		}
		m.unk = id
	}
	for b := range m.byteIDs {
		id, ok := v.Vocab[fmt.Sprintf("<0x%02X>", b)]
		if !ok {
			id = -1
		}
		m.byteIDs[b] = id
	}
	m.merges = map[uint64]mergeRule{}
	err := parseMerges(v.Merges, func(rank int, l, r string) error {
		a, ok1 := v.Vocab[l]
		b, ok2 := v.Vocab[r]
		if !ok1 || !ok2 {
			return fmt.Errorf("model BPE: merge %d (%.40q %.40q) uses a token not in vocab", rank, l, r)
		}
		right := r
		if m.prefix != "" {
			right = strings.TrimPrefix(right, m.prefix)
		}
		id, ok := v.Vocab[l+right]
		if !ok {
			return fmt.Errorf("model BPE: merge %d (%.40q %.40q) makes %.40q, which is not in vocab", rank, l, r, l+right)
		}
		// A repeated pair keeps its last rank, as in the reference
		// library's hash map.
		m.merges[pairKey(a, b)] = mergeRule{rank: int32(rank), id: int32(id)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// parseMerges calls add for each merge in order, accepting both formats:
// ["a b", ...] (where the pair is split at its single space) and
// [["a", "b"], ...]. It reads the list one token at a time, holding no
// copy of it, and stops after MaxMerges.
func parseMerges(raw json.RawMessage, add func(rank int, a, b string) error) error {
	if isNull(raw) {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := d.Token(); err != nil || tok != json.Delim('[') {
		return fmt.Errorf("model BPE: merges: want a list, got %.40s", raw)
	}
	for i := 0; d.More(); i++ {
		if i == MaxMerges {
			return fmt.Errorf("model BPE: more than %d merges (tokenizer.MaxMerges)", MaxMerges)
		}
		bad := func() error { return fmt.Errorf("model BPE: merge %d is neither \"a b\" nor [\"a\", \"b\"]", i) }
		tok, err := d.Token()
		if err != nil {
			return bad()
		}
		var a, b string
		switch tok := tok.(type) {
		case string:
			var ok bool
			a, b, ok = strings.Cut(tok, " ")
			if !ok || strings.Contains(b, " ") {
				return fmt.Errorf("model BPE: merge %d %.40q is not two tokens separated by one space", i, tok)
			}
		case json.Delim:
			if tok != '[' {
				return bad()
			}
			var parts [3]json.Token
			for k := range parts {
				if parts[k], err = d.Token(); err != nil {
					return bad()
				}
			}
			var ok1, ok2 bool
			a, ok1 = parts[0].(string)
			b, ok2 = parts[1].(string)
			if !ok1 || !ok2 || parts[2] != json.Delim(']') {
				return bad()
			}
		default:
			return bad()
		}
		if err := add(i, a, b); err != nil {
			return err
		}
	}
	return nil
}

// tokenize appends the ids of one word to dst.
func (m *bpeModel) tokenize(word string, dst []int) []int {
	if word == "" {
		return dst
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[word]; ok {
			return append(dst, id)
		}
	}
	m.mu.Lock()
	ids, ok := m.cache[word]
	m.mu.Unlock()
	if ok {
		return append(dst, ids...)
	}
	ids = m.mergeWord(word)
	m.mu.Lock()
	if len(m.cache) < maxCacheEntries {
		m.cache[word] = ids
	}
	m.mu.Unlock()
	return append(dst, ids...)
}

// symbol is one current token of a word being merged, in a doubly linked
// list over the initial characters; size 0 marks a symbol merged away.
type symbol struct {
	id         int32
	prev, next int32
	size       int32
}

// mergeWord splits word into characters (with byte fallback and unknown
// handling) and applies merges lowest rank first, leftmost first among
// equal ranks, exactly like the reference library's Word::merge_all.
func (m *bpeModel) mergeWord(w string) []int {
	syms := make([]symbol, 0, len(w))
	add := func(id, size int) {
		n := int32(len(syms))
		syms = append(syms, symbol{id: int32(id), prev: n - 1, next: n + 1, size: int32(size)})
	}
	unkID, unkLen := -1, 0
	for i := 0; i < len(w); {
		_, n := utf8.DecodeRuneInString(w[i:])
		s := w[i : i+n]
		if i > 0 && m.prefix != "" {
			s = m.prefix + s
		}
		if i+n == len(w) && m.suffix != "" {
			s += m.suffix
		}
		i += n
		if id, ok := m.vocab[s]; ok {
			if unkID >= 0 {
				add(unkID, unkLen)
				unkID = -1
			}
			add(id, n)
			continue
		}
		if m.byteFallback {
			all := true
			for j := 0; j < len(s); j++ {
				if m.byteIDs[s[j]] < 0 {
					all = false
					break
				}
			}
			if all {
				// Like the reference library, a pending unknown is
				// not flushed first: it lands after these bytes.
				for j := 0; j < len(s); j++ {
					add(m.byteIDs[s[j]], 1)
				}
				continue
			}
		}
		if m.unk >= 0 {
			switch {
			case unkID >= 0 && m.fuseUnk:
				unkLen += n
			case unkID >= 0:
				add(unkID, unkLen)
				unkID, unkLen = m.unk, n
			default:
				unkID, unkLen = m.unk, n
			}
		}
		// Without unk_token an unknown character is dropped.
	}
	if unkID >= 0 {
		add(unkID, unkLen)
	}
	if len(syms) == 0 {
		return nil
	}
	syms[len(syms)-1].next = -1

	var q mergeQueue
	for i := 0; i+1 < len(syms); i++ {
		if r, ok := m.merges[pairKey(int(syms[i].id), int(syms[i+1].id))]; ok {
			q.push(mergeItem{pos: int32(i), rank: r.rank, id: r.id})
		}
	}
	for len(q) > 0 {
		top := q.pop()
		cur := &syms[top.pos]
		if cur.size == 0 || cur.next < 0 {
			continue
		}
		nextPos := cur.next
		right := syms[nextPos]
		// Skip entries made stale by earlier merges.
		if r, ok := m.merges[pairKey(int(cur.id), int(right.id))]; !ok || r.id != top.id {
			continue
		}
		cur.id = top.id
		cur.size += right.size
		cur.next = right.next
		syms[nextPos].size = 0
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if r, ok := m.merges[pairKey(int(syms[cur.prev].id), int(cur.id))]; ok {
				q.push(mergeItem{pos: cur.prev, rank: r.rank, id: r.id})
			}
		}
		if cur.next >= 0 {
			if r, ok := m.merges[pairKey(int(cur.id), int(syms[cur.next].id))]; ok {
				q.push(mergeItem{pos: top.pos, rank: r.rank, id: r.id})
			}
		}
	}
	ids := make([]int, 0, len(syms))
	for _, s := range syms {
		if s.size != 0 {
			ids = append(ids, int(s.id))
		}
	}
	return ids
}

type mergeItem struct {
	pos, rank, id int32
}

func (a mergeItem) less(b mergeItem) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.pos < b.pos
}

// mergeQueue is a binary min-heap ordered by (rank, pos).
type mergeQueue []mergeItem

func (q *mergeQueue) push(it mergeItem) {
	*q = append(*q, it)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].less(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *mergeQueue) pop() mergeItem {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h) && h[l].less(h[m]) {
			m = l
		}
		if r < len(h) && h[r].less(h[m]) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}
