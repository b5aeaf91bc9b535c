// reduce.wgsl: workgroup-wide reductions.
//
// Needs the including kernel to declare `const WG: u32` (its workgroup size,
// a power of two). Every invocation of the workgroup must call these from
// uniform control flow; the result is returned through workgroupUniformLoad,
// so it is uniform and may steer later loops that contain barriers.
//
// Two variants:
//   SUBGROUPS  each subgroup reduces its values with one subgroup operation,
//              its first invocation leaves the result in the slot of its
//              own local index (the others leave the operation's identity),
//              and after one barrier every subgroup reduces all WG slots,
//              sg_size per step, of which invocation 0's result is shared
//              through workgroupUniformLoad. One barrier and the one of
//              workgroupUniformLoad whatever the subgroup size, which is
//              not assumed (each invocation reads WG / sg_size slots, which
//              is the cost of small subgroups); the mapping of local
//              indices to subgroups is not assumed either. It assumes full
//              subgroups, which WG (a multiple of every subgroup size
//              WebGPU allows) gives. The kernel's entry point must take the
//              subgroup_invocation_id and subgroup_size builtins and pass
//              them to sg_init before the first call.
//   (else)     a tree in workgroup memory: log2(WG) + 2 barriers and the
//              one of workgroupUniformLoad; the one at the end lets the
//              scratch array be reused by the next call.
// Integer sums, maxima and minima are exact either way; float sums differ
// by rounding (another order).

var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;

#ifdef SUBGROUPS
var<workgroup> red_out_f: f32;
var<workgroup> red_out_u: u32;
// This invocation's subgroup_invocation_id and subgroup_size. They only
// index and bound loops without barriers or subgroup operations, so it does
// not matter that the uniformity analysis counts private variables as
// varying.
var<private> sg_lane: u32;
var<private> sg_size: u32;

fn sg_init(lane: u32, size: u32) {
    sg_lane = lane;
    sg_size = size;
}

// The slots of the reductions are written, then read after one barrier;
// the next call writes them again only after the barrier inside
// workgroupUniformLoad, which every invocation reaches after its reads, so
// no barrier is needed at the end.

fn wg_sum_f(lid: u32, v: f32) -> f32 {
    let s = subgroupAdd(v);
    red_f[lid] = select(0.0, s, sg_lane == 0u);
    workgroupBarrier();
    var p = 0.0;
    for (var i = sg_lane; i < WG; i += sg_size) {
        p += red_f[i];
    }
    let r = subgroupAdd(p);
    if (lid == 0u) {
        red_out_f = r;
    }
    return workgroupUniformLoad(&red_out_f);
}

fn wg_sum_u(lid: u32, v: u32) -> u32 {
    let s = subgroupAdd(v);
    red_u[lid] = select(0u, s, sg_lane == 0u);
    workgroupBarrier();
    var p = 0u;
    for (var i = sg_lane; i < WG; i += sg_size) {
        p += red_u[i];
    }
    let r = subgroupAdd(p);
    if (lid == 0u) {
        red_out_u = r;
    }
    return workgroupUniformLoad(&red_out_u);
}

fn wg_max_u(lid: u32, v: u32) -> u32 {
    let s = subgroupMax(v);
    red_u[lid] = select(0u, s, sg_lane == 0u);
    workgroupBarrier();
    var p = 0u;
    for (var i = sg_lane; i < WG; i += sg_size) {
        p = max(p, red_u[i]);
    }
    let r = subgroupMax(p);
    if (lid == 0u) {
        red_out_u = r;
    }
    return workgroupUniformLoad(&red_out_u);
}

fn wg_min_u(lid: u32, v: u32) -> u32 {
    let s = subgroupMin(v);
    red_u[lid] = select(0xffffffffu, s, sg_lane == 0u);
    workgroupBarrier();
    var p = 0xffffffffu;
    for (var i = sg_lane; i < WG; i += sg_size) {
        p = min(p, red_u[i]);
    }
    let r = subgroupMin(p);
    if (lid == 0u) {
        red_out_u = r;
    }
    return workgroupUniformLoad(&red_out_u);
}
#else
fn wg_sum_f(lid: u32, v: f32) -> f32 {
    red_f[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_f[lid] = red_f[lid] + red_f[lid + s];
        }
        workgroupBarrier();
    }
    let r = workgroupUniformLoad(&red_f[0]);
    workgroupBarrier();
    return r;
}

fn wg_sum_u(lid: u32, v: u32) -> u32 {
    red_u[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_u[lid] = red_u[lid] + red_u[lid + s];
        }
        workgroupBarrier();
    }
    let r = workgroupUniformLoad(&red_u[0]);
    workgroupBarrier();
    return r;
}

fn wg_max_u(lid: u32, v: u32) -> u32 {
    red_u[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_u[lid] = max(red_u[lid], red_u[lid + s]);
        }
        workgroupBarrier();
    }
    let r = workgroupUniformLoad(&red_u[0]);
    workgroupBarrier();
    return r;
}

fn wg_min_u(lid: u32, v: u32) -> u32 {
    red_u[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_u[lid] = min(red_u[lid], red_u[lid + s]);
        }
        workgroupBarrier();
    }
    let r = workgroupUniformLoad(&red_u[0]);
    workgroupBarrier();
    return r;
}
#endif
