// w_f16.wgsl: weights stored as IEEE binary16, two per u32, element 2i in
// the low half; rows padded to an even length (unpack.wgsl).
alias WWord = u32;

fn w_get(n: u32, k: u32) -> f32 {
    let pair = unpack2x16float(W[(n * P.stride + k) >> 1u]);
    return select(pair.x, pair.y, (k & 1u) == 1u);
}

fn w_get2(n: u32, k: u32) -> vec2<f32> {
    return unpack2x16float(W[(n * P.stride + k) >> 1u]);
}

// w_getv is w_get2 as the vector the matrix-vector kernel reads: WV
// elements from an index k that is a multiple of WV.
const WV: u32 = 2u;

fn w_getv(n: u32, k: u32) -> array<f32, WV> {
    let p = w_get2(n, k);
    return array<f32, WV>(p.x, p.y);
}
