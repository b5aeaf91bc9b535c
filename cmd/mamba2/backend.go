package main

import (
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/wgsl"
)

// newWebGPU opens the WebGPU backend on the first adapter (a discrete GPU
// when there is one).
var newWebGPU = func() (model.Backend, error) {
	return wgsl.New(wgsl.Options{})
}
