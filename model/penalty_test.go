package model

import (
	"math"
	"testing"
)

// TestPenalize follows transformers' repetition penalty and OpenAI's
// presence and frequency penalties on a few tokens.
func TestPenalize(t *testing.T) {
	// Tokens: 0 generated twice, 1 in the prompt, 2 both, 3 untouched.
	hist := []float32{2, 0, 1, 0, 0, 1, 1, 0}
	row := []float32{4, -2, 3, 5}
	tests := []struct {
		s    Sampling
		want []float32
	}{
		{Sampling{}, []float32{4, -2, 3, 5}},
		{Sampling{RepetitionPenalty: 1}, []float32{4, -2, 3, 5}},
		{Sampling{RepetitionPenalty: 2}, []float32{2, -4, 1.5, 5}},
		{Sampling{RepetitionPenalty: 0.5}, []float32{8, -1, 6, 5}},
		{Sampling{PresencePenalty: 1}, []float32{3, -2, 2, 5}},
		{Sampling{FrequencyPenalty: 0.5}, []float32{3, -2, 2.5, 5}},
		{Sampling{RepetitionPenalty: 2, FrequencyPenalty: 0.5, PresencePenalty: 1}, []float32{0, -4, 0, 5}},
		{Sampling{PresencePenalty: -2}, []float32{6, -2, 5, 5}},
	}
	for _, tt := range tests {
		got := append([]float32(nil), row...)
		tt.s.Penalize(got, hist)
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%+v: %v, want %v", tt.s, got, tt.want)
				break
			}
		}
		if tt.s.Penalized() != (tt.s.RepetitionPenalty != 0 && tt.s.RepetitionPenalty != 1 || tt.s.PresencePenalty != 0 || tt.s.FrequencyPenalty != 0) {
			t.Errorf("%+v: Penalized() = %v", tt.s, tt.s.Penalized())
		}
	}
}

// TestMinP: min-p keeps the tokens whose probability is at least MinP of
// the top one's, before top-k and top-p.
func TestMinP(t *testing.T) {
	ln := func(p float64) float32 { return float32(math.Log(p)) }
	// Probabilities relative to the top: 1, 0.5, 0.2, 0.05.
	row := []float32{ln(0.2), 0, ln(0.05), ln(0.5)}
	for _, tt := range []struct {
		s      Sampling
		kept   []int // in rank order
		weight []float64
	}{
		{Sampling{Temperature: 1, MinP: 0.3}, []int{1, 3}, []float64{1, 0.5}},
		{Sampling{Temperature: 1, MinP: 0.1}, []int{1, 3, 0}, []float64{1, 0.5, 0.2}},
		{Sampling{Temperature: 1, MinP: 0.1, TopK: 2}, []int{1, 3}, []float64{1, 0.5}},
		{Sampling{Temperature: 1, MinP: 1}, []int{1}, []float64{1}},
		{Sampling{Temperature: 1}, []int{1, 3, 0, 2}, []float64{1, 0.5, 0.2, 0.05}},
	} {
		total := 0.0
		for _, w := range tt.weight {
			total += w
		}
		// Draws at the middle of each kept token's share pick it.
		cum := 0.0
		for j, id := range tt.kept {
			u := (cum + tt.weight[j]/2) / total
			cum += tt.weight[j]
			if got, _ := SampleRow(row, tt.s, u, nil); got != id {
				t.Errorf("%+v, u=%.3f: token %d, want %d", tt.s, u, got, id)
			}
		}
		if got, _ := SampleRow(row, tt.s, 0.999999, nil); got != tt.kept[len(tt.kept)-1] {
			t.Errorf("%+v: the last draw gave %d, want the last kept token %d", tt.s, got, tt.kept[len(tt.kept)-1])
		}
	}
}

// TestSamplerHistory: the sampler marks the prompt, counts what it draws,
// and the penalty then changes greedy choices.
func TestSamplerHistory(t *testing.T) {
	s := NewSampler(Sampling{RepetitionPenalty: 3})
	s.Prompt([]int{2})
	row := []float32{1, 0.9, 2.5, 0.1}       // 2 wins, but it is in the prompt: 2.5/3 < 1
	for i, want := range []int{0, 1, 2, 2} { // dividing once: 2 stays the best of the seen
		id, err := s.Sample(row)
		if err != nil || id != want {
			t.Fatalf("draw %d: %d (%v), want %d", i, id, err, want)
		}
	}
	if h := s.History(4); h[4+2] != 1 || h[0] != 0 {
		t.Errorf("History(4) = %v: want only the prompt marked", h)
	}
	if row[2] != 2.5 {
		t.Errorf("Sample changed its input: %v", row)
	}
}
