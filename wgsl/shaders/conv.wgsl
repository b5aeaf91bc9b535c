// conv.wgsl: Backend.Conv, the CPU's
//     for b, channel c:
//         in = state[b, :, c] (K-1 values) ++ proj[b, :, I + c] (L values)
//         for t: out[b, t, c] = silu(bias[c] + Σ_k w[c, k] · in[t + k]) · mask[b, t]
//         state[b, :, c] = in[L : L + K-1]
// KC (the conv width) is a define, so windows are fixed-size arrays. Three
// variants:
//   (default) one invocation owns one (b, c) for the whole sequence, keeping
//             the last K inputs in registers: it reads its state column
//             before writing it and no other invocation touches that
//             column, so the update cannot race with the reads. Used for
//             decoding and for prompts shorter than K-1.
//   PROMPT    one invocation per (b, t, c), all in parallel; reads the state
//             but leaves it alone, because other invocations still read it.
//   SHIFT     dispatched after PROMPT (dispatches are ordered): the new state
//             is the last K-1 inputs, all from proj when L ≥ K-1.

#include "common.wgsl"
#include "unpack.wgsl"

struct Params {
    B: u32,
    L: u32,
    C: u32,        // conv channels, I + 2GN
    PD: u32,       // row length of proj
    xoff: u32,     // first xBC column of proj (I)
    stride: u32,   // stored elements per row of W (unpack.wgsl)
    has_bias: u32,
    has_mask: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> proj: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read> W: array<WWord>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

#ifdef PROMPT
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i >= P.B * P.L * P.C) {
        return;
    }
    let c = i % P.C;
    let row = i / P.C; // b · L + t
    let b = row / P.L;
    let t = row % P.L;
    var s = 0.0;
    if (P.has_bias == 1u) {
        s = bias[c];
    }
    // in[t + k]: the state for t + k < K-1, else proj row t + k - (K-1).
    for (var k = 0u; k < KC; k++) {
        let ik = t + k;
        var v: f32;
        if (ik + 1u < KC) {
            v = state[(b * (KC - 1u) + ik) * P.C + c];
        } else {
            v = proj[(row + k + 1u - KC) * P.PD + P.xoff + c];
        }
        s += w_get(c, k) * v;
    }
    s = silu(s);
    if (P.has_mask == 1u) {
        s *= mask[row];
    }
    out[row * P.C + c] = s;
}
#else
#ifdef SHIFT
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i >= P.B * (KC - 1u) * P.C) {
        return;
    }
    let c = i % P.C;
    let bk = i / P.C; // b · (K-1) + k
    let b = bk / (KC - 1u);
    let k = bk % (KC - 1u);
    state[i] = proj[(b * P.L + P.L + 1u + k - KC) * P.PD + P.xoff + c];
}
#else
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i >= P.B * P.C) {
        return;
    }
    let b = i / P.C;
    let c = i % P.C;
    var win: array<f32, KC>; // win[k] = in[t + k]
    for (var k = 0u; k + 1u < KC; k++) {
        win[k] = state[(b * (KC - 1u) + k) * P.C + c];
    }
    var wk: array<f32, KC>;
    for (var k = 0u; k < KC; k++) {
        wk[k] = w_get(c, k);
    }
    var b0 = 0.0;
    if (P.has_bias == 1u) {
        b0 = bias[c];
    }
    for (var t = 0u; t < P.L; t++) {
        let row = b * P.L + t;
        win[KC - 1u] = proj[row * P.PD + P.xoff + c];
        var s = b0;
        for (var k = 0u; k < KC; k++) {
            s += wk[k] * win[k];
        }
        s = silu(s);
        if (P.has_mask == 1u) {
            s *= mask[row];
        }
        out[row * P.C + c] = s;
        for (var k = 0u; k + 1u < KC; k++) {
            win[k] = win[k + 1u];
        }
    }
    for (var k = 0u; k + 1u < KC; k++) {
        state[(b * (KC - 1u) + k) * P.C + c] = win[k];
    }
}
#endif
#endif
