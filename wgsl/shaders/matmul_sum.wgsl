// matmul_sum.wgsl: the second pass of a MatMul whose k was split
// (matmul.wgsl): out[t, col0 + n] = Σ_s part[s, t, col0 + n] (+ bias), the
// partial products laid out like out, pstride floats apart. One invocation
// per output element; the sum runs in split order, so it is deterministic.
// With add, the sum is added to out (MatMul's Product.Add).

#include "common.wgsl"

struct Params {
    T: u32,
    N: u32,        // columns of out
    splits: u32,
    pstride: u32,
    has_bias: u32,
    add: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i >= P.T * P.N) {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < P.splits; s++) {
        v += part[s * P.pstride + i];
    }
    if (P.has_bias == 1u) {
        v += bias[i % P.N];
    }
    if (P.add == 1u) {
        v += out[i];
    }
    out[i] = v;
}
