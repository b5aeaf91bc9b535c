// add_scaled.wgsl: HybridBackend.AddScaled, the CPU's
//     for i: out[i] += s · x[i]
// a residual branch added with its multiplier. One invocation per element.

#include "common.wgsl"

struct Params {
    n: u32,
    s: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i < P.n) {
        out[i] = out[i] + P.s * x[i];
    }
}
