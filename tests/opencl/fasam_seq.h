/* A FASA-M decode sequence for the GPU backend tests (public API only;
 * used by tests/opencl/test_cl_fasam.c and tests/cuda/test_cuda_fasam.c).
 *
 * Two layers, both sparse; every step takes a new query (a drifting one, so
 * that selections overlap from step to step as in real decoding), decodes
 * one layer (alternating, so the row-cache stamps of the layers
 * interleave), switches between per-head and per-group selection and
 * forced sink/recent tokens, and appends 1-3 tokens to both layers.  Half
 * way it reads the transfer counters with reset, truncates every layer by
 * 300 tokens and appends 120 new tokens with other values, so that rows a
 * row cache still holds for the dropped positions must not be used again.
 * With prefetch (FASA_DECODE_PREFETCH), every step first prefetches the
 * layer it decodes with the query it is about to get (then every row it
 * needs must be resident) and the other layer with that query too (a
 * speculative prefetch whose rows are partly evicted again).
 *
 * Keys and queries are small integers: TIP scores are exact on every
 * backend, so selections (and with them the transfer counters) agree
 * exactly across backends.  Values are random floats. */
#ifndef FASA_FASAM_SEQ_H
#define FASA_FASAM_SEQ_H

#include "fasa.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fm_config {
    const char *name;
    fasa_placement placement;
    fasa_fetch fetch;
    uint32_t row_cache;           /* rows per (layer, KV head), STAGED only */
    bool prefetch;                /* prefetch steps between the decode steps */
} fm_config;

typedef struct fm_seq {
    fasa_model_shape shape;       /* n_layers 2 */
    uint32_t capacity, first_len, n_fac, steps;
    fasa_dtype dtype;
    uint64_t seed;
} fm_seq;

typedef struct fm_result {
    float *out;                   /* [steps][Hq][d] */
    fasa_transfer_stats half, end;/* counters read (with reset) half way and at the end */
    fasa_memory_report mem;
    fasa_status status;
    char error[512];
    uint32_t prefetched_misses;   /* steps prefetched with their own query that missed rows */
} fm_result;

static inline uint64_t fm_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static inline float fm_int(uint64_t *s, int r) { return (float)((int)(fm_rand(s) % (uint64_t)(2 * r + 1)) - r); }
static inline float fm_float(uint64_t *s) { return (float)((fm_rand(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

/* Appends n tokens with seeded values to every layer. */
static inline fasa_status fm_append(fasa_kv_cache *c, const fm_seq *sq, uint32_t n, uint64_t *seed)
{
    size_t row = (size_t)sq->shape.n_kv_heads * sq->shape.head_dim;
    float *k = malloc(n * row * sizeof(float)), *v = malloc(n * row * sizeof(float));
    fasa_status st = k && v ? FASA_OK : FASA_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t l = 0; st == FASA_OK && l < sq->shape.n_layers; l++) {
        for (size_t i = 0; i < n * row; i++) {
            k[i] = fm_int(seed, 2);
            v[i] = fm_float(seed);
        }
        st = fasa_kv_cache_append(c, l, n, k, v, FASA_DTYPE_F32);
    }
    free(k);
    free(v);
    return st;
}

/* The decode options of step i. */
static inline fasa_decode_desc fm_desc(const fm_seq *sq, uint32_t i)
{
    fasa_decode_desc d = {0};
    d.mode = FASA_MODE_FASA;
    d.n_fac = sq->n_fac;
    d.gqa_select = i % 5 == 3 ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD;
    d.n_sink = i % 4 == 1 ? 4 : 0;
    d.n_recent = i % 3 == 2 ? 8 : 0;
    return d;
}

static inline fasa_status fm_fail(fm_result *r, fasa_context *ctx, fasa_status st, const char *what)
{
    r->status = st;
    snprintf(r->error, sizeof r->error, "%s: %s: %s", what, fasa_status_string(st), fasa_context_last_error(ctx));
    return st;
}

/* Prefetches the decode step (layer, d, q) is about to make and the other
 * layer, then runs the step: it must find every row it needs resident. */
static inline fasa_status fm_prefetched_step(fasa_kv_cache *c, const fm_seq *sq, uint32_t layer,
                                             const fasa_decode_desc *d, const float *q, float *o, fm_result *r)
{
    fasa_decode_desc pd = *d;
    pd.flags = FASA_DECODE_PREFETCH;
    fasa_transfer_stats a, b;
    fasa_status st = fasa_decode_host(c, layer, &pd, q, NULL, NULL);
    if (st == FASA_OK) st = fasa_decode_host(c, (layer + 1) % sq->shape.n_layers, &pd, q, NULL, NULL);
    if (st == FASA_OK) st = fasa_kv_cache_transfer_stats(c, &a, false);
    if (st == FASA_OK) st = fasa_decode_host(c, layer, d, q, o, NULL);
    if (st == FASA_OK) st = fasa_kv_cache_transfer_stats(c, &b, false);
    if (st == FASA_OK && b.rows_needed - a.rows_needed != b.rows_cached - a.rows_cached) r->prefetched_misses++;
    return st;
}

static inline fasa_status fm_steps(fasa_context *ctx, fasa_kv_cache *c, const fm_seq *sq, const fm_config *cf,
                                   fm_result *r)
{
    size_t nq = (size_t)sq->shape.n_q_heads * sq->shape.head_dim;
    float *q = malloc(nq * sizeof(float)), *q0 = malloc(nq * sizeof(float));
    uint64_t qs = sq->seed ^ 0x9e3779b97f4a7c15ull, ks = sq->seed + 1;
    fasa_status st = q && q0 ? FASA_OK : FASA_ERROR_OUT_OF_HOST_MEMORY;
    for (size_t i = 0; i < nq && q0; i++) q0[i] = fm_int(&qs, 3);
    for (uint32_t i = 0; st == FASA_OK && i < sq->steps; i++) {
        for (size_t j = 0; j < nq; j++) q[j] = q0[j] + (fm_rand(&qs) % 4 == 0 ? fm_int(&qs, 2) : 0.0f);
        fasa_decode_desc d = fm_desc(sq, i);
        uint32_t layer = i % sq->shape.n_layers;
        if (cf->prefetch) st = fm_prefetched_step(c, sq, layer, &d, q, r->out + i * nq, r);
        else st = fasa_decode_host(c, layer, &d, q, r->out + i * nq, NULL);
        if (st != FASA_OK) return fm_fail(r, ctx, st, "fasa_decode_host");
        st = fm_append(c, sq, 1 + i % 3, &ks);
        if (st == FASA_OK && i == sq->steps / 2) {
            uint32_t len = 0;
            st = fasa_kv_cache_transfer_stats(c, &r->half, true);
            if (st == FASA_OK) st = fasa_kv_cache_length(c, 0, &len);
            if (st == FASA_OK) st = fasa_kv_cache_truncate(c, len - 300);
            if (st == FASA_OK) st = fm_append(c, sq, 120, &ks);
        }
        if (st != FASA_OK) return fm_fail(r, ctx, st, "append/truncate/stats");
    }
    if (st == FASA_OK) st = fasa_kv_cache_transfer_stats(c, &r->end, false);
    free(q);
    free(q0);
    return st == FASA_OK ? FASA_OK : fm_fail(r, ctx, st, "transfer stats");
}

/* Runs the sequence on a new cache of ctx; r->out must hold steps*Hq*d. */
static inline fasa_status fm_run(fasa_context *ctx, const fasa_calibration *cal, const fm_seq *sq,
                                 const fm_config *cf, fm_result *r)
{
    fasa_kv_cache_desc kd = {0};
    kd.shape = sq->shape;
    kd.capacity = sq->capacity;
    kd.dtype = sq->dtype;
    kd.calibration = cal;
    kd.flags = FASA_CACHE_NO_DENSE_LAYERS;
    kd.max_n_fac = 2 * sq->n_fac; /* selection stride != n_fac */
    kd.placement = cf->placement;
    kd.fetch = cf->fetch;
    kd.row_cache_rows = cf->row_cache;
    fasa_kv_cache *c = NULL;
    r->status = FASA_OK;
    r->error[0] = '\0';
    r->prefetched_misses = 0;
    fasa_status st = fasa_kv_cache_create(ctx, &kd, &c);
    if (st != FASA_OK) return fm_fail(r, ctx, st, "fasa_kv_cache_create");
    uint64_t ks = sq->seed;
    st = fm_append(c, sq, sq->first_len, &ks);
    if (st != FASA_OK) fm_fail(r, ctx, st, "first append");
    if (st == FASA_OK) st = fm_steps(ctx, c, sq, cf, r);
    if (st == FASA_OK) fasa_kv_cache_memory(c, &r->mem);
    fasa_kv_cache_destroy(c);
    return st;
}

static inline bool fm_stats_equal(const fasa_transfer_stats *a, const fasa_transfer_stats *b)
{
    return a->steps == b->steps && a->rows_needed == b->rows_needed && a->rows_cached == b->rows_cached &&
           a->bytes == b->bytes && a->prefetch_steps == b->prefetch_steps && a->prefetch_rows == b->prefetch_rows &&
           a->prefetch_bytes == b->prefetch_bytes;
}

static inline void fm_print_stats(const char *what, const fasa_transfer_stats *t)
{
    printf("  %-28s steps %3llu rows %7llu cached %7llu bytes %10llu prefetches %3llu rows %6llu\n", what,
           (unsigned long long)t->steps, (unsigned long long)t->rows_needed, (unsigned long long)t->rows_cached,
           (unsigned long long)t->bytes, (unsigned long long)t->prefetch_steps,
           (unsigned long long)t->prefetch_rows);
}

/* The sequence every backend's FASA-M test runs. */
static inline fm_seq fm_standard_seq(fasa_dtype dtype)
{
    fm_seq sq = {.shape = {2, 8, 2, 64, FASA_ROPE_NORM}, .capacity = 2400, .first_len = 1500, .n_fac = 64,
                 .steps = 24, .dtype = dtype, .seed = 0x5eed0000u + (uint64_t)dtype};
    return sq;
}

typedef void (*fm_check_fn)(const fm_seq *sq, const fm_config *cf, const fm_result *ref, const fm_result *g,
                            const fm_result *c);

/* FASA-C on dev (the reference), then FASA-M with direct reads, staging,
 * and a row cache of two steps' rows of a KV group, each on dev and on cpu,
 * handed to check.  Returns the FASA-C run's status (its error in err). */
static inline fasa_status fm_run_configs(fasa_context *dev, const fasa_calibration *cal_dev, fasa_context *cpu,
                                         const fasa_calibration *cal_cpu, const fm_seq *sq, fm_check_fn check,
                                         char *err, size_t err_size)
{
    uint32_t G = sq->shape.n_q_heads / sq->shape.n_kv_heads;
    const fm_config cfs[] = {
        {"fasa-c", FASA_PLACEMENT_DEVICE, FASA_FETCH_DIRECT, 0, false},
        {"fasa-m direct", FASA_PLACEMENT_OFFLOAD, FASA_FETCH_DIRECT, 0, false},
        {"fasa-m staged", FASA_PLACEMENT_OFFLOAD, FASA_FETCH_STAGED, 0, false},
        {"fasa-m staged + row cache", FASA_PLACEMENT_OFFLOAD, FASA_FETCH_STAGED, 2 * G * sq->n_fac, false},
        {"fasa-m row cache + prefetch", FASA_PLACEMENT_OFFLOAD, FASA_FETCH_STAGED, 2 * G * sq->n_fac, true},
    };
    size_t n = (size_t)sq->steps * sq->shape.n_q_heads * sq->shape.head_dim;
    fm_result ref = {.out = calloc(n, sizeof(float))}, g = {.out = calloc(n, sizeof(float))},
              c = {.out = calloc(n, sizeof(float))};
    fm_run(dev, cal_dev, sq, &cfs[0], &ref);
    snprintf(err, err_size, "%s", ref.error);
    for (size_t i = 1; ref.status == FASA_OK && i < sizeof cfs / sizeof cfs[0]; i++) {
        printf(" %s\n", cfs[i].name);
        fm_run(dev, cal_dev, sq, &cfs[i], &g);
        fm_run(cpu, cal_cpu, sq, &cfs[i], &c);
        check(sq, &cfs[i], &ref, &g, &c);
    }
    free(ref.out), free(g.out), free(c.out);
    return ref.status;
}

/* The checks every backend's FASA-M test makes on one configuration: g
 * (the backend's FASA-M run) bit-equal to ref (its FASA-C run), within 1e-9
 * NMSE of c (the CPU backend's FASA-M run), the same transfer statistics as
 * c, bytes = (needed - cached) x a K and a V row, and row-cache hits exactly
 * when there is a row cache.  False with the first failure in why. */
static inline bool fm_check_config(const fm_seq *sq, const fm_config *cf, const fm_result *ref, const fm_result *g,
                                   const fm_result *c, char *why, size_t why_size)
{
    size_t n = (size_t)sq->steps * sq->shape.n_q_heads * sq->shape.head_dim;
    if (g->status != FASA_OK || c->status != FASA_OK) {
        snprintf(why, why_size, "backend '%.200s', cpu '%.200s'", g->error, c->error);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (memcmp(&g->out[i], &ref->out[i], sizeof(float)) != 0) {
            snprintf(why, why_size, "output %zu (step %zu) %.9g differs from FASA-C's %.9g", i,
                     i / (sq->shape.n_q_heads * sq->shape.head_dim), (double)g->out[i], (double)ref->out[i]);
            return false;
        }
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)g->out[i] - (double)c->out[i];
        num += e * e;
        den += (double)c->out[i] * c->out[i];
    }
    double nmse = den > 0 ? num / den : num;
    uint64_t row = 2ull * sq->shape.head_dim * (sq->dtype == FASA_DTYPE_F16 ? 2 : 4);
    if (!(nmse < 1e-9)) snprintf(why, why_size, "NMSE vs the CPU backend %.3g", nmse);
    else if (!fm_stats_equal(&g->half, &c->half) || !fm_stats_equal(&g->end, &c->end))
        snprintf(why, why_size, "transfer statistics differ from the CPU backend's");
    else if (g->end.bytes != (g->end.rows_needed - g->end.rows_cached) * row || g->end.steps == 0)
        snprintf(why, why_size, "bytes %llu are not (needed - cached) x 2 d b", (unsigned long long)g->end.bytes);
    else if (cf->row_cache ? !(g->end.rows_cached > 0 && g->half.rows_cached > 0) : g->end.rows_cached != 0)
        snprintf(why, why_size, "%llu row-cache hits", (unsigned long long)g->end.rows_cached);
    else if (g->prefetched_misses || c->prefetched_misses)
        snprintf(why, why_size, "%u (cpu: %u) steps prefetched with their own query missed rows",
                 g->prefetched_misses, c->prefetched_misses);
    else if (cf->prefetch != (g->end.prefetch_steps > 0 && g->end.prefetch_rows > 0) ||
             g->end.prefetch_bytes != g->end.prefetch_rows * row)
        snprintf(why, why_size, "prefetch counters: %llu steps, %llu rows, %llu bytes",
                 (unsigned long long)g->end.prefetch_steps, (unsigned long long)g->end.prefetch_rows,
                 (unsigned long long)g->end.prefetch_bytes);
    else return true;
    return false;
}

#endif
