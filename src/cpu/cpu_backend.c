/* CPU backend: context, buffers, cache storage and command "streams" (the
 * kernels run immediately, so an exec only carries the profiling clock).
 * The kernels themselves are in cpu_kernels.c. */
#include "cpu.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* Devices and context                                                       */
/* ------------------------------------------------------------------------ */

static void cpu_name(char *out, size_t size)
{
    snprintf(out, size, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *colon = strchr(line, ':');
        if (!colon) break;
        colon++;
        while (*colon == ' ') colon++;
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(out, size, "%s", colon);
        break;
    }
    fclose(f);
}

static fasa_status cpu_list_devices(fasa_device_info *devices, uint32_t *count, char *msg,
                                    size_t msg_size)
{
    (void)msg;
    (void)msg_size;
    uint32_t capacity = *count;
    *count = 1;
    if (capacity == 0) return FASA_OK;
    fasa_device_info *d = &devices[0];
    memset(d, 0, sizeof *d);
    d->type = FASA_DEVICE_CPU;
    cpu_name(d->name, sizeof d->name);
    snprintf(d->driver, sizeof d->driver, "libfasa plain C (%s)", fasa__cpu_simd()->name);
    d->compute_units = fasa__cpu_count();
    d->max_buffer_size = UINT64_MAX;
    d->unified_memory = true;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    d->heap_count = 1;
    d->heaps[0].size = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    d->heaps[0].device_local = true;
    d->heaps[0].host_visible = true;
    return FASA_OK;
}

static fasa_status cpu_context_init(fasa_context *ctx, uint32_t device_index, const void *embed)
{
    (void)device_index;
    if (embed) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: the cpu backend has nothing to embed");
    cpu_context *cc = fasa__alloc(ctx, sizeof *cc);
    if (!cc) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cpu: out of host memory");
    cc->simd = fasa__cpu_simd();
    ctx->impl = cc;
    return FASA_OK;
}

static void cpu_context_destroy(fasa_context *ctx)
{
    fasa__free(ctx, ctx->impl);
    ctx->impl = NULL;
}

static fasa_status cpu_finish(fasa_context *ctx)
{
    (void)ctx;
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

static fasa_status cpu_buffer_create(fasa_context *ctx, fasa_buffer *buf)
{
    /* CPU "device" memory is host memory: both fault kinds apply */
    buf->host = fasa__fault(ctx, FASA_FAULT_DEVICE_ALLOC) ? NULL : fasa__alloc_aligned(ctx, buf->size, 64);
    if (!buf->host)
        return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cpu: cannot allocate a %llu-byte buffer",
                           (unsigned long long)buf->size);
    return FASA_OK;
}

static void cpu_buffer_destroy(fasa_context *ctx, fasa_buffer *buf)
{
    if (!buf->wrapped) fasa__free(ctx, buf->host);
    buf->host = NULL;
}

static fasa_status cpu_buffer_write(fasa_context *ctx, fasa_buffer *buf, uint64_t offset,
                                    const void *src, uint64_t size)
{
    (void)ctx;
    memmove((char *)buf->host + offset, src, size);
    return FASA_OK;
}

static fasa_status cpu_buffer_read(fasa_context *ctx, fasa_buffer *buf, uint64_t offset, void *dst,
                                   uint64_t size)
{
    (void)ctx;
    memmove(dst, (const char *)buf->host + offset, size);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Cache storage                                                             */
/* ------------------------------------------------------------------------ */

static void cpu_cache_destroy(fasa_kv_cache *cache)
{
    fasa_context *ctx = cache->ctx;
    cpu_cache *cc = cache->impl;
    if (!cc) return;
    for (uint32_t l = 0; cc->layers && l < cache->shape.n_layers; l++) {
        if (!cache->ext) { /* an external cache's K and V are the engine's */
            fasa__free(ctx, cc->layers[l].k);
            fasa__free(ctx, cc->layers[l].v);
        }
        fasa__free(ctx, cc->layers[l].kdom);
    }
    for (uint32_t w = 0; cc->topk_scratch && w < cc->n_workers; w++) fasa__free(ctx, cc->topk_scratch[w]);
    fasa__free(ctx, cc->topk_scratch);
    fasa__free(ctx, cc->seen);
    fasa__free(ctx, cc->needed);
    fasa__free(ctx, cc->layers);
    fasa__free(ctx, cc->scores);
    fasa__free(ctx, cc->selected);
    fasa__free(ctx, cc->partials);
    fasa__free(ctx, cc->qm);
    fasa__free(ctx, cc->qf);
    fasa__free(ctx, cc->of);
    fasa__free(ctx, cc);
    cache->impl = NULL;
}

/* K and V of layer l: the engine's memory in place (external caches, read
 * at their offsets), else arrays of our own. */
static bool place_kv(fasa_kv_cache *cache, cpu_layer *lay, uint32_t l, uint64_t kv)
{
    const fasa_kv_ext *x = cache->ext;
    if (x) {
        lay->k = (char *)x->k[l]->host + x->k_offset[l];
        lay->v = (char *)x->v[l]->host + x->v_offset[l];
        return true;
    }
    lay->k = fasa__alloc_aligned(cache->ctx, kv, 64);
    lay->v = fasa__alloc_aligned(cache->ctx, kv, 64);
    return lay->k && lay->v;
}

static fasa_status alloc_layers(fasa_kv_cache *cache, cpu_cache *cc)
{
    fasa_context *ctx = cache->ctx;
    const fasa_model_shape *s = &cache->shape;
    uint64_t kv = cache->ext ? 0 : (uint64_t)s->n_kv_heads * cache->capacity * s->head_dim * cache->elem_size;
    cc->ts = cache->ext ? cache->ext->token_stride : s->head_dim;
    cc->hs = cache->ext ? cache->ext->head_stride : (size_t)cache->capacity * s->head_dim;
    cc->n_tiles = ((size_t)cache->capacity + 15) / 16;
    uint64_t dom = (uint64_t)s->n_kv_heads * cc->n_tiles * 16 * cache->u_pad * cache->elem_size;
    for (uint32_t l = 0; l < s->n_layers; l++) {
        cpu_layer *lay = &cc->layers[l];
        if (fasa__fault(ctx, FASA_FAULT_DEVICE_ALLOC))
            return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cpu: cannot allocate layer %u of the cache", l);
        bool kv_ok = place_kv(cache, lay, l, kv);
        /* zeroed: TIP reads the whole last tile, past the last token */
        if (cache->has_dims) lay->kdom = fasa__alloc(ctx, dom);
        if (!kv_ok || (cache->has_dims && !lay->kdom))
            return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY,
                               "cpu: cannot allocate layer %u of the cache (%llu bytes per K/V array)",
                               l, (unsigned long long)kv);
    }
    cache->device_bytes = s->n_layers * (2 * kv + (cache->has_dims ? dom : 0));
    cache->host_bytes = 0; /* one memory: FASA-M saves nothing on the CPU backend */
    return FASA_OK;
}

/* FASA-M staged fetch with a row cache: the reference policy's state per
 * (layer, KV head).  The CPU has one memory, so only the bookkeeping runs. */
static bool alloc_rowcaches(fasa_kv_cache *cache)
{
    if (cache->fetch != FASA_FETCH_STAGED || cache->row_cache_rows == 0) return true;
    size_t n = (size_t)cache->shape.n_layers * cache->shape.n_kv_heads;
    cache->rowcaches = fasa__alloc(cache->ctx, n * sizeof(fasa_rowcache *));
    for (size_t i = 0; cache->rowcaches && i < n; i++)
        if (!(cache->rowcaches[i] = fasa__rowcache_create(cache->ctx, cache->row_cache_rows, cache->capacity)))
            return false;
    return cache->rowcaches != NULL;
}

static fasa_status alloc_scratch(fasa_kv_cache *cache, cpu_cache *cc)
{
    fasa_context *ctx = cache->ctx;
    const fasa_model_shape *s = &cache->shape;
    cc->n_workers = fasa__pool_size(ctx->pool);
    cc->scores = fasa__alloc_aligned(ctx, (size_t)s->n_q_heads * cache->capacity * sizeof(float), 64);
    cc->selected = fasa__alloc(ctx, (size_t)s->n_q_heads * cache->max_n_fac * sizeof(int32_t));
    cc->partials = fasa__alloc(ctx, (size_t)s->n_q_heads * FASA_CPU_MAX_SPLITS * (s->head_dim + 2) * sizeof(float));
    cc->qm = fasa__alloc(ctx, (size_t)s->n_q_heads * (s->head_dim > cache->u_pad ? s->head_dim : cache->u_pad) * sizeof(float));
    cc->qf = fasa__alloc(ctx, (size_t)s->n_q_heads * s->head_dim * sizeof(float));
    cc->of = fasa__alloc(ctx, (size_t)s->n_q_heads * s->head_dim * sizeof(float));
    cc->topk_scratch = fasa__alloc(ctx, cc->n_workers * sizeof(uint32_t *));
    bool ok = cc->scores && cc->selected && cc->partials && cc->qm && cc->qf && cc->of && cc->topk_scratch;
    for (uint32_t w = 0; ok && w < cc->n_workers; w++) {
        cc->topk_scratch[w] = fasa__alloc_aligned(ctx, 3 * (size_t)cache->capacity * sizeof(uint32_t), 64);
        ok = cc->topk_scratch[w] != NULL;
    }
    if (ok && cache->placement == FASA_PLACEMENT_OFFLOAD) {
        cc->seen = fasa__alloc(ctx, cache->capacity);
        cc->needed = fasa__alloc(ctx, (size_t)s->n_q_heads * cache->max_n_fac * sizeof(int32_t));
        ok = cc->seen && cc->needed && alloc_rowcaches(cache);
    }
    if (!ok) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cpu: cannot allocate the step scratch");
    cache->scratch_bytes = (uint64_t)s->n_q_heads * cache->capacity * 4 +
                           (uint64_t)s->n_q_heads * cache->max_n_fac * 4 +
                           3ull * cc->n_workers * cache->capacity * 4;
    return FASA_OK;
}

/* The cache's memory is host memory: a request larger than the machine's
 * physical memory fails here, naming the numbers, before anything is
 * allocated (instead of being overcommitted and touched until the OOM
 * killer ends the process). */
static fasa_status check_request(fasa_kv_cache *cache)
{
    const fasa_model_shape *s = &cache->shape;
    uint64_t tokens = fasa__sat_mul(s->n_kv_heads, cache->capacity);
    uint64_t kv = cache->ext ? 0 : fasa__sat_mul(tokens, (uint64_t)s->head_dim * cache->elem_size);
    uint64_t dom = cache->has_dims ? fasa__sat_mul(tokens + 16 * s->n_kv_heads, (uint64_t)cache->u_pad * cache->elem_size) : 0;
    uint64_t per_layer = fasa__sat_add(fasa__sat_mul(kv, 2), dom);
    uint64_t scratch = fasa__sat_mul((uint64_t)s->n_q_heads + 3ull * fasa__pool_size(cache->ctx->pool),
                                     (uint64_t)cache->capacity * 4);
    uint64_t total = fasa__sat_add(fasa__sat_mul(per_layer, s->n_layers), scratch);
    uint64_t phys = cache->ctx->device.heap_count ? cache->ctx->device.heaps[0].size : 0;
    if (phys == 0 || total <= phys) return FASA_OK;
    return fasa__error(cache->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY,
                       "cpu: the KV cache needs %llu bytes (%.1f GiB)%s, more than the machine's physical memory "
                       "of %llu bytes (%.1f GiB)", (unsigned long long)total, (double)total / (1ull << 30),
                       total == UINT64_MAX ? " or more" : "", (unsigned long long)phys, (double)phys / (1ull << 30));
}

static fasa_status cpu_cache_create(fasa_kv_cache *cache)
{
    fasa_context *ctx = cache->ctx;
    fasa_status checked = check_request(cache);
    if (checked != FASA_OK) return checked;
    cpu_cache *cc = fasa__alloc(ctx, sizeof *cc);
    if (!cc) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cpu: out of host memory");
    cache->impl = cc;
    cc->layers = fasa__alloc(ctx, cache->shape.n_layers * sizeof(cpu_layer));
    fasa_status st = cc->layers ? FASA_OK : fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cpu: out of host memory");
    if (st == FASA_OK) st = alloc_layers(cache, cc);
    if (st == FASA_OK) st = alloc_scratch(cache, cc);
    if (st != FASA_OK) cpu_cache_destroy(cache);
    else if (cache->placement == FASA_PLACEMENT_OFFLOAD)
        fasa__log(ctx, FASA_LOG_INFO, "cpu: FASA-M placement has one memory here; no device memory is saved");
    return st;
}

static fasa_status cpu_cache_read(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n,
                                  float *k, float *v)
{
    const cpu_cache *cc = cache->impl;
    const cpu_layer *lay = &cc->layers[layer];
    uint32_t d = cache->shape.head_dim, hkv = cache->shape.n_kv_heads;
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t g = 0; g < hkv; g++) {
            size_t src = (first + t) * cc->ts + g * cc->hs;
            size_t dst = ((size_t)t * hkv + g) * d;
            if (k) fasa__dtype_to_float_n(cache->dtype, (const char *)lay->k + src * cache->elem_size, k + dst, d);
            if (v) fasa__dtype_to_float_n(cache->dtype, (const char *)lay->v + src * cache->elem_size, v + dst, d);
        }
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Exec: kernels run at once; the exec only times them                      */
/* ------------------------------------------------------------------------ */

static fasa_status cpu_exec_begin(fasa_context *ctx, fasa_exec **exec)
{
    cpu_context *cc = ctx->impl;
    cc->exec.ctx = ctx;
    cc->exec.t0 = now_ns();
    *exec = &cc->exec;
    return FASA_OK;
}

static fasa_status cpu_exec_end(fasa_context *ctx, fasa_exec *exec, bool wait)
{
    (void)wait;
    if (ctx->flags & FASA_CONTEXT_PROFILE) {
        ctx->last_step_ns = now_ns() - exec->t0;
        ctx->has_step_ns = true;
    }
    return FASA_OK;
}

static fasa_status cpu_read_selection(fasa_kv_cache *cache, const fasa_step *step, int32_t *selected,
                                      uint32_t selected_stride, float *scores, uint32_t scores_stride)
{
    const cpu_cache *cc = cache->impl;
    for (uint32_t r = 0; r < step->n_rows; r++) {
        if (selected)
            memcpy(selected + (size_t)r * selected_stride, cc->selected + (size_t)r * cache->max_n_fac,
                   step->n_fac * sizeof(int32_t));
        if (scores)
            memcpy(scores + (size_t)r * scores_stride, cc->scores + (size_t)r * cache->capacity,
                   step->L * sizeof(float));
    }
    return FASA_OK;
}

const fasa_backend_ops fasa__cpu_ops = {
    .id = FASA_BACKEND_CPU,
    .name = "cpu",
    .list_devices = cpu_list_devices,
    .context_init = cpu_context_init,
    .context_destroy = cpu_context_destroy,
    .finish = cpu_finish,
    .buffer_create = cpu_buffer_create,
    .buffer_destroy = cpu_buffer_destroy,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    .cache_create = cpu_cache_create,
    .cache_destroy = cpu_cache_destroy,
    .cache_read = cpu_cache_read,
    .exec_begin = cpu_exec_begin,
    .exec_end = cpu_exec_end,
    .append = fasa__cpu_append,
    .sync = fasa__cpu_sync,
    .upload_table = fasa__cpu_upload_table,
    .tip = fasa__cpu_tip,
    .topk = fasa__cpu_topk,
    .fac = fasa__cpu_fac,
    .dense = fasa__cpu_dense,
    .read_selection = cpu_read_selection,
};
