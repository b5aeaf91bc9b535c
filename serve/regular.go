package serve

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// errNotRegular is why a FIFO, socket, device or folder is not served.
var errNotRegular = errors.New("not a regular file")

// hidden reports whether a path has a segment that begins with a dot:
// .git/config, .env, .DS_Store, .ssh/…. Such files are never served (the
// answer is the same 404 as for a missing file, so that whether one exists
// is not revealed): a folder of models or a web root is often a checkout,
// and with Access-Control-Allow-Origin: * any page on the web could read
// what it serves.
func hidden(segs []string) bool {
	for _, s := range segs {
		if strings.HasPrefix(s, ".") {
			return true
		}
	}
	return false
}

// openRegular opens name in src if, and only if, it is a regular file,
// without ever opening anything else: opening a FIFO for reading blocks
// until some process opens it for writing, which would pin the request
// (and a server goroutine and descriptor) for good, and opening a device
// can have effects of its own. So the file is looked up first (Stat,
// which follows symbolic links inside an os.Root and refuses those that
// leave it) and opened only when regular; the open itself is non-blocking
// where the system allows (openNonblock), and the open file is checked
// again and compared with what Stat saw, so a file swapped in between
// cannot slip through either. A source whose fs.FS has no Stat (an object
// store) is opened directly: it has no special files.
func (src source) openRegular(name string) (fs.File, fs.FileInfo, error) {
	var st fs.FileInfo
	var err error
	switch {
	case src.root != nil:
		st, err = src.root.Stat(name)
	default:
		if sfs, ok := src.fsys.(fs.StatFS); ok {
			st, err = sfs.Stat(name)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	if st != nil && !st.Mode().IsRegular() {
		return nil, nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%v)", errNotRegular, st.Mode().Type())}
	}
	var f fs.File
	if src.root != nil {
		f, err = src.root.OpenFile(name, os.O_RDONLY|openNonblock, 0)
	} else {
		f, err = src.fsys.Open(name)
	}
	if err != nil {
		return nil, nil, err
	}
	fst, err := f.Stat()
	if err == nil && !fst.Mode().IsRegular() {
		err = &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%v)", errNotRegular, fst.Mode().Type())}
	}
	if err == nil && src.root != nil && !os.SameFile(st, fst) {
		err = &fs.PathError{Op: "open", Path: name, Err: errors.New("the file changed while it was opened")}
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fst, nil
}
