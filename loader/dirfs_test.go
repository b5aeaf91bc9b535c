package loader

import (
	"testing"
	"testing/fstest"
)

// TestDirFSIsAnFS checks that DirFS behaves as an fs.FS should (open,
// stat, read, read-dir, seek and ReadAt consistent with each other), on the
// fixture folder, and that a checkpoint loads from it as from os.DirFS.
func TestDirFSIsAnFS(t *testing.T) {
	dir := "../testdata/fixtures/tiny-g1"
	if err := fstest.TestFS(DirFS(dir), "config.json", "model.safetensors"); err != nil {
		t.Fatal(err)
	}
	ck, err := Open(DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ck.Float32s("backbone.embeddings.weight"); err != nil {
		t.Fatal(err)
	}
}
