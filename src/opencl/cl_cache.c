/* OpenCL cache storage: K, V and K_dom of every layer as a table of chunks
 * (KV heads x token ranges, each chunk one cl_mem per array) sized so that
 * no allocation exceeds CL_DEVICE_MAX_MEM_ALLOC_SIZE (nor 1 GiB, GPU_NOTES
 * §4 rule 7), plus the per-step scratch, likewise split into blocks of KV
 * heads.  In the common case a layer is one chunk and the scratch is one
 * block, so every kernel is one dispatch. */
#include "cl_internal.h"

#include <string.h>

#define CHUNK_CAP (1ull << 30)
#define PART_CAP (64ull << 20)
#define MAX_TILES 1024u

uint64_t fasa__cl_alloc_limit(const cl_ctx *cc)
{
    uint64_t lim = cc->max_alloc < CHUNK_CAP ? cc->max_alloc : CHUNK_CAP;
    if (cc->alloc_limit && cc->alloc_limit < lim) lim = cc->alloc_limit;
    return lim;
}

static uint64_t alloc_limit(const cl_ctx *cc) { return fasa__cl_alloc_limit(cc); }

/* A buffer filled with the 4-byte pattern (contents are deterministic, and
 * lazy drivers allocate now); host is the memory of a USE_HOST_PTR buffer. */
static fasa_status new_mem_at(fasa_kv_cache *c, cl_mem_flags flags, uint64_t size, const char *what,
                              void *host, uint32_t pattern, cl_mem *out)
{
    cl_ctx *cc = c->ctx->impl;
    cl_int err = CL_SUCCESS;
    if (size == 0) size = 4;
    if (size > cc->max_alloc) /* never reached after check_request; a driver must not see it either */
        return fasa__error(c->ctx, FASA_ERROR_OUT_OF_DEVICE_MEMORY,
                           "opencl: %s requests %llu bytes in one allocation, more than CL_DEVICE_MAX_MEM_ALLOC_SIZE "
                           "(%llu bytes)", what, (unsigned long long)size, (unsigned long long)cc->max_alloc);
    *out = fasa__cl_create_buffer(c->ctx, CL_MEM_READ_WRITE | flags, size, host, &err);
    if (!*out)
        return fasa__error(c->ctx, fasa__cl_status(err),
                           "opencl: cannot allocate %s (%llu bytes): clCreateBuffer: %s", what,
                           (unsigned long long)size, fasa__cl_error_name(err));
    cl_uint pat = pattern;
    err = clEnqueueFillBuffer(cc->queue, *out, &pat, size % 4 ? 1 : 4, 0, size, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return fasa__error(c->ctx, FASA_ERROR_OUT_OF_DEVICE_MEMORY,
                           "opencl: cannot initialise %s (%llu bytes): clEnqueueFillBuffer: %s", what,
                           (unsigned long long)size, fasa__cl_error_name(err));
    return FASA_OK;
}

fasa_status fasa__cl_new_mem(fasa_kv_cache *c, uint64_t size, const char *what, uint32_t pattern, cl_mem *out)
{
    return new_mem_at(c, 0, size, what, NULL, pattern, out);
}

static fasa_status new_mem(fasa_kv_cache *c, cl_mem_flags flags, uint64_t size, const char *what,
                           cl_mem *out)
{
    return new_mem_at(c, flags, size, what, NULL, 0, out);
}

/* FASA-M K or V storage in host memory: CL_MEM_ALLOC_HOST_PTR (the runtime
 * allocates it), or with FASA_CL_OFFLOAD_USE_HOST_PTR our own page-aligned
 * allocation wrapped by CL_MEM_USE_HOST_PTR (freed in cache_destroy once
 * the queue has finished).  docs/OPENCL.md: what drivers do with each. */
static fasa_status host_mem(fasa_kv_cache *c, uint64_t size, const char *what, void **host, cl_mem *out)
{
    cl_ctx *cc = c->ctx->impl;
    if (!(cc->offload_flags & FASA_CL_OFFLOAD_USE_HOST_PTR))
        return new_mem_at(c, CL_MEM_ALLOC_HOST_PTR, size, what, NULL, 0, out);
    size_t bytes = (size_t)(size ? (size + 4095) / 4096 * 4096 : 4096);
    *host = fasa__alloc_aligned(c->ctx, bytes, 4096);
    if (!*host)
        return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: cannot allocate %s (%llu bytes of host memory)",
                           what, (unsigned long long)size);
    return new_mem_at(c, CL_MEM_USE_HOST_PTR, size ? size : 4, what, *host, 0, out);
}

static fasa_status upload(fasa_kv_cache *c, cl_mem m, const void *src, size_t size)
{
    cl_ctx *cc = c->ctx->impl;
    cl_int err = clEnqueueWriteBuffer(cc->queue, m, CL_TRUE, 0, size, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? FASA_OK : fasa__cl_fail(c->ctx, err, "clEnqueueWriteBuffer (dims tables)");
}

static void release(cl_mem *m)
{
    if (*m) clReleaseMemObject(*m);
    *m = NULL;
}

void fasa__cl_cache_destroy(fasa_kv_cache *cache)
{
    cl_cache *cl = cache->impl;
    if (!cl) return;
    fasa_context *ctx = cache->ctx;
    /* no clFinish: OpenCL frees a released cl_mem only once the commands
     * using it have finished, so a host queue is not blocked here (except
     * for USE_HOST_PTR storage below, whose memory is ours to free) */
    fasa__cl_fetch_destroy(cache);
    size_t n = (size_t)cache->shape.n_layers * cl->n_chunks;
    bool own_host = false;
    for (size_t i = 0; cl->chunks && i < n; i++) {
        release(&cl->chunks[i].k);
        release(&cl->chunks[i].v);
        release(&cl->chunks[i].kdom);
        own_host |= cl->chunks[i].k_host || cl->chunks[i].v_host;
    }
    if (own_host) clFinish(((cl_ctx *)ctx->impl)->queue);
    for (size_t i = 0; own_host && i < n; i++) {
        fasa__free(ctx, cl->chunks[i].k_host);
        fasa__free(ctx, cl->chunks[i].v_host);
    }
    for (uint32_t b = 0; cl->sblocks && b < cl->n_sblocks; b++) {
        cl_sblock *sb = &cl->sblocks[b];
        release(&sb->scores);
        release(&sb->hist);
        release(&sb->state);
        release(&sb->lists);
        release(&sb->tiles);
    }
    cl_mem *single[] = {&cl->usize, &cl->udims, &cl->tip_map, &cl->qm, &cl->qf, &cl->sel, &cl->part, &cl->dummy,
                       &cl->bscratch, &cl->bparams};
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++) release(single[i]);
    fasa__free(ctx, cl->chunks);
    fasa__free(ctx, cl->sblocks);
    fasa__free(ctx, cl);
    cache->impl = NULL;
}

/* Chunk geometry: all KV heads of a layer in one chunk when they fit, else
 * groups of heads, else one head split into token ranges. */
static fasa_status plan_chunks(fasa_kv_cache *c, cl_cache *cl, uint32_t *hpc)
{
    const fasa_model_shape *s = &c->shape;
    cl_ctx *cc = c->ctx->impl;
    uint64_t lim = alloc_limit(cc);
    uint32_t width = s->head_dim > c->u_pad ? s->head_dim : c->u_pad;
    if (c->ext) width = c->u_pad > 2 ? c->u_pad : 2; /* K_dom only: the engine holds K and V */
    uint64_t row = (uint64_t)width * c->elem_size, per_head = row * c->capacity;
    uint32_t tpc = c->capacity;
    if (row > lim)
        return fasa__error(c->ctx, FASA_ERROR_UNSUPPORTED,
                           "opencl: one %llu-byte cache row exceeds the allocation limit (%llu bytes)",
                           (unsigned long long)row, (unsigned long long)lim);
    if ((uint64_t)s->n_kv_heads * per_head <= lim) *hpc = s->n_kv_heads;
    else if (per_head <= lim) *hpc = (uint32_t)(lim / per_head);
    else {
        *hpc = 1;
        tpc = (uint32_t)(lim / row);
    }
    uint32_t n_h = (s->n_kv_heads + *hpc - 1) / *hpc;
    cl->n_tchunks = (c->capacity + tpc - 1) / tpc;
    cl->tokens_per_chunk = tpc;
    cl->n_chunks = n_h * cl->n_tchunks;
    return FASA_OK;
}

/* Resident bytes: FASA-M K and V count as host bytes only where they can
 * live outside device memory.  Unified-memory devices (PoCL's CPU device,
 * integrated GPUs) have one memory, and NVIDIA's OpenCL keeps
 * ALLOC_HOST_PTR buffers in VRAM (GPU_NOTES §2, measured on the H200; its
 * USE_HOST_PTR is unmeasured, so counted the same way): nothing is saved
 * there, and the note is logged once per context. */
static void account_storage(fasa_kv_cache *c, uint64_t kv_bytes, uint64_t dom_bytes)
{
    cl_ctx *cc = c->ctx->impl;
    bool offload = c->placement == FASA_PLACEMENT_OFFLOAD;
    bool saves = offload && ((cc->offload_flags & FASA_CL_OFFLOAD_AS_DISCRETE) || (!cc->unified && !cc->nvidia));
    c->device_bytes = dom_bytes + (saves ? 0 : kv_bytes);
    c->host_bytes = saves ? kv_bytes : 0;
    if (!offload || saves || cc->logged_unified) return;
    cc->logged_unified = true;
    if (cc->nvidia)
        fasa__log(c->ctx, FASA_LOG_WARN,
                  "opencl: FASA-M on '%s': NVIDIA's OpenCL keeps host-pointer buffers in device memory "
                  "(GPU_NOTES §2), so no device memory is saved; K and V are counted as device bytes",
                  cc->device_name);
    else
        fasa__log(c->ctx, FASA_LOG_INFO,
                  "opencl: FASA-M on '%s': host and device share one memory, so no device memory is saved; "
                  "K and V are counted as device bytes (the transfer statistics still count rows)",
                  cc->device_name);
}

static fasa_status alloc_storage(fasa_kv_cache *c, cl_cache *cl, uint32_t hpc)
{
    const fasa_model_shape *s = &c->shape;
    uint32_t n_h = (s->n_kv_heads + hpc - 1) / hpc;
    cl->chunks = fasa__alloc(c->ctx, (size_t)s->n_layers * cl->n_chunks * sizeof(cl_chunk));
    if (!cl->chunks) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    bool offload = c->placement == FASA_PLACEMENT_OFFLOAD;
    uint64_t kv_bytes = 0, dom_bytes = 0;
    for (uint32_t l = 0; l < s->n_layers; l++)
        for (uint32_t tc = 0; tc < cl->n_tchunks; tc++)
            for (uint32_t hc = 0; hc < n_h; hc++) {
                cl_chunk *ch = &cl->chunks[(size_t)l * cl->n_chunks + tc * n_h + hc];
                ch->g0 = hc * hpc;
                ch->ng = s->n_kv_heads - ch->g0 < hpc ? s->n_kv_heads - ch->g0 : hpc;
                ch->t0 = tc * cl->tokens_per_chunk;
                ch->nt = c->capacity - ch->t0 < cl->tokens_per_chunk ? c->capacity - ch->t0 : cl->tokens_per_chunk;
                ch->tc = tc;
                uint64_t rows = (uint64_t)ch->ng * ch->nt;
                uint64_t kv = c->ext ? 0 : rows * s->head_dim * c->elem_size, dom = rows * c->u_pad * c->elem_size;
                fasa_status st = FASA_OK;
                if (!c->ext) /* an external cache reads the engine's K and V */
                    st = offload ? host_mem(c, kv, "cache K", &ch->k_host, &ch->k)
                                 : new_mem(c, 0, kv, "cache K", &ch->k);
                if (st == FASA_OK && !c->ext)
                    st = offload ? host_mem(c, kv, "cache V", &ch->v_host, &ch->v)
                                 : new_mem(c, 0, kv, "cache V", &ch->v);
                if (st == FASA_OK && c->has_dims) st = new_mem(c, 0, dom, "cache K_dom", &ch->kdom);
                if (st != FASA_OK) return st;
                kv_bytes += 2 * kv;
                dom_bytes += c->has_dims ? dom : 0;
            }
    account_storage(c, kv_bytes, dom_bytes);
    return FASA_OK;
}

/* Scratch sizes fixed by the shape: candidate list capacity, tiles, and
 * the attention partial slots per head (pmax; too few for the token
 * chunks is reported by alloc_scratch). */
static void plan_scratch(fasa_kv_cache *c, cl_cache *cl)
{
    const fasa_model_shape *s = &c->shape;
    cl_ctx *cc = c->ctx->impl;
    uint32_t cap = c->capacity;
    cl->list_cap = cap < 4096u ? cap : ((cap + 3) / 4 > 4096u ? (cap + 3) / 4 : 4096u);
    cl->max_tiles = MAX_TILES;
    uint64_t per_slot = (uint64_t)s->n_q_heads * (s->head_dim + 2) * 4;
    uint64_t lim = alloc_limit(cc), part_lim = lim < PART_CAP ? lim : PART_CAP;
    uint64_t pmax = part_lim / per_slot;
    cl->pmax = (uint32_t)(pmax < cc->tune.red_pmax ? pmax : cc->tune.red_pmax);
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Everything the cache will allocate, against the device's limits, before
 * the first buffer exists (docs/OPENCL.md §2, "Memory limits"). */
static fasa_status check_request(fasa_kv_cache *c, cl_cache *cl, uint32_t hpc)
{
    const fasa_model_shape *s = &c->shape;
    cl_ctx *cc = c->ctx->impl;
    uint64_t lim = alloc_limit(cc), elem = c->elem_size, cap = c->capacity, hq = s->n_q_heads;
    uint64_t rows = fasa__sat_mul((uint64_t)s->n_layers * s->n_kv_heads, cap); /* token rows per array */
    uint64_t chunk_rows = min_u64(hpc, s->n_kv_heads) * cl->tokens_per_chunk; /* rows of the largest chunk */
    cl_request r = {0};
    /* K and V: host memory only where FASA-M really moves them out of the device (account_storage) */
    bool kv_host = c->placement == FASA_PLACEMENT_OFFLOAD && !cc->unified && !cc->nvidia;
    uint64_t kv = c->ext ? 0 : fasa__sat_mul(rows, (uint64_t)s->head_dim * elem); /* external: the engine's */
    fasa__cl_request_add(&r, fasa__sat_mul(kv, 2), c->ext ? 0 : chunk_rows * s->head_dim * elem, kv_host);
    if (c->has_dims)
        fasa__cl_request_add(&r, fasa__sat_mul(rows, (uint64_t)c->u_pad * elem), chunk_rows * c->u_pad * elem, false);
    /* per-step scratch of every selection row, split into blocks within lim */
    uint64_t per_row = cap * 4 + 256 * 4 + 16 * 4 + 2ull * cl->list_cap * 4 + cl->max_tiles * 2ull * 4;
    uint64_t scratch = fasa__sat_mul(hq, per_row);
    fasa__cl_request_add(&r, scratch, min_u64(scratch, lim), false);
    uint64_t width = s->head_dim > c->u_pad ? s->head_dim : c->u_pad;
    uint64_t singles[4] = {hq * width * 4, hq * c->max_n_fac * 4, hq * (s->head_dim + 2) * 4 * cl->pmax,
                           hq * s->head_dim * 4};
    for (int i = 0; i < 4; i++) fasa__cl_request_add(&r, singles[i], singles[i], false);
    if (c->has_dims) {
        uint64_t groups = (uint64_t)s->n_layers * s->n_kv_heads, heads = (uint64_t)s->n_layers * hq;
        uint64_t tables[3] = {groups * 4, groups * c->u_pad * 2, heads * c->u_pad * 2};
        for (int i = 0; i < 3; i++) fasa__cl_request_add(&r, tables[i], tables[i], false);
    }
    uint64_t fetch = fasa__cl_fetch_bytes(c);
    fasa__cl_request_add(&r, fetch, min_u64(fetch, lim), false);
    return fasa__cl_check_request(c->ctx, &r, "the KV cache");
}

static fasa_status alloc_scratch(fasa_kv_cache *c, cl_cache *cl)
{
    const fasa_model_shape *s = &c->shape;
    uint64_t lim = alloc_limit(c->ctx->impl);
    uint32_t G = c->group, cap = c->capacity, d = s->head_dim;
    uint64_t per_head = (uint64_t)G * cap * 4, lists_per_head = (uint64_t)G * 2 * cl->list_cap * 4;
    uint64_t worst = per_head > lists_per_head ? per_head : lists_per_head;
    uint32_t hpb = worst <= lim ? (uint32_t)(lim / worst) : 0;
    if (hpb == 0)
        return fasa__error(c->ctx, FASA_ERROR_UNSUPPORTED,
                           "opencl: capacity %u: the %u score rows of one KV head need %llu bytes, more "
                           "than the allocation limit (%llu bytes)", cap, G,
                           (unsigned long long)worst, (unsigned long long)lim);
    if (hpb > s->n_kv_heads) hpb = s->n_kv_heads;
    cl->n_sblocks = (s->n_kv_heads + hpb - 1) / hpb;
    cl->sblocks = fasa__alloc(c->ctx, cl->n_sblocks * sizeof(cl_sblock));
    if (!cl->sblocks) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    uint64_t scratch = 0;
    for (uint32_t b = 0; b < cl->n_sblocks; b++) {
        cl_sblock *sb = &cl->sblocks[b];
        sb->g0 = b * hpb;
        sb->ng = s->n_kv_heads - sb->g0 < hpb ? s->n_kv_heads - sb->g0 : hpb;
        uint64_t rows = (uint64_t)sb->ng * G;
        uint64_t sizes[5] = {rows * cap * 4, rows * 256 * 4, rows * 16 * 4, rows * 2 * cl->list_cap * 4,
                             rows * cl->max_tiles * 2 * 4};
        cl_mem *mems[5] = {&sb->scores, &sb->hist, &sb->state, &sb->lists, &sb->tiles};
        for (int i = 0; i < 5; i++) {
            fasa_status st = new_mem(c, 0, sizes[i], "top-k scratch", mems[i]);
            if (st != FASA_OK) return st;
            scratch += sizes[i];
        }
    }
    /* partials (plan_scratch): every token chunk needs at least one slot per head */
    uint64_t per_slot = (uint64_t)s->n_q_heads * (d + 2) * 4;
    if (cl->pmax < cl->n_tchunks)
        return fasa__error(c->ctx, FASA_ERROR_UNSUPPORTED,
                           "opencl: the cache needs %u token chunks per head but the attention "
                           "partials hold only %u", cl->n_tchunks, cl->pmax);
    uint32_t width = d > c->u_pad ? d : c->u_pad;
    uint64_t qm = (uint64_t)s->n_q_heads * width * 4, sel = (uint64_t)s->n_q_heads * c->max_n_fac * 4;
    uint64_t part = per_slot * cl->pmax, qf = (uint64_t)s->n_q_heads * d * 4;
    fasa_status st = new_mem(c, 0, qm, "masked queries", &cl->qm);
    if (st == FASA_OK) st = new_mem(c, 0, qf, "widened queries", &cl->qf);
    if (st == FASA_OK) st = new_mem(c, 0, sel, "selection", &cl->sel);
    if (st == FASA_OK) st = new_mem(c, 0, part, "attention partials", &cl->part);
    if (st == FASA_OK) st = new_mem(c, 0, 64, "placeholder", &cl->dummy);
    c->scratch_bytes = scratch + qm + qf + sel + part;
    return st;
}

static fasa_status upload_tables(fasa_kv_cache *c, cl_cache *cl)
{
    if (!c->has_dims) return FASA_OK;
    const fasa_model_shape *s = &c->shape;
    size_t n_groups = (size_t)s->n_layers * s->n_kv_heads, n_heads = (size_t)s->n_layers * s->n_q_heads;
    size_t sizes[3] = {n_groups * 4, n_groups * c->u_pad * 2, n_heads * c->u_pad * 2};
    uint64_t lim = alloc_limit(c->ctx->impl);
    for (int i = 0; i < 3; i++)
        if (sizes[i] > lim)
            return fasa__error(c->ctx, FASA_ERROR_UNSUPPORTED,
                               "opencl: the dims tables (%zu bytes) exceed the allocation limit", sizes[i]);
    fasa_status st = new_mem(c, 0, sizes[0], "dims table", &cl->usize);
    if (st == FASA_OK) st = new_mem(c, 0, sizes[1], "dims table", &cl->udims);
    if (st == FASA_OK) st = new_mem(c, 0, sizes[2], "dims table", &cl->tip_map);
    if (st == FASA_OK) st = upload(c, cl->usize, c->union_size, sizes[0]);
    if (st == FASA_OK) st = upload(c, cl->udims, c->union_dims, sizes[1]);
    if (st == FASA_OK) st = upload(c, cl->tip_map, c->tip_map, sizes[2]);
    return st;
}

/* The kernels index the engine's K and V in elements from the start of
 * their cl_mem, reading pairs: the wrap's offset plus the layer's must be
 * a multiple of two elements (the layer's alone is checked in common). */
static fasa_status check_external(fasa_kv_cache *c)
{
    for (uint32_t l = 0; c->ext && l < c->shape.n_layers; l++)
        for (int which = 0; which < 2; which++) {
            const fasa_buffer *b = which ? c->ext->v[l] : c->ext->k[l];
            uint64_t at = ((const cl_buf *)b->impl)->offset + (which ? c->ext->v_offset[l] : c->ext->k_offset[l]);
            if (at % (2 * c->elem_size))
                return fasa__error(c->ctx, FASA_ERROR_INVALID_ARGUMENT,
                                   "desc.external->%s[%u]: the wrapped cl_mem offset plus the layer's offset (%llu "
                                   "bytes) is not a multiple of %u bytes (two elements)", which ? "v" : "k", l,
                                   (unsigned long long)at, 2 * c->elem_size);
        }
    return FASA_OK;
}

fasa_status fasa__cl_cache_create(fasa_kv_cache *cache)
{
    fasa_context *ctx = cache->ctx;
    cl_ctx *cc = ctx->impl;
    cl_cache *cl = fasa__alloc(ctx, sizeof *cl);
    if (!cl) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    cache->impl = cl;
    uint32_t hpc = 1;
    fasa_status st = check_external(cache);
    /* the program of the storage dtype (bf16: built with the first bf16 cache) */
    if (st == FASA_OK) st = fasa__cl_program_ensure(ctx, cc, cache->dtype);
    if (st == FASA_OK && cache->dtype == FASA_DTYPE_BF16) cc->want_bf16 = true;
    if (st == FASA_OK) st = plan_chunks(cache, cl, &hpc);
    if (st == FASA_OK) plan_scratch(cache, cl);
    if (st == FASA_OK) st = check_request(cache, cl, hpc);
    if (st == FASA_OK) st = alloc_storage(cache, cl, hpc);
    if (st == FASA_OK) st = alloc_scratch(cache, cl);
    if (st == FASA_OK) st = upload_tables(cache, cl);
    if (st == FASA_OK) st = fasa__cl_fetch_create(cache);
    if (st == FASA_OK) {
        cl_int err = clFinish(cc->queue);
        if (err != CL_SUCCESS) st = fasa__cl_fail(ctx, err, "clFinish (cache allocation)");
    }
    if (st != FASA_OK) {
        fasa__cl_cache_destroy(cache);
        return st;
    }
    if (cl->n_chunks > 1 || cl->n_sblocks > 1)
        fasa__log(ctx, FASA_LOG_INFO, "opencl: cache split into %u chunks per layer (%u token chunks of %u) "
                  "and %u scratch blocks", cl->n_chunks, cl->n_tchunks, cl->tokens_per_chunk, cl->n_sblocks);
    return FASA_OK;
}

/* Rows [first, first + n) of every KV head of an external cache's K (or
 * V), read from the engine's cl_mem through its layout: one rectangle per
 * head (a row of d elements every token_stride), into out [n][Hkv][d]. */
static fasa_status read_external(fasa_kv_cache *c, int which, uint32_t layer, uint32_t first, uint32_t n, float *out,
                                 unsigned char *tmp)
{
    cl_ctx *cc = c->ctx->impl;
    const fasa_kv_ext *x = c->ext;
    const fasa_buffer *b = which ? x->v[layer] : x->k[layer];
    const cl_buf *cb = b->impl;
    uint32_t d = c->shape.head_dim, hkv = c->shape.n_kv_heads, es = c->elem_size;
    size_t row = (size_t)d * es, pitch = (size_t)x->token_stride * es;
    for (uint32_t g = 0; g < hkv; g++) {
        size_t origin[3] = {(size_t)(cb->offset + (which ? x->v_offset[layer] : x->k_offset[layer]) +
                                     (first * x->token_stride + g * x->head_stride) * es), 0, 0};
        size_t zero[3] = {0, 0, 0}, region[3] = {row, n, 1};
        cl_int err = clEnqueueReadBufferRect(cc->queue, cb->mem, CL_TRUE, origin, zero, region, pitch, 0, row, 0,
                                             tmp, 0, NULL, NULL);
        if (err != CL_SUCCESS) return fasa__cl_fail(c->ctx, err, "clEnqueueReadBufferRect (external cache read)");
        for (uint32_t t = 0; t < n; t++) {
            float *dst = out + ((size_t)t * hkv + g) * d;
            fasa__dtype_to_float_n(c->dtype, tmp + (size_t)t * row, dst, d);
        }
    }
    return FASA_OK;
}

/* Tokens [first, first+n) of one layer as fp32 [n][Hkv][d]. */
fasa_status fasa__cl_cache_read(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n,
                                float *k, float *v)
{
    if (cache->ext) {
        unsigned char *buf = fasa__alloc_aligned(cache->ctx, (size_t)n * cache->shape.head_dim * cache->elem_size, 64);
        if (!buf) return fasa__error(cache->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
        fasa_status st = k ? read_external(cache, 0, layer, first, n, k, buf) : FASA_OK;
        if (st == FASA_OK && v) st = read_external(cache, 1, layer, first, n, v, buf);
        fasa__free(cache->ctx, buf);
        return st;
    }
    fasa_context *ctx = cache->ctx;
    cl_ctx *cc = ctx->impl;
    cl_cache *cl = cache->impl;
    uint32_t d = cache->shape.head_dim, hkv = cache->shape.n_kv_heads;
    size_t row = (size_t)d * cache->elem_size;
    uint32_t span = n < cl->tokens_per_chunk ? n : cl->tokens_per_chunk;
    unsigned char *tmp = fasa__alloc_aligned(ctx, (size_t)span * row, 64);
    if (!tmp) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; st == FASA_OK && i < cl->n_chunks; i++) {
        const cl_chunk *ch = &cl->chunks[(size_t)layer * cl->n_chunks + i];
        uint32_t a = first > ch->t0 ? first : ch->t0;
        uint32_t b = first + n < ch->t0 + ch->nt ? first + n : ch->t0 + ch->nt;
        if (a >= b) continue;
        for (uint32_t g = ch->g0; st == FASA_OK && g < ch->g0 + ch->ng; g++)
            for (int which = 0; which < 2 && st == FASA_OK; which++) {
                float *out = which ? v : k;
                if (!out) continue;
                size_t off = ((size_t)(g - ch->g0) * ch->nt + (a - ch->t0)) * row;
                cl_int err = clEnqueueReadBuffer(cc->queue, which ? ch->v : ch->k, CL_TRUE, off,
                                                 (size_t)(b - a) * row, tmp, 0, NULL, NULL);
                if (err != CL_SUCCESS) {
                    st = fasa__cl_fail(ctx, err, "clEnqueueReadBuffer (cache read)");
                    break;
                }
                for (uint32_t t = a; t < b; t++) {
                    float *dst = out + ((size_t)(t - first) * hkv + g) * d;
                    const unsigned char *src = tmp + (size_t)(t - a) * row;
                    fasa__dtype_to_float_n(cache->dtype, src, dst, d);
                }
            }
    }
    fasa__free(ctx, tmp);
    return st;
}
