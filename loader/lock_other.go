//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package loader

import (
	"errors"
	"os"
)

// lockFile cannot lock here, so downloads are not resumed across runs:
// each goes to a temporary file of its own, as two processes may share
// the cache and must not write one part at once.
func lockFile(*os.File) error { return errors.ErrUnsupported }
