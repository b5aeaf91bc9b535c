// ssm_common.wgsl: the dt transform shared by the SSM kernels (SPEC §2):
//     dt = softplus(dt_raw + dt_bias[h]),  softplus(v) = v for v > 20
//     dt = clamp(dt, time_step_limit)      (chunked/prompt path only)
// softplus is written as max(v, 0) + log(1 + e^-|v|) with a series for tiny
// e^-|v|, because f32 log(1 + e) loses e entirely below 6e-8, where the
// CPU's float64 log1p does not.
fn softplus(v: f32) -> f32 {
    if (v > 20.0) {
        return v;
    }
    let e = exp(-abs(v));
    var l: f32;
    if (e < 1e-4) {
        l = e * (1.0 - 0.5 * e);
    } else {
        l = log(1.0 + e);
    }
    return max(v, 0.0) + l;
}

// dt_of applies softplus and, when clamp is 1, the time-step limits (the
// Go side passes ±MaxFloat32 for infinite bounds).
fn dt_of(raw: f32, bias: f32, clamp_on: u32, lo: f32, hi: f32) -> f32 {
    var d = softplus(raw + bias);
    if (clamp_on == 1u) {
        d = min(max(d, lo), hi);
    }
    return d;
}
