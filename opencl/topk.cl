/*
 * topk: exact top-k per selection row, ties to the lowest index, NaN lowest
 * (the order-preserving key of src/select.c), forced sink/recent tokens
 * first (docs/SPEC.md §8).
 *
 * Row r of a score block holds scores[r][0..L); the candidates are the
 * window [lo, lo + n_cand) between the forced ranges; k = n_fac - forced.
 * MSD radix select with 8-bit digits:
 *
 *   init            zero the histograms, reset the row state, write the
 *                   forced indices
 *   (tip epilogue)  histogram of key bits 31..24 over the window
 *   scan(24)        pick the digit holding the k-th largest key
 *   pass(16) scan   histogram of bits 23..16 of the keys matching the prefix
 *   pass(8)  scan   ... bits 15..8
 *   pass(0)  scan   ... bits 7..0: the threshold key tau is known
 *   count, emit     tile counts of keys > tau and == tau; then an
 *                   index-ordered emission of every key > tau and the
 *                   lowest-index keys == tau, so the output is
 *                   deterministic and ascending, as on the CPU.
 *
 * A pass whose surviving keys fit in a list compacts them, so later passes
 * read the short list instead of the whole window; a scan that finds the
 * chosen bin holding exactly the keys still needed ends the search early
 * (all of them are taken; no tie is split).  Histograms live in local
 * memory (local atomics, no subgroups) and are added into a global
 * histogram per row.  The grid is sized for the worst case; work-groups
 * with nothing to do return at once.
 */

static inline void topk_init_body(__global uint *state, __global uint *hist, __global int *sel, uint sel_stride,
                                  uint row_base, uint k, uint n_sink, uint n_recent, uint L)
{
    uint r = get_group_id(0), lid = get_local_id(0);
    for (uint b = lid; b < 256u; b += WG_TOPK) hist[(size_t)r * 256u + b] = 0u;
    for (uint w = lid; w < ST_WORDS; w += WG_TOPK)
        state[(size_t)r * ST_WORDS + w] = w == ST_NEED ? k : w == ST_DONE ? (uint)(k == 0u) : 0u;
    __global int *out = sel + (size_t)(row_base + r) * sel_stride;
    for (uint i = lid; i < n_sink + n_recent; i += WG_TOPK)
        out[i] = (int)(i < n_sink ? i : L - n_recent + (i - n_sink));
}

__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_init(__global uint *state, __global uint *hist, __global int *sel, uint sel_stride,
                    uint row_base, uint k, uint n_sink, uint n_recent, uint L)
{
    topk_init_body(state, hist, sel, sel_stride, row_base, k, n_sink, n_recent, L);
}

/* Batch (item = dim 2): the item's state, histograms and selection rows. */
__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_init_b(uint sel_stride, uint k, uint n_sink, uint n_recent, __global uint *bs,
                      __global const uint *prm, uint item0)
{
    __global const uint *p = bp_item(prm, item0);
    topk_init_body(bs + p[BP_STATE], bs + p[BP_HIST], (__global int *)(bs + p[BP_SEL]), sel_stride, 0u, k, n_sink,
                   n_recent, p[BP_L]);
}

/* Exclusive prefix sum of one uint per work-item over the work-group
 * (Hillis-Steele in local memory); *total receives the sum. */
static inline uint wg_excl_scan(uint v, __local uint *a, __local uint *b, uint *total)
{
    uint lid = get_local_id(0);
    a[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    __local uint *cur = a, *nxt = b;
    for (uint off = 1; off < WG_TOPK; off <<= 1) {
        nxt[lid] = cur[lid] + (lid >= off ? cur[lid - off] : 0u);
        barrier(CLK_LOCAL_MEM_FENCE);
        __local uint *t = cur;
        cur = nxt;
        nxt = t;
    }
    *total = cur[WG_TOPK - 1];
    return cur[lid] - v;
}

static inline uint pass_key(__global const float *row, __global const uint *sl, uint i)
{
    return sl ? sl[i] : score_key(row[i]);
}

static inline void topk_pass_body(__global const float *scores, uint cap, uint lo, uint n_cand,
                                  __global uint *state, __global uint *hist, __global uint *lists,
                                  uint list_cap, uint shift, __local uint *lh, __local uint *sa, __local uint *sb,
                                  __local uint *lbase, __local uint *lk)
{
    uint r = get_group_id(1), lid = get_local_id(0);
    __global uint *st = state + (size_t)r * ST_WORDS;
    if (st[ST_DONE]) return;
    uint src = st[ST_SRC], dst = st[ST_DST];
    uint count = src ? st[ST_SRC_N] : n_cand;
    uint t0 = get_group_id(0) * TOPK_TILE;
    if (t0 >= count) return;
    uint tn = min((uint)TOPK_TILE, count - t0);
    uint prefix = st[ST_PREFIX], mask = st[ST_MASK];
    for (uint b = lid; b < 256u; b += WG_TOPK) lh[b] = 0u;
    barrier(CLK_LOCAL_MEM_FENCE);
    __global const float *row = scores + (size_t)r * cap + lo + t0;
    __global const uint *sl = src ? lists + ((size_t)r * 2u + (src - 1u)) * list_cap + t0 : 0;
    uint mine = 0u;
#if WG_TOPK == 1
    /* one work-item (CPU runtimes): plain increments, a loop per source, the
     * matching keys staged in local memory lk[TOPK_TILE] (read once) */
    if (sl) {
        for (uint i = 0; i < tn; i++) {
            uint key = sl[i];
            if ((key & mask) != prefix) continue;
            lh[(key >> shift) & 255u]++;
            lk[mine++] = key;
        }
    } else {
        for (uint i = 0; i < tn; i++) {
            uint key = score_key(row[i]);
            if ((key & mask) != prefix) continue;
            lh[(key >> shift) & 255u]++;
            lk[mine++] = key;
        }
    }
    for (uint b = 0; b < 256u; b++)
        if (lh[b]) atomic_add(&hist[(size_t)r * 256u + b], lh[b]);
    if (dst) {
        __global uint *dl = lists + ((size_t)r * 2u + (dst - 1u)) * list_cap + atomic_add(&st[ST_DST_N], mine);
        for (uint i = 0; i < mine; i++) dl[i] = lk[i];
    }
    return;
#else
    uint rb = RUN_NONE, rn = 0u;
    for (uint i = lid; i < tn; i += WG_TOPK) {
        uint key = pass_key(row, sl, i);
        if ((key & mask) != prefix) continue;
        mine++;
        RUN_ADD(TOPK_ADD, lh, rb, rn, (key >> shift) & 255u);
    }
    RUN_FLUSH(TOPK_ADD, lh, rb, rn);
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint b = lid; b < 256u; b += WG_TOPK)
        if (lh[b]) atomic_add(&hist[(size_t)r * 256u + b], lh[b]);
    if (!dst) return;
    /* compaction in work-item order: each item writes its matching keys at
     * its exclusive prefix, the group reserves its range with one atomic */
    uint total = 0, off = wg_excl_scan(mine, sa, sb, &total);
    if (lid == 0) *lbase = atomic_add(&st[ST_DST_N], total);
    barrier(CLK_LOCAL_MEM_FENCE);
    __global uint *dl = lists + ((size_t)r * 2u + (dst - 1u)) * list_cap + *lbase + off;
    uint w = 0;
    if (sl) {
        for (uint i = lid; i < tn; i += WG_TOPK) {
            uint key = sl[i];
            if ((key & mask) == prefix) dl[w++] = key;
        }
    } else {
        for (uint i = lid; i < tn; i += WG_TOPK) {
            uint key = score_key(row[i]);
            if ((key & mask) == prefix) dl[w++] = key;
        }
    }
}

#if WG_TOPK == 1
#define TOPK_PASS_LOCALS __local uint lh[256], sa[WG_TOPK], sb[WG_TOPK], lbase, lk[TOPK_TILE]
#else
#define TOPK_PASS_LOCALS __local uint lh[256], sa[WG_TOPK], sb[WG_TOPK], lbase, lk[1]
#endif

__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_pass(__global const float *scores, uint cap, uint lo, uint n_cand,
                    __global uint *state, __global uint *hist, __global uint *lists,
                    uint list_cap, uint shift)
{
    TOPK_PASS_LOCALS;
    topk_pass_body(scores, cap, lo, n_cand, state, hist, lists, list_cap, shift, lh, sa, sb, &lbase, lk);
}

/* Batch (item = dim 2): the item's window, state and lists; groups past
 * its window return in the body (the grid is sized for the longest). */
__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_pass_b(uint lo, uint shift, __global uint *bs, __global const uint *prm, uint item0)
{
    TOPK_PASS_LOCALS;
    __global const uint *p = bp_item(prm, item0);
    topk_pass_body((__global const float *)(bs + p[BP_SCORES]), p[BP_L], lo, p[BP_NCAND], bs + p[BP_STATE],
                   bs + p[BP_HIST], bs + p[BP_LISTS], p[BP_LCAP], shift, lh, sa, sb, &lbase, lk);
}

/* One work-group per row: finds the bin of the digit at `shift` that holds
 * the need-th largest matching key, fixes it in the prefix, clears the
 * histogram for the next pass and decides where the next pass reads from
 * and whether it compacts (only if the survivors fit in a list and a later
 * pass will read them). */
static inline void topk_scan_body(__global uint *state, __global uint *hist, uint shift, uint list_cap,
                                  __local uint *lh, __local uint *sa, __local uint *sb)
{
    uint r = get_group_id(0), lid = get_local_id(0);
    __global uint *st = state + (size_t)r * ST_WORDS;
    if (st[ST_DONE]) return;
    /* read the state before any work-item of the group may rewrite it */
    uint need0 = st[ST_NEED], src = st[ST_SRC], dst = st[ST_DST], dst_n = st[ST_DST_N];
    uint prefix = st[ST_PREFIX], mask = st[ST_MASK], above0 = st[ST_ABOVE];
    for (uint b = lid; b < 256u; b += WG_TOPK) {
        uint c = hist[(size_t)r * 256u + b];
        hist[(size_t)r * 256u + b] = 0u;
        lh[b] = c;
        sa[b] = c;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* inclusive suffix sums: sa[b] = sum of lh[b..255] */
    __local uint *cur = sa, *nxt = sb;
    for (uint off = 1; off < 256u; off <<= 1) {
        for (uint b = lid; b < 256u; b += WG_TOPK) nxt[b] = cur[b] + (b + off < 256u ? cur[b + off] : 0u);
        barrier(CLK_LOCAL_MEM_FENCE);
        __local uint *t = cur;
        cur = nxt;
        nxt = t;
    }
    for (uint b = lid; b < 256u; b += WG_TOPK) {
        uint incl = cur[b], above = incl - lh[b];
        if (!(above < need0 && incl >= need0)) continue;
        /* exactly one bin gets here */
        uint n_s = lh[b], need = need0 - above;
        st[ST_PREFIX] = prefix | (b << shift);
        st[ST_MASK] = mask | (255u << shift);
        st[ST_ABOVE] = above0 + above;
        st[ST_NEED] = need;
        if (dst) {
            src = dst;
            st[ST_SRC] = dst;
            st[ST_SRC_N] = dst_n;
        }
        uint done = n_s == need || shift == 0u;
        st[ST_DONE] = done;
        st[ST_DST] = !done && shift >= 16u && n_s <= list_cap ? (src == 1u ? 2u : 1u) : 0u;
        st[ST_DST_N] = 0u;
    }
}

__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_scan(__global uint *state, __global uint *hist, uint shift, uint list_cap)
{
    __local uint lh[256], sa[256], sb[256];
    topk_scan_body(state, hist, shift, list_cap, lh, sa, sb);
}

__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_scan_b(uint shift, __global uint *bs, __global const uint *prm, uint item0)
{
    __local uint lh[256], sa[256], sb[256];
    __global const uint *p = bp_item(prm, item0);
    topk_scan_body(bs + p[BP_STATE], bs + p[BP_HIST], shift, p[BP_LCAP], lh, sa, sb);
}

/* Per tile of te window positions: how many keys rank above the threshold
 * (key & mask > prefix) and how many equal it. */
static inline void topk_count_body(__global const float *scores, uint cap, uint lo, uint n_cand,
                                   __global const uint *state, __global uint *tiles, uint max_tiles, uint te,
                                   __local uint *cg_, __local uint *ce_)
{
#define cg (*cg_)
#define ce (*ce_)
    uint r = get_group_id(1), t = get_group_id(0), lid = get_local_id(0);
    __global const uint *st = state + (size_t)r * ST_WORDS;
    uint prefix = st[ST_PREFIX], mask = st[ST_MASK];
    uint start = t * te, n = min(te, n_cand - start);
    if (lid == 0) cg = ce = 0u;
    barrier(CLK_LOCAL_MEM_FENCE);
    __global const float *row = scores + (size_t)r * cap + lo + start;
    uint gt = 0, eq = 0;
    for (uint i = lid; i < n; i += WG_TOPK) {
        uint key = score_key(row[i]) & mask;
        gt += key > prefix;
        eq += key == prefix;
    }
    if (gt) atomic_add(&cg, gt);
    if (eq) atomic_add(&ce, eq);
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0) {
        tiles[((size_t)r * max_tiles + t) * 2u] = cg;
        tiles[((size_t)r * max_tiles + t) * 2u + 1u] = ce;
    }
#undef cg
#undef ce
}

__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_count(__global const float *scores, uint cap, uint lo, uint n_cand,
                     __global const uint *state, __global uint *tiles, uint max_tiles, uint te)
{
    __local uint cg, ce;
    topk_count_body(scores, cap, lo, n_cand, state, tiles, max_tiles, te, &cg, &ce);
}

/* Batch (item = dim 2): tiles past the item's window return at once. */
__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_count_b(uint lo, __global uint *bs, __global const uint *prm, uint item0)
{
    __local uint cg, ce;
    __global const uint *p = bp_item(prm, item0);
    if (get_group_id(0) * p[BP_TE] >= p[BP_NCAND]) return;
    topk_count_body((__global const float *)(bs + p[BP_SCORES]), p[BP_L], lo, p[BP_NCAND], bs + p[BP_STATE],
                    bs + p[BP_TILES], p[BP_NTILES], p[BP_TE], &cg, &ce);
}

/* Index-ordered output: a selected window position i gets the slot
 * (keys > tau before i) + min(keys == tau before i, need). */
static inline void topk_emit_body(__global const float *scores, uint cap, uint lo, uint n_cand,
                                  __global const uint *state, __global const uint *tiles, uint max_tiles,
                                  uint te, __global int *sel, uint sel_stride, uint row_base, uint n_forced,
                                  __local uint *pg_, __local uint *pe_, __local uint2 *sa, __local uint2 *sb)
{
#define pg (*pg_)
#define pe (*pe_)
    uint r = get_group_id(1), t = get_group_id(0), lid = get_local_id(0);
    __global const uint *st = state + (size_t)r * ST_WORDS;
    __global const uint *tc = tiles + (size_t)r * max_tiles * 2u;
    uint prefix = st[ST_PREFIX], mask = st[ST_MASK], need = st[ST_NEED];
    if (lid == 0) pg = pe = 0u;
    barrier(CLK_LOCAL_MEM_FENCE);
    uint bg = 0, be = 0;
    for (uint i = lid; i < t; i += WG_TOPK) {
        bg += tc[2u * i];
        be += tc[2u * i + 1u];
    }
    if (bg) atomic_add(&pg, bg);
    if (be) atomic_add(&pe, be);
    barrier(CLK_LOCAL_MEM_FENCE);
    uint gt_before = pg, eq_before = pe;
    if (tc[2u * t] == 0u && (tc[2u * t + 1u] == 0u || eq_before >= need)) return;

    /* each work-item owns a contiguous run of the tile */
    uint start = t * te, n = min(te, n_cand - start);
    uint per = (n + WG_TOPK - 1) / WG_TOPK;
    uint a = min(lid * per, n), b = min(a + per, n);
    __global const float *row = scores + (size_t)r * cap + lo + start;
    uint my_gt = 0, my_eq = 0; /* scalar counters: the loop vectorises */
    for (uint i = a; i < b; i++) {
        uint key = score_key(row[i]) & mask;
        my_gt += key > prefix;
        my_eq += key == prefix;
    }
    uint2 mine = (uint2)(my_gt, my_eq);
    sa[lid] = mine;
    barrier(CLK_LOCAL_MEM_FENCE);
    __local uint2 *cur = sa, *nxt = sb;
    for (uint off = 1; off < WG_TOPK; off <<= 1) {
        nxt[lid] = cur[lid] + (lid >= off ? cur[lid - off] : (uint2)(0u, 0u));
        barrier(CLK_LOCAL_MEM_FENCE);
        __local uint2 *tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    uint2 excl = cur[lid] - mine;
    uint g_rank = gt_before + excl.x, e_rank = eq_before + excl.y;
    __global int *out = sel + (size_t)(row_base + r) * sel_stride + n_forced;
    for (uint i0 = a; i0 < b; i0 += 32) {
        /* most short runs hold nothing to emit: count them branch-free first */
        uint i1 = min(i0 + 32u, b), bg = 0, be = 0;
        for (uint i = i0; i < i1; i++) {
            uint key = score_key(row[i]) & mask;
            bg += key > prefix;
            be += key == prefix;
        }
        if (bg == 0 && (be == 0 || e_rank >= need)) {
            e_rank += be;
            continue;
        }
        for (uint i = i0; i < i1; i++) {
            uint key = score_key(row[i]) & mask;
            if (key > prefix) {
                out[g_rank + min(e_rank, need)] = (int)(lo + start + i);
                g_rank++;
            } else if (key == prefix) {
                if (e_rank < need) out[g_rank + e_rank] = (int)(lo + start + i);
                e_rank++;
            }
        }
    }
}
#undef pg
#undef pe

__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_emit(__global const float *scores, uint cap, uint lo, uint n_cand,
                    __global const uint *state, __global const uint *tiles, uint max_tiles,
                    uint te, __global int *sel, uint sel_stride, uint row_base, uint n_forced)
{
    __local uint pg, pe;
    __local uint2 sa[WG_TOPK], sb[WG_TOPK];
    topk_emit_body(scores, cap, lo, n_cand, state, tiles, max_tiles, te, sel, sel_stride, row_base, n_forced, &pg,
                   &pe, sa, sb);
}

/* Batch (item = dim 2): tiles past the item's window return at once. */
__kernel __attribute__((reqd_work_group_size(WG_TOPK, 1, 1)))
void fasa_topk_emit_b(uint lo, uint sel_stride, uint n_forced, __global uint *bs, __global const uint *prm,
                      uint item0)
{
    __local uint pg, pe;
    __local uint2 sa[WG_TOPK], sb[WG_TOPK];
    __global const uint *p = bp_item(prm, item0);
    if (get_group_id(0) * p[BP_TE] >= p[BP_NCAND]) return;
    topk_emit_body((__global const float *)(bs + p[BP_SCORES]), p[BP_L], lo, p[BP_NCAND], bs + p[BP_STATE],
                   bs + p[BP_TILES], p[BP_NTILES], p[BP_TE], (__global int *)(bs + p[BP_SEL]), sel_stride, 0u,
                   n_forced, &pg, &pe, sa, sb);
}
