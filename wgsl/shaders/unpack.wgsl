// unpack.wgsl: reading weights in the format they were stored in.
//
// The including kernel declares its weight buffer as
//     var<storage, read> W: array<WWord>;
// with a Params struct P that has `stride` (stored elements per row of W)
// and, for the quantized formats (define WQ), `qstride` (quantization
// parameters per row) and a buffer
//     var<storage, read> Q: array<u32>;
// of one u32 per parameter: the f16 scale in the low half, the f16 zero
// in the high half. The pipeline's define picks one format file, so layer
// code never branches on the format:
//   WF32   w_f32.wgsl   one f32 per element
//   WF16   w_f16.wgsl   two IEEE binary16 per u32
//   WBF16  w_bf16.wgsl  two bfloat16 per u32
//   WQ8    w_q8.wgsl    four int8 per u32, one scale per row
//   WQ4    w_q4.wgsl    eight 4-bit values per u32, a scale and zero per
//                       QGS elements of a row
// Each gives
//   w_get(n, k)   element k of row n;
//   w_get2(n, k)  elements k and k+1 for an even k (k+1 must exist);
//   w_getv(n, k)  the WV elements from k, a multiple of WV (one word of
//                 the packed formats, a pair of the others), all existing.
// Rows are padded on upload so every row starts on a word: a pair never
// straddles two words or two rows.

#ifdef WF32
#include "w_f32.wgsl"
#endif
#ifdef WF16
#include "w_f16.wgsl"
#endif
#ifdef WBF16
#include "w_bf16.wgsl"
#endif
#ifdef WQ8
#include "w_q8.wgsl"
#endif
#ifdef WQ4
#include "w_q4.wgsl"
#endif
