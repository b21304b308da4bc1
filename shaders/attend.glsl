/* Attention core of fac.comp and dense.comp: flash-decoding over a token
 * list split across workgroups.  CPU statement: src/cpu/cpu_kernels.c
 * attend_batch / reduce_partials.
 *
 * One workgroup per (split of at most S tokens, row, head batch).  A batch
 * is 4*NHV query heads sharing one KV head: each K and V row is read once
 * for all of them.  Rows: dense -> KV head (G heads); fac per head -> query
 * head (1 head); fac per group -> KV head (G heads); groups larger than a
 * batch take several batches (grid y = row * n_batches + batch).
 *   1. one thread per token: scaled q.k for the batch's heads (four heads per
 *      vec4, q transposed in shared memory), kept in shared memory
 *   2. the split maximum m (online-softmax start -FLT_MAX/2), p = exp(s - m),
 *      l = sum p
 *   3. the threads sweep the V rows across their dims: acc += p * v
 *   4. token-parity replicas of acc are summed; the split writes the partial
 *      (m, l, acc[d]) of each head; reduce.comp combines the splits.
 * No loop contains a barrier and no register array is indexed at run time:
 * llvmpipe (lavapipe) runs either many times slower.
 * GATHER: tokens come from the selection rows (fac), else a range (dense). */
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "storage.glsl"

layout(local_size_x_id = 0) in;                /* 256 (a multiple of 16) */
layout(constant_id = 2) const uint MAXD = 512; /* largest head dim */
layout(constant_id = 3) const bool EXT_KV = false; /* K and V are an engine's (ext_row) */

#ifndef NHV
#define NHV 1   /* vec4 head groups per batch: 1 (4 heads) or 2 (8 heads) */
#endif
#define S (512u / uint(NHV)) /* tokens per split */

/* flags: 1 = per-group selection rows, 2 = paged; cps: chunks of S tokens
 * per split; EXT_KV: k_tab/v_tab are the rows' base, ts/hs the strides in
 * words; paged: the sequence's block table at `table`, log2(block size)
 * tshift. */
#define PARAMS                                                                                     \
    uvec2 k_tab, v_tab, scratch;                                                                   \
    uint q_off, part_off, sel_off, kv_stride;                                                      \
    uint kv_shift, d, G, flags;                                                                    \
    uint count, n_batches, max_n_fac, maxs;                                                        \
    float scale;                                                                                   \
    uint cps;                                                                                      \
    uint ts, hs;                                                                                   \
    uvec2 table;                                                                                   \
    uint tshift;
#if GATHER
#define BATCH_ITEM()                                                                               \
    pc.scratch = item_addr(pc.scratch, bpc.item_words);                                            \
    pc.table = addr_add(pc.table, item_word(ITEM_TABLE));
#else /* dense: the item's tokens and splits */
#define BATCH_ITEM()                                                                               \
    pc.scratch = item_addr(pc.scratch, bpc.item_words);                                            \
    pc.table = addr_add(pc.table, item_word(ITEM_TABLE));                                          \
    pc.count = item_word(ITEM_L);                                                                  \
    pc.cps = item_word(ITEM_CPS);
#endif
#include "params.glsl"

#define WG gl_WorkGroupSize.x
#if STORAGE_16
#define EPW 2u  /* elements per word */
#else
#define EPW 1u
#endif

shared vec4 sq[NHV * MAXD];  /* q^T of the batch, then the replicas of acc */
shared vec4 ssc[NHV * S];    /* scores, then weights p */
shared uint stok[S];
shared vec4 sred[NHV * 16u];

uint g_, h0_, nh_, n_;
#define QW 4u                /* words per thread in the V sweep */
#define EQ (QW * EPW)        /* elements per thread: 8 (f16) or 4 (f32) */
vec4 a0, a1, a2, a3, a4, a5, a6, a7; /* acc of heads 0-3 for the thread's elements */
#if NHV == 2
vec4 b0, b1, b2, b3, b4, b5, b6, b7; /* heads 4-7 */
#endif

uint token_at(uint r, uint i)
{
#if GATHER
    return Words(pc.scratch).w[pc.sel_off + r * pc.max_n_fac + i];
#else
    return i;
#endif
}

/* The K or V row of (KV head g_, physical row tok): a buffer and the word offset
 * of the row in it, in libfasa's chunked arrays or an engine's layout. */
Words kv_row(uvec2 tab, uint tok, uint W, out uint off)
{
    if (EXT_KV) {
        off = 0u;
        return Words(ext_row(tab, tok, pc.ts, g_, pc.hs));
    }
    uint row = g_ * pc.kv_stride + tok;
    off = chunk_off(row, pc.kv_shift, W);
    return Words(chunk_addr(tab, row, pc.kv_shift));
}

void load_q()
{
    Floats fs = Floats(pc.scratch);
    for (uint i = gl_LocalInvocationID.x; i < NHV * pc.d; i += WG) {
        uint hv = i / pc.d, c = i - hv * pc.d;
        vec4 q = vec4(0.0);
        for (uint k = 0u; k < 4u; k++)
            if (4u * hv + k < nh_) q[k] = fs.f[pc.q_off + (h0_ + 4u * hv + k) * pc.d + c];
        sq[i] = q;
    }
}

/* The split's tokens as physical rows: a paged cache maps each logical
 * token once here (not in every kv_row call of the scores and the V sweep). */
void load_tokens(uint r, uint t0)
{
    bool paged = (pc.flags & 2u) != 0u; /* uniform: unpaged caches keep row == token */
    for (uint i = gl_LocalInvocationID.x; i < n_; i += WG) {
        uint tok = token_at(r, t0 + i);
        stok[i] = paged ? row_of(pc.table, pc.tshift, tok) : tok;
    }
}

void scale_acc(vec4 c0, vec4 c1)
{
    a0 *= c0, a1 *= c0, a2 *= c0, a3 *= c0, a4 *= c0, a5 *= c0, a6 *= c0, a7 *= c0;
#if NHV == 2
    b0 *= c1, b1 *= c1, b2 *= c1, b3 *= c1, b4 *= c1, b5 *= c1, b6 *= c1, b7 *= c1;
#endif
}

/* q.k of the four heads of group hv for K row `row` (one accumulator per loop). */
vec4 qk(Words k, uint off, uint hv)
{
    vec4 s = vec4(0.0);
    uint base = hv * pc.d;
#if STORAGE_16
    for (uint w = 0u; w < (pc.d >> 1); w++) {
        vec2 v = unpack2(k.w[off + w]);
        s += sq[base + 2u * w] * v.x + sq[base + 2u * w + 1u] * v.y;
    }
#else
    for (uint w = 0u; w < pc.d; w++) s += sq[base + w] * uintBitsToFloat(k.w[off + w]);
#endif
    return s;
}

void scores()
{
    uint W = pc.d / EPW;
    for (uint i = gl_LocalInvocationID.x; i < n_; i += WG) {
        uint off;
        Words k = kv_row(pc.k_tab, stok[i], W, off);
        ssc[i] = qk(k, off, 0u) * pc.scale;
#if NHV == 2
        ssc[S + i] = qk(k, off, 1u) * pc.scale;
#endif
    }
}

/* Max (is_max) or sum of ssc[hv * S + 0 .. n_) for each hv, two levels. */
vec4 split_reduce(uint hv, bool is_max)
{
    uint lid = gl_LocalInvocationID.x;
    if (lid < 16u) {
        vec4 r = is_max ? vec4(NEG_START) : vec4(0.0);
        for (uint i = lid; i < n_; i += 16u) r = is_max ? max(r, ssc[hv * S + i]) : r + ssc[hv * S + i];
        sred[hv * 16u + lid] = r;
    }
    barrier();
    vec4 r = is_max ? vec4(NEG_START) : vec4(0.0);
    for (uint i = 0u; i < 16u; i++) r = is_max ? max(r, sred[hv * 16u + i]) : r + sred[hv * 16u + i];
    barrier();
    return r;
}

void weights(vec4 m0, vec4 m1)
{
    for (uint i = gl_LocalInvocationID.x; i < n_; i += WG) {
        ssc[i] = exp(ssc[i] - m0);
#if NHV == 2
        ssc[S + i] = exp(ssc[S + i] - m1);
#endif
    }
}

/* acc element e (0..7, a constant after unrolling) += p * v. */
void add_elem(uint e, float v, vec4 p0, vec4 p1)
{
    if (e == 0u) a0 += p0 * v; else if (e == 1u) a1 += p0 * v; else if (e == 2u) a2 += p0 * v;
    else if (e == 3u) a3 += p0 * v; else if (e == 4u) a4 += p0 * v; else if (e == 5u) a5 += p0 * v;
    else if (e == 6u) a6 += p0 * v; else a7 += p0 * v;
#if NHV == 2
    if (e == 0u) b0 += p1 * v; else if (e == 1u) b1 += p1 * v; else if (e == 2u) b2 += p1 * v;
    else if (e == 3u) b3 += p1 * v; else if (e == 4u) b4 += p1 * v; else if (e == 5u) b5 += p1 * v;
    else if (e == 6u) b6 += p1 * v; else b7 += p1 * v;
#endif
}

/* Threads sweep V: replica `rep` of nrep takes tokens rep, rep + nrep, ...;
 * a thread owns the QW words from qi * QW of each row: one weight load from
 * shared memory feeds QW * EPW multiply-adds per head group. */
void sweep_v(uint rep, uint nrep, uint qi, uint W)
{
    uint w0 = qi * QW;
    for (uint t = rep; t < n_; t += nrep) {
        uint off;
        Words v = kv_row(pc.v_tab, stok[t], W, off);
        off += w0;
        vec4 p0 = ssc[t];
#if NHV == 2
        vec4 p1 = ssc[S + t];
#else
        vec4 p1 = vec4(0.0);
#endif
        [[unroll]] for (uint k = 0u; k < QW; k++) {
            if (w0 + k >= W) break;
            uint x = v.w[off + k];
#if STORAGE_16
            vec2 h = unpack2(x);
            add_elem(2u * k, h.x, p0, p1);
            add_elem(2u * k + 1u, h.y, p0, p1);
#else
            add_elem(k, uintBitsToFloat(x), p0, p1);
#endif
        }
    }
}

/* acc element e (0..7) of the thread, for head group hv. */
vec4 acc_at(uint hv, uint e)
{
#if NHV == 2
    if (hv == 1u) return e == 0u ? b0 : e == 1u ? b1 : e == 2u ? b2 : e == 3u ? b3 : e == 4u ? b4 : e == 5u ? b5 : e == 6u ? b6 : b7;
#endif
    return e == 0u ? a0 : e == 1u ? a1 : e == 2u ? a2 : e == 3u ? a3 : e == 4u ? a4 : e == 5u ? a5 : e == 6u ? a6 : a7;
}

void write_partial(uint h, uint split, uint c, float v)
{
    Floats(pc.scratch).f[pc.part_off + ((h0_ + h) * pc.maxs + split) * (pc.d + 2u) + 2u + c] = v;
}

/* One replica: each sweeping thread writes its own dims. */
void write_direct(uint qi, uint W, bool in_sweep, uint split)
{
    for (uint e = 0u; in_sweep && e < EQ; e++) {
        uint w = qi * QW + e / EPW;
        if (w >= W) break;
        uint c = w * EPW + e % EPW;
        for (uint h = 0u; h < nh_; h++) write_partial(h, split, c, acc_at(h >> 2, e)[h & 3u]);
    }
}

/* Several replicas: sum them through shared memory (q is no longer needed). */
void write_summed(uint lid, uint nrep, uint Q, bool in_sweep, uint split)
{
    if (in_sweep)
        for (uint e = 0u; e < EQ; e++)
            for (uint hv = 0u; hv < NHV; hv++) sq[(lid * EQ + e) * NHV + hv] = acc_at(hv, e);
    barrier();
    for (uint i = lid; i < nh_ * pc.d; i += WG) {
        uint h = i / pc.d, c = i - h * pc.d, cw = c / EPW, qi = cw / QW, e = (cw - qi * QW) * EPW + c % EPW;
        float sum = 0.0;
        for (uint rr = 0u; rr < nrep; rr++) sum += sq[((rr * Q + qi) * EQ + e) * NHV + (h >> 2)][h & 3u];
        write_partial(h, split, c, sum);
    }
}

void main()
{
    LOAD_PARAMS();
#if BATCH && !GATHER
    if (gl_WorkGroupID.x >= item_word(ITEM_SPLITS)) return; /* past this item's splits */
#endif
    uint lid = gl_LocalInvocationID.x;
    uint split = gl_WorkGroupID.x, r = gl_WorkGroupID.y / pc.n_batches, batch = gl_WorkGroupID.y % pc.n_batches;
#if GATHER
    bool per_group = (pc.flags & 1u) != 0u;
    g_ = per_group ? r : r / pc.G;
    uint hr = per_group ? r * pc.G : r, nr = per_group ? pc.G : 1u;
#else
    g_ = r;
    uint hr = r * pc.G, nr = pc.G;
#endif
    h0_ = hr + batch * 4u * NHV;
    nh_ = min(4u * NHV, nr - batch * 4u * NHV);
    uint W = pc.d / EPW, Q = (W + QW - 1u) / QW;
    /* replicas of the sweep: as many as the workgroup and the combine area allow */
    uint nrep = max(1u, min(WG / Q, MAXD / (Q * EQ)));
    uint rep = lid / Q, qi = lid - rep * Q;
    bool in_sweep = rep < nrep;
    load_q();
    vec4 m0 = vec4(NEG_START), m1 = vec4(NEG_START), l0 = vec4(0.0), l1 = vec4(0.0);
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vec4(0.0);
#if NHV == 2
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = vec4(0.0);
#endif
    /* usually one chunk; very long dense splits take several (online softmax) */
    for (uint ch = 0u; ch < pc.cps; ch++) {
        uint t0 = (split * pc.cps + ch) * S;
        if (t0 >= pc.count) break;
        n_ = min(pc.count - t0, S);
        load_tokens(r, t0);
        barrier();
        scores();
        barrier();
        vec4 n0 = max(m0, split_reduce(0u, true)), n1 = m1;
#if NHV == 2
        n1 = max(m1, split_reduce(1u, true));
#endif
        vec4 c0 = exp(m0 - n0), c1 = exp(m1 - n1);
        m0 = n0, m1 = n1;
        weights(m0, m1);
        barrier();
        l0 = l0 * c0 + split_reduce(0u, false);
#if NHV == 2
        l1 = l1 * c1 + split_reduce(1u, false);
#endif
        scale_acc(c0, c1);
        if (in_sweep) sweep_v(rep, nrep, qi, W);
        barrier();
    }
    if (nrep == 1u) write_direct(qi, W, in_sweep, split);
    else write_summed(lid, nrep, Q, in_sweep, split);
    if (lid < nh_) {
        uint at = pc.part_off + ((h0_ + lid) * pc.maxs + split) * (pc.d + 2u);
        vec4 m = lid < 4u ? m0 : m1, l = lid < 4u ? l0 : l1;
        Floats(pc.scratch).f[at] = m[lid & 3u];
        Floats(pc.scratch).f[at + 1u] = l[lid & 3u];
    }
}
