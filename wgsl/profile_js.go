//go:build js

package wgsl

import (
	"errors"

	"github.com/cogentcore/webgpu/wgpu"
)

// errNoTimestamps says why js cannot time kernels: the binding has no query
// sets (GPUQuerySet) and no timestampWrites for compute passes.
var errNoTimestamps = errors.New("kernel times need timestamp queries, which the WebGPU binding does not offer in js/wasm")

// timer exists in js only so the shared code compiles; newTimer always fails.
type timer struct{}

func newTimer(*Backend, int) (*timer, error) { return nil, errNoTimestamps }

func (*timer) write(*wgpu.CommandEncoder, uint32) error   { return errNoTimestamps }
func (*timer) resolve(*wgpu.CommandEncoder, uint32) error { return errNoTimestamps }
func (*timer) read(*Backend, int) ([]uint64, error)       { return nil, errNoTimestamps }
func (*timer) release()                                   {}
