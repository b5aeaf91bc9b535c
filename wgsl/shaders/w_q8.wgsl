// w_q8.wgsl: int8 weights, symmetric per output row (model.FormatInt8):
//     w[n, k] = q[n, k] · scale[n]
// four signed bytes per u32, element 4i in the low byte; rows padded to a
// multiple of 4; the scale is the low half of Q[n · qstride] (unpack.wgsl).
alias WWord = u32;

fn q8_scale(n: u32) -> f32 {
    return unpack2x16float(Q[n * P.qstride]).x;
}

fn w_get(n: u32, k: u32) -> f32 {
    let word = bitcast<i32>(W[(n * P.stride + k) >> 2u]);
    return f32(extractBits(word, (k & 3u) * 8u, 8u)) * q8_scale(n);
}

fn w_get2(n: u32, k: u32) -> vec2<f32> {
    let word = bitcast<i32>(W[(n * P.stride + k) >> 2u]);
    let sh = (k & 3u) * 8u;
    let s = q8_scale(n);
    return vec2<f32>(f32(extractBits(word, sh, 8u)) * s, f32(extractBits(word, sh + 8u, 8u)) * s);
}

// w_getv returns the WV = 4 elements of one word, k a multiple of 4: the
// matrix-vector kernel reads whole words.
const WV: u32 = 4u;

fn w_getv(n: u32, k: u32) -> array<f32, WV> {
    let word = bitcast<i32>(W[(n * P.stride + k) >> 2u]);
    let s = q8_scale(n);
    return array<f32, WV>(f32(extractBits(word, 0u, 8u)) * s, f32(extractBits(word, 8u, 8u)) * s,
                          f32(extractBits(word, 16u, 8u)) * s, f32(extractBits(word, 24u, 8u)) * s);
}
