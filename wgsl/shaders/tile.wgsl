// tile.wgsl: the inner loop of the tiled kernels (matmul for prompts, the
// ssm_scan passes that are matrix products).
//
// A workgroup of 256 invocations computes a 64 × 64 tile of a product
// L · R, stepping through the shared dimension 16 at a time. Each step the
// kernel stages the two 64 × 16 slices of its factors in workgroup memory,
// step-major with rows padded to 65 floats (so the transposing stores fall
// in distinct banks), then calls tile_fma between barriers. Invocation
// (tx, ty) = (lid % 16, lid / 16) owns the outputs at rows ty + 16a and
// columns tx + 16b (a, b < 4): neighbouring invocations read neighbouring
// words and store to neighbouring addresses.

const TILE: u32 = 64u;      // rows and columns of the output tile
const TSTEP: u32 = 16u;     // shared-dimension elements per step
const TPAD: u32 = 65u;      // padded length of a staged row
const TSIZE: u32 = 1040u;   // TSTEP · TPAD

var<workgroup> tile_l: array<f32, TSIZE>; // tile_l[k · TPAD + row]: the left factor
var<workgroup> tile_r: array<f32, TSIZE>; // tile_r[k · TPAD + col]: the right factor

// tile_fma adds the staged step into acc[a · 4 + b].
fn tile_fma(acc: ptr<function, array<f32, 16>>, tx: u32, ty: u32) {
    for (var k = 0u; k < TSTEP; k++) {
        var r: array<f32, 4>;
        for (var j = 0u; j < 4u; j++) {
            r[j] = tile_r[k * TPAD + tx + 16u * j];
        }
        for (var i = 0u; i < 4u; i++) {
            let l = tile_l[k * TPAD + ty + 16u * i];
            for (var j = 0u; j < 4u; j++) {
                (*acc)[i * 4u + j] = fma(l, r[j], (*acc)[i * 4u + j]);
            }
        }
    }
}
