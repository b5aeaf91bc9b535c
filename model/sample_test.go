package model_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

func TestCheckLogits(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	tests := []struct {
		row  []float32
		want string // "" for a row that can be sampled from
	}{
		{[]float32{1, 2, 3}, ""},
		{[]float32{-inf, 2, -inf}, ""},
		{[]float32{math.MaxFloat32, -math.MaxFloat32}, ""},
		{[]float32{-inf, math.SmallestNonzeroFloat32}, ""},
		{[]float32{1, nan, 3, nan}, "model produced NaN logits (first at token id 1)"},
		{[]float32{nan}, "model produced NaN logits (first at token id 0)"},
		{[]float32{1, 2, inf}, "model produced +Inf logits (first at token id 2)"},
		{[]float32{-inf, inf, nan}, "model produced +Inf logits (first at token id 1)"},
		{[]float32{-inf, -inf, -inf}, "model produced no finite logit (all -Inf)"},
		{[]float32{}, "model produced no finite logit (all -Inf)"},
	}
	for _, tt := range tests {
		err := model.CheckLogits(tt.row)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("CheckLogits(%v) = %q, want %q", tt.row, got, tt.want)
		}
	}
}

// TestSamplerRefusesBadLogits checks that greedy and random sampling both
// return an error for a row with nothing to choose from, not a token.
func TestSamplerRefusesBadLogits(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	rows := [][]float32{{0, nan, 1}, {nan, nan}, {0, inf}, {inf, inf}, {-inf, -inf}}
	for _, s := range []model.Sampling{{}, {Temperature: 1}, {Temperature: 0.7, TopK: 2}, {Temperature: 1, TopP: 0.5}} {
		sm := model.NewSampler(s)
		for _, row := range rows {
			id, err := sm.Sample(row)
			var le *model.LogitsError
			if !errors.As(err, &le) {
				t.Errorf("%+v: Sample(%v) = %d, %v; want a *LogitsError", s, row, id, err)
			}
		}
		if id, err := sm.Sample([]float32{-inf, 5, -inf}); id != 1 || err != nil {
			t.Errorf("%+v: Sample of one finite logit = %d, %v", s, id, err)
		}
	}
}

// rowsBackend is a Backend whose Read returns prepared rows of logits, one
// a call; nothing else may be called.
type rowsBackend struct {
	model.Backend
	rows [][]float32
}

func (b *rowsBackend) Read(model.Tensor) ([]float32, error) {
	row := b.rows[0]
	b.rows = b.rows[1:]
	return row, nil
}

// TestPickerStep checks that the host picker names the step at which the
// logits went bad.
func TestPickerStep(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	tests := []struct {
		rows [][]float32
		want string
	}{
		{[][]float32{{0, 1}, {1, 0}, {0, nan}}, "model produced NaN logits at step 3 (first at token id 1)"},
		{[][]float32{{inf, 1}}, "model produced +Inf logits at step 1 (first at token id 0)"},
		{[][]float32{{0, 1}, {-inf, -inf}}, "model produced no finite logit (all -Inf) at step 2"},
	}
	for _, tt := range tests {
		for _, s := range []model.Sampling{{}, {Temperature: 1, Seed: 3}} {
			m := &model.Model{Backend: &rowsBackend{rows: tt.rows}}
			pick := m.Picker(s)
			var err error
			for range tt.rows {
				if _, err = pick(nil); err != nil {
					break
				}
			}
			if err == nil || err.Error() != tt.want {
				t.Errorf("%+v, rows %v: error %v, want %q", s, tt.rows, err, tt.want)
			}
		}
	}
}

// TestGenerateOverflow loads finite weights whose final norm overflows the
// logits, and checks that Generate fails naming the step rather than
// emitting tokens.
func TestGenerateOverflow(t *testing.T) {
	fsys := tinyCheckpoint(t, loader.F32, poison{tensor: "backbone.norm_f.weight", bits: 0x7f7fffff, all: true})
	b := cpu.New()
	defer b.Close()
	m, err := model.Load(fsys, b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []model.Sampling{{}, {Temperature: 1}} {
		res, err := m.Generate(context.Background(), []int{1, 2, 3}, model.Options{Sampling: s, MaxNewTokens: 4})
		var le *model.LogitsError
		if !errors.As(err, &le) || le.Step != 1 || !strings.HasPrefix(err.Error(), "model produced") {
			t.Errorf("%+v: Generate gave %v, error %v; want a LogitsError at step 1", s, res.IDs, err)
		}
		if len(res.IDs) != 0 {
			t.Errorf("%+v: tokens %v emitted from bad logits", s, res.IDs)
		}
	}
}
