// unpack.wgsl: reading weights in the format they were stored in.
//
// The including kernel declares its weight buffer as
//     var<storage, read> W: array<WWord>;
// and the pipeline's define picks the format, so layer code never branches
// on it:
//   WF32   one f32 per element;
//   WF16   two IEEE binary16 per u32, element 2i in the low half;
//   WBF16  two bfloat16 per u32, element 2i in the low half.
// Packed rows are padded to an even length on upload, so every row starts on
// a word and w_get2 at an even index never straddles two rows.

#ifdef WF32
alias WWord = f32;

fn w_get(i: u32) -> f32 {
    return W[i];
}

// w_get2 returns elements i and i+1; i+1 must exist.
fn w_get2(i: u32) -> vec2<f32> {
    return vec2<f32>(W[i], W[i + 1u]);
}
#endif

#ifdef WF16
alias WWord = u32;

fn w_get(i: u32) -> f32 {
    let pair = unpack2x16float(W[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// w_get2 returns elements i and i+1 for an even i: one word.
fn w_get2(i: u32) -> vec2<f32> {
    return unpack2x16float(W[i >> 1u]);
}
#endif

#ifdef WBF16
alias WWord = u32;

// A bfloat16 is the top half of an f32, so widening is a shift.
fn w_get(i: u32) -> f32 {
    let word = W[i >> 1u];
    return select(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u), (i & 1u) == 1u);
}

fn w_get2(i: u32) -> vec2<f32> {
    let word = W[i >> 1u];
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}
#endif
