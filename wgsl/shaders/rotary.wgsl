// rotary.wgsl: HybridBackend.Rotary, the CPU's
//     for each row r = (b, l), head h, i < half = dim/2:
//         ang = f32(pos + start[b] + l) · inv[i]   (start[b] 0 without start)
//         (x1, x2) = (x[i], x[i + half]) of the head
//         x[i] = x1·cos(ang) − x2·sin(ang);  x[i + half] = x2·cos(ang) + x1·sin(ang)
// in place, rotate_half convention; channels from dim on are untouched.
// inv[i] = 1 / theta^(2i/dim) comes from the host, computed as
// transformers (and the CPU) compute it in float32, so the angle is the
// same f32 product on both. The angle grows with the position (thousands
// of radians), where WGSL's cos and sin promise nothing (2^-11 absolute,
// and only on [-π, π]), so cos_sin reduces it by π/2 in three exact parts
// and evaluates minimax polynomials (Cephes' sinf/cosf): about 1 ulp for
// angles up to 2^13 and degrading slowly past that.
// One invocation per (row, head, i).

#include "common.wgsl"

struct Params {
    rows: u32,  // B · L
    L: u32,
    heads: u32,
    head_dim: u32,
    half: u32,  // dim / 2
    pos: u32,   // position of row l = 0 of every sequence, plus start[b]
    has_start: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> inv: array<f32>;
@group(0) @binding(3) var<storage, read> start: array<i32>; // [B]: each sequence's position

const WG: u32 = 256u;

// cos_sin returns (cos a, sin a) for a ≥ 0.
fn cos_sin(a: f32) -> vec2<f32> {
    let q = floor(a * 0.63661977236758134 + 0.5); // a / (π/2), rounded
    // π/2 = C1 + C2 + C3, C1 and C2 with few enough bits that q·C1 and
    // q·C2 are exact for q < 2^13.
    let r = ((a - q * 1.5703125) - q * 4.837512969970703125e-4) - q * 7.54978995489188216e-8;
    let z = r * r;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    switch (u32(q) & 3u) {
        case 0u: { return vec2<f32>(c, s); }
        case 1u: { return vec2<f32>(-s, c); }
        case 2u: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wg_index(wid, nwg) * WG + lid;
    if (g >= P.rows * P.heads * P.half) {
        return;
    }
    let i = g % P.half;
    let rh = g / P.half; // row · heads + head
    let row = rh / P.heads;
    var p = P.pos + row % P.L;
    if (P.has_start != 0u) {
        p += u32(start[row / P.L]);
    }
    let ang = f32(p) * inv[i];
    let cs = cos_sin(ang);
    let o = rh * P.head_dim + i;
    let x1 = x[o];
    let x2 = x[o + P.half];
    x[o] = x1 * cs.x - x2 * cs.y;
    x[o + P.half] = x2 * cs.x + x1 * cs.y;
}
