/* Host emulation of the CUDA FASA-M fetch kernels (cuda_ref/fetch.cu; runs
 * without a GPU, in every build).
 *
 * The kernels' launch sequence (need, slots, order, copy) is replayed block
 * by block with the very phase functions they call from
 * cuda_ref/fasa_cuda_fetch.h; between phases stands what __syncthreads()
 * or a block scan stands for.  Every phase runs its threads in a fresh
 * random order, so a phase that depended on another thread of the same
 * phase would show.  Over many steps of random, overlapping selections
 * (per head and per group, two layers, truncations with new values for
 * the dropped positions) each step must give:
 *   - the needed list: the group's distinct tokens, ascending; the bitmap
 *     zero again afterwards;
 *   - the hits and the slot of every needed token equal to the reference
 *     policy's (fasa__rowcache_step of src/rowcache.c), or slot i for row i
 *     without a row cache;
 *   - the remapped selection pointing at slots that hold exactly the
 *     token's K and V words (rows copied now or kept from earlier steps);
 *   - the running counters equal to the reference sums.
 * Thread counts 1, 5, 32 and FASA_FM_THREADS; row caches of exactly one
 * step's rows, of more, and none; DIRECT (counts only). */
#include "../check.h"
#include "fasa_cuda_fetch.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)((rng >> 11) % n);
}

enum { LAYERS = 2, ROWW = 6 };

typedef struct world {
    uint32_t T, hkv, G, cap, n_fac_max, slots, rmax, eff, words, stride;
    int staged;
    int32_t *sel, *need, *work, *copy, *remap;
    uint32_t *bits, *info, *k_src[LAYERS], *v_src[LAYERS], *k_dst[LAYERS], *v_dst[LAYERS];
    uint64_t *counts, *stamp[LAYERS];
    int32_t *tslot[LAYERS], *meta[LAYERS];
    uint32_t trunc[LAYERS];
    uint32_t *order;              /* thread order of the current phase */
    uint64_t sum_needed, sum_hits;
    fasa_rowcache *rc[LAYERS][8];
} world;

/* ---- the emulated block primitives -------------------------------------- */

static void shuffle(world *w)
{
    for (uint32_t i = 0; i < w->T; i++) w->order[i] = i;
    for (uint32_t i = w->T - 1; i > 0; i--) {
        uint32_t j = rnd(i + 1), t = w->order[i];
        w->order[i] = w->order[j];
        w->order[j] = t;
    }
}

/* cub::BlockScan ExclusiveSum over the block. */
static void scan(const uint32_t *v, uint32_t T, uint32_t *excl, uint32_t *total)
{
    uint32_t s = 0;
    for (uint32_t t = 0; t < T; t++) {
        excl[t] = s;
        s += v[t];
    }
    *total = s;
}

typedef struct thr {
    uint32_t lo, hi, v, pos, lo2, hi2;
} thr;

/* ---- the kernels of fetch.cu, one block each ----------------------------- */

static void need_block(world *w, const fasa_cu_fetch_args *a, uint32_t g, thr *th, uint32_t *tmp, uint32_t *pos)
{
    fasa_fm_view v = fasa_fm_view_of(a, g);
    uint32_t T = w->T, total;
    shuffle(w);
    for (uint32_t i = 0; i < T; i++) fasa_fm_mark(a, &v, w->order[i], T);
    shuffle(w);
    for (uint32_t i = 0; i < T; i++) {
        uint32_t t = w->order[i];
        tmp[t] = fasa_fm_count_words(a, &v, t, T, &th[t].lo, &th[t].hi);
    }
    scan(tmp, T, pos, &total);
    shuffle(w);
    for (uint32_t i = 0; i < T; i++) {
        uint32_t t = w->order[i];
        fasa_fm_emit(a, &v, th[t].lo, th[t].hi, pos[t]);
    }
    fasa_fm_need_done(a, g, total);
}

/* A compaction of fetch.cu: count per thread share, scan, write. */
static uint32_t compact(world *w, const fasa_cu_fetch_args *a, const fasa_fm_view *v, int kind, uint32_t n,
                        int32_t *dst, thr *th, uint32_t *tmp, uint32_t *pos)
{
    uint32_t T = w->T, total;
    shuffle(w);
    for (uint32_t i = 0; i < T; i++) {
        uint32_t t = w->order[i];
        fasa_fm_seg(n, t, T, &th[t].lo2, &th[t].hi2);
        tmp[t] = kind < 2 ? fasa_fm_pick_count(a, v, kind, th[t].lo2, th[t].hi2)
                          : fasa_fm_keep_count(a, v, th[t].lo2, th[t].hi2);
    }
    scan(tmp, T, pos, &total);
    shuffle(w);
    for (uint32_t i = 0; i < T; i++) {
        uint32_t t = w->order[i];
        if (kind < 2) fasa_fm_pick_write(a, v, kind, th[t].lo2, th[t].hi2, pos[t], dst);
        else fasa_fm_keep_write(a, v, th[t].lo2, th[t].hi2, pos[t], dst);
    }
    return total;
}

static void slots_block(world *w, const fasa_cu_fetch_args *a, uint32_t g, thr *th, uint32_t *tmp, uint32_t *pos)
{
    fasa_fm_view v = fasa_fm_view_of(a, g);
    uint32_t T = w->T, n = a->info[(size_t)g * 4], m;
    if (v.S == 0) {
        shuffle(w);
        for (uint32_t i = 0; i < T; i++) fasa_fm_stage(&v, n, w->order[i], T);
        shuffle(w);
        for (uint32_t i = 0; i < T; i++) fasa_fm_remap(a, &v, g, w->order[i], T);
        shuffle(w);
        for (uint32_t i = 0; i < T; i++) fasa_fm_unstage(&v, n, w->order[i], T);
        fasa_fm_slots_done(a, g, 0, n);
        return;
    }
    shuffle(w);
    for (uint32_t i = 0; i < T; i++) fasa_fm_forget(a, &v, w->order[i], T);
    shuffle(w);
    for (uint32_t i = 0; i < T; i++) {
        uint32_t t = w->order[i];
        fasa_fm_seg(n, t, T, &th[t].lo, &th[t].hi);
        tmp[t] = fasa_fm_hits(a, &v, th[t].lo, th[t].hi);
    }
    uint32_t *rank = calloc(T, sizeof *rank);
    scan(tmp, T, rank, &m);
    uint32_t nfree = compact(w, a, &v, 0, v.S, v.vict, th, tmp, pos);
    uint32_t nv = nfree + compact(w, a, &v, 2, (uint32_t)v.lru[v.S], v.vict + nfree, th, tmp, pos);
    shuffle(w);
    for (uint32_t i = 0; i < T; i++) {
        uint32_t t = w->order[i];
        fasa_fm_assign(a, &v, th[t].lo, th[t].hi, rank[t], nv);
    }
    free(rank);
    fasa_fm_slots_done(a, g, n - m, m);
}

static void order_block(world *w, const fasa_cu_fetch_args *a, uint32_t g, thr *th, uint32_t *tmp, uint32_t *pos)
{
    fasa_fm_view v = fasa_fm_view_of(a, g);
    uint32_t na = compact(w, a, &v, 2, (uint32_t)v.lru[v.S], v.vict, th, tmp, pos);
    uint32_t nb = compact(w, a, &v, 1, v.S, v.vict + na, th, tmp, pos);
    shuffle(w);
    for (uint32_t i = 0; i < w->T; i++) fasa_fm_order_store(&v, na + nb, w->order[i], w->T);
    shuffle(w);
    for (uint32_t i = 0; i < w->T; i++) fasa_fm_remap(a, &v, g, w->order[i], w->T);
}

/* fasa_cu_fetch: the launches in order; copy blocks take rows r, r + B, ... */
static void emulate(world *w, const fasa_cu_fetch_args *a)
{
    thr *th = calloc(w->T, sizeof *th);
    uint32_t *tmp = calloc(w->T, 4), *pos = calloc(w->T, 4);
    for (uint32_t g = 0; g < w->hkv; g++) need_block(w, a, g, th, tmp, pos);
    for (uint32_t g = 0; a->staged && g < w->hkv; g++) slots_block(w, a, g, th, tmp, pos);
    for (uint32_t g = 0; a->staged && a->slots && g < w->hkv; g++) order_block(w, a, g, th, tmp, pos);
    for (uint32_t g = 0; a->staged && g < w->hkv; g++) {
        fasa_fm_view v = fasa_fm_view_of(a, g);
        for (uint32_t b = 0; b < a->copy_blocks; b++)
            for (uint32_t r = b; r < a->info[(size_t)g * 4 + 2]; r += a->copy_blocks)
                for (uint32_t t = FASA_FM_COPY_THREADS; t-- > 0;) fasa_fm_copy_row(a, &v, g, r, t, FASA_FM_COPY_THREADS);
    }
    free(th), free(tmp), free(pos);
}

/* ---- the world ----------------------------------------------------------- */

static uint32_t row_word(uint32_t layer, uint32_t g, uint32_t t, uint32_t w, uint32_t gen)
{
    return (gen * 2654435761u) ^ (layer << 29) ^ (g << 25) ^ (t << 5) ^ w;
}

static void fill_rows(world *w, uint32_t from, uint32_t gen)
{
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t g = 0; g < w->hkv; g++)
            for (uint32_t t = from; t < w->cap; t++)
                for (uint32_t x = 0; x < ROWW; x++) {
                    size_t i = ((size_t)g * w->cap + t) * ROWW + x;
                    w->k_src[l][i] = row_word(l, g, t, x, gen);
                    w->v_src[l][i] = ~row_word(l, g, t, x, gen);
                }
}

static void world_init(world *w, fasa_context *ctx, uint32_t T, uint32_t hkv, uint32_t G, uint32_t slots, int staged)
{
    memset(w, 0, sizeof *w);
    w->T = T, w->hkv = hkv, w->G = G, w->cap = 3000, w->n_fac_max = 40, w->slots = slots, w->staged = staged;
    w->stride = 2 * w->n_fac_max;
    w->rmax = G * w->stride < w->cap ? G * w->stride : w->cap;
    w->eff = slots ? slots : w->rmax;
    w->words = (w->cap + 31) / 32;
    size_t hq = (size_t)hkv * G;
    w->sel = calloc(hq * w->stride, 4);
    w->remap = calloc(hq * w->stride, 4);
    w->need = calloc((size_t)hkv * w->rmax, 4);
    w->work = calloc((size_t)hkv * (w->rmax + slots), 4);
    w->copy = calloc((size_t)hkv * w->rmax * 2, 4);
    w->bits = calloc((size_t)hkv * w->words, 4);
    w->info = calloc((size_t)hkv * 4, 4);
    w->counts = calloc((size_t)hkv * 2, 8);
    w->order = calloc(T, 4);
    for (uint32_t l = 0; l < LAYERS; l++) {
        w->k_src[l] = calloc((size_t)hkv * w->cap * ROWW, 4);
        w->v_src[l] = calloc((size_t)hkv * w->cap * ROWW, 4);
        w->k_dst[l] = calloc((size_t)hkv * w->eff * ROWW, 4);
        w->v_dst[l] = calloc((size_t)hkv * w->eff * ROWW, 4);
        w->tslot[l] = malloc((size_t)hkv * w->cap * 4);
        memset(w->tslot[l], 0xff, (size_t)hkv * w->cap * 4);
        w->meta[l] = malloc((size_t)hkv * (2 * slots + 1) * 4);
        memset(w->meta[l], 0xff, (size_t)hkv * (2 * slots + 1) * 4);
        for (uint32_t g = 0; g < hkv; g++) w->meta[l][g * (2 * slots + 1) + 2 * slots] = 0;
        w->stamp[l] = calloc((size_t)hkv * (slots ? slots : 1), 8);
        w->trunc[l] = w->cap;
        for (uint32_t g = 0; slots && g < hkv; g++) w->rc[l][g] = fasa__rowcache_create(ctx, slots, w->cap);
    }
    fill_rows(w, 0, 0);
}

static void world_free(world *w, fasa_context *ctx)
{
    void *p[] = {w->sel, w->remap, w->need, w->work, w->copy, w->bits, w->info, w->counts, w->order};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    for (uint32_t l = 0; l < LAYERS; l++) {
        free(w->k_src[l]), free(w->v_src[l]), free(w->k_dst[l]), free(w->v_dst[l]);
        free(w->tslot[l]), free(w->meta[l]), free(w->stamp[l]);
        for (uint32_t g = 0; g < w->hkv; g++) fasa__rowcache_destroy(ctx, w->rc[l][g]);
    }
}

/* Selection rows of a step: n_fac distinct tokens of [0, L) per row, in
 * random order, mostly from a drifting window so that steps overlap. */
static void make_selection(world *w, uint32_t rows, uint32_t n_fac, uint32_t L, uint32_t center)
{
    uint8_t *used = malloc(L);
    for (uint32_t r = 0; r < rows; r++) {
        memset(used, 0, L);
        for (uint32_t i = 0; i < n_fac; i++) {
            uint32_t t;
            do t = rnd(4) ? (center + rnd(3 * n_fac)) % L : rnd(L);
            while (used[t]);
            used[t] = 1;
            w->sel[(size_t)r * w->stride + i] = (int32_t)t;
        }
    }
    free(used);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The group's distinct tokens, ascending (count_offload_rows). */
static uint32_t group_tokens(const world *w, uint32_t g, uint32_t rpg, uint32_t n_fac, int32_t *out)
{
    uint32_t n = 0;
    for (uint32_t r = g * rpg; r < (g + 1) * rpg; r++)
        for (uint32_t i = 0; i < n_fac; i++) out[n++] = w->sel[(size_t)r * w->stride + i];
    qsort(out, n, 4, cmp_i32);
    uint32_t u = 0;
    for (uint32_t i = 0; i < n; i++)
        if (i == 0 || out[i] != out[i - 1]) out[u++] = out[i];
    return u;
}

/* ---- one step: emulate, then check against the reference --------------- */

/* Staged: hits, the slot of every needed token, the remapped selection
 * and the slot contents. */
static void check_slots(world *w, const fasa_cu_fetch_args *a, uint32_t g, uint32_t rpg, uint64_t step,
                        const int32_t *want, uint32_t n, const int32_t *slot, uint32_t hits)
{
    uint32_t bad = 0;
    CHECK(w->info[g * 4 + 1] == hits && w->info[g * 4 + 2] == n - hits, "step %llu head %u: hits %u misses %u, want %u",
          (unsigned long long)step, g, w->info[g * 4 + 1], w->info[g * 4 + 2], hits);
    const int32_t *ts = a->tslot + (size_t)g * w->cap;
    for (uint32_t i = 0; w->slots && i < n; i++) bad += ts[want[i]] != slot[i];
    CHECK(bad == 0, "step %llu head %u: %u slots differ from the reference policy", (unsigned long long)step, g, bad);
    for (uint32_t r = g * rpg; r < (g + 1) * rpg; r++)
        for (uint32_t i = 0; i < a->n_fac; i++) {
            size_t at = (size_t)r * w->stride + i;
            uint32_t t = (uint32_t)w->sel[at], s = (uint32_t)w->remap[at];
            if (s >= w->eff) {
                bad++;
                continue;
            }
            for (uint32_t x = 0; x < ROWW; x++) {
                size_t src = ((size_t)g * w->cap + t) * ROWW + x, dst = ((size_t)g * w->eff + s) * ROWW + x;
                bad += a->k_dst[dst] != a->k_src[src] || a->v_dst[dst] != a->v_src[src];
            }
        }
    CHECK(bad == 0, "step %llu head %u: %u remapped entries do not hold the token's row", (unsigned long long)step, g, bad);
}

static void check_group(world *w, const fasa_cu_fetch_args *a, uint32_t layer, uint32_t g, uint32_t rpg, uint64_t step)
{
    int32_t *want = malloc((size_t)rpg * a->n_fac * 4), *slot = malloc((size_t)rpg * a->n_fac * 4);
    uint32_t n = group_tokens(w, g, rpg, a->n_fac, want), hits = 0, bad = 0;
    CHECK(w->info[g * 4] == n, "step %llu head %u: %u needed rows, want %u", (unsigned long long)step, g,
          w->info[g * 4], n);
    for (uint32_t i = 0; w->staged && i < n; i++) bad += w->need[(size_t)g * w->rmax + i] != want[i];
    CHECK(bad == 0, "step %llu head %u: needed list differs in %u places", (unsigned long long)step, g, bad);
    for (uint32_t i = 0; i < w->words; i++) bad += w->bits[(size_t)g * w->words + i] != 0;
    CHECK(bad == 0, "step %llu head %u: bitmap not cleared", (unsigned long long)step, g);
    if (w->slots) hits = fasa__rowcache_step(w->rc[layer][g], want, n, step, slot);
    w->sum_needed += n;
    w->sum_hits += hits;
    if (w->staged) check_slots(w, a, g, rpg, step, want, n, slot, hits);
    free(want), free(slot);
}

static void run(fasa_context *ctx, uint32_t T, uint32_t hkv, uint32_t G, uint32_t slots_mult, int staged)
{
    world w;
    uint32_t n_fac_max = 40;
    uint32_t slots = slots_mult ? slots_mult * G * n_fac_max : 0;
    world_init(&w, ctx, T, hkv, G, slots, staged);
    uint32_t L = 2000, gen = 0, center = 100;
    uint64_t step = 0;
    for (int it = 0; it < 60; it++) {
        uint32_t layer = (uint32_t)it % LAYERS, per_group = rnd(4) == 0, rpg = per_group ? 1 : G;
        uint32_t n_fac = 8 + rnd(n_fac_max - 7);
        if (it % 17 == 16) { /* truncate, then new values for the dropped positions */
            L -= 150 + rnd(200);
            for (uint32_t l = 0; l < LAYERS; l++) {
                if (L < w.trunc[l]) w.trunc[l] = L;
                for (uint32_t g = 0; slots && g < hkv; g++) fasa__rowcache_truncate(w.rc[l][g], L);
            }
            fill_rows(&w, L, ++gen);
        }
        L += rnd(4);
        center = (center + rnd(30)) % (L - 3 * n_fac_max);
        make_selection(&w, hkv * rpg, n_fac, L, center);
        step++;
        fasa_cu_fetch_args a = {
            .sel = w.sel, .sel_stride = w.stride, .rows_per_group = rpg, .n_fac = n_fac, .L = L, .n_kv_heads = hkv,
            .bits = w.bits, .words = w.words, .need = w.need, .rmax = w.rmax, .info = w.info, .counts = w.counts,
            .staged = staged, .tslot = staged ? w.tslot[slots ? layer : 0] : NULL, .cap = w.cap, .slots = slots,
            .meta = slots ? w.meta[layer] : NULL, .stamp = slots ? w.stamp[layer] : NULL, .step = step,
            .trunc_len = w.trunc[layer], .work = slots ? w.work : NULL, .copy = w.copy, .remap = w.remap,
            .k_src = w.k_src[layer], .v_src = w.v_src[layer], .k_dst = w.k_dst[slots ? layer : 0],
            .v_dst = w.v_dst[slots ? layer : 0], .row_words = ROWW, .copy_blocks = 1 + rnd(5)};
        emulate(&w, &a);
        w.trunc[layer] = w.cap;
        for (uint32_t g = 0; g < hkv; g++) check_group(&w, &a, layer, g, rpg, step);
    }
    uint64_t cn = 0, ch = 0;
    for (uint32_t g = 0; g < hkv; g++) cn += w.counts[2 * g], ch += w.counts[2 * g + 1];
    CHECK(cn == w.sum_needed && ch == w.sum_hits, "T %u S %u: counters %llu/%llu, want %llu/%llu", T, slots,
          (unsigned long long)cn, (unsigned long long)ch, (unsigned long long)w.sum_needed,
          (unsigned long long)w.sum_hits);
    CHECK(!slots || w.sum_hits > 0, "T %u S %u: the row cache never hit", T, slots);
    printf("T %3u Hkv %u G %u slots %4u %s: %llu rows needed, %llu hits\n", T, hkv, G, slots,
           staged ? "staged" : "direct", (unsigned long long)w.sum_needed, (unsigned long long)w.sum_hits);
    world_free(&w, ctx);
}

int main(void)
{
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 1};
    if (fasa_context_create(&cd, &ctx) != FASA_OK) return 1;
    const uint32_t threads[] = {1, 5, 32, FASA_FM_THREADS};
    for (size_t i = 0; i < sizeof threads / sizeof threads[0]; i++) {
        run(ctx, threads[i], 2, 4, 1, 1); /* row cache of exactly one step's rows */
        run(ctx, threads[i], 3, 2, 3, 1);
        run(ctx, threads[i], 2, 4, 0, 1); /* staging area */
        run(ctx, threads[i], 2, 1, 2, 1); /* G = 1 */
    }
    run(ctx, 32, 2, 4, 0, 0); /* direct: counts only */
    fasa_context_destroy(ctx);
    return check_done("test_cuda_fetch_logic");
}
