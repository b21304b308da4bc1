/* fasa bench --batch: the per-sequence cost of one fasa_decode_batch of B
 * sequences against B single fasa_decode calls of the same items, in the
 * same run on the same backend.  The bench plays an engine with one paged
 * pool (token-major K and V, blocks of 16 rows handed out in a seeded
 * random order): every sequence holds the same L synthetic tokens in
 * blocks of its own and decodes its own query (FASA mode, layer 0 of a
 * one-layer cache without dense layers).  Times are wall clock around the
 * whole call (submit and wait included: that is what batching saves), the
 * two interleaved step by step so that drift hits both alike. */
#include "bench_batch.h"
#include "ref64.h"
#include "synth.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define SYNC_CHUNK 65536u
#define MAX_SAMPLES 1000u

typedef struct batch_row {
    uint32_t L, B, samples;
    double batch_med, single_med, batch_min, single_min; /* microseconds per sequence */
    bool same_o;                 /* batched o bit for bit equal to the single calls' */
} batch_row;

typedef struct batch_pool {
    fasa_buffer *k, *v, *q, *o;
    void *host[2];               /* the pool's K and V image (the CPU backend reads it in place) */
    fasa_buffer *k_of[1], *v_of[1];
    fasa_kv_external ext;
    fasa_calibration *cal;
    fasa_kv_cache *cache;
    uint32_t *tables;            /* [Bmax][nb] */
    fasa_sequence *seqs;         /* [Bmax] */
    uint32_t nb, bmax;
} batch_pool;

static void pool_free(batch_pool *p)
{
    fasa_kv_cache_destroy(p->cache);
    fasa_calibration_destroy(p->cal);
    fasa_buffer_destroy(p->k);
    fasa_buffer_destroy(p->v);
    fasa_buffer_destroy(p->q);
    fasa_buffer_destroy(p->o);
    free(p->host[0]);
    free(p->host[1]);
    free(p->tables);
    free(p->seqs);
    memset(p, 0, sizeof *p);
}

static synth_desc synth_of(const bench_batch_opts *o)
{
    return (synth_desc){.n_q_heads = o->hq, .n_kv_heads = o->hkv, .head_dim = o->d, .n_tip = o->ntip,
                        .per_head_dims = o->per_head_dims, .kind = SYNTH_PLANTED, .seed = o->seed};
}

static fasa_status make_calibration(fasa_context *ctx, const bench_batch_opts *o, fasa_calibration **cal)
{
    synth_desc sd = synth_of(o);
    uint16_t *dims = malloc((size_t)o->hq * 2 * o->ntip * sizeof(uint16_t));
    if (!dims) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    synth_planted_dims(&sd, dims);
    fasa_calibration_desc cd = {.shape = {1, o->hq, o->hkv, o->d, FASA_ROPE_NORM}, .n_tip = o->ntip, .dims = dims,
                                .source = "synthetic"};
    fasa_status st = fasa_calibration_create(ctx, &cd, cal);
    free(dims);
    return st;
}

/* The L tokens in the storage type, [L][Hkv][d] elements. */
static void *stored_tokens(const bench_batch_opts *o, uint32_t L, int which, size_t elem)
{
    size_t row = (size_t)o->hkv * o->d, n = (size_t)L * row;
    float *k = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    void *out = malloc(n * elem);
    if (!k || !v || !out) {
        free(k), free(v), free(out);
        return NULL;
    }
    synth_desc sd = synth_of(o);
    synth_keys(&sd, 0, L, k, v);
    const float *x = which ? v : k;
    if (elem == 4) memcpy(out, x, n * 4);
    else
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)out)[i] = o->dtype == FASA_DTYPE_BF16 ? ref_bf16_bits(x[i]) : ref_half_bits(x[i]);
    free(k);
    free(v);
    return out;
}

/* The pool of bmax sequences of L tokens, synced, and the q/o buffers. */
static fasa_status pool_make(fasa_context *ctx, const bench_batch_opts *o, uint32_t L, uint32_t bmax, batch_pool *p)
{
    fasa_device_info dev;
    fasa_context_device(ctx, &dev);
    bool on_cpu = dev.backend == FASA_BACKEND_CPU;
    memset(p, 0, sizeof *p);
    size_t elem = o->dtype == FASA_DTYPE_F32 ? 4 : 2, row = (size_t)o->hkv * o->d;
    p->nb = (uint32_t)(((uint64_t)L + BENCH_BATCH_BLOCK - 1) / BENCH_BATCH_BLOCK);
    p->bmax = bmax;
    uint64_t n_blocks = (uint64_t)bmax * p->nb, cap = n_blocks * BENCH_BATCH_BLOCK;
    if (cap > UINT32_MAX) {
        fprintf(stderr, "fasa bench: --batch: %u sequences of %u tokens need %llu pool rows (at most 2^32 - 1)\n", bmax, L,
                (unsigned long long)cap);
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    uint64_t bytes = cap * row * elem;
    char err[256];
    if (!cli_check_host_bytes(2 * bytes, "the paged pool's K and V", err, sizeof err)) {
        fprintf(stderr, "fasa bench: --batch: %s\n", err);
        return FASA_ERROR_OUT_OF_HOST_MEMORY;
    }
    p->tables = malloc(n_blocks * sizeof(uint32_t));
    p->seqs = calloc(bmax, sizeof *p->seqs);
    if (!p->tables || !p->seqs) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    /* the blocks in a random order, nb per sequence */
    synth_rng r = {o->seed ^ 0xb10c5ull};
    for (uint64_t b = 0; b < n_blocks; b++) p->tables[b] = (uint32_t)b;
    for (uint64_t b = n_blocks; b > 1; b--) {
        uint64_t j = synth_next(&r) % b;
        uint32_t t = p->tables[b - 1];
        p->tables[b - 1] = p->tables[j];
        p->tables[j] = t;
    }
    for (uint32_t i = 0; i < bmax; i++)
        p->seqs[i] = (fasa_sequence){.length = L, .n_blocks = p->nb, .block_table = p->tables + (size_t)i * p->nb};
    fasa_status st = FASA_OK;
    for (int w = 0; w < 2 && st == FASA_OK; w++) {
        void *tok = stored_tokens(o, L, w, elem);
        p->host[w] = malloc(bytes);
        if (!tok || !p->host[w]) {
            free(tok);
            return FASA_ERROR_OUT_OF_HOST_MEMORY;
        }
        memset(p->host[w], 0, bytes);
        for (uint32_t i = 0; i < bmax; i++)
            for (uint32_t b = 0; b < p->nb; b++) {
                uint32_t t0 = b * BENCH_BATCH_BLOCK, n = L - t0 < BENCH_BATCH_BLOCK ? L - t0 : BENCH_BATCH_BLOCK;
                memcpy((char *)p->host[w] + (size_t)p->seqs[i].block_table[b] * BENCH_BATCH_BLOCK * row * elem,
                       (const char *)tok + (size_t)t0 * row * elem, n * row * elem);
            }
        free(tok);
        fasa_buffer **buf = w ? &p->v : &p->k;
        if (on_cpu) {
            st = fasa_buffer_wrap_host(ctx, p->host[w], bytes, buf);
        } else {
            st = fasa_buffer_create(ctx, bytes, buf);
            if (st == FASA_OK) st = fasa_buffer_write(*buf, 0, p->host[w], bytes);
            free(p->host[w]); /* the device holds it now */
            p->host[w] = NULL;
        }
    }
    if (st != FASA_OK) return st;
    p->k_of[0] = p->k, p->v_of[0] = p->v;
    p->ext = (fasa_kv_external){.token_stride = row, .head_stride = o->d, .k = p->k_of, .v = p->v_of,
                                .block_size = BENCH_BATCH_BLOCK};
    st = make_calibration(ctx, o, &p->cal);
    fasa_kv_cache_desc kd = {.shape = {1, o->hq, o->hkv, o->d, FASA_ROPE_NORM}, .capacity = (uint32_t)cap,
                             .dtype = o->dtype, .calibration = p->cal, .flags = FASA_CACHE_NO_DENSE_LAYERS,
                             .max_n_fac = o->nfac > 2048 ? o->nfac : 0, .external = &p->ext};
    if (st == FASA_OK) st = fasa_kv_cache_create(ctx, &kd, &p->cache);
    cli_progress prog;
    char label[64];
    snprintf(label, sizeof label, "syncing %u x L=%u", bmax, L);
    cli_progress_start(&prog, label, cap);
    for (uint64_t at = 0; st == FASA_OK && at < cap; at += SYNC_CHUNK) {
        uint32_t n = cap - at < SYNC_CHUNK ? (uint32_t)(cap - at) : SYNC_CHUNK;
        st = fasa_kv_cache_sync(p->cache, 0, (uint32_t)at, n);
        cli_progress_step(&prog, n);
    }
    cli_progress_end(&prog);
    /* a query of its own per sequence */
    size_t qn = (size_t)o->hq * o->d;
    float *q = malloc(qn * bmax * sizeof(float));
    if (st == FASA_OK && !q) st = FASA_ERROR_OUT_OF_HOST_MEMORY;
    if (st == FASA_OK) {
        synth_desc sd = synth_of(o);
        for (uint32_t i = 0; i < bmax; i++) synth_query(&sd, L - 1, i, q + i * qn);
        st = fasa_buffer_create(ctx, qn * 4 * bmax, &p->q);
    }
    if (st == FASA_OK) st = fasa_buffer_write(p->q, 0, q, qn * 4 * bmax);
    if (st == FASA_OK) st = fasa_buffer_create(ctx, qn * 4 * bmax, &p->o);
    free(q);
    return st;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, uint32_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static fasa_status run_singles(const batch_pool *p, const fasa_decode_desc *dd, const fasa_decode_item *items, uint32_t B)
{
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; st == FASA_OK && i < B; i++) {
        fasa_decode_desc sd = *dd;
        sd.sequence = items[i].sequence;
        st = fasa_decode(p->cache, 0, &sd, items[i].q, items[i].q_offset, items[i].o, items[i].o_offset);
    }
    return st;
}

/* One row: warm-up, the bitwise check, then batch and singles interleaved. */
static fasa_status time_batch(fasa_context *ctx, const bench_batch_opts *o, batch_pool *p, uint32_t L, uint32_t B,
                              batch_row *row)
{
    size_t obytes = (size_t)o->hq * o->d * 4;
    fasa_decode_item *items = calloc(B, sizeof *items);
    double *tb = malloc(MAX_SAMPLES * sizeof(double)), *ts = malloc(MAX_SAMPLES * sizeof(double));
    uint8_t *o1 = malloc(obytes * B), *o2 = malloc(obytes * B);
    fasa_status st = items && tb && ts && o1 && o2 ? FASA_OK : FASA_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t i = 0; st == FASA_OK && i < B; i++)
        items[i] = (fasa_decode_item){.cache = p->cache, .sequence = &p->seqs[i], .q = p->q, .q_offset = i * obytes,
                                      .o = p->o, .o_offset = i * obytes};
    fasa_decode_desc dd = {.mode = FASA_MODE_FASA, .n_fac = o->nfac, .gqa_select = o->gqa};
    *row = (batch_row){.L = L, .B = B};
    for (uint32_t w = 0; st == FASA_OK && w < o->warmup; w++) {
        st = fasa_decode_batch(ctx, 0, &dd, B, items);
        if (st == FASA_OK) st = run_singles(p, &dd, items, B);
    }
    /* the batch must write what the single calls write */
    if (st == FASA_OK) st = fasa_decode_batch(ctx, 0, &dd, B, items);
    if (st == FASA_OK) st = fasa_buffer_read(p->o, 0, o1, obytes * B);
    if (st == FASA_OK) st = run_singles(p, &dd, items, B);
    if (st == FASA_OK) st = fasa_buffer_read(p->o, 0, o2, obytes * B);
    row->same_o = st == FASA_OK && memcmp(o1, o2, obytes * B) == 0;
    uint32_t max = o->iters ? o->iters : MAX_SAMPLES, n = 0;
    double start = cli_now();
    while (st == FASA_OK && n < max && n < MAX_SAMPLES) {
        double t0 = cli_now();
        st = fasa_decode_batch(ctx, 0, &dd, B, items);
        double t1 = cli_now();
        if (st == FASA_OK) st = run_singles(p, &dd, items, B);
        double t2 = cli_now();
        tb[n] = (t1 - t0) * 1e6 / B;
        ts[n++] = (t2 - t1) * 1e6 / B;
        if (!o->iters && n >= 5 && cli_now() - start > 2.0) break; /* auto: about 2 s per row */
    }
    if (st == FASA_OK && n) {
        row->samples = n;
        row->batch_med = median(tb, n);
        row->single_med = median(ts, n);
        row->batch_min = tb[0];
        row->single_min = ts[0];
    }
    free(items);
    free(tb);
    free(ts);
    free(o1);
    free(o2);
    return st;
}

static void print_rows(FILE *f, const bench_batch_opts *o, const fasa_device_info *dev, const batch_row *rows,
                       uint32_t n)
{
    if (o->json) {
        cJSON *arr = cJSON_CreateArray();
        for (uint32_t i = 0; i < n; i++) {
            const batch_row *r = &rows[i];
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "backend", fasa_backend_name(dev->backend));
            cJSON_AddStringToObject(j, "device", dev->name);
            cJSON_AddStringToObject(j, "variant", "batch");
            cJSON_AddNumberToObject(j, "L", r->L);
            cJSON_AddNumberToObject(j, "B", r->B);
            cJSON_AddNumberToObject(j, "batch_us_per_seq_median", r->batch_med);
            cJSON_AddNumberToObject(j, "single_us_per_seq_median", r->single_med);
            cJSON_AddNumberToObject(j, "ratio_batch_over_single", r->single_med > 0 ? r->batch_med / r->single_med : 0);
            cJSON_AddNumberToObject(j, "batch_us_per_seq_min", r->batch_min);
            cJSON_AddNumberToObject(j, "single_us_per_seq_min", r->single_min);
            cJSON_AddNumberToObject(j, "samples", r->samples);
            cJSON_AddBoolToObject(j, "bitwise_equal", r->same_o);
            cJSON_AddNumberToObject(j, "block_size", BENCH_BATCH_BLOCK);
            cJSON_AddNumberToObject(j, "hq", o->hq);
            cJSON_AddNumberToObject(j, "hkv", o->hkv);
            cJSON_AddNumberToObject(j, "d", o->d);
            cJSON_AddNumberToObject(j, "ntip", o->ntip);
            cJSON_AddNumberToObject(j, "nfac", o->nfac);
            cJSON_AddStringToObject(j, "dtype", o->dtype_name);
            cJSON_AddStringToObject(j, "gqa_select", o->gqa == FASA_GQA_PER_GROUP ? "group" : "head");
            cJSON_AddItemToArray(arr, j);
        }
        char *text = cJSON_Print(arr);
        fprintf(f, "%s\n", text);
        free(text);
        cJSON_Delete(arr);
        return;
    }
    fprintf(f, "fasa bench --batch: backend %s, device %s\n", fasa_backend_name(dev->backend), dev->name);
    fprintf(f, "shape Hq %u / Hkv %u / d %u, %s storage, N_tip %u, N_fac %u, FASA, selection per %s; one paged pool\n"
               "(token-major, blocks of %u in a random order), B sequences of L tokens each with its own query;\n"
               "wall clock per sequence: one fasa_decode_batch of B items vs B fasa_decode calls\n",
            o->hq, o->hkv, o->d, o->dtype_name, o->ntip, o->nfac, o->gqa == FASA_GQA_PER_GROUP ? "KV group" : "query head",
            BENCH_BATCH_BLOCK);
    fprintf(f, "\n%8s %5s %14s %15s %8s %12s %13s %7s %9s\n", "L", "B", "batch_us/seq", "single_us/seq", "ratio",
            "batch_min", "single_min", "steps", "bitwise");
    for (uint32_t i = 0; i < n; i++) {
        const batch_row *r = &rows[i];
        fprintf(f, "%8u %5u %14.1f %15.1f %7.2fx %12.1f %13.1f %7u %9s\n", r->L, r->B, r->batch_med, r->single_med,
                r->single_med > 0 ? r->batch_med / r->single_med : 0, r->batch_min, r->single_min, r->samples,
                r->same_o ? "equal" : "DIFFER");
    }
}

fasa_status bench_batch_run(fasa_context *ctx, const bench_batch_opts *o, FILE *f, FILE *fail_f)
{
    fasa_device_info dev;
    fasa_context_device(ctx, &dev);
    uint32_t bmax = 0;
    for (uint32_t i = 0; i < o->B.n; i++)
        if (o->B.v[i] > bmax) bmax = o->B.v[i];
    batch_row *rows = calloc((size_t)o->L.n * o->B.n, sizeof *rows);
    uint32_t n = 0;
    fasa_status st = rows ? FASA_OK : FASA_ERROR_OUT_OF_HOST_MEMORY;
    bool differ = false;
    for (uint32_t li = 0; st == FASA_OK && li < o->L.n; li++) {
        batch_pool p;
        st = pool_make(ctx, o, o->L.v[li], bmax, &p);
        for (uint32_t bi = 0; st == FASA_OK && bi < o->B.n; bi++) {
            st = time_batch(ctx, o, &p, o->L.v[li], o->B.v[bi], &rows[n]);
            if (st == FASA_OK) differ |= !rows[n++].same_o;
        }
        if (st != FASA_OK && *fasa_context_last_error(ctx))
            fprintf(stderr, "fasa bench: --batch, L=%u: %s: %s\n", o->L.v[li], fasa_status_string(st),
                    fasa_context_last_error(ctx));
        else if (st != FASA_OK)
            fprintf(stderr, "fasa bench: --batch, L=%u: %s\n", o->L.v[li], fasa_status_string(st));
        pool_free(&p);
    }
    if (st == FASA_OK && differ) {
        fprintf(stderr, "fasa bench: --batch: the batched o differs from the single calls' o (see 'bitwise')\n");
        st = FASA_ERROR_BACKEND;
    }
    if (n) print_rows(st == FASA_OK ? f : fail_f, o, &dev, rows, n);
    free(rows);
    return st;
}
