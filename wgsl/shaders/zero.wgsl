// zero.wgsl: Backend.Zero, the CPU's clear(t): every word of the buffer
// becomes 0 (0.0 for f32, 0 for i32). Recorded like any other kernel, so it
// is ordered with the operations around it in the same submission.

#include "common.wgsl"

struct Params {
    n: u32, // words
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> buf: array<u32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * WG + lid;
    if (i < P.n) {
        buf[i] = 0u;
    }
}
