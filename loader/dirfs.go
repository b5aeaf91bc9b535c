package loader

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strings"
)

// ErrNotRegular is matched (errors.Is) by the error of DirFS for a name
// that is a FIFO, socket, device or other special file.
var ErrNotRegular = errors.New("not a regular file")

// DirFS is the model folder dir as an fs.FS, like os.DirFS (symbolic links
// are followed, so a Hugging Face cache snapshot, whose files link to
// ../../blobs, works), except that it opens regular files and folders
// only. Anything else is refused with an error that names the file,
// without being opened: opening a FIFO for reading blocks until some
// process writes to it, so a model folder whose config.json or shard is a
// FIFO would hang the load for good, and opening a device can have effects
// of its own. The check is a Stat before the open, the open is
// non-blocking where the system has that, and the open file must be the
// one Stat saw, so a file swapped in between is refused as well.
//
// Its files are *os.File, so they implement io.ReaderAt and io.Seeker.
func DirFS(dir string) fs.FS { return dirFS{dir: dir, fsys: os.DirFS(dir)} }

type dirFS struct {
	dir  string
	fsys fs.FS // os.DirFS(dir): Stat, ReadDir and the checks of names
}

var (
	_ fs.StatFS     = dirFS{}
	_ fs.ReadDirFS  = dirFS{}
	_ fs.ReadFileFS = dirFS{}
)

func (d dirFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) || runtime.GOOS == "windows" && strings.ContainsAny(name, `\:`) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	st, err := fs.Stat(d.fsys, name)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return d.fsys.Open(name)
	}
	if err := regular(name, st); err != nil {
		return nil, err
	}
	full := d.dir + "/" + name // as os.DirFS joins (its Stat refused an empty dir)
	f, err := os.OpenFile(full, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			pe.Path = name
		}
		return nil, err
	}
	fst, err := f.Stat()
	if err == nil {
		err = regular(name, fst)
	}
	if err == nil && !os.SameFile(st, fst) {
		err = &fs.PathError{Op: "open", Path: name, Err: errors.New("the file was replaced while it was being opened")}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// regular refuses anything but a regular file, saying what it is.
func regular(name string, st fs.FileInfo) error {
	m := st.Mode()
	if m.IsRegular() {
		return nil
	}
	what := "special file"
	switch {
	case m&fs.ModeNamedPipe != 0:
		what = "named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		what = "socket"
	case m&fs.ModeCharDevice != 0:
		what = "character device"
	case m&fs.ModeDevice != 0:
		what = "device"
	case m&fs.ModeIrregular != 0:
		what = "file of an unknown kind"
	}
	return &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w: it is a %s, which a model folder must not contain", ErrNotRegular, what)}
}

// Stat never opens the file, so it is safe for any kind of file.
func (d dirFS) Stat(name string) (fs.FileInfo, error) { return fs.Stat(d.fsys, name) }

func (d dirFS) ReadDir(name string) ([]fs.DirEntry, error) { return fs.ReadDir(d.fsys, name) }

// ReadFile goes through Open (os.DirFS's own ReadFile would open anything).
func (d dirFS) ReadFile(name string) ([]byte, error) {
	f, err := d.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f) // a folder fails here, as with os.DirFS
}
