//go:build !js && !(linux && !android)

package wgsl

import "github.com/cogentcore/webgpu/wgpu"

// vulkanInstance is Linux-only; elsewhere wgpu's default backends are used.
func vulkanInstance() *wgpu.Instance { return nil }
