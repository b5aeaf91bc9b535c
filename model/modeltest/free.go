package modeltest

import (
	"context"
	"maps"
	"math"
	"os"
	"testing"

	"github.com/mamba2web/mamba2/model"
)

// RunFree checks that State.Close and Backend.Free give back what states
// take. On the first fixture's model (with a prefill chunk of 16, so long
// prompts go through in pieces) it runs rounds of: states of batch 1 and 2
// that prefill prompts of several lengths (all positions or the last),
// decode a few tokens and are closed (twice; Forward on a closed state must
// fail); a Generate (which makes and closes its own state); an Alloc'd
// tensor freed twice. Every round must give the first round's logits and
// ids bit for bit. live, when not nil, reports what b holds (GPU buffers,
// bind groups, bytes...): after every round it must be back at its value
// after the first one, and it must have grown while a state was open. b
// must be fresh; RunFree does not close it.
func RunFree(t *testing.T, b model.Backend, live func() map[string]int) {
	fx := Fixtures(t)[0]
	m, err := model.Load(os.DirFS(fx.Dir), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.GatedNorm = fx.GatedNorm
	m.PrefillChunk = 16
	// Pieces cut by measured time would cut the rounds differently on a
	// loaded machine, and the rounds must agree bit for bit.
	m.SubmissionBudget = -1
	V := m.Config.VocabSize

	read := func(out model.Tensor) []float32 {
		t.Helper()
		x, err := b.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	var open map[string]int // what live reported with a state open
	round := func() [][]float32 {
		t.Helper()
		var outs [][]float32
		lengths := []int{1, 5, 16, 40}
		for i, L := range lengths {
			B := 1 + i%2
			ids := make([]int32, B*L)
			for j := range ids {
				ids[j] = int32((j*131 + L*7 + 3) % V)
			}
			lastOnly := L != 5
			st := m.NewState(B)
			var logits []float32
			var err error
			if lastOnly {
				out, err := st.Forward(ids, nil)
				if err != nil {
					t.Fatal(err)
				}
				logits = read(out)
			} else if logits, err = st.Logits(ids, nil); err != nil {
				t.Fatal(err)
			}
			outs = append(outs, logits)
			for range 2 { // decode: each row's greedy token
				next := make([]int32, B)
				rows := len(logits) / V
				for r := range B {
					row := (r+1)*rows/B - 1 // the row's last position
					next[r] = int32(model.Argmax(logits[row*V : (row+1)*V]))
				}
				out, err := st.Forward(next, nil)
				if err != nil {
					t.Fatal(err)
				}
				logits = read(out)
				outs = append(outs, logits)
			}
			if i == len(lengths)-1 && live != nil {
				open = live()
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatalf("closing a closed state: %v", err)
			}
			if _, err := st.Forward(ids[:B], nil); err == nil {
				t.Fatal("Forward on a closed state gave no error")
			}
			st.Reset() // does nothing
		}
		res, err := m.Generate(context.Background(), []int{5, 17, 300, 42}, model.Options{MaxNewTokens: 4, StopIDs: []int{}})
		if err != nil {
			t.Fatal(err)
		}
		gen := make([]float32, len(res.IDs))
		for i, id := range res.IDs {
			gen[i] = float32(id)
		}
		outs = append(outs, gen)
		x := b.Alloc(model.F32, 7, 3)
		b.Write(x, make([]float32, 21))
		b.Free(x)
		b.Free(x)
		b.Free(nil)
		return outs
	}

	first := round()
	var base map[string]int
	if live != nil {
		base = live()
		t.Logf("after the first round the backend holds %v (%v with a state open)", base, open)
		grew := false
		for k, v := range open {
			grew = grew || v > base[k]
		}
		if !grew {
			t.Errorf("with a state open the backend holds %v, no more than after closing it (%v): live reports nothing useful", open, base)
		}
	}
	for r := 1; r < 5; r++ {
		got := round()
		for i := range first {
			if len(got[i]) != len(first[i]) {
				t.Fatalf("round %d, output %d: %d values, the first round had %d", r, i, len(got[i]), len(first[i]))
			}
			for j := range first[i] {
				if math.Float32bits(got[i][j]) != math.Float32bits(first[i][j]) {
					t.Fatalf("round %d, output %d differs from the first round at %d: %v, then %v", r, i, j, first[i][j], got[i][j])
				}
			}
		}
		if live != nil {
			if now := live(); !maps.Equal(now, base) {
				t.Fatalf("after round %d the backend holds %v; after the first it held %v", r, now, base)
			}
		}
	}
}
