package model_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestSaveRestore: the state after X, saved and restored into a fresh
// state, continues with Y as the state after X,Y does: the same logits
// and the same position; the bytes refuse another model, another batch,
// a cut file, a non-finite value, and leave the state as it was then.
func TestSaveRestore(t *testing.T) {
	fx := modeltest.Fixtures(t)[0]
	m, err := model.Load(os.DirFS(fx.Dir), cpu.New(), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x, y := fx.PromptIDs[:7], fx.PromptIDs[7:12]
	whole := m.NewState(1)
	want, err := whole.Logits(append(append([]int32{}, x...), y...), nil)
	if err != nil {
		t.Fatal(err)
	}
	first := m.NewState(1)
	if _, err := first.Forward(x, nil); err != nil {
		t.Fatal(err)
	}
	saved, err := first.Save()
	if err != nil {
		t.Fatal(err)
	}
	again := m.NewState(1)
	if err := again.Restore(saved); err != nil {
		t.Fatal(err)
	}
	if again.Pos != len(x) {
		t.Errorf("restored position %d, want %d", again.Pos, len(x))
	}
	got, err := again.Logits(y, nil)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	tail := want[len(x)*V:]
	for i := range got {
		if d := math.Abs(float64(got[i] - tail[i])); d > 1e-5*(1+math.Abs(float64(tail[i]))) {
			t.Fatalf("logit %d after restore: %v, want %v", i, got[i], tail[i])
		}
	}

	// Refusals, each leaving the state unchanged.
	other := m.Config
	other.Eps *= 2
	bad := func(mutate func([]byte) []byte) []byte { return mutate(bytes.Clone(saved)) }
	nan := bad(func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[len(b)-4:], math.Float32bits(float32(math.NaN())))
		return b
	})
	otherHash := other.Hash()
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"not a state", []byte("hello"), "not a saved Mamba-2 state"},
		{"version", bad(func(b []byte) []byte { b[8] = 9; return b }), "version 9"},
		{"another model", bad(func(b []byte) []byte { copy(b[12:44], otherHash[:]); return b }), "another model"},
		{"cut", saved[:len(saved)-1], "bytes"},
		{"NaN", nan, "must be finite"},
	} {
		before, _ := again.Save()
		err := again.Restore(c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
		if after, _ := again.Save(); !bytes.Equal(before, after) {
			t.Errorf("%s: a refused restore changed the state", c.name)
		}
	}
	if err := m.NewState(2).Restore(saved); err == nil || !strings.Contains(err.Error(), "1 sequences, this state 2") {
		t.Errorf("another batch: %v", err)
	}
}
