// gated_norm.wgsl: Backend.GatedNorm, the CPU's
//     for t:
//         g[i] = y[t, i] · silu(z[t, i])          (z = proj[t, 0:I], the gate)
//         for each group of gs = I/groups channels:
//             r = 1 / sqrt(mean(g[group]²) + eps)
//             out[t, i] = g[i] · r · w[i]
// groups = G is mamba_ssm's grouped norm, groups = 1 transformers' full one.
// One workgroup per (t, group); g is recomputed in the second pass instead of
// being stored, which costs one more read of y and z and no scratch.

#include "common.wgsl"
#include "reduce.wgsl"

struct Params {
    T: u32,
    I: u32,
    PD: u32,     // row length of proj
    groups: u32,
    gs: u32,     // channels per group
    eps: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> proj: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wg_index(wid, nwg);
    let t = g / P.groups;
    if (t >= P.T) {
        return;
    }
    let c0 = (g % P.groups) * P.gs;
    var ss = 0.0;
    for (var i = lid; i < P.gs; i += WG) {
        let c = c0 + i;
        let v = y[t * P.I + c] * silu(proj[t * P.PD + c]);
        ss += v * v;
    }
    let total = wg_sum_f(lid, ss);
    let r = inverseSqrt(total / f32(P.gs) + P.eps);
    for (var i = lid; i < P.gs; i += WG) {
        let c = c0 + i;
        let v = y[t * P.I + c] * silu(proj[t * P.PD + c]);
        out[t * P.I + c] = v * r * w[c];
    }
}
