//go:build !unix

package serve

// openNonblock is 0 where O_NONBLOCK does not exist or means nothing for
// opens (Windows, js, wasip1): there the Stat before the Open is the only
// guard against special files.
const openNonblock = 0
