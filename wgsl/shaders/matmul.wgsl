// matmul.wgsl: Backend.MatMul, the CPU's
//     for t, n: out[t, n] = Σ_k x[t, k] · w[n, k]  (+ bias[n])
// x times W transposed, W in checkpoint layout [N, K]. A weight split by rows
// into several buffers is one dispatch per part: the part's rows are output
// columns [col0, col0 + N) of an output row of ldo columns.
//
// Two variants, chosen by define:
//   MATVEC  up to TB = 4 tokens (decoding): a workgroup computes RPW = 4
//           output columns; TPR = 64 invocations share each row of W, each
//           summing a strided slice of k in pairs (one u32 of a packed
//           weight), then a tree reduction in workgroup memory. Each weight
//           word is read once per TB tokens.
//   (else)  a tiled kernel for prompts: 64 tokens × 64 columns per
//           workgroup, k in steps of 16 through workgroup memory, each
//           invocation accumulating a 4 × 4 block.
// Sums are in f32 in a different order than the CPU's; the difference is
// rounding.

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
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<WWord>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

#ifdef MATVEC
const TPR: u32 = 64u;        // invocations per output column
const RPW: u32 = WG / TPR;   // output columns per workgroup
const TB: u32 = 4u;          // tokens per workgroup

var<workgroup> part: array<f32, 1024>; // TB × WG partial sums

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let col_groups = (P.N + RPW - 1u) / RPW;
    let g = wg_index(wid, nwg);
    let t0 = (g / col_groups) * TB;
    if (t0 >= P.T) {
        return;
    }
    let n = (g % col_groups) * RPW + lid / TPR;
    let lane = lid % TPR;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    if (n < P.N) {
        let base = n * P.stride;
        let K2 = P.K & ~1u;
        for (var k = lane * 2u; k < K2; k += TPR * 2u) {
            let wv = w_get2(base + k);
            for (var j = 0u; j < TB; j++) {
                let t = t0 + j;
                if (t < P.T) {
                    let xo = t * P.K + k;
                    acc[j] += x[xo] * wv.x + x[xo + 1u] * wv.y;
                }
            }
        }
        if ((P.K & 1u) == 1u && lane == 0u) {
            let k = P.K - 1u;
            let wv = w_get(base + k);
            for (var j = 0u; j < TB; j++) {
                let t = t0 + j;
                if (t < P.T) {
                    acc[j] += x[t * P.K + k] * wv;
                }
            }
        }
    }
    for (var j = 0u; j < TB; j++) {
        part[j * WG + lid] = acc[j];
    }
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            for (var j = 0u; j < TB; j++) {
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
                if (P.has_bias == 1u) {
                    v += bias[P.col0 + n];
                }
                out[t * P.ldo + P.col0 + n] = v;
            }
        }
    }
}
#else
const TS: u32 = 64u; // tile edge in tokens and in columns
const TK: u32 = 16u; // k per step
const PT: u32 = 4u;  // outputs per invocation along each edge

var<workgroup> xs: array<f32, 1024>; // [TS tokens][TK]
var<workgroup> ws: array<f32, 1024>; // [TS columns][TK]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let col_tiles = (P.N + TS - 1u) / TS;
    let g = wg_index(wid, nwg);
    let t0 = (g / col_tiles) * TS;
    let n0 = (g % col_tiles) * TS;
    if (t0 >= P.T) {
        return;
    }
    let tx = lid % (TS / PT); // column block
    let ty = lid / (TS / PT); // token block
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < P.K; k0 += TK) {
        for (var i = 0u; i < (TS * TK) / WG; i++) {
            let e = lid + i * WG;
            let r = e / TK;
            let k = k0 + e % TK;
            var xv = 0.0;
            let t = t0 + r;
            if (t < P.T && k < P.K) {
                xv = x[t * P.K + k];
            }
            xs[e] = xv;
            var wv = 0.0;
            let n = n0 + r;
            if (n < P.N && k < P.K) {
                wv = w_get(n * P.stride + k);
            }
            ws[e] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < PT; i++) {
                a[i] = xs[(ty * PT + i) * TK + kk];
                b[i] = ws[(tx * PT + i) * TK + kk];
            }
            for (var i = 0u; i < PT; i++) {
                for (var j = 0u; j < PT; j++) {
                    acc[i * PT + j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < PT; i++) {
        let t = t0 + ty * PT + i;
        for (var j = 0u; j < PT; j++) {
            let n = n0 + tx * PT + j;
            if (t < P.T && n < P.N) {
                var v = acc[i * PT + j];
                if (P.has_bias == 1u) {
                    v += bias[P.col0 + n];
                }
                out[t * P.ldo + P.col0 + n] = v;
            }
        }
    }
}
#endif
