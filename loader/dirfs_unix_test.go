//go:build linux || darwin || freebsd || netbsd || openbsd

package loader

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDirFSRefusesSpecialFiles checks that a model folder whose
// config.json, tokenizer.json or weights are a FIFO or a socket (directly
// or through a symbolic link) fails at once with ErrNotRegular and an
// error that names the file and says what it is, instead of blocking the
// load for good in the open of the FIFO; and that links to regular files
// outside the folder, as in a Hugging Face cache snapshot, still work.
// The 30 s bound only detects a hang.
func TestDirFSRefusesSpecialFiles(t *testing.T) {
	fixture, err := filepath.Abs("../testdata/fixtures/tiny-g1")
	if err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "sock") // socket paths are limited to ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	ln, err := net.Listen("unix", filepath.Join(sockDir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// folder makes a model folder of links to the fixture's files (the
	// layout of a Hugging Face snapshot), then lets special replace some.
	folder := func(t *testing.T, special func(dir string)) string {
		dir := t.TempDir()
		for _, n := range []string{"config.json", "model.safetensors", "generation_config.json"} {
			if err := os.Symlink(filepath.Join(fixture, n), filepath.Join(dir, n)); err != nil {
				t.Fatal(err)
			}
		}
		if special != nil {
			special(dir)
		}
		return dir
	}
	fifo := func(name string) func(dir string) {
		return func(dir string) {
			p := filepath.Join(dir, name)
			os.Remove(p)
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	linkToFIFO := func(name string) func(dir string) {
		return func(dir string) {
			other := filepath.Join(t.TempDir(), "pipe")
			if err := syscall.Mkfifo(other, 0o644); err != nil {
				t.Fatal(err)
			}
			os.Remove(filepath.Join(dir, name))
			if err := os.Symlink(other, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	socket := func(name string) func(dir string) {
		return func(dir string) {
			os.Remove(filepath.Join(dir, name))
			if err := os.Symlink(filepath.Join(sockDir, "s"), filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	readConfig := func(fsys fs.FS) error { _, err := fs.ReadFile(fsys, "config.json"); return err }
	openWeights := func(fsys fs.FS) error { _, err := Open(fsys); return err }
	readTokenizer := func(fsys fs.FS) error { _, err := fs.ReadFile(fsys, "tokenizer.json"); return err }

	tests := []struct {
		name    string
		special func(dir string)
		op      func(fs.FS) error
		want    string // "" means it must work
	}{
		{"links to regular files outside the folder", nil, openWeights, ""},
		{"config.json is a FIFO", fifo("config.json"), readConfig, "open config.json: not a regular file: it is a named pipe (FIFO)"},
		{"config.json links to a FIFO", linkToFIFO("config.json"), readConfig, "open config.json: not a regular file: it is a named pipe (FIFO)"},
		{"the weights are a FIFO", fifo("model.safetensors"), openWeights, "open model.safetensors: not a regular file: it is a named pipe (FIFO)"},
		{"tokenizer.json is a FIFO", fifo("tokenizer.json"), readTokenizer, "open tokenizer.json: not a regular file: it is a named pipe (FIFO)"},
		{"config.json is a socket", socket("config.json"), readConfig, "open config.json: not a regular file: it is a socket"},
		{"a missing file is still ErrNotExist", nil, readTokenizer, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := DirFS(folder(t, tt.special))
			done := make(chan error, 1)
			go func() { done <- tt.op(fsys) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("still blocked after 30 s: a special file was opened")
			}
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(tt.want, "not a regular file") && !errors.Is(err, ErrNotRegular) {
				t.Errorf("error %v does not match ErrNotRegular", err)
			}
			if strings.Contains(tt.want, "no such file") && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %v does not match fs.ErrNotExist", err)
			}
		})
	}

	t.Run("Stat and ReadDir see special files without opening them", func(t *testing.T) {
		fsys := DirFS(folder(t, fifo("config.json")))
		st, err := fs.Stat(fsys, "config.json")
		if err != nil || st.Mode()&fs.ModeNamedPipe == 0 {
			t.Errorf("Stat: %v, %v", st, err)
		}
		des, err := fs.ReadDir(fsys, ".")
		if err != nil || len(des) != 3 {
			t.Errorf("ReadDir: %d entries, %v", len(des), err)
		}
	})
}
