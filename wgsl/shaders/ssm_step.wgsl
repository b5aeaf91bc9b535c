// ssm_step.wgsl: Backend.SSM as the recurrence (SPEC §2.1), the CPU's
// head.recurrent:
//     for b, h (group g = h / (H/G)), with S = state[b, h] ([P, N]):
//         for t:
//             dt = softplus(dt_raw[t, h] + dt_bias[h])   (+ clamp when CLAMP)
//             decay = exp(dt · A_h),  A_h = -exp(A_log[h])
//             for p, n: S[p, n] = decay · S[p, n] + dt · x[t, h, p] · B[t, g, n]
//             y[t, h, p] = Σ_n S[p, n] · C[t, g, n] + D[h] · x[t, h, p]
//     state[b, h] = S
//     if gate: y[t, h, p] *= silu(z[t, h·P + p])   (z = proj[t, 0:I])
// It is used for single decoded tokens (args.Chunked false) and, with the
// clamp, as the sequential fallback for prompts when the chunked passes are
// turned off.
//
// Grid: one workgroup per (b, h, block of RPW = 8 rows p). The workgroup is
// RPW × LANES (32) invocations; invocation (p, lane) keeps S[p, n] for
// n = lane, lane + 32, … in registers for the whole sequence (NPL = ceil(N/32)
// of them), and y is a tree reduction over the 32 lanes of a row.

#include "common.wgsl"
#include "ssm_common.wgsl"

struct Params {
    B: u32,
    L: u32,
    H: u32,
    P: u32,
    N: u32,
    hpg: u32,     // heads per group, H / G
    I: u32,
    GN: u32,      // G · N: offset of C after B in xBC
    CD: u32,      // row length of xbc
    PD: u32,      // row length of proj
    dtoff: u32,   // dt column of proj: I + CD
    clamp_on: u32,
    lo: f32,
    hi: f32,
    gate: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
@group(0) @binding(2) var<storage, read> proj: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read> dt_bias: array<f32>;
@group(0) @binding(5) var<storage, read> a_log: array<f32>;
@group(0) @binding(6) var<storage, read> dskip: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
const LANES: u32 = 32u;
const RPW: u32 = WG / LANES;

var<workgroup> part: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let pblocks = (P.P + RPW - 1u) / RPW;
    let g = wg_index(wid, nwg);
    let bh = g / pblocks;
    if (bh >= P.B * P.H) {
        return;
    }
    let b = bh / P.H;
    let h = bh % P.H;
    let grp = h / P.hpg;
    let p = (g % pblocks) * RPW + lid / LANES;
    let lane = lid % LANES;
    let live = p < P.P;

    let sbase = (bh * P.P + p) * P.N;
    var S: array<f32, NPL>;
    for (var m = 0u; m < NPL; m++) {
        let n = lane + m * LANES;
        S[m] = 0.0;
        if (live && n < P.N) {
            S[m] = state[sbase + n];
        }
    }
    let A = -exp(a_log[h]);
    let db = dt_bias[h];
    let dh = dskip[h];
    for (var t = 0u; t < P.L; t++) {
        let row = b * P.L + t;
        let dt = dt_of(proj[row * P.PD + P.dtoff + h], db, P.clamp_on, P.lo, P.hi);
        let decay = exp(dt * A);
        let xo = row * P.CD;
        var xp = 0.0;
        if (live) {
            xp = xbc[xo + h * P.P + p];
        }
        let dx = dt * xp;
        let bo = xo + P.I + grp * P.N;
        let co = bo + P.GN;
        var acc = 0.0;
        for (var m = 0u; m < NPL; m++) {
            let n = lane + m * LANES;
            if (n < P.N) {
                let s = decay * S[m] + dx * xbc[bo + n];
                S[m] = s;
                acc += s * xbc[co + n];
            }
        }
        part[lid] = acc;
        workgroupBarrier();
        for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
            if (lane < s) {
                part[lid] += part[lid + s];
            }
            workgroupBarrier();
        }
        if (live && lane == 0u) {
            var v = part[lid] + dh * xp;
            if (P.gate == 1u) {
                v *= silu(proj[row * P.PD + h * P.P + p]);
            }
            y[row * P.I + h * P.P + p] = v;
        }
        workgroupBarrier();
    }
    if (live) {
        for (var m = 0u; m < NPL; m++) {
            let n = lane + m * LANES;
            if (n < P.N) {
                state[sbase + n] = S[m];
            }
        }
    }
}
