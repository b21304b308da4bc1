/* FASA-M on Vulkan: a multi-step decode sequence (changing queries, appends
 * between steps, truncations in the middle, both layers, per-head and
 * per-group selection) on offloaded caches with DIRECT, STAGED without a row
 * cache, STAGED with R = 2*G*n_fac, and the same with prefetch steps
 * (FASA_DECODE_PREFETCH: before layer 0 decodes, layer 1 is prefetched with
 * the query it will get, and on odd steps layer 0 with another query), next
 * to a FASA-C cache:
 *   - every FASA-M output is bit-identical to Vulkan FASA-C's (fac reads the
 *     same values in the same order; L stays within one top-k tile, where
 *     the selection order is deterministic, docs/VULKAN.md §12);
 *   - fasa_kv_cache_transfer_stats equals the CPU backend's after every step,
 *     prefetch counters included; a step prefetched with its own query
 *     finds every row resident;
 *   - the same sequence recorded into a host's command buffers
 *     (fasa_vk_record_append / fasa_vk_record_decode) gives the same; this
 *     run takes the fetch fallbacks (32-bit token maps as for R >= 65535,
 *     4-byte row copies), the standalone one 16-bit maps and 16-byte copies.
 * Integer data keep TIP scores exact, so both backends select the same sets.
 * Standalone, the device's row-cache slots are also compared slot by slot
 * with the reference policy (src/rowcache.c) run on the selections read back.
 * The standalone context runs with the validation layer and 64 KiB chunks
 * (rows and slots spread over many buffers). */
#include "vt_common.h"

#include "internal.h"
#include "vt_host.h"

#include <string.h>

void fasa__vk_test_set_chunk_limit(fasa_context *ctx, uint64_t bytes);
fasa_status fasa__vk_test_read_slots(fasa_kv_cache *cache, uint32_t layer, uint32_t g, int32_t *out);
void fasa__vk_test_fetch_fallbacks(fasa_context *ctx, bool on);

#define N_CFG 4
#define N_STEPS 10
#define N_FAC 64u
#define L0 2000u
#define POOL 2200u
#define R_SLOTS (2 * 4 * N_FAC) /* 2 * G * n_fac */

static const fasa_model_shape shape = {2, 8, 2, 64, FASA_ROPE_NORM};
static const char *const cfg_name[N_CFG] = {"direct", "staged R=0", "staged R=2*G*n_fac", "R + prefetch"};
static const uint32_t appends[N_STEPS] = {1, 2, 1, 3, 1, 1, 2, 1, 1, 2};

/* What one sequence runs on: caches c[0] = FASA-C, c[1 + i] = FASA-M
 * config i on Vulkan, ref[i] = the same FASA-M config on the CPU. */
typedef struct rig {
    host *h;                      /* embedded: the host's device; NULL = standalone */
    fasa_context *vk, *cpu;
    fasa_kv_cache *c[1 + N_CFG], *ref[N_CFG];
    fasa_buffer *kw, *vw, *qw, *ow;  /* embedded: wraps of the host's buffers */
    hbuf kb, vb, qb, ob;
    uint32_t len, next;           /* tokens held, next pool row */
} rig;

static float kpool[POOL * 2 * 64], vpool[POOL * 2 * 64];
static fasa_transfer_stats cpu_stats[N_STEPS][N_CFG]; /* from the standalone run */

/* The reference policy on the host, fed with the row-cache cache's
 * selections: slot_tok mirrors the token of every slot. */
typedef struct oracle {
    fasa_rowcache *rc[2][2];      /* [layer][KV head] */
    int32_t slot_tok[2][2][R_SLOTS];
    uint64_t step;
} oracle;

static oracle orc[2]; /* the row-cache configs: without and with prefetch */

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void oracle_truncate(uint32_t len)
{
    for (int i = 0; i < 2; i++)
        for (int l = 0; l < 2; l++)
            for (int g = 0; g < 2; g++) {
                fasa__rowcache_truncate(orc[i].rc[l][g], len);
                for (uint32_t s = 0; s < R_SLOTS; s++)
                    if (orc[i].slot_tok[l][g][s] >= (int32_t)len) orc[i].slot_tok[l][g][s] = -1;
            }
}

/* One sparse step of `layer` with selection sel [rows][N_FAC]: the
 * reference slots, then the device's, head by head. */
static void oracle_step(oracle *oc, fasa_kv_cache *c, uint32_t layer, const fasa_decode_outputs *out)
{
    uint32_t per = out->n_rows / shape.n_kv_heads;
    int32_t tok[4 * N_FAC], slot[4 * N_FAC], dev[R_SLOTS];
    oc->step++;
    for (uint32_t g = 0; g < shape.n_kv_heads; g++) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < per * N_FAC; i++) {
            int32_t t = out->selected[(g * per + i / N_FAC) * out->selected_stride + i % N_FAC];
            bool dup = false;
            for (uint32_t k = 0; k < n && !dup; k++) dup = tok[k] == t;
            if (!dup) tok[n++] = t;
        }
        qsort(tok, n, sizeof tok[0], cmp_i32);
        fasa__rowcache_step(oc->rc[layer][g], tok, n, oc->step, slot);
        for (uint32_t i = 0; i < n; i++) oc->slot_tok[layer][g][slot[i]] = tok[i];
        VT_OK(NULL, fasa__vk_test_read_slots(c, layer, g, dev));
        VT_CHECK(memcmp(dev, oc->slot_tok[layer][g], sizeof dev) == 0,
                 "sparse step %llu, layer %u, KV head %u: device row-cache slots differ from src/rowcache.c's",
                 (unsigned long long)oc->step, layer, g);
    }
}

static size_t row_floats(void) { return (size_t)shape.n_kv_heads * shape.head_dim; }
static size_t q_floats(void) { return (size_t)shape.n_q_heads * shape.head_dim; }

static fasa_kv_cache *make_cache(fasa_context *ctx, fasa_calibration *cal, int cfg)
{
    fasa_kv_cache_desc cd = {0};
    cd.shape = shape;
    cd.capacity = 2100;
    cd.dtype = FASA_DTYPE_F16;
    cd.calibration = cal;
    cd.flags = FASA_CACHE_NO_DENSE_LAYERS;
    cd.max_n_fac = 256;
    if (cfg >= 0) {
        cd.placement = FASA_PLACEMENT_OFFLOAD;
        cd.fetch = cfg ? FASA_FETCH_STAGED : FASA_FETCH_DIRECT;
        cd.row_cache_rows = cfg >= 2 ? R_SLOTS : 0;
    }
    fasa_kv_cache *c = NULL;
    VT_OK(ctx, fasa_kv_cache_create(ctx, &cd, &c));
    if (!c) exit(1);
    return c;
}

static void append(rig *r, uint32_t n)
{
    size_t row = row_floats();
    for (int i = 0; i < 1 + N_CFG; i++)
        for (uint32_t l = 0; l < shape.n_layers; l++) {
            if (r->h) VT_OK(r->vk, fasa_vk_record_append(r->c[i], l, n, r->h->cmd, r->kw, r->next * row * 4, r->vw,
                                                         r->next * row * 4, FASA_DTYPE_F32));
            else VT_OK(r->vk, fasa_kv_cache_append(r->c[i], l, n, kpool + r->next * row, vpool + r->next * row,
                                                   FASA_DTYPE_F32));
            if (!r->h && i < N_CFG)
                VT_OK(r->cpu, fasa_kv_cache_append(r->ref[i], l, n, kpool + r->next * row, vpool + r->next * row,
                                                   FASA_DTYPE_F32));
        }
    r->next += n;
    r->len += n;
}

static void truncate_to(rig *r, uint32_t len)
{
    if (!r->h) oracle_truncate(len);
    for (int i = 0; i < 1 + N_CFG; i++) VT_OK(r->vk, fasa_kv_cache_truncate(r->c[i], len));
    for (int i = 0; !r->h && i < N_CFG; i++) VT_OK(r->cpu, fasa_kv_cache_truncate(r->ref[i], len));
    r->len = len;
}

static void check_outputs(rig *r, int step, const float *o, const float *cpu_o)
{
    size_t nq = q_floats();
    for (int i = 1; i <= N_CFG; i++)
        for (uint32_t l = 0; l < shape.n_layers; l++) {
            const float *c = o + (size_t)l * nq, *m = o + ((size_t)i * shape.n_layers + l) * nq;
            VT_CHECK(memcmp(c, m, nq * 4) == 0, "%s step %d layer %u, %s: output differs from FASA-C (NMSE %.3g)",
                     r->h ? "recorded" : "standalone", step, l, cfg_name[i - 1], vt_nmse(c, m, nq));
            if (!cpu_o) continue;
            double e = vt_nmse(cpu_o + ((size_t)(i - 1) * shape.n_layers + l) * nq, m, nq);
            VT_CHECK(e <= 1e-7, "step %d layer %u, %s: NMSE %.3g against the CPU backend", step, l, cfg_name[i - 1], e);
        }
}

static bool same_stats(const fasa_transfer_stats *a, const fasa_transfer_stats *b)
{
    return a->steps == b->steps && a->rows_needed == b->rows_needed && a->rows_cached == b->rows_cached &&
           a->bytes == b->bytes && a->prefetch_steps == b->prefetch_steps && a->prefetch_rows == b->prefetch_rows &&
           a->prefetch_bytes == b->prefetch_bytes;
}

static void check_stats(rig *r, int step)
{
    for (int i = 0; i < N_CFG; i++) {
        fasa_transfer_stats t;
        VT_OK(r->vk, fasa_kv_cache_transfer_stats(r->c[1 + i], &t, false));
        if (!r->h) VT_OK(r->cpu, fasa_kv_cache_transfer_stats(r->ref[i], &cpu_stats[step][i], false));
        const fasa_transfer_stats *want = &cpu_stats[step][i];
        VT_CHECK(same_stats(&t, want),
                 "%s step %d, %s: vulkan %llu steps %llu rows %llu hits %llu bytes; cpu %llu %llu %llu %llu",
                 r->h ? "recorded" : "standalone", step, cfg_name[i], (unsigned long long)t.steps,
                 (unsigned long long)t.rows_needed, (unsigned long long)t.rows_cached, (unsigned long long)t.bytes,
                 (unsigned long long)want->steps, (unsigned long long)want->rows_needed,
                 (unsigned long long)want->rows_cached, (unsigned long long)want->bytes);
    }
}

/* A prefetch of `layer` with query q on cache i (and its CPU twin); with
 * slot checks the device's slots are compared with the reference after it. */
static void prefetch(rig *r, int i, uint32_t layer, const fasa_decode_desc *d, const float *q, uint64_t q_at)
{
    fasa_decode_desc pd = *d;
    pd.flags = FASA_DECODE_PREFETCH;
    int32_t sel[8 * N_FAC];
    fasa_decode_outputs out = {.selected = sel, .selected_stride = N_FAC};
    if (r->h) {
        VT_OK(r->vk, fasa_vk_record_decode(r->c[i], layer, &pd, r->h->cmd, r->qw, q_at, NULL, 0));
        return;
    }
    VT_OK(r->vk, fasa_decode_host(r->c[i], layer, &pd, q, NULL, &out));
    oracle_step(&orc[1], r->c[i], layer, &out);
    VT_OK(r->cpu, fasa_decode_host(r->ref[i - 1], layer, &pd, q, NULL, NULL));
}

/* The transfer counters of cache i (standalone only). */
static fasa_transfer_stats stats_of(rig *r, int i)
{
    fasa_transfer_stats t = {0};
    VT_OK(r->vk, fasa_kv_cache_transfer_stats(r->c[i], &t, false));
    return t;
}

/* Decodes both layers on every cache; o: [1 + N_CFG][layer][Hq * d].  The
 * prefetch config (cache 4) first prefetches layer 1 with q (the query it
 * gets next: all its rows must then be resident) and, on odd steps, layer 0
 * with q_other (partly other rows: evictions happen in between). */
static void decode_all(rig *r, int step, const fasa_decode_desc *d, const float *q, const float *q_other,
                       float *o, float *cpu_o)
{
    size_t nq = q_floats();
    if (r->h) { /* the host's q buffer: q, then q_other */
        memcpy(r->qb.map, q, nq * 4);
        memcpy((char *)r->qb.map + nq * 4, q_other, nq * 4);
    }
    for (int i = 0; i < 1 + N_CFG; i++) {
        fasa_transfer_stats before = {0};
        if (i == 4) {
            prefetch(r, i, 1, d, q, 0);
            if (step % 2) prefetch(r, i, 0, d, q_other, nq * 4);
        }
        for (uint32_t l = 0; l < shape.n_layers; l++) {
            size_t at = ((size_t)i * shape.n_layers + l) * nq;
            int32_t sel[8 * N_FAC];
            fasa_decode_outputs out = {.selected = sel, .selected_stride = N_FAC};
            bool check_slots = !r->h && i >= 3; /* the row-cache configs */
            if (i == 4 && l == 1 && !r->h) before = stats_of(r, i);
            if (r->h) VT_OK(r->vk, fasa_vk_record_decode(r->c[i], l, d, r->h->cmd, r->qw, 0, r->ow, at * 4));
            else VT_OK(r->vk, fasa_decode_host(r->c[i], l, d, q, o + at, check_slots ? &out : NULL));
            if (check_slots) oracle_step(&orc[i - 3], r->c[i], l, &out);
            if (!r->h && i > 0)
                VT_OK(r->cpu, fasa_decode_host(r->ref[i - 1], l, d, q, cpu_o + at - nq * shape.n_layers, NULL));
            if (i == 4 && l == 1 && !r->h) {
                fasa_transfer_stats after = stats_of(r, i);
                VT_CHECK(after.rows_cached - before.rows_cached == after.rows_needed - before.rows_needed &&
                         after.rows_needed > before.rows_needed,
                         "step %d: layer 1 prefetched with its own query still missed %llu of %llu rows", step,
                         (unsigned long long)((after.rows_needed - before.rows_needed) -
                                              (after.rows_cached - before.rows_cached)),
                         (unsigned long long)(after.rows_needed - before.rows_needed));
            }
        }
    }
}

static void run_sequence(rig *r)
{
    size_t nq = q_floats();
    float *q = malloc(nq * 4), *q_prev = malloc(nq * 4), *o = malloc((1 + N_CFG) * shape.n_layers * nq * 4);
    float *cpu_o = malloc(N_CFG * shape.n_layers * nq * 4);
    vt_rng rq = {77};
    for (size_t i = 0; i < nq; i++) q[i] = (float)vt_int(&rq, -3, 3);
    if (r->h) begin(r->h);
    append(r, L0);
    if (r->h) end_and_submit(r->h);
    for (int s = 0; s < N_STEPS; s++) {
        /* two heads get a new query each step: selections overlap across steps */
        for (uint32_t k = 0; k < 2; k++) {
            uint32_t hd = (uint32_t)(s * 3 + k * 5) % shape.n_q_heads;
            for (uint32_t j = 0; j < shape.head_dim; j++) q[hd * shape.head_dim + j] = (float)vt_int(&rq, -3, 3);
        }
        if (s == 4) truncate_to(r, r->len - 8);   /* the forced recent rows come back with new values */
        if (s == 7) truncate_to(r, r->len - 300);
        if (r->h) begin(r->h);
        if (s == 7) append(r, 40);
        append(r, appends[s]);
        fasa_decode_desc d = {.mode = FASA_MODE_FASA, .n_fac = N_FAC, .n_sink = 4, .n_recent = 4, .gqa_select = s % 2 ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD};
        decode_all(r, s, &d, q, q_prev, o, cpu_o);
        memcpy(q_prev, q, nq * 4);
        if (r->h) {
            end_and_submit(r->h);
            memcpy(o, r->ob.map, (1 + N_CFG) * shape.n_layers * nq * 4);
        }
        check_outputs(r, s, o, r->h ? NULL : cpu_o);
        check_stats(r, s);
    }
    for (int i = 0; i < N_CFG; i++)
        printf("%s %-20s %llu steps, %llu rows needed, %llu hits, %llu bytes; %llu prefetches, %llu rows, %llu bytes\n",
               r->h ? "recorded  " : "standalone", cfg_name[i], (unsigned long long)cpu_stats[N_STEPS - 1][i].steps,
               (unsigned long long)cpu_stats[N_STEPS - 1][i].rows_needed,
               (unsigned long long)cpu_stats[N_STEPS - 1][i].rows_cached,
               (unsigned long long)cpu_stats[N_STEPS - 1][i].bytes,
               (unsigned long long)cpu_stats[N_STEPS - 1][i].prefetch_steps,
               (unsigned long long)cpu_stats[N_STEPS - 1][i].prefetch_rows,
               (unsigned long long)cpu_stats[N_STEPS - 1][i].prefetch_bytes);
    free(q), free(q_prev), free(o), free(cpu_o);
}

static void make_caches(rig *r, fasa_calibration *cal_vk, fasa_calibration *cal_cpu)
{
    for (int i = 0; i < 1 + N_CFG; i++) r->c[i] = make_cache(r->vk, cal_vk, i - 1);
    for (int i = 0; !r->h && i < N_CFG; i++) r->ref[i] = make_cache(r->cpu, cal_cpu, i);
}

static void destroy_caches(rig *r)
{
    for (int i = 0; i < 1 + N_CFG; i++) fasa_kv_cache_destroy(r->c[i]);
    for (int i = 0; i < N_CFG; i++) fasa_kv_cache_destroy(r->ref[i]);
}

static void standalone(void)
{
    rig r;
    memset(&r, 0, sizeof r);
    r.vk = vt_context_validated();
    r.cpu = vt_context(FASA_BACKEND_CPU, 0);
    fasa__vk_test_set_chunk_limit(r.vk, 64u << 10);
    fasa_calibration *cv = vt_calibration(r.vk, &shape, 8, false, 5), *cc = vt_calibration(r.cpu, &shape, 8, false, 5);
    make_caches(&r, cv, cc);
    memset(orc, 0, sizeof orc);
    for (int i = 0; i < 2; i++) memset(orc[i].slot_tok, 0xff, sizeof orc[i].slot_tok);
    for (int l = 0; l < 2; l++)
        for (int g = 0; g < 2; g++)
            for (int i = 0; i < 2; i++) orc[i].rc[l][g] = fasa__rowcache_create(r.cpu, R_SLOTS, 2100);
    fasa_memory_report m;
    fasa_kv_cache_memory(r.c[3], &m);
    printf("row-cache cache: device %llu B, host %llu B, scratch %llu B\n", (unsigned long long)m.device_bytes,
           (unsigned long long)m.host_bytes, (unsigned long long)m.scratch_bytes);
    run_sequence(&r);
    VT_CHECK(cpu_stats[N_STEPS - 1][2].rows_cached > 0, "the row cache never hit");
    const fasa_transfer_stats *pf = &cpu_stats[N_STEPS - 1][3];
    VT_CHECK(pf->prefetch_steps == N_STEPS + N_STEPS / 2 && pf->prefetch_rows > 0 &&
                 pf->prefetch_bytes == pf->prefetch_rows * 2 * shape.head_dim * 2 && pf->rows_cached > cpu_stats[N_STEPS - 1][2].rows_cached,
             "prefetch counters: %llu steps, %llu rows, %llu bytes, %llu hits", (unsigned long long)pf->prefetch_steps,
             (unsigned long long)pf->prefetch_rows, (unsigned long long)pf->prefetch_bytes,
             (unsigned long long)pf->rows_cached);
    for (int l = 0; l < 2; l++)
        for (int g = 0; g < 2; g++)
            for (int i = 0; i < 2; i++) fasa__rowcache_destroy(r.cpu, orc[i].rc[l][g]);
    destroy_caches(&r);
    fasa_calibration_destroy(cv);
    fasa_calibration_destroy(cc);
    fasa_context_destroy(r.vk);
    fasa_context_destroy(r.cpu);
}

static void recorded(void)
{
    host h;
    memset(&h, 0, sizeof h);
    create_instance(&h);
    create_device(&h);
    fasa_vk_embed e = host_embed(&h);
    fasa_context_desc cd = {0};
    cd.backend = FASA_BACKEND_VULKAN;
    cd.embed = &e;
    rig r;
    memset(&r, 0, sizeof r);
    r.h = &h;
    VT_OK(NULL, fasa_context_create(&cd, &r.vk));
    if (!r.vk) exit(1);
    fasa__vk_test_fetch_fallbacks(r.vk, true); /* 32-bit token maps (R >= 65535), 4-byte copies */
    size_t nq = q_floats(), pool_bytes = (size_t)POOL * row_floats() * 4;
    VkBufferUsageFlags src = VK_BUFFER_USAGE_TRANSFER_SRC_BIT, dst = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    r.kb = make_buffer(&h, pool_bytes, src), r.vb = make_buffer(&h, pool_bytes, src);
    r.qb = make_buffer(&h, 2 * nq * 4, src), r.ob = make_buffer(&h, (1 + N_CFG) * shape.n_layers * nq * 4, dst);
    memcpy(r.kb.map, kpool, pool_bytes);
    memcpy(r.vb.map, vpool, pool_bytes);
    VT_OK(r.vk, fasa_vk_buffer_wrap(r.vk, r.kb.buf, 0, r.kb.size, &r.kw));
    VT_OK(r.vk, fasa_vk_buffer_wrap(r.vk, r.vb.buf, 0, r.vb.size, &r.vw));
    VT_OK(r.vk, fasa_vk_buffer_wrap(r.vk, r.qb.buf, 0, r.qb.size, &r.qw));
    VT_OK(r.vk, fasa_vk_buffer_wrap(r.vk, r.ob.buf, 0, r.ob.size, &r.ow));
    fasa_calibration *cv = vt_calibration(r.vk, &shape, 8, false, 5);
    make_caches(&r, cv, NULL);
    run_sequence(&r);
    destroy_caches(&r);
    fasa_buffer *w[] = {r.kw, r.vw, r.qw, r.ow};
    for (int i = 0; i < 4; i++) fasa_buffer_destroy(w[i]);
    fasa_calibration_destroy(cv);
    fasa_context_destroy(r.vk);
    hbuf *b[] = {&r.kb, &r.vb, &r.qb, &r.ob};
    for (int i = 0; i < 4; i++) free_buffer(&h, b[i]);
    destroy_host(&h);
    VT_CHECK(h.n_messages == 0, "%u validation message(s) on the host's instance", h.n_messages);
}

/* The bytes at p that differ from the fill pattern 0xa5. */
static size_t touched(const uint8_t *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += p[i] != 0xa5;
    return k;
}

static void import_errors(fasa_context *vk, fasa_context *cpu, fasa_kv_cache_desc cd, uint8_t *mem, uint64_t size)
{
    fasa_kv_cache *c = NULL;
    cd.host_memory = mem + 64, cd.host_memory_size = size;
    VT_CHECK(fasa_kv_cache_create(vk, &cd, &c) == FASA_ERROR_INVALID_ARGUMENT &&
                 strstr(fasa_context_last_error(vk), "desc.host_memory: "), "misaligned: %s", fasa_context_last_error(vk));
    cd.host_memory = mem, cd.host_memory_size = size - 1;
    VT_CHECK(fasa_kv_cache_create(vk, &cd, &c) == FASA_ERROR_INVALID_ARGUMENT &&
                 strstr(fasa_context_last_error(vk), "desc.host_memory_size"), "too small: %s", fasa_context_last_error(vk));
    cd.host_memory_size = size, cd.n_dense_layers = 1; /* dense_layers NULL: still checked with host memory */
    VT_CHECK(fasa_kv_cache_create(vk, &cd, &c) == FASA_ERROR_INVALID_ARGUMENT &&
                 strstr(fasa_context_last_error(vk), "desc.dense_layers"), "bad dense layers: %s", fasa_context_last_error(vk));
    cd.n_dense_layers = 0, cd.placement = FASA_PLACEMENT_DEVICE, cd.fetch = FASA_FETCH_DIRECT, cd.row_cache_rows = 0;
    VT_CHECK(fasa_kv_cache_create(vk, &cd, &c) == FASA_ERROR_INVALID_ARGUMENT, "host memory for a FASA-C cache");
    cd.placement = FASA_PLACEMENT_OFFLOAD, cd.calibration = NULL;
    VT_CHECK(fasa_kv_cache_create(cpu, &cd, &c) == FASA_ERROR_UNSUPPORTED &&
                 strstr(fasa_context_last_error(cpu), "cpu backend"), "cpu: %s", fasa_context_last_error(cpu));
    VT_CHECK(c == NULL, "no cache on a failed create");
}

/* FASA-M with K and V in application host memory (fasa_kv_cache_desc.
 * host_memory, imported through VK_EXT_external_memory_host, which lavapipe
 * offers): the rows land in that memory (layer 0's K row of head 0, token 0
 * first, as fp16), nothing past the size is touched, and decode outputs and
 * read-back rows equal those of the same cache in libfasa's own memory. */
static void imported(void)
{
    fasa_context *vk = vt_context_validated(), *cpu = vt_context(FASA_BACKEND_CPU, 0);
    fasa_calibration *cal = vt_calibration(vk, &shape, 8, false, 5);
    fasa_kv_cache_desc cd = {.shape = shape, .capacity = 2100, .calibration = cal, .flags = FASA_CACHE_NO_DENSE_LAYERS,
                             .max_n_fac = 256, .placement = FASA_PLACEMENT_OFFLOAD, .fetch = FASA_FETCH_STAGED,
                             .row_cache_rows = R_SLOTS};
    uint64_t size = 0, align = 0;
    VT_OK(vk, fasa_kv_cache_host_memory_requirements(vk, &cd, &size, &align));
    uint64_t kv_bytes = 2ull * shape.n_layers * shape.n_kv_heads * cd.capacity * shape.head_dim * 2;
    VT_CHECK(align > 0 && size >= kv_bytes && size % align == 0, "requirements: %llu bytes at %llu (K+V %llu)",
             (unsigned long long)size, (unsigned long long)align, (unsigned long long)kv_bytes);
    uint8_t *mem = aligned_alloc(align, size + align);
    if (!mem) exit(1);
    memset(mem, 0xa5, size + align);
    import_errors(vk, cpu, cd, mem, size);
    fasa_kv_cache *own = NULL, *imp = NULL;
    VT_OK(vk, fasa_kv_cache_create(vk, &cd, &own));
    cd.host_memory = mem, cd.host_memory_size = size;
    VT_OK(vk, fasa_kv_cache_create(vk, &cd, &imp));
    if (!own || !imp) exit(1);
    for (uint32_t l = 0; l < shape.n_layers; l++) {
        VT_OK(vk, fasa_kv_cache_append(own, l, L0, kpool, vpool, FASA_DTYPE_F32));
        VT_OK(vk, fasa_kv_cache_append(imp, l, L0, kpool, vpool, FASA_DTYPE_F32));
    }
    uint16_t first[64];
    fasa__float_to_half_n(kpool, first, shape.head_dim);
    VT_CHECK(memcmp(mem, first, sizeof first) == 0, "layer 0's K row (head 0, token 0) is not at the start of host_memory");
    VT_CHECK(touched(mem, size) > size / 4 && touched(mem + size, align) == 0,
             "%zu of %llu bytes written, %zu past the end", touched(mem, size), (unsigned long long)size,
             touched(mem + size, align));
    size_t nq = q_floats();
    float *q = malloc(nq * 4), *o1 = malloc(nq * 4), *o2 = malloc(nq * 4);
    vt_rng rq = {99};
    for (int step = 0; step < 6; step++) {
        for (size_t i = 0; i < nq; i++) q[i] = (float)vt_int(&rq, -3, 3);
        fasa_decode_desc d = {.n_fac = N_FAC, .gqa_select = step % 2 ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD};
        VT_OK(vk, fasa_decode_host(own, step % 2, &d, q, o1, NULL));
        VT_OK(vk, fasa_decode_host(imp, step % 2, &d, q, o2, NULL));
        VT_CHECK(memcmp(o1, o2, nq * 4) == 0, "step %d: imported cache output differs (NMSE %.3g)", step, vt_nmse(o1, o2, nq));
    }
    float *r1 = malloc(16 * row_floats() * 4), *r2 = malloc(16 * row_floats() * 4);
    VT_OK(vk, fasa_kv_cache_read(own, 1, 1000, 16, r1, NULL));
    VT_OK(vk, fasa_kv_cache_read(imp, 1, 1000, 16, r2, NULL));
    VT_CHECK(memcmp(r1, r2, 16 * row_floats() * 4) == 0, "read-back rows differ");
    fasa_memory_report m1, m2;
    fasa_kv_cache_memory(own, &m1);
    fasa_kv_cache_memory(imp, &m2);
    VT_CHECK(m1.device_bytes == m2.device_bytes && m1.host_bytes == m2.host_bytes, "memory reports differ");
    printf("imported host memory: %llu bytes at alignment %llu, outputs equal\n", (unsigned long long)size,
           (unsigned long long)align);
    fasa_kv_cache_destroy(own);
    fasa_kv_cache_destroy(imp);
    free(q), free(o1), free(o2), free(r1), free(r2), free(mem);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(vk);
    fasa_context_destroy(cpu);
}

int main(void)
{
    vt_require_vulkan();
    vt_rng r = {4242};
    printf("seed 4242\n");
    for (size_t i = 0; i < (size_t)POOL * row_floats(); i++)
        kpool[i] = (float)vt_int(&r, -4, 4), vpool[i] = (float)vt_int(&r, -8, 8);
    standalone();
    recorded();
    imported();
    return vt_finish("test_vk_fasam");
}
