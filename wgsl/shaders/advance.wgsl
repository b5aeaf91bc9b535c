// advance.wgsl: HybridBackend.Advance, the CPU's
//     for b: pos[b] += n
// moving each sequence's position on after a forward call, on the device,
// so a decode step needs nothing from the host. One invocation per
// sequence.

#include "common.wgsl"

struct Params {
    B: u32,
    n: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> pos: array<i32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i < P.B) {
        pos[i] = pos[i] + i32(P.n);
    }
}
