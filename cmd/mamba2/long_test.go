package main

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// TestLongPrefill runs `logits --last` over a 3000-token prompt of a wide
// random model (256 wide, 8 groups, state 128: the shape whose long
// submissions once came back as zeros on lavapipe, then crashed) on WebGPU
// and on the CPU; the logits must agree. scripts/test.sh runs it with busy
// loops competing for the CPU.
func TestLongPrefill(t *testing.T) {
	dir := t.TempDir()
	c := model.Config{VocabSize: 512, Hidden: 256, Layers: 2, State: 128, Expand: 2,
		Heads: 8, HeadDim: 64, Groups: 8, ConvKernel: 4, ChunkSize: 256,
		ConvBias: true, Eps: 1e-5, TimeStepMax: math.Inf(1), EOS: 0}
	if err := model.WriteRandom(dir, c, loader.F16, 9); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 3000)
	for i := range ids {
		ids[i] = itoa((i*131 + 7) % c.VocabSize)
	}
	logits := func(backend string) []float64 {
		out, err := runCLI(t, "", "logits", "--model", dir, "--backend", backend, "--last", "--ids", strings.Join(ids, ","))
		if err != nil && backend == "webgpu" && strings.Contains(err.Error(), "no WebGPU adapter") && os.Getenv("MAMBA2_REQUIRE_GPU") != "1" {
			t.Skipf("skipping: %v", err)
		}
		if err != nil {
			t.Fatalf("%s: %v", backend, err)
		}
		var res struct{ Logits [][]float64 }
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Logits) != 1 {
			t.Fatalf("%s printed %.200q (%v)", backend, out, err)
		}
		return res.Logits[0]
	}
	gpu, ref := logits("webgpu"), logits("cpu")
	worst, zeros := 0.0, 0
	for i := range ref {
		worst = max(worst, math.Abs(gpu[i]-ref[i]))
		if gpu[i] == 0 {
			zeros++
		}
	}
	if worst > 1e-3 || zeros == len(gpu) {
		t.Errorf("WebGPU logits differ from the CPU's by %.3g (%d of %d zero)", worst, zeros, len(gpu))
	}
}
