package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/wgsl"
)

// newWebGPU opens the WebGPU backend on the first adapter (a discrete GPU
// when there is one); profile asks for kernel timing (bench --profile).
var newWebGPU = func(profile bool) (model.Backend, error) {
	quietWSI()
	return wgsl.New(wgsl.Options{Profile: profile})
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
