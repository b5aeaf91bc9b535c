package wgsl

import (
	"math"
	"math/bits"

	"github.com/mamba2web/mamba2/model"
)

// sampleRowsPerDispatch is how many rows' random numbers fit in one
// parameter slot (12 vec4 in sample.wgsl's Params, after 16 words).
const sampleRowsPerDispatch = 48

// sampleChunk is the logits one workgroup of sample.wgsl's PASS_SCAN looks
// at (its CHUNK): 4 per invocation, so a 50k vocabulary is 50 workgroups
// per row.
const sampleChunk = 1024

// Sample implements model.DeviceSampler: ids[b] is chosen from logits[b] as
// model.SampleRow chooses it, with u[b] as the row's random number (unused
// for greedy). The choice is recorded like any operation, so a decode step
// that ends with Sample and ReadIDs is one submission reading back B ids.
//
// history ([B, 2, V]) holds what the penalties need; the chosen ids are
// counted there by the same dispatch.
func (b *Backend) Sample(ids, logits, history model.Tensor, s model.Sampling, u []float32) {
	const op = "sample"
	it, lt := b.need(op, "ids", ids), b.need(op, "logits", logits)
	if it == nil || lt == nil {
		return
	}
	var ht *tensor
	if s.Penalized() {
		if ht = b.need(op, "history", history); ht == nil {
			return
		}
	}
	if err := s.Validate(); err != nil {
		b.failf("%s: %v", op, err)
		return
	}
	if it.kind != model.I32 {
		b.failf("%s: ids %s must be I32", op, it)
		return
	}
	B := it.elems()
	if B == 0 || lt.elems()%B != 0 {
		b.failf("%s: logits %v do not split into %d rows", op, lt.shape, B)
		return
	}
	V := lt.elems() / B
	if !b.activation(op, "logits", lt, B*V) || V == 0 {
		return
	}
	greedy := s.Temperature == 0
	if !greedy && len(u) < B {
		b.failf("%s: %d random numbers for %d rows", op, len(u), B)
		return
	}
	topk := uint32(0)
	if s.TopK > 0 && s.TopK < V {
		topk = uint32(s.TopK)
	}
	temp := float32(s.Temperature)
	if !greedy && (temp == 0 || math.IsInf(float64(temp), 0)) {
		b.failf("%s: temperature %v is outside float32's range", op, s.Temperature)
		return
	}
	hist := bind{buf: b.dummy, size: 16, write: true}
	rep, repInv := float32(1), float32(1)
	if ht != nil {
		if !b.activation(op, "history", ht, 2*B*V) {
			return
		}
		hist = rw(ht.parts[0])
		if s.RepetitionPenalty != 0 {
			rep, repInv = float32(s.RepetitionPenalty), float32(1/s.RepetitionPenalty)
		}
	}
	minp := !greedy && s.MinP > 0
	mdelta := float32(0)
	if minp {
		mdelta = model.MinPDelta(s)
	}
	idbits := uint32(bits.Len32(uint32(V)))
	chunks := ceilDiv(uint32(V), sampleChunk)
	rows0 := min(sampleRowsPerDispatch, B)
	scr := b.scratchFor("sample", rows0*int(chunks)*5)
	if scr == nil {
		return
	}
	histR := b.opt(ht)
	for r0 := 0; r0 < B; r0 += sampleRowsPerDispatch {
		rows := min(sampleRowsPerDispatch, B-r0)
		p := sampleParams{V: uint32(V), Rows: uint32(rows), Row0: uint32(r0), Greedy: b2u(greedy), Temp: temp,
			Topk: topk, Topp: float32(s.TopP), Idbits: idbits, Minp: b2u(minp), Mdelta: mdelta, Pen: b2u(ht != nil),
			Rep: rep, Repinv: repInv, Freq: float32(s.FrequencyPenalty), Pres: float32(s.PresencePenalty), Chunks: chunks}
		if !greedy {
			for i, v := range u[r0 : r0+rows] {
				p.U[i/4][i%4] = v
			}
		}
		sampleScanKernel.dispatch(b, nil, []bind{ro(lt.parts[0]), histR, rw(scr.parts[0])}, p, uint32(rows)*chunks)
		sampleKernel.dispatch(b, nil, []bind{ro(lt.parts[0]), rw(it.parts[0]), hist, ro(scr.parts[0])}, p, uint32(rows))
	}
}
