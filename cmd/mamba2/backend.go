package main

import (
	"errors"

	"github.com/mamba2web/mamba2/model"
)

// newWebGPU opens the WebGPU backend.
var newWebGPU = func() (model.Backend, error) {
	return nil, errors.New("the WebGPU backend is not built in")
}
