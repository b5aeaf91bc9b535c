//go:build js && wasm

package main

import (
	"errors"
	"strings"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/wgsl"
)

// openBackend opens the backend for device "auto", "webgpu" or "cpu". It
// returns the backend, its name ("webgpu" or "cpu") and, when "auto" fell
// back to the CPU, why. "auto" takes WebGPU only on a real GPU: a fallback
// adapter (SwiftShader, which browsers offer where they trust no GPU) runs
// the model at a fraction of the wasm CPU backend's speed (0.2 against 35
// tokens/s in headless Chromium), so it is used only when asked for.
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
		gb, err := wgsl.New(wgsl.Options{RefuseSoftware: true})
		switch {
		case errors.Is(err, wgsl.ErrSoftwareAdapter):
			return cpu.New(), "cpu", "running on the CPU: the browser's only WebGPU adapter is a software renderer (" +
				strings.TrimPrefix(err.Error(), wgsl.ErrSoftwareAdapter.Error()+": ") + "), slower than the CPU path; device 'webgpu' uses it anyway", nil
		case err != nil:
			return cpu.New(), "cpu", "WebGPU is not available (" + err.Error() + "); running on the CPU", nil
		}
		return gb, "webgpu", "", nil
	}
	return nil, "", "", codef(codeBadArg, "device %q: want 'auto', 'webgpu' or 'cpu'", device)
}

// isSoftware reports whether b is WebGPU on a software renderer
// (SwiftShader, lavapipe): its shaders run on the CPU.
func isSoftware(b model.Backend) bool {
	gb, ok := b.(*wgsl.Backend)
	return ok && wgsl.IsSoftware(gb.Adapter())
}
