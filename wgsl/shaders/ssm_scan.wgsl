// ssm_scan.wgsl: Backend.SSM for prompts, the chunked SSD form of SPEC §2.1
// (the CPU's head.chunked). Per sequence b and head h (group g = h / (H/G)),
// tokens are cut into chunks of Q; with the chunk's running log-decay
//     cum_i = Σ_{j ≤ i in the chunk} dt_j · A_h
// the result equals the recurrence of ssm_step.wgsl up to rounding:
//     y_i = exp(cum_i) · (S_in · C_i)                                 (state entering the chunk)
//         + Σ_{j ≤ i} exp(cum_i − cum_j) · (C_i · B_j) · dt_j · x_j    (within the chunk)
//         + D_h · x_i
//     S_out = exp(cum_last) · S_in + Σ_j exp(cum_last − cum_j) · dt_j · x_j ⊗ B_j
// Five passes, one define each, all in one submission (the dispatches are
// ordered, so each pass sees the previous one's writes):
//   PASS_CUM     one invocation per (b, h, chunk): dt = softplus(dt + dt_bias),
//                clamped, and the running sum cum; into dtb and cumb [B, H, L].
//   PASS_CB      one invocation per (b, g, chunk, i, j ≤ i): cb = C_i · B_j,
//                shared by the H/G heads of the group.
//   PASS_STATES  one invocation per (b, h, chunk, p, n): the chunk's own
//                contribution to the state at its end, into cs.
//   PASS_CARRY   one invocation per (b, h, p, n), sequential over chunks: the
//                state entering each chunk replaces cs[chunk], and the final
//                state is written back (it is what decoding continues from).
//   PASS_OUT     one workgroup per (b, h, chunk, 64 tokens, 64 channels): y as
//                above, as two tiled matrix products (see the pass).
// Only PASS_CARRY is sequential, and only over L/Q chunks, not L tokens.

#include "common.wgsl"
#include "ssm_common.wgsl"

struct Params {
    B: u32,
    L: u32,
    H: u32,
    P: u32,
    N: u32,
    hpg: u32,     // heads per group
    I: u32,
    GN: u32,      // G · N
    CD: u32,      // row length of xbc
    PD: u32,      // row length of proj
    dtoff: u32,   // dt column of proj
    clamp_on: u32,
    lo: f32,
    hi: f32,
    Q: u32,       // chunk length (at most L)
    nc: u32,      // chunks, ceil(L / Q)
    G: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

const WG: u32 = 256u;

fn chunk_end(c: u32) -> u32 {
    return min((c + 1u) * P.Q, P.L);
}

#ifdef PASS_CUM
@group(0) @binding(1) var<storage, read> proj: array<f32>;
@group(0) @binding(2) var<storage, read> dt_bias: array<f32>;
@group(0) @binding(3) var<storage, read> a_log: array<f32>;
@group(0) @binding(4) var<storage, read_write> dtb: array<f32>;
@group(0) @binding(5) var<storage, read_write> cumb: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wid, nwg) * WG + lid;
    if (idx >= P.B * P.H * P.nc) {
        return;
    }
    let bh = idx / P.nc;
    let c = idx % P.nc;
    let b = bh / P.H;
    let h = bh % P.H;
    let A = -exp(a_log[h]);
    let db = dt_bias[h];
    var acc = 0.0;
    for (var t = c * P.Q; t < chunk_end(c); t++) {
        let dt = dt_of(proj[(b * P.L + t) * P.PD + P.dtoff + h], db, P.clamp_on, P.lo, P.hi);
        acc += dt * A;
        dtb[bh * P.L + t] = dt;
        cumb[bh * P.L + t] = acc;
    }
}
#endif

#ifdef PASS_CB
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
@group(0) @binding(2) var<storage, read_write> cb: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wid, nwg) * WG + lid;
    let QQ = P.Q * P.Q;
    if (idx >= P.B * P.G * P.nc * QQ) {
        return;
    }
    let i = (idx % QQ) / P.Q;
    let j = idx % P.Q;
    let bgc = idx / QQ;
    let c = bgc % P.nc;
    let bg = bgc / P.nc;
    let g = bg % P.G;
    let b = bg / P.G;
    let ti = c * P.Q + i;
    let tj = c * P.Q + j;
    if (j > i || ti >= P.L) {
        return;
    }
    let co = (b * P.L + ti) * P.CD + P.I + P.GN + g * P.N;
    let bo = (b * P.L + tj) * P.CD + P.I + g * P.N;
    var s = 0.0;
    for (var n = 0u; n < P.N; n++) {
        s += xbc[co + n] * xbc[bo + n];
    }
    cb[idx] = s;
}
#endif

#ifdef PASS_STATES
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
@group(0) @binding(2) var<storage, read> dtb: array<f32>;
@group(0) @binding(3) var<storage, read> cumb: array<f32>;
@group(0) @binding(4) var<storage, read_write> cs: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wid, nwg) * WG + lid;
    let PN = P.P * P.N;
    if (idx >= P.B * P.H * P.nc * PN) {
        return;
    }
    let p = (idx % PN) / P.N;
    let n = idx % P.N;
    let bhc = idx / PN;
    let c = bhc % P.nc;
    let bh = bhc / P.nc;
    let b = bh / P.H;
    let h = bh % P.H;
    let g = h / P.hpg;
    let t1 = chunk_end(c);
    let last = cumb[bh * P.L + t1 - 1u];
    var s = 0.0;
    for (var t = c * P.Q; t < t1; t++) {
        let row = (b * P.L + t) * P.CD;
        let w = exp(last - cumb[bh * P.L + t]) * dtb[bh * P.L + t];
        s += w * xbc[row + h * P.P + p] * xbc[row + P.I + g * P.N + n];
    }
    cs[idx] = s;
}
#endif

#ifdef PASS_CARRY
@group(0) @binding(1) var<storage, read> cumb: array<f32>;
@group(0) @binding(2) var<storage, read_write> cs: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wid, nwg) * WG + lid;
    let PN = P.P * P.N;
    if (idx >= P.B * P.H * PN) {
        return;
    }
    let bh = idx / PN;
    let pn = idx % PN;
    var S = state[idx];
    for (var c = 0u; c < P.nc; c++) {
        let k = (bh * P.nc + c) * PN + pn;
        let own = cs[k];
        cs[k] = S;
        S = exp(cumb[bh * P.L + chunk_end(c) - 1u]) * S + own;
    }
    state[idx] = S;
}
#endif

#ifdef PASS_OUT
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
@group(0) @binding(2) var<storage, read> cb: array<f32>;
@group(0) @binding(3) var<storage, read> dtb: array<f32>;
@group(0) @binding(4) var<storage, read> cumb: array<f32>;
@group(0) @binding(5) var<storage, read> cs: array<f32>;
@group(0) @binding(6) var<storage, read> dskip: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

// For one (b, h, chunk), y is two matrix products over the chunk's Q tokens
// and the head's P channels:
//     y[i, p] = exp(cum_i) · Σ_n C_i[n] · S_in[p, n]        ([Q × N] · [N × P])
//             + Σ_{j ≤ i} M[i, j] · x_j[p]                  ([Q × Q] · [Q × P])
//             + D_h · x_i[p],    M[i, j] = exp(cum_i − cum_j) · (C_i · B_j) · dt_j
// so a workgroup computes a tile of OT tokens × OP channels like a matmul:
// the left factor (C, or M made on the fly, each exp once per workgroup
// rather than once per channel) and the right factor go through workgroup
// memory in steps of OJ; each invocation accumulates 4 tokens × 4 channels,
// ty + 16a and tx + 16b. Steps past the tile's last token are skipped (M is
// lower triangular).
const OT: u32 = 64u;
const OP: u32 = 64u;
const OJ: u32 = 16u;
const LS: u32 = OT + 1u; // padded rows of the tiles
const RS: u32 = OP + 1u;
const LT: u32 = OJ * LS;
const RT: u32 = OJ * RS;

var<workgroup> left: array<f32, LT>;  // [OJ][LS]: the left factor, step-major
var<workgroup> right: array<f32, RT>; // [OJ][RS]: the right factor
var<workgroup> cum_row: array<f32, OT>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let ptiles = (P.P + OP - 1u) / OP;
    let ttiles = (P.Q + OT - 1u) / OT;
    var g = wg_index(wid, nwg);
    if (g >= P.B * P.H * P.nc * ttiles * ptiles) {
        return;
    }
    let pt = g % ptiles;
    g /= ptiles;
    let tt = g % ttiles;
    g /= ttiles;
    let c = g % P.nc;
    let bh = g / P.nc;
    let b = bh / P.H;
    let h = bh % P.H;
    let grp = h / P.hpg;
    let cs0 = c * P.Q;        // first token of the chunk
    let ce = chunk_end(c);    // one past its last
    let t0 = cs0 + tt * OT;   // first token of the tile
    if (t0 >= ce) {
        return;               // a short last chunk: uniform across the workgroup
    }
    let tend = min(t0 + OT, ce);
    let p0 = pt * OP;
    let tx = lid % 16u;
    let ty = lid / 16u;

    if (lid < OT) {
        var v = 0.0;
        if (t0 + lid < tend) {
            v = cumb[bh * P.L + t0 + lid];
        }
        cum_row[lid] = v;
    }

    // exp(cum_i) · C_i · S_in, over n in steps of OJ.
    var acc: array<f32, 16>;
    for (var k = 0u; k < 16u; k++) {
        acc[k] = 0.0;
    }
    let so = (bh * P.nc + c) * P.P;
    for (var n0 = 0u; n0 < P.N; n0 += OJ) {
        for (var e = lid; e < OT * OJ; e += WG) {
            let r = e / OJ;
            let n = e % OJ;
            var v = 0.0;
            if (t0 + r < tend && n0 + n < P.N) {
                v = xbc[(b * P.L + t0 + r) * P.CD + P.I + P.GN + grp * P.N + n0 + n];
            }
            left[n * LS + r] = v;
        }
        for (var e = lid; e < OP * OJ; e += WG) {
            let q = e / OJ;
            let n = e % OJ;
            var v = 0.0;
            if (p0 + q < P.P && n0 + n < P.N) {
                v = cs[(so + p0 + q) * P.N + n0 + n];
            }
            right[n * RS + q] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < OJ; k++) {
            for (var i = 0u; i < 4u; i++) {
                let l = left[k * LS + ty + 16u * i];
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(l, right[k * RS + tx + 16u * j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let d = exp(cum_row[ty + 16u * i]);
        for (var j = 0u; j < 4u; j++) {
            acc[i * 4u + j] *= d;
        }
    }

    // Σ_{j ≤ i} M[i, j] · x_j, over the chunk's tokens up to the tile's last.
    let cbo = ((b * P.G + grp) * P.nc + c) * P.Q;
    for (var j0 = cs0; j0 < tend; j0 += OJ) {
        for (var e = lid; e < OT * OJ; e += WG) {
            let r = e / OJ;
            let jj = e % OJ;
            let t = t0 + r;
            let j = j0 + jj;
            var v = 0.0;
            if (t < tend && j <= t) {
                v = exp(cum_row[r] - cumb[bh * P.L + j]) * cb[(cbo + t - cs0) * P.Q + j - cs0] * dtb[bh * P.L + j];
            }
            left[jj * LS + r] = v;
        }
        for (var e = lid; e < OP * OJ; e += WG) {
            let jj = e / OP;
            let q = e % OP;
            let j = j0 + jj;
            var v = 0.0;
            if (j < tend && p0 + q < P.P) {
                v = xbc[(b * P.L + j) * P.CD + h * P.P + p0 + q];
            }
            right[jj * RS + q] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < OJ; k++) {
            for (var i = 0u; i < 4u; i++) {
                let l = left[k * LS + ty + 16u * i];
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(l, right[k * RS + tx + 16u * j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }

    let dh = dskip[h];
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + ty + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let p = p0 + tx + 16u * j;
            if (t < tend && p < P.P) {
                let xo = (b * P.L + t) * P.CD + h * P.P + p;
                y[(b * P.L + t) * P.I + h * P.P + p] = acc[i * 4u + j] + dh * xbc[xo];
            }
        }
    }
}
#endif
