//go:build js && wasm

package main

import (
	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/wgsl"
)

// openBackend opens the backend for device "auto", "webgpu" or "cpu". It
// returns the backend, its name ("webgpu" or "cpu") and, when "auto" fell
// back to the CPU, why.
func openBackend(device string) (b model.Backend, name, note string, err error) {
	switch device {
	case "cpu":
		return cpu.New(), "cpu", "", nil
	case "webgpu":
		gb, err := wgsl.New(wgsl.Options{})
		if err != nil {
			return nil, "", "", codef(codeNoWebGPU, "WebGPU is not available: %v", err)
		}
		return gb, "webgpu", "", nil
	case "auto", "":
		gb, err := wgsl.New(wgsl.Options{})
		if err != nil {
			return cpu.New(), "cpu", "WebGPU is not available (" + err.Error() + "); running on the CPU", nil
		}
		return gb, "webgpu", "", nil
	}
	return nil, "", "", codef(codeBadArg, "device %q: want 'auto', 'webgpu' or 'cpu'", device)
}
