package model

import (
	"container/list"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
)

// PrefixCache keeps saved states (State.Save bytes) keyed by the token ids
// that produced them, so a prompt that begins with a cached prefix (a chat's
// shared system prompt, the earlier turns of a conversation) restores the
// state after the prefix instead of prefilling it again. A Mamba-2 state is
// the same size whatever the prefix's length, so one entry of a long prefix
// saves as much memory as it saves time.
//
// It is bounded in bytes (the states plus their keys) and forgets the least
// recently used entries first. It is safe for concurrent use; it holds only
// bytes, never a State, so it is independent of any backend's threading.
type PrefixCache struct {
	mu       sync.Mutex
	maxBytes int64
	bytes    int64
	lru      *list.List // of *prefixEntry, most recently used first
	hits     int64
	misses   int64
}

type prefixEntry struct {
	// adapter is the key of the attached adapter the state was made under
	// ("" for the base model): a state is the adapted model's memory, so
	// it is never found for another adapter, or for none.
	adapter string
	ids     []int
	state   []byte
}

func (e *prefixEntry) size() int64 {
	return int64(len(e.state)) + 8*int64(len(e.ids)) + int64(len(e.adapter))
}

// PrefixStats describe a PrefixCache.
type PrefixStats struct {
	Entries      int
	Bytes        int64 // states and keys
	Hits, Misses int64 // lookups that found a prefix, and that did not
}

// NewPrefixCache returns a cache that holds at most maxBytes of states and
// keys. A maxBytes of 0 or less keeps nothing.
func NewPrefixCache(maxBytes int64) *PrefixCache {
	return &PrefixCache{maxBytes: maxBytes, lru: list.New()}
}

// Lookup, Contains, Put and Remove see the entries of states made under
// the base model (no attached adapter); Generate and GenerateOn key each
// entry by the adapter the request runs under (Options.Adapter).

// Lookup returns the longest cached prefix of ids that is shorter than ids
// (something must remain to be fed, since a generation starts by feeding
// the prompt) and its saved state; n is 0 and state nil when none is.
// Entries are few (each is a whole state, megabytes), so a scan over them
// costs nothing next to the prefill it saves.
func (c *PrefixCache) Lookup(ids []int) (n int, state []byte) {
	return c.lookup("", ids)
}

// lookup is Lookup among the entries made under the adapter of key.
func (c *PrefixCache) lookup(key string, ids []int) (n int, state []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var best *list.Element
	for e := c.lru.Front(); e != nil; e = e.Next() {
		p := e.Value.(*prefixEntry)
		if p.adapter == key && len(p.ids) < len(ids) && (best == nil || len(p.ids) > len(best.Value.(*prefixEntry).ids)) && slices.Equal(p.ids, ids[:len(p.ids)]) {
			best = e
		}
	}
	if best == nil {
		c.misses++
		return 0, nil
	}
	c.hits++
	c.lru.MoveToFront(best)
	p := best.Value.(*prefixEntry)
	return len(p.ids), p.state
}

// Contains reports whether ids themselves are cached.
func (c *PrefixCache) Contains(ids []int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.find("", ids) != nil
}

func (c *PrefixCache) find(key string, ids []int) *list.Element {
	for e := c.lru.Front(); e != nil; e = e.Next() {
		if p := e.Value.(*prefixEntry); p.adapter == key && slices.Equal(p.ids, ids) {
			return e
		}
	}
	return nil
}

// Put stores the state after ids (copies of both), replacing an entry for
// the same ids, and forgets the least recently used entries until the
// cache fits its bound. An entry larger than the whole bound is not kept.
func (c *PrefixCache) Put(ids []int, state []byte) { c.put("", ids, state) }

// put is Put of a state made under the adapter of key.
func (c *PrefixCache) put(key string, ids []int, state []byte) {
	if len(ids) == 0 {
		return
	}
	p := &prefixEntry{adapter: key, ids: slices.Clone(ids), state: slices.Clone(state)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.find(key, ids); e != nil {
		c.bytes -= e.Value.(*prefixEntry).size()
		c.lru.Remove(e)
	}
	if p.size() > c.maxBytes {
		return
	}
	c.lru.PushFront(p)
	c.bytes += p.size()
	for c.bytes > c.maxBytes {
		last := c.lru.Back()
		c.bytes -= last.Value.(*prefixEntry).size()
		c.lru.Remove(last)
	}
}

// Remove forgets the entry for ids, if any (a state that no longer
// restores, say).
func (c *PrefixCache) Remove(ids []int) { c.remove("", ids) }

func (c *PrefixCache) remove(key string, ids []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.find(key, ids); e != nil {
		c.bytes -= e.Value.(*prefixEntry).size()
		c.lru.Remove(e)
	}
}

// Stats returns the cache's size and its hit counts so far.
func (c *PrefixCache) Stats() PrefixStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return PrefixStats{Entries: c.lru.Len(), Bytes: c.bytes, Hits: c.hits, Misses: c.misses}
}

// Generate is m.Generate(ctx, prompt, o) through the cache: it restores
// the state after the longest cached prefix of prompt, then prefills the
// prompt up to each of points (lengths of prefixes worth keeping, such as
// the end of a chat's system prompt) that lies beyond it and saves the
// state there into the cache, and generates from the rest of the prompt.
// cached is how many prompt tokens came from the cache; Result.Timing
// counts only the tokens fed.
//
// A prefix is saved by feeding it alone (State.Forward, whose logits are
// not used), not through Generate: Generate leaves its state after the
// prompt and every generated token but the last, never after the prompt
// alone, unless it generates one token, which would cost a sampling step
// and leave that token unfed. Feeding the prompt in pieces computes what
// feeding it whole does (the statefile contract), so the output is the
// same as without the cache, to float32 rounding of the scan's chunking.
//
// Generate must run where m's backend may be used (one goroutine at a
// time; on a Scheduler, GenerateOn does that); the cache itself may be
// shared. With a repetition penalty, which
// counts only the prompt of one call (Options.State), the cache is not
// used, so the penalty sees the whole prompt. Options.State must be nil.
func (c *PrefixCache) Generate(ctx context.Context, m *Model, prompt []int, points []int, o Options) (res Result, cached int, err error) {
	if o.State != nil {
		return Result{}, 0, errors.New("prefix cache: Options.State must be nil: the cache makes the state")
	}
	if len(prompt) == 0 {
		return Result{}, 0, errors.New("generate: the prompt is empty")
	}
	if o.RepetitionPenalty != 0 && o.RepetitionPenalty != 1 {
		res, err := m.Generate(ctx, prompt, o)
		return res, 0, err
	}
	st := m.NewState(1)
	defer st.Close()
	if err := st.continueUnder(o.Adapter); err != nil {
		return Result{}, 0, err
	}
	n, cached, err := c.prefill(st, prompt, points, func() bool { return ctx.Err() != nil })
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return Result{}, cached, err
	}
	o.State = st
	res, err = m.Generate(ctx, prompt[n:], o)
	return res, cached, err
}

// GenerateOn is Generate on a Scheduler: the restore and the prefills up
// to points run on the scheduler's goroutine when the request is admitted
// to a slot, in place of the prompt's plain prefill, since the backend is
// the scheduler's alone while it runs. The request is then one like any
// other in the batch (a request with its own Options.State would run in
// lockstep with its caller). Points, cached and Result.Timing are as in
// Generate; ctx, the options and the errors are Scheduler.Generate's.
//
// Unlike Generate, the cache is used with a repetition penalty too: the
// scheduler's sampler counts the whole prompt given here, restored or fed.
func (c *PrefixCache) GenerateOn(ctx context.Context, s *Scheduler, prompt []int, points []int, o Options) (res Result, cached int, err error) {
	if o.State != nil {
		return Result{}, 0, errors.New("prefix cache: Options.State must be nil: the cache makes the state")
	}
	// Written by the scheduler's goroutine, read here once Generate has
	// returned (which may be before the hook ran, or while it runs, when
	// the caller gives up: then 0 is as good an answer as any).
	// The hook runs on the scheduler's goroutine, maybe after this call
	// has returned (a caller that gave up): it gets copies of its own.
	prompt, points = slices.Clone(prompt), slices.Clone(points)
	var restored, fed atomic.Int64
	res, err = s.generate(ctx, prompt, o, func(st *State, stop func() bool) (int, error) {
		n, cached, err := c.prefill(st, prompt, points, stop)
		restored.Store(int64(cached))
		fed.Store(int64(n))
		return n, err
	})
	if n := int(fed.Load()); n > 0 && res.Timing.PromptTokens == len(prompt) {
		res.Timing.PromptTokens -= n
	}
	return res, int(restored.Load()), err
}

// prefill brings st (a fresh batch-of-one state) through the longest
// cached prefix of prompt, then through each of points beyond it, saving
// the state at each into the cache. It returns how many tokens of prompt
// st holds (fewer than all) and how many of those the cache gave. stop is
// asked between pieces whether the caller has given up.
func (c *PrefixCache) prefill(st *State, prompt, points []int, stop func() bool) (n, cached int, err error) {
	key := st.adapterKey(0) // entries of st's adapter only
	n, data := c.lookup(key, prompt)
	if n > 0 {
		if err := st.Restore(data); err != nil {
			// Another model's state (a cache shared by mistake) or a
			// damaged one: forget it and prefill everything.
			c.remove(key, prompt[:n])
			st.Reset()
			n = 0
		}
	}
	cached = n
	points = slices.Clone(points)
	slices.Sort(points)
	for _, p := range slices.Compact(points) {
		if p <= n || p >= len(prompt) {
			continue
		}
		if stop() {
			return n, cached, errors.New("prefix cache: the request was given up")
		}
		piece := make([]int32, p-n)
		for i, v := range prompt[n:p] {
			piece[i] = int32(v)
		}
		if _, err := st.Forward(piece, nil); err != nil {
			return n, cached, err
		}
		saved, err := st.Save()
		if err != nil {
			return n, cached, err
		}
		c.put(key, prompt[:p], saved)
		n = p
	}
	return n, cached, nil
}
