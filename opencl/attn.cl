/*
 * fac and dense: exact softmax attention (scale 1/sqrt(d), fp32) as
 * flash-decoding: the tokens are split over work-groups, each writes a
 * partial (m, l, acc[d]) per query head, and fasa_attn_reduce combines the
 * partials of a head.  The online softmax starts from NEG_START (finite);
 * tokens outside the storage chunk get an explicit zero weight.
 *
 * One work-group serves nh query heads that share a token list (the G
 * heads of a group for dense and per-group FAC, in batches of hb_size;
 * one head for per-head FAC), so every K/V row it reads is used by all of
 * them.  Per block of WG_ATTN tokens:
 *   1. each work-item scores one token for the nh heads (q in local memory)
 *   2. a tree reduction gives the block maximum per head; weights
 *      p = exp(s - m_new) go to local memory
 *   3. work-items form token lanes of W2 = min(WG, d/8) items; an item owns
 *      8-dim chunks and accumulates p * V[token][chunk] (16-byte loads) over
 *      its lane's tokens; the lanes are summed once at the end of the split
 *
 * Partials: part[(h * pmax + slot) * (d + 2) + {0: m, 1: l, 2..: acc}].
 */

#define DC_MAX 64 /* chunks of 8 dims in the largest head (d <= 512) */
#define ATT_DCPT ((DC_MAX + WG_ATTN - 1) / WG_ATTN) /* dim chunks per work-item */
#define ATT_REDV (WG_ATTN * 8 > 512 ? WG_ATTN * 8 : 512)

/* Eight elements of a row from element c (zero past d); rows that do not
 * start on a multiple of 8 elements (d % 8 != 0, or an external layout:
 * vec8 = 0) are read element by element. */
static inline float8 ld8g(__global const store_t *row, uint c, uint d, uint vec8)
{
    if ((d & 7u) == 0u) return ld8a(row, c, vec8);
    float t[8];
    for (uint j = 0; j < 8; j++) t[j] = c + j < d ? ld1(row, c + j) : 0.0f;
    return vload8(0, t);
}

/* Where K and V rows live: the row of (KV head g, token j) starts at
 * element base + j * ts + g * hs of the buffer (libfasa's storage chunks:
 * base = -(gk0 * tpb + t0) * d, ts = d, hs = tpb * d; an engine's K/V:
 * its offset and strides).  vec8: every row starts on a multiple of 8
 * elements and d % 8 == 0 (16-byte loads).  Paged caches (paged = 1):
 * token j of the sequence is row row_of(tab, shift, j) (tab: the step's
 * block table), mapped in kv_row; otherwise token j is row j. */
typedef struct kv_view {
    long k_base, v_base;
    uint ts, hs, vec8;
    __global const uint *tab;
    uint shift, paged;
} kv_view;

static inline __global const store_t *kv_row(__global const store_t *buf, long base, const kv_view *w, uint g,
                                             uint j)
{
    uint r = w->paged ? row_of(w->tab, w->shift, j) : j;
    return buf + (base + (long)r * w->ts + (long)g * w->hs);
}

static inline void attend(__global const store_t *kbuf, __global const store_t *vbuf, uint d,
                          const kv_view *w, uint g, uint h0, uint nh,
                          __global const float *q, __global const int *list, uint first,
                          uint count, uint t_lo, uint t_hi, float scale,
                          __global float *part, uint head_stride, __local float *ql,
                          __local float *s_l, __local float *red, __local int *tok_l,
                          __local float *mrun, __local float *redv)
{
    uint lid = get_local_id(0);
    /* phase-3 layout: W2 work-items per token lane, each owning dim chunks
     * dc = lid % W2 + i * W2 (8 dims each); lanes walk the block's tokens */
    uint DC = (d + 7) / 8, W2 = min((uint)WG_ATTN, DC), lanes = WG_ATTN / W2;
    uint lane = lid / W2, dc0 = lid % W2;
    bool active = lane < lanes;
    for (uint i = lid; i < nh * d; i += WG_ATTN) ql[i] = q[(size_t)h0 * d + i];
    if (lid < ATT_HB) mrun[lid] = NEG_START;
    float8 acc[ATT_HB][ATT_DCPT];
    float lpart[ATT_HB];
    for (uint m = 0; m < ATT_HB; m++) {
        lpart[m] = 0.0f;
        for (uint i = 0; i < ATT_DCPT; i++) acc[m][i] = (float8)(0.0f);
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    for (uint b0 = 0; b0 < count; b0 += WG_ATTN) {
        /* 1. scores of this work-item's token */
        uint i = b0 + lid;
        int j = -1;
        if (i < count) {
            uint jj = list ? (uint)list[i] : first + i;
            if (jj >= t_lo && jj < t_hi) j = (int)jj;
        }
        tok_l[lid] = j;
        float sacc[ATT_HB];
        FOR_HEAD(m, nh, ATT_HB) sacc[m] = 0.0f;
        if (j >= 0) {
            __global const store_t *row = kv_row(kbuf, w->k_base, w, g, (uint)j);
            if ((d & 7u) == 0u) {
                /* heads outer: one accumulator live (the row is re-read
                 * from cache), which keeps GPU register pressure low */
                FOR_HEAD(m, nh, ATT_HB) {
                    float8 a = (float8)(0.0f);
                    for (uint c = 0; c < d; c += 8) a += vload8(0, ql + m * d + c) * ld8a(row, c, w->vec8);
                    sacc[m] = hsum8(a);
                }
            } else {
                for (uint c = 0; c < d; c++) {
                    float k = ld1(row, c);
                    FOR_HEAD(m, nh, ATT_HB) sacc[m] += ql[m * d + c] * k;
                }
            }
        }
        FOR_HEAD(m, nh, ATT_HB) {
            float v = j >= 0 ? sacc[m] * scale : NEG_START;
            s_l[m * WG_ATTN + lid] = v;
            red[m * WG_ATTN + lid] = v;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        /* 2. block maximum per head, then the weights */
        for (uint off = WG_ATTN / 2; off > 0; off >>= 1) {
            if (lid < off)
                for (uint m = 0; m < nh; m++)
                    red[m * WG_ATTN + lid] = fmax(red[m * WG_ATTN + lid], red[m * WG_ATTN + lid + off]);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        for (uint m = 0; m < nh; m++) {
            float mn = fmax(mrun[m], red[m * WG_ATTN]);
            s_l[m * WG_ATTN + lid] = j >= 0 ? exp(s_l[m * WG_ATTN + lid] - mn) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        /* 3. rescale, then accumulate p * V over this lane's tokens */
        if (active) {
            uint nb = min((uint)WG_ATTN, count - b0);
            FOR_HEAD(m, nh, ATT_HB) {
                float corr = exp(mrun[m] - fmax(mrun[m], red[m * WG_ATTN]));
                lpart[m] *= corr;
                for (uint ii = 0; ii < ATT_DCPT; ii++) acc[m][ii] *= corr;
            }
            for (uint t = lane; t < nb; t += lanes) {
                int jt = tok_l[t];
                if (jt < 0) continue;
                __global const store_t *vrow = kv_row(vbuf, w->v_base, w, g, (uint)jt);
                for (uint ii = 0; ii < ATT_DCPT; ii++) {
                    uint dc = dc0 + ii * W2;
                    if (dc >= DC) break;
                    float8 v8 = ld8g(vrow, dc * 8, d, w->vec8);
                    FOR_HEAD(m, nh, ATT_HB) acc[m][ii] += s_l[m * WG_ATTN + t] * v8;
                }
                if (dc0 == 0)
                    FOR_HEAD(m, nh, ATT_HB) lpart[m] += s_l[m * WG_ATTN + t];
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < nh) mrun[lid] = fmax(mrun[lid], red[lid * WG_ATTN]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    /* sum the lanes' accumulators, one head at a time */
    for (uint m = 0; m < nh; m++) {
        if (active) {
            for (uint ii = 0; ii < ATT_DCPT; ii++) {
                uint dc = dc0 + ii * W2;
                if (dc < DC) vstore8(acc[m][ii], 0, redv + lane * DC * 8 + dc * 8);
            }
            if (dc0 == 0) red[lane] = lpart[m];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        __global float *pm = part + (size_t)m * head_stride;
        for (uint c = lid; c < d; c += WG_ATTN) {
            float a = 0.0f;
            for (uint ln = 0; ln < lanes; ln++) a += redv[ln * DC * 8 + c];
            pm[2 + c] = a;
        }
        if (lid == 0) {
            float l = 0.0f;
            for (uint ln = 0; ln < lanes; ln++) l += red[ln];
            pm[0] = mrun[m];
            pm[1] = l;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

/* dense: tokens [tok_lo, tok_lo + n_tok) of one storage chunk, split into
 * runs of split_len.  Grid: dim 0 = splits, dim 1 = (g - g_lo) * nhb + head
 * batch.  The partial slot is part_base + split.  K/V rows: kv_view (tab,
 * tab_off, shift, paged: the block table of a paged cache's sequence; the
 * tokens are the sequence's, mapped to rows in kv_row). */
__kernel __attribute__((reqd_work_group_size(WG_ATTN, 1, 1)))
void fasa_dense(__global const store_t *kbuf, __global const store_t *vbuf, uint d, long k_base,
                long v_base, uint ts, uint hs, uint vec8, __global const uint *tab, ulong tab_off, uint shift,
                uint paged, uint g_lo, uint nhb, uint hb_size, __global const float *q,
                ulong q_off, uint G, uint tok_lo, uint n_tok, uint split_len,
                __global float *part, uint pmax, uint part_base, float scale)
{
    __local float ql[ATT_QL];
    __local float s_l[ATT_HB * WG_ATTN], red[ATT_HB * WG_ATTN];
    __local int tok_l[WG_ATTN];
    __local float mrun[ATT_HB], redv[ATT_REDV];
    uint s = get_group_id(0), u = get_group_id(1);
    uint g = g_lo + u / nhb, hb = u % nhb;
    uint h0 = g * G + hb * hb_size, nh = min(hb_size, G - hb * hb_size);
    uint first = tok_lo + s * split_len, count = min(split_len, n_tok - s * split_len);
    uint head_stride = pmax * (d + 2);
    kv_view w = {k_base, v_base, ts, hs, vec8, tab + tab_off, shift, paged};
    attend(kbuf, vbuf, d, &w, g, h0, nh, q + q_off, 0, first, count, first,
           first + count, scale, part + ((size_t)h0 * pmax + part_base + s) * (d + 2),
           head_stride, ql, s_l, red, tok_l, mrun, redv);
}

/* fac: the selected tokens of row r (sel[r][0..n_fac)), split into runs of
 * split_len; tokens outside this chunk's [t0, t_end) are skipped.  The
 * selection holds sequence tokens; a paged cache's are mapped to rows
 * through the block table (kv_view) after that test.
 * Per-head selection: dim 1 = h - g_lo * G (one head per work-group);
 * per-group: dim 1 = (g - g_lo) * nhb + head batch. */
#define ATT_LOCALS                                                                                         \
    __local float ql[ATT_QL];                                                                              \
    __local float s_l[ATT_HB * WG_ATTN], red[ATT_HB * WG_ATTN];                                           \
    __local int tok_l[WG_ATTN];                                                                            \
    __local float mrun[ATT_HB], redv[ATT_REDV]

static inline void fac_body(__global const store_t *kbuf, __global const store_t *vbuf, uint d, long k_base,
                            long v_base, uint ts, uint hs, uint vec8, __global const uint *tab, ulong tab_off,
                            uint shift, uint paged, uint t0, uint t_end, uint g_lo, uint nhb, uint hb_size,
                            __global const float *q, ulong q_off, uint G, uint per_group,
                            __global const int *sel, uint sel_stride, uint n_fac, uint split_len,
                            __global float *part, uint pmax, uint part_base, float scale, __local float *ql,
                            __local float *s_l, __local float *red, __local int *tok_l, __local float *mrun,
                            __local float *redv)
{
    uint s = get_group_id(0), u = get_group_id(1);
    uint g, h0, nh, r;
    if (per_group) {
        uint hb = u % nhb;
        g = g_lo + u / nhb;
        h0 = g * G + hb * hb_size;
        nh = min(hb_size, G - hb * hb_size);
        r = g;
    } else {
        h0 = g_lo * G + u;
        g = h0 / G;
        nh = 1;
        r = h0;
    }
    uint first = s * split_len, count = min(split_len, n_fac - first);
    uint head_stride = pmax * (d + 2);
    kv_view w = {k_base, v_base, ts, hs, vec8, tab + tab_off, shift, paged};
    attend(kbuf, vbuf, d, &w, g, h0, nh, q + q_off, sel + (size_t)r * sel_stride + first,
           0, count, t0, t_end, scale, part + ((size_t)h0 * pmax + part_base + s) * (d + 2),
           head_stride, ql, s_l, red, tok_l, mrun, redv);
}

__kernel __attribute__((reqd_work_group_size(WG_ATTN, 1, 1)))
void fasa_fac(__global const store_t *kbuf, __global const store_t *vbuf, uint d, long k_base,
              long v_base, uint ts, uint hs, uint vec8, __global const uint *tab, ulong tab_off, uint shift,
              uint paged, uint t0, uint t_end, uint g_lo, uint nhb, uint hb_size,
              __global const float *q, ulong q_off, uint G, uint per_group,
              __global const int *sel, uint sel_stride, uint n_fac, uint split_len,
              __global float *part, uint pmax, uint part_base, float scale)
{
    ATT_LOCALS;
    fac_body(kbuf, vbuf, d, k_base, v_base, ts, hs, vec8, tab, tab_off, shift, paged, t0, t_end, g_lo, nhb, hb_size, q,
             q_off, G, per_group, sel, sel_stride, n_fac, split_len, part, pmax, part_base, scale, ql, s_l, red, tok_l,
             mrun, redv);
}

/* Batch (item = dim 2): the item's q (element BP_QR of q), block table,
 * selection and partials (pmax = the step's n_parts slots per head, one
 * storage chunk: part_base 0); the split is the same for every item. */
__kernel __attribute__((reqd_work_group_size(WG_ATTN, 1, 1)))
void fasa_fac_b(__global const store_t *kbuf, __global const store_t *vbuf, uint d, long k_base,
                long v_base, uint ts, uint hs, uint vec8, __global const uint *tab, uint shift, uint paged,
                uint t0, uint t_end, uint g_lo, uint nhb, uint hb_size, __global const float *q, uint G,
                uint per_group, uint sel_stride, uint n_fac, uint split_len, uint pmax, float scale,
                __global uint *bs, __global const uint *prm, uint item0)
{
    ATT_LOCALS;
    __global const uint *p = bp_item(prm, item0);
    fac_body(kbuf, vbuf, d, k_base, v_base, ts, hs, vec8, tab, bp_u64(p, BP_TAB), shift, paged, t0, t_end, g_lo, nhb,
             hb_size, q, bp_u64(p, BP_QR), G, per_group, (__global const int *)(bs + p[BP_SEL]), sel_stride, n_fac,
             split_len, (__global float *)(bs + p[BP_PART]), pmax, 0u, scale, ql, s_l, red, tok_l, mrun, redv);
}

/* o[h] from the n_parts partials of head h (one work-group per head), in
 * the io type o_type (fasa_io_type: 0 fp32, 1 fp16, 2 bf16; 16-bit ones
 * rounded to nearest even); o_off counts elements of that type. */
static inline void reduce_body(__global const float *part, uint pmax, uint n_parts, uint d,
                               __global float *o, ulong o_off, uint o_type, __local float *wl)
{
    uint h = get_group_id(0), lid = get_local_id(0);
    __global const float *base = part + (size_t)h * pmax * (d + 2);
    float m = NEG_START;
    for (uint i = 0; i < n_parts; i++) m = fmax(m, base[(size_t)i * (d + 2)]);
    for (uint i = lid; i < n_parts; i += WG_RED) wl[i] = exp(base[(size_t)i * (d + 2)] - m);
    barrier(CLK_LOCAL_MEM_FENCE);
    float l = 0.0f;
    for (uint i = 0; i < n_parts; i++) l += base[(size_t)i * (d + 2) + 1] * wl[i];
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (uint c = lid; c < d; c += WG_RED) {
        float a = 0.0f;
        for (uint i = 0; i < n_parts; i++) a += base[(size_t)i * (d + 2) + 2 + c] * wl[i];
        float x = a * inv;
        size_t at = o_off + (size_t)h * d + c;
        if (o_type == 0u) o[at] = x;
        else if (o_type == 1u) vstore_half_rte(x, at, (__global half *)o);
        else ((__global ushort *)o)[at] = f2b(x);
    }
}

__kernel __attribute__((reqd_work_group_size(WG_RED, 1, 1)))
void fasa_attn_reduce(__global const float *part, uint pmax, uint n_parts, uint d,
                      __global float *o, ulong o_off, uint o_type)
{
    __local float wl[RED_PMAX];
    reduce_body(part, pmax, n_parts, d, o, o_off, o_type, wl);
}

/* Batch (item = dim 2): the item's partials into its o (element BP_O). */
__kernel __attribute__((reqd_work_group_size(WG_RED, 1, 1)))
void fasa_attn_reduce_b(uint pmax, uint n_parts, uint d, __global float *o, uint o_type, __global uint *bs,
                        __global const uint *prm, uint item0)
{
    __local float wl[RED_PMAX];
    __global const uint *p = bp_item(prm, item0);
    reduce_body((__global const float *)(bs + p[BP_PART]), pmax, n_parts, d, o, bp_u64(p, BP_O), o_type, wl);
}
