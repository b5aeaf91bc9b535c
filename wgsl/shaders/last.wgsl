// last.wgsl: Backend.Last, the CPU's
//     for b: out[b, :] = x[b, L-1, :]
// One invocation per output element.

#include "common.wgsl"

struct Params {
    B: u32,
    L: u32,
    X: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i >= P.B * P.X) {
        return;
    }
    let b = i / P.X;
    let c = i % P.X;
    out[i] = x[((b + 1u) * P.L - 1u) * P.X + c];
}
