package main

import (
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/wgsl"
)

// newWebGPU opens the WebGPU backend on the first adapter (a discrete GPU
// when there is one); profile asks for kernel timing (bench --profile).
var newWebGPU = func(profile bool) (model.Backend, error) {
	return wgsl.New(wgsl.Options{Profile: profile})
}
