// attend.wgsl: HybridBackend.Attend, the CPU's
//     for b, l < L, head h (KV head kh = h / (heads / kv_heads)):
//         over keys j ≤ min(pos + start[b] + l, cap − 1) with mask[b, j] ≠ 0
//         (start[b] 0 without start: each sequence's position):
//             out[b, l, h] = Σ_j softmax_j(scale · q[b, l, h]·k[b, j, kh]) v[b, j, kh]
//         zeros when no key is visible (a padded query)
// causal grouped-query attention over the KV caches k, v ([B, cap,
// kv_heads·head_dim]). One workgroup per (b, l, h) walks the visible keys
// in chunks of WG with an online softmax: each invocation scores one key
// of the chunk (q staged in workgroup memory), the chunk's maximum
// rescales the running sum and accumulators, and each invocation then
// accumulates up to DPI channels of the weighted values. Nothing depends
// on L, so a decoded query gets exactly the values of the same row of a
// prefill. Sums are f32 (the CPU's float64); the difference is rounding.

#include "common.wgsl"
#include "reduce.wgsl"

struct Params {
    B: u32,
    L: u32,
    cap: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    pos: u32,
    scale: f32,
    has_mask: u32,
    has_start: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read> start: array<i32>;

const WG: u32 = 128u;
const DPI: u32 = 4u;          // channels per invocation: head_dim ≤ WG · DPI
const NEG: f32 = -3.0e38;     // below any score: "no key"

var<workgroup> qs: array<f32, 512>; // WG · DPI
var<workgroup> ps: array<f32, WG>;  // the chunk's weights

fn wg_max_f(lid: u32, x: f32) -> f32 {
    red_f[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_f[lid] = max(red_f[lid], red_f[lid + s]);
        }
        workgroupBarrier();
    }
    let r = workgroupUniformLoad(&red_f[0]);
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wg_index(wid, nwg);
    if (g >= P.B * P.L * P.heads) {
        return;
    }
    let h = g % P.heads;
    let l = (g / P.heads) % P.L;
    let b = g / (P.heads * P.L);
    let kh = h / (P.heads / P.kv_heads);
    let Dh = P.head_dim;
    let qo = g * Dh; // [B, L, heads, head_dim]
    for (var d = lid; d < Dh; d += WG) {
        qs[d] = q[qo + d];
    }
    workgroupBarrier();
    var p = P.pos + l;
    if (P.has_start != 0u) {
        p += u32(start[b]);
    }
    let last = min(p, P.cap - 1u);
    let kvrow = P.kv_heads * Dh;
    var m = NEG;
    var z = 0.0;
    var acc = array<f32, DPI>(0.0, 0.0, 0.0, 0.0);
    for (var c0 = 0u; c0 <= last; c0 += WG) {
        let j = c0 + lid;
        var s = NEG;
        if (j <= last && (P.has_mask == 0u || mask[b * P.cap + j] != 0.0)) {
            let ko = (b * P.cap + j) * kvrow + kh * Dh;
            var dot = 0.0;
            for (var d = 0u; d < Dh; d++) {
                dot += qs[d] * k[ko + d];
            }
            s = dot * P.scale;
        }
        let cm = wg_max_f(lid, s);
        if (cm == NEG) {
            continue; // nothing visible in this chunk (uniform)
        }
        let mn = max(m, cm);
        let alpha = exp(m - mn);
        var p = 0.0;
        if (s != NEG) {
            p = exp(s - mn);
        }
        ps[lid] = p;
        z = z * alpha + wg_sum_f(lid, p); // the sum's barriers also publish ps
        let n = min(WG, last + 1u - c0);
        for (var i = 0u; i < DPI; i++) {
            let d = lid + i * WG;
            if (d < Dh) {
                var a = acc[i] * alpha;
                for (var jj = 0u; jj < n; jj++) {
                    let pj = ps[jj];
                    if (pj != 0.0) {
                        a += pj * v[(b * P.cap + c0 + jj) * kvrow + kh * Dh + d];
                    }
                }
                acc[i] = a;
            }
        }
        m = mn;
        workgroupBarrier(); // ps is rewritten by the next chunk
    }
    for (var i = 0u; i < DPI; i++) {
        let d = lid + i * WG;
        if (d < Dh) {
            var o = 0.0;
            if (z > 0.0) {
                o = acc[i] / z;
            }
            out[qo + d] = o;
        }
    }
}
