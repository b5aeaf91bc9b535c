//go:build js

package wgsl

// wgpuLive is live in js, where the browser's objects cannot be counted.
func wgpuLive(_ *Backend, live func() map[string]int) func() map[string]int { return live }
