package model

import "time"

// pace sizes the pieces that prompts go through on a device backend. Each
// layer of a piece is a submission of its own, so a piece of n positions
// is about `layers` submissions of n positions' work each, and pace keeps
// their device time near SubmissionBudget. It learns the device's speed
// from the pieces it times: the first piece is short, each next one at
// most growth times longer, and a slower measurement (another program took
// the GPU, or the CPU a software driver runs on) shrinks the next piece at
// once.
type pace struct {
	// rate is how many positions (of all sequences) one submission gets
	// through per second; 0 until measured.
	rate float64
	last int // positions per sequence of the last piece
}

const (
	firstPiece = 64 // positions per sequence before anything is measured
	minPiece   = 8  // fewer would only add overhead
	growth     = 4
)

// piece returns how many positions per sequence the next piece of a batch
// of batch sequences takes, at most limit; full SSD chunks when it is at
// least one chunk long.
func (p *pace) piece(limit, batch, chunk int) int {
	n := firstPiece
	if p.rate > 0 {
		n = int(p.rate * SubmissionBudget.Seconds() / float64(max(batch, 1)))
		n = min(n, growth*max(p.last, firstPiece))
	}
	n = min(n, limit)
	switch {
	case chunk > 0 && n >= chunk:
		n -= n % chunk
	case n >= 2*minPiece:
		n -= n % minPiece
	}
	n = min(max(n, minPiece), limit)
	p.last = n
	return n
}

// observe records that a piece of positions positions (of all sequences),
// submitted in subs submissions, took d. A piece whose submissions are
// much shorter than the budget mostly measures fixed costs, so it can only
// raise the rate; a long one is a real measurement, taken at once when
// slower and averaged in when faster.
func (p *pace) observe(positions, subs int, d time.Duration) {
	if d <= 0 || positions <= 0 || subs <= 0 {
		return
	}
	d /= time.Duration(subs) // one submission's time
	r := float64(positions) / d.Seconds()
	switch {
	case p.rate == 0:
		p.rate = r
	case d < SubmissionBudget/8:
		p.rate = max(p.rate, r)
	case r < p.rate:
		p.rate = r
	default:
		p.rate = (p.rate + r) / 2
	}
}
