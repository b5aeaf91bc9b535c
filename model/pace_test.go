package model

import (
	"testing"
	"time"
)

// TestPace follows the piece sizes through measurements: short first, at
// most growth times longer each time, full SSD chunks once past one, at
// once shorter when the device slows down, never past the limit or under
// minPiece.
func TestPace(t *testing.T) {
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
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
		{"fast device grows to the limit", []step{
			{2048, 1, 256, firstPiece, 25, ms(2)},
			{2048, 1, 256, 256, 25, ms(4)},   // 4x, rounded to a chunk
			{2048, 1, 256, 1024, 25, ms(10)}, // 4x again
			{2048, 1, 256, 2048, 25, ms(20)}, // capped by the limit
			{2048, 1, 256, 2048, 25, ms(20)},
		}},
		{"slow device settles near the budget", []step{
			// 64 positions in 25 submissions of 100 ms each: 640 positions
			// per second per submission, 160 per 250 ms.
			{2048, 1, 256, 64, 25, ms(2500)},
			{2048, 1, 256, 160, 25, ms(6250)},
			{2048, 1, 256, 160, 25, ms(6250)},
		}},
		{"a slowdown shrinks the next piece at once", []step{
			{4096, 1, 256, 64, 5, ms(5)},
			{4096, 1, 256, 256, 5, ms(20)},
			{4096, 1, 256, 1024, 5, ms(5000)}, // 20x slower: 1024 in 1 s per submission
			{4096, 1, 256, 256, 5, ms(1250)},  // 256 positions per 250 ms
		}},
		{"batches share the budget", []step{
			{2048, 4, 256, 64, 2, ms(1000)}, // 256 positions in 500 ms per submission
			{2048, 4, 256, 32, 2, ms(250)},  // 128 per 250 ms, 32 per sequence
		}},
		{"never under minPiece", []step{
			{2048, 1, 256, 64, 1, ms(10000)},
			{2048, 1, 256, minPiece, 1, ms(10000)},
		}},
		{"never past a small limit", []step{
			{5, 1, 256, 5, 1, ms(1)},
			{5, 1, 256, 5, 1, ms(1)},
		}},
		{"short pieces only raise the rate", []step{
			{2048, 1, 0, 64, 1, ms(20)},  // 3200/s: 800 per 250 ms, capped at 4x64
			{2048, 1, 0, 256, 1, ms(20)}, // 12800/s but still 4x: 1024
			{2048, 1, 0, 1024, 1, ms(20)},
			{2048, 1, 0, 2048, 1, ms(30)}, // 2048 in 30 ms is short: no shrink
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p pace
			for i, s := range tt.steps {
				got := p.piece(s.limit, s.batch, s.chunk)
				if got != s.want {
					t.Fatalf("step %d: piece %d, want %d (rate %.1f/s)", i, got, s.want, p.rate)
				}
				p.observe(s.batch*got, s.subs, s.took)
			}
		})
	}
}
