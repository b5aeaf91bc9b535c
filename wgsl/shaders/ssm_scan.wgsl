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
//   PASS_CUM     one workgroup per (b, h, chunk): dt = softplus(dt + dt_bias),
//                clamped, and its running sum cum by a workgroup scan; into
//                dtb and cumb [B, H, L].
//   PASS_CB      cb = C_i · B_j (j ≤ i) per (b, g, chunk), shared by the H/G
//                heads of the group: a tiled product (tile.wgsl).
//   PASS_STATES  per (b, h, chunk) the chunk's own contribution to the state
//                at its end, into cs: a tiled product.
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
    gate: u32,    // PASS_OUT: y ·= silu(z), z = proj[t, 0:I]
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

var<workgroup> scan: array<f32, WG>;

// One workgroup per (b, h, chunk): the chunk's tokens 256 at a time, each
// segment an inclusive scan in workgroup memory (log2 256 = 8 steps) added
// to the running total of the segments before it.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wg_index(wid, nwg);
    if (g >= P.B * P.H * P.nc) {
        return;
    }
    let bh = g / P.nc;
    let c = g % P.nc;
    let b = bh / P.H;
    let h = bh % P.H;
    let A = -exp(a_log[h]);
    let db = dt_bias[h];
    let end = chunk_end(c);
    var base = 0.0;
    for (var s0 = c * P.Q; s0 < end; s0 += WG) {
        let t = s0 + lid;
        var v = 0.0;
        if (t < end) {
            let dt = dt_of(proj[(b * P.L + t) * P.PD + P.dtoff + h], db, P.clamp_on, P.lo, P.hi);
            dtb[bh * P.L + t] = dt;
            v = dt * A;
        }
        scan[lid] = v;
        workgroupBarrier();
        for (var off = 1u; off < WG; off = off << 1u) {
            var add = 0.0;
            if (lid >= off) {
                add = scan[lid - off];
            }
            workgroupBarrier();
            scan[lid] += add;
            workgroupBarrier();
        }
        if (t < end) {
            cumb[bh * P.L + t] = base + scan[lid];
        }
        base += scan[WG - 1u];
        workgroupBarrier();
    }
}
#endif

#ifdef PASS_CB
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
@group(0) @binding(2) var<storage, read_write> cb: array<f32>;

#include "tile.wgsl"

// One workgroup per (b, g, chunk, 64 × 64 tile of (i, j)): C_i · B_j as the
// tiled product [Q × N] · [N × Q]; tiles wholly above the diagonal (j > i
// everywhere) are skipped, since only j ≤ i is ever read.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let tiles = (P.Q + TILE - 1u) / TILE;
    var g = wg_index(wid, nwg);
    if (g >= P.B * P.G * P.nc * tiles * tiles) {
        return;
    }
    let jt = g % tiles;
    g /= tiles;
    let it = g % tiles;
    g /= tiles;
    let c = g % P.nc;
    let bg = g / P.nc;
    let grp = bg % P.G;
    let b = bg / P.G;
    let cs0 = c * P.Q;
    let qc = chunk_end(c) - cs0; // tokens in this chunk
    let i0 = it * TILE;
    let j0 = jt * TILE;
    if (j0 > i0 + TILE - 1u || i0 >= qc || j0 >= qc) {
        return;
    }
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<f32, 16>;
    for (var k = 0u; k < 16u; k++) {
        acc[k] = 0.0;
    }
    let cofs = P.I + P.GN + grp * P.N;
    let bofs = P.I + grp * P.N;
    for (var n0 = 0u; n0 < P.N; n0 += TSTEP) {
        for (var e = lid; e < TILE * TSTEP; e += WG) {
            let r = e / TSTEP;
            let n = e % TSTEP;
            var cv = 0.0;
            var bv = 0.0;
            if (n0 + n < P.N) {
                if (i0 + r < qc) {
                    cv = xbc[(b * P.L + cs0 + i0 + r) * P.CD + cofs + n0 + n];
                }
                if (j0 + r < qc) {
                    bv = xbc[(b * P.L + cs0 + j0 + r) * P.CD + bofs + n0 + n];
                }
            }
            tile_set_l(n, r, cv);
            tile_set_r(n, r, bv);
        }
        workgroupBarrier();
        tile_fma(&acc, tx, ty);
        workgroupBarrier();
    }
    let cbo = ((b * P.G + grp) * P.nc + c) * P.Q;
    for (var a = 0u; a < 4u; a++) {
        let i = i0 + tile_row(ty, a);
        for (var k = 0u; k < 4u; k++) {
            let j = j0 + tile_col(tx, k);
            if (i < qc && j <= i) {
                cb[(cbo + i) * P.Q + j] = acc[a * 4u + k];
            }
        }
    }
}
#endif

#ifdef PASS_STATES
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
@group(0) @binding(2) var<storage, read> dtb: array<f32>;
@group(0) @binding(3) var<storage, read> cumb: array<f32>;
@group(0) @binding(4) var<storage, read_write> cs: array<f32>;

#include "tile.wgsl"

// One workgroup per (b, h, chunk, 64 × 64 tile of (p, n)): the chunk's own
// state Σ_t w_t · x_t[p] · B_t[n], w_t = exp(cum_last − cum_t) · dt_t, as the
// tiled product [P × Q] · [Q × N], 16 tokens a step.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let ptiles = (P.P + TILE - 1u) / TILE;
    let ntiles = (P.N + TILE - 1u) / TILE;
    var g = wg_index(wid, nwg);
    if (g >= P.B * P.H * P.nc * ptiles * ntiles) {
        return;
    }
    let nt = g % ntiles;
    g /= ntiles;
    let pt = g % ptiles;
    g /= ptiles;
    let c = g % P.nc;
    let bh = g / P.nc;
    let b = bh / P.H;
    let h = bh % P.H;
    let grp = h / P.hpg;
    let p0 = pt * TILE;
    let n0 = nt * TILE;
    let t1 = chunk_end(c);
    let last = cumb[bh * P.L + t1 - 1u];
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<f32, 16>;
    for (var k = 0u; k < 16u; k++) {
        acc[k] = 0.0;
    }
    for (var s0 = c * P.Q; s0 < t1; s0 += TSTEP) {
        for (var e = lid; e < TILE * TSTEP; e += WG) {
            let k = e / TILE;
            let r = e % TILE;
            let t = s0 + k;
            var xv = 0.0;
            var bv = 0.0;
            if (t < t1) {
                let row = (b * P.L + t) * P.CD;
                if (p0 + r < P.P) {
                    xv = exp(last - cumb[bh * P.L + t]) * dtb[bh * P.L + t] * xbc[row + h * P.P + p0 + r];
                }
                if (n0 + r < P.N) {
                    bv = xbc[row + P.I + grp * P.N + n0 + r];
                }
            }
            tile_set_l(k, r, xv);
            tile_set_r(k, r, bv);
        }
        workgroupBarrier();
        tile_fma(&acc, tx, ty);
        workgroupBarrier();
    }
    let so = (bh * P.nc + c) * P.P;
    for (var a = 0u; a < 4u; a++) {
        let p = p0 + tile_row(ty, a);
        for (var k = 0u; k < 4u; k++) {
            let n = n0 + tile_col(tx, k);
            if (p < P.P && n < P.N) {
                cs[(so + p) * P.N + n] = acc[a * 4u + k];
            }
        }
    }
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
@group(0) @binding(8) var<storage, read> proj: array<f32>;

// For one (b, h, chunk), y is two matrix products over the chunk's Q tokens
// and the head's P channels:
//     y[i, p] = exp(cum_i) · Σ_n C_i[n] · S_in[p, n]        ([Q × N] · [N × P])
//             + Σ_{j ≤ i} M[i, j] · x_j[p]                  ([Q × Q] · [Q × P])
//             + D_h · x_i[p],    M[i, j] = exp(cum_i − cum_j) · (C_i · B_j) · dt_j
// so a workgroup computes a tile of OT tokens × OP channels like a matmul:
// the left factor (C, or M made on the fly, each exp once per workgroup
// rather than once per channel) and the right factor go through workgroup
// memory (tile.wgsl, 64 tokens × 64 channels per workgroup). Steps past the
// tile's last token are skipped (M is lower triangular).
#include "tile.wgsl"

const OT: u32 = TILE;
const OP: u32 = TILE;
const OJ: u32 = TSTEP;

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
            tile_set_l(n, r, v);
        }
        for (var e = lid; e < OP * OJ; e += WG) {
            let q = e / OJ;
            let n = e % OJ;
            var v = 0.0;
            if (p0 + q < P.P && n0 + n < P.N) {
                v = cs[(so + p0 + q) * P.N + n0 + n];
            }
            tile_set_r(n, q, v);
        }
        workgroupBarrier();
        tile_fma(&acc, tx, ty);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let d = exp(cum_row[tile_row(ty, i)]);
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
            tile_set_l(jj, r, v);
        }
        for (var e = lid; e < OP * OJ; e += WG) {
            let jj = e / OP;
            let q = e % OP;
            let j = j0 + jj;
            var v = 0.0;
            if (j < tend && p0 + q < P.P) {
                v = xbc[(b * P.L + j) * P.CD + h * P.P + p0 + q];
            }
            tile_set_r(jj, q, v);
        }
        workgroupBarrier();
        tile_fma(&acc, tx, ty);
        workgroupBarrier();
    }

    let dh = dskip[h];
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + tile_row(ty, i);
        for (var j = 0u; j < 4u; j++) {
            let p = p0 + tile_col(tx, j);
            if (t < tend && p < P.P) {
                let xo = (b * P.L + t) * P.CD + h * P.P + p;
                var v = acc[i * 4u + j] + dh * xbc[xo];
                if (P.gate == 1u) {
                    v *= silu(proj[(b * P.L + t) * P.PD + h * P.P + p]);
                }
                y[(b * P.L + t) * P.I + h * P.P + p] = v;
            }
        }
    }
}
#endif
