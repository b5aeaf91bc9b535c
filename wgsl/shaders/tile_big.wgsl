// tile_big.wgsl: the inner loop of matmul.wgsl's BIG variant, the tiled
// product for prompts of large models.
//
// A workgroup of 256 invocations computes a 128 × 128 tile, stepping
// through the shared dimension 8 at a time. Each step stages the two
// 128 × 8 slices k-major in workgroup memory as vec4 rows padded to 132
// floats: the transposing scalar stores of a subgroup then fall in 32
// distinct banks, and the reads stay 16-byte aligned. Invocation
// (tx, ty) = (lid % 16, lid / 16) owns 8 × 8 outputs: rows 4ty + i and
// 64 + 4ty + i, columns 4tx + j and 64 + 4tx + j (i, j < 4), so each
// step it reads four vec4 and does 64 fused multiply-adds (16 per read,
// against 2 in tile.wgsl's 4 × 4), which is what keeps the shader cores
// rather than workgroup memory busy.

const BT: u32 = 128u;      // rows and columns of the output tile
const BK: u32 = 8u;        // shared-dimension elements per step
const BROW: u32 = 33u;     // vec4 per staged row: 132 floats
const BSIZE: u32 = 264u;   // BK · BROW

var<workgroup> big_l: array<vec4<f32>, BSIZE>; // element (k, t) at float k · 132 + t
var<workgroup> big_r: array<vec4<f32>, BSIZE>; // element (k, n) likewise

// big_store puts v at (k, i) of a staged slice.
fn big_store_l(k: u32, i: u32, v: f32) {
    let f = k * (4u * BROW) + i;
    big_l[f / 4u][f % 4u] = v;
}

fn big_store_r(k: u32, i: u32, v: f32) {
    let f = k * (4u * BROW) + i;
    big_r[f / 4u][f % 4u] = v;
}

// big_fma adds the staged step into acc: acc[2r + h] holds row r's
// (r < 4: 4ty + r; else 64 + 4ty + r - 4) columns 4tx..4tx+3 (h = 0) or
// 64 + 4tx.. (h = 1).
fn big_fma(acc: ptr<function, array<vec4<f32>, 16>>, tx: u32, ty: u32) {
    for (var k = 0u; k < BK; k++) {
        let a0 = big_l[k * BROW + ty];
        let a1 = big_l[k * BROW + 16u + ty];
        let b0 = big_r[k * BROW + tx];
        let b1 = big_r[k * BROW + 16u + tx];
        for (var i = 0u; i < 4u; i++) {
            (*acc)[2u * i] = fma(vec4<f32>(a0[i]), b0, (*acc)[2u * i]);
            (*acc)[2u * i + 1u] = fma(vec4<f32>(a0[i]), b1, (*acc)[2u * i + 1u]);
            (*acc)[8u + 2u * i] = fma(vec4<f32>(a1[i]), b0, (*acc)[8u + 2u * i]);
            (*acc)[9u + 2u * i] = fma(vec4<f32>(a1[i]), b1, (*acc)[9u + 2u * i]);
        }
    }
}
