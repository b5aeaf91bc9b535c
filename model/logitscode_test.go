package model

import (
	"math"
	"testing"
)

// TestLogitsCode: every refusal a DeviceSampler reports as a negative id
// decodes to the error CheckLogits gives, and no code is a valid token id.
func TestLogitsCode(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	tests := []struct {
		row  []float32
		want LogitsError
	}{
		{[]float32{nan, 1}, LogitsError{ID: 0, What: "NaN"}},
		{[]float32{1, 2, nan}, LogitsError{ID: 2, What: "NaN"}},
		{[]float32{inf, 1}, LogitsError{ID: 0, What: "+Inf"}},
		{[]float32{0, 0, 0, inf}, LogitsError{ID: 3, What: "+Inf"}},
		{[]float32{-inf, -inf}, LogitsError{ID: -1, What: "-Inf"}},
		{append(make([]float32, 1<<22), nan), LogitsError{ID: 1 << 22, What: "NaN"}},
	}
	for _, tt := range tests {
		le, ok := CheckLogits(tt.row).(*LogitsError)
		if !ok || *le != tt.want {
			t.Fatalf("CheckLogits gave %v, want %v", le, tt.want)
		}
		code := LogitsCode(le)
		if code >= 0 {
			t.Errorf("%v: code %d is a token id", tt.want, code)
		}
		if got := DecodeLogits(code); *got != tt.want {
			t.Errorf("code %d decodes to %+v, want %+v", code, *got, tt.want)
		}
	}
}
