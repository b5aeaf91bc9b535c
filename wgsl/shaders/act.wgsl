// act.wgsl: the gated MLPs' nonlinearities (model.Activation), for glu
// and the experts:
//   0 SiLU        v · sigmoid(v)
//   1 GELU        0.5 v (1 + erf(v / √2))
//   2 GELU tanh   0.5 v (1 + tanh(√(2/π) (v + 0.044715 v³)))
// WGSL has no erf: Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7). tanh
// is written out from exp of a non-positive argument, so a large argument
// cannot overflow into NaN as sinh/cosh-based builtins may.

fn erf_approx(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let p = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    return sign(v) * (1.0 - p * exp(-a * a));
}

fn tanh_safe(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

fn activate(act: u32, v: f32) -> f32 {
    if (act == 1u) {
        return 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752));
    }
    if (act == 2u) {
        return 0.5 * v * (1.0 + tanh_safe(0.79788456080286536 * (v + 0.044715 * v * v * v)));
    }
    return silu(v);
}
