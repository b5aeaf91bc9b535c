//go:build js

package wgsl

import (
	"errors"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/model"
)

// TestDeviceLost destroys the device behind the backend's back, as a driver
// reset or the browser would: the next read fails with ErrDeviceLost (not a
// panic, not stale data), and so does everything after it.
func TestDeviceLost(t *testing.T) {
	b := open(t, Options{})
	x := b.Alloc(model.F32, 64)
	b.Write(x, make([]float32, 64))
	if _, err := b.Read(x); err != nil {
		t.Fatal(err)
	}
	b.plat.dev.Call("destroy")
	b.Zero(x)
	_, err := b.Read(x)
	if !errors.Is(err, model.ErrDeviceLost) {
		t.Fatalf("Read after the device was destroyed gave %v, want ErrDeviceLost", err)
	}
	if !strings.Contains(err.Error(), "destroyed") {
		t.Errorf("error %q does not give the browser's reason", err)
	}
	b.Zero(x)
	if err := b.Sync(); !errors.Is(err, model.ErrDeviceLost) {
		t.Errorf("Sync after the loss gave %v", err)
	}
}
