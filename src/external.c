/* External K and V (fasa_kv_cache_desc.external): validation of the
 * engine's layout and buffers, and fasa_kv_cache_sync.  The engine owns
 * and writes K and V; the cache keeps only K_dom, which sync recomputes on
 * the device for the tokens the engine says it wrote. */
#include "backend.h"

#include <string.h>

#define MAX_STRIDE 0xffffffffull /* kernels index strides with 32-bit words */

/* ------------------------------------------------------------------------ */
/* Layout                                                                    */
/* ------------------------------------------------------------------------ */

/* a * b + c, false on overflow of 64 bits. */
static bool mul_add(uint64_t a, uint64_t b, uint64_t c, uint64_t *out)
{
    if (b && a > (UINT64_MAX - c) / b) return false;
    *out = a * b + c;
    return true;
}

static fasa_status check_stride_values(fasa_context *ctx, const fasa_kv_external *e)
{
    const char *names[2] = {"token_stride", "head_stride"};
    uint64_t values[2] = {e->token_stride, e->head_stride};
    for (int i = 0; i < 2; i++) {
        if (values[i] % 2)
            return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                               "desc.external->%s: %llu is odd; strides must be even (the kernels read elements "
                               "in pairs)", names[i], (unsigned long long)values[i]);
        if (values[i] > MAX_STRIDE)
            return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                               "desc.external->%s: %llu is more than 2^32 - 1 elements", names[i],
                               (unsigned long long)values[i]);
    }
    return FASA_OK;
}

/* The rows of one layer must not overlap: the heads of a token nested in a
 * token stride (token-major) or the tokens of a head in a head stride
 * (head-major).  A stride that is never used is not checked. */
static fasa_status check_nesting(fasa_context *ctx, const fasa_kv_cache_desc *desc)
{
    const fasa_kv_external *e = desc->external;
    uint64_t d = desc->shape.head_dim, ts = e->token_stride, hs = e->head_stride;
    bool tokens = desc->capacity > 1, heads = desc->shape.n_kv_heads > 1;
    if (tokens && ts < d)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.external->token_stride: %llu elements is less than head_dim (%llu): the rows of "
                           "consecutive tokens would overlap", (unsigned long long)ts, (unsigned long long)d);
    if (heads && hs < d)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.external->head_stride: %llu elements is less than head_dim (%llu): the rows of "
                           "consecutive KV heads would overlap", (unsigned long long)hs, (unsigned long long)d);
    uint64_t heads_span = 0, tokens_span = 0; /* one token's heads, one head's tokens */
    bool ok_h = mul_add(desc->shape.n_kv_heads - 1, hs, d, &heads_span);
    bool ok_t = mul_add(desc->capacity - 1, ts, d, &tokens_span);
    bool token_major = !heads || (ok_h && ts >= heads_span);
    bool head_major = !tokens || (ok_t && hs >= tokens_span);
    if (token_major || head_major) return FASA_OK;
    return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                       "desc.external: token_stride %llu and head_stride %llu interleave rows of different tokens "
                       "and KV heads; token-major needs token_stride >= (n_kv_heads - 1) * head_stride + head_dim "
                       "(%u - 1) * %llu + %llu, head-major head_stride >= (capacity - 1) * token_stride + head_dim "
                       "(%u - 1) * %llu + %llu", (unsigned long long)ts, (unsigned long long)hs,
                       desc->shape.n_kv_heads, (unsigned long long)hs, (unsigned long long)d, desc->capacity,
                       (unsigned long long)ts, (unsigned long long)d);
}

/* Bytes from a layer's offset to the end of its last row; false when they
 * do not fit 64 bits (no buffer holds them then). */
static bool span_bytes(const fasa_kv_cache_desc *desc, uint32_t elem, uint64_t *out)
{
    const fasa_kv_external *e = desc->external;
    uint64_t heads = 0, elems = 0;
    return mul_add(desc->shape.n_kv_heads - 1, e->head_stride, desc->shape.head_dim, &heads) &&
           mul_add(desc->capacity - 1, e->token_stride, heads, &elems) && mul_add(elems, elem, 0, out);
}

/* A paged pool: block_size a power of two dividing the capacity. */
static fasa_status check_block_size(fasa_context *ctx, const fasa_kv_cache_desc *desc)
{
    uint32_t bs = desc->external->block_size;
    if (bs == 0) return FASA_OK;
    if (!ctx->ops->upload_table)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.external->block_size: the %s backend does not decode paged or shared caches",
                           ctx->ops->name);
    if (bs & (bs - 1))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.external->block_size: %u is not a power of two", bs);
    if (desc->capacity % bs)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.external->block_size: capacity %u is not a multiple of the block size %u",
                           desc->capacity, bs);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

static fasa_status check_buffer(fasa_context *ctx, const fasa_kv_cache_desc *desc, int which, uint32_t l,
                                uint32_t elem, uint64_t span)
{
    const fasa_kv_external *e = desc->external;
    const char *name = which ? "v" : "k";
    const fasa_buffer *b = which ? e->v[l] : e->k[l];
    const uint64_t *offs = which ? e->v_offset : e->k_offset;
    uint64_t off = offs ? offs[l] : 0;
    if (!b) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.external->%s[%u] is NULL", name, l);
    if (b->ctx != ctx)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.external->%s[%u] belongs to another context",
                           name, l);
    if (ctx->backend == FASA_BACKEND_CPU && !b->host)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.external->%s[%u] has no memory", name, l);
    if (off % (2 * elem))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.external->%s_offset[%u]: %llu is not a multiple of %u bytes (two elements)", name,
                           l, (unsigned long long)off, 2 * elem);
    if (off > b->size || span > b->size - off)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.external->%s[%u]: %llu bytes from offset %llu hold %u tokens x %u KV heads under "
                           "the strides, but the buffer has %llu", name, l, (unsigned long long)span,
                           (unsigned long long)off, desc->capacity, desc->shape.n_kv_heads,
                           (unsigned long long)b->size);
    return FASA_OK;
}

fasa_status fasa__external_check(fasa_context *ctx, const fasa_kv_cache_desc *desc)
{
    const fasa_kv_external *e = desc->external;
    if (desc->placement != FASA_PLACEMENT_DEVICE)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.external: FASA-M (placement OFFLOAD) keeps K and V in libfasa's host memory; a "
                           "cache over the engine's K and V needs placement FASA_PLACEMENT_DEVICE");
    if (!e->k) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.external->k is NULL");
    if (!e->v) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.external->v is NULL");
    fasa_status st = check_stride_values(ctx, e);
    if (st == FASA_OK) st = check_block_size(ctx, desc);
    if (st == FASA_OK) st = check_nesting(ctx, desc);
    uint32_t elem = fasa__dtype_size(desc->dtype);
    uint64_t span = 0;
    if (st == FASA_OK && !span_bytes(desc, elem, &span))
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                         "desc.external: %u tokens x %u KV heads under token_stride %llu and head_stride %llu span "
                         "more than 2^64 bytes", desc->capacity, desc->shape.n_kv_heads,
                         (unsigned long long)e->token_stride, (unsigned long long)e->head_stride);
    for (uint32_t l = 0; st == FASA_OK && l < desc->shape.n_layers; l++)
        for (int which = 0; st == FASA_OK && which < 2; which++) st = check_buffer(ctx, desc, which, l, elem, span);
    return st;
}

fasa_status fasa__external_copy(fasa_kv_cache *c, const fasa_kv_cache_desc *desc)
{
    const fasa_kv_external *e = desc->external;
    uint32_t nl = c->shape.n_layers;
    fasa_kv_ext *x = fasa__alloc(c->ctx, sizeof *x);
    if (x) {
        c->ext = x;
        x->k = fasa__alloc(c->ctx, nl * sizeof *x->k);
        x->v = fasa__alloc(c->ctx, nl * sizeof *x->v);
        x->k_offset = fasa__alloc(c->ctx, nl * sizeof *x->k_offset);
        x->v_offset = fasa__alloc(c->ctx, nl * sizeof *x->v_offset);
    }
    if (!x || !x->k || !x->v || !x->k_offset || !x->v_offset)
        return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cache: out of host memory");
    x->token_stride = e->token_stride;
    x->head_stride = e->head_stride;
    x->paged = e->block_size != 0;
    x->block_shift = e->block_size ? (uint32_t)__builtin_ctz(e->block_size) : 0;
    for (uint32_t l = 0; l < nl; l++) {
        x->k[l] = e->k[l];
        x->v[l] = e->v[l];
        x->k_offset[l] = e->k_offset ? e->k_offset[l] : 0;
        x->v_offset[l] = e->v_offset ? e->v_offset[l] : 0;
    }
    return FASA_OK;
}

static void free_block_tables(fasa_kv_cache *c)
{
    for (uint32_t i = 0; i < c->n_retired; i++) fasa__buffer_free(c->retired[i]);
    fasa__free(c->ctx, c->retired);
    fasa__buffer_free(c->tables);
    c->retired = NULL;
    c->n_retired = 0;
    c->tables = NULL;
    c->tables_cap = c->tables_used = 0;
}

void fasa__external_free(fasa_kv_cache *c)
{
    free_block_tables(c);
    if (!c->ext) return;
    fasa__free(c->ctx, c->ext->k);
    fasa__free(c->ctx, c->ext->v);
    fasa__free(c->ctx, c->ext->k_offset);
    fasa__free(c->ctx, c->ext->v_offset);
    fasa__free(c->ctx, c->ext);
    c->ext = NULL;
}

/* ------------------------------------------------------------------------ */
/* Block tables of paged caches                                              */
/* ------------------------------------------------------------------------ */

/* A larger table buffer; the old one may still be read by a stream
 * recorded earlier (an embedding host's command buffer), so it is only
 * retired.  Sizes double, so the retired ones total less than the live. */
static fasa_status grow_tables(fasa_kv_cache *c, uint64_t need)
{
    fasa_context *ctx = c->ctx;
    uint64_t cap = c->tables_cap ? c->tables_cap : 1024;
    while (cap < need) cap *= 2;
    if (cap > UINT32_MAX)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "fasa_decode: the block tables of one call need %llu entries (at most 2^32 - 1)",
                           (unsigned long long)need);
    fasa_buffer **retired = c->retired;
    if (c->tables) {
        retired = fasa__alloc(ctx, (c->n_retired + 1) * sizeof *retired);
        if (!retired) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "fasa_decode: out of host memory");
        if (c->n_retired) memcpy(retired, c->retired, c->n_retired * sizeof *retired);
    }
    fasa_buffer *buf = NULL;
    fasa_status st = fasa__buffer_new(ctx, cap * 4, &buf);
    if (st != FASA_OK) {
        if (retired != c->retired) fasa__free(ctx, retired);
        return st;
    }
    if (c->tables) {
        retired[c->n_retired++] = c->tables;
        fasa__free(ctx, c->retired);
        c->retired = retired;
    }
    c->tables = buf;
    c->tables_cap = (uint32_t)cap;
    c->scratch_bytes += cap * 4;
    return FASA_OK;
}

fasa_status fasa__tables_reserve(fasa_kv_cache *c, uint32_t n, uint32_t *first)
{
    uint64_t need = (uint64_t)c->tables_used + n;
    if (need > c->tables_cap) {
        fasa_status st = grow_tables(c, need);
        if (st != FASA_OK) return st;
    }
    *first = c->tables_used;
    c->tables_used = (uint32_t)need;
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Sync                                                                      */
/* ------------------------------------------------------------------------ */

fasa_status fasa__sync_check(fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n, const char *fn)
{
    fasa_context *ctx = c->ctx;
    if (!c->ext)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: the cache owns its K and V (no desc.external); write them with fasa_kv_cache_append",
                           fn);
    if (layer >= c->shape.n_layers)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: layer %u out of range (n_layers %u)", fn, layer,
                           c->shape.n_layers);
    if (n == 0) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: n is 0", fn);
    if (first > c->length[layer] && !c->ext->paged) /* a pool's blocks are written anywhere */
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: first (%u) is past the %u tokens of layer %u: tokens [%u, %u) would be left unsynced",
                           fn, first, c->length[layer], layer, c->length[layer], first);
    if (n > c->capacity - first)
        return fasa__error(ctx, FASA_ERROR_CAPACITY, "%s: tokens [%u, %llu) of layer %u exceed the capacity (%u)", fn,
                           first, (unsigned long long)first + n, layer, c->capacity);
    return FASA_OK;
}

/* `wait`: finish before returning (all but the enqueue-only calls).  A
 * cache without a calibration has no K_dom: only the length moves. */
static fasa_status run_sync(fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n, bool wait)
{
    fasa_context *ctx = c->ctx;
    if (!c->has_dims) return FASA_OK;
    fasa_exec *exec = NULL;
    fasa_status st = ctx->ops->exec_begin(ctx, &exec);
    if (st != FASA_OK) return st;
    st = ctx->ops->sync(exec, c, layer, first, n);
    fasa_status end = ctx->ops->exec_end(ctx, exec, wait);
    return st != FASA_OK ? st : end;
}

fasa_status fasa_kv_cache_sync(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    fasa_status st = fasa__sync_check(cache, layer, first, n, "fasa_kv_cache_sync");
    if (st == FASA_OK) st = run_sync(cache, layer, first, n, true);
    if (st == FASA_OK) cache->length[layer] = fasa__synced_length(cache, layer, first, n);
    fasa__unlock(cache->ctx);
    return st;
}

fasa_status fasa__enqueue_sync(fasa_backend backend, const char *fn, fasa_kv_cache *cache, uint32_t layer,
                               uint32_t first, uint32_t n)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    fasa_status st = fasa__need_backend(cache->ctx, backend, fn);
    if (st == FASA_OK) st = fasa__sync_check(cache, layer, first, n, fn);
    if (st == FASA_OK) st = run_sync(cache, layer, first, n, false);
    if (st == FASA_OK) cache->length[layer] = fasa__synced_length(cache, layer, first, n);
    fasa__unlock(cache->ctx);
    return st;
}
