// rmsnorm.wgsl: Backend.RMSNorm, the CPU's
//     for t, for each group of gs = D/groups channels:
//         scale = 1 / sqrt(mean(h[t, group]²) + eps)
//         if mask: scale *= mask[t]
//         out[t, i] = h[t, i] · scale · w[i]
// groups = 1 is the layers' pre-norm and the final norm; groups = G the
// grouped norm after the gate. One workgroup per (row, group); the sum of
// squares is reduce.wgsl's wg_sum_f, through subgroups with SUBGROUPS, a
// tree in workgroup memory otherwise (the CPU sums in float64; the
// difference is rounding). MatMul runs it before a prompt's product
// whose input it normalises; decoding folds it into the product
// (matmul.wgsl, NORM).

#include "common.wgsl"
#include "reduce.wgsl"

struct Params {
    T: u32,
    D: u32,
    groups: u32,
    gs: u32,       // channels per group
    eps: f32,
    has_mask: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SUBGROUPS
        @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) sgn: u32,
#endif
        @builtin(local_invocation_index) lid: u32) {
#ifdef SUBGROUPS
    sg_init(sid, sgn);
#endif
    let g = wg_index(wid, nwg);
    let t = g / P.groups;
    if (t >= P.T) {
        return;
    }
    let base = t * P.D + (g % P.groups) * P.gs;
    let c0 = (g % P.groups) * P.gs;
    var ss = 0.0;
    for (var i = lid; i < P.gs; i += WG) {
        let v = h[base + i];
        ss += v * v;
    }
    let total = wg_sum_f(lid, ss);
    var scale = inverseSqrt(total / f32(P.gs) + P.eps);
    if (P.has_mask == 1u) {
        scale *= mask[t];
    }
    for (var i = lid; i < P.gs; i += WG) {
        out[base + i] = h[base + i] * scale * w[c0 + i];
    }
}
