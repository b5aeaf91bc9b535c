// w_q4.wgsl: int4 weights in groups of QGS along a row, asymmetric
// (model.FormatInt4):
//     w[n, k] = (q[n, k] − 8) · scale[n, g] + zero[n, g],  g = k / QGS
// eight 4-bit values per u32, element 8i in the low nibble; rows padded to
// a multiple of 8; Q[n · qstride + g] holds the f16 scale (low half) and
// zero (high half) (unpack.wgsl). QGS is even, so a pair shares a group.
alias WWord = u32;

fn w_get(n: u32, k: u32) -> f32 {
    let word = W[(n * P.stride + k) >> 3u];
    let q = f32(extractBits(word, (k & 7u) * 4u, 4u));
    let sz = unpack2x16float(Q[n * P.qstride + k / QGS]);
    return (q - 8.0) * sz.x + sz.y;
}

fn w_get2(n: u32, k: u32) -> vec2<f32> {
    let word = W[(n * P.stride + k) >> 3u];
    let sh = (k & 7u) * 4u;
    let q = vec2<f32>(f32(extractBits(word, sh, 4u)), f32(extractBits(word, sh + 4u, 4u)));
    let sz = unpack2x16float(Q[n * P.qstride + k / QGS]);
    return (q - 8.0) * sz.x + sz.y;
}
