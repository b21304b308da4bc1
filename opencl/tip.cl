/*
 * tip: S[row][j] = sum over I_h of q[h][c] * K[g][j][c]   (docs/SPEC.md §2)
 *
 * As on the CPU, TIP is the dot product of a masked query (q[h][c] where
 * union slot c of U_g belongs to I_h, else 0) with the K_dom row; the
 * oracle uses the full q and the full K row.  Per-group selection sums the
 * G head scores in head order.  The first radix pass of the top-k (a
 * histogram of the top key byte over the candidate window [lo, hi)) can be
 * fused into the epilogue (do_hist), so the scores are not read again for
 * it.  That histogram is skewed (similar scores share sign and exponent),
 * so on GPUs its local atomics conflict; the GPU preset leaves it to the
 * pass kernel, which counts runs of equal bins in registers first.
 */

/* q of a step in a 16-bit io type (fasa_decode_desc.q_type; type is the
 * fasa_dtype value, 0 fp16 or 2 bf16) widened to fp32, exactly: the n
 * elements from element off of src into dst. */
__kernel void fasa_widen(__global const uchar *src, ulong off, uint n, uint type, __global float *dst)
{
    uint i = get_global_id(0);
    if (i < n) dst[i] = ld_any(src, off + i, type);
}

/* fasa_widen for every item of a batch (dim 2): item p's q from element
 * BP_QS of src into its qf region of the batch scratch bs. */
__kernel void fasa_widen_b(__global const uchar *src, uint n, uint type, __global uint *bs,
                           __global const uint *prm, uint item0)
{
    __global const uint *p = bp_item(prm, item0);
    uint i = get_global_id(0);
    if (i < n) ((__global float *)(bs + p[BP_QF]))[i] = ld_any(src, bp_u64(p, BP_QS) + i, type);
}

/* qm[h][s] for s < width: the masked (or, for the oracle, plain) query. */
static inline void tip_prep_body(__global const float *q, ulong q_off, uint d, uint width, uint oracle,
                                 __global const short *tip_map, ulong map_off, uint u_pad,
                                 __global float *qm)
{
    uint s = get_global_id(0), h = get_global_id(1);
    if (s >= width) return;
    __global const float *qh = q + q_off + (size_t)h * d;
    float v;
    if (oracle) {
        v = qh[s];
    } else {
        short m = tip_map[map_off + (size_t)h * u_pad + s];
        v = m >= 0 ? qh[m] : 0.0f;
    }
    qm[(size_t)h * width + s] = v;
}

__kernel void fasa_tip_prep(__global const float *q, ulong q_off, uint d, uint width, uint oracle,
                            __global const short *tip_map, ulong map_off, uint u_pad,
                            __global float *qm)
{
    tip_prep_body(q, q_off, d, width, oracle, tip_map, map_off, u_pad, qm);
}

/* Batch: q from element BP_QR of q (the caller's buffer, or bs itself
 * after fasa_widen_b), qm into the item's region. */
__kernel void fasa_tip_prep_b(__global const float *q, uint d, uint width, uint oracle,
                              __global const short *tip_map, ulong map_off, uint u_pad,
                              __global uint *bs, __global const uint *prm, uint item0)
{
    __global const uint *p = bp_item(prm, item0);
    tip_prep_body(q, bp_u64(p, BP_QR), d, width, oracle, tip_map, map_off, u_pad,
                  (__global float *)(bs + p[BP_QM]));
}

/*
 * A score depends only on the head's own dims (docs/SPEC.md §8).  The fast dot
 * product also multiplies the other heads' slots of U_g by an exact zero,
 * which adds nothing unless the K value there is NaN or Inf (0 * NaN and
 * 0 * Inf are NaN): so a score that is not NaN is already exact, and only a
 * NaN one is recomputed here over the head's own slots (tip_map >= 0), in
 * slot order, one fma per term (as src/cpu/cpu_kernels.c, own_score).  It
 * stays NaN when an own dim holds NaN or its products give Inf - Inf.  The
 * NaN test reads the bits, so no floating-point mode can drop it.
 */
static inline bool tip_is_nan(float x) { return (as_uint(x) & 0x7fffffffu) > 0x7f800000u; }

static float tip_own_score(__global const store_t *row, __local const float *qh, __global const short *map,
                           uint width)
{
    float acc = 0.0f;
    for (uint c = 0; c < width; c++)
        if (map[c] >= 0) acc = fma(qh[c], ld1(row, c), acc);
    return acc;
}

/*
 * Grid: dim 0 covers tokens [tok_lo, tok_lo + n_tok) in tiles of
 * WG_TIP * TIP_TPT; dim 1 = (KV head g - g_lo) * nhb + head block.  A
 * work-group scores TIP_HB query heads (per-head selection) or all G heads
 * of the group (per-group selection, then nhb = 1).
 * rows: K_dom (or K for the oracle), width elements per row; the row of
 * (KV head g, token j) starts at element base + j * ts + g * hs (a storage
 * chunk of heads [gk0, ...) with tpb tokens from t0: base = -(gk0 * tpb +
 * t0) * width, ts = width, hs = tpb * width; an external cache's K for the
 * oracle: the engine's offset and strides).  vec8: rows start on multiples
 * of 8 elements and width % 8 == 0 (16-byte loads).
 * scores/hist: the score block whose first KV head is sg0 (row stride cap).
 * tip_map (from element map_off: the layer's [Hq][width]) is read only when
 * own_check (not for the oracle, whose score is the full q . k).
 * Paged caches (paged = 1): tokens [tok_lo, tok_lo + n_tok) are the
 * sequence's, token j is row row_of(tab + tab_off, shift, j), and a
 * work-item scores j only when that row lies in [row_lo, row_hi) (the rows
 * `rows` holds: a storage chunk's, or every row); scores stay indexed by
 * j.  Otherwise token j is row j (the arithmetic is the same either way).
 */
static inline bool tip_row(__global const uint *tab, uint shift, uint paged, uint row_lo, uint row_hi, uint j,
                           uint *r)
{
    *r = j;
    if (!paged) return true;
    *r = row_of(tab, shift, j);
    return *r >= row_lo && *r < row_hi;
}

static inline void tip_body(__global const store_t *rows, uint width, long base, uint ts, uint hs, uint vec8,
                            uint tok_lo, uint n_tok, uint g_lo, uint nhb, __global const float *qm, uint G,
                            uint per_group, __global float *scores, uint cap, uint sg0,
                            __global uint *hist, uint do_hist, uint lo, uint hi,
                            __global const short *tip_map, ulong map_off, uint own_check,
                            __global const uint *tab, ulong tab_off, uint shift, uint paged, uint row_lo,
                            uint row_hi, __local float *ql, __local uint *lh)
{
    uint lid = get_local_id(0);
    uint g = g_lo + get_group_id(1) / nhb;
    uint hb_first = per_group ? 0u : get_group_id(1) % nhb;
    uint hb_end = per_group ? (G + TIP_HB - 1) / TIP_HB : hb_first + 1;
    uint tile = get_group_id(0) * (WG_TIP * TIP_TPT);
    uint n_rows_wg = per_group ? 1u : min((uint)TIP_HB, G - hb_first * TIP_HB);

    if (do_hist)
        for (uint i = lid; i < n_rows_wg * 256u; i += WG_TIP) lh[i] = 0u;
    float gs[TIP_TPT];
    for (uint tt = 0; tt < TIP_TPT; tt++) gs[tt] = 0.0f;

    for (uint hb = hb_first; hb < hb_end; hb++) {
        uint h0 = g * G + hb * TIP_HB;
        uint nb = min((uint)TIP_HB, G - hb * TIP_HB);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint i = lid; i < nb * width; i += WG_TIP) ql[i] = qm[(size_t)h0 * width + i];
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint tt = 0; tt < TIP_TPT; tt++) {
            uint i = tile + tt * WG_TIP + lid;
            if (i >= n_tok) continue;
            uint j = tok_lo + i, r;
            if (!tip_row(tab + tab_off, shift, paged, row_lo, row_hi, j, &r)) continue;
            __global const store_t *row = rows + (base + (long)r * ts + (long)g * hs);
            float s[TIP_HB], any = 0.0f;
            FOR_HEAD(m, nb, TIP_HB) s[m] = 0.0f;
            if ((width & 7u) == 0u) {
                float8 a[TIP_HB];
                FOR_HEAD(m, nb, TIP_HB) a[m] = (float8)(0.0f);
                for (uint c = 0; c < width; c += 8) {
                    float8 k8 = ld8a(row, c, vec8);
                    FOR_HEAD(m, nb, TIP_HB) a[m] += vload8(0, ql + m * width + c) * k8;
                }
                FOR_HEAD(m, nb, TIP_HB) {
                    s[m] = hsum8(a[m]);
                    any += s[m];
                }
            } else {
                for (uint c = 0; c < width; c++) {
                    float k = ld1(row, c);
                    FOR_HEAD(m, nb, TIP_HB) s[m] += ql[m * width + c] * k;
                }
                FOR_HEAD(m, nb, TIP_HB) any += s[m];
            }
            /* any NaN score makes their sum NaN (so may Inf - Inf between heads) */
            if (own_check && tip_is_nan(any))
                FOR_HEAD(m, nb, TIP_HB) if (tip_is_nan(s[m]))
                    s[m] = tip_own_score(row, ql + m * width, tip_map + map_off + (size_t)(h0 + m) * width, width);
            if (per_group) {
                FOR_HEAD(m, nb, TIP_HB) gs[tt] += s[m];
            } else {
                bool cand = do_hist && j >= lo && j < hi;
                FOR_HEAD(m, nb, TIP_HB) {
                    scores[(size_t)(h0 + m - sg0 * G) * cap + j] = s[m];
                    if (cand) TIP_ADD(&lh[m * 256u + (score_key(s[m]) >> 24)], 1u);
                }
            }
        }
    }
    if (per_group) {
        for (uint tt = 0; tt < TIP_TPT; tt++) {
            uint i = tile + tt * WG_TIP + lid;
            if (i >= n_tok) continue;
            uint j = tok_lo + i, r;
            if (!tip_row(tab + tab_off, shift, paged, row_lo, row_hi, j, &r)) continue;
            scores[(size_t)(g - sg0) * cap + j] = gs[tt];
            if (do_hist && j >= lo && j < hi) TIP_ADD(&lh[score_key(gs[tt]) >> 24], 1u);
        }
    }
    if (!do_hist) return;
    barrier(CLK_LOCAL_MEM_FENCE);
    uint row0 = per_group ? g - sg0 : g * G + hb_first * TIP_HB - sg0 * G;
    for (uint i = lid; i < n_rows_wg * 256u; i += WG_TIP) {
        uint c = lh[i];
        if (c) atomic_add(&hist[(size_t)(row0 + i / 256u) * 256u + (i & 255u)], c);
    }
}

__kernel __attribute__((reqd_work_group_size(WG_TIP, 1, 1)))
void fasa_tip(__global const store_t *rows, uint width, long base, uint ts, uint hs, uint vec8,
              uint tok_lo, uint n_tok, uint g_lo, uint nhb, __global const float *qm, uint G,
              uint per_group, __global float *scores, uint cap, uint sg0,
              __global uint *hist, uint do_hist, uint lo, uint hi,
              __global const short *tip_map, ulong map_off, uint own_check,
              __global const uint *tab, ulong tab_off, uint shift, uint paged, uint row_lo, uint row_hi)
{
    __local float ql[TIP_HB * 512];
    __local uint lh[TIP_HB * 256];
    tip_body(rows, width, base, ts, hs, vec8, tok_lo, n_tok, g_lo, nhb, qm, G, per_group, scores, cap, sg0, hist,
             do_hist, lo, hi, tip_map, map_off, own_check, tab, tab_off, shift, paged, row_lo, row_hi, ql, lh);
}

/* Batch (item = dim 2): tokens [0, L) of the item's sequence, its qm, its
 * score rows (row stride L, one scratch block: sg0 = 0), its histogram and
 * block table; the candidate window is [n_sink, L - n_recent).  The grid is
 * sized for the longest item: a group past the item's tokens returns. */
__kernel __attribute__((reqd_work_group_size(WG_TIP, 1, 1)))
void fasa_tip_b(__global const store_t *rows, uint width, long base, uint ts, uint hs, uint vec8,
                uint g_lo, uint nhb, uint G, uint per_group, uint do_hist, uint n_sink, uint n_recent,
                __global const short *tip_map, ulong map_off, uint own_check,
                __global const uint *tab, uint shift, uint paged, uint row_lo, uint row_hi,
                __global uint *bs, __global const uint *prm, uint item0)
{
    __local float ql[TIP_HB * 512];
    __local uint lh[TIP_HB * 256];
    __global const uint *p = bp_item(prm, item0);
    uint L = p[BP_L];
    if (get_group_id(0) * (WG_TIP * TIP_TPT) >= L) return;
    tip_body(rows, width, base, ts, hs, vec8, 0u, L, g_lo, nhb, (__global const float *)(bs + p[BP_QM]), G,
             per_group, (__global float *)(bs + p[BP_SCORES]), L, 0u, bs + p[BP_HIST], do_hist, n_sink,
             L - n_recent, tip_map, map_off, own_check, tab, bp_u64(p, BP_TAB), shift, paged, row_lo, row_hi, ql,
             lh);
}
