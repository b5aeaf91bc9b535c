package model

// kvCache is one attention block's memory of a batch of sequences: the
// keys and values of every position so far, [B, Cap, KVHeads·HeadDim]
// each. Every cache of a state has the same capacity (attnMemory.cap); it
// grows by doubling, the old contents moved into the new tensors on the
// backend (HybridBackend.StoreKV), so a decode step appends one position
// without a round trip through the host.
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
// their caches and which positions of each sequence were left padding
// (mask 0), so a later query never attends to them.
type attnMemory struct {
	cap    int
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
	a.mask = nil
}

func (a *attnMemory) reset() { a.padded = false }

// minKVCap is the smallest cache: decoding a few dozen tokens after a
// short prompt never reallocates.
const minKVCap = 64

// reserve makes room for L more positions in every KV cache of s and
// records the call's mask (nil: all tokens) in the key mask.
func (s *State) reserve(hb HybridBackend, L int) {
	a, B, hy := &s.attn, s.Batch, s.m.Config.Hybrid
	need := s.Pos + L
	if need > a.cap {
		grown := max(2*a.cap, need, minKVCap)
		X := hy.KVHeads * hy.AttnHeadDim
		for _, kv := range s.kv {
			if kv == nil {
				continue
			}
			k, v := hb.Alloc(F32, B, grown, X), hb.Alloc(F32, B, grown, X)
			if kv.k != nil && s.Pos > 0 {
				hb.StoreKV(k, kv.k, 0)
				hb.StoreKV(v, kv.v, 0)
			}
			kv.free(hb)
			kv.k, kv.v = k, v
		}
		hist := make([]float32, B*grown)
		for b := range B {
			row := hist[b*grown : (b+1)*grown]
			for i := copy(row, a.hist[b*a.cap:(b+1)*a.cap]); i < grown; i++ {
				row[i] = 1
			}
		}
		a.hist, a.cap = hist, grown
		hb.Free(a.mask)
		a.mask = hb.Alloc(F32, B, grown)
		a.synced = false
	}
	for b := range B {
		for i := range L {
			v := float32(1)
			if s.mask != nil {
				v = s.mask[b*L+i]
			}
			if v == 0 {
				a.padded = true
			}
			if a.hist[b*a.cap+s.Pos+i] != v {
				a.hist[b*a.cap+s.Pos+i] = v
				a.synced = false
			}
		}
	}
	if a.padded && !a.synced {
		hb.Write(a.mask, a.hist)
		a.synced = true
	}
}

// keyMask is the mask Attend reads: nil while no position was padding.
func (a *attnMemory) keyMask() Tensor {
	if !a.padded {
		return nil
	}
	return a.mask
}
