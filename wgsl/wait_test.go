package wgsl

import (
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// wideConfig has the widths that once made one prompt submission run for
// seconds on lavapipe (256 wide, 8 groups, state 128, chunks of 256).
func wideConfig(layers int) model.Config {
	return model.Config{VocabSize: 512, Hidden: 256, Layers: layers, State: 128, Expand: 2,
		Heads: 8, HeadDim: 64, Groups: 8, ConvKernel: 4, ChunkSize: 256,
		ConvBias: true, Eps: 1e-5, TimeStepMax: math.Inf(1), EOS: 0}
}

// TestLongPromptInPieces prefills 1500 tokens (300 in js) of the wide config on the
// device and on the CPU. On the device the prompt goes in pieces of at most a
// third of it, one submission per
// layer, with a budget of 20 ms a submission that shrinks them further on
// a slow device; the last logits must still be the CPU's.
// (On lavapipe with wgpu's own blocking wait this read back zeros and then
// crashed once a submission passed 5 s.)
func TestLongPromptInPieces(t *testing.T) {
	c := wideConfig(2)
	n := 1500
	if runtime.GOOS == "js" {
		n = 300 // SwiftShader under Node is slower than lavapipe by far; still several pieces
	}
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32((i*37 + 11) % c.VocabSize)
	}
	b := open(t, Options{})
	var logits [][]float32
	for _, be := range []model.Backend{b, cpu.New()} {
		m, err := model.NewRandom(c, be, loader.F32, 5)
		if err != nil {
			t.Fatal(err)
		}
		m.PrefillChunk = len(ids) / 3
		m.SubmissionBudget = 20 * time.Millisecond
		before := b.Stats().Submissions
		st := m.NewState(1)
		out, err := st.Forward(ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, err := be.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		logits = append(logits, v)
		if be == model.Backend(b) {
			// At least three pieces of Layers+1 submissions each.
			if subs := b.Stats().Submissions - before; subs < 3*(c.Layers+1) {
				t.Errorf("%d submissions for %d tokens; want the prompt in pieces, a submission per layer", subs, len(ids))
			}
		}
		st.Close()
	}
	worst := 0.0
	for i := range logits[1] {
		worst = max(worst, math.Abs(float64(logits[0][i]-logits[1][i])))
	}
	if worst > 1e-3 || allZero(logits[0]) {
		t.Errorf("last logits differ from the CPU's by %.3g (device: %v...)", worst, logits[0][:4])
	}
}

func allZero(v []float32) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}

// TestWaitTimeout: a wait that runs out fails, names the submission, wraps
// ErrDeviceLost, and stops the backend: later work fails with the same
// error instead of touching buffers the device may still be using.
func TestWaitTimeout(t *testing.T) {
	b := open(t, Options{MaxWait: 20 * time.Millisecond})
	x := b.Alloc(model.F32, 64)
	b.Zero(x)
	b.Flush()
	err := b.await(func() bool { return false }) // a submission that never ends
	if !errors.Is(err, ErrDeviceLost) || !errors.Is(err, model.ErrDeviceLost) {
		t.Fatalf("await gave %v, want an ErrDeviceLost", err)
	}
	for _, want := range []string{"submission 1 (1 dispatch: zero)", "has not finished after"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	b.Zero(x)
	if _, rerr := b.Read(x); !errors.Is(rerr, ErrDeviceLost) {
		t.Errorf("Read after the timeout gave %v", rerr)
	}
	if serr := b.Sync(); !errors.Is(serr, ErrDeviceLost) {
		t.Errorf("Sync after the timeout gave %v", serr)
	}
}
