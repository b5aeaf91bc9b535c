package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/wgsl"
)

// newWebGPU opens the WebGPU backend on the best adapter (a discrete GPU
// when there is one); profile asks for kernel timing (bench --profile),
// refuseSoftware turns down adapters that run on the CPU.
var newWebGPU = func(profile, refuseSoftware bool) (*wgsl.Backend, error) {
	quietWSI()
	return wgsl.New(wgsl.Options{Profile: profile, RefuseSoftware: refuseSoftware})
}

// backendFor is the backend name to open for a model of config c: "auto"
// means the CPU for a hybrid (Bamba, Falcon-H1, ...) whose operations the
// WebGPU backend lacks (model.RequireHybrid), saying so on stderr. The
// WebGPU backend implements model.HybridBackend, so today every hybrid
// keeps "auto"; the check stays so that an operation added to the
// interface before the GPU has it falls back to the CPU instead of
// failing at load.
func backendFor(name string, c model.Config, stderr io.Writer) string {
	if (name == "auto" || name == "") && c.Hybrid != nil {
		if _, err := model.RequireHybrid(c, &wgsl.Backend{}); err != nil {
			fmt.Fprintf(stderr, "mamba2: using the CPU backend: %v\n", strings.TrimSuffix(err.Error(), "; use --backend cpu"))
			return "cpu"
		}
	}
	return name
}

// openBackend picks the backend. "auto" takes a real GPU through WebGPU,
// else the CPU backend: a software WebGPU adapter (lavapipe, SwiftShader)
// is many times slower than the CPU backend, so it runs only when asked
// for by name. The choice and its reason go to stderr.
func openBackend(name string, profile bool, stderr io.Writer) (model.Backend, error) {
	switch name {
	case "cpu":
		return cpu.New(), nil
	case "webgpu":
		b, err := newWebGPU(profile, false)
		if err != nil {
			return nil, err
		}
		if wgsl.IsSoftware(b.Adapter()) {
			fmt.Fprintf(stderr, "mamba2: WebGPU runs on %s, a software renderer; --backend cpu is faster here\n", b.Describe())
		}
		return b, nil
	case "auto", "":
		b, err := newWebGPU(profile, true)
		switch {
		case err == nil:
			fmt.Fprintf(stderr, "mamba2: using WebGPU on %s\n", b.Describe())
			return b, nil
		case errors.Is(err, wgsl.ErrSoftwareAdapter):
			fmt.Fprintf(stderr, "mamba2: using the CPU backend: %v, slower than the CPU backend (--backend webgpu runs on it anyway)\n", err)
		default:
			fmt.Fprintf(stderr, "mamba2: using the CPU backend: WebGPU is unavailable (%v)\n", err)
		}
		return cpu.New(), nil
	}
	return nil, fmt.Errorf("backend %q: want auto, cpu or webgpu", name)
}

// quietWSI gives Mesa's Vulkan window-system layer the runtime folder it
// looks for when none is set (a server, a container, CI), which otherwise
// prints "XDG_RUNTIME_DIR is invalid or not set" once per check. The CLI
// opens no windows; the folder is private to the user and reused.
func quietWSI() {
	if os.Getenv("XDG_RUNTIME_DIR") != "" {
		return
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("mamba2-runtime-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	if st, err := os.Stat(dir); err == nil && st.Mode().Perm() == 0o700 {
		os.Setenv("XDG_RUNTIME_DIR", dir)
	}
}
