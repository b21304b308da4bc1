/* CUDA cache storage: K, V and K_dom of every layer, the device copies of
 * the dims tables and the per-step scratch; cache reads and the selection
 * read-back.
 *
 * FASA-C (placement DEVICE) puts everything in device memory.  FASA-M
 * (placement OFFLOAD) puts K and V in mapped, pinned host memory that the
 * kernels read over the bus (zero-copy; docs/SPEC.md §6.2) and keeps K_dom,
 * the scratch and the fetch state (cuda_fetch.c) on the device. */
#include "cuda_internal.h"

#include <stdio.h>
#include <string.h>

static fasa_status dev_alloc(fasa_kv_cache *c, size_t size, const char *what, void **out)
{
    cuda_ctx *cc = c->ctx->impl;
    if (size == 0) size = 4;
    cudaError_t err = fasa__cuda_malloc(c->ctx, out, size);
    if (err != cudaSuccess) {
        *out = NULL;
        char msg[160];
        snprintf(msg, sizeof msg, "cudaMalloc of %s (%zu bytes)", what, size);
        return fasa__cuda_fail(c->ctx, err, msg);
    }
    err = cudaMemsetAsync(*out, 0, size, cc->stream); /* deterministic contents */
    if (err != cudaSuccess) return fasa__cuda_fail(c->ctx, err, "cudaMemsetAsync (cache)");
    return FASA_OK;
}

/* Mapped pinned host memory: *host to free, *dev the address kernels use
 * (with unified addressing, every 64-bit platform CUDA supports, the two
 * are equal; cudaHostGetDevicePointer says so without assuming it). */
static fasa_status host_alloc(fasa_kv_cache *c, size_t size, const char *what, void **host, void **dev)
{
    if (size == 0) size = 4;
    cudaError_t err = fasa__cuda_host_alloc(c->ctx, host, size, cudaHostAllocMapped | cudaHostAllocPortable);
    if (err != cudaSuccess) {
        *host = NULL;
        (void)cudaGetLastError();
        return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY,
                           "cuda: cudaHostAlloc of %s (%zu bytes) failed: %s", what, size, cudaGetErrorString(err));
    }
    memset(*host, 0, size);
    err = fasa__cuda_host_map(c->ctx, dev, *host);
    return err == cudaSuccess ? FASA_OK : fasa__cuda_fail(c->ctx, err, "cudaHostGetDevicePointer (FASA-M storage)");
}

static void dev_free(void **p)
{
    if (*p) cudaFree(*p);
    *p = NULL;
}

static void host_free(void **p)
{
    if (*p) cudaFreeHost(*p);
    *p = NULL;
}

static void free_all(fasa_kv_cache *cache, cuda_cache *cu)
{
    fasa__cuda_fetch_free(cache);
    for (uint32_t l = 0; cu->layers && l < cache->shape.n_layers; l++) {
        cuda_layer *lay = &cu->layers[l];
        if (cache->placement == FASA_PLACEMENT_OFFLOAD) {
            host_free(&lay->k_host);
            host_free(&lay->v_host);
            lay->k = lay->v = NULL;
        } else if (cache->ext) { /* the engine's memory */
            lay->k = lay->v = NULL;
        } else {
            dev_free(&lay->k);
            dev_free(&lay->v);
        }
        dev_free(&lay->kdom);
    }
    void **single[] = {(void **)&cu->udims, (void **)&cu->usize, (void **)&cu->tip_map, (void **)&cu->scores,
                       (void **)&cu->sel, (void **)&cu->tk_state, (void **)&cu->tk_hist, (void **)&cu->tk_tiles,
                       (void **)&cu->part, (void **)&cu->qf};
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++) dev_free(single[i]);
    (void)cudaGetLastError();
}

void fasa__cuda_cache_destroy(fasa_kv_cache *cache)
{
    cuda_cache *cu = cache->impl;
    if (!cu) return;
    fasa_context *ctx = cache->ctx;
    cuda_ctx *cc = ctx->impl;
    int prev;
    bool entered = fasa__cuda_enter_any(ctx, &prev) == FASA_OK;
    if (entered) cudaStreamSynchronize(cc->stream); /* no enqueued kernel may still use the memory */
    free_all(cache, cu);
    if (entered) fasa__cuda_leave(prev);
    fasa__free(ctx, cu->layers);
    fasa__free(ctx, cu);
    cache->impl = NULL;
}

/* Resident bytes: FASA-M K and V are host bytes, except on an integrated
 * GPU (one memory: nothing is saved, so they count as device bytes; logged
 * once per context). */
static void account(fasa_kv_cache *c, uint64_t dom_all, uint64_t kv_all)
{
    cuda_ctx *cc = c->ctx->impl;
    bool offload = c->placement == FASA_PLACEMENT_OFFLOAD, saves = offload && !c->ctx->device.unified_memory;
    c->device_bytes = dom_all + (saves ? 0 : kv_all);
    c->host_bytes = saves ? kv_all : 0;
    if (offload && !saves && !cc->logged_unified) {
        cc->logged_unified = true;
        fasa__log(c->ctx, FASA_LOG_INFO, "cuda: FASA-M on the integrated GPU '%s': host and device share one memory, "
                  "so no device memory is saved; K and V are counted as device bytes", c->ctx->device.name);
    }
}

/* An external cache's K and V of layer l: the engine's device memory at
 * the layer's offsets.  The kernels read element pairs (half2, float2), so
 * each start must be a multiple of two elements (the offsets alone are
 * checked in common; the wrapped pointer is checked here). */
static fasa_status place_external(fasa_kv_cache *c, cuda_layer *lay, uint32_t l)
{
    const fasa_kv_ext *x = c->ext;
    char *k = (char *)x->k[l]->impl + x->k_offset[l], *v = (char *)x->v[l]->impl + x->v_offset[l];
    uintptr_t align = 2u * c->elem_size;
    if ((uintptr_t)k % align || (uintptr_t)v % align)
        return fasa__error(c->ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.external->%s[%u]: the device address plus the layer's offset is not a multiple of "
                           "%u bytes (two elements)", (uintptr_t)k % align ? "k" : "v", l, (unsigned)align);
    lay->k = k;
    lay->v = v;
    return FASA_OK;
}

static fasa_status alloc_layers(fasa_kv_cache *c, cuda_cache *cu)
{
    const fasa_model_shape *s = &c->shape;
    size_t kv = c->ext ? 0 : (size_t)s->n_kv_heads * c->capacity * s->head_dim * c->elem_size;
    size_t dom = (size_t)s->n_kv_heads * c->capacity * c->u_pad * c->elem_size;
    bool offload = c->placement == FASA_PLACEMENT_OFFLOAD;
    for (uint32_t l = 0; l < s->n_layers; l++) {
        cuda_layer *lay = &cu->layers[l];
        fasa_status st;
        if (c->ext) st = place_external(c, lay, l);
        else st = offload ? host_alloc(c, kv, "cache K", &lay->k_host, &lay->k) : dev_alloc(c, kv, "cache K", &lay->k);
        if (st == FASA_OK && !c->ext)
            st = offload ? host_alloc(c, kv, "cache V", &lay->v_host, &lay->v) : dev_alloc(c, kv, "cache V", &lay->v);
        if (st == FASA_OK && c->has_dims) st = dev_alloc(c, dom, "cache K_dom", &lay->kdom);
        if (st != FASA_OK) return st;
    }
    account(c, c->has_dims ? (uint64_t)s->n_layers * dom : 0, 2ull * s->n_layers * kv);
    return FASA_OK;
}

static fasa_status alloc_scratch(fasa_kv_cache *c, cuda_cache *cu)
{
    const fasa_model_shape *s = &c->shape;
    size_t hq = s->n_q_heads;
    cu->pmax = fasa_cu_plan_pmax(s->n_q_heads, s->head_dim);
    size_t sizes[7] = {hq * c->capacity * 4, hq * c->max_n_fac * 4, hq * FASA_TK_WORDS * 4, hq * 256 * 4,
                       hq * FASA_TK_MAX_TILES * 4, hq * cu->pmax * (s->head_dim + 2) * 4, hq * s->head_dim * 4};
    void **ptrs[7] = {(void **)&cu->scores, (void **)&cu->sel, (void **)&cu->tk_state, (void **)&cu->tk_hist,
                      (void **)&cu->tk_tiles, (void **)&cu->part, (void **)&cu->qf};
    const char *names[7] = {"TIP scores", "selection", "top-k state", "top-k histograms", "top-k tiles",
                            "attention partials", "widened queries"};
    uint64_t total = 0;
    for (int i = 0; i < 7; i++) {
        fasa_status st = dev_alloc(c, sizes[i], names[i], ptrs[i]);
        if (st != FASA_OK) return st;
        total += sizes[i];
    }
    c->scratch_bytes = total;
    return FASA_OK;
}

static fasa_status upload(fasa_kv_cache *c, void **dst, const void *src, size_t size, const char *what)
{
    cuda_ctx *cc = c->ctx->impl;
    fasa_status st = dev_alloc(c, size, what, dst);
    if (st != FASA_OK) return st;
    cudaError_t err = cudaMemcpyAsync(*dst, src, size, cudaMemcpyHostToDevice, cc->stream);
    return err == cudaSuccess ? FASA_OK : fasa__cuda_fail(c->ctx, err, "cudaMemcpyAsync (dims tables)");
}

static fasa_status upload_tables(fasa_kv_cache *c, cuda_cache *cu)
{
    if (!c->has_dims) return FASA_OK;
    const fasa_model_shape *s = &c->shape;
    size_t n_groups = (size_t)s->n_layers * s->n_kv_heads, n_heads = (size_t)s->n_layers * s->n_q_heads;
    fasa_status st = upload(c, (void **)&cu->usize, c->union_size, n_groups * 4, "dims table");
    if (st == FASA_OK) st = upload(c, (void **)&cu->udims, c->union_dims, n_groups * c->u_pad * 2, "dims table");
    if (st == FASA_OK) st = upload(c, (void **)&cu->tip_map, c->tip_map, n_heads * c->u_pad * 2, "dims table");
    return st;
}

static fasa_status create_locked(fasa_kv_cache *cache, cuda_cache *cu)
{
    cuda_ctx *cc = cache->ctx->impl;
    fasa_status st = alloc_layers(cache, cu);
    if (st == FASA_OK) st = alloc_scratch(cache, cu);
    if (st == FASA_OK) st = upload_tables(cache, cu);
    if (st == FASA_OK) st = fasa__cuda_fetch_create(cache);
    if (st == FASA_OK) {
        /* the uploads read host tables the caller may free; wait for them */
        cudaError_t err = cudaStreamSynchronize(cc->stream);
        if (err != cudaSuccess) st = fasa__cuda_fail(cache->ctx, err, "cudaStreamSynchronize (cache creation)");
    }
    return st;
}

fasa_status fasa__cuda_cache_create(fasa_kv_cache *cache)
{
    fasa_context *ctx = cache->ctx;
    cuda_cache *cu = fasa__alloc(ctx, sizeof *cu);
    if (!cu) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cuda: out of host memory");
    cache->impl = cu;
    cu->layers = fasa__alloc(ctx, cache->shape.n_layers * sizeof(cuda_layer));
    if (!cu->layers) {
        fasa__cuda_cache_destroy(cache);
        return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cuda: out of host memory");
    }
    int prev;
    fasa_status st = fasa__cuda_enter(ctx, &prev);
    if (st == FASA_OK) {
        st = create_locked(cache, cu);
        fasa__cuda_leave(prev);
    }
    if (st != FASA_OK) {
        char keep[FASA_ERROR_MAX]; /* destruction must not replace the message */
        snprintf(keep, sizeof keep, "%s", ctx->last_error);
        fasa__cuda_cache_destroy(cache);
        snprintf(ctx->last_error, sizeof ctx->last_error, "%s", keep);
        return st;
    }
    if (cache->placement == FASA_PLACEMENT_OFFLOAD)
        fasa__log(ctx, FASA_LOG_INFO, "cuda: FASA-M keeps K and V in mapped pinned host memory (%llu bytes); fetch %s%s",
                  (unsigned long long)(2ull * cache->shape.n_layers * cache->shape.n_kv_heads * cache->capacity *
                                       cache->shape.head_dim * cache->elem_size),
                  cache->fetch == FASA_FETCH_STAGED ? "staged" : "direct (rows read in place by fac)",
                  cache->row_cache_rows ? " with a row cache" : "");
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Reads                                                                     */
/* ------------------------------------------------------------------------ */

/* Tokens [first, first + n) of one layer as fp32 [n][Hkv][d]. */
fasa_status fasa__cuda_cache_read(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n, float *k,
                                  float *v)
{
    fasa_context *ctx = cache->ctx;
    cuda_ctx *cc = ctx->impl;
    const cuda_layer *lay = &((cuda_cache *)cache->impl)->layers[layer];
    uint32_t d = cache->shape.head_dim, hkv = cache->shape.n_kv_heads;
    size_t row = (size_t)d * cache->elem_size;
    unsigned char *tmp = fasa__alloc_aligned(ctx, (size_t)n * row, 64);
    if (!tmp) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cuda: out of host memory");
    int prev;
    fasa_status st = fasa__cuda_enter(ctx, &prev);
    /* rows of a head are every ts elements: d for libfasa's arrays, the engine's stride for external ones */
    size_t ts = cache->ext ? cache->ext->token_stride : d;
    size_t hs = cache->ext ? cache->ext->head_stride : (size_t)cache->capacity * d;
    for (uint32_t g = 0; st == FASA_OK && g < hkv; g++)
        for (int which = 0; which < 2 && st == FASA_OK; which++) {
            float *out = which ? v : k;
            if (!out) continue;
            const char *src = (const char *)(which ? lay->v : lay->k) + (g * hs + first * ts) * cache->elem_size;
            /* cudaMemcpyDefault: FASA-M rows live in mapped host memory */
            cudaError_t err = cudaMemcpy2DAsync(tmp, row, src, ts * cache->elem_size, row, n, cudaMemcpyDefault,
                                                cc->stream);
            if (err == cudaSuccess) err = cudaStreamSynchronize(cc->stream);
            if (err != cudaSuccess) {
                st = fasa__cuda_fail(ctx, err, "cudaMemcpyAsync (cache read)");
                break;
            }
            for (uint32_t t = 0; t < n; t++) {
                float *dst = out + ((size_t)t * hkv + g) * d;
                fasa__dtype_to_float_n(cache->dtype, tmp + (size_t)t * row, dst, d);
            }
        }
    fasa__cuda_leave(prev); /* -1 (nothing) when entering failed */
    fasa__free(ctx, tmp);
    return st;
}

/* The selection [n_rows][n_fac] and scores [n_rows][L] of the last step. */
fasa_status fasa__cuda_read_selection(fasa_kv_cache *cache, const fasa_step *step, int32_t *selected,
                                      uint32_t selected_stride, float *scores, uint32_t scores_stride)
{
    fasa_context *ctx = cache->ctx;
    cuda_ctx *cc = ctx->impl;
    const cuda_cache *cu = cache->impl;
    int prev;
    fasa_status st = fasa__cuda_enter(ctx, &prev);
    if (st != FASA_OK) return st;
    cudaError_t err = cudaSuccess;
    if (selected)
        err = cudaMemcpy2DAsync(selected, (size_t)selected_stride * 4, cu->sel, (size_t)cache->max_n_fac * 4,
                                (size_t)step->n_fac * 4, step->n_rows, cudaMemcpyDeviceToHost, cc->stream);
    if (err == cudaSuccess && scores)
        err = cudaMemcpy2DAsync(scores, (size_t)scores_stride * 4, cu->scores, (size_t)cache->capacity * 4,
                                (size_t)step->L * 4, step->n_rows, cudaMemcpyDeviceToHost, cc->stream);
    if (err == cudaSuccess) err = cudaStreamSynchronize(cc->stream);
    if (err != cudaSuccess) st = fasa__cuda_fail(ctx, err, "cudaMemcpy2DAsync (selection read-back)");
    fasa__cuda_leave(prev);
    return st;
}
