// store_kv.wgsl: HybridBackend.StoreKV, the CPU's
//     for b, i < L: p = at + start[b] + i   (start[b] 0 without start)
//         cache[b, p, :] = x[b, i, :] where p < cap
// appending a call's keys or values to a KV cache ([B, Cap, X]), each
// sequence at its own length, or moving a cache into a larger one (x is
// then the old cache, L its capacity). start lives on the device, so the
// host cannot check it: a position past the cache is dropped rather than
// written into the next sequence's row. One invocation per element of x,
// so it is one dispatch whatever B is.

#include "common.wgsl"

struct Params {
    B: u32,
    L: u32,
    X: u32,
    cap: u32,
    at: u32,
    has_start: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;
@group(0) @binding(3) var<storage, read> start: array<i32>; // [B]: each sequence's length

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i >= P.B * P.L * P.X) {
        return;
    }
    let row = i / P.X;
    let b = row / P.L;
    var p = P.at + row % P.L;
    if (P.has_start != 0u) {
        p += u32(start[b]);
    }
    if (p < P.cap) {
        cache[(b * P.cap + p) * P.X + i % P.X] = x[i];
    }
}
