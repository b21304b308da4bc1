/*
 * fetch (FASA-M): the rows an offloaded cache's FAC needs, the row-cache
 * policy of src/rowcache.c and the staged gather.  Recorded by fac after
 * topk on every sparse step of a cache with placement OFFLOAD:
 *
 *   fasa_fetch_need   one work-group per KV head: the distinct tokens of the
 *                     group's selection rows in ascending order (a bitmap
 *                     over the tokens, set with atomic_or, then read back
 *                     word by word behind a work-group prefix sum, which
 *                     also clears it); their count goes to the head's
 *                     counters.  DIRECT fetch stops here (counts only).
 *   fasa_fetch_slots  one work-group per KV head: a slot for every needed
 *                     row (the row-cache policy, or one staging slot per
 *                     row without a row cache) and the list of rows to copy;
 *                     without a row cache also the selection remapped to
 *                     slots for fac.
 *   fasa_fetch_order  row cache only, one work-group per KV head: the new
 *                     order of the resident slots and the remapped selection.
 *   fasa_fetch_copy   copies the listed rows' K and V from the host-resident
 *                     storage chunk into the device slot arrays.
 *
 * Row-cache state per (layer, KV head) with S slots:
 *   tslot[cap]  slot of each token, -1 = not resident
 *   meta        stok[S] (token of each slot, -1 = free), lru[S] (the
 *               resident slots by (stamp, slot) ascending) and lru_n
 *   stamp[S]    the cache's sparse-step counter when the row was last needed
 * The policy takes victims in the order: free slots by slot, then resident
 * slots not needed now by (stamp, slot).  Instead of sorting, the order of
 * the resident slots is kept as a list: every row needed now gets the
 * newest stamp, so the next list is the old one without those rows,
 * followed by them in slot order (two stable compactions).
 *
 * Counters: counts[g][0] rows needed, counts[g][1] row-cache hits (ulong,
 * only ever written by the head's own work-group, so no atomics); info[g]
 * holds this step's n (needed), hits and misses for the later kernels.
 */

#define WG_COPY (WG_FETCH < 64 ? WG_FETCH : 64)

/* The contiguous share [lo, hi) of n items that work-item lid walks, so
 * that items in lid order cover the range in order. */
static inline void fetch_seg(uint n, uint lid, uint *lo, uint *hi)
{
    uint per = (n + WG_FETCH - 1u) / WG_FETCH;
    *lo = min(lid * per, n);
    *hi = min(*lo + per, n);
}

/* Exclusive prefix sum of one value per work-item over the work-group
 * (Hillis-Steele, ping-ponging between the halves of sc[2 * WG_FETCH]);
 * *total gets the sum.  Every work-item must call it: it has barriers.
 * (Two __local arrays, or swapped __local pointers, crash PoCL 3.1's
 * LLVM 15 inliner or code generator in the kernels below.) */
static uint wg_scan(uint v, __local uint *sc, uint *total)
{
    uint lid = get_local_id(0), cur = 0u;
    sc[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint off = 1u; off < WG_FETCH; off <<= 1) {
        uint nxt = WG_FETCH - cur;
        sc[nxt + lid] = sc[cur + lid] + (lid >= off ? sc[cur + lid - off] : 0u);
        barrier(CLK_LOCAL_MEM_FENCE);
        cur = nxt;
    }
    uint incl = sc[cur + lid];
    *total = sc[cur + WG_FETCH - 1u];
    barrier(CLK_LOCAL_MEM_FENCE); /* sc is free again */
    return incl - v;
}

__kernel __attribute__((reqd_work_group_size(WG_FETCH, 1, 1)))
void fasa_fetch_need(__global const int *sel, uint sel_stride, uint rows_per_group, uint n_fac, uint L,
                     __global uint *bits, uint words_stride, __global int *need, uint need_stride,
                     uint write_list, __global ulong *counts, __global uint *info)
{
    __local uint sc[2 * WG_FETCH];
    uint g = get_group_id(0), lid = get_local_id(0);
    __global uint *bm = bits + (size_t)g * words_stride;
    __global const int *rows = sel + (size_t)g * rows_per_group * sel_stride;
    uint n_ent = rows_per_group * n_fac;
    for (uint i = lid; i < n_ent; i += WG_FETCH) {
        uint t = (uint)rows[(size_t)(i / n_fac) * sel_stride + i % n_fac];
        atomic_or(&bm[t >> 5], 1u << (t & 31u));
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    uint lo, hi, cnt = 0u, total;
    fetch_seg((L + 31u) / 32u, lid, &lo, &hi);
    for (uint w = lo; w < hi; w++) cnt += popcount(bm[w]);
    uint pos = wg_scan(cnt, sc, &total);
    __global int *out = need + (size_t)g * need_stride;
    for (uint w = lo; w < hi; w++) {
        uint x = bm[w];
        if (x == 0u) continue;
        bm[w] = 0u; /* zero again for the next step */
        for (; write_list && x; x &= x - 1u)
            out[pos++] = (int)(w * 32u + 31u - clz(x & (0u - x))); /* lowest set bit first */
    }
    if (lid == 0) {
        counts[(size_t)g * 2] += total;
        info[(size_t)g * 4] = total;
    }
}

/* Selection entry (row, i) of KV head g as a slot index for fac: the slot,
 * offset by the token's storage chunk times the slot count, so that fac's
 * per-chunk token filter keeps working on slot indices. */
static void remap_rows(__global const int *sel, uint sel_stride, uint g, uint rows_per_group, uint n_fac,
                       __global const int *ts, uint tpc, uint slots, __global int *remap)
{
    uint n_ent = rows_per_group * n_fac;
    for (uint i = get_local_id(0); i < n_ent; i += WG_FETCH) {
        size_t at = (size_t)(g * rows_per_group + i / n_fac) * sel_stride + i % n_fac;
        uint t = (uint)sel[at];
        remap[at] = (int)((t / tpc) * slots + (uint)ts[t]);
    }
}

/* Appends, in slot order, the slots that are free (needed = 0) or were
 * needed at this step (needed = 1) to dst; returns how many. */
static uint pick_slots(uint S, uint needed, __global const int *stok, __global const ulong *st, ulong step,
                       __global int *dst, __local uint *sc)
{
    uint lo, hi, c = 0u, total;
    fetch_seg(S, get_local_id(0), &lo, &hi);
    for (uint s = lo; s < hi; s++) c += needed ? st[s] == step : stok[s] < 0;
    uint pos = wg_scan(c, sc, &total);
    for (uint s = lo; s < hi; s++)
        if (needed ? st[s] == step : stok[s] < 0) dst[pos++] = (int)s;
    return total;
}

/* Appends, in list order, the slots of lru[0, nl) that are resident and
 * not needed at this step to dst; returns how many. */
static uint keep_lru(__global const int *lru, uint nl, __global const int *stok, __global const ulong *st,
                     ulong step, __global int *dst, __local uint *sc)
{
    uint lo, hi, c = 0u, total;
    fetch_seg(nl, get_local_id(0), &lo, &hi);
    for (uint i = lo; i < hi; i++) c += stok[lru[i]] >= 0 && st[lru[i]] != step;
    uint pos = wg_scan(c, sc, &total);
    for (uint i = lo; i < hi; i++)
        if (stok[lru[i]] >= 0 && st[lru[i]] != step) dst[pos++] = lru[i];
    return total;
}

/* Forgets the rows of tokens at or past trunc_len (fasa_kv_cache_truncate,
 * applied at the layer's next step). */
static void forget_past(uint S, uint trunc_len, __global int *stok, __global ulong *st, __global int *ts)
{
    for (uint s = get_local_id(0); s < S; s += WG_FETCH) {
        int t = stok[s];
        if (t >= 0 && (uint)t >= trunc_len) {
            ts[t] = -1;
            stok[s] = -1;
            st[s] = 0;
        }
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
}

/* Phases 1-3 of a step of the row-cache policy for the n needed tokens
 * nd[0, n) (ascending): hits, victims, misses placed.  Returns the misses
 * and sets *hits. */
static uint rowcache_assign(uint S, uint n, __global const int *nd, __global int *ts, __global int *stok,
                            __global const int *lru, uint nl, __global ulong *st, ulong step,
                            __global int *nslot, __global int *vict, __global int *cp, uint *hits,
                            __local uint *sc)
{
    uint lo, hi, misses = 0u, m;
    fetch_seg(n, get_local_id(0), &lo, &hi);
    /* 1. hits keep their slot and get the new stamp */
    for (uint i = lo; i < hi; i++) {
        int s = ts[nd[i]];
        nslot[i] = s;
        if (s >= 0) st[s] = step;
        else misses++;
    }
    uint rank = wg_scan(misses, sc, &m); /* misses before this item's share */
    barrier(CLK_GLOBAL_MEM_FENCE);
    /* 2. victims in policy order */
    uint nfree = pick_slots(S, 0u, stok, st, step, vict, sc);
    uint nv = nfree + keep_lru(lru, nl, stok, st, step, vict + nfree, sc);
    barrier(CLK_GLOBAL_MEM_FENCE);
    /* 3. misses, in ascending token order, take the victims in order */
    for (uint i = lo; i < hi; i++) {
        if (nslot[i] >= 0 || rank >= nv) continue; /* rank < nv: the caller checked n <= S */
        int t = nd[i], s = vict[rank];
        int old = stok[s];
        if (old >= 0) ts[old] = -1;
        stok[s] = t;
        ts[t] = s;
        st[s] = step;
        cp[2 * rank] = t;
        cp[2 * rank + 1] = s;
        rank++;
    }
    *hits = n - m;
    return m;
}

/* S = 0: no row cache; the staging area has need_stride slots, slot i
 * holds needed row i, and tslot is a scratch map (-1 between steps).
 * S > 0: phases 1-3 of the policy (fasa_fetch_order does the rest). */
__kernel __attribute__((reqd_work_group_size(WG_FETCH, 1, 1)))
void fasa_fetch_slots(__global const int *sel, uint sel_stride, uint rows_per_group, uint n_fac,
                      __global const int *need, uint need_stride, __global uint *info, __global int *tslot,
                      uint cap, uint S, __global int *meta, __global ulong *stamp, ulong step, uint trunc_len,
                      __global int *work, __global int *copy, uint tpc, __global int *remap,
                      __global ulong *counts)
{
    __local uint sc[2 * WG_FETCH];
    uint g = get_group_id(0), lid = get_local_id(0);
    uint n = info[(size_t)g * 4];
    __global const int *nd = need + (size_t)g * need_stride;
    __global int *ts = tslot + (size_t)g * cap;
    __global int *cp = copy + (size_t)g * need_stride * 2;
    if (S == 0u) {
        for (uint i = lid; i < n; i += WG_FETCH) {
            ts[nd[i]] = (int)i;
            cp[2 * i] = nd[i];
            cp[2 * i + 1] = (int)i;
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
        remap_rows(sel, sel_stride, g, rows_per_group, n_fac, ts, tpc, need_stride, remap);
        barrier(CLK_GLOBAL_MEM_FENCE);
        for (uint i = lid; i < n; i += WG_FETCH) ts[nd[i]] = -1;
        if (lid == 0) {
            info[(size_t)g * 4 + 1] = 0u;
            info[(size_t)g * 4 + 2] = n;
        }
        return;
    }
    __global int *stok = meta + (size_t)g * (2u * S + 1u), *lru = stok + S;
    __global ulong *st = stamp + (size_t)g * S;
    __global int *nslot = work + (size_t)g * (need_stride + S), *vict = nslot + need_stride;
    forget_past(S, trunc_len, stok, st, ts);
    uint hits, m = rowcache_assign(S, n, nd, ts, stok, lru, (uint)lru[S], st, step, nslot, vict, cp, &hits, sc);
    if (lid == 0) {
        info[(size_t)g * 4 + 1] = hits;
        info[(size_t)g * 4 + 2] = m;
        counts[(size_t)g * 2 + 1] += hits;
    }
}

/* Row cache, after fasa_fetch_slots: phase 4 of the policy step, the next
 * order of the resident slots (the old order without the rows needed now,
 * then those in slot order), and the selection remapped to slots.  (A
 * separate kernel: PoCL 3.1 crashes compiling all four phases in one.) */
__kernel __attribute__((reqd_work_group_size(WG_FETCH, 1, 1)))
void fasa_fetch_order(__global const int *sel, uint sel_stride, uint rows_per_group, uint n_fac,
                      __global const int *tslot, uint cap, uint S, __global int *meta,
                      __global const ulong *stamp, ulong step, __global int *work, uint need_stride, uint tpc,
                      __global int *remap)
{
    __local uint sc[2 * WG_FETCH];
    uint g = get_group_id(0);
    __global int *stok = meta + (size_t)g * (2u * S + 1u), *lru = stok + S;
    __global const ulong *st = stamp + (size_t)g * S;
    __global int *tmp = work + (size_t)g * (need_stride + S) + need_stride;
    uint na = keep_lru(lru, (uint)lru[S], stok, st, step, tmp, sc);
    uint nb = pick_slots(S, 1u, stok, st, step, tmp + na, sc);
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (uint i = get_local_id(0); i < na + nb; i += WG_FETCH) lru[i] = tmp[i];
    if (get_local_id(0) == 0) lru[S] = (int)(na + nb);
    remap_rows(sel, sel_stride, g, rows_per_group, n_fac, tslot + (size_t)g * cap, tpc, S, remap);
}

/* Copies the listed rows of KV heads [g0, g0 + ng) and tokens [t0, t0 + nt)
 * (one storage chunk; rows of other chunks are skipped) as 32-bit words:
 * dim 1 = head, dim 0 = a few work-groups walking the head's list. */
__kernel __attribute__((reqd_work_group_size(WG_COPY, 1, 1)))
void fasa_fetch_copy(__global const uint *ksrc, __global const uint *vsrc, uint words, uint nt, uint g0,
                     uint t0, __global uint *kdst, __global uint *vdst, uint slots,
                     __global const int *copy, uint copy_stride, __global const uint *info)
{
    uint gi = get_group_id(1), g = g0 + gi, lid = get_local_id(0);
    uint m = info[(size_t)g * 4 + 2];
    __global const int *cp = copy + (size_t)g * copy_stride * 2;
    for (uint r = get_group_id(0); r < m; r += get_num_groups(0)) {
        uint t = (uint)cp[2 * r], s = (uint)cp[2 * r + 1];
        if (t < t0 || t - t0 >= nt) continue;
        size_t src = ((size_t)gi * nt + (t - t0)) * words, dst = ((size_t)g * slots + s) * words;
        for (uint w = lid; w < words; w += WG_COPY) {
            kdst[dst + w] = ksrc[src + w];
            vdst[dst + w] = vsrc[src + w];
        }
    }
}
