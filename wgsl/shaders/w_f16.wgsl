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
