package model

// HiddenStates runs ids through the state (as Forward does, continuing it)
// and returns the hidden states transformers' Mamba2Model returns with
// output_hidden_states: the residual stream after each of the Layers
// layers, then the final norm's output (Layers+1 arrays, each [B·L, D]
// row-major, sequence by sequence). Each layer's output is read back as
// it is computed, so this is slower than Forward.
func (s *State) HiddenStates(ids []int32, mask []float32) ([][]float32, error) {
	L, err := s.check(ids, mask)
	if err != nil {
		return nil, err
	}
	c, B := s.m.Config, s.Batch
	D := c.Hidden
	out := make([][]float32, c.Layers+1)
	for k := range out {
		out[k] = make([]float32, B*L*D)
	}
	var first error
	s.tap = func(k, start int, t Tensor) {
		if first != nil {
			return
		}
		v, err := s.m.Backend.Read(t)
		if err != nil {
			first = err
			return
		}
		n := len(v) / (B * D) // positions of this piece
		for b := range B {
			copy(out[k][(b*L+start)*D:(b*L+start+n)*D], v[b*n*D:(b+1)*n*D])
		}
	}
	defer func() { s.tap = nil }()
	if _, err := s.pieces(ids, mask, L, true, nil); err != nil {
		return nil, err
	}
	if first != nil {
		return nil, first
	}
	return out, nil
}

// MeanPool averages the rows of a [B·L, D] hidden state over each
// sequence's positions whose mask is not 0 (all of them with a nil mask):
// one embedding of D values per sequence.
func MeanPool(h []float32, mask []float32, B, D int) [][]float32 {
	L := len(h) / (B * D)
	out := make([][]float32, B)
	for b := range B {
		sum := make([]float64, D)
		n := 0
		for p := range L {
			if mask != nil && mask[b*L+p] == 0 {
				continue
			}
			n++
			for d, v := range h[(b*L+p)*D : (b*L+p+1)*D] {
				sum[d] += float64(v)
			}
		}
		out[b] = make([]float32, D)
		for d := range sum {
			if n > 0 {
				out[b][d] = float32(sum[d] / float64(n))
			}
		}
	}
	return out
}
