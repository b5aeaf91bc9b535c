package wgsl

import (
	"fmt"
	"os"
	"slices"
)

// Subgroup variants. Where the device has WebGPU's subgroups feature (Dawn
// offers it, in browsers and under Node; wgpu-native 22 does not), the
// kernels whose descriptors list the SUBGROUPS variant (kernels.go) are
// compiled with it: preprocess then starts the source with
// `enable subgroups;`, and the kernels reduce across their workgroup with
// subgroup operations and one barrier or two instead of a tree of
// log2(256) barriers in workgroup memory. The results equal the fallback's
// within float rounding (sums are added in another order; integer sums,
// maxima and minima, and so every choice of a token, are exact).

// subgroupsDefine selects the subgroup variant of a kernel.
const subgroupsDefine = "SUBGROUPS"

// subgroupsEnv turns the subgroup variants off ("0") for every backend a
// process opens, to compare the two on one engine without rebuilding.
const subgroupsEnv = "MAMBA2_WGSL_SUBGROUPS"

// subgroupSupport is what the device has of the subgroups feature.
type subgroupSupport struct {
	on       bool   // the device was created with the feature
	min, max uint32 // the adapter's subgroup sizes; 0 where it does not say
}

// noSubgroupsFromEnv reads subgroupsEnv: "0" turns the variants off, "1"
// or nothing leaves them to the device, anything else is an error, so a
// typo cannot silently measure the wrong kernels.
func noSubgroupsFromEnv() (bool, error) {
	switch v := os.Getenv(subgroupsEnv); v {
	case "", "1":
		return false, nil
	case "0":
		return true, nil
	default:
		return false, fmt.Errorf("wgsl: %s=%q: want 0 (no subgroup kernels) or 1 (subgroup kernels where the device has the feature)", subgroupsEnv, v)
	}
}

// Subgroups reports whether the kernels use their subgroup variants: the
// device has the feature and neither Options.NoSubgroups nor
// MAMBA2_WGSL_SUBGROUPS=0 turned them off.
func (b *Backend) Subgroups() bool {
	return b.plat.subgroupSupport().on && !b.opts.NoSubgroups
}

// withSubgroups adds the SUBGROUPS define to the defines d of a dispatch
// of kernel k when the backend uses subgroups and k has that variant.
func (b *Backend) withSubgroups(k *kernelInfo, d defines) defines {
	if !slices.Contains(k.variants, subgroupsDefine) || !b.Subgroups() || d.has(subgroupsDefine) {
		return d
	}
	return defs(append(slices.Clone(d), subgroupsDefine)...)
}

// describeSubgroups is what Describe adds about subgroups: the sizes the
// adapter reports, or why the variants are not used.
func (b *Backend) describeSubgroups() string {
	sg := b.plat.subgroupSupport()
	switch {
	case !sg.on:
		return ""
	case b.opts.NoSubgroups:
		return ", subgroups off"
	case sg.min == 0:
		return ", subgroups"
	case sg.min == sg.max:
		return fmt.Sprintf(", subgroups of %d", sg.min)
	default:
		return fmt.Sprintf(", subgroups of %d-%d", sg.min, sg.max)
	}
}
