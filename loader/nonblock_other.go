//go:build !unix

package loader

// openNonblock is 0 where O_NONBLOCK does not exist or means nothing for
// opens; the Stat before each open is DirFS's guard there.
const openNonblock = 0
