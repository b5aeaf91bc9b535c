package model

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// GatedNorm selects how the gated RMSNorm groups channels (SPEC §2.2).
type GatedNorm int

const (
	// Grouped normalises each of the G groups of I/G channels on its own, as
	// mamba_ssm and the checkpoints' training did. It is the default.
	Grouped GatedNorm = iota
	// Full normalises all I channels at once, as transformers 5.17 does.
	Full
)

// ParseGatedNorm reads "grouped" or "full".
func ParseGatedNorm(s string) (GatedNorm, error) {
	switch s {
	case "grouped", "":
		return Grouped, nil
	case "full":
		return Full, nil
	}
	return 0, fmt.Errorf("gated norm %q: want grouped or full", s)
}

func (g GatedNorm) String() string {
	if g == Full {
		return "full"
	}
	return "grouped"
}

// State is the memory of a batch of sequences, block by block: for a
// Mamba-2 mixer the last K-1 conv inputs and the SSM state, for an
// attention its KV cache. It belongs to the sequences, not to the model,
// so one model can serve many states.
type State struct {
	m     *Model
	Batch int
	Pos   int // positions consumed so far
	// conv and ssm are each block's Mamba-2 memory (nil for a block
	// without a Mamba-2 mixer).
	conv []Tensor
	ssm  []Tensor
	// kv are the attention blocks' caches (nil elsewhere), and attn the
	// key mask they share (kvcache.go).
	kv      []*kvCache
	attn    attnMemory
	mask    []float32        // the host mask of the call in progress (nil: none)
	scratch map[int]*scratch // per positions-per-call, allocated once
	sizes   []int            // the call sizes over 1 in scratch, least recent first
	closed  bool
	// tap, when set (HiddenStates), sees the residual stream after each
	// layer k and the final norm (k = Layers) of the piece at position
	// tapStart; it reads them back, so it costs a wait per layer.
	tap      func(k, start int, t Tensor)
	tapStart int
	// lora is each row's attached adapter (nil: none; the slice is nil
	// while no row has one), and loraRuns what forward makes of it
	// (lora.go), nil when it is to be worked out again.
	lora     []*attached
	loraRuns *[]loraUse
}

// scratch holds the activations of one forward call of L positions per
// sequence, allocated on first use and kept for the next call of that size.
type scratch struct {
	ids, mask          Tensor
	h, u, proj, xbc, y Tensor
	last, logitsLast   Tensor
	logitsAll          Tensor // allocated only when all positions are asked for
	// more are the hybrid blocks' activations, by name, made on first use.
	more map[string]Tensor
}

// NewState returns a zero state for batch sequences.
func (m *Model) NewState(batch int) *State {
	b := m.Backend
	s := &State{m: m, Batch: batch, scratch: map[int]*scratch{}}
	for _, blk := range m.Weights.Blocks {
		var conv, ssm Tensor
		var kv *kvCache
		if blk.Kind.Mamba {
			mc := m.Config.Mixer()
			conv = b.Alloc(F32, batch, mc.ConvKernel-1, mc.ConvDim())
			ssm = b.Alloc(F32, batch, mc.Heads, mc.HeadDim, mc.State)
		}
		if blk.Kind.Attention || blk.Kind.Shared {
			kv = &kvCache{}
		}
		s.conv, s.ssm, s.kv = append(s.conv, conv), append(s.ssm, ssm), append(s.kv, kv)
	}
	return s
}

// Close frees every tensor the state allocated (its conv and SSM state and
// the activations of each call size, the returned logits included). A long
// running program that makes many states must close them, or their memory
// lives until Backend.Close. Close is idempotent; Forward on a closed state
// returns an error, and Reset does nothing.
func (s *State) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.releaseAdapters()
	b := s.m.Backend
	for l := range s.conv {
		b.Free(s.conv[l])
		b.Free(s.ssm[l])
	}
	for _, kv := range s.kv {
		kv.free(b)
	}
	s.attn.free(b)
	for L := range s.scratch {
		s.freeScratch(L)
	}
	s.conv, s.ssm, s.kv, s.scratch = nil, nil, nil, nil
	return nil
}

// freeScratch frees the activations of calls of L positions.
func (s *State) freeScratch(L int) {
	sc := s.scratch[L]
	for _, t := range []Tensor{sc.ids, sc.mask, sc.h, sc.u, sc.proj, sc.xbc, sc.y,
		sc.last, sc.logitsLast, sc.logitsAll} {
		s.m.Backend.Free(t) // logitsAll may be nil, which Free ignores
	}
	for _, t := range sc.more {
		s.m.Backend.Free(t)
	}
	delete(s.scratch, L)
}

// Reset clears the state so the next call starts new sequences.
func (s *State) Reset() {
	for l := range s.conv {
		if s.conv[l] != nil {
			s.m.Backend.Zero(s.conv[l])
			s.m.Backend.Zero(s.ssm[l])
		}
	}
	s.attn.reset() // the KV caches are overwritten from position 0
	s.Pos = 0
}

// maxScratch is how many call sizes besides one position keep their
// activations: a prompt's full pieces, its last piece, and one more. Others
// are freed, so prompts of ever new lengths do not pile up device memory.
const maxScratch = 3

func (s *State) scratchFor(L int) *scratch {
	if sc, ok := s.scratch[L]; ok {
		if L > 1 {
			s.sizes = append(slices.DeleteFunc(s.sizes, func(n int) bool { return n == L }), L)
		}
		return sc
	}
	if L > 1 {
		if len(s.sizes) == maxScratch {
			s.freeScratch(s.sizes[0])
			s.sizes = s.sizes[1:]
		}
		s.sizes = append(s.sizes, L)
	}
	c, b, B := s.m.Config, s.m.Backend, s.Batch
	T := B * L
	sc := &scratch{
		ids:        b.Alloc(I32, T),
		mask:       b.Alloc(F32, B, L),
		h:          b.Alloc(F32, B, L, c.Hidden),
		u:          b.Alloc(F32, B, L, c.Hidden),
		proj:       b.Alloc(F32, B, L, c.ProjDim()),
		xbc:        b.Alloc(F32, B, L, c.ConvDim()),
		y:          b.Alloc(F32, B, L, c.Inner()),
		last:       b.Alloc(F32, B, c.Hidden),
		logitsLast: b.Alloc(F32, B, c.VocabSize),
	}
	s.scratch[L] = sc
	return sc
}

// Forward runs L = len(ids)/Batch positions of every sequence (ids is
// row-major [B, L]), continuing from the state, and returns the logits of
// the last position of each ([B, V]). mask ([B, L], 1 for a token, 0 for
// left padding) may be nil.
//
// Long prompts go through in pieces, the state carrying between them:
// pieces are bounded by memory (PrefillChunk) and, on a device backend
// (Pacer), by time (SubmissionBudget).
//
// The returned tensor belongs to the state and is overwritten by the next
// call; Read it before then.
func (s *State) Forward(ids []int32, mask []float32) (Tensor, error) {
	L, err := s.check(ids, mask)
	if err != nil {
		return nil, err
	}
	return s.pieces(ids, mask, L, true, nil)
}

// Logits is Forward returning the logits of every position, on the host:
// [B·L, V] row-major, sequence by sequence. They are read back piece by
// piece, so no device buffer holds them all.
func (s *State) Logits(ids []int32, mask []float32) ([]float32, error) {
	L, err := s.check(ids, mask)
	if err != nil {
		return nil, err
	}
	B, V := s.Batch, s.m.Config.VocabSize
	all := make([]float32, B*L*V)
	_, err = s.pieces(ids, mask, L, false, func(start, n int, logits []float32) {
		for b := range B {
			copy(all[(b*L+start)*V:(b*L+start+n)*V], logits[b*n*V:(b+1)*n*V])
		}
	})
	if err != nil {
		return nil, err
	}
	return all, nil
}

// check validates the arguments of Forward and Logits and returns L.
func (s *State) check(ids []int32, mask []float32) (int, error) {
	if s.closed {
		return 0, errors.New("forward: the state is closed")
	}
	B := s.Batch
	if len(ids) == 0 || len(ids)%B != 0 {
		return 0, fmt.Errorf("forward: %d ids do not split into %d sequences", len(ids), B)
	}
	for _, id := range ids {
		if id < 0 || int(id) >= s.m.Config.VocabSize {
			return 0, fmt.Errorf("forward: token id %d is outside the vocabulary of %d", id, s.m.Config.VocabSize)
		}
	}
	if mask != nil && len(mask) != len(ids) {
		return 0, fmt.Errorf("forward: mask has %d entries for %d ids", len(mask), len(ids))
	}
	return len(ids) / B, nil
}

// pieces runs the L positions in pieces and returns the last piece's
// logits tensor. With all, every position's logits are computed and each
// piece's are read back and handed to all(start, n, logits).
func (s *State) pieces(ids []int32, mask []float32, L int, lastOnly bool, all func(start, n int, logits []float32)) (Tensor, error) {
	m, B := s.m, s.Batch
	limit := m.prefillChunk(B)
	if !lastOnly {
		// The logits of a piece are one activation too.
		limit = max(1, min(limit, maxActivationBytes/(4*B*max(1, m.Config.VocabSize))))
	}
	pacer, paced := m.Backend.(Pacer)
	budget := m.SubmissionBudget
	if budget == 0 {
		budget = SubmissionBudget
	}
	paced = paced && L > 1 && budget > 0 // one decoded token is one submission
	var out Tensor
	for start := 0; start < L; {
		n := min(L-start, limit)
		if paced {
			n = min(n, m.pace.piece(limit, B, m.Config.ChunkSize, budget))
		}
		pid, pmask := ids, mask
		if n < L {
			pid = piece(ids, B, L, start, start+n)
			if mask != nil {
				pmask = piece(mask, B, L, start, start+n)
			}
		}
		began := time.Now()
		s.tapStart = start
		out = s.step(pid, pmask, n, lastOnly, pacer)
		if paced {
			if err := pacer.Sync(); err != nil {
				return nil, err
			}
			m.pace.observe(B*n, m.Config.Layers+1, time.Since(began), budget) // run flushes after each layer

		}
		if !lastOnly {
			logits, err := m.Backend.Read(out)
			if err != nil {
				return nil, err
			}
			all(start, n, logits)
		}
		start += n
	}
	return out, nil
}

// piece returns columns [start, end) of the row-major [B, L] array x.
func piece[T any](x []T, B, L, start, end int) []T {
	out := make([]T, 0, B*(end-start))
	for b := range B {
		out = append(out, x[b*L+start:b*L+end]...)
	}
	return out
}

func (s *State) step(ids []int32, mask []float32, L int, lastOnly bool, p Pacer) Tensor {
	sc := s.scratchFor(L)
	s.m.Backend.WriteIDs(sc.ids, ids)
	var m Tensor
	if mask != nil {
		s.m.Backend.Write(sc.mask, mask)
		m = sc.mask
	}
	s.mask = mask
	defer func() { s.mask = nil }()
	return s.run(sc, sc.ids, L, m, lastOnly, p)
}

// forwardIDs runs one position of every sequence from ids ([B] I32)
// already on the device, such as the ids a DeviceSampler just chose, so a
// decode step needs nothing from the host. It returns the logits [B, V].
func (s *State) forwardIDs(ids Tensor) (Tensor, error) {
	if s.closed {
		return nil, errors.New("forward: the state is closed")
	}
	return s.run(s.scratchFor(1), ids, 1, nil, true, nil), nil
}

// run is the forward pass of SPEC §2 of the token ids in ids ([B·L] I32),
// block by block (for a hybrid, blocks.go and hybridforward.go).
// With a Pacer and more than one position, each layer is submitted on its
// own, so no submission runs long whatever the piece.
func (s *State) run(sc *scratch, ids Tensor, L int, mask Tensor, lastOnly bool, p Pacer) Tensor {
	m, b, c := s.m, s.m.Backend, s.m.Config
	eps := float32(c.Eps)
	norm := func(w, mask Tensor, groups int) Product {
		return Product{Norm: w, Mask: mask, Groups: groups, Eps: eps}
	}
	f := s.pass(sc, ids, L, mask)

	b.Embed(sc.h, m.Weights.Embed, ids) // h = E[ids]
	f.loraEmbed()                       // (attached adapters: h += their updates of E, lora.go)
	f.embedded()                        // (hybrids: h *= embedding multiplier; Zamba2 keeps E[ids])
	for l, blk := range m.Weights.Blocks {
		if c.Hybrid == nil {
			f.mamba2(l, blk.Mamba) // h += Mamba-2 mixer(rmsnorm(h))
		} else {
			f.hybrid(l, &m.Weights.Blocks[l]) // h = the hybrid block (hybridforward.go)
		}
		if s.tap != nil {
			s.tap(l, s.tapStart, sc.h) // layer l's output: the residual stream
		}
		if p != nil && L > 1 {
			p.Flush()
		}
	}
	if s.tap != nil {
		b.RMSNorm(sc.u, sc.h, m.Weights.NormF, nil, 1, eps)
		s.tap(c.Layers, s.tapStart, sc.u)
	}
	s.Pos += L
	head := norm(m.Weights.NormF, nil, 1) // logits = rmsnorm(h)·w_f LMᵀ
	out := sc.logitsLast
	if lastOnly {
		last := sc.h
		if L > 1 {
			b.Last(sc.last, sc.h)
			last = sc.last
		}
		b.MatMul(sc.logitsLast, last, m.Weights.LMHead, nil, head)
		f.loraHead(sc.logitsLast, last, head, 1)
	} else {
		if sc.logitsAll == nil {
			sc.logitsAll = b.Alloc(F32, s.Batch*L, c.VocabSize)
		}
		b.MatMul(sc.logitsAll, sc.h, m.Weights.LMHead, nil, head)
		f.loraHead(sc.logitsAll, sc.h, head, L)
		out = sc.logitsAll
	}
	f.logits(out) // (hybrids: logits *= the lm_head multiplier)
	return out
}

// pass is one forward call's context: the state, its activations and the
// per-call arguments every block reads.
type pass struct {
	s    *State
	sc   *scratch
	ids  Tensor
	L    int
	mask Tensor
	eps  float32
	args SSMArgs // the Mamba-2 mixer's settings, SPEC §2.1
	// groups of the gated norm: G (grouped) or 1 (full), SPEC §2.2
	groups int
}

func (s *State) pass(sc *scratch, ids Tensor, L int, mask Tensor) *pass {
	m, c := s.m, s.m.Config
	groups := c.Groups
	if m.GatedNorm == Full {
		groups = 1
	}
	if c.Hybrid != nil {
		groups = c.Hybrid.NormGroups // as the family's transformers code computes it
	}
	return &pass{s: s, sc: sc, ids: ids, L: L, mask: mask, eps: float32(c.Eps), groups: groups,
		args: SSMArgs{Config: c.Mixer(), Chunked: !(L == 1 && s.Pos > 0), Gate: true}}
}

func (f *pass) norm(w, mask Tensor, groups int) Product {
	return Product{Norm: w, Mask: mask, Groups: groups, Eps: f.eps}
}

// mamba2 is one Mamba-2 block of SPEC §2, as three fused operations.
func (f *pass) mamba2(l int, w *Layer) {
	s, b, sc, mask, c := f.s, f.s.m.Backend, f.sc, f.mask, f.args.Config
	in := f.norm(w.Norm, mask, 1)
	conv := &ConvArgs{Out: sc.xbc, State: s.conv[l], W: w.ConvW, Bias: w.ConvB, Mask: mask, Config: c}
	tuned := f.loraOn(w.InProj) // attached adapters change in_proj's output, which the conv reads
	if !tuned {
		in.Conv = conv
	}
	b.MatMul(sc.proj, sc.h, w.InProj, w.InBias, in) // z | xBC | dt = rmsnorm(h)·w·mask Wᵀ; then xbc = silu(causal_conv(xBC)), padding zeroed
	if tuned {
		f.loraMat(w.InProj, sc.proj, sc.h, in, f.L)                            // (+ attached adapters' updates)
		b.Conv(conv.Out, sc.proj, conv.State, conv.W, conv.Bias, conv.Mask, c) // then the conv
	}
	b.SSM(sc.y, sc.xbc, sc.proj, s.ssm[l], w.DtBias, w.ALog, w.D, f.args) // y = (SSM(x) + D·x)·silu(z)
	out := f.norm(w.MixNorm, nil, f.groups)
	out.Add = true
	b.MatMul(sc.h, sc.y, w.OutProj, w.OutBias, out) // h += rmsnorm_group(y)·w Woutᵀ
	f.loraMat(w.OutProj, sc.h, sc.y, out, f.L)
}
