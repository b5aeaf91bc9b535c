//go:build js

package wgsl

import (
	"syscall/js"
	"testing"

	"github.com/mamba2web/mamba2/model"
)

// noReplay switches b to the binding's direct calls, as a page whose CSP
// forbids the Function constructor gets.
func noReplay(b *Backend) { b.plat.rep.fn = js.Undefined() }

// BenchmarkRecordDispatchDirect is BenchmarkRecordDispatch through the
// binding's calls, one set per dispatch: what the replayer saves.
func BenchmarkRecordDispatchDirect(b *testing.B) {
	be := open(b, Options{})
	noReplay(be)
	benchRecordDispatch(b, be)
}

// TestReplay checks that the replayer is on under Node + Dawn, and that a
// model decodes the same through it as through the direct calls, over
// several passes per submission (the conv packs' copies end passes).
func TestReplay(t *testing.T) {
	decode := func(replay bool) []float32 {
		be := open(t, Options{})
		if !replay {
			noReplay(be)
		} else if !be.plat.rep.on() {
			t.Fatal("the replay function could not be made")
		}
		m, err := model.Load(tiny(), be, model.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := m.NewState(1)
		var got []float32
		for _, id := range []int32{3, 17, 99} {
			out, err := st.Forward([]int32{id}, nil)
			if err != nil {
				t.Fatal(err)
			}
			v, err := be.Read(out)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, v...)
		}
		if len(be.plat.rep.cmds) != 0 {
			t.Errorf("%d words of dispatches were never replayed", len(be.plat.rep.cmds))
		}
		return got
	}
	a, b := decode(true), decode(false)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("logit %d: %v replayed, %v direct", i, a[i], b[i])
		}
	}
}
