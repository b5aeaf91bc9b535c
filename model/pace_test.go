package model

import (
	"testing"
	"time"
)

// TestPace follows the piece sizes through measurements: as long as the
// limit until a piece is measured too slow for the budget, then at once
// shorter, full SSD chunks once past one, never under minPiece, and longer
// again (at most growth times a step) as the device speeds up.
func TestPace(t *testing.T) {
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
	const budget = 250 * time.Millisecond
	// Each step: the piece asked for (limit, batch, chunk), the size
	// expected, then how long that piece took over subs submissions.
	type step struct {
		limit, batch, chunk int
		want                int
		subs                int
		took                time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a fast device always gets the limit", []step{
			{2048, 1, 256, 2048, 25, ms(20)},
			{2048, 1, 256, 2048, 25, ms(25)},
			{700, 1, 256, 700, 25, ms(5)},
		}},
		{"a slow device settles near the budget", []step{
			// 2048 positions in 25 submissions of 1 s each: 2048 positions
			// per second per submission, 512 per 250 ms.
			{2048, 1, 256, 2048, 25, ms(25000)},
			{2048, 1, 256, 512, 25, ms(6250)},
			{2048, 1, 256, 512, 25, ms(6250)},
		}},
		{"a slowdown shrinks the next piece at once; a speed-up grows it step by step", []step{
			{4096, 1, 256, 4096, 5, ms(50)},
			{4096, 1, 256, 4096, 5, ms(20000)}, // 4096 in 4 s a submission: 1024 per s
			{4096, 1, 256, 256, 5, ms(50)},     // 256 per 250 ms; then fast again
			{4096, 1, 256, 1024, 5, ms(50)},    // at most 4x
			{4096, 1, 256, 4096, 5, ms(50)},
		}},
		{"batches share the budget", []step{
			{2048, 4, 256, 2048, 2, ms(8000)}, // 8192 positions in 4 s a submission
			{2048, 4, 256, 128, 2, ms(250)},   // 512 per 250 ms, 128 per sequence
		}},
		{"never under minPiece", []step{
			{2048, 1, 256, 2048, 1, ms(100000)},
			{2048, 1, 256, minPiece, 1, ms(10000)},
		}},
		{"short pieces only raise the rate", []step{
			{512, 1, 0, 512, 1, ms(1000)}, // 512/s: 128 per 250 ms
			{512, 1, 0, 128, 1, ms(20)},   // short: 6400/s, a raise
			{512, 1, 0, 512, 1, ms(20)},   // 4x, capped by the limit
			{512, 1, 0, 512, 1, ms(30)},   // 512 in 30 ms is short: no shrink
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p pace
			for i, s := range tt.steps {
				got := p.piece(s.limit, s.batch, s.chunk, budget)
				if got != s.want {
					t.Fatalf("step %d: piece %d, want %d (rate %.1f/s)", i, got, s.want, p.rate)
				}
				p.observe(s.batch*got, s.subs, s.took, budget)
			}
		})
	}
}
