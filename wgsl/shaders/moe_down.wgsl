// moe_down.wgsl: the experts' second half of HybridBackend.MoE, the CPU's
//     for t, d < D: out[t, d] (+)= Σ_s wt[t, s] · Σ_i g[t, s, i]·W[e, d, i]
// over the slots s < top_k whose expert e = idx[t, s] is in this part of
// W (down [E, D, I], row n of W is expert row0 + n, D·I elements, in its
// stored format, unpack.wgsl); the first part writes out, later parts add
// to it, so a split weight needs no atomics. A workgroup computes RPW = 4
// outputs d, TPR = 64 invocations each, slot by slot in order.

#include "common.wgsl"
#include "unpack.wgsl"

struct Params {
    T: u32,
    K: u32,
    D: u32,
    I: u32,
    stride: u32,
    qstride: u32,
    row0: u32,
    rows: u32,
    first: u32,   // 1: out = the sum; 0: out += it
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> wt: array<f32>;
@group(0) @binding(4) var<storage, read> W: array<WWord>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
#ifdef WQ
@group(0) @binding(6) var<storage, read> Q: array<u32>;
#endif

const WG: u32 = 256u;
const TPR: u32 = 64u;
const RPW: u32 = WG / TPR;

var<workgroup> part: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let blocks = (P.D + RPW - 1u) / RPW;
    let wg = wg_index(wid, nwg);
    let t = wg / blocks;
    if (t >= P.T) {
        return;
    }
    let d = (wg % blocks) * RPW + lid / TPR;
    let lane = lid % TPR;
    var acc = 0.0;
    if (d < P.D) {
        for (var s = 0u; s < P.K; s++) {
            let slot = t * P.K + s;
            let e = idx[slot];
            if (e < P.row0 || e >= P.row0 + P.rows) {
                continue;
            }
            let n = e - P.row0;
            var dot = 0.0;
            for (var i = lane; i < P.I; i += TPR) {
                dot += g[slot * P.I + i] * w_get(n, d * P.I + i);
            }
            acc += wt[slot] * dot;
        }
    }
    part[lid] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            part[lid] += part[lid + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && d < P.D) {
        let o = t * P.D + d;
        if (P.first == 1u) {
            out[o] = part[lid];
        } else {
            out[o] = out[o] + part[lid];
        }
    }
}
