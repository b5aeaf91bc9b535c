package model

import "time"

// pace sizes the pieces that prompts go through on a device backend. Each
// layer of a piece is a submission of its own, so a piece of n positions
// is about `layers` submissions of n positions' work each, and pace keeps
// their device time under the budget (Model.SubmissionBudget).
//
// A piece is as long as memory allows (the limit) until a measurement says
// that is too long for the budget: a fast GPU never shrinks its pieces, so
// the same prompt is always cut the same way and gives the same bits. A
// slow device (a software renderer, a GPU shared with other work) gets
// shorter pieces at once, and longer ones again, at most growth times
// longer each, as it speeds up.
type pace struct {
	// rate is how many positions (of all sequences) one submission gets
	// through per second; 0 until measured.
	rate float64
	last int // positions per sequence of the last piece
}

const (
	minPiece = 8 // fewer would only add overhead
	growth   = 4
)

// piece returns how many positions per sequence the next piece of a batch
// of batch sequences takes, at most limit; full SSD chunks when it is at
// least one chunk long.
func (p *pace) piece(limit, batch, chunk int, budget time.Duration) int {
	n := limit
	if p.rate > 0 {
		n = int(p.rate * budget.Seconds() / float64(max(batch, 1)))
		if p.last > 0 {
			n = min(n, growth*p.last)
		}
	}
	n = min(n, limit)
	switch {
	case n == limit:
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
func (p *pace) observe(positions, subs int, d, budget time.Duration) {
	if d <= 0 || positions <= 0 || subs <= 0 {
		return
	}
	d /= time.Duration(subs) // one submission's time
	r := float64(positions) / d.Seconds()
	switch {
	case p.rate == 0:
		p.rate = r
	case d < budget/8:
		p.rate = max(p.rate, r)
	case r < p.rate:
		p.rate = r
	default:
		p.rate = (p.rate + r) / 2
	}
}
