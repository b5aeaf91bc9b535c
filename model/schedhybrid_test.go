package model_test

import (
	"os"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestSchedulerHybrid: continuous batching of every hybrid family on the
// CPU, each slot at its own position in the pool's KV caches, gives each
// request exactly what Model.Generate gives it alone
// (modeltest.RunHybridScheduler).
func TestSchedulerHybrid(t *testing.T) {
	for _, family := range modeltest.HybridFamilies {
		t.Run(family, func(t *testing.T) {
			dir, exp, _ := modeltest.LoadHybrid(t, family)
			m, err := model.Load(os.DirFS(dir), cpu.New(), model.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			modeltest.RunHybridScheduler(t, m, exp)
		})
	}
}
