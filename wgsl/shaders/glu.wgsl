// glu.wgsl: HybridBackend.GLU, the CPU's
//     for t, i < I: out[t, i] = act(gate_scale · g) · u
// with g, u = gate[t, i], up[t, i], or with fused = 1 gate[t, i] and
// gate[t, I + i] (a fused gate_up_proj, rows of 2I). act is SiLU, exact
// GELU or its tanh form (act = 0, 1, 2: model.Activation, act.wgsl). One
// invocation per output element.

#include "common.wgsl"
#include "act.wgsl"

struct Params {
    T: u32,
    I: u32,
    fused: u32,
    act: u32,
    gate_scale: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let o = wg_index(wid, nwg) * WG + lid;
    if (o >= P.T * P.I) {
        return;
    }
    var g: f32;
    var u: f32;
    if (P.fused == 1u) {
        let t = o / P.I;
        let i = o % P.I;
        g = gate[t * 2u * P.I + i];
        u = gate[t * 2u * P.I + P.I + i];
    } else {
        g = gate[o];
        u = up[o];
    }
    out[o] = activate(P.act, P.gate_scale * g) * u;
}
