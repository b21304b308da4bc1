/* Paged and shared caches (fasa_kv_external.block_size) and batched decode
 * (fasa_decode_batch) on one backend, through the public API:
 *
 *  - the rules: block_size a power of two dividing the capacity; a paged
 *    cache needs a sequence, other caches refuse one; a block table entry
 *    outside the pool, too few entries, length 0 or past the capacity, and
 *    every batch argument (n, items, a NULL cache, desc.sequence, o
 *    overlapping another item's q or o) fail naming the field, and a
 *    refused batch writes no o;
 *  - a sequence whose blocks are shuffled over a pool (block_size 4, last
 *    block partial), and two sequences interleaved in a cell array
 *    (block_size 1) with empty cells, decode exactly like a contiguous
 *    cache holding the sequence's tokens in order: the same selections and
 *    o bit for bit (FASA per head and per group, oracle, dense, the short
 *    dense path).  Every row that is not the sequence's holds poison that
 *    cannot go unnoticed: K = +1000 in every dim (q is positive, so such a
 *    row would win any selection) and V = NaN (o would turn NaN);
 *  - a batch of items over the shared pool plus one over a cache of its
 *    own writes each item's o bit for bit as single fasa_decode calls do.
 *
 * Usage: test_paged [cpu|vulkan|opencl|cuda]  (77 when the backend has no
 * device).  Vulkan runs with the validation layer where installed. */
#include "api_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HQ 4
#define HKV 2
#define D 8
#define ROW (HKV * D)           /* floats per token row (token-major) */
#define POOL 64                 /* rows of each pool */
#define NFAC 8
#define QN (HQ * D)

static const fasa_model_shape shape = {1, HQ, HKV, D, FASA_ROPE_NORM};

static fasa_calibration *make_calibration(fasa_context *ctx)
{
    uint16_t dims[HQ * 2];
    for (int h = 0; h < HQ; h++) { /* one chunk per head, differing inside each group */
        dims[2 * h] = (uint16_t)(2 * h);
        dims[2 * h + 1] = (uint16_t)(2 * h + 1);
    }
    fasa_calibration_desc cd = {.shape = shape, .n_tip = 1, .dims = dims};
    fasa_calibration *cal = NULL;
    CHECK_STATUS(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_OK);
    return cal;
}

static uint32_t rng(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* Token values: K in [-4, 4), V in [-2, 2). */
static void make_token(uint32_t *s, float *k, float *v)
{
    for (int i = 0; i < ROW; i++) {
        k[i] = (float)((int)(rng(s) % 256) - 128) / 32.0f;
        v[i] = (float)((int)(rng(s) % 256) - 128) / 64.0f;
    }
}

static void make_q(uint32_t seed, float *q)
{
    for (int i = 0; i < QN; i++) q[i] = 0.25f + (float)((i * 7 + seed * 5) % 13) / 8.0f; /* positive */
}

/* An engine's K and V over `rows` token rows (token-major fp32), with the
 * cache over them. */
typedef struct pool {
    fasa_buffer *k, *v;
    fasa_buffer *ks[1], *vs[1];  /* per layer */
    fasa_kv_external ext;
    fasa_kv_cache *cache;
    float kh[POOL * ROW], vh[POOL * ROW];
} pool;

/* Creates the buffers, every row poisoned, and a cache of block_size bs
 * (0: contiguous) over them. */
static bool pool_init(fasa_context *ctx, const fasa_calibration *cal, pool *p, uint32_t bs)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < POOL * ROW; i++) {
        p->kh[i] = 1000.0f;
        p->vh[i] = NAN;
    }
    uint64_t bytes = sizeof p->kh;
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, bytes, &p->k), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, bytes, &p->v), FASA_OK);
    if (!p->k || !p->v) return false;
    p->ks[0] = p->k;
    p->vs[0] = p->v;
    p->ext = (fasa_kv_external){.token_stride = ROW, .head_stride = D, .k = p->ks, .v = p->vs, .block_size = bs};
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = POOL, .dtype = FASA_DTYPE_F32, .calibration = cal,
                             .flags = FASA_CACHE_NO_DENSE_LAYERS, .external = &p->ext};
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &p->cache), FASA_OK);
    return p->cache != NULL;
}

/* Writes the host image to the buffers and syncs every row (poison too, so
 * K_dom holds it). */
static void pool_sync(fasa_context *ctx, pool *p)
{
    CHECK_STATUS(ctx, fasa_buffer_write(p->k, 0, p->kh, sizeof p->kh), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_write(p->v, 0, p->vh, sizeof p->vh), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_sync(p->cache, 0, 0, POOL), FASA_OK);
}

static void pool_free(pool *p)
{
    fasa_kv_cache_destroy(p->cache);
    fasa_buffer_destroy(p->k);
    fasa_buffer_destroy(p->v);
}

/* A sequence placed in a pool: its rows in token order. */
typedef struct placed {
    uint32_t len, rows[POOL];
    uint32_t table[POOL];
    fasa_sequence seq;
} placed;

/* The contiguous twin of a placed sequence: a cache holding its tokens in
 * order at rows 0..len-1. */
static void make_twin(fasa_context *ctx, const fasa_calibration *cal, const pool *src, const placed *s, pool *twin)
{
    if (!pool_init(ctx, cal, twin, 0)) return;
    for (uint32_t t = 0; t < s->len; t++) {
        memcpy(twin->kh + t * ROW, src->kh + s->rows[t] * ROW, ROW * sizeof(float));
        memcpy(twin->vh + t * ROW, src->vh + s->rows[t] * ROW, ROW * sizeof(float));
    }
    CHECK_STATUS(ctx, fasa_buffer_write(twin->k, 0, twin->kh, sizeof twin->kh), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_write(twin->v, 0, twin->vh, sizeof twin->vh), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_sync(twin->cache, 0, 0, s->len), FASA_OK);
}

typedef struct run_out {
    float o[QN];
    int32_t sel[HQ * NFAC];
    fasa_decode_outputs out;
} run_out;

static void run_host(fasa_context *ctx, fasa_kv_cache *cache, const fasa_decode_desc *dd, const float *q, run_out *r)
{
    memset(r, 0, sizeof *r);
    r->out = (fasa_decode_outputs){.selected = r->sel, .selected_stride = NFAC};
    CHECK_STATUS(ctx, fasa_decode_host(cache, 0, dd, q, r->o, &r->out), FASA_OK);
}

/* The paged decode of s equals its twin's: same path, same selection sets
 * (as logical token indices), o bit for bit and finite. */
static void compare_with_twin(fasa_context *ctx, const pool *p, const placed *s, const pool *twin,
                              fasa_decode_desc dd, uint32_t seed, const char *what)
{
    float q[QN];
    make_q(seed, q);
    run_out a, b;
    dd.sequence = &s->seq;
    run_host(ctx, p->cache, &dd, q, &a);
    dd.sequence = NULL;
    run_host(ctx, twin->cache, &dd, q, &b);
    CHECK(a.out.path == b.out.path, "%s: path %d, contiguous %d", what, a.out.path, b.out.path);
    bool finite = true;
    for (int i = 0; i < QN; i++) finite &= isfinite(a.o[i]) != 0;
    CHECK(finite, "%s: o is not finite: a poisoned row was read", what);
    CHECK(memcmp(a.o, b.o, sizeof a.o) == 0, "%s: o differs from the contiguous cache's", what);
    if (a.out.path != FASA_PATH_SPARSE) return;
    for (uint32_t r = 0; r < a.out.n_rows; r++)
        for (uint32_t i = 0; i < NFAC; i++) {
            int32_t t = a.sel[r * NFAC + i];
            bool found = false;
            for (uint32_t j = 0; j < NFAC; j++) found |= t == b.sel[r * NFAC + j];
            CHECK(t >= 0 && (uint32_t)t < s->len && found, "%s: row %u selects %d, the contiguous cache does not", what,
                  r, t);
        }
}

static void compare_modes(fasa_context *ctx, const pool *p, const placed *s, const pool *twin, const char *name)
{
    char what[96];
    fasa_decode_desc dd = {.n_fac = NFAC, .n_sink = 1, .n_recent = 2};
    snprintf(what, sizeof what, "%s: fasa per head", name);
    compare_with_twin(ctx, p, s, twin, dd, 1, what);
    dd.gqa_select = FASA_GQA_PER_GROUP;
    snprintf(what, sizeof what, "%s: fasa per group", name);
    compare_with_twin(ctx, p, s, twin, dd, 2, what);
    dd = (fasa_decode_desc){.n_fac = NFAC, .mode = FASA_MODE_ORACLE};
    snprintf(what, sizeof what, "%s: oracle", name);
    compare_with_twin(ctx, p, s, twin, dd, 3, what);
    dd.mode = FASA_MODE_DENSE;
    snprintf(what, sizeof what, "%s: dense", name);
    compare_with_twin(ctx, p, s, twin, dd, 4, what);
}

/* Places len tokens of fresh values in the pool rows `rows`. */
static void place(pool *p, placed *s, uint32_t len, const uint32_t *rows, uint32_t seed)
{
    s->len = len;
    for (uint32_t t = 0; t < len; t++) {
        s->rows[t] = rows[t];
        make_token(&seed, p->kh + rows[t] * ROW, p->vh + rows[t] * ROW);
    }
}

static void shuffle(uint32_t *x, uint32_t n, uint32_t seed)
{
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = rng(&seed) % (i + 1), t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

/* ------------------------------------------------------------------------ */

static void test_blocks(fasa_context *ctx, const fasa_calibration *cal)
{
    pool p, twin;
    if (!pool_init(ctx, cal, &p, 4)) return;
    uint32_t blocks[POOL / 4];
    for (uint32_t b = 0; b < POOL / 4; b++) blocks[b] = b;
    shuffle(blocks, POOL / 4, 7);
    placed s; /* 23 tokens: 6 shuffled blocks, the last holding 3 */
    uint32_t rows[POOL];
    for (uint32_t t = 0; t < 23; t++) rows[t] = blocks[t / 4] * 4 + t % 4;
    place(&p, &s, 23, rows, 11);
    memcpy(s.table, blocks, sizeof blocks);
    s.seq = (fasa_sequence){23, 6, s.table};
    pool_sync(ctx, &p);
    make_twin(ctx, cal, &p, &s, &twin);
    compare_modes(ctx, &p, &s, &twin, "blocks of 4");
    pool_free(&twin);
    /* the short dense path: 5 tokens <= n_fac */
    s.seq.length = 5;
    s.len = 5;
    make_twin(ctx, cal, &p, &s, &twin);
    compare_with_twin(ctx, &p, &s, &twin, (fasa_decode_desc){.n_fac = NFAC}, 5, "blocks of 4: short");
    pool_free(&twin);
    pool_free(&p);
}

/* Two sequences interleaved in a cell array, 13 cells empty. */
typedef struct cells {
    pool p;
    placed a, b;
} cells;

static bool cells_init(fasa_context *ctx, const fasa_calibration *cal, cells *c)
{
    if (!pool_init(ctx, cal, &c->p, 1)) return false;
    uint32_t order[POOL], ra[POOL], rb[POOL];
    for (uint32_t i = 0; i < POOL; i++) order[i] = i;
    shuffle(order, POOL, 3);
    /* cells in ascending order, each sequence taking a random subset */
    uint32_t na = 0, nb = 0;
    for (uint32_t i = 0; i < POOL; i++) {
        uint32_t cell = i, pick = order[i] % 5; /* 0,1: a; 2,3: b; 4: empty */
        if (pick < 2 && na < 30) ra[na++] = cell;
        else if (pick >= 2 && pick < 4 && nb < 21) rb[nb++] = cell;
    }
    place(&c->p, &c->a, na, ra, 21);
    place(&c->p, &c->b, nb, rb, 22);
    memcpy(c->a.table, ra, na * 4);
    memcpy(c->b.table, rb, nb * 4);
    c->a.seq = (fasa_sequence){na, na, c->a.table};
    c->b.seq = (fasa_sequence){nb, nb, c->b.table};
    pool_sync(ctx, &c->p);
    return na > NFAC && nb > NFAC && na + nb < POOL;
}

static void test_cells(fasa_context *ctx, const fasa_calibration *cal)
{
    cells c;
    bool ok = cells_init(ctx, cal, &c);
    CHECK(ok, "cell layout: two sequences longer than n_fac with empty cells between");
    if (!c.p.cache) return;
    pool twin;
    make_twin(ctx, cal, &c.p, &c.a, &twin);
    compare_modes(ctx, &c.p, &c.a, &twin, "cells, sequence a");
    pool_free(&twin);
    make_twin(ctx, cal, &c.p, &c.b, &twin);
    compare_modes(ctx, &c.p, &c.b, &twin, "cells, sequence b");
    pool_free(&twin);
    pool_free(&c.p);
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */
/* ------------------------------------------------------------------------ */

#define NB 6

static void test_batch(fasa_context *ctx, const fasa_calibration *cal)
{
    cells c;
    cells_init(ctx, cal, &c);
    pool own;
    make_twin(ctx, cal, &c.p, &c.b, &own); /* a cache of its own */
    if (!c.p.cache || !own.cache) return;
    fasa_sequence a_short = c.a.seq;
    a_short.length = 7; /* the dense path inside a batch */
    fasa_decode_item items[NB] = {
        {c.p.cache, &c.a.seq, NULL, 0, NULL, 0}, {c.p.cache, &c.b.seq, NULL, 0, NULL, 0},
        {c.p.cache, &a_short, NULL, 0, NULL, 0}, {own.cache, NULL, NULL, 0, NULL, 0},
        {c.p.cache, &c.b.seq, NULL, 0, NULL, 0}, {c.p.cache, &c.a.seq, NULL, 0, NULL, 0},
    };
    fasa_buffer *qb = NULL, *ob = NULL, *o1 = NULL;
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, NB * QN * 4, &qb), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, NB * QN * 4, &ob), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, QN * 4, &o1), FASA_OK);
    float q[NB][QN], o[NB][QN], single[QN], poison[NB * QN];
    for (int i = 0; i < NB; i++) make_q(10 + i, q[i]);
    for (int i = 0; i < NB * QN; i++) poison[i] = -7.0f;
    CHECK_STATUS(ctx, fasa_buffer_write(qb, 0, q, sizeof q), FASA_OK);
    for (int i = 0; i < NB; i++) {
        items[i].q = qb, items[i].q_offset = (uint64_t)i * QN * 4;
        items[i].o = ob, items[i].o_offset = (uint64_t)(NB - 1 - i) * QN * 4; /* reversed order */
    }
    fasa_decode_desc descs[2] = {{.n_fac = NFAC, .n_sink = 1, .n_recent = 1},
                                 {.n_fac = NFAC, .gqa_select = FASA_GQA_PER_GROUP}};
    for (int k = 0; k < 2; k++) {
        CHECK_STATUS(ctx, fasa_buffer_write(ob, 0, poison, sizeof poison), FASA_OK);
        CHECK_STATUS(ctx, fasa_decode_batch(ctx, 0, &descs[k], NB, items), FASA_OK);
        CHECK_STATUS(ctx, fasa_buffer_read(ob, 0, o, sizeof o), FASA_OK);
        for (int i = 0; i < NB; i++) {
            fasa_decode_desc dd = descs[k];
            dd.sequence = items[i].sequence;
            CHECK_STATUS(ctx, fasa_decode(items[i].cache, 0, &dd, qb, items[i].q_offset, o1, 0), FASA_OK);
            CHECK_STATUS(ctx, fasa_buffer_read(o1, 0, single, sizeof single), FASA_OK);
            CHECK(memcmp(single, o[NB - 1 - i], sizeof single) == 0 && isfinite(single[0]),
                  "batch %d: item %d's o differs from a single call's", k, i);
        }
    }
    /* B = 1 */
    fasa_decode_desc dd = descs[0];
    dd.sequence = items[1].sequence;
    CHECK_STATUS(ctx, fasa_decode(items[1].cache, 0, &dd, qb, items[1].q_offset, o1, 0), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_read(o1, 0, single, sizeof single), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_write(ob, 0, poison, sizeof poison), FASA_OK);
    CHECK_STATUS(ctx, fasa_decode_batch(ctx, 0, &descs[0], 1, items + 1), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_read(ob, 0, o, sizeof o), FASA_OK);
    CHECK(memcmp(single, o[NB - 2], sizeof single) == 0, "batch of 1: o differs from a single call's");
    CHECK(o[0][0] == -7.0f && o[NB - 1][QN - 1] == -7.0f, "batch of 1 wrote another item's o");

    /* refused batches write nothing */
    fasa_decode_item bad[NB];
    memcpy(bad, items, sizeof bad);
    CHECK_STATUS(ctx, fasa_buffer_write(ob, 0, poison, sizeof poison), FASA_OK);
    bad[3].o_offset = bad[4].o_offset + 8;
    fasa_status st = fasa_decode_batch(ctx, 0, &descs[0], NB, bad);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "items[3].o overlaps items[4].o"),
          "overlapping o: %s", fasa_context_last_error(ctx));
    memcpy(bad, items, sizeof bad);
    bad[2].o = qb;
    st = fasa_decode_batch(ctx, 0, &descs[0], NB, bad);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "items[2].o overlaps items[3].q"),
          "o over q: %s", fasa_context_last_error(ctx));
    memcpy(bad, items, sizeof bad);
    bad[5].cache = NULL;
    st = fasa_decode_batch(ctx, 0, &descs[0], NB, bad);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "items[5].cache is NULL"),
          "NULL cache: %s", fasa_context_last_error(ctx));
    memcpy(bad, items, sizeof bad);
    bad[4].sequence = NULL;
    st = fasa_decode_batch(ctx, 0, &descs[0], NB, bad);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "items[4].sequence is NULL"),
          "missing sequence: %s", fasa_context_last_error(ctx));
    memcpy(bad, items, sizeof bad);
    bad[3].sequence = &c.a.seq; /* a contiguous cache */
    st = fasa_decode_batch(ctx, 0, &descs[0], NB, bad);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "items[3].sequence: only"),
          "sequence on a contiguous cache: %s", fasa_context_last_error(ctx));
    fasa_decode_desc with_seq = descs[0];
    with_seq.sequence = &c.a.seq;
    st = fasa_decode_batch(ctx, 0, &with_seq, NB, items);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "desc.sequence"),
          "desc.sequence in a batch: %s", fasa_context_last_error(ctx));
    st = fasa_decode_batch(ctx, 0, &descs[0], 0, items);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "n is 0"), "n 0: %s",
          fasa_context_last_error(ctx));
    st = fasa_decode_batch(ctx, 0, &descs[0], NB, NULL);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "items is NULL"),
          "items NULL: %s", fasa_context_last_error(ctx));
    st = fasa_decode_batch(ctx, 1, &descs[0], NB, items);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "items[0]"), "layer: %s",
          fasa_context_last_error(ctx));
    CHECK_STATUS(ctx, fasa_buffer_read(ob, 0, o, sizeof o), FASA_OK);
    CHECK(memcmp(o, poison, sizeof o) == 0, "a refused batch wrote o");

    fasa_buffer_destroy(qb);
    fasa_buffer_destroy(ob);
    fasa_buffer_destroy(o1);
    pool_free(&own);
    pool_free(&c.p);
}

/* ------------------------------------------------------------------------ */
/* Rules                                                                     */
/* ------------------------------------------------------------------------ */

static void expect(fasa_context *ctx, fasa_status got, fasa_status want, const char *what)
{
    const char *msg = fasa_context_last_error(ctx);
    CHECK(got == want, "%s: got %s (%s), wanted %s", what, fasa_status_string(got), msg, fasa_status_string(want));
    CHECK(strstr(msg, what) != NULL, "message '%s' does not name '%s'", msg, what);
}

static void test_rules(fasa_context *ctx, const fasa_calibration *cal)
{
    pool p;
    if (!pool_init(ctx, cal, &p, 4)) return;
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = POOL, .dtype = FASA_DTYPE_F32, .calibration = cal,
                             .external = &p.ext};
    fasa_kv_external x = p.ext;
    kd.external = &x;
    fasa_kv_cache *cache = (fasa_kv_cache *)&cache;
    x.block_size = 3;
    expect(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_ERROR_INVALID_ARGUMENT,
           "desc.external->block_size: 3 is not a power of two");
    CHECK(cache == NULL, "*out not NULL after a refused create");
    x.block_size = 128;
    expect(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_ERROR_INVALID_ARGUMENT,
           "capacity 64 is not a multiple of the block size 128");

    pool_sync(ctx, &p);
    float q[QN], o[QN];
    make_q(0, q);
    uint32_t table[4] = {3, 1, 15, 0};
    fasa_sequence seq = {13, 4, table};
    fasa_decode_desc dd = {.n_fac = NFAC};
    expect(ctx, fasa_decode_host(p.cache, 0, &dd, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "desc.sequence is NULL");
    dd.sequence = &seq;
    CHECK_STATUS(ctx, fasa_decode_host(p.cache, 0, &dd, q, o, NULL), FASA_OK);
    table[2] = 16;
    expect(ctx, fasa_decode_host(p.cache, 0, &dd, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT,
           "desc.sequence->block_table[2]: block 16 is outside the pool");
    table[2] = 2;
    seq.n_blocks = 3;
    expect(ctx, fasa_decode_host(p.cache, 0, &dd, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT,
           "desc.sequence->n_blocks: 3 entries cannot hold 13 tokens");
    seq.n_blocks = 4;
    seq.length = 0;
    expect(ctx, fasa_decode_host(p.cache, 0, &dd, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT,
           "desc.sequence->length is 0");
    uint32_t repeated[17] = {0};
    seq = (fasa_sequence){65, 17, repeated};
    expect(ctx, fasa_decode_host(p.cache, 0, &dd, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT,
           "desc.sequence->length: 65 tokens exceed the cache's capacity");
    seq = (fasa_sequence){13, 4, NULL};
    expect(ctx, fasa_decode_host(p.cache, 0, &dd, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT,
           "desc.sequence->block_table is NULL");
    /* a pool's blocks are synced anywhere, in any order */
    CHECK_STATUS(ctx, fasa_kv_cache_sync(p.cache, 0, 40, 8), FASA_OK);

    pool twin;
    if (pool_init(ctx, cal, &twin, 0)) {
        seq = (fasa_sequence){4, 1, table};
        dd.sequence = &seq;
        expect(ctx, fasa_decode_host(twin.cache, 0, &dd, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT,
               "desc.sequence: only caches over a paged or shared external pool");
        pool_free(&twin);
    }
    pool_free(&p);
}

int main(int argc, char **argv)
{
    fasa_context *ctx = NULL;
    int status = api_test_open(argc, argv, "test_paged", &ctx);
    if (status) return status;
    fasa_calibration *cal = make_calibration(ctx);
    test_rules(ctx, cal);
    test_blocks(ctx, cal);
    test_cells(ctx, cal);
    test_batch(ctx, cal);
    fasa_calibration_destroy(cal);
    return api_test_close(ctx);
}
