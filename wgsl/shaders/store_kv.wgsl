// store_kv.wgsl: HybridBackend.StoreKV, the CPU's
//     for b, i < L: cache[b, at + i, :] = x[b, i, :]
// appending a call's keys or values to a KV cache ([B, Cap, X]), or moving
// a cache into a larger one (x is then the old cache, L its capacity). One
// invocation per element of x, so it is one dispatch whatever B is.

#include "common.wgsl"

struct Params {
    B: u32,
    L: u32,
    X: u32,
    cap: u32,
    at: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;

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
    let l = row % P.L;
    cache[(b * P.cap + P.at + l) * P.X + i % P.X] = x[i];
}
