package cpu

import (
	"math"
	"os"
	"testing"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// TestWriteRandom loads what model.WriteRandom wrote and checks it is the
// model NewRandom builds: same logits, bit for bit, in every dtype.
func TestWriteRandom(t *testing.T) {
	c := model.Config{VocabSize: 61, Hidden: 24, Layers: 2, State: 8, Expand: 2, Heads: 6, HeadDim: 8,
		Groups: 2, ConvKernel: 4, ChunkSize: 8, ConvBias: true, UseBias: true, Eps: 1e-5,
		TimeStepMax: math.Inf(1), EOS: 3}
	ids := []int32{1, 5, 9, 2, 33, 7, 60, 0, 12}
	for _, dt := range []loader.DType{loader.F32, loader.F16, loader.BF16} {
		for _, tied := range []bool{false, true} {
			c.TieEmbeddings = tied
			dir := t.TempDir()
			if err := model.WriteRandom(dir, c, dt, 11); err != nil {
				t.Fatal(err)
			}
			loaded, err := model.Load(os.DirFS(dir), New(), model.LoadOptions{})
			if err != nil {
				t.Fatalf("%s tied=%v: %v", dt, tied, err)
			}
			if loaded.Config != c {
				t.Errorf("%s: config.json reads back as %+v, want %+v", dt, loaded.Config, c)
			}
			built, err := model.NewRandom(c, New(), dt, 11)
			if err != nil {
				t.Fatal(err)
			}
			got, err := loaded.NewState(1).Logits(ids, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := built.NewState(1).Logits(ids, nil)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s tied=%v: logit %d is %v from the folder, %v from NewRandom", dt, tied, i, got[i], want[i])
				}
			}
		}
	}
}
