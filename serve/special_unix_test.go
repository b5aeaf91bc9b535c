//go:build linux || darwin || freebsd || netbsd || openbsd

package serve

import (
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestServeSpecialFiles checks that a FIFO, a Unix socket or a folder
// where a file is asked for gets a 404 at once, from the models folder and
// from StaticDir, also through a symbolic link. Opening a FIFO for reading
// blocks until a writer opens it, so a server that opened before checking
// would hang the request (and pin a goroutine and a descriptor) for good;
// the hang is caught here by a generous bound, not a timing assertion.
func TestServeSpecialFiles(t *testing.T) {
	models := t.TempDir()
	static := t.TempDir()
	sockDir, err := os.MkdirTemp("", "sock") // short: socket paths are limited to ~100 bytes
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	must(t, os.Mkdir(filepath.Join(models, "m1"), 0o755))
	must(t, os.Mkdir(filepath.Join(models, "m1", "dir.json"), 0o755))
	for _, root := range []string{filepath.Join(models, "m1"), static} {
		must(t, syscall.Mkfifo(filepath.Join(root, "config.json"), 0o644))
		must(t, os.Symlink("config.json", filepath.Join(root, "link.json")))
	}
	ln, err := net.Listen("unix", filepath.Join(sockDir, "s"))
	must(t, err)
	defer ln.Close()
	must(t, os.Symlink(filepath.Join(sockDir, "s"), filepath.Join(models, "m1", "outside.sock")))
	// A socket inside the folder: move it in by a hard link where allowed,
	// else skip that case (some systems refuse links to sockets).
	sockInside := os.Link(filepath.Join(sockDir, "s"), filepath.Join(models, "m1", "tokenizer.json")) == nil

	h, err := New(Options{ModelsDir: models, StaticDir: static, NoEmbedded: true})
	must(t, err)
	defer h.Close()
	// What `mamba2 serve --static` passes today: an os.Root's fs.FS as
	// Static. Its Stat is used before any open.
	root, err := os.OpenRoot(static)
	must(t, err)
	defer root.Close()
	hRootFS, err := New(Options{Static: root.FS(), NoEmbedded: true})
	must(t, err)

	tests := []struct {
		name, target string
		skip         bool
		h            *Handler
	}{
		{"FIFO in a model folder", "/models/m1/config.json", false, h},
		{"link to a FIFO in a model folder", "/models/m1/link.json", false, h},
		{"socket in a model folder", "/models/m1/tokenizer.json", !sockInside, h},
		{"link to a socket out of the folder", "/models/m1/outside.sock", false, h},
		{"folder asked for as a file", "/models/m1/dir.json", false, h},
		{"FIFO in StaticDir", "/config.json", false, h},
		{"link to a FIFO in StaticDir", "/link.json", false, h},
		{"FIFO in a Static os.Root FS", "/config.json", false, hRootFS},
		{"link to a FIFO in a Static os.Root FS", "/link.json", false, hRootFS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skip {
				t.Skip("cannot place a socket in the folder here")
			}
			for _, method := range []string{"GET", "HEAD"} {
				w := httptest.NewRecorder()
				done := make(chan struct{})
				go func() {
					defer close(done)
					tt.h.ServeHTTP(w, httptest.NewRequest(method, tt.target, nil))
				}()
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					// Unblock the open so the test can end, then fail.
					if f, err := os.OpenFile(filepath.Join(models, "m1", "config.json"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						f.Close()
					}
					if f, err := os.OpenFile(filepath.Join(static, "config.json"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						f.Close()
					}
					t.Fatalf("%s %s still running after 30 s: the server opened a special file", method, tt.target)
				}
				if w.Code != 404 {
					t.Errorf("%s: status %d, want 404", method, w.Code)
				}
			}
		})
	}
}
