// embed.wgsl: Backend.Embed, the CPU's
//     for t: out[t, :] = table[ids[t], :]
// for the rows [row0, row0 + rows) of the table that this part of W holds
// (big tables are split by rows over several buffers; one dispatch per
// part, each writing the output rows whose id falls in its part). The first
// part also writes zeros for ids outside the vocabulary, which the model
// rejects before this point, so a bad id can never read out of bounds.
//
// Grid: one workgroup per (t, block of WG columns).

#include "common.wgsl"
#include "unpack.wgsl"

struct Params {
    T: u32,      // tokens
    D: u32,      // columns
    stride: u32, // stored elements per row of W (D, padded for packed formats)
    row0: u32,   // first table row held by this part
    rows: u32,   // rows held by this part
    vocab: u32,  // rows of the whole table
    first: u32,  // 1 for the part that zeroes out-of-range ids
    qstride: u32, // quantized W: parameters per row of Q (unpack.wgsl)
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> W: array<WWord>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#ifdef WQ
@group(0) @binding(4) var<storage, read> Q: array<u32>;
#endif

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let blocks = (P.D + WG - 1u) / WG;
    let g = wg_index(wid, nwg);
    let t = g / blocks;
    let d = (g % blocks) * WG + lid;
    if (t >= P.T || d >= P.D) {
        return;
    }
    let id = ids[t];
    if (id < 0 || u32(id) >= P.vocab) {
        if (P.first == 1u) {
            out[t * P.D + d] = 0.0;
        }
        return;
    }
    let r = u32(id);
    if (r < P.row0 || r >= P.row0 + P.rows) {
        return;
    }
    out[t * P.D + d] = w_get(r - P.row0, d);
}
