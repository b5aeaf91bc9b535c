package model

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A hybrid's saved state is version 2 of the format (statefile.go): the
// same header, then the Mamba-2 blocks' conv and SSM state as for
// version 1 (blocks without a Mamba-2 mixer skipped), then each attention
// block's KV cache for the positions consumed, and which of those
// positions were padding:
//
//	conv, ssm   per Mamba-2 block, as version 1
//	k, v        per attention block: [B, pos, KVHeads·HeadDim] float32 each
//	key mask    [B, pos] float32, 1 for a token, 0 for left padding
//
// Its size grows with pos, as the caches do. Every sequence is at
// position pos: a state whose sequences are at different positions (the
// Scheduler's pool, whose slots were copied in at their own lengths) is
// not saved, so the format needs no per-sequence lengths and files of
// every earlier release still restore.
const hybridStateVersion = 2

// hybridStateBytes is the body of a hybrid state at position pos.
func (s *State) hybridStateBytes(pos int) int {
	c, B := s.m.Config, s.Batch
	n := 0
	for l := range s.conv {
		if s.conv[l] != nil {
			n += (c.ConvKernel-1)*c.ConvDim() + c.Heads*c.HeadDim*c.State
		}
		if s.kv[l] != nil {
			n += 2 * pos * c.Hybrid.KVHeads * c.Hybrid.AttnHeadDim
		}
	}
	return 4 * B * (n + pos)
}

func (s *State) saveHybrid() ([]byte, error) {
	c, b, B := s.m.Config, s.m.Backend, s.Batch
	if !s.uniform() {
		return nil, fmt.Errorf("save: the sequences of this state are at different positions %v (sequences moved between states, as the scheduler's slots); a saved state holds sequences at one position", s.attn.lens)
	}
	out := make([]byte, 0, stateHeader+s.hybridStateBytes(s.Pos))
	out = append(out, stateMagic...)
	out = binary.LittleEndian.AppendUint32(out, hybridStateVersion)
	h := c.Hash()
	out = append(out, h[:]...)
	out = binary.LittleEndian.AppendUint32(out, uint32(B))
	out = binary.LittleEndian.AppendUint32(out, uint32(c.Layers))
	out = binary.LittleEndian.AppendUint64(out, uint64(s.Pos))
	put := func(v []float32) {
		for _, f := range v {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(f))
		}
	}
	for l := range s.conv {
		if s.conv[l] == nil {
			continue
		}
		for _, t := range []Tensor{s.conv[l], s.ssm[l]} {
			v, err := b.Read(t)
			if err != nil {
				return nil, fmt.Errorf("save: %w", err)
			}
			put(v)
		}
	}
	X, capa := c.Hybrid.KVHeads*c.Hybrid.AttnHeadDim, s.attn.cap
	for _, kv := range s.kv {
		if kv == nil {
			continue
		}
		for _, t := range []Tensor{kv.k, kv.v} {
			if t == nil { // nothing consumed yet
				continue
			}
			v, err := b.Read(t)
			if err != nil {
				return nil, fmt.Errorf("save: %w", err)
			}
			for bi := range B {
				put(v[bi*capa*X : (bi*capa+s.Pos)*X])
			}
		}
	}
	for bi := range B {
		put(s.attn.hist[bi*capa : bi*capa+s.Pos])
	}
	return s.appendAdapters(out), nil // each row's attached adapter (lora.go)
}

func (s *State) restoreHybrid(data []byte) error {
	c, b, B := s.m.Config, s.m.Backend, s.Batch
	if len(data) < stateHeader || string(data[:8]) != stateMagic {
		return errors.New("restore: not a saved Mamba-2 state (no MAMBA2ST header)")
	}
	if v := binary.LittleEndian.Uint32(data[8:]); v != hybridStateVersion {
		return fmt.Errorf("restore: saved state version %d, a %s model's states are version %d", v, c.Hybrid.Family, hybridStateVersion)
	}
	if h := c.Hash(); !bytes.Equal(data[12:44], h[:]) {
		return fmt.Errorf("restore: the state was saved by another model (config hash %x…, this model's is %x…)", data[12:20], h[:8])
	}
	batch, layers := int(binary.LittleEndian.Uint32(data[44:])), int(binary.LittleEndian.Uint32(data[48:]))
	pos64 := binary.LittleEndian.Uint64(data[52:])
	if batch != B {
		return fmt.Errorf("restore: the state holds %d sequences, this state %d", batch, B)
	}
	if layers != c.Layers {
		return fmt.Errorf("restore: the state has %d layers, the model %d", layers, c.Layers)
	}
	// The body holds at least 4·B bytes per position (the key mask), so a
	// position beyond that is a lie told before any allocation.
	if pos64 > uint64(len(data)) {
		return fmt.Errorf("restore: position %d does not fit a state of %d bytes", pos64, len(data))
	}
	pos := int(pos64)
	want := stateHeader + s.hybridStateBytes(pos)
	if len(data) < want || len(data) > want && string(data[want:min(len(data), want+len(loraTrailer))]) != loraTrailer {
		return fmt.Errorf("restore: the saved state is %d bytes, a state of this model and batch at position %d is %d", len(data), pos, want)
	}
	if err := s.checkAdapters(data[want:]); err != nil { // made under the adapters its rows run under now
		return err
	}
	data = data[:want]
	body := data[stateHeader:]
	for i := 0; i < len(body); i += 4 {
		if f := math.Float32frombits(binary.LittleEndian.Uint32(body[i:])); math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return fmt.Errorf("restore: the saved state holds %v at byte %d: a state must be finite", f, stateHeader+i)
		}
	}
	take := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(body[4*i:]))
		}
		body = body[4*n:]
		return v
	}
	for l := range s.conv {
		if s.conv[l] == nil {
			continue
		}
		for _, t := range []Tensor{s.conv[l], s.ssm[l]} {
			b.Write(t, take(size(t.Shape())))
		}
	}
	// The caches get room for what was saved (and at least minKVCap).
	X, capa := c.Hybrid.KVHeads*c.Hybrid.AttnHeadDim, max(pos, minKVCap)
	for _, kv := range s.kv {
		if kv == nil {
			continue
		}
		kv.free(b)
		kv.k, kv.v = b.Alloc(F32, B, capa, X), b.Alloc(F32, B, capa, X)
		for _, t := range []Tensor{kv.k, kv.v} {
			full := make([]float32, B*capa*X)
			for bi := range B {
				copy(full[bi*capa*X:], take(pos*X))
			}
			b.Write(t, full)
		}
	}
	a := &s.attn
	a.free(b)
	s.initAttn()
	a.cap, a.hist, a.padded = capa, make([]float32, B*capa), false
	for bi := range B {
		a.lens[bi], a.idle[bi] = pos, false
	}
	for bi := range B {
		for i, v := range take(pos) {
			a.hist[bi*capa+i] = v
			a.padded = a.padded || v == 0
		}
		for i := pos; i < capa; i++ {
			a.hist[bi*capa+i] = 1 // not consumed yet (attnMemory.synced)
		}
	}
	a.mask = b.Alloc(F32, B, capa)
	if a.padded {
		b.Write(a.mask, a.hist)
	}
	a.synced = a.padded
	s.Pos = pos
	return nil
}

func size(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
