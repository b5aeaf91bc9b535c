//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package loader

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive advisory lock on f without waiting; it fails
// when another open file (in this process or another) holds one. Closing
// f releases it.
func lockFile(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			return err
		}
	}
}
