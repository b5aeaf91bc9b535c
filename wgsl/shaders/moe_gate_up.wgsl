// moe_gate_up.wgsl: the experts' first half of HybridBackend.MoE, the CPU's
//     for t, slot s < top_k (expert e = idx[t, s]), i < I:
//         g[t, s, i] = act(Σ_d x[t, d]·W[e, i, d]) · Σ_d x[t, d]·W[e, I + i, d]
// W is gate_up [E, 2I, D] (gate rows first) in its stored format
// (unpack.wgsl: row n of W is expert row0 + n, D·2I elements). Experts
// that do not fit one storage binding are split over parts of whole
// experts, one dispatch per part, each computing the slots routed to its
// experts. As matmul.wgsl's MATVEC: a workgroup computes RPW = 4 rows i,
// TPR = 64 invocations share each, then a tree reduction.

#include "common.wgsl"
#include "unpack.wgsl"
#include "act.wgsl"

struct Params {
    T: u32,
    K: u32,       // top_k
    D: u32,
    I: u32,
    stride: u32,  // stored elements per expert
    qstride: u32, // quantized W: parameters per expert (unpack.wgsl)
    row0: u32,    // first expert of this part
    rows: u32,    // experts in this part
    act: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> W: array<WWord>;
@group(0) @binding(4) var<storage, read_write> g: array<f32>;
#ifdef WQ
@group(0) @binding(5) var<storage, read> Q: array<u32>;
#endif

const WG: u32 = 256u;
const TPR: u32 = 64u;
const RPW: u32 = WG / TPR;

var<workgroup> pg: array<f32, WG>;
var<workgroup> pu: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let blocks = (P.I + RPW - 1u) / RPW;
    let wg = wg_index(wid, nwg);
    let slot = wg / blocks; // t · K + s
    if (slot >= P.T * P.K) {
        return;
    }
    let e = idx[slot];
    if (e < P.row0 || e >= P.row0 + P.rows) {
        return; // another part's expert (uniform: one slot per workgroup)
    }
    let n = e - P.row0;
    let i = (wg % blocks) * RPW + lid / TPR;
    let lane = lid % TPR;
    let xo = (slot / P.K) * P.D;
    var sg = 0.0;
    var su = 0.0;
    if (i < P.I) {
        let go = i * P.D;
        let uo = (P.I + i) * P.D;
        for (var d = lane; d < P.D; d += TPR) {
            let xv = x[xo + d];
            sg += xv * w_get(n, go + d);
            su += xv * w_get(n, uo + d);
        }
    }
    pg[lid] = sg;
    pu[lid] = su;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            pg[lid] += pg[lid + s];
            pu[lid] += pu[lid + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && i < P.I) {
        g[slot * P.I + i] = activate(P.act, pg[lid]) * pu[lid];
    }
}
