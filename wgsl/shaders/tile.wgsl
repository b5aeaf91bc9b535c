// tile.wgsl: the inner loop of the tiled kernels (matmul for prompts, the
// ssm_scan passes that are matrix products).
//
// A workgroup of 256 invocations computes a 64 × 64 tile of a product
// L · R, stepping through the shared dimension 16 at a time. Each step the
// kernel stages the two 64 × 16 slices of its factors in workgroup memory
// (tile_set_l, tile_set_r), step-major, then calls tile_fma between
// barriers. Invocation (tx, ty) = (lid % 16, lid / 16) owns the 4 × 4
// outputs at rows tile_row(ty, a) = 4ty + a and columns tile_col(tx, b) =
// 4tx + b, so each step of tile_fma is two vec4 reads of workgroup memory
// for 16 fmas (with rows ty + 16a, columns tx + 16b it was eight scalar
// reads). A staged row is 64 floats padded to 68, so that the transposing
// stores (consecutive invocations, consecutive steps) spread over the banks.

const TILE: u32 = 64u;      // rows and columns of the output tile
const TSTEP: u32 = 16u;     // shared-dimension elements per step
const TPAD4: u32 = 17u;     // vec4s per staged row: 64 floats and 4 of padding

var<workgroup> tile_l: array<vec4<f32>, 272>; // TSTEP · TPAD4: the left factor, [k][row]
var<workgroup> tile_r: array<vec4<f32>, 272>; // the right factor, [k][col]

// tile_set_l stages the left factor's element (row, k) of this step.
fn tile_set_l(k: u32, row: u32, v: f32) {
    tile_l[k * TPAD4 + row / 4u][row % 4u] = v;
}

// tile_set_r stages the right factor's element (k, col) of this step.
fn tile_set_r(k: u32, col: u32, v: f32) {
    tile_r[k * TPAD4 + col / 4u][col % 4u] = v;
}

// tile_row and tile_col are the tile's row and column of acc[a · 4 + b].
fn tile_row(ty: u32, a: u32) -> u32 {
    return 4u * ty + a;
}

fn tile_col(tx: u32, b: u32) -> u32 {
    return 4u * tx + b;
}

// tile_fma adds the staged step into acc[a · 4 + b].
fn tile_fma(acc: ptr<function, array<f32, 16>>, tx: u32, ty: u32) {
    for (var k = 0u; k < TSTEP; k++) {
        let l = tile_l[k * TPAD4 + ty];
        let r = tile_r[k * TPAD4 + tx];
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                (*acc)[i * 4u + j] = fma(l[i], r[j], (*acc)[i * 4u + j]);
            }
        }
    }
}
