//go:build !js

package wgsl

// wgpuLive adds what wgpu-native itself holds to live: its registry's
// buffers and bind groups, so the test sees that freed objects are really
// released, not only forgotten by the backend. wgpu drops destroyed objects
// when the device is next maintained, hence the Poll.
func wgpuLive(b *Backend, live func() map[string]int) func() map[string]int {
	return func() map[string]int {
		m := live()
		_ = b.waitIdle()
		b.dev.Poll(false, nil)
		if r := b.plat.inst.GenerateReport(); r.Vulkan != nil {
			m["wgpu buffers"] = int(r.Vulkan.Buffers.NumAllocated)
			m["wgpu bind groups"] = int(r.Vulkan.BindGroups.NumAllocated)
		}
		return m
	}
}
