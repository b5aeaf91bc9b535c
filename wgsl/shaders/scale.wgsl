// scale.wgsl: HybridBackend.Scale, the CPU's
//     for i: x[i] *= s
// the families' scalar multipliers (embedding, logits, attention input).
// One invocation per element.

#include "common.wgsl"

struct Params {
    n: u32,
    s: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i < P.n) {
        x[i] = x[i] * P.s;
    }
}
