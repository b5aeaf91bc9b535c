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

// w_getv returns the WV = 8 elements of one word, k a multiple of 8: the
// matrix-vector kernel reads whole words. With groups of a multiple of 8
// (128 and every usual size) a word lies in one group; other even sizes
// look each element's group up.
const WV: u32 = 8u;

fn w_getv(n: u32, k: u32) -> array<f32, WV> {
    let word = W[(n * P.stride + k) >> 3u];
    var v: array<f32, WV>;
    if (QGS % 8u == 0u) {
        let sz = unpack2x16float(Q[n * P.qstride + k / QGS]);
        for (var j = 0u; j < WV; j++) {
            v[j] = (f32((word >> (4u * j)) & 15u) - 8.0) * sz.x + sz.y;
        }
    } else {
        for (var j = 0u; j < WV; j++) {
            let sz = unpack2x16float(Q[n * P.qstride + (k + j) / QGS]);
            v[j] = (f32((word >> (4u * j)) & 15u) - 8.0) * sz.x + sz.y;
        }
    }
    return v;
}
