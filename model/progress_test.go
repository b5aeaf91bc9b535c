package model_test

import (
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/models"
)

// TestLoadProgress checks that progress only goes forward, reaches the total
// of tensor bytes, and moves within large tensors, not only between them.
func TestLoadProgress(t *testing.T) {
	fsys := models.Tiny()
	ck, err := loader.Open(fsys)
	if err != nil {
		t.Fatal(err)
	}
	var want, largest int64
	for _, n := range ck.Names() {
		in, _ := ck.Info(n)
		want += in.Size
		largest = max(largest, in.Size)
	}
	var events [][2]int64
	fileDone := map[string]int64{}
	m, err := model.Load(fsys, cpu.New(), model.LoadOptions{Progress: func(p model.Progress) {
		events = append(events, [2]int64{p.Done, p.Total})
		if p.FileDone <= fileDone[p.File] || p.FileDone > p.FileTotal {
			t.Errorf("file %s: %d of %d after %d", p.File, p.FileDone, p.FileTotal, fileDone[p.File])
		}
		fileDone[p.File] = p.FileDone
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Backend.Close()
	if len(events) == 0 {
		t.Fatal("no progress")
	}
	for i, e := range events {
		if e[1] != want {
			t.Fatalf("event %d: total %d, want %d", i, e[1], want)
		}
		if i > 0 && e[0] <= events[i-1][0] {
			t.Fatalf("event %d: %d after %d", i, e[0], events[i-1][0])
		}
	}
	if last := events[len(events)-1]; last[0] != want {
		t.Errorf("last event %d, want %d", last[0], want)
	}
	for _, f := range ck.Files() {
		var size int64
		for _, n := range ck.Names() {
			if in, _ := ck.Info(n); in.File == f {
				size += in.Size
			}
		}
		if fileDone[f] != size {
			t.Errorf("file %s: progress ended at %d of %d tensor bytes", f, fileDone[f], size)
		}
	}
	if largest > loader.ChunkSize {
		for i := 1; i < len(events); i++ {
			if d := events[i][0] - events[i-1][0]; d > loader.ChunkSize {
				t.Errorf("progress jumped %d bytes at event %d (more than a %d-byte chunk)", d, i, loader.ChunkSize)
			}
		}
	}
}
