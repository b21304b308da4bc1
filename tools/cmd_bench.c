/* fasa bench: dense vs FASA decode steps on synthetic data, timed in one
 * run on one backend, with the byte model of docs/SPEC.md §7. */
#include "bench_batch.h"
#include "cli.h"
#include "commands.h"
#include "ref64.h"
#include "synth.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define FILL_CHUNK 4096u
/* --iters and --warmup: at most this many steps per variant (the timed
 * samples are kept in an array of this size) */
#define MAX_STEPS 1000u

typedef struct bench_opts {
    const char *backend, *variants, *dtype, *gqa, *fetch, *output;
    uint32_t row_cache;
    uint32_t device, threads, hq, hkv, d, ntip, nfac, iters, warmup, layers;
    uint64_t seed;
    cli_list L, batch;
    double bandwidth_gbs;
    bool json, per_head_dims, external;
} bench_opts;

typedef struct bench_row {
    const char *variant;
    uint32_t L;
    double us_median, us_min;
    double bytes, floor_bytes;
    double device_bytes, host_bytes;   /* resident for the cache */
    double scratch_bytes, kv_bytes;    /* step scratch; the K+V the cache holds or reads */
    double transfer_bytes;             /* host -> device per step (FASA-M) */
    double row_hit_rate;               /* FASA-M row cache hits / rows needed */
} bench_row;

/* The caches a run needs: FASA-C for dense and fasa (over the engine's K/V
 * with --external), FASA-M for fasa-m. */
enum { CACHE_C = 0, CACHE_M = 1 };

/* --external: the bench plays an engine that owns K and V token-major
 * [token][kv_head][d] (llama.cpp's layout) in one K and one V buffer that
 * every layer views (only layer 0 is decoded; the other layers exist for
 * the memory figure), writes them itself and syncs the cache. */
typedef struct bench_engine {
    fasa_buffer *k, *v;
    void *host[2];               /* CPU backend: the memory the buffers wrap */
    fasa_buffer **ks, **vs;      /* [layers] */
    fasa_kv_external ext;
    fasa_dtype dtype;
    uint32_t elem;
} bench_engine;

static fasa_dtype bench_dtype(const bench_opts *o) { return cli_dtype(o->dtype); }

static void engine_free(bench_engine *e)
{
    fasa_buffer_destroy(e->k);
    fasa_buffer_destroy(e->v);
    free(e->host[0]);
    free(e->host[1]);
    free(e->ks);
    free(e->vs);
    memset(e, 0, sizeof *e);
}

static fasa_status engine_buffer(fasa_context *ctx, uint64_t bytes, bool on_cpu, void **host, fasa_buffer **out)
{
    if (!on_cpu) return fasa_buffer_create(ctx, bytes, out);
    *host = malloc(bytes);
    return *host ? fasa_buffer_wrap_host(ctx, *host, bytes, out) : FASA_ERROR_OUT_OF_HOST_MEMORY;
}

static fasa_status engine_init(fasa_context *ctx, const bench_opts *o, uint32_t L, bench_engine *e)
{
    fasa_device_info dev;
    fasa_context_device(ctx, &dev);
    bool on_cpu = dev.backend == FASA_BACKEND_CPU;
    memset(e, 0, sizeof *e);
    e->dtype = bench_dtype(o);
    e->elem = e->dtype == FASA_DTYPE_F32 ? 4 : 2;
    uint64_t bytes = (uint64_t)L * o->hkv * o->d * e->elem;
    e->ks = calloc(o->layers, sizeof *e->ks);
    e->vs = calloc(o->layers, sizeof *e->vs);
    fasa_status st = e->ks && e->vs ? FASA_OK : FASA_ERROR_OUT_OF_HOST_MEMORY;
    if (st == FASA_OK) st = engine_buffer(ctx, bytes, on_cpu, &e->host[0], &e->k);
    if (st == FASA_OK) st = engine_buffer(ctx, bytes, on_cpu, &e->host[1], &e->v);
    for (uint32_t l = 0; st == FASA_OK && l < o->layers; l++) e->ks[l] = e->k, e->vs[l] = e->v;
    e->ext = (fasa_kv_external){.token_stride = (uint64_t)o->hkv * o->d, .head_stride = o->d, .k = e->ks, .v = e->vs};
    return st;
}

/* Tokens [t, t + n) of fp32 rows x into an engine buffer, in the cache dtype. */
static fasa_status engine_write(const bench_engine *e, int which, uint32_t t, uint32_t n, size_t row, const float *x,
                                void *tmp)
{
    size_t count = (size_t)n * row;
    uint64_t at = (uint64_t)t * row * e->elem;
    void *dst = e->host[which] ? (char *)e->host[which] + at : tmp; /* the CPU backend reads it in place */
    if (e->elem == 4) memcpy(dst, x, count * 4);
    else if (e->dtype == FASA_DTYPE_BF16)
        for (size_t i = 0; i < count; i++) ((uint16_t *)dst)[i] = ref_bf16_bits(x[i]);
    else
        for (size_t i = 0; i < count; i++) ((uint16_t *)dst)[i] = ref_half_bits(x[i]);
    return e->host[which] ? FASA_OK : fasa_buffer_write(which ? e->v : e->k, at, tmp, count * e->elem);
}

/* ------------------------------------------------------------------------ */
/* Host read bandwidth (the CPU backend's floor)                             */
/* ------------------------------------------------------------------------ */

typedef struct bw_part { const float *p; size_t n; float sum; } bw_part;

static void *bw_read(void *arg)
{
    bw_part *w = arg;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (size_t i = 0; i + 8 <= w->n; i += 8) {
        s0 += w->p[i]; s1 += w->p[i + 1]; s2 += w->p[i + 2]; s3 += w->p[i + 3];
        s4 += w->p[i + 4]; s5 += w->p[i + 5]; s6 += w->p[i + 6]; s7 += w->p[i + 7];
    }
    w->sum = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
    return NULL;
}

/* Best of a few parallel passes over 256 MiB, in GB/s. */
static double host_read_bandwidth(uint32_t threads)
{
    size_t n = (256u << 20) / sizeof(float);
    float *buf = malloc(n * sizeof(float));
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
    if (threads == 0 || threads > 64) threads = 2;
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        pthread_t th[64];
        bw_part parts[64];
        double t0 = cli_now();
        for (uint32_t t = 0; t < threads; t++) {
            parts[t] = (bw_part){buf + n / threads * t, n / threads, 0};
            pthread_create(&th[t], NULL, bw_read, &parts[t]);
        }
        for (uint32_t t = 0; t < threads; t++) pthread_join(th[t], NULL);
        double gbs = (double)n * sizeof(float) / (cli_now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                     */
/* ------------------------------------------------------------------------ */

static synth_desc synth_of(const bench_opts *o)
{
    return (synth_desc){.n_q_heads = o->hq, .n_kv_heads = o->hkv, .head_dim = o->d, .n_tip = o->ntip,
                        .per_head_dims = o->per_head_dims, .kind = SYNTH_PLANTED, .seed = o->seed};
}

static fasa_status make_calibration(fasa_context *ctx, const bench_opts *o, fasa_calibration **cal)
{
    fasa_model_shape shape = {o->layers, o->hq, o->hkv, o->d, FASA_ROPE_NORM};
    synth_desc sd = synth_of(o);
    size_t per_layer = (size_t)o->hq * 2 * o->ntip;
    uint16_t *dims = malloc(per_layer * o->layers * sizeof(uint16_t));
    if (!dims) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    synth_planted_dims(&sd, dims);
    for (uint32_t l = 1; l < o->layers; l++) memcpy(dims + l * per_layer, dims, per_layer * sizeof(uint16_t));
    fasa_calibration_desc cd = {.shape = shape, .n_tip = o->ntip, .dims = dims, .source = "synthetic"};
    fasa_status st = fasa_calibration_create(ctx, &cd, cal);
    free(dims);
    return st;
}

static fasa_status make_cache(fasa_context *ctx, const bench_opts *o, uint32_t L, const fasa_calibration *cal,
                              bool offload, const bench_engine *engine, fasa_kv_cache **cache)
{
    fasa_kv_cache_desc kd = {.shape = {o->layers, o->hq, o->hkv, o->d, FASA_ROPE_NORM}, .capacity = L,
                             .external = engine ? &engine->ext : NULL,
                             .dtype = bench_dtype(o),
                             .calibration = cal, .flags = FASA_CACHE_NO_DENSE_LAYERS,
                             .max_n_fac = o->nfac > 2048 ? o->nfac : 0};
    if (offload) {
        kd.placement = FASA_PLACEMENT_OFFLOAD;
        kd.fetch = strcmp(o->fetch, "staged") == 0 ? FASA_FETCH_STAGED : FASA_FETCH_DIRECT;
        kd.row_cache_rows = o->row_cache;
    }
    return fasa_kv_cache_create(ctx, &kd, cache);
}

/* Appends the same synthetic tokens to every cache that exists; an
 * external cache's tokens are written into the engine's buffers and synced,
 * a chunk at a time, as an engine's prefill would. */
static fasa_status fill_caches(const bench_opts *o, fasa_kv_cache *const *caches, const bench_engine *engine,
                               uint32_t L)
{
    synth_desc sd = synth_of(o);
    size_t row = (size_t)o->hkv * o->d;
    float *k = malloc(FILL_CHUNK * row * sizeof(float)), *v = malloc(FILL_CHUNK * row * sizeof(float));
    void *tmp = engine ? malloc(FILL_CHUNK * row * sizeof(float)) : NULL;
    fasa_status st = k && v && (tmp || !engine) ? FASA_OK : FASA_ERROR_OUT_OF_HOST_MEMORY;
    cli_progress prog;
    char label[64];
    snprintf(label, sizeof label, "filling L=%u", L);
    cli_progress_start(&prog, label, L);
    for (uint32_t t = 0; st == FASA_OK && t < L; t += FILL_CHUNK) {
        uint32_t n = L - t < FILL_CHUNK ? L - t : FILL_CHUNK;
        synth_keys(&sd, t, n, k, v);
        if (engine) st = engine_write(engine, 0, t, n, row, k, tmp);
        if (engine && st == FASA_OK) st = engine_write(engine, 1, t, n, row, v, tmp);
        if (engine && st == FASA_OK) st = fasa_kv_cache_sync(caches[CACHE_C], 0, t, n);
        for (int c = 0; st == FASA_OK && c < 2; c++)
            if (caches[c] && !(engine && c == CACHE_C))
                st = fasa_kv_cache_append(caches[c], 0, n, k, v, FASA_DTYPE_F32);
        cli_progress_step(&prog, n);
    }
    cli_progress_end(&prog);
    free(k);
    free(v);
    free(tmp);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Byte model (docs/SPEC.md §7)                                              */
/* ------------------------------------------------------------------------ */

/* Dense attention reads every K and V row once. */
static double dense_bytes(const bench_opts *o, uint32_t L, double b)
{
    return 2.0 * o->hkv * L * o->d * b;
}

/* One decode step with the selection read back: the distinct rows FAC
 * reads (rows selected by several query heads of a group count once), or
 * *dense when the library took the dense path (L <= n_fac: nothing is
 * selected, and the selection buffer is never written). */
static fasa_status fac_rows(fasa_kv_cache *cache, const bench_opts *o, const fasa_decode_desc *dd, uint32_t L,
                            const float *q, double *distinct, bool *dense)
{
    uint32_t rows = dd->gqa_select == FASA_GQA_PER_GROUP ? o->hkv : o->hq;
    int32_t *sel = malloc((size_t)rows * o->nfac * sizeof(int32_t));
    float *out = malloc((size_t)o->hq * o->d * sizeof(float));
    uint8_t *seen = malloc(L);
    *distinct = 0;
    *dense = false;
    fasa_decode_outputs outs = {.selected = sel, .selected_stride = o->nfac};
    fasa_status st = sel && out && seen ? fasa_decode_host(cache, 0, dd, q, out, &outs) : FASA_ERROR_OUT_OF_HOST_MEMORY;
    if (st == FASA_OK && outs.path == FASA_PATH_DENSE) *dense = true;
    else if (st == FASA_OK && (outs.n_rows != rows || outs.n_selected > o->nfac)) {
        fprintf(stderr, "fasa bench: L=%u: the decode reported %u selection rows of %u tokens, expected %u of at most %u\n",
                L, outs.n_rows, outs.n_selected, rows, o->nfac);
        st = FASA_ERROR_BACKEND;
    }
    uint32_t per_group = rows / o->hkv;
    for (uint32_t g = 0; st == FASA_OK && !*dense && g < o->hkv; g++) {
        memset(seen, 0, L);
        for (uint32_t r = g * per_group; st == FASA_OK && r < (g + 1) * per_group; r++)
            for (uint32_t i = 0; i < outs.n_selected; i++) {
                int32_t t = sel[(size_t)r * o->nfac + i];
                if (t < 0 || (uint32_t)t >= L) { /* never index with it */
                    fprintf(stderr, "fasa bench: L=%u: selection row %u holds token %d, outside 0..%u\n", L, r, t, L - 1);
                    st = FASA_ERROR_BACKEND;
                    break;
                }
                *distinct += !seen[t];
                seen[t] = 1;
            }
    }
    free(sel);
    free(out);
    free(seen);
    return st;
}

static fasa_status fasa_bytes(fasa_kv_cache *cache, const fasa_calibration *cal, const bench_opts *o,
                              const fasa_decode_desc *dd, uint32_t L, const float *q, double b, bench_row *row)
{
    double distinct = 0;
    bool dense = false;
    fasa_status st = fac_rows(cache, o, dd, L, q, &distinct, &dense);
    if (st != FASA_OK) return st;
    if (dense) { /* the dense fallback moves the dense bytes */
        row->bytes = row->floor_bytes = dense_bytes(o, L, b);
        return FASA_OK;
    }
    uint32_t rows = dd->gqa_select == FASA_GQA_PER_GROUP ? o->hkv : o->hq;
    double u_total = 0;
    for (uint32_t g = 0; g < o->hkv; g++) {
        uint32_t u = 0;
        fasa_calibration_union_size(cal, 0, g, &u);
        u_total += u;
    }
    double tip = (double)L * u_total * b, fac = distinct * 2.0 * o->d * b;
    double scores = (double)rows * L * 4.0 * 2.0; /* written once, read once */
    row->floor_bytes = tip + fac;
    row->bytes = tip + scores + fac;
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Timing                                                                    */
/* ------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static fasa_status time_variant(fasa_context *ctx, fasa_kv_cache *cache, const bench_opts *o,
                                const fasa_decode_desc *dd, fasa_buffer *qb, fasa_buffer *ob, bench_row *row)
{
    for (uint32_t i = 0; i < o->warmup; i++) {
        fasa_status st = fasa_decode(cache, 0, dd, qb, 0, ob, 0);
        if (st != FASA_OK) return st;
    }
    uint32_t max_iters = o->iters ? o->iters : 200; /* check_opts: iters <= MAX_STEPS */
    double samples[MAX_STEPS], start = cli_now();
    uint32_t n = 0;
    while (n < max_iters && n < MAX_STEPS) {
        fasa_status st = fasa_decode(cache, 0, dd, qb, 0, ob, 0);
        uint64_t ns = 0;
        if (st == FASA_OK) st = fasa_context_last_step_ns(ctx, &ns);
        if (st != FASA_OK) return st;
        samples[n++] = (double)ns / 1e3;
        if (!o->iters && n >= 5 && cli_now() - start > 2.0) break; /* auto: about 2 s per variant */
    }
    qsort(samples, n, sizeof samples[0], cmp_double);
    row->us_median = n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2]);
    row->us_min = samples[0];
    return FASA_OK;
}

/* Resident bytes of a cache and, over the timed steps, its FASA-M traffic. */
static void memory_fields(fasa_kv_cache *cache, const fasa_transfer_stats *t, bench_row *row)
{
    fasa_memory_report mem;
    fasa_kv_cache_memory(cache, &mem);
    row->device_bytes = (double)mem.device_bytes;
    row->host_bytes = (double)mem.host_bytes;
    row->scratch_bytes = (double)mem.scratch_bytes;
    row->kv_bytes = (double)mem.dense_equivalent;
    row->transfer_bytes = t->steps ? (double)t->bytes / t->steps : 0;
    row->row_hit_rate = cli_row_hit_rate(t);
}

static const char *const variant_names[] = {"dense", "fasa", "fasa-m", NULL};

static fasa_status time_all(fasa_context *ctx, const bench_opts *o, uint32_t L, fasa_kv_cache *const *caches,
                            const fasa_calibration *cal, fasa_buffer *qb, fasa_buffer *ob, const float *q,
                            bench_row *rows, uint32_t *n_rows)
{
    double b = bench_dtype(o) == FASA_DTYPE_F32 ? 4 : 2;
    fasa_status st = FASA_OK;
    for (int v = 0; v < 3 && st == FASA_OK; v++) {
        if (!cli_list_has(o->variants, variant_names[v])) continue;
        fasa_kv_cache *cache = caches[v == 2 ? CACHE_M : CACHE_C];
        fasa_decode_desc dd = {.mode = v ? FASA_MODE_FASA : FASA_MODE_DENSE, .n_fac = o->nfac,
                               .gqa_select = strcmp(o->gqa, "group") == 0 ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD};
        bench_row *row = &rows[*n_rows];
        *row = (bench_row){.variant = variant_names[v], .L = L};
        fasa_transfer_stats t;
        fasa_kv_cache_transfer_stats(cache, &t, true);
        st = time_variant(ctx, cache, o, &dd, qb, ob, row);
        fasa_kv_cache_transfer_stats(cache, &t, true);
        memory_fields(cache, &t, row);
        if (v == 0) row->bytes = row->floor_bytes = dense_bytes(o, L, b);
        else if (st == FASA_OK) st = fasa_bytes(cache, cal, o, &dd, L, q, b, row);
        if (st == FASA_OK) (*n_rows)++;
    }
    return st;
}

static fasa_status bench_length(fasa_context *ctx, const bench_opts *o, uint32_t L, bench_row *rows,
                                uint32_t *n_rows)
{
    fasa_calibration *cal = NULL;
    fasa_kv_cache *caches[2] = {NULL, NULL};
    fasa_buffer *qb = NULL, *ob = NULL;
    bench_engine engine, *eng = o->external ? &engine : NULL;
    memset(&engine, 0, sizeof engine);
    size_t qn = (size_t)o->hq * o->d;
    float *q = malloc(qn * sizeof(float));
    bool want_c = cli_list_has(o->variants, "dense") || cli_list_has(o->variants, "fasa");
    fasa_status st = q ? make_calibration(ctx, o, &cal) : FASA_ERROR_OUT_OF_HOST_MEMORY;
    if (st == FASA_OK && eng && want_c) st = engine_init(ctx, o, L, eng);
    if (st == FASA_OK && want_c) st = make_cache(ctx, o, L, cal, false, eng, &caches[CACHE_C]);
    if (st == FASA_OK && cli_list_has(o->variants, "fasa-m"))
        st = make_cache(ctx, o, L, cal, true, NULL, &caches[CACHE_M]);
    if (st == FASA_OK) st = fill_caches(o, caches, want_c ? eng : NULL, L);
    if (st == FASA_OK) st = fasa_buffer_create(ctx, qn * 4, &qb);
    if (st == FASA_OK) st = fasa_buffer_create(ctx, qn * 4, &ob);
    if (st == FASA_OK) {
        synth_desc sd = synth_of(o);
        synth_query(&sd, L - 1, 0, q);
        st = fasa_buffer_write(qb, 0, q, qn * 4);
    }
    if (st == FASA_OK) st = time_all(ctx, o, L, caches, cal, qb, ob, q, rows, n_rows);
    if (st != FASA_OK) fprintf(stderr, "fasa bench: L=%u: %s: %s\n", L, fasa_status_string(st), fasa_context_last_error(ctx));
    fasa_buffer_destroy(qb);
    fasa_buffer_destroy(ob);
    fasa_kv_cache_destroy(caches[0]);
    fasa_kv_cache_destroy(caches[1]);
    engine_free(&engine);
    fasa_calibration_destroy(cal);
    free(q);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

static double dense_us(const bench_row *rows, uint32_t n, uint32_t L)
{
    for (uint32_t i = 0; i < n; i++)
        if (rows[i].L == L && strcmp(rows[i].variant, "dense") == 0) return rows[i].us_median;
    return 0;
}

/* The library's own memory (resident device bytes plus the step scratch)
 * as a share of the K+V the cache holds or reads. */
static double own_percent(const bench_row *r)
{
    return r->kv_bytes > 0 ? 100.0 * (r->device_bytes + r->scratch_bytes) / r->kv_bytes : 0;
}

static void print_table(FILE *f, const bench_opts *o, const fasa_device_info *dev, double bw, const bench_row *rows,
                        uint32_t n)
{
    fprintf(f, "fasa bench: backend %s, device %s\n", fasa_backend_name(dev->backend), dev->name);
    fprintf(f, "shape Hq %u / Hkv %u / d %u, %s storage, N_tip %u (%s), N_fac %u, selection per %s\n", o->hq, o->hkv,
           o->d, o->dtype, o->ntip,
           o->per_head_dims ? "dims per query head: u_g up to G*2*N_tip" : "dims shared inside each KV group: u_g = 2*N_tip",
           o->nfac, strcmp(o->gqa, "group") == 0 ? "KV group" : "query head");
    if (bw > 0) fprintf(f, "read bandwidth for the floor: %.1f GB/s%s\n", bw, o->bandwidth_gbs > 0 ? " (given)" : " (measured in this run)");
    if (o->external || o->layers > 1)
        fprintf(f, "%u layer%s (layer 0 decoded)%s\n", o->layers, o->layers > 1 ? "s" : "",
                o->external ? "; dense and fasa over external K/V (token-major, the engine's buffers, every layer "
                              "viewing the same K/V): dev_MiB is K_dom only, own% = (dev + scratch) / K+V" : "");
    fprintf(f, "\n%8s %-7s %11s %11s %11s %10s %8s %8s %10s %10s %11s %9s\n", "L", "variant", "median_us", "min_us", "MB_moved",
           "floor_us", "x_floor", "speedup", "dev_MiB", "host_MiB", "xfer_KB/st", "own%");
    for (uint32_t i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        double floor_us = bw > 0 ? r->floor_bytes / (bw * 1e3) : 0, du = dense_us(rows, n, r->L);
        fprintf(f, "%8u %-7s %11.1f %11.1f %11.2f ", r->L, r->variant, r->us_median, r->us_min, r->bytes / 1e6);
        if (floor_us > 0) fprintf(f, "%10.1f %8.2f ", floor_us, r->us_median / floor_us);
        else fprintf(f, "%10s %8s ", "-", "-");
        if (du > 0) fprintf(f, "%7.2fx ", du / r->us_median);
        else fprintf(f, "%8s ", "-");
        fprintf(f, "%10.1f %10.1f %11.1f %8.2f%%\n", r->device_bytes / 1048576, r->host_bytes / 1048576,
                r->transfer_bytes / 1e3, own_percent(r));
    }
}

static void print_json(FILE *f, const bench_opts *o, const fasa_device_info *dev, double bw, const bench_row *rows,
                       uint32_t n)
{
    cJSON *arr = cJSON_CreateArray();
    for (uint32_t i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "backend", fasa_backend_name(dev->backend));
        cJSON_AddStringToObject(j, "device", dev->name);
        cJSON_AddStringToObject(j, "variant", r->variant);
        cJSON_AddNumberToObject(j, "L", r->L);
        cJSON_AddNumberToObject(j, "us_median", r->us_median);
        cJSON_AddNumberToObject(j, "us_min", r->us_min);
        cJSON_AddNumberToObject(j, "bytes", r->bytes);
        cJSON_AddNumberToObject(j, "floor_bytes", r->floor_bytes);
        if (bw > 0) cJSON_AddNumberToObject(j, "floor_us", r->floor_bytes / (bw * 1e3));
        double du = dense_us(rows, n, r->L);
        if (du > 0) cJSON_AddNumberToObject(j, "speedup_vs_dense", du / r->us_median);
        cJSON_AddNumberToObject(j, "device_bytes", r->device_bytes);
        cJSON_AddNumberToObject(j, "host_bytes", r->host_bytes);
        cJSON_AddNumberToObject(j, "transfer_bytes", r->transfer_bytes);
        cJSON_AddNumberToObject(j, "scratch_bytes", r->scratch_bytes);
        cJSON_AddNumberToObject(j, "kv_bytes", r->kv_bytes);
        cJSON_AddNumberToObject(j, "own_fraction", own_percent(r) / 100.0);
        cJSON_AddBoolToObject(j, "external", o->external && strcmp(r->variant, "fasa-m") != 0);
        cJSON_AddNumberToObject(j, "layers", o->layers);
        if (strcmp(r->variant, "fasa-m") == 0) {
            cJSON_AddStringToObject(j, "fetch", o->fetch);
            cJSON_AddNumberToObject(j, "row_cache_rows", o->row_cache);
            cJSON_AddNumberToObject(j, "row_cache_hit_rate", r->row_hit_rate);
        }
        cJSON_AddNumberToObject(j, "hq", o->hq);
        cJSON_AddNumberToObject(j, "hkv", o->hkv);
        cJSON_AddNumberToObject(j, "d", o->d);
        cJSON_AddNumberToObject(j, "ntip", o->ntip);
        cJSON_AddNumberToObject(j, "nfac", o->nfac);
        cJSON_AddStringToObject(j, "dtype", o->dtype);
        cJSON_AddStringToObject(j, "gqa_select", o->gqa);
        cJSON_AddItemToArray(arr, j);
    }
    char *text = cJSON_Print(arr);
    fprintf(f, "%s\n", text);
    free(text);
    cJSON_Delete(arr);
}

static bool check_opts(const bench_opts *o, char *err, size_t n)
{
    if (strcmp(o->dtype, "f16") && strcmp(o->dtype, "f32") && strcmp(o->dtype, "bf16"))
        snprintf(err, n, "--dtype must be f16, bf16 or f32");
    else if (strcmp(o->gqa, "head") && strcmp(o->gqa, "group")) snprintf(err, n, "--gqa-select must be head or group");
    else if (!o->hkv || !o->hq || o->hq % o->hkv) snprintf(err, n, "--hq must be a positive multiple of --hkv");
    else if (!o->d || o->d % 2 || o->d > FASA_MAX_HEAD_DIM) snprintf(err, n, "--d must be even and at most %d", FASA_MAX_HEAD_DIM);
    else if (!o->ntip || o->ntip > o->d / 2) snprintf(err, n, "--ntip must be in 1..d/2");
    else if (!o->nfac || o->nfac > FASA_MAX_N_FAC) snprintf(err, n, "--nfac must be in 1..%d", FASA_MAX_N_FAC);
    else if (!cli_check_names("variant", o->variants, variant_names, err, n)) return false;
    else if (o->iters > MAX_STEPS) snprintf(err, n, "--iters must be at most %u (0: about 2 s worth)", MAX_STEPS);
    else if (o->warmup > MAX_STEPS) snprintf(err, n, "--warmup must be at most %u", MAX_STEPS);
    else if (!(o->bandwidth_gbs >= 0)) snprintf(err, n, "--bandwidth must be a positive GB/s figure (leave it out to measure)");
    else if (strcmp(o->fetch, "direct") && strcmp(o->fetch, "staged")) snprintf(err, n, "--fetch must be direct or staged");
    else if (o->row_cache && strcmp(o->fetch, "staged")) snprintf(err, n, "--row-cache needs --fetch staged");
    else if (o->external && cli_list_has(o->variants, "fasa-m"))
        snprintf(err, n, "--external: fasa-m keeps K and V in libfasa's own host memory; use --variant dense,fasa");
    else if (o->layers == 0 || o->layers > 1024) snprintf(err, n, "--layers must be in 1..1024");
    else {
        for (uint32_t i = 0; i < o->batch.n; i++)
            if (o->batch.v[i] == 0 || o->batch.v[i] > 4096) {
                snprintf(err, n, "--batch: entry %u is %u; every B must be in 1..4096", i + 1, o->batch.v[i]);
                return false;
            }
        for (uint32_t i = 0; i < o->batch.n; i++)
            for (uint32_t j = 0; j < o->L.n; j++) /* the pool: B sequences of L tokens in blocks of 16 */
                if ((uint64_t)o->batch.v[i] * (((uint64_t)o->L.v[j] + 15) / 16 * 16) > UINT32_MAX) {
                    snprintf(err, n, "--batch %u with --L %u: the pool would need more than 2^32 - 1 rows",
                             o->batch.v[i], o->L.v[j]);
                    return false;
                }
        for (uint32_t i = 0; i < o->L.n; i++)
            if (o->L.v[i] == 0) {
                snprintf(err, n, "--L: entry %u is 0; every length must be positive", i + 1);
                return false;
            }
        return true;
    }
    return false;
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o = {.backend = "auto", .variants = "dense,fasa", .dtype = "f16", .gqa = "head", .fetch = "direct",
                    .hq = 32, .hkv = 8, .d = 128, .ntip = 16, .nfac = 256, .warmup = 2, .seed = 1, .layers = 1,
                    .L = {0, {0}}}; /* --L default: 32768, or BENCH_BATCH_DEFAULT_L with --batch */
    uint32_t device = UINT32_MAX;
    const cli_opt opts[] = {
        {"backend", CLI_STRING, &o.backend, "B", "auto, cpu, vulkan, opencl, cuda (default auto)"},
        {"device", CLI_UINT, &device, "N", "device index within the backend"},
        {"variant", CLI_STRING, &o.variants, "V[,V]", "dense, fasa (FASA-C), fasa-m (default dense,fasa)"},
        {"fetch", CLI_STRING, &o.fetch, "direct|staged", "fasa-m: read host rows in place or gather them first"},
        {"row-cache", CLI_UINT, &o.row_cache, "N", "fasa-m staged: device-resident rows per (layer, KV head)"},
        {"L", CLI_LIST, &o.L, "N[,N...]",
         "cached tokens, k/m suffixes allowed (default 32768; with --batch: tokens per sequence, default 4096)"},
        {"batch", CLI_LIST, &o.batch, "B[,B...]",
         "instead of the variant rows: per sequence, one fasa_decode_batch of B sequences (each --L tokens, "
         "blocks of 16 of one paged pool, FASA) vs B single fasa_decode calls, wall clock (B in 1..4096; "
         "the pool holds max(B) x L tokens: 1 GiB of fp16 K+V at 64 x 4096 in the default shape)"},
        {"hq", CLI_UINT, &o.hq, "N", "query heads (default 32)"},
        {"hkv", CLI_UINT, &o.hkv, "N", "KV heads (default 8)"},
        {"d", CLI_UINT, &o.d, "N", "head dimension (default 128)"},
        {"ntip", CLI_UINT, &o.ntip, "N", "dominant frequency chunks per head (default 16)"},
        {"nfac", CLI_UINT, &o.nfac, "N", "token budget (default 256)"},
        {"dtype", CLI_STRING, &o.dtype, "f16|bf16|f32", "KV storage type (default f16)"},
        {"gqa-select", CLI_STRING, &o.gqa, "head|group", "selection per query head or per KV group"},
        {"per-head-dims", CLI_FLAG, &o.per_head_dims, NULL, "different dims per query head (u_g > 2*N_tip)"},
        {"external", CLI_FLAG, &o.external, NULL,
         "dense and fasa over K/V the bench owns as an engine (token-major), synced: the cache owns K_dom only"},
        {"layers", CLI_UINT, &o.layers, "N", "cache layers, 1..1024 (default 1; only layer 0 is decoded, the rest "
         "counts in the memory figures; with --external every layer views the same K/V)"},
        {"iters", CLI_UINT, &o.iters, "N", "timed steps per variant, at most 1000 (default: about 2 s worth)"},
        {"warmup", CLI_UINT, &o.warmup, "N", "untimed steps first, at most 1000 (default 2)"},
        {"threads", CLI_UINT, &o.threads, "N", "host threads (default: all cores)"},
        {"bandwidth", CLI_DOUBLE, &o.bandwidth_gbs, "GB/s", "read bandwidth for the floor (cpu: measured)"},
        {"seed", CLI_U64, &o.seed, "N", "synthetic data seed (default 1)"},
        {"json", CLI_FLAG, &o.json, NULL, "print JSON rows"},
        {"output", CLI_STRING, &o.output, "FILE", "write the table/JSON to FILE (replaced atomically) instead of stdout"},
        {NULL, 0, NULL, NULL, NULL}};
    int parsed = cli_parse_command("fasa bench", "fasa bench [--backend B] [--L N,...] [options]",
                  "Times one decode step of one layer, dense and FASA, on the same backend in the same\n"
                  "run (device timestamps on GPUs, wall clock on the CPU), on synthetic planted data.\n"
                  "Reports median/min microseconds, bytes moved by the byte model of docs/SPEC.md §7 and\n"
                  "the time a kernel would take at the read bandwidth (the floor).  With --batch B[,B...]:\n"
                  "for each B, one fasa_decode_batch of B sequences of a paged pool against B single\n"
                  "fasa_decode calls of the same items (per-sequence wall clock, and their ratio).", opts, argc, argv, (cli_check_fn)check_opts, &o);
    if (parsed >= 0) return parsed;
    char err[512];
    cli_output out;
    if (!cli_output_begin(&out, o.output, err, sizeof err)) {
        fprintf(stderr, "fasa bench: --output %s: %s\n", o.output, err);
        return 1;
    }
    fasa_context *ctx = NULL;
    if (cli_make_context(o.backend, device == UINT32_MAX ? -1 : (int)device, o.threads, FASA_CONTEXT_PROFILE, &ctx,
                         err, sizeof err) != FASA_OK) {
        fprintf(stderr, "fasa bench: %s\n", err);
        cli_output_finish(&out, false, err, sizeof err);
        return 1;
    }
    fasa_device_info dev;
    fasa_context_device(ctx, &dev);
    if (o.L.n == 0) o.L = (cli_list){1, {o.batch.n ? BENCH_BATCH_DEFAULT_L : 32768}};
    if (o.batch.n) {
        bench_batch_opts bo = {.hq = o.hq, .hkv = o.hkv, .d = o.d, .ntip = o.ntip, .nfac = o.nfac, .iters = o.iters,
                               .warmup = o.warmup, .dtype = bench_dtype(&o), .dtype_name = o.dtype,
                               .gqa = strcmp(o.gqa, "group") == 0 ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD,
                               .per_head_dims = o.per_head_dims, .json = o.json, .seed = o.seed, .L = o.L,
                               .B = o.batch};
        fasa_status bst = bench_batch_run(ctx, &bo, out.f, o.output ? stdout : out.f);
        fasa_context_destroy(ctx);
        if (!cli_output_finish(&out, bst == FASA_OK, err, sizeof err)) {
            fprintf(stderr, "fasa bench: %s%s%s\n", o.output ? "--output " : "", o.output ? o.output : "", err);
            return 1;
        }
        return bst == FASA_OK ? 0 : 1;
    }
    double bw = o.bandwidth_gbs;
    if (bw <= 0 && dev.backend == FASA_BACKEND_CPU) bw = host_read_bandwidth(dev.compute_units);
    bench_row rows[3 * CLI_MAX_LIST];
    uint32_t n = 0;
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; i < o.L.n && st == FASA_OK; i++) st = bench_length(ctx, &o, o.L.v[i], rows, &n);
    /* a failed run still shows the rows it has on stdout, never in --output */
    FILE *f = st == FASA_OK || !o.output ? out.f : stdout;
    if (o.json) print_json(f, &o, &dev, bw, rows, n);
    else print_table(f, &o, &dev, bw, rows, n);
    fasa_context_destroy(ctx);
    if (!cli_output_finish(&out, st == FASA_OK, err, sizeof err)) {
        fprintf(stderr, "fasa bench: %s%s%s\n", o.output ? "--output " : "", o.output ? o.output : "", err);
        return 1;
    }
    return st == FASA_OK ? 0 : 1;
}
