/*
 * FASA-M fetch (cuda_ref/fetch.cu): the per-thread pieces of its kernels,
 * in plain C so that the kernels (nvcc: __host__ __device__) and the host
 * emulation in tests/cuda/test_cuda_fetch_logic.c run the very same code.
 *
 * A block of T threads serves one KV head g.  Each function below is one
 * phase of one thread: within a phase, threads touch disjoint data (or only
 * OR bits), so the phases are correct in any thread order; the kernels put
 * a __syncthreads() (and the block scans) between phases, the emulation
 * runs each phase for every thread in turn (in shuffled orders too).
 *
 * The algorithm is that of the OpenCL kernels (opencl/fetch.cl, which
 * explains it): a bitmap gives the group's distinct needed tokens in
 * ascending order; the row-cache policy of src/rowcache.c keeps the
 * resident slots as a list in victim order instead of sorting stamps; the
 * misses are copied from mapped host memory into device slot arrays, and
 * the selection is remapped to slots for fac.
 */
#ifndef FASA_CUDA_FETCH_H
#define FASA_CUDA_FETCH_H

#include "fasa_cuda_logic.h"

#define FASA_FM_THREADS 256u      /* threads of the bookkeeping blocks */
#define FASA_FM_COPY_THREADS 64u  /* threads of a copy block (a row at a time) */

#if defined(__CUDA_ARCH__) /* device code: threads of a block run at once */
#define FASA_FM_OR(p, v) atomicOr((p), (v))
#else
#define FASA_FM_OR(p, v) (*(p) |= (v))
#endif

/* Everything the fetch kernels of one step read and write (device
 * pointers; [Hkv] arrays are indexed by the KV head g). */
typedef struct fasa_cu_fetch_args {
    const int32_t *sel;           /* [rows][sel_stride] the selection of this step */
    uint32_t sel_stride, rows_per_group, n_fac, L, n_kv_heads;
    uint32_t *bits;               /* [Hkv][words], zero between steps */
    uint32_t words;
    int32_t *need;                /* [Hkv][rmax] needed tokens, ascending */
    uint32_t rmax;
    uint32_t *info;               /* [Hkv][4]: needed, hits, misses */
    uint64_t *counts;             /* [Hkv][2] running totals: needed, hits */
    int staged;
    /* staged */
    int32_t *tslot;               /* [Hkv][cap] slot of a token, -1 = none */
    uint32_t cap;
    uint32_t slots;               /* row-cache slots S; 0 = staging area of rmax slots */
    int32_t *meta;                /* [Hkv][2S + 1]: stok[S], lru[S], lru_n */
    uint64_t *stamp;              /* [Hkv][S] */
    uint64_t step;                /* this step's stamp */
    uint32_t trunc_len;           /* forget rows of tokens >= trunc_len first */
    int32_t *work;                /* [Hkv][rmax + S]: nslot[rmax], victims[S] */
    int32_t *copy;                /* [Hkv][rmax][2] (token, slot) of the rows to copy */
    int32_t *remap;               /* [rows][sel_stride] the selection as slots */
    /* copy */
    const uint32_t *k_src, *v_src;/* the layer's host rows [Hkv][cap][d], as words */
    uint32_t *k_dst, *v_dst;      /* slot arrays [Hkv][slots or rmax][d], as words */
    uint32_t row_words;           /* d * element size / 4 */
    uint32_t copy_blocks;         /* blocks per KV head of the copy launch */
} fasa_cu_fetch_args;

/* The per-head arrays of a block. */
typedef struct fasa_fm_view {
    const int32_t *rows;          /* the group's first selection row */
    uint32_t *bm;
    int32_t *nd, *ts, *stok, *lru, *nslot, *vict, *cp;
    uint64_t *st;
    uint32_t S, eff;              /* row-cache slots; slots of the slot arrays */
} fasa_fm_view;

FASA_HD fasa_fm_view fasa_fm_view_of(const fasa_cu_fetch_args *a, uint32_t g)
{
    fasa_fm_view v;
    v.rows = a->sel + (size_t)g * a->rows_per_group * a->sel_stride;
    v.bm = a->bits + (size_t)g * a->words;
    v.nd = a->need + (size_t)g * a->rmax;
    v.ts = a->tslot ? a->tslot + (size_t)g * a->cap : 0;
    v.S = a->slots;
    v.eff = a->slots ? a->slots : a->rmax;
    v.stok = a->meta ? a->meta + (size_t)g * (2 * a->slots + 1) : 0;
    v.lru = v.stok ? v.stok + a->slots : 0;
    v.st = a->stamp ? a->stamp + (size_t)g * a->slots : 0;
    v.nslot = a->work ? a->work + (size_t)g * (a->rmax + a->slots) : 0;
    v.vict = v.nslot ? v.nslot + a->rmax : 0;
    v.cp = a->copy ? a->copy + (size_t)g * a->rmax * 2 : 0;
    return v;
}

/* The contiguous share [lo, hi) of n items of thread tid (threads in order
 * cover the items in order). */
FASA_HD void fasa_fm_seg(uint32_t n, uint32_t tid, uint32_t T, uint32_t *lo, uint32_t *hi)
{
    uint32_t per = (n + T - 1) / T;
    uint64_t a = (uint64_t)tid * per;
    *lo = a < n ? (uint32_t)a : n;
    *hi = *lo + per < n ? *lo + per : n;
}

FASA_HD uint32_t fasa_fm_popcount(uint32_t x)
{
    uint32_t c = 0;
    for (; x; x &= x - 1) c++;
    return c;
}

/* ---- need: the distinct tokens of the group, ascending -------------------- */

/* Phase 1: sets the bit of every selected token. */
FASA_HD void fasa_fm_mark(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t tid, uint32_t T)
{
    uint32_t n_ent = a->rows_per_group * a->n_fac;
    for (uint32_t i = tid; i < n_ent; i += T) {
        uint32_t t = (uint32_t)v->rows[(size_t)(i / a->n_fac) * a->sel_stride + i % a->n_fac];
        FASA_FM_OR(&v->bm[t >> 5], 1u << (t & 31));
    }
}

/* Phase 2: the tokens in this thread's share of the words [0, ceil(L/32)). */
FASA_HD uint32_t fasa_fm_count_words(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t tid, uint32_t T,
                                     uint32_t *lo, uint32_t *hi)
{
    fasa_fm_seg((a->L + 31) / 32, tid, T, lo, hi);
    uint32_t c = 0;
    for (uint32_t w = *lo; w < *hi; w++) c += fasa_fm_popcount(v->bm[w]);
    return c;
}

/* Phase 3 (after the exclusive scan gave pos): lists the tokens of the
 * share from pos on (staged only) and clears its words. */
FASA_HD void fasa_fm_emit(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t lo, uint32_t hi, uint32_t pos)
{
    for (uint32_t w = lo; w < hi; w++) {
        uint32_t x = v->bm[w];
        if (!x) continue;
        v->bm[w] = 0;
        for (uint32_t b = 0; a->staged && x; b++, x >>= 1)
            if (x & 1u) v->nd[pos++] = (int32_t)(w * 32 + b);
    }
}

/* Thread 0, at the end of need. */
FASA_HD void fasa_fm_need_done(const fasa_cu_fetch_args *a, uint32_t g, uint32_t total)
{
    a->counts[(size_t)g * 2] += total;
    a->info[(size_t)g * 4] = total;
}

/* ---- slots without a row cache: slot i holds needed row i ----------------- */

FASA_HD void fasa_fm_stage(const fasa_fm_view *v, uint32_t n, uint32_t tid, uint32_t T)
{
    for (uint32_t i = tid; i < n; i += T) {
        v->ts[v->nd[i]] = (int32_t)i;
        v->cp[2 * i] = v->nd[i];
        v->cp[2 * i + 1] = (int32_t)i;
    }
}

FASA_HD void fasa_fm_unstage(const fasa_fm_view *v, uint32_t n, uint32_t tid, uint32_t T)
{
    for (uint32_t i = tid; i < n; i += T) v->ts[v->nd[i]] = -1;
}

/* Every selection entry of the group as a slot (CUDA storage is one chunk
 * per layer, so the chunk offset of the OpenCL remap is always 0). */
FASA_HD void fasa_fm_remap(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t g, uint32_t tid, uint32_t T)
{
    uint32_t n_ent = a->rows_per_group * a->n_fac;
    for (uint32_t i = tid; i < n_ent; i += T) {
        size_t at = (size_t)(g * a->rows_per_group + i / a->n_fac) * a->sel_stride + i % a->n_fac;
        a->remap[at] = v->ts[a->sel[at]];
    }
}

/* ---- the row-cache policy (src/rowcache.c) -------------------------------- */

/* Phase 0: forgets rows of tokens >= trunc_len (fasa_kv_cache_truncate). */
FASA_HD void fasa_fm_forget(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t tid, uint32_t T)
{
    for (uint32_t s = tid; s < v->S; s += T) {
        int32_t t = v->stok[s];
        if (t >= 0 && (uint32_t)t >= a->trunc_len) {
            v->ts[t] = -1;
            v->stok[s] = -1;
            v->st[s] = 0;
        }
    }
}

/* Phase 1 over needed rows [lo, hi): hits get the new stamp; returns the
 * misses. */
FASA_HD uint32_t fasa_fm_hits(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t lo, uint32_t hi)
{
    uint32_t misses = 0;
    for (uint32_t i = lo; i < hi; i++) {
        int32_t s = v->ts[v->nd[i]];
        v->nslot[i] = s;
        if (s >= 0) v->st[s] = a->step;
        else misses++;
    }
    return misses;
}

/* Slot s is free (needed = 0) or was needed at this step (needed = 1). */
FASA_HD int fasa_fm_pick(const fasa_cu_fetch_args *a, const fasa_fm_view *v, int needed, uint32_t s)
{
    return needed ? v->st[s] == a->step : v->stok[s] < 0;
}

/* Entry i of the order list is resident and not needed at this step. */
FASA_HD int fasa_fm_keep(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t i)
{
    int32_t s = v->lru[i];
    return v->stok[s] >= 0 && v->st[s] != a->step;
}

/* Stable compactions: count in this thread's share, then (after the scan)
 * write from pos on. */
FASA_HD uint32_t fasa_fm_pick_count(const fasa_cu_fetch_args *a, const fasa_fm_view *v, int needed, uint32_t lo,
                                    uint32_t hi)
{
    uint32_t c = 0;
    for (uint32_t s = lo; s < hi; s++) c += (uint32_t)fasa_fm_pick(a, v, needed, s);
    return c;
}

FASA_HD void fasa_fm_pick_write(const fasa_cu_fetch_args *a, const fasa_fm_view *v, int needed, uint32_t lo,
                                uint32_t hi, uint32_t pos, int32_t *dst)
{
    for (uint32_t s = lo; s < hi; s++)
        if (fasa_fm_pick(a, v, needed, s)) dst[pos++] = (int32_t)s;
}

FASA_HD uint32_t fasa_fm_keep_count(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t lo, uint32_t hi)
{
    uint32_t c = 0;
    for (uint32_t i = lo; i < hi; i++) c += (uint32_t)fasa_fm_keep(a, v, i);
    return c;
}

FASA_HD void fasa_fm_keep_write(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t lo, uint32_t hi,
                                uint32_t pos, int32_t *dst)
{
    for (uint32_t i = lo; i < hi; i++)
        if (fasa_fm_keep(a, v, i)) dst[pos++] = v->lru[i];
}

/* Phase 3 over needed rows [lo, hi): the misses, ranked from `rank` in
 * ascending token order, take the victims in order (nv victims exist; the
 * decode validation guarantees n <= S, so rank < nv). */
FASA_HD void fasa_fm_assign(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t lo, uint32_t hi,
                            uint32_t rank, uint32_t nv)
{
    for (uint32_t i = lo; i < hi; i++) {
        if (v->nslot[i] >= 0 || rank >= nv) continue;
        int32_t t = v->nd[i], s = v->vict[rank];
        int32_t old = v->stok[s];
        if (old >= 0) v->ts[old] = -1;
        v->stok[s] = t;
        v->ts[t] = s;
        v->st[s] = a->step;
        v->cp[2 * rank] = t;
        v->cp[2 * rank + 1] = s;
        rank++;
    }
}

/* Thread 0, at the end of slots. */
FASA_HD void fasa_fm_slots_done(const fasa_cu_fetch_args *a, uint32_t g, uint32_t hits, uint32_t misses)
{
    a->info[(size_t)g * 4 + 1] = hits;
    a->info[(size_t)g * 4 + 2] = misses;
    a->counts[(size_t)g * 2 + 1] += hits;
}

/* Order kernel, last phase: the new list from victims[0, n) (the scratch
 * it was built in). */
FASA_HD void fasa_fm_order_store(const fasa_fm_view *v, uint32_t n, uint32_t tid, uint32_t T)
{
    for (uint32_t i = tid; i < n; i += T) v->lru[i] = v->vict[i];
    if (tid == 0) v->lru[v->S] = (int32_t)n;
}

/* ---- copy ---------------------------------------------------------------- */

/* Row r of head g's copy list: its K and V words from the host rows into
 * the slot arrays, thread tid of T taking every T-th word. */
FASA_HD void fasa_fm_copy_row(const fasa_cu_fetch_args *a, const fasa_fm_view *v, uint32_t g, uint32_t r,
                              uint32_t tid, uint32_t T)
{
    uint32_t t = (uint32_t)v->cp[2 * r], s = (uint32_t)v->cp[2 * r + 1];
    size_t src = ((size_t)g * a->cap + t) * a->row_words, dst = ((size_t)g * v->eff + s) * a->row_words;
    for (uint32_t w = tid; w < a->row_words; w += T) {
        a->k_dst[dst + w] = a->k_src[src + w];
        a->v_dst[dst + w] = a->v_src[src + w];
    }
}

#endif
