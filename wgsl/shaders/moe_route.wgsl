// moe_route.wgsl: the routing step of HybridBackend.MoE, the CPU's
//     for t: top = the top_k experts by logits[t, :] (ties to the lower index)
//            w[t, i] = softmax over the top_k logits, in that order
// writing the chosen experts to idx[t, i] and their weights to wt[t, i]
// for moe_gate_up.wgsl and moe_down.wgsl. The logits are the router's
// product (matmul.wgsl). Each pick is the largest logit ordered strictly
// below the previous pick (a larger logit, or an equal one at a lower
// index, comes first), so no per-expert marks are needed. NaN logits are
// never picked unless nothing else is left. One invocation per token.

#include "common.wgsl"

struct Params {
    T: u32,
    E: u32,
    top_k: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> wt: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = wg_index(wid, nwg) * WG + lid;
    if (t >= P.T) {
        return;
    }
    let lo = t * P.E;
    var pv = 0.0;
    var pe = 0u;
    var first = 0.0;
    var z = 0.0;
    for (var i = 0u; i < P.top_k; i++) {
        var best = 0u;
        var bv = 0.0;
        var found = false;
        for (var e = 0u; e < P.E; e++) {
            let x = logits[lo + e];
            if (is_nan(x)) {
                continue;
            }
            // below the previous pick in the order
            if (i > 0u && !(x < pv || (x == pv && e > pe))) {
                continue;
            }
            if (!found || x > bv) {
                best = e;
                bv = x;
                found = true;
            }
        }
        if (!found) { // only NaNs left: take the lowest expert not yet picked
            best = min(i, P.E - 1u);
            bv = logits[lo + best];
        }
        if (i == 0u) {
            first = bv;
        }
        idx[t * P.top_k + i] = best;
        let e = exp(bv - first);
        wt[t * P.top_k + i] = e;
        z += e;
        pv = bv;
        pe = best;
    }
    for (var i = 0u; i < P.top_k; i++) {
        wt[t * P.top_k + i] = wt[t * P.top_k + i] / z;
    }
}
