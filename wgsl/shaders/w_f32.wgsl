// w_f32.wgsl: weights stored as f32 (unpack.wgsl).
alias WWord = f32;

fn w_get(n: u32, k: u32) -> f32 {
    return W[n * P.stride + k];
}

fn w_get2(n: u32, k: u32) -> vec2<f32> {
    let i = n * P.stride + k;
    return vec2<f32>(W[i], W[i + 1u]);
}

// w_getv is w_get2 as the vector the matrix-vector kernel reads: WV
// elements from an index k that is a multiple of WV.
const WV: u32 = 2u;

fn w_getv(n: u32, k: u32) -> array<f32, WV> {
    let p = w_get2(n, k);
    return array<f32, WV>(p.x, p.y);
}
