package wgsl

import (
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// liveObjects is what RunFree watches: the live buffers, their bytes and
// the cached bind groups.
func liveObjects(b *Backend) func() map[string]int {
	return func() map[string]int {
		s := b.Stats()
		return map[string]int{"buffers": s.LiveBuffers, "bytes": int(s.LiveBytes), "bind groups": s.LiveBindGroups}
	}
}

// TestFree: states made and closed over and over leave the live buffers and
// bind groups where they were, with the same results.
func TestFree(t *testing.T) {
	b := open(t, Options{})
	modeltest.RunFree(t, b, wgpuLive(b, liveObjects(b)))
}

// TestFreeWhileRecording frees a tensor that recorded work still reads:
// the work sees it, the buffer goes after the submission, and a later use
// is an error that says it was freed.
func TestFreeWhileRecording(t *testing.T) {
	b := open(t, Options{})
	h, w, out := b.Alloc(model.F32, 2, 4), b.Alloc(model.F32, 4), b.Alloc(model.F32, 2, 4)
	b.Write(h, []float32{1, 1, 1, 1, 2, 2, 2, 2})
	b.Write(w, []float32{1, 2, 3, 4})
	before := b.Stats()
	b.RMSNorm(out, h, w, nil, 1, 0)
	b.Free(h)
	if s := b.Stats(); s.LiveBuffers != before.LiveBuffers-1 || s.LiveBindGroups != before.LiveBindGroups {
		t.Errorf("after Free: %+v, before %+v (want one buffer fewer and the new bind group dropped)", s, before)
	}
	got, err := b.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float32{1, 2, 3, 4, 1, 2, 3, 4} {
		if d := got[i] - want; d > 1e-5 || d < -1e-5 {
			t.Fatalf("out = %v: the recorded rmsnorm did not see h", got)
		}
	}
	b.RMSNorm(out, h, w, nil, 1, 0)
	if _, err := b.Read(out); err == nil || !strings.Contains(err.Error(), "freed") {
		t.Errorf("rmsnorm of a freed tensor: %v, want an error saying it was freed", err)
	}
	if _, err := b.Read(h); err == nil || !strings.Contains(err.Error(), "freed") {
		t.Errorf("reading a freed tensor: %v", err)
	}
	b.Free(h) // twice is fine
	if got, err := b.Read(out); err != nil || got[0] != 1 {
		t.Errorf("the backend does not work after the errors: %v %v", got, err)
	}
}
