// mul_cols.wgsl: HybridBackend.MulCols, the CPU's
//     for t, j: x[t, j] *= v[j]
// Falcon-H1's per-part multipliers on in_proj's output (v is the whole
// row's factors, built at load). One invocation per element.

#include "common.wgsl"

struct Params {
    n: u32, // elements of x
    X: u32, // columns
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i < P.n) {
        x[i] = x[i] * v[i % P.X];
    }
}
