// common.wgsl: small helpers every kernel may include.
//
// The Go side folds a long one-dimensional grid of workgroups into (x, y) so
// that no dimension exceeds maxComputeWorkgroupsPerDimension (65535 by
// default); wg_index undoes the fold. Kernels return early when the index is
// past their real count, which is uniform across a workgroup, so it is safe
// before barriers.
fn wg_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// silu(v) = v · sigmoid(v). For very negative v, exp(-v) overflows to +inf and
// the quotient is -0, the correct limit.
fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// is_nan tests the bits, because `v != v` may be folded away by shader
// compilers that assume no NaNs.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}
