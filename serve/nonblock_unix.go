//go:build unix

package serve

import "syscall"

// openNonblock is added to the flags of every open of a served file, so
// that a FIFO that replaced a regular file between the Stat and the Open
// does not block the open (it would, until a writer came). It changes
// nothing for regular files, whose reads never block on these systems.
const openNonblock = syscall.O_NONBLOCK
