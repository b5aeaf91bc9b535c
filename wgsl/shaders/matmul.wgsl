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
//   (else)  prompts: the 64 × 64 tiled product of tile.wgsl (64 tokens ×
//           64 columns per workgroup). A 128 × 128 tile with 8 × 8 outputs
//           per invocation measured no faster on an H200: for the out_proj
//           of small models it leaves most of the GPU idle.
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
// Prompts: the tiled product of tile.wgsl, x as the left factor (tokens are
// rows) and W as the right (its rows are output columns).
#include "tile.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let col_tiles = (P.N + TILE - 1u) / TILE;
    let g = wg_index(wid, nwg);
    let t0 = (g / col_tiles) * TILE;
    let n0 = (g % col_tiles) * TILE;
    if (t0 >= P.T) {
        return;
    }
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < P.K; k0 += TSTEP) {
        // x: 64 tokens × 16 k, read along k (consecutive words).
        for (var i = 0u; i < (TILE * TSTEP) / WG; i++) {
            let e = lid + i * WG;
            let r = e / TSTEP;
            let k = e % TSTEP;
            let t = t0 + r;
            var v = 0.0;
            if (t < P.T && k0 + k < P.K) {
                v = x[t * P.K + k0 + k];
            }
            tile_l[k * TPAD + r] = v;
        }
        // W: 64 rows × 16 k, two k per read (one word when packed).
        for (var i = 0u; i < (TILE * TSTEP / 2u) / WG; i++) {
            let e = lid + i * WG;
            let r = e / (TSTEP / 2u);
            let k = (e % (TSTEP / 2u)) * 2u;
            let n = n0 + r;
            var v = vec2<f32>(0.0, 0.0);
            if (n < P.N && k0 + k < P.K) {
                if (k0 + k + 1u < P.K) {
                    v = w_get2(n * P.stride + k0 + k);
                } else {
                    v.x = w_get(n * P.stride + k0 + k);
                }
            }
            tile_r[k * TPAD + r] = v.x;
            tile_r[(k + 1u) * TPAD + r] = v.y;
        }
        workgroupBarrier();
        tile_fma(&acc, tx, ty);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + ty + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tx + 16u * j;
            if (t < P.T && n < P.N) {
                var v = acc[i * 4u + j];
                if (P.has_bias == 1u) {
                    v += bias[P.col0 + n];
                }
                out[t * P.ldo + P.col0 + n] = v;
            }
        }
    }
}
#endif
