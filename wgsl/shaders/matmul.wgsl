// matmul.wgsl: Backend.MatMul, the CPU's
//     for t, n: out[t, n] (+)= Σ_k x'[t, k] · w[n, k]  (+ bias[n])
// x times W transposed, W in checkpoint layout [N, K]; with add the product
// is added to out (the residual stream). x' is x, or, with has_norm in the
// MATVEC variant, rmsnorm.wgsl's norm of x computed in the kernel: every
// workgroup first sums the squares of its tokens' rows (per group of gs
// channels) and then scales x by them and by the norm weight as it goes,
// so a decoded token's norm and product are one dispatch. (Prompts run
// rmsnorm.wgsl into scratch first; their products dwarf it.) A weight split by rows
// into several buffers is one dispatch per part: the part's rows are output
// columns [col0, col0 + N) of an output row of ldo columns.
//
// Two variants, chosen by define:
//   MATVEC  up to TB = 4 tokens (decoding): a workgroup computes RPW = WG /
//           TPR output columns; TPR (64) invocations share each row of W, each
//           summing a strided slice of k in vectors of WV (a pair of f32,
//           f16 or bf16; one u32 word of int8 or int4, unpack.wgsl), then
//           a tree reduction in workgroup memory. Each weight word is read
//           once per TB tokens. With SUBGROUPS (and MATVEC) the column's
//           reduction, and the norm's, is subgroup shuffles and one barrier
//           instead of a tree of log2(TPR) barriers (virtual_lid says how).
//   (else)  prompts: the 64 × 64 tiled product of tile.wgsl (64 tokens ×
//           64 columns per workgroup). When that makes too few workgroups
//           to fill the GPU (a short prompt, few output columns), k is
//           split into ranges of kper, each workgroup writes its partial
//           product to its own slice of out (pstride apart), and
//           matmul_sum.wgsl adds them up. A 128 × 128 tile with 8 × 8 outputs
//           per invocation measured no faster on an H200: for the out_proj
//           of small models it leaves most of the GPU idle.
// Sums are in f32 in a different order than the CPU's; the difference is
// rounding. Measured on an H200 and not kept: staging x (normalised once)
// in workgroup memory in chunks, with 8 tokens per pass, was 1.5-2× slower
// at batch 1 (a barrier per chunk for a few words per lane) and slower at
// batch 8 than the tiled kernel.

#include "common.wgsl"
#include "unpack.wgsl"

struct Params {
    T: u32,        // tokens (rows of x and out)
    N: u32,        // rows of this part of W = output columns it produces
    K: u32,
    stride: u32,   // elements per row of W
    ldo: u32,      // columns of out
    col0: u32,     // first output column of this part
    has_bias: u32,
    kper: u32,     // tiled: k per split (K when not split)
    pstride: u32,  // tiled, split: floats between the partial products
    qstride: u32,  // quantized W: parameters per row of Q (unpack.wgsl)
    add: u32,      // out += the product
    has_norm: u32, // MATVEC: x' = rmsnorm(x) · nw (· mask)
    groups: u32,   // with has_norm: groups per row (gs = K / groups, a multiple of WV when groups > 1)
    gs: u32,
    eps: f32,
    has_mask: u32,
#ifdef CONV
    C: u32,        // conv channels: output columns [xoff, xoff + C) are xBC
    xoff: u32,
    nw_off: u32,   // where vec holds the norm weight, the bias, the conv
    b_off: u32,    // weight ([C, KC]) and the conv bias
    cw_off: u32,
    cb_off: u32,
    has_cbias: u32,
    conv_mask: u32, // the conv's output is multiplied by mask[t]
#endif
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<WWord>;
#ifdef CONV
// CONV (with MATVEC, tokens of one position each): the causal conv of a
// decoded token in the epilogue, Backend.Conv's default variant for the
// one column an invocation has just written. WebGPU guarantees 8 storage
// bindings, so the norm weight, the bias and the conv's weight and bias
// come packed in one f32 buffer (convPack).
@group(0) @binding(3) var<storage, read> vec: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> cstate: array<f32>;
@group(0) @binding(7) var<storage, read_write> xbc: array<f32>;
#ifdef WQ
@group(0) @binding(8) var<storage, read> Q: array<u32>;
#endif

fn norm_w(k: u32) -> f32 { return vec[P.nw_off + k]; }
fn bias_at(n: u32) -> f32 { return vec[P.b_off + n]; }

// conv_step is conv.wgsl's decode step for channel c of sequence t, whose
// new input v (its xBC column of proj) this invocation just wrote.
fn conv_step(t: u32, c: u32, v: f32) {
    var s = 0.0;
    if (P.has_cbias == 1u) {
        s = vec[P.cb_off + c];
    }
    let w0 = P.cw_off + c * KC;
    let s0 = t * (KC - 1u) * P.C + c;
    for (var k = 0u; k + 1u < KC; k++) {
        let old = cstate[s0 + k * P.C];
        s += vec[w0 + k] * old;
        var next = v;
        if (k + 2u < KC) {
            next = cstate[s0 + (k + 1u) * P.C];
        }
        cstate[s0 + k * P.C] = next;
    }
    s = silu(s + vec[w0 + KC - 1u] * v);
    if (P.conv_mask == 1u) {
        s *= mask[t];
    }
    xbc[t * P.C + c] = s;
}
#else
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> nw: array<f32>;
@group(0) @binding(6) var<storage, read> mask: array<f32>;
#ifdef WQ
@group(0) @binding(7) var<storage, read> Q: array<u32>;
#endif

fn norm_w(k: u32) -> f32 { return nw[k]; }
fn bias_at(n: u32) -> f32 { return bias[n]; }
#endif

const WG: u32 = 256u;

#ifdef MATVEC
// TPR, the invocations per output column (8 to 64; Options.MatvecLanes),
// is a define.
const RPW: u32 = WG / TPR;   // output columns per workgroup
const TB: u32 = 4u;          // tokens per workgroup

var<workgroup> part: array<f32, 1024>; // TB × WG partial sums
var<workgroup> inv: array<f32, WG>;    // has_norm: 1/rms of (token j, group) at j · groups + group

#ifdef SUBGROUPS
var<workgroup> sg_count: atomic<u32>; // subgroups numbered so far

// virtual_lid numbers the invocations so that each subgroup holds
// consecutive numbers: the subgroup's place in the order its first
// invocation reached sg_count, times the subgroup size, plus the
// invocation's subgroup_invocation_id. Output columns and norm segments are
// assigned by these numbers instead of local_invocation_index, so an
// aligned block of min(TPR, subgroup size) numbers lies in one subgroup
// whatever the implementation's mapping of invocations to subgroups. What
// a number computes does not depend on which subgroup holds it, so the
// results do not depend on the order either. Full subgroups (WG is a
// multiple of every subgroup size WebGPU allows) make the numbers 0..WG-1.
fn virtual_lid(sid: u32, sgn: u32) -> u32 {
    var first = 0u;
    if (sid == 0u) {
        first = atomicAdd(&sg_count, 1u);
    }
    return subgroupBroadcast(first, 0u) * sgn + sid;
}

// block_sum adds v over the aligned block of bs numbers (a power of two up
// to the subgroup size) holding this invocation: a butterfly of
// subgroupShuffleXor, which leaves the sum in every invocation of the
// block. bs must be uniform. block_sum4 does it for TB sums at once.
fn block_sum(v: f32, bs: u32) -> f32 {
    var r = v;
    for (var m = 1u; m < bs; m = m << 1u) {
        r += subgroupShuffleXor(r, m);
    }
    return r;
}

fn block_sum4(v: vec4<f32>, bs: u32) -> vec4<f32> {
    var r = v;
    for (var m = 1u; m < bs; m = m << 1u) {
        r += subgroupShuffleXor(r, m);
    }
    return r;
}
#endif

// norm_scales fills inv for the tn tokens from t0: the (token, group)
// pairs are spread over segments of S invocations, each summing its pair's
// squares, then a reduction within each segment: with SUBGROUPS, block_sum
// within each subgroup's part of the segment (sgn is the subgroup size,
// unused otherwise) and the segment's first invocation adds the S / bs
// block sums; else a tree. Uniform control flow.
fn norm_scales(t0: u32, tn: u32, lid: u32, sgn: u32) {
    let pairs = tn * P.groups;
    var S = WG;
    while (S > 1u && S * pairs > WG) {
        S = S >> 1u;
    }
#ifdef SUBGROUPS
    let bs = min(S, sgn);
#endif
    for (var base = 0u; base < pairs; base += WG / S) {
        let pi = base + lid / S;
        let li = lid % S;
        var ss = 0.0;
        if (pi < pairs) {
            let xo = (t0 + pi / P.groups) * P.K + (pi % P.groups) * P.gs;
            for (var k = li; k < P.gs; k += S) {
                let v = x[xo + k];
                ss += v * v;
            }
        }
#ifdef SUBGROUPS
        let bsum = block_sum(ss, bs);
        if (lid % bs == 0u) {
            part[lid / bs] = bsum;
        }
        workgroupBarrier();
        if (li == 0u && pi < pairs) {
            var total = 0.0;
            for (var i = 0u; i < S / bs; i++) {
                total += part[lid / bs + i];
            }
#else
        part[lid] = ss;
        workgroupBarrier();
        for (var s = S / 2u; s > 0u; s = s >> 1u) {
            if (li < s) {
                part[lid] += part[lid + s];
            }
            workgroupBarrier();
        }
        if (li == 0u && pi < pairs) {
            let total = part[lid];
#endif
            var r = inverseSqrt(total / f32(P.gs) + P.eps);
            if (P.has_mask == 1u) {
                r *= mask[t0 + pi / P.groups];
            }
            inv[pi] = r;
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SUBGROUPS
        @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) sgn: u32,
#endif
        @builtin(local_invocation_index) lid_in: u32) {
#ifdef SUBGROUPS
    let lid = virtual_lid(sid, sgn);
#else
    let lid = lid_in;
    let sgn = 0u; // norm_scales' unused argument
#endif
    let col_groups = (P.N + RPW - 1u) / RPW;
    let g = wg_index(wid, nwg);
    let t0 = (g / col_groups) * TB;
    if (t0 >= P.T) {
        return;
    }
    let n = (g % col_groups) * RPW + lid / TPR;
    let lane = lid % TPR;
    let tn = min(TB, P.T - t0); // tokens of this workgroup: the reduction skips the others
    let normed = P.has_norm == 1u;
    if (normed) {
        norm_scales(t0, tn, lid, sgn);
    }
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    if (n < P.N) {
        // Whole vectors of WV elements (a word of a packed format), then
        // the last K % WV elements one by one. With the norm, the weights
        // take the norm weight (once for all tokens) and each token's sum
        // its group's scale (a vector never straddles two groups).
        let KV = P.K - P.K % WV;
        var grp = 0u;       // the norm group of k, followed as k grows:
        var gend = P.gs;    // no division per vector
        for (var k = lane * WV; k < KV; k += TPR * WV) {
            var wv = w_getv(n, k);
            if (normed) {
                for (var i = 0u; i < WV; i++) {
                    wv[i] *= norm_w(k + i);
                }
                while (k >= gend) {
                    grp++;
                    gend += P.gs;
                }
            }
            for (var j = 0u; j < TB; j++) {
                let t = t0 + j;
                if (t < P.T) {
                    let xo = t * P.K + k;
                    var s = 0.0;
                    for (var i = 0u; i < WV; i++) {
                        s += x[xo + i] * wv[i];
                    }
                    if (normed) {
                        s *= inv[j * P.groups + grp];
                    }
                    acc[j] += s;
                }
            }
        }
        for (var k = KV + lane; k < P.K; k += TPR) {
            var wv = w_get(n, k);
            var grp = 0u;
            if (normed) {
                wv *= norm_w(k);
                grp = k / P.gs;
            }
            for (var j = 0u; j < TB; j++) {
                let t = t0 + j;
                if (t < P.T) {
                    var s = x[t * P.K + k] * wv;
                    if (normed) {
                        s *= inv[j * P.groups + grp];
                    }
                    acc[j] += s;
                }
            }
        }
    }
#ifdef SUBGROUPS
    // Each column's TPR partial sums: block_sum within blocks of bs =
    // min(TPR, subgroup size) invocations, whose first leaves the block's
    // TB sums in part, and after one barrier the column's first invocation
    // adds its TPR / bs blocks (part holds WG / bs · TB ≤ 1024 floats).
    let bs = min(TPR, sgn);
    let bsum = block_sum4(vec4<f32>(acc[0], acc[1], acc[2], acc[3]), bs);
    if (lid % bs == 0u) {
        for (var j = 0u; j < TB; j++) {
            part[(lid / bs) * TB + j] = bsum[j];
        }
    }
    workgroupBarrier();
    if (lane == 0u && n < P.N) {
        var sum = vec4<f32>(0.0, 0.0, 0.0, 0.0);
        for (var i = 0u; i < TPR / bs; i++) {
            for (var j = 0u; j < TB; j++) {
                sum[j] += part[(lid / bs + i) * TB + j];
            }
        }
        for (var j = 0u; j < TB; j++) {
            let t = t0 + j;
            if (t < P.T) {
                var v = sum[j];
#else
    for (var j = 0u; j < tn; j++) {
        part[j * WG + lid] = acc[j];
    }
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            for (var j = 0u; j < tn; j++) {
                part[j * WG + lid] += part[j * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lane == 0u && n < P.N) {
        for (var j = 0u; j < TB; j++) {
            let t = t0 + j;
            if (t < P.T) {
                var v = part[j * WG + lid];
#endif
                if (P.has_bias == 1u) {
                    v += bias_at(P.col0 + n);
                }
                let o = t * P.ldo + P.col0 + n;
                if (P.add == 1u) {
                    v += out[o];
                }
                out[o] = v;
#ifdef CONV
                let col = P.col0 + n;
                if (col >= P.xoff && col < P.xoff + P.C) {
                    conv_step(t, col - P.xoff, v);
                }
#endif
            }
        }
    }
}
#else
// Prompts: the tiled product of tile.wgsl, x as the left factor (tokens are
// rows) and W as the right (its rows are output columns).
#include "tile.wgsl"

// load_x reads this invocation's four elements of the x slice at k0: tokens
// (lid + 256i) / 16, k (lid + 256i) % 16 (consecutive invocations, consecutive
// words); zero outside x and from ke on.
fn load_x(t0: u32, k0: u32, ke: u32, lid: u32) -> array<f32, 4> {
    var v: array<f32, 4>;
    for (var i = 0u; i < 4u; i++) {
        let e = lid + i * WG;
        let t = t0 + e / TSTEP;
        let k = k0 + e % TSTEP;
        v[i] = 0.0;
        if (t < P.T && k < ke) {
            v[i] = x[t * P.K + k];
        }
    }
    return v;
}

// load_w reads this invocation's two pairs of the W slice at k0 (one word
// each when packed); zero outside W and from ke on. ke is even or K, so a
// pair never straddles two splits.
fn load_w(n0: u32, k0: u32, ke: u32, lid: u32) -> array<vec2<f32>, 2> {
    var v: array<vec2<f32>, 2>;
    for (var i = 0u; i < 2u; i++) {
        let e = lid + i * WG;
        let n = n0 + e / (TSTEP / 2u);
        let k = k0 + (e % (TSTEP / 2u)) * 2u;
        v[i] = vec2<f32>(0.0, 0.0);
        if (n < P.N && k < ke) {
            if (k + 1u < ke) {
                v[i] = w_get2(n, k);
            } else {
                v[i].x = w_get(n, k);
            }
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let col_tiles = (P.N + TILE - 1u) / TILE;
    let tiles = col_tiles * ((P.T + TILE - 1u) / TILE);
    var g = wg_index(wid, nwg);
    let split = g / tiles; // which k range, when the product is split
    g = g % tiles;
    let t0 = (g / col_tiles) * TILE;
    let n0 = (g % col_tiles) * TILE;
    let kb = split * P.kper;
    if (kb >= P.K) {
        return;
    }
    let ke = min(kb + P.kper, P.K);
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    // Software pipelining: the next step's slices are read from memory into
    // registers while this step's are multiplied out of workgroup memory.
    var xr = load_x(t0, kb, ke, lid);
    var wr = load_w(n0, kb, ke, lid);
    for (var k0 = kb; k0 < ke; k0 += TSTEP) {
        // x: 64 tokens × 16 k; W: 64 rows × 16 k, two k per word.
        for (var i = 0u; i < 4u; i++) {
            let e = lid + i * WG;
            tile_set_l(e % TSTEP, e / TSTEP, xr[i]);
        }
        for (var i = 0u; i < 2u; i++) {
            let e = lid + i * WG;
            let r = e / (TSTEP / 2u);
            let k = (e % (TSTEP / 2u)) * 2u;
            tile_set_r(k, r, wr[i].x);
            tile_set_r(k + 1u, r, wr[i].y);
        }
        workgroupBarrier();
        if (k0 + TSTEP < ke) {
            xr = load_x(t0, k0 + TSTEP, ke, lid);
            wr = load_w(n0, k0 + TSTEP, ke, lid);
        }
        tile_fma(&acc, tx, ty);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + tile_row(ty, i);
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tile_col(tx, j);
            if (t < P.T && n < P.N) {
                var v = acc[i * 4u + j];
                if (P.has_bias == 1u) {
                    v += bias[P.col0 + n];
                }
                let o = split * P.pstride + t * P.ldo + P.col0 + n;
                if (P.add == 1u) {
                    v += out[o];
                }
                out[o] = v;
            }
        }
    }
}
#endif
