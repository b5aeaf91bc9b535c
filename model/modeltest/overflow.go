package modeltest

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// RunOverflow gives Generate a model whose weights are finite but whose
// logits overflow float32 (an lm_head of ±3e38): greedy and sampled
// generation must fail with a *model.LogitsError at step 1, never return
// tokens chosen from NaN or infinite logits.
func RunOverflow(t *testing.T, b model.Backend) {
	c := model.Config{VocabSize: 40, Hidden: 16, Layers: 1, State: 8, Expand: 2, Heads: 4, HeadDim: 8,
		Groups: 1, ConvKernel: 4, ChunkSize: 8, ConvBias: true, Eps: 1e-5, TimeStepMax: math.Inf(1)}
	m, err := model.NewRandom(c, b, loader.F32, 2)
	if err != nil {
		t.Fatal(err)
	}
	huge := make([]float32, c.VocabSize*c.Hidden)
	for i := range huge {
		huge[i] = float32(3e38)
		if i%3 == 0 {
			huge[i] = -3e38
		}
	}
	lm, err := b.Weight(SpecOf("lm_head.weight", loader.F32, []int{c.VocabSize, c.Hidden}, huge, 64))
	if err != nil {
		t.Fatal(err)
	}
	m.Weights.LMHead = lm
	for _, s := range []model.Sampling{{}, {Temperature: 0.8, TopP: 0.9, Seed: 3}} {
		res, err := m.Generate(context.Background(), []int{1, 2, 3}, model.Options{Sampling: s, MaxNewTokens: 4})
		var le *model.LogitsError
		if !errors.As(err, &le) || le.Step != 1 {
			t.Fatalf("temperature %v: Generate gave %v ids and error %v; want a LogitsError at step 1", s.Temperature, res.IDs, err)
		}
		if !strings.Contains(err.Error(), "model produced") {
			t.Errorf("error %q does not say what the model produced", err)
		}
	}
}
