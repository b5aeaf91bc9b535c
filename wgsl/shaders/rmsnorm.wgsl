// rmsnorm.wgsl: Backend.RMSNorm, the CPU's
//     for t:
//         if delta: h[t, :] += delta[t, :]          (the residual stream)
//         scale = 1 / sqrt(mean(h[t, :]²) + eps)
//         if mask: scale *= mask[t]
//         out[t, i] = h[t, i] · scale · w[i]
// fused in one pass over the row. One workgroup per row; the sum of squares
// is a tree reduction in workgroup memory (the CPU sums in float64; the
// difference is rounding).

#include "common.wgsl"
#include "reduce.wgsl"

struct Params {
    T: u32,
    D: u32,
    eps: f32,
    has_delta: u32,
    has_mask: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> h: array<f32>;
@group(0) @binding(2) var<storage, read> delta: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = wg_index(wid, nwg);
    if (t >= P.T) {
        return;
    }
    let base = t * P.D;
    var ss = 0.0;
    for (var i = lid; i < P.D; i += WG) {
        var v = h[base + i];
        if (P.has_delta == 1u) {
            v += delta[base + i];
            h[base + i] = v; // only this invocation touches element i
        }
        ss += v * v;
    }
    let total = wg_sum_f(lid, ss);
    var scale = inverseSqrt(total / f32(P.D) + P.eps);
    if (P.has_mask == 1u) {
        scale *= mask[t];
    }
    for (var i = lid; i < P.D; i += WG) {
        out[base + i] = h[base + i] * scale * w[i];
    }
}
