package model

// kvCache is one attention block's memory of a batch of sequences: the
// keys and values of every position so far, [B, Cap, KVHeads·HeadDim]
// each, sequence b's positions at the start of its row. Every cache of a
// state has the same capacity (attnMemory.cap); it grows by doubling, the
// old contents moved into the new tensors on the backend
// (HybridBackend.StoreKV), so a decode step appends one position without
// a round trip through the host.
type kvCache struct {
	k, v Tensor
}

func (kv *kvCache) free(b Backend) {
	if kv != nil {
		b.Free(kv.k)
		b.Free(kv.v)
		kv.k, kv.v = nil, nil
	}
}

// attnMemory is what a state's attention blocks share: the capacity of
// their caches, how many positions each sequence holds in them, and which
// of those positions were left padding (mask 0), so a later query never
// attends to them.
//
// The sequences of a batch need not be at the same position: the
// Scheduler's pool holds sequences copied into its rows at their own
// lengths (copyKVRow), and each continues from there. So every attention
// operation reads each sequence's position from start, on the device, and
// the last attention block of a call moves it on there (HybridBackend.
// Advance): a decode step writes nothing from the host.
type attnMemory struct {
	cap int
	// lens is each sequence's positions in the caches (every one State.Pos
	// in a state fed whole batches), and start the same on the device
	// ([B] I32), which holds lens whenever startSynced is set: it is
	// written only when lens changes other than by a call's positions.
	lens        []int
	start       Tensor
	startSynced bool
	// idle rows hold no sequence (the Scheduler's free slots): one whose
	// next call would outgrow the caches starts over at position 0
	// instead, so a slot left free for long never makes the caches grow.
	idle []bool
	// last is the last block with attention, which advances start.
	last int

	hist   []float32 // [B, cap]: 1 for a token, 0 for padding
	padded bool      // some position so far was padding
	mask   Tensor    // hist on the device, written when padded
	// synced says mask holds hist. Positions past those consumed are 1
	// in hist (Attend never reads them), so a decode step of an
	// unpadded token changes nothing and writes nothing: a Write ends
	// the GPU backend's recording, and would make every decode step of
	// a left-padded batch two submissions.
	synced bool
}

func (a *attnMemory) free(b Backend) {
	b.Free(a.mask)
	b.Free(a.start)
	a.mask, a.start = nil, nil
	a.synced, a.startSynced = false, false
}

// reset starts every sequence over: the caches are overwritten from
// position 0.
func (a *attnMemory) reset() {
	a.padded = false
	for b := range a.lens {
		a.restart(b)
	}
}

// init makes the per-sequence bookkeeping of s on first use.
func (s *State) initAttn() {
	a := &s.attn
	if a.lens != nil {
		return
	}
	a.lens, a.idle = make([]int, s.Batch), make([]bool, s.Batch)
	for l, kv := range s.kv {
		if kv != nil {
			a.last = l
		}
	}
}

// restart empties sequence b's rows of the caches.
func (a *attnMemory) restart(b int) {
	a.lens[b] = 0
	a.startSynced = false
	if a.cap > 0 {
		row := a.hist[b*a.cap : (b+1)*a.cap]
		for i := range row {
			if row[i] != 1 {
				row[i], a.synced = 1, false
			}
		}
	}
}

// minKVCap is the smallest cache: decoding a few dozen tokens after a
// short prompt never reallocates.
const minKVCap = 64

// growKV makes the caches of s hold at least need positions, moving what
// they hold into the new ones on the backend.
func (s *State) growKV(hb HybridBackend, need int) {
	a, B, hy := &s.attn, s.Batch, s.m.Config.Hybrid
	if need <= a.cap {
		return
	}
	grown := max(2*a.cap, need, minKVCap)
	X := hy.KVHeads * hy.AttnHeadDim
	for _, kv := range s.kv {
		if kv == nil {
			continue
		}
		k, v := hb.Alloc(F32, B, grown, X), hb.Alloc(F32, B, grown, X)
		if kv.k != nil {
			hb.StoreKV(k, kv.k, 0, nil)
			hb.StoreKV(v, kv.v, 0, nil)
		}
		kv.free(hb)
		kv.k, kv.v = k, v
	}
	hist := make([]float32, B*grown)
	for b := range B {
		row := hist[b*grown : (b+1)*grown]
		i := 0
		if a.cap > 0 {
			i = copy(row, a.hist[b*a.cap:(b+1)*a.cap])
		}
		for ; i < grown; i++ {
			row[i] = 1
		}
	}
	a.hist, a.cap = hist, grown
	hb.Free(a.mask)
	a.mask = hb.Alloc(F32, B, grown)
	a.synced = false
}

// reserve makes room for L more positions of every sequence in the KV
// caches of s, records the call's mask (nil: all tokens) in the key
// mask, and brings start and the key mask on the device up to date.
func (s *State) reserve(hb HybridBackend, L int) {
	s.initAttn()
	a, B := &s.attn, s.Batch
	need := L
	for b, n := range a.lens {
		if !a.idle[b] {
			need = max(need, n+L)
		}
	}
	s.growKV(hb, need)
	for b := range B {
		if a.lens[b]+L > a.cap { // only an idle row: need covers the others
			a.restart(b)
		}
	}
	for b := range B {
		at := b*a.cap + a.lens[b]
		for i := range L {
			v := float32(1)
			if s.mask != nil {
				v = s.mask[b*L+i]
			}
			if v == 0 {
				a.padded = true
			}
			if a.hist[at+i] != v {
				a.hist[at+i] = v
				a.synced = false
			}
		}
	}
	if a.start == nil {
		a.start, a.startSynced = hb.Alloc(I32, B), false
	}
	if !a.startSynced {
		// Every sequence at 0 (a new or Reset state: each prompt the
		// Scheduler prefills) is a Zero, recorded with the call's other
		// work; a Write would end the GPU backend's recording.
		pos, zero := make([]int32, B), true
		for b, n := range a.lens {
			pos[b], zero = int32(n), zero && n == 0
		}
		if zero {
			hb.Zero(a.start)
		} else {
			hb.WriteIDs(a.start, pos)
		}
		a.startSynced = true
	}
	if a.padded && !a.synced {
		hb.Write(a.mask, a.hist)
		a.synced = true
	}
}

// advance moves every sequence on by the L positions of the call just
// attended to, on the host and on the device.
func (s *State) advance(hb HybridBackend, L int) {
	a := &s.attn
	for b := range a.lens {
		a.lens[b] += L
	}
	hb.Advance(a.start, L)
}

// keyMask is the mask Attend reads: nil while no position was padding.
func (a *attnMemory) keyMask() Tensor {
	if !a.padded {
		return nil
	}
	return a.mask
}

// uniform reports whether every sequence of s is at position s.Pos, as
// in a state only ever fed whole batches.
func (s *State) uniform() bool {
	for _, n := range s.attn.lens {
		if n != s.Pos {
			return false
		}
	}
	return true
}

// releaseRow marks sequence b of s as holding nothing (a Scheduler's free
// slot): its rows of the caches are dropped, and it never makes them grow
// until a sequence is copied in (copyKVRow). For a state without
// attention it does nothing.
func (s *State) releaseRow(b int) {
	if !hasKV(s) {
		return
	}
	s.initAttn()
	s.attn.idle[b] = true
	s.attn.restart(b)
}

// hasKV reports whether s has attention blocks.
func hasKV(s *State) bool {
	for _, kv := range s.kv {
		if kv != nil {
			return true
		}
	}
	return false
}

// copyKVRow copies sequence sr of src's KV caches and key mask into
// sequence dr of s: its first n positions (n its length) of every
// attention block, so row dr continues from position n, whatever the
// other rows of s hold. The caches of s grow first if n does not fit.
func (s *State) copyKVRow(hb HybridBackend, dr int, src *State, sr int) {
	s.initAttn()
	src.initAttn()
	a, sa := &s.attn, &src.attn
	n := sa.lens[sr]
	s.growKV(hb, n)
	if n > 0 {
		for l, kv := range s.kv {
			if kv != nil {
				hb.CopyKV(kv.k, dr, src.kv[l].k, sr, n)
				hb.CopyKV(kv.v, dr, src.kv[l].v, sr, n)
			}
		}
	}
	a.restart(dr)
	if n > 0 {
		copy(a.hist[dr*a.cap:dr*a.cap+n], sa.hist[sr*sa.cap:sr*sa.cap+n])
		a.synced = false
		for _, v := range sa.hist[sr*sa.cap : sr*sa.cap+n] {
			a.padded = a.padded || v == 0
		}
	}
	a.lens[dr], a.idle[dr] = n, false
}
