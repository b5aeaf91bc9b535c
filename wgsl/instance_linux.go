//go:build linux && !android && !js

package wgsl

/*
#include <stdint.h>
#include <string.h>

// Minimal copies of the wgpu-native v22 declarations (webgpu.h, wgpu.h of
// github.com/cogentcore/webgpu v0.23.0): the chained struct, the instance
// descriptor and its InstanceExtras. Every field is 32 bits or a pointer.
typedef struct m2Chained {
	const struct m2Chained *next;
	uint32_t sType;
} m2Chained;

typedef struct {
	m2Chained chain;
	uint32_t backends;
	uint32_t flags;
	uint32_t dx12ShaderCompiler;
	uint32_t gles3MinorVersion;
	const char *dxilPath;
	const char *dxcPath;
} m2InstanceExtras;

typedef struct {
	const m2Chained *nextInChain;
} m2InstanceDescriptor;

enum { m2STypeInstanceExtras = 0x00030006 };

// Weak, so that cgo's own test link of this package, which lacks
// libwgpu_native, succeeds; the real binary gets the definition that the
// wgpu package links in.
extern void *wgpuCreateInstance(const m2InstanceDescriptor *) __attribute__((weak));

static void *m2_create_instance(uint32_t backends) {
	if (!wgpuCreateInstance) {
		return 0;
	}
	m2InstanceExtras ex;
	memset(&ex, 0, sizeof ex);
	ex.chain.sType = m2STypeInstanceExtras;
	ex.backends = backends;
	m2InstanceDescriptor d = { &ex.chain };
	return wgpuCreateInstance(&d);
}
*/
import "C"

import (
	"unsafe"

	"github.com/cogentcore/webgpu/wgpu"
)

// vulkanInstance creates a wgpu instance limited to Vulkan, with every
// descriptor field initialised. The binding's CreateInstance cannot be
// used for this: it mallocs the InstanceExtras and leaves flags,
// gles3MinorVersion and the DX paths uninitialised, so creation fails at
// random ("Unknown gles3 minor version"), the same bug as RequiredLimits.
// And without a descriptor wgpu also starts its GL backend, whose EGL setup
// aborts the process on machines with a broken EGL instead of returning an
// error. The instance handle is wrapped in the binding's Instance type,
// which is one pointer field (checked here); nil means "not available".
func vulkanInstance() *wgpu.Instance {
	// wgpu's warnings are about presenting to windows (missing swapchain
	// extensions), which compute never does; errors still show.
	wgpu.SetLogLevel(wgpu.LogLevelError)
	type instance struct{ ref unsafe.Pointer }
	if unsafe.Sizeof(wgpu.Instance{}) != unsafe.Sizeof(instance{}) {
		return nil
	}
	ref := C.m2_create_instance(C.uint32_t(wgpu.InstanceBackendVulkan))
	if ref == nil {
		return nil
	}
	return (*wgpu.Instance)(unsafe.Pointer(&instance{ref: ref}))
}
