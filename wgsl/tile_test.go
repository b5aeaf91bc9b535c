package wgsl

import (
	"runtime"
	"testing"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestBigTiles runs every prompt product through tile_big.wgsl's 128 × 128
// tiles (which the backend otherwise picks only for large products), then
// the fixtures' prompts, against the CPU; and the 64 × 64 tiles alone.
// Under js/wasm (SwiftShader, slow) only the products through the 128 tiles.
func TestBigTiles(t *testing.T) {
	tiles := []int{128, 64}
	if runtime.GOOS == "js" {
		tiles = tiles[:1]
	}
	for _, tile := range tiles {
		t.Run(map[int]string{128: "128", 64: "64"}[tile], func(t *testing.T) {
			modeltest.RunMatMul(t, open(t, Options{MatmulTile: tile}))
			if tile == 128 && runtime.GOOS != "js" {
				modeltest.RunFixtures(t, func(t *testing.T) model.Backend { return open(t, Options{MatmulTile: tile}) }, 1e-3)
			}
		})
	}
}
