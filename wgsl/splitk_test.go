package wgsl

import "testing"

func TestSplitK(t *testing.T) {
	const big = 1 << 30
	tests := []struct {
		T, N, K    int
		maxBinding uint64
		splits     int
		kper       int
	}{
		{512, 3352, 768, big, 1, 768},   // 130m in_proj: 424 tiles already
		{512, 768, 1536, big, 3, 512},   // 130m out_proj: 96 tiles
		{128, 768, 1536, big, 6, 256},   // a short prompt
		{512, 2048, 4096, big, 1, 4096}, // 1.3b out_proj: 256 tiles
		{9, 70, 600, big, 2, 304},
		{6, 20, 1031, big, 4, 272},
		{100, 10, 300, big, 1, 300},              // too shallow to split
		{128, 768, 1536, 128 * 768 * 4, 1, 1536}, // partials would not fit a binding
		{128, 768, 1536, 2 * 128 * 768 * 4, 2, 768},
	}
	for _, tt := range tests {
		s, k := splitK(tt.T, tt.N, tt.K, tt.maxBinding)
		if s != tt.splits || k != tt.kper {
			t.Errorf("splitK(%d, %d, %d, %d) = %d, %d; want %d, %d", tt.T, tt.N, tt.K, tt.maxBinding, s, k, tt.splits, tt.kper)
		}
		if s > 1 && (k%16 != 0 || (s-1)*k >= tt.K || s*k < tt.K) {
			t.Errorf("splitK(%d, %d, %d): %d ranges of %d do not cover k exactly", tt.T, tt.N, tt.K, s, k)
		}
	}
}
