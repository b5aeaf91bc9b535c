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
//   PASS_OUT     one invocation per (b, t, h, p): y as above.
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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = wg_index(wid, nwg) * WG + lid; // = row · I + h · P + p, the index into y
    if (idx >= P.B * P.L * P.I) {
        return;
    }
    let row = idx / P.I;
    let h = (idx % P.I) / P.P;
    let p = idx % P.P;
    let b = row / P.L;
    let t = row % P.L;
    let c = t / P.Q;
    let t0 = c * P.Q;
    let i = t - t0;
    let bh = b * P.H + h;
    let g = h / P.hpg;
    let ci = cumb[bh * P.L + t];
    // the state entering the chunk, read along C_t
    let co = row * P.CD + P.I + P.GN + g * P.N;
    let so = ((bh * P.nc + c) * P.P + p) * P.N;
    var sdot = 0.0;
    for (var n = 0u; n < P.N; n++) {
        sdot += cs[so + n] * xbc[co + n];
    }
    var acc = exp(ci) * sdot + dskip[h] * xbc[row * P.CD + h * P.P + p];
    // the chunk's own tokens up to t
    let cbo = (((b * P.G + g) * P.nc + c) * P.Q + i) * P.Q;
    for (var j = 0u; j <= i; j++) {
        let tj = t0 + j;
        let w = exp(ci - cumb[bh * P.L + tj]) * cb[cbo + j] * dtb[bh * P.L + tj];
        acc += w * xbc[(b * P.L + tj) * P.CD + h * P.P + p];
    }
    y[idx] = acc;
}
#endif
