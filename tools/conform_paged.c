/* Conformance of paged and shared caches (fasa_kv_external.block_size) and
 * of batched decode (fasa_decode_batch).  The harness plays an engine with
 * one pool of K/V rows (token- or head-major, f16/bf16/f32): the
 * sequences' tokens are written into blocks scattered over the pool in a
 * seeded random order, the last block of a sequence partial, and every
 * other row holds poison, synced like the rest so that K_dom holds it too:
 * K = +-3e4 (inside fp16's range, so a wrongly mapped row scores far above
 * every real one) and V = NaN (so any read of such a row makes o NaN).
 * Each sequence is decoded with fasa_decode_host and checked against the
 * fp64 reference over its tokens in logical order, exactly like every
 * other case (path, guards, scores, selection, output).
 *
 *   paged-*  one sequence, block_size 16 or 4;
 *   cells-*  block_size 1 (llama.cpp's cell array): two sequences in
 *            interleaved cells (the first in ascending cells, the second in
 *            random order) and empty cells; each checked on its own;
 *   batch-*  B items over one pool, each with its own block table and
 *            length (some <= n_fac: the dense path), some sharing a prefix
 *            block range with the item before; or (batch-*-own) B caches of
 *            their own, not paged, of different dtypes.  Every item is
 *            checked against fp64 (through fasa_decode_host), and one
 *            fasa_decode_batch of all items must write o bit for bit as the
 *            items' single fasa_decode calls do (the whole o buffer, the
 *            poisoned bytes between the items included) and as
 *            fasa_decode_host's o (rounded to the io type, when 16-bit). */
#include "conform.h"
#include "conform_int.h"
#include "cli.h"
#include "ref64.h"
#include "synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_POISON_K 3.0e4      /* |K| of a poison row: fp16-safe, far above any real score */

/* ------------------------------------------------------------------------ */
/* The cases                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct pool_list {
    conform_case *v;
    uint32_t n, max;
    uint64_t seed;
} pool_list;

static const char *layout_tag(uint32_t external) { return external == CONFORM_EXT_HEAD ? "head" : "token"; }

static const char *dtype_tag(fasa_dtype t) { return t == FASA_DTYPE_F16 ? "f16" : t == FASA_DTYPE_BF16 ? "bf16" : "f32"; }

static conform_case *pool_add(pool_list *l, uint32_t pool, uint32_t hq, uint32_t hkv, uint32_t d,
                              fasa_rope_layout layout, fasa_dtype dtype, fasa_gqa_select gqa, fasa_mode mode,
                              synth_kind data, uint32_t L, uint32_t n_fac, uint32_t block_size, uint32_t external)
{
    static conform_case dummy;
    if (l->n >= l->max) return &dummy;
    conform_case *c = &l->v[l->n++];
    *c = (conform_case){.hq = hq, .hkv = hkv, .d = d, .layout = layout, .dtype = dtype, .gqa = gqa, .mode = mode,
                        .data = data, .L = L, .n_fac = n_fac, .n_tip = d / 8,
                        .n_appends = 1 + (uint32_t)(l->seed % 3), .external = external, .pool = pool,
                        .block_size = block_size, .n_items = 1, .seed = l->seed};
    l->seed = l->seed * 6364136223846793005ull + 1442695040888963407ull;
    return c;
}

/* The base name plus the pool prefix: paged-bs16-token/..., cells-head/...,
 * batch-B16-bs16-token/..., batch-B3-own-f16-bf16-f32/... */
static void pool_name(conform_case *c)
{
    conform__name_case(c);
    char base[sizeof c->name];
    snprintf(base, sizeof base, "%s", c->name);
    const char *lay = layout_tag(c->external), *dt = dtype_tag(c->dtype);
    switch (c->pool) {
    case CONFORM_POOL_PAGED: snprintf(c->name, sizeof c->name, "paged-bs%u-%s/%.130s", c->block_size, lay, base); break;
    case CONFORM_POOL_CELLS:
        snprintf(c->name, sizeof c->name, "cells-%s/%.120s/seq2-L%u/empty%u", lay, base, c->L2, c->n_empty);
        break;
    case CONFORM_POOL_BATCH:
        snprintf(c->name, sizeof c->name, "batch-B%u-bs%u-%s/%.125s", c->n_items, c->block_size, lay, base);
        break;
    default: snprintf(c->name, sizeof c->name, "batch-B%u-own-%s-mixed/%.125s", c->n_items, dt, base); break;
    }
}

uint32_t conform_pool_cases(conform_case *cases, uint32_t n, uint32_t max, bool quick)
{
    pool_list l = {cases, n, max, 20261208}; /* a seed of their own: the same cases with and without quick */
    const uint32_t first = n, n_fac = 64;
    uint32_t big[4], n_big = 0;
    const fasa_dtype dts[] = {FASA_DTYPE_F16, FASA_DTYPE_BF16, FASA_DTYPE_F32};
    const struct { uint32_t hq, hkv, d; } sh[] = {{16, 4, 128}, {9, 3, 64}, {8, 2, 256}, {8, 8, 64}};
    const uint32_t TOK = CONFORM_EXT_TOKEN, HEAD = CONFORM_EXT_HEAD;
    /* paged: every storage x pool layout x selection, FASA on planted data, the
     * last block partial (1000 = 62.5 blocks of 16; 1001 for blocks of 4) */
    uint32_t k = 0;
    for (int dt = 0; dt < 3; dt++)
        for (int lay = 0; lay < 2; lay++)
            for (int gq = 0; gq < 2; gq++, k++) {
                uint32_t bs = k % 3 == 2 ? 4 : 16;
                pool_add(&l, CONFORM_POOL_PAGED, sh[k % 4].hq, sh[k % 4].hkv, sh[k % 4].d, (fasa_rope_layout)(k % 2),
                         dts[dt], (fasa_gqa_select)gq, FASA_MODE_FASA, SYNTH_PLANTED, bs == 4 ? 1001 : 1000, n_fac, bs,
                         lay ? HEAD : TOK);
            }
    /* paged: the L edges (one partial block; the dense path; one past it),
     * oracle, dense mode, tie data, forced tokens, per-head dims, the dense
     * layer, a larger budget, 16-bit q/o */
    const uint32_t edge_L[] = {1, 50, n_fac, n_fac + 1};
    for (int i = 0; i < 4; i++)
        pool_add(&l, CONFORM_POOL_PAGED, 16, 4, 128, FASA_ROPE_NORM, dts[i % 3], (fasa_gqa_select)(i % 2),
                 FASA_MODE_FASA, SYNTH_PLANTED, edge_L[i], n_fac, i == 3 ? 4 : 16, i % 2 ? HEAD : TOK);
    for (int lay = 0; lay < 2; lay++) {
        pool_add(&l, CONFORM_POOL_PAGED, 9, 3, 64, FASA_ROPE_NEOX, dts[lay], FASA_GQA_PER_HEAD, FASA_MODE_ORACLE,
                 SYNTH_GAUSSIAN, 777, n_fac, 16, lay ? HEAD : TOK);
        pool_add(&l, CONFORM_POOL_PAGED, 16, 2, 128, FASA_ROPE_NORM, dts[2 - lay], FASA_GQA_PER_GROUP, FASA_MODE_DENSE,
                 SYNTH_GAUSSIAN, 500 + 3, n_fac, lay ? 4 : 16, lay ? HEAD : TOK);
        pool_add(&l, CONFORM_POOL_PAGED, 16, 4, 128, FASA_ROPE_NEOX, dts[lay + 1], (fasa_gqa_select)lay, FASA_MODE_FASA,
                 SYNTH_INTEGER, 1000 + 7, 100, 16, lay ? HEAD : TOK);
        conform_case *c = pool_add(&l, CONFORM_POOL_PAGED, 16, 4, 128, FASA_ROPE_NORM, dts[lay], (fasa_gqa_select)lay,
                                   FASA_MODE_FASA, SYNTH_PLANTED, 3000 + 5, 256, 16, lay ? TOK : HEAD);
        c->n_sink = 4, c->n_recent = 16;
        pool_add(&l, CONFORM_POOL_PAGED, 16, 4, 128, FASA_ROPE_NEOX, dts[2 - lay], (fasa_gqa_select)lay, FASA_MODE_FASA,
                 SYNTH_PLANTED, 2000 + 9, 128, lay ? 4 : 16, lay ? HEAD : TOK)->per_head_dims = true;
        pool_add(&l, CONFORM_POOL_PAGED, 16, 4, 128, FASA_ROPE_NORM, dts[lay], (fasa_gqa_select)lay, FASA_MODE_FASA,
                 SYNTH_PLANTED, 2000 + 1, 128, 16, lay ? TOK : HEAD)->on_dense_layer = true;
        c = pool_add(&l, CONFORM_POOL_PAGED, 8, 2, 256, FASA_ROPE_NORM, dts[lay + 1], FASA_GQA_PER_HEAD, FASA_MODE_FASA,
                     SYNTH_PLANTED, 1000 + 13, n_fac, 16, lay ? HEAD : TOK);
        c->q_type = lay ? FASA_IO_F16 : FASA_IO_BF16, c->o_type = FASA_IO_BF16;
    }
    /* the larger ones (left out by quick, dropped at the end so that every seed stays the same) */
    big[n_big++] = l.n;
    pool_add(&l, CONFORM_POOL_PAGED, 16, 4, 128, FASA_ROPE_NORM, FASA_DTYPE_F16, FASA_GQA_PER_HEAD, FASA_MODE_FASA,
             SYNTH_PLANTED, 4096 + 11, 1024, 16, TOK);
    big[n_big++] = l.n;
    pool_add(&l, CONFORM_POOL_PAGED, 32, 8, 128, FASA_ROPE_NORM, FASA_DTYPE_BF16, FASA_GQA_PER_GROUP, FASA_MODE_FASA,
             SYNTH_PLANTED, 20000 + 3, 256, 16, HEAD);
    /* cells (block_size 1): two interleaved sequences and empty cells */
    const struct { uint32_t L, L2, empty; fasa_mode mode; synth_kind data; } cells[] = {
        {1000, 700, 300, FASA_MODE_FASA, SYNTH_PLANTED}, {1000, 1200, 37, FASA_MODE_FASA, SYNTH_PLANTED},
        {40, 1000, 100, FASA_MODE_FASA, SYNTH_PLANTED},  {777, 333, 200, FASA_MODE_ORACLE, SYNTH_GAUSSIAN},
        {500, 64, 64, FASA_MODE_DENSE, SYNTH_GAUSSIAN},   {1000, 900, 111, FASA_MODE_FASA, SYNTH_INTEGER}};
    for (int i = 0; i < 6; i++)
        for (int gq = 0; gq < 2; gq++) {
            if ((i + gq) % 2 && i > 1) continue; /* both selections for the first two, then alternating */
            conform_case *c = pool_add(&l, CONFORM_POOL_CELLS, sh[i % 4].hq, sh[i % 4].hkv, sh[i % 4].d,
                                       (fasa_rope_layout)((i + gq) % 2), dts[(i + gq) % 3], (fasa_gqa_select)gq,
                                       cells[i].mode, cells[i].data, cells[i].L,
                                       cells[i].data == SYNTH_INTEGER ? 100 : n_fac, 1, (i + gq) % 2 ? HEAD : TOK);
            c->n_items = 2, c->L2 = cells[i].L2, c->n_empty = cells[i].empty;
        }
    /* batches over one pool: B = 1, 3, 16; and B = 3 caches of their own */
    const struct { uint32_t B, bs, L; fasa_dtype dt; fasa_gqa_select gqa; uint32_t lay; } batches[] = {
        {1, 16, 1000, FASA_DTYPE_F16, FASA_GQA_PER_HEAD, TOK},  {3, 16, 1000, FASA_DTYPE_BF16, FASA_GQA_PER_GROUP, HEAD},
        {3, 4, 777, FASA_DTYPE_F32, FASA_GQA_PER_HEAD, TOK},    {16, 16, 1000, FASA_DTYPE_F16, FASA_GQA_PER_HEAD, TOK},
        {16, 16, 1000, FASA_DTYPE_BF16, FASA_GQA_PER_GROUP, HEAD}};
    for (int i = 0; i < 5; i++) {
        conform_case *c = pool_add(&l, CONFORM_POOL_BATCH, 16, 4, 128, (fasa_rope_layout)(i % 2), batches[i].dt,
                                   batches[i].gqa, FASA_MODE_FASA, SYNTH_PLANTED, batches[i].L, n_fac, batches[i].bs,
                                   batches[i].lay);
        c->n_items = batches[i].B;
        if (i == 2) c->n_sink = 2, c->n_recent = 8;
    }
    conform_case *c = pool_add(&l, CONFORM_POOL_BATCH, 9, 3, 64, FASA_ROPE_NEOX, FASA_DTYPE_F16, FASA_GQA_PER_HEAD,
                               FASA_MODE_FASA, SYNTH_PLANTED, 1000, n_fac, 16, HEAD);
    c->n_items = 3, c->q_type = FASA_IO_BF16, c->o_type = FASA_IO_F16; /* the batch in 16-bit q and o */
    for (int gq = 0; gq < 2; gq++) {
        c = pool_add(&l, CONFORM_POOL_BATCH_OWN, 16, 4, 128, FASA_ROPE_NORM, FASA_DTYPE_F16, (fasa_gqa_select)gq,
                     FASA_MODE_FASA, SYNTH_PLANTED, 1000, n_fac, 0, CONFORM_EXT_NONE);
        c->n_items = 3;
    }
    big[n_big++] = l.n;
    c = pool_add(&l, CONFORM_POOL_BATCH, 16, 4, 128, FASA_ROPE_NORM, FASA_DTYPE_F16, FASA_GQA_PER_HEAD, FASA_MODE_FASA,
                 SYNTH_PLANTED, 4096 + 11, 256, 16, TOK);
    c->n_items = 16;
    for (uint32_t i = first; i < l.n; i++) pool_name(&cases[i]);
    uint32_t w = first;
    for (uint32_t i = first, b = 0; i < l.n; i++) {
        bool drop = quick && b < n_big && big[b] == i;
        if (b < n_big && big[b] == i) b++;
        if (!drop) cases[w++] = cases[i];
    }
    return w;
}

/* ------------------------------------------------------------------------ */
/* The engine's pool                                                         */
/* ------------------------------------------------------------------------ */

typedef struct pool_seq {
    conform_case c;              /* the sequence as a case: its L, seed, q */
    case_data cd;
    bool made;
    uint32_t *table, n_blocks;
    fasa_sequence seq;
    fasa_kv_cache *own;          /* batch-own: the item's cache */
    fasa_decode_outputs out;
    conform_result r;
    bool decoded;
} pool_seq;

typedef struct pool_engine {
    fasa_context *ctx;
    bool on_cpu;
    fasa_dtype dtype;
    uint32_t elem, hkv, d, bs, cap, n_blocks;
    uint64_t bytes;
    fasa_kv_external ext;
    fasa_buffer *buf[2];         /* K, V */
    void *mem[2];
    fasa_buffer *k_of[2], *v_of[2];
} pool_engine;

static uint64_t rng_next(uint64_t *s)
{
    synth_rng r = {*s};
    uint64_t x = synth_next(&r);
    *s = r.state;
    return x;
}

static void shuffle(uint32_t *v, uint32_t n, uint64_t *s)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)(rng_next(s) % i), t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

static void engine_destroy(pool_engine *e)
{
    for (int i = 0; i < 2; i++) {
        fasa_buffer_destroy(e->buf[i]);
        free(e->mem[i]);
    }
    memset(e, 0, sizeof *e);
}

static void *row_at(pool_engine *e, int which, uint32_t row, uint32_t g)
{
    return (char *)e->mem[which] + (row * e->ext.token_stride + g * e->ext.head_stride) * e->elem;
}

static void put(pool_engine *e, void *dst, uint32_t i, double x)
{
    if (e->dtype == FASA_DTYPE_F32) {
        float f = (float)x;
        memcpy((char *)dst + 4 * i, &f, 4);
    } else {
        ((uint16_t *)dst)[i] = e->dtype == FASA_DTYPE_BF16 ? ref_bf16_bits(x) : ref_half_bits(x);
    }
}

/* Every row poison: K +-3e4 by a seeded sign per element, V NaN. */
static void poison_all(pool_engine *e, uint64_t seed)
{
    uint64_t s = seed ^ 0x9015011ull;
    for (uint32_t r = 0; r < e->cap; r++)
        for (uint32_t g = 0; g < e->hkv; g++) {
            void *k = row_at(e, 0, r, g), *v = row_at(e, 1, r, g);
            for (uint32_t i = 0; i < e->d; i++) {
                put(e, k, i, rng_next(&s) & 1 ? POOL_POISON_K : -POOL_POISON_K);
                put(e, v, i, NAN);
            }
        }
}

/* Token t of a sequence (fp32 rows [L][Hkv][d]) into pool row `row`. */
static void write_token(pool_engine *e, uint32_t row, const float *k, const float *v, uint32_t t)
{
    for (uint32_t g = 0; g < e->hkv; g++) {
        const float *kr = k + ((size_t)t * e->hkv + g) * e->d, *vr = v + ((size_t)t * e->hkv + g) * e->d;
        void *kd = row_at(e, 0, row, g), *vd = row_at(e, 1, row, g);
        for (uint32_t i = 0; i < e->d; i++) {
            put(e, kd, i, kr[i]);
            put(e, vd, i, vr[i]);
        }
    }
}

static fasa_status engine_create(fasa_context *ctx, const conform_case *c, uint32_t n_blocks, pool_engine *e)
{
    fasa_device_info info;
    fasa_context_device(ctx, &info);
    memset(e, 0, sizeof *e);
    e->ctx = ctx;
    e->on_cpu = info.backend == FASA_BACKEND_CPU;
    e->dtype = c->dtype;
    e->elem = c->dtype == FASA_DTYPE_F32 ? 4 : 2;
    e->hkv = c->hkv, e->d = c->d, e->bs = c->block_size, e->n_blocks = n_blocks;
    e->cap = n_blocks * c->block_size;
    if (c->external == CONFORM_EXT_HEAD) e->ext.token_stride = c->d, e->ext.head_stride = (uint64_t)e->cap * c->d;
    else e->ext.token_stride = (uint64_t)c->hkv * c->d, e->ext.head_stride = c->d;
    e->bytes = (uint64_t)e->cap * c->hkv * c->d * e->elem;
    for (int i = 0; i < 2; i++) {
        e->mem[i] = malloc(e->bytes);
        if (!e->mem[i]) return FASA_ERROR_OUT_OF_HOST_MEMORY;
        fasa_status st = e->on_cpu ? fasa_buffer_wrap_host(ctx, e->mem[i], e->bytes, &e->buf[i])
                                   : fasa_buffer_create(ctx, e->bytes, &e->buf[i]);
        if (st != FASA_OK) return st;
    }
    for (int l = 0; l < 2; l++) e->k_of[l] = e->buf[0], e->v_of[l] = e->buf[1]; /* both layers view the pool */
    e->ext.k = e->k_of;
    e->ext.v = e->v_of;
    e->ext.block_size = c->block_size;
    return FASA_OK;
}

static fasa_status publish(pool_engine *e)
{
    fasa_status st = FASA_OK;
    for (int i = 0; !e->on_cpu && st == FASA_OK && i < 2; i++) st = fasa_buffer_write(e->buf[i], 0, e->mem[i], e->bytes);
    return st;
}

/* Syncs the whole pool: in one call (n_appends 1) or in up to 16 pieces of
 * whole blocks in a random order (a pool's blocks are written anywhere). */
static fasa_status sync_pool(pool_engine *e, fasa_kv_cache *cache, uint32_t layer, const conform_case *c, uint64_t *s)
{
    if (c->n_appends == 1) return fasa_kv_cache_sync(cache, layer, 0, e->cap);
    uint32_t pieces = e->n_blocks < 16 ? e->n_blocks : 16, order[16];
    for (uint32_t i = 0; i < pieces; i++) order[i] = i;
    shuffle(order, pieces, s);
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; st == FASA_OK && i < pieces; i++) {
        uint32_t p = order[i], b0 = (uint32_t)((uint64_t)e->n_blocks * p / pieces),
                 b1 = (uint32_t)((uint64_t)e->n_blocks * (p + 1) / pieces);
        if (b1 > b0) st = fasa_kv_cache_sync(cache, layer, b0 * e->bs, (b1 - b0) * e->bs);
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Running a case                                                            */
/* ------------------------------------------------------------------------ */

static uint32_t blocks_of(uint32_t L, uint32_t bs) { return (L + bs - 1) / bs; }

/* The sequences of a case: lengths, data seeds and which item shares a
 * prefix with the one before (batch), as cases of their own. */
static void plan_sequences(const conform_case *c, pool_seq *seqs, uint32_t n, uint64_t *s)
{
    for (uint32_t i = 0; i < n; i++) {
        conform_case *ci = &seqs[i].c;
        *ci = *c;
        ci->pool = CONFORM_POOL_NONE;
        ci->external = CONFORM_EXT_NONE;
        if (i == 0) continue; /* the case itself */
        ci->seed = c->seed + 0x51ed2701ull * i;
        if (c->pool == CONFORM_POOL_CELLS) {
            ci->L = c->L2;
        } else {
            /* every fourth item (from the second) takes the dense path, the rest are sparse */
            uint64_t x = rng_next(s);
            bool dense = i % 4 == 1 || c->L <= c->n_fac;
            ci->L = dense ? 1 + (uint32_t)(x % (c->n_fac < c->L ? c->n_fac : c->L))
                          : c->n_fac + 1 + (uint32_t)(x % (c->L - c->n_fac));
            if (c->pool == CONFORM_POOL_BATCH_OWN) {
                const fasa_dtype dts[] = {FASA_DTYPE_F16, FASA_DTYPE_BF16, FASA_DTYPE_F32};
                ci->dtype = dts[i % 3];
            }
        }
    }
}

/* Items sharing the prefix of the item before: every fourth from the
 * fourth (item 3, 7, ...), when both have a full block to share. */
static uint32_t shared_blocks(const conform_case *c, const pool_seq *seqs, uint32_t i)
{
    if (c->pool != CONFORM_POOL_BATCH || i < 3 || i % 4 != 3) return 0;
    uint32_t full_prev = seqs[i - 1].c.L / c->block_size, mine = blocks_of(seqs[i].c.L, c->block_size);
    uint32_t n = (full_prev < mine ? full_prev : mine) / 2;
    return n;
}

/* Synthesises every sequence's data; all sequences of one cache use the
 * first one's dims (one calibration).  An item sharing a prefix takes the
 * previous item's tokens (same seed) with its query's heads rotated. */
static bool make_sequences(const conform_case *c, pool_seq *seqs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        bool share = shared_blocks(c, seqs, i) > 0;
        if (share) seqs[i].c.seed = seqs[i - 1].c.seed;
        seqs[i].made = true;
        if (!conform__make_data(&seqs[i].c, NULL, &seqs[i].cd)) return false;
        case_data *cd = &seqs[i].cd;
        if (i) memcpy(cd->dims, seqs[0].cd.dims, (size_t)c->hq * 2 * c->n_tip * sizeof(uint16_t));
        if (share) {
            size_t nq = (size_t)c->hq * c->d;
            float *q = malloc(nq * sizeof(float));
            double *qd = malloc(nq * sizeof(double));
            if (!q || !qd) {
                free(q);
                free(qd);
                return false;
            }
            for (size_t j = 0; j < nq; j++) q[j] = cd->q[(j + c->d) % nq], qd[j] = cd->qd[(j + c->d) % nq];
            memcpy(cd->q, q, nq * sizeof(float));
            memcpy(cd->qd, qd, nq * sizeof(double));
            free(q);
            free(qd);
        }
    }
    return true;
}

/* Block tables: the pool's blocks in a random order, handed out to the
 * sequences in turn (shared prefixes point at the previous item's blocks),
 * the rest left empty.  Cells: the first sequence's cells ascending (as a
 * unified cache fills them), the second's in random order.  Returns the
 * pool's block count, 0 when out of memory. */
static uint32_t plan_tables(const conform_case *c, pool_seq *seqs, uint32_t n, uint64_t *s)
{
    uint32_t bs = c->block_size, own = 0;
    for (uint32_t i = 0; i < n; i++) own += blocks_of(seqs[i].c.L, bs) - shared_blocks(c, seqs, i);
    uint32_t empty = c->pool == CONFORM_POOL_CELLS ? c->n_empty : 2 + own / 4;
    uint32_t total = own + empty, *perm = malloc(total * sizeof(uint32_t));
    if (!perm) return 0;
    for (uint32_t b = 0; b < total; b++) perm[b] = b;
    shuffle(perm, total, s);
    uint32_t next = 0;
    for (uint32_t i = 0; i < n; i++) {
        pool_seq *q = &seqs[i];
        q->n_blocks = blocks_of(q->c.L, bs);
        q->table = malloc(q->n_blocks * sizeof(uint32_t));
        if (!q->table) {
            free(perm);
            return 0;
        }
        uint32_t sh = shared_blocks(c, seqs, i);
        for (uint32_t b = 0; b < q->n_blocks; b++) q->table[b] = b < sh ? seqs[i - 1].table[b] : perm[next++];
        if (c->pool == CONFORM_POOL_CELLS && i == 0)
            for (uint32_t a = 1; a < q->n_blocks; a++) /* insertion sort: ascending cells */
                for (uint32_t b = a; b > 0 && q->table[b] < q->table[b - 1]; b--) {
                    uint32_t t = q->table[b];
                    q->table[b] = q->table[b - 1];
                    q->table[b - 1] = t;
                }
        q->seq = (fasa_sequence){.length = q->c.L, .n_blocks = q->n_blocks, .block_table = q->table};
    }
    free(perm);
    return total;
}

static fasa_status make_calibration(fasa_context *ctx, const conform_case *c, const uint16_t *dims,
                                    fasa_calibration **cal)
{
    size_t per = (size_t)c->hq * 2 * c->n_tip;
    uint16_t *dims2 = malloc(2 * per * sizeof(uint16_t));
    if (!dims2) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    memcpy(dims2, dims, per * sizeof(uint16_t));
    memcpy(dims2 + per, dims, per * sizeof(uint16_t));
    fasa_calibration_desc cd = {.shape = {2, c->hq, c->hkv, c->d, c->layout}, .n_tip = c->n_tip, .dims = dims2};
    fasa_status st = fasa_calibration_create(ctx, &cd, cal);
    free(dims2);
    return st;
}

/* The batch: q of every item in one buffer, o of every item in another,
 * each in a slot with IO_GUARD poisoned bytes on either side; one
 * fasa_decode_batch, then the same items one fasa_decode at a time into a
 * fresh poisoned o buffer.  The two o images must be equal byte for byte;
 * each item's slot of the batched image becomes its cd.o_io, checked by
 * the fp64 comparison against the fasa_decode_host step. */
static fasa_status run_batch(fasa_context *ctx, fasa_kv_cache *pool_cache, uint32_t layer, const fasa_decode_desc *dd,
                             pool_seq *seqs, uint32_t n, const conform_case *c, conform_result *r)
{
    size_t nq = (size_t)c->hq * c->d, qb = nq * conform__io_size(c->q_type), ob = nq * conform__io_size(c->o_type);
    size_t q_slot = IO_GUARD + qb, o_slot = 2 * IO_GUARD + ob, q_total = n * q_slot + IO_GUARD, o_total = n * o_slot;
    uint8_t *q_img = malloc(q_total), *o_batch = malloc(o_total), *o_single = malloc(o_total);
    fasa_decode_item *items = calloc(n, sizeof *items);
    fasa_buffer *qbuf = NULL, *obuf = NULL;
    fasa_status st = q_img && o_batch && o_single && items ? FASA_OK : FASA_ERROR_OUT_OF_HOST_MEMORY;
    if (st == FASA_OK) {
        memset(q_img, IO_POISON, q_total);
        memset(o_batch, IO_POISON, o_total);
        for (uint32_t i = 0; i < n; i++)
            for (size_t j = 0; j < nq; j++) conform__io_store(q_img + i * q_slot + IO_GUARD, j, seqs[i].cd.qd[j], c->q_type);
        st = fasa_buffer_create(ctx, q_total, &qbuf);
    }
    if (st == FASA_OK) st = fasa_buffer_create(ctx, o_total, &obuf);
    if (st == FASA_OK) st = fasa_buffer_write(qbuf, 0, q_img, q_total);
    if (st == FASA_OK) st = fasa_buffer_write(obuf, 0, o_batch, o_total);
    for (uint32_t i = 0; st == FASA_OK && i < n; i++)
        items[i] = (fasa_decode_item){.cache = seqs[i].own ? seqs[i].own : pool_cache,
                                      .sequence = seqs[i].own ? NULL : &seqs[i].seq, .q = qbuf,
                                      .q_offset = i * q_slot + IO_GUARD, .o = obuf, .o_offset = i * o_slot + IO_GUARD};
    fasa_decode_desc bd = *dd;
    bd.sequence = NULL;
    bd.q_type = c->q_type, bd.o_type = c->o_type;
    if (st == FASA_OK) st = fasa_decode_batch(ctx, layer, &bd, n, items);
    if (st == FASA_OK) st = fasa_buffer_read(obuf, 0, o_batch, o_total);
    /* the same items, one fasa_decode each, into a fresh poisoned buffer */
    if (st == FASA_OK) {
        memset(o_single, IO_POISON, o_total);
        st = fasa_buffer_write(obuf, 0, o_single, o_total);
    }
    for (uint32_t i = 0; st == FASA_OK && i < n; i++) {
        fasa_decode_desc sd = bd;
        sd.sequence = items[i].sequence;
        st = fasa_decode(items[i].cache, layer, &sd, qbuf, items[i].q_offset, obuf, items[i].o_offset);
    }
    if (st == FASA_OK) st = fasa_buffer_read(obuf, 0, o_single, o_total);
    if (st != FASA_OK) {
        conform__fail(r, "batch: library call failed: %s: %s", fasa_status_string(st), fasa_context_last_error(ctx));
    } else if (memcmp(o_batch, o_single, o_total) != 0) {
        size_t at = 0;
        while (o_batch[at] == o_single[at]) at++;
        size_t item = at / o_slot, in = at % o_slot;
        if (in < IO_GUARD || in >= IO_GUARD + ob)
            conform__fail(r, "batch: a poisoned byte between the o of the items differs from the single calls' (item %zu, byte "
                 "%zu of its slot)", item, in);
        else
            conform__fail(r, "batch: item %zu's o differs from its single fasa_decode (element %zu)", item,
                 (in - IO_GUARD) / conform__io_size(c->o_type));
    }
    for (uint32_t i = 0; st == FASA_OK && i < n; i++) {
        seqs[i].cd.o_io = malloc(o_slot);
        if (!seqs[i].cd.o_io) {
            st = FASA_ERROR_OUT_OF_HOST_MEMORY;
            conform__fail(r, "out of host memory");
            break;
        }
        memcpy(seqs[i].cd.o_io, o_batch + i * o_slot, o_slot);
    }
    fasa_buffer_destroy(qbuf);
    fasa_buffer_destroy(obuf);
    free(q_img);
    free(o_batch);
    free(o_single);
    free(items);
    return st;
}

static void free_sequences(pool_seq *seqs, uint32_t n)
{
    for (uint32_t i = 0; seqs && i < n; i++) {
        if (seqs[i].made) conform__free_data(&seqs[i].cd);
        free(seqs[i].table);
        fasa_kv_cache_destroy(seqs[i].own);
    }
    free(seqs);
}

/* batch-own: a cache of its own per item, its dtype, appended in
 * n_appends calls. */
static fasa_status make_own_caches(fasa_context *ctx, const fasa_calibration *cal, pool_seq *seqs, uint32_t n,
                                   uint32_t layer)
{
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; st == FASA_OK && i < n; i++) {
        const conform_case *ci = &seqs[i].c;
        fasa_kv_cache_desc kd = {.shape = {2, ci->hq, ci->hkv, ci->d, ci->layout}, .capacity = ci->L,
                                 .dtype = ci->dtype, .calibration = cal};
        st = fasa_kv_cache_create(ctx, &kd, &seqs[i].own);
        size_t row = (size_t)ci->hkv * ci->d;
        uint32_t pieces = ci->L >= ci->n_appends ? ci->n_appends : 1;
        for (uint32_t a = 0, done = 0; st == FASA_OK && a < pieces; a++) {
            uint32_t m = a + 1 == pieces ? ci->L - done : ci->L / pieces;
            st = fasa_kv_cache_append(seqs[i].own, layer, m, seqs[i].cd.k + done * row, seqs[i].cd.v + done * row,
                                      FASA_DTYPE_F32);
            done += m;
        }
    }
    return st;
}

bool conform_pool_run(fasa_context *ctx, const conform_case *c, conform_result *r, conform_capture *cap)
{
    memset(r, 0, sizeof *r);
    if (cap) memset(cap, 0, sizeof *cap);
    r->pass = true;
    uint32_t n = c->pool == CONFORM_POOL_PAGED ? 1 : c->pool == CONFORM_POOL_CELLS ? 2 : c->n_items;
    bool batch = c->pool == CONFORM_POOL_BATCH || c->pool == CONFORM_POOL_BATCH_OWN;
    bool own = c->pool == CONFORM_POOL_BATCH_OWN;
    uint64_t s = c->seed ^ 0x6a09e667f3bcc909ull;
    pool_seq *seqs = calloc(n, sizeof *seqs);
    pool_engine eng;
    memset(&eng, 0, sizeof eng);
    fasa_calibration *cal = NULL;
    fasa_kv_cache *cache = NULL;
    if (!seqs) {
        conform__fail(r, "out of host memory for the case data");
        return false;
    }
    plan_sequences(c, seqs, n, &s);
    if (!make_sequences(c, seqs, n)) {
        free_sequences(seqs, n);
        conform__fail(r, "out of host memory for the case data");
        return false;
    }
    uint32_t layer = c->on_dense_layer ? 0 : 1;
    fasa_status st = make_calibration(ctx, c, seqs[0].cd.dims, &cal);
    if (st == FASA_OK && own) st = make_own_caches(ctx, cal, seqs, n, layer);
    if (st == FASA_OK && !own) {
        uint32_t n_blocks = plan_tables(c, seqs, n, &s);
        st = n_blocks ? engine_create(ctx, c, n_blocks, &eng) : FASA_ERROR_OUT_OF_HOST_MEMORY;
        if (st == FASA_OK) {
            poison_all(&eng, c->seed);
            for (uint32_t i = 0; i < n; i++)
                for (uint32_t t = 0; t < seqs[i].c.L; t++)
                    write_token(&eng, (seqs[i].table[t / c->block_size] * c->block_size) | (t % c->block_size),
                                seqs[i].cd.k, seqs[i].cd.v, t);
            st = publish(&eng);
        }
        fasa_kv_cache_desc kd = {.shape = {2, c->hq, c->hkv, c->d, c->layout}, .capacity = eng.cap,
                                 .dtype = c->dtype, .calibration = cal, .external = &eng.ext,
                                 .max_n_fac = c->n_fac > 2048 ? c->n_fac : 0};
        if (st == FASA_OK) st = fasa_kv_cache_create(ctx, &kd, &cache);
        if (st == FASA_OK) st = sync_pool(&eng, cache, layer, c, &s);
    }
    fasa_decode_desc dd = {.mode = c->mode, .n_fac = c->n_fac, .n_sink = c->n_sink, .n_recent = c->n_recent,
                           .gqa_select = c->gqa};
    /* every sequence through fasa_decode_host with its selection and scores */
    for (uint32_t i = 0; st == FASA_OK && i < n; i++) {
        pool_seq *q = &seqs[i];
        fasa_decode_desc d = dd;
        d.sequence = own ? NULL : &q->seq;
        q->out = (fasa_decode_outputs){.selected = q->cd.sel_buf + GUARD, .selected_stride = c->n_fac,
                                       .scores = q->cd.score_buf + GUARD, .scores_stride = q->c.L};
        double t0 = cli_now();
        st = fasa_decode_host(own ? q->own : cache, layer, &d, q->cd.q, q->cd.o_buf + GUARD, &q->out);
        r->seconds += cli_now() - t0;
        if (st == FASA_OK && !batch && (c->q_type || c->o_type))
            st = conform__decode_io(ctx, cache, layer, &d, &q->c, &q->cd);
        q->decoded = st == FASA_OK;
    }
    if (st != FASA_OK) conform__fail(r, "library call failed: %s: %s", fasa_status_string(st), fasa_context_last_error(ctx));
    if (st == FASA_OK && batch) st = run_batch(ctx, cache, layer, &dd, seqs, n, c, r);
    /* the fp64 checks of every sequence (the first one captured for --against) */
    const char *what = c->pool == CONFORM_POOL_CELLS ? "sequence" : "item";
    for (uint32_t i = 0; st == FASA_OK && i < n; i++) {
        pool_seq *q = &seqs[i];
        q->r.pass = true;
        conform__compare(&q->c, &q->cd, &q->out, &q->r, i == 0 ? cap : NULL);
        if (!q->r.pass) {
            bool batched = batch && strncmp(q->r.why, "io decode", 9) == 0;
            conform__fail(r, "%s %u (L %u)%s: %s", what, i, q->c.L, batched ? ", its batched o" : "", q->r.why);
        }
        if (i == 0) r->path = q->r.path;
        if (q->r.nmse > r->nmse) r->nmse = q->r.nmse;
        if (q->r.max_abs_err > r->max_abs_err) r->max_abs_err = q->r.max_abs_err;
        if (q->r.io_nmse > r->io_nmse) r->io_nmse = q->r.io_nmse;
        if (q->r.score_err > r->score_err) r->score_err = q->r.score_err;
        r->near_ties += q->r.near_ties;
    }
    fasa_kv_cache_destroy(cache);
    free_sequences(seqs, n);
    engine_destroy(&eng);
    fasa_calibration_destroy(cal);
    return true;
}
