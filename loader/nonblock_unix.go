//go:build unix

package loader

import "syscall"

// openNonblock is added to the flags of DirFS's opens, so that a FIFO put
// in place of a regular file between the Stat and the Open cannot block
// the open. It changes nothing for regular files.
const openNonblock = syscall.O_NONBLOCK
