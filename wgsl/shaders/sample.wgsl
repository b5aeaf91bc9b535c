// sample.wgsl: DeviceSampler.Sample, model.Sampler.Sample on the GPU for
// each row of logits, with u[row] the row's uniform number. Every logit is
// read through lg, which applies model.Sampling.Penalize from the row's
// history when there are penalties (and the chosen token is counted there
// at the end). Then:
//   - a row no token can be chosen from (model.CheckLogits: a NaN or a +Inf,
//     or no finite logit) gets the negative code of model.LogitsCode, -1 -
//     (kind + 3·id) with kind 0 for NaN, 1 for +Inf, 2 for all -Inf, id the
//     first bad token (0 for kind 2), instead of a token;
//   - temperature 0: Argmax, the lowest id among the largest values;
//   - otherwise: rank the non-NaN tokens by logit, highest first, lower id
//     first on ties; with MinP keep those at or above l_max + mdelta; keep
//     the first TopK of them (all when 0); weigh each by
//     exp((l − l_max)/T); with 0 < TopP < 1 keep the shortest prefix whose
//     weight reaches TopP of the kept total; return the token where
//     u · (kept total) falls in the running sum (the last kept token if
//     rounding puts it past the end).
// Nothing is sorted. Logits are mapped to order-preserving u32 keys, and
// every "position in the ranking" question becomes a bisection: the k-th
// largest value (top-k), the value where the running weight reaches a
// goal (top-p, the draw) are found bit by bit over the key, each step one
// pass with a workgroup reduction; among tokens of equal value, which are
// ranked by id, the n-th is found by bisection over the id. One workgroup
// per row; about 32 + 32 + 32 + 3·idbits passes in the worst case, over at
// most CAP candidates in workgroup memory where the answer lies among them
// (see CAP), else over the row.
//
// Two passes, two dispatches. PASS_SCAN spreads the first look at the rows
// over many workgroups, each over a chunk of CHUNK logits: the first token
// that refuses the row (NaN or +Inf), whether any is finite, the largest
// key, the lowest id holding it and the count of non-NaN tokens, five
// words per chunk in part. The second pass (no define), one workgroup per
// row, combines a row's chunks in one step, which settles a greedy row
// outright: greedy decoding never reads the logits twice, and one workgroup
// no longer walks 50k logits three times alone (that was most of a decoded
// token's sampling time).
// The reductions are reduce.wgsl's, through subgroups with SUBGROUPS (two
// barriers each instead of eleven); they are integer counts, maxima and minima,
// exact either way, except the weight sums, so ties are broken the same
// (lowest id first) and only the rounding of the sums can differ.
// Sums are f32 where SampleRow uses float64, so a draw that falls within
// rounding of a boundary between two tokens may pick the neighbour.

#include "common.wgsl"
#include "reduce.wgsl"

struct Params {
    V: u32,
    rows: u32,       // rows in this dispatch
    row0: u32,       // first row
    greedy: u32,
    temp: f32,
    topk: u32,
    topp: f32,
    idbits: u32,     // bits to bisect an id: 2^idbits > V
    minp: u32,       // 1: keep only logits ≥ l_max + mdelta
    mdelta: f32,     // model.MinPDelta: T·ln(MinP)
    pen: u32,        // 1: penalties, from hist
    rep: f32,        // repetition penalty, and its float32 inverse
    repinv: f32,
    freq: f32,       // frequency and presence penalties
    pres: f32,
    chunks: u32,     // chunks of CHUNK logits per row: ceil(V / CHUNK)
    u: array<vec4<f32>, 12>, // u[row - row0], four per vec4
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
// hist [rows, 2, V]: times each token was generated, then 1 for prompt
// tokens (bound to a stand-in and never read when P.pen is 0).
// part [rows, chunks, 5]: PASS_SCAN's findings per chunk (see there).
#ifdef PASS_SCAN
@group(0) @binding(2) var<storage, read> hist: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<u32>;
#else
@group(0) @binding(2) var<storage, read_write> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> hist: array<f32>;
@group(0) @binding(4) var<storage, read> part: array<u32>;
#endif

const WG: u32 = 256u;
const CHUNK: u32 = 4u * WG; // logits per PASS_SCAN workgroup (sample.go's sampleChunk)

// Row is what every helper needs to know about the row: where it starts and
// its largest logit. It is passed as an argument rather than kept in private
// variables, because the browsers' uniformity analysis counts a private
// variable as varying between invocations, and these values steer loops
// that contain barriers.
struct Row {
    base: u32,
    hbase: u32, // the row's history
    lmax: f32,
    n: u32,     // tokens the helpers look at: P.V, or the candidates
    cand: u32,  // 1: they are the candidates in cv and cid, not the logits
}

// lg is logit i of the row, penalized as model.Sampling.Penalize does.
fn lg(row: Row, i: u32) -> f32 {
    var l = logits[row.base + i];
    if (P.pen == 1u) {
        let c = hist[row.hbase + i];
        if (c > 0.0 || hist[row.hbase + P.V + i] > 0.0) {
            if (P.rep != 1.0) {
                l = select(l * P.rep, l * P.repinv, l > 0.0);
            }
            if (c > 0.0) {
                l = l - (P.freq * c + P.pres);
            }
        }
    }
    return l;
}

#ifndef PASS_SCAN
// count records that the row chose id (invocation 0 of the row only).
fn count(row: Row, id: u32) {
    if (P.pen == 1u) {
        hist[row.hbase + id] = hist[row.hbase + id] + 1.0;
    }
}
#endif

// okey maps a float to a u32 with the same order (-0 and +0 equal); NaN maps
// to 0, below every number, so it never wins a maximum.
fn okey(v: f32) -> u32 {
    if (is_nan(v)) {
        return 0u;
    }
    var b = bitcast<u32>(v);
    if (b == 0x80000000u) {
        b = 0u;
    }
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

fn oval(k: u32) -> f32 {
    if ((k & 0x80000000u) != 0u) {
        return bitcast<f32>(k & 0x7fffffffu);
    }
    return bitcast<f32>(~k);
}

fn weight(row: Row, v: f32) -> f32 {
    return exp((v - row.lmax) / P.temp);
}

// A token is kept when its key is above kk, or equal with an id up to ck.
fn kept(k: u32, i: u32, kk: u32, ck: u32) -> bool {
    return k > kk || (k == kk && i <= ck);
}

#ifndef PASS_SCAN
// The candidates: the tokens whose key is above xc, the CAP-th largest key
// of the row (all non-NaN tokens when there are at most CAP), with their
// penalized logits and ids, in no order. They lead the ranking, so a
// question whose answer lies among them (the k-th token for k within
// them, the token where a running weight the candidates reach is passed)
// gets the same answer from them as from the whole row: the bisections
// then run over at most CAP values in workgroup memory instead of V in
// storage, which is where sampling spent its time (each of its ~150 steps
// was a pass over the row). When the answer may lie beyond them the step
// runs over the row as before.
const CAP: u32 = 1024u;
var<workgroup> cv: array<f32, CAP>;
var<workgroup> cid: array<u32, CAP>;
var<workgroup> rhist: array<atomic<u32>, WG>; // select_key's 256 bins (WG = 256)
var<workgroup> rsel: vec2<u32>;
var<workgroup> cpos: array<u32, WG>; // compact: where each invocation's candidates start
var<workgroup> ctotal: u32;
#endif

// item_v and item_id are token j of what the helpers look at: the row's
// logit j (penalized) and id j, or candidate j.
fn item_v(row: Row, j: u32) -> f32 {
#ifndef PASS_SCAN
    if (row.cand == 1u) {
        return cv[j];
    }
#endif
    return lg(row, j);
}

fn item_id(row: Row, j: u32) -> u32 {
#ifndef PASS_SCAN
    if (row.cand == 1u) {
        return cid[j];
    }
#endif
    return j;
}

#ifndef PASS_SCAN
// select_key returns the r-th largest non-NaN key of the row (r ≤ their
// count), a byte at a time from the top: a histogram of the next byte of
// the keys that share the bytes found so far, and the bin where the count
// from the top reaches r. Four passes over the row.
fn select_key(row: Row, lid: u32, r0: u32) -> u32 {
    var prefix = 0u;
    var r = r0;
    for (var d = 0u; d < 4u; d++) {
        let shift = 24u - 8u * d;
        var hi = 0u; // the bits found so far
        if (d > 0u) {
            hi = 0xffffffffu << (shift + 8u);
        }
        atomicStore(&rhist[lid], 0u);
        workgroupBarrier();
        for (var i = lid; i < P.V; i += WG) {
            let k = okey(lg(row, i));
            if (k != 0u && (k & hi) == prefix) {
                atomicAdd(&rhist[(k >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            var rem = r;
            var b = 255u;
            loop {
                let h = atomicLoad(&rhist[b]);
                if (h >= rem || b == 0u) {
                    break;
                }
                rem -= h;
                b--;
            }
            rsel = vec2<u32>(b, rem);
        }
        let sel = workgroupUniformLoad(&rsel);
        prefix = prefix | (sel.x << shift);
        r = sel.y;
    }
    return prefix;
}

// compact gathers the tokens with a key above xc into the candidates and
// returns how many there are (fewer than CAP by the choice of xc). Their
// order is fixed, invocation by invocation and each one's tokens in its
// order, so that the weight sums over them, and so the tokens drawn, are
// the same from run to run: two passes, a count and then the writes at
// each invocation's offset, rather than slots taken by atomics in whatever
// order the invocations come.
fn compact(row: Row, lid: u32, xc: u32) -> u32 {
    var c = 0u;
    for (var i = lid; i < P.V; i += WG) {
        if (okey(lg(row, i)) > xc) {
            c++;
        }
    }
    cpos[lid] = c;
    workgroupBarrier();
    if (lid == 0u) {
        var sum = 0u;
        for (var j = 0u; j < WG; j++) {
            let n = cpos[j];
            cpos[j] = sum;
            sum += n;
        }
        ctotal = sum;
    }
    workgroupBarrier();
    var p = cpos[lid];
    for (var i = lid; i < P.V; i += WG) {
        let v = lg(row, i);
        if (okey(v) > xc) {
            if (p < CAP) {
                cv[p] = v;
                cid[p] = i;
            }
            p++;
        }
    }
    return min(workgroupUniformLoad(&ctotal), CAP);
}
#endif

// count_ge counts non-NaN tokens with key ≥ x.
fn count_ge(row: Row, lid: u32, x: u32) -> u32 {
    var n = 0u;
    for (var j = lid; j < row.n; j += WG) {
        let k = okey(item_v(row, j));
        if (k != 0u && k >= x) {
            n++;
        }
    }
    return wg_sum_u(lid, n);
}

// count_tie counts kept tokens with key x and an id below c.
fn count_tie(row: Row, lid: u32, x: u32, c: u32, kk: u32, ck: u32) -> u32 {
    var n = 0u;
    for (var j = lid; j < row.n; j += WG) {
        let k = okey(item_v(row, j));
        let i = item_id(row, j);
        if (k == x && i < c && kept(k, i, kk, ck)) {
            n++;
        }
    }
    return wg_sum_u(lid, n);
}

// sum_ge sums the weights of kept tokens with key ≥ x.
fn sum_ge(row: Row, lid: u32, x: u32, kk: u32, ck: u32) -> f32 {
    var s = 0.0;
    for (var j = lid; j < row.n; j += WG) {
        let v = item_v(row, j);
        let k = okey(v);
        if (k != 0u && k >= x && kept(k, item_id(row, j), kk, ck)) {
            s += weight(row, v);
        }
    }
    return wg_sum_f(lid, s);
}

// nth_tie returns the id of the r-th (from 1) token with key x by rank,
// that is by id, among the kept ones.
fn nth_tie(row: Row, lid: u32, x: u32, r: u32, kk: u32, ck: u32) -> u32 {
    // the largest c with fewer than r such tokens below it is the r-th one
    var c = 0u;
    for (var bit = i32(P.idbits) - 1; bit >= 0; bit--) {
        let cand = c | (1u << u32(bit));
        if (cand <= P.V && count_tie(row, lid, x, cand, kk, ck) < r) {
            c = cand;
        }
    }
    return c;
}

// top_key returns the largest key x with sum_ge(x) ≥ goal (when strict is
// 0) or > goal (strict 1); sum_ge(0) is assumed to qualify.
fn top_key(row: Row, lid: u32, goal: f32, strict: u32, kk: u32, ck: u32) -> u32 {
    var x = 0u;
    for (var bit = 31; bit >= 0; bit--) {
        let cand = x | (1u << u32(bit));
        let s = sum_ge(row, lid, cand, kk, ck);
        if ((strict == 0u && s >= goal) || (strict == 1u && s > goal)) {
            x = cand;
        }
    }
    return x;
}

#ifdef PASS_SCAN
// One chunk of one row: c of the row's P.chunks. Its five words: the lowest
// id of a NaN or +Inf (0xffffffff: none), 1 if a logit is finite, the
// largest key, the lowest id holding that key, and how many keys are not
// NaN.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SUBGROUPS
        @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) sgn: u32,
#endif
        @builtin(local_invocation_index) lid: u32) {
#ifdef SUBGROUPS
    sg_init(sid, sgn);
#endif
    let g = wg_index(wid, nwg);
    let r = g / P.chunks;
    if (r >= P.rows) {
        return;
    }
    let c = g % P.chunks;
    let out_row = P.row0 + r;
    let row = Row(out_row * P.V, out_row * 2u * P.V, 0.0, P.V, 0u);
    let end = min(P.V, (c + 1u) * CHUNK);
    var bad = 0xffffffffu;
    var fin = 0u;
    var mk = 0u;
    var first = 0xffffffffu;
    var cnt = 0u;
    // Each invocation's ids grow, so its first id with a new maximum is
    // its lowest one holding it.
    for (var i = c * CHUNK + lid; i < end; i += WG) {
        let v = lg(row, i);
        let b = bitcast<u32>(v);
        if (is_nan(v) || b == 0x7f800000u) {
            bad = min(bad, i);
        }
        if ((b & 0x7f800000u) != 0x7f800000u) {
            fin = 1u;
        }
        let k = okey(v);
        if (k != 0u) {
            cnt++;
        }
        if (k > mk || first == 0xffffffffu) {
            mk = k;
            first = i;
        }
    }
    bad = wg_min_u(lid, bad);
    fin = wg_max_u(lid, fin);
    cnt = wg_sum_u(lid, cnt);
    let top = wg_max_u(lid, mk);
    first = wg_min_u(lid, select(0xffffffffu, first, mk == top && first != 0xffffffffu));
    if (lid == 0u) {
        let o = (r * P.chunks + c) * 5u;
        part[o] = bad;
        part[o + 1u] = fin;
        part[o + 2u] = top;
        part[o + 3u] = first;
        part[o + 4u] = cnt;
    }
}
#else
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SUBGROUPS
        @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) sgn: u32,
#endif
        @builtin(local_invocation_index) lid: u32) {
#ifdef SUBGROUPS
    sg_init(sid, sgn);
#endif
    let r = wg_index(wid, nwg);
    if (r >= P.rows) {
        return;
    }
    let out_row = P.row0 + r;
    var row = Row(out_row * P.V, out_row * 2u * P.V, 0.0, P.V, 0u);

    // The row's chunks, combined: a row to refuse (its first NaN or +Inf,
    // or no finite logit at all), the largest key, the lowest id holding
    // it, and how many tokens are not NaN.
    var bad = 0xffffffffu;
    var fin = 0u;
    var mk = 0u;
    var cnt = 0u;
    let p0 = r * P.chunks * 5u;
    for (var c = lid; c < P.chunks; c += WG) {
        let o = p0 + c * 5u;
        bad = min(bad, part[o]);
        fin = max(fin, part[o + 1u]);
        mk = max(mk, part[o + 2u]);
        cnt += part[o + 4u];
    }
    bad = wg_min_u(lid, bad);
    fin = wg_max_u(lid, fin);
    mk = wg_max_u(lid, mk);
    cnt = wg_sum_u(lid, cnt);
    if (bad != 0xffffffffu || fin == 0u) {
        if (lid == 0u) {
            var code = 2u; // every logit is -Inf
            if (bad != 0xffffffffu) {
                code = select(1u, 0u, is_nan(lg(row, bad))) + 3u * bad;
            }
            ids[out_row] = -1 - i32(code);
        }
        return;
    }

    if (P.greedy == 1u || cnt == 0u) {
        // Argmax: the lowest id holding the largest key (all NaN: id 0,
        // which is also SampleRow's answer for an all-NaN row).
        var first = 0xffffffffu;
        for (var c = lid; c < P.chunks; c += WG) {
            let o = p0 + c * 5u;
            if (part[o + 2u] == mk) {
                first = min(first, part[o + 3u]);
            }
        }
        first = wg_min_u(lid, first);
        if (lid == 0u) {
            let pick = select(first, 0u, first == 0xffffffffu);
            ids[out_row] = i32(pick);
            count(row, pick);
        }
        return;
    }
    row.lmax = oval(mk);

    // The candidates (see CAP), and which of the two sets each step looks
    // at: cs when the answer is sure to lie among the candidates, else
    // the whole row.
    var xc = 0u;
    if (cnt > CAP) {
        xc = select_key(row, lid, CAP);
    }
    let nc = compact(row, lid, xc);
    var cs = row;
    cs.n = nc;
    cs.cand = 1u;

    // Min-p: the tokens at or above l_max + mdelta, all their ties kept.
    var kk = 1u; // every non-NaN key is ≥ 1
    var ck = 0xffffffffu;
    var n = cnt;
    if (P.minp == 1u) {
        kk = max(okey(row.lmax + P.mdelta), 1u);
        n = count_ge(row, lid, kk);
    }
    // Top-k: the k-th largest key, and among its ties the lowest ids (it
    // is at or above the min-p key when there are more than k of those).
    // Among the candidates when there are k of them.
    if (P.topk > 0u && P.topk < n) {
        var src = row;
        if (P.topk <= nc) {
            src = cs;
        }
        var x = 0u;
        for (var bit = 31; bit >= 0; bit--) {
            let cand = x | (1u << u32(bit));
            if (count_ge(src, lid, cand) >= P.topk) {
                x = cand;
            }
        }
        var above = 0u;
        if (x < 0xffffffffu) {
            above = count_ge(src, lid, x + 1u);
        }
        ck = nth_tie(src, lid, x, P.topk - above, x, 0xffffffffu);
        kk = x;
    }
    // From here on every kept token is a candidate once the kept keys
    // start above xc.
    var kept_src = row;
    if (kk > xc) {
        kept_src = cs;
    }
    var total = sum_ge(kept_src, lid, 1u, kk, ck);

    // Top-p: the shortest ranked prefix reaching topp · total; among the
    // candidates when their kept weight reaches the goal.
    if (P.topp > 0.0 && P.topp < 1.0) {
        let goal = P.topp * total;
        var src = kept_src;
        if (kk <= xc) {
            if (sum_ge(cs, lid, 1u, kk, ck) >= goal) {
                src = cs;
            }
        }
        let x = top_key(src, lid, goal, 0u, kk, ck);
        var above = 0.0;
        if (x < 0xffffffffu) {
            above = sum_ge(src, lid, x + 1u, kk, ck);
        }
        let ties = count_tie(src, lid, x, 0xffffffffu, kk, ck);
        let w = weight(row, oval(x));
        let need = u32(clamp(ceil((goal - above) / w), 1.0, f32(ties)));
        ck = nth_tie(src, lid, x, need, kk, ck);
        kk = x;
        if (kk > xc) {
            kept_src = cs;
        }
        total = sum_ge(kept_src, lid, 1u, kk, ck);
    }

    // The draw: the ranked token where the running weight passes u · total;
    // among the candidates when their kept weight passes it.
    let goal = P.u[r / 4u][r % 4u] * total;
    var pick = 0u;
    if (total > goal) {
        var src = kept_src;
        if (kk <= xc) {
            if (sum_ge(cs, lid, 1u, kk, ck) > goal) {
                src = cs;
            }
        }
        let x = top_key(src, lid, goal, 1u, kk, ck);
        var above = 0.0;
        if (x < 0xffffffffu) {
            above = sum_ge(src, lid, x + 1u, kk, ck);
        }
        let ties = count_tie(src, lid, x, 0xffffffffu, kk, ck);
        let w = weight(row, oval(x));
        let q = u32(clamp(floor((goal - above) / w) + 1.0, 1.0, f32(ties)));
        pick = nth_tie(src, lid, x, q, kk, ck);
    } else {
        // Rounding put the draw past the end: the last kept token, the
        // smallest kept key's highest kept id.
        var lo = 0xffffffffu;
        for (var j = lid; j < kept_src.n; j += WG) {
            let k = okey(item_v(kept_src, j));
            if (k != 0u && kept(k, item_id(kept_src, j), kk, ck)) {
                lo = min(lo, k);
            }
        }
        lo = wg_min_u(lid, lo);
        var hi = 0u;
        for (var j = lid; j < kept_src.n; j += WG) {
            let k = okey(item_v(kept_src, j));
            let i = item_id(kept_src, j);
            if (k == lo && kept(k, i, kk, ck)) {
                hi = max(hi, i);
            }
        }
        pick = wg_max_u(lid, hi);
    }
    if (lid == 0u) {
        ids[out_row] = i32(pick);
        count(row, pick);
    }
}
#endif
