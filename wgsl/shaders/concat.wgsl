// concat.wgsl: HybridBackend.Concat, the CPU's
//     for t: out[t] = a[t] ‖ b[t]      (a [T, X], b [T, Y], out [T, X+Y])
// Zamba2's [h ‖ embeddings] input of its shared block. One invocation per
// output element.

#include "common.wgsl"

struct Params {
    T: u32,
    X: u32,
    Y: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    let W = P.X + P.Y;
    if (i >= P.T * W) {
        return;
    }
    let t = i / W;
    let c = i % W;
    if (c < P.X) {
        out[i] = a[t * P.X + c];
    } else {
        out[i] = b[t * P.Y + c - P.X];
    }
}
