/* The KV cache: validation, the dominant-dims tables, appends. */
#include "backend.h"

#include <math.h>
#include <string.h>

#define MAX_CAPACITY (1u << 30)
#define STAGE_TOKENS 1024u       /* host appends on GPU backends go through this many tokens at a time */

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */
/* ------------------------------------------------------------------------ */

static fasa_status check_calibration_match(fasa_context *ctx, const fasa_model_shape *s,
                                           const fasa_calibration *cal)
{
    const fasa_model_shape *c = &cal->shape;
    const char *field = NULL;
    uint32_t have = 0, want = 0;
    if (c->n_layers != s->n_layers) field = "n_layers", have = c->n_layers, want = s->n_layers;
    else if (c->n_q_heads != s->n_q_heads) field = "n_q_heads", have = c->n_q_heads, want = s->n_q_heads;
    else if (c->n_kv_heads != s->n_kv_heads) field = "n_kv_heads", have = c->n_kv_heads, want = s->n_kv_heads;
    else if (c->head_dim != s->head_dim) field = "head_dim", have = c->head_dim, want = s->head_dim;
    if (field)
        return fasa__error(ctx, FASA_ERROR_MISMATCH,
                           "desc.calibration: its %s is %u but desc.shape.%s is %u", field, have,
                           field, want);
    if (c->layout != s->layout)
        return fasa__error(ctx, FASA_ERROR_MISMATCH,
                           "desc.calibration: its layout differs from desc.shape.layout (remap it "
                           "with fasa_calibration_remap_layout)");
    return FASA_OK;
}

static fasa_status host_memory_requirements(fasa_context *ctx, const fasa_kv_cache_desc *desc, uint64_t *size,
                                            uint64_t *alignment)
{
    if (desc->placement != FASA_PLACEMENT_OFFLOAD)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.host_memory: application host memory is only for placement FASA_PLACEMENT_OFFLOAD");
    if (!ctx->ops->host_memory_requirements)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.host_memory: the %s backend cannot use application host memory (the Vulkan backend "
                           "with VK_EXT_external_memory_host can)", ctx->ops->name);
    return ctx->ops->host_memory_requirements(ctx, desc, size, alignment);
}

/* Application host memory for the offloaded K and V: where the backend can
 * use it, aligned and large enough. */
static fasa_status check_host_memory(fasa_context *ctx, const fasa_kv_cache_desc *desc)
{
    if (!desc->host_memory)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.host_memory_size: set without desc.host_memory");
    uint64_t size = 0, align = 1;
    fasa_status st = host_memory_requirements(ctx, desc, &size, &align);
    if (st != FASA_OK) return st;
    if ((uintptr_t)desc->host_memory % align)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.host_memory: %p is not aligned to %llu bytes",
                           desc->host_memory, (unsigned long long)align);
    if (desc->host_memory_size < size)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.host_memory_size: %llu bytes, but this cache needs %llu",
                           (unsigned long long)desc->host_memory_size, (unsigned long long)size);
    return FASA_OK;
}

static fasa_status check_cache_desc(fasa_context *ctx, const fasa_kv_cache_desc *desc)
{
    fasa_status st = fasa__check_chain(ctx, desc->next, "desc.next", "fasa_kv_cache_desc");
    if (st == FASA_OK && desc->external)
        st = fasa__check_chain(ctx, desc->external->next, "desc.external->next", "fasa_kv_external");
    if (st != FASA_OK) return st;
    st = fasa__check_shape(ctx, &desc->shape, "desc.shape");
    if (st != FASA_OK) return st;
    if (desc->capacity == 0 || desc->capacity > MAX_CAPACITY)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.capacity: %u not in 1..%u",
                           desc->capacity, MAX_CAPACITY);
    if (!fasa__dtype_valid(desc->dtype))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.dtype: unknown value %d (FASA_DTYPE_F16, _F32 or _BF16)", (int)desc->dtype);
    if ((unsigned)desc->placement > FASA_PLACEMENT_OFFLOAD)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.placement: unknown value %d",
                           (int)desc->placement);
    if ((unsigned)desc->fetch > FASA_FETCH_STAGED)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.fetch: unknown value %d", (int)desc->fetch);
    if (desc->placement != FASA_PLACEMENT_OFFLOAD && (desc->fetch != FASA_FETCH_DIRECT || desc->row_cache_rows))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.fetch / desc.row_cache_rows apply only to placement FASA_PLACEMENT_OFFLOAD");
    if (desc->row_cache_rows && desc->fetch != FASA_FETCH_STAGED)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.row_cache_rows needs desc.fetch = FASA_FETCH_STAGED");
    if (desc->row_cache_rows > desc->capacity)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.row_cache_rows: %u is more than desc.capacity (%u)",
                           desc->row_cache_rows, desc->capacity);
    if (desc->flags & ~FASA_CACHE_NO_DENSE_LAYERS)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.flags: unknown bits 0x%x", desc->flags);
    if (desc->max_n_fac > FASA_MAX_N_FAC)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.max_n_fac: %u is more than %u",
                           desc->max_n_fac, FASA_MAX_N_FAC);
    if (desc->n_dense_layers > 0 && !desc->dense_layers)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.dense_layers is NULL but desc.n_dense_layers is %u", desc->n_dense_layers);
    if (desc->n_dense_layers > 0 && (desc->flags & FASA_CACHE_NO_DENSE_LAYERS))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.flags: FASA_CACHE_NO_DENSE_LAYERS contradicts desc.dense_layers");
    for (uint32_t i = 0; i < desc->n_dense_layers; i++)
        if (desc->dense_layers[i] >= desc->shape.n_layers)
            return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                               "desc.dense_layers[%u]: layer %u out of range (n_layers %u)", i,
                               desc->dense_layers[i], desc->shape.n_layers);
    if (desc->calibration) {
        st = check_calibration_match(ctx, &desc->shape, desc->calibration);
        if (st != FASA_OK) return st;
    }
    if (desc->external) {
        st = fasa__external_check(ctx, desc);
        if (st != FASA_OK) return st;
    }
    if (desc->host_memory || desc->host_memory_size) return check_host_memory(ctx, desc); /* last: asks the backend */
    return FASA_OK;
}

/* Union dims per KV head and, per query head, which q dim feeds each union
 * slot: TIP then is a plain dot product of a masked q with the K_dom row,
 * and adding the exact zeros of the masked slots leaves the sum unchanged. */
static fasa_status build_dims_tables(fasa_kv_cache *c, const fasa_calibration *cal)
{
    const fasa_model_shape *s = &c->shape;
    uint32_t u_max = 0;
    for (uint32_t l = 0; l < s->n_layers; l++)
        for (uint32_t g = 0; g < s->n_kv_heads; g++) {
            uint32_t u = fasa__union_dims(cal, l, g, NULL);
            if (u > u_max) u_max = u;
        }
    c->has_dims = true;
    c->n_tip = cal->n_tip;
    c->u_pad = (u_max + 7u) & ~7u;
    size_t n_groups = (size_t)s->n_layers * s->n_kv_heads, n_heads = (size_t)s->n_layers * s->n_q_heads;
    c->union_size = fasa__alloc(c->ctx, n_groups * sizeof(uint32_t));
    c->union_dims = fasa__alloc(c->ctx, n_groups * c->u_pad * sizeof(uint16_t));
    c->tip_map = fasa__alloc(c->ctx, n_heads * c->u_pad * sizeof(int16_t));
    c->head_dims = fasa__alloc(c->ctx, n_heads * 2 * cal->n_tip * sizeof(uint16_t));
    if (!c->union_size || !c->union_dims || !c->tip_map || !c->head_dims)
        return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cache: out of host memory");
    memcpy(c->head_dims, cal->dims, n_heads * 2 * cal->n_tip * sizeof(uint16_t));
    for (uint32_t l = 0; l < s->n_layers; l++)
        for (uint32_t g = 0; g < s->n_kv_heads; g++) {
            size_t gi = (size_t)l * s->n_kv_heads + g;
            uint16_t *u = c->union_dims + gi * c->u_pad;
            c->union_size[gi] = fasa__union_dims(cal, l, g, u);
            for (uint32_t h = g * c->group; h < (g + 1) * c->group; h++) {
                size_t hi = (size_t)l * s->n_q_heads + h;
                const uint16_t *dims = cal->dims + hi * 2 * cal->n_tip;
                int16_t *map = c->tip_map + hi * c->u_pad;
                for (uint32_t slot = 0; slot < c->u_pad; slot++) {
                    map[slot] = -1;
                    for (uint32_t i = 0; slot < c->union_size[gi] && i < 2 * cal->n_tip; i++)
                        if (dims[i] == u[slot]) map[slot] = (int16_t)u[slot];
                }
            }
        }
    return FASA_OK;
}

static void free_tables(fasa_kv_cache *c)
{
    fasa__free(c->ctx, c->length);
    fasa__free(c->ctx, c->dense_layer);
    fasa__free(c->ctx, c->union_size);
    fasa__free(c->ctx, c->union_dims);
    fasa__free(c->ctx, c->tip_map);
    fasa__free(c->ctx, c->head_dims);
}

static void destroy_locked(fasa_kv_cache *c)
{
    fasa_context *ctx = c->ctx;
    if (c->impl) ctx->ops->cache_destroy(c);
    fasa__buffer_free(c->q_stage);
    fasa__buffer_free(c->o_stage);
    fasa__buffer_free(c->kv_stage);
    size_t n_rc = (size_t)c->shape.n_layers * c->shape.n_kv_heads;
    for (size_t i = 0; c->rowcaches && i < n_rc; i++) fasa__rowcache_destroy(ctx, c->rowcaches[i]);
    fasa__free(ctx, c->rowcaches);
    fasa__external_free(c);
    free_tables(c);
    fasa__free(ctx, c);
}

static fasa_status create_locked(fasa_context *ctx, const fasa_kv_cache_desc *desc, fasa_kv_cache **out)
{
    fasa_status st = check_cache_desc(ctx, desc);
    if (st != FASA_OK) return st;
    fasa_kv_cache *c = fasa__alloc(ctx, sizeof *c);
    if (!c) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cache: out of host memory");
    const fasa_model_shape *s = &desc->shape;
    c->ctx = ctx;
    c->shape = *s;
    c->group = s->n_q_heads / s->n_kv_heads;
    c->capacity = desc->capacity;
    c->dtype = desc->dtype;
    c->elem_size = fasa__dtype_size(desc->dtype);
    c->placement = desc->placement;
    c->fetch = desc->fetch;
    c->row_cache_rows = desc->row_cache_rows;
    c->host_memory = desc->host_memory;
    c->host_memory_size = desc->host_memory_size;
    c->max_n_fac = desc->max_n_fac ? desc->max_n_fac : 2048;
    c->length = fasa__alloc(ctx, s->n_layers * sizeof(uint32_t));
    c->dense_layer = fasa__alloc(ctx, s->n_layers);
    if (!c->length || !c->dense_layer) st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cache: out of host memory");
    if (st == FASA_OK) {
        if (desc->n_dense_layers == 0 && !(desc->flags & FASA_CACHE_NO_DENSE_LAYERS))
            c->dense_layer[0] = 1; /* docs/SPEC.md §2 rule 2: layer 0 stays dense */
        for (uint32_t i = 0; i < desc->n_dense_layers; i++) c->dense_layer[desc->dense_layers[i]] = 1;
    }
    if (st == FASA_OK && desc->calibration) st = build_dims_tables(c, desc->calibration);
    if (st == FASA_OK && desc->external) st = fasa__external_copy(c, desc);
    if (st == FASA_OK) st = ctx->ops->cache_create(c);
    if (st == FASA_OK) st = fasa__buffer_new(c->ctx, (uint64_t)s->n_q_heads * s->head_dim * 4, &c->q_stage);
    if (st == FASA_OK) st = fasa__buffer_new(c->ctx, (uint64_t)s->n_q_heads * s->head_dim * 4, &c->o_stage);
    if (st == FASA_OK && ctx->backend != FASA_BACKEND_CPU && !c->ext) { /* host appends: not on external caches */
        c->kv_stage_tokens = desc->capacity < STAGE_TOKENS ? desc->capacity : STAGE_TOKENS;
        st = fasa__buffer_new(c->ctx, 2ull * c->kv_stage_tokens * s->n_kv_heads * s->head_dim * 4, &c->kv_stage);
    }
    if (st != FASA_OK) {
        destroy_locked(c);
        return st;
    }
    *out = c;
    return FASA_OK;
}

fasa_status fasa_kv_cache_create(fasa_context *ctx, const fasa_kv_cache_desc *desc, fasa_kv_cache **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_kv_cache_create: out is NULL");
    else if (!desc) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_kv_cache_create: desc is NULL");
    else {
        *out = NULL;
        st = create_locked(ctx, desc, out);
    }
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_kv_cache_host_memory_requirements(fasa_context *ctx, const fasa_kv_cache_desc *desc,
                                                   uint64_t *size, uint64_t *alignment)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    if (!desc || !size || !alignment)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_kv_cache_host_memory_requirements: %s is NULL",
                         !desc ? "desc" : !size ? "size" : "alignment");
    fasa_kv_cache_desc d;
    if (st == FASA_OK) {
        d = *desc;
        d.host_memory = NULL; /* the answer does not depend on them */
        d.host_memory_size = 0;
        st = check_cache_desc(ctx, &d);
    }
    if (st == FASA_OK) st = host_memory_requirements(ctx, &d, size, alignment);
    fasa__unlock(ctx);
    return st;
}

fasa_context *fasa_kv_cache_context(const fasa_kv_cache *cache) { return cache ? cache->ctx : NULL; }

void fasa_kv_cache_destroy(fasa_kv_cache *cache)
{
    if (!cache) return;
    fasa_context *ctx = cache->ctx;
    fasa__lock(ctx);
    destroy_locked(cache);
    fasa__unlock(ctx);
}

/* ------------------------------------------------------------------------ */
/* Appends                                                                   */
/* ------------------------------------------------------------------------ */

static fasa_status check_append(fasa_kv_cache *c, uint32_t layer, uint32_t n, const void *k,
                                const void *v, fasa_dtype src, const char *fn)
{
    fasa_context *ctx = c->ctx;
    if (c->ext)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: the cache reads the engine's K and V in place (desc.external): the engine writes "
                           "them and calls fasa_kv_cache_sync", fn);
    if (layer >= c->shape.n_layers)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: layer %u out of range (n_layers %u)",
                           fn, layer, c->shape.n_layers);
    if (n == 0) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: n is 0", fn);
    if (!k) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: k is NULL", fn);
    if (!v) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: v is NULL", fn);
    if (!fasa__dtype_valid(src))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: src_dtype %d unknown (FASA_DTYPE_F16, _F32 or _BF16)", fn, (int)src);
    if (n > c->capacity - c->length[layer])
        return fasa__error(ctx, FASA_ERROR_CAPACITY,
                           "%s: layer %u holds %u of %u tokens; %u more do not fit", fn, layer,
                           c->length[layer], c->capacity, n);
    return FASA_OK;
}

/* x (exactly an fp32, whatever the source type: fp16 and bf16 widen
 * exactly) as a cache of dtype `storage` holds it, converted the way every
 * backend's append converts: round to nearest even, so |x| >= 65520
 * becomes Inf in fp16 and |x| >= 0x1.fep127 (the last half ulp below
 * FLT_MAX) in bf16. */
static float stored_value(fasa_dtype storage, float x)
{
    switch (storage) {
    case FASA_DTYPE_F16: return fasa__half_to_float(fasa__float_to_half(x));
    case FASA_DTYPE_BF16: return fasa__bf16_to_float(fasa__float_to_bf16(x));
    case FASA_DTYPE_F32: break;
    }
    return x;
}

static const char *dtype_name(fasa_dtype t)
{
    return t == FASA_DTYPE_F16 ? "fp16" : t == FASA_DTYPE_BF16 ? "bf16" : "fp32";
}

/* Appended values must be finite *as stored*: NaN, Inf and finite values
 * that overflow the cache's storage type (3e38 or 65520 in an fp16 cache,
 * FLT_MAX from fp32 in a bf16 one) are rejected, naming the first such
 * element as (token, head, dim).  One
 * branch-free pass finds the largest magnitude (the magnitude bits of IEEE
 * values order like the values, NaN above Inf); the storage conversions
 * are monotone in |x|, so if that value is finite as stored, all are.  Only
 * a failing array is scanned again, element by element. */
static fasa_status scan_finite(fasa_kv_cache *c, const void *x, size_t n, fasa_dtype src,
                               const char *what)
{
    uint32_t max_bits = 0;
    float max_abs;
    if (src == FASA_DTYPE_F32) {
        const uint32_t *u = x;
        for (size_t i = 0; i < n; i++) {
            uint32_t a = u[i] & 0x7fffffffu;
            max_bits = a > max_bits ? a : max_bits;
        }
        memcpy(&max_abs, &max_bits, 4);
    } else { /* fp16 and bf16 magnitudes order like their bits too */
        const uint16_t *h = x;
        for (size_t i = 0; i < n; i++) {
            uint32_t a = h[i] & 0x7fffu;
            max_bits = a > max_bits ? a : max_bits;
        }
        max_abs = fasa__dtype_load(src, &(uint16_t){(uint16_t)max_bits}, 0);
    }
    if (isfinite(max_abs) && isfinite(stored_value(c->dtype, max_abs))) return FASA_OK;
    uint32_t d = c->shape.head_dim, hkv = c->shape.n_kv_heads;
    for (size_t i = 0; i < n; i++) {
        float value = fasa__dtype_load(src, x, i);
        if (!isfinite(value))
            return fasa__error(c->ctx, FASA_ERROR_NON_FINITE,
                               "fasa_kv_cache_append: %s[token %zu][head %zu][dim %zu] is not finite",
                               what, i / d / hkv, i / d % hkv, i % d);
        if (!isfinite(stored_value(c->dtype, value)))
            return fasa__error(c->ctx, FASA_ERROR_NON_FINITE,
                               "fasa_kv_cache_append: %s[token %zu][head %zu][dim %zu] is %g, which is not finite "
                               "once stored in the %s cache (it overflows to %sInf)",
                               what, i / d / hkv, i / d % hkv, i % d, value, dtype_name(c->dtype),
                               value < 0 ? "-" : "+");
    }
    return FASA_OK; /* not reached: the first pass found an element */
}

/* `wait`: finish the append before returning (all but the enqueue-only calls). */
static fasa_status run_append(fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n,
                              fasa_buffer *k, uint64_t k_off, fasa_buffer *v, uint64_t v_off,
                              fasa_dtype src, bool wait)
{
    fasa_context *ctx = c->ctx;
    fasa_exec *exec = NULL;
    fasa_status st = ctx->ops->exec_begin(ctx, &exec);
    if (st != FASA_OK) return st;
    st = ctx->ops->append(exec, c, layer, first, n, k, k_off, v, v_off, src);
    fasa_status end = ctx->ops->exec_end(ctx, exec, wait);
    return st != FASA_OK ? st : end;
}

/* GPU backends: copy host rows into the staging buffer chunk by chunk. */
static fasa_status append_staged(fasa_kv_cache *c, uint32_t layer, uint32_t n, const void *k,
                                 const void *v, fasa_dtype src)
{
    fasa_context *ctx = c->ctx;
    size_t row = (size_t)c->shape.n_kv_heads * c->shape.head_dim * fasa__dtype_size(src);
    uint64_t half = c->kv_stage->size / 2;
    for (uint32_t done = 0; done < n;) {
        uint32_t chunk = n - done < c->kv_stage_tokens ? n - done : c->kv_stage_tokens;
        const char *ks = (const char *)k + done * row, *vs = (const char *)v + done * row;
        fasa_status st = ctx->ops->buffer_write(ctx, c->kv_stage, 0, ks, chunk * row);
        if (st == FASA_OK) st = ctx->ops->buffer_write(ctx, c->kv_stage, half, vs, chunk * row);
        if (st == FASA_OK)
            st = run_append(c, layer, c->length[layer] + done, chunk, c->kv_stage, 0, c->kv_stage,
                            half, src, true);
        if (st != FASA_OK) return st; /* length unchanged: the partial rows stay invisible */
        done += chunk;
    }
    return FASA_OK;
}

fasa_status fasa_kv_cache_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n, const void *k,
                                 const void *v, fasa_dtype src_dtype)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cache->ctx;
    fasa__lock(ctx);
    fasa_status st = check_append(cache, layer, n, k, v, src_dtype, "fasa_kv_cache_append");
    size_t count = (size_t)n * cache->shape.n_kv_heads * cache->shape.head_dim;
    if (st == FASA_OK) st = scan_finite(cache, k, count, src_dtype, "k");
    if (st == FASA_OK) st = scan_finite(cache, v, count, src_dtype, "v");
    if (st == FASA_OK) {
        if (ctx->backend == FASA_BACKEND_CPU) {
            uint64_t bytes = count * fasa__dtype_size(src_dtype);
            fasa_buffer kb = {.ctx = ctx, .size = bytes, .host = (void *)k, .wrapped = true};
            fasa_buffer vb = {.ctx = ctx, .size = bytes, .host = (void *)v, .wrapped = true};
            st = run_append(cache, layer, cache->length[layer], n, &kb, 0, &vb, 0, src_dtype, true);
        } else {
            st = append_staged(cache, layer, n, k, v, src_dtype);
        }
    }
    if (st == FASA_OK) cache->length[layer] += n;
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa__append_check(fasa_kv_cache *c, uint32_t layer, uint32_t n, fasa_buffer *k,
                               uint64_t k_off, fasa_buffer *v, uint64_t v_off, fasa_dtype src, const char *fn)
{
    fasa_status st = check_append(c, layer, n, k, v, src, fn);
    if (st != FASA_OK) return st;
    uint64_t bytes = (uint64_t)n * c->shape.n_kv_heads * c->shape.head_dim * fasa__dtype_size(src);
    fasa_buffer *bufs[2] = {k, v};
    uint64_t offs[2] = {k_off, v_off};
    for (int i = 0; i < 2; i++) {
        if (bufs[i]->ctx != c->ctx)
            return fasa__error(c->ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: %s belongs to another context",
                               fn, i ? "v" : "k");
        if (offs[i] > bufs[i]->size || bytes > bufs[i]->size - offs[i])
            return fasa__error(c->ctx, FASA_ERROR_INVALID_ARGUMENT,
                               "%s: %s range [%llu, %llu) exceeds its buffer size %llu", fn,
                               i ? "v" : "k", (unsigned long long)offs[i],
                               (unsigned long long)(offs[i] + bytes), (unsigned long long)bufs[i]->size);
        if (offs[i] % 4 != 0)
            return fasa__error(c->ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: %s_offset %llu is not a multiple of 4",
                               fn, i ? "v" : "k", (unsigned long long)offs[i]);
    }
    return FASA_OK;
}

fasa_status fasa_kv_cache_append_buffers(fasa_kv_cache *cache, uint32_t layer, uint32_t n,
                                         fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                                         uint64_t v_offset, fasa_dtype src_dtype)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    fasa_status st =
        fasa__append_check(cache, layer, n, k, k_offset, v, v_offset, src_dtype, "fasa_kv_cache_append_buffers");
    if (st == FASA_OK)
        st = run_append(cache, layer, cache->length[layer], n, k, k_offset, v, v_offset, src_dtype, true);
    if (st == FASA_OK) cache->length[layer] += n;
    fasa__unlock(cache->ctx);
    return st;
}

fasa_status fasa__enqueue_append(fasa_backend backend, const char *fn, fasa_kv_cache *cache, uint32_t layer,
                                 uint32_t n, fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                                 uint64_t v_offset, fasa_dtype src_dtype)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    fasa_status st = fasa__need_backend(cache->ctx, backend, fn);
    if (st == FASA_OK) st = fasa__append_check(cache, layer, n, k, k_offset, v, v_offset, src_dtype, fn);
    if (st == FASA_OK)
        st = run_append(cache, layer, cache->length[layer], n, k, k_offset, v, v_offset, src_dtype, false);
    if (st == FASA_OK) cache->length[layer] += n;
    fasa__unlock(cache->ctx);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                   */
/* ------------------------------------------------------------------------ */

fasa_status fasa_kv_cache_length(const fasa_kv_cache *cache, uint32_t layer, uint32_t *out)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    fasa_status st = FASA_OK;
    if (!out) st = fasa__error(cache->ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_kv_cache_length: out is NULL");
    else if (layer >= cache->shape.n_layers)
        st = fasa__error(cache->ctx, FASA_ERROR_INVALID_ARGUMENT,
                         "fasa_kv_cache_length: layer %u out of range (n_layers %u)", layer,
                         cache->shape.n_layers);
    else *out = cache->length[layer];
    fasa__unlock(cache->ctx);
    return st;
}

fasa_status fasa_kv_cache_truncate(fasa_kv_cache *cache, uint32_t length)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    for (uint32_t l = 0; l < cache->shape.n_layers; l++)
        if (cache->length[l] > length) cache->length[l] = length;
    size_t n_rc = (size_t)cache->shape.n_layers * cache->shape.n_kv_heads;
    for (size_t i = 0; cache->rowcaches && i < n_rc; i++) fasa__rowcache_truncate(cache->rowcaches[i], length);
    if (cache->ctx->ops->cache_truncate) cache->ctx->ops->cache_truncate(cache, length);
    fasa__unlock(cache->ctx);
    return FASA_OK;
}

fasa_status fasa_kv_cache_read(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n,
                               float *k, float *v)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cache->ctx;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    const char *fn = "fasa_kv_cache_read";
    if (layer >= cache->shape.n_layers)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: layer %u out of range (n_layers %u)", fn,
                         layer, cache->shape.n_layers);
    else if (n == 0) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: n is 0", fn);
    else if (!k && !v) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: k and v are both NULL", fn);
    else if (first > cache->length[layer] || n > cache->length[layer] - first)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                         "%s: tokens [%u, %llu) exceed the %u tokens of layer %u", fn, first,
                         (unsigned long long)first + n, cache->length[layer], layer);
    if (st == FASA_OK) st = ctx->ops->cache_read(cache, layer, first, n, k, v);
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_kv_cache_transfer_stats(fasa_kv_cache *cache, fasa_transfer_stats *out, bool reset)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    fasa_status st = FASA_OK;
    if (!out) st = fasa__error(cache->ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_kv_cache_transfer_stats: out is NULL");
    else if (cache->ctx->ops->transfer_stats_sync) st = cache->ctx->ops->transfer_stats_sync(cache);
    if (st == FASA_OK && out) {
        *out = cache->transfer;
        if (reset) memset(&cache->transfer, 0, sizeof cache->transfer);
    }
    fasa__unlock(cache->ctx);
    return st;
}

fasa_status fasa_kv_cache_memory(const fasa_kv_cache *cache, fasa_memory_report *out)
{
    if (!cache || !out) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    uint32_t u_max = 0;
    size_t n_groups = (size_t)cache->shape.n_layers * cache->shape.n_kv_heads;
    for (size_t i = 0; cache->has_dims && i < n_groups; i++)
        if (cache->union_size[i] > u_max) u_max = cache->union_size[i];
    *out = (fasa_memory_report){
        .device_bytes = cache->device_bytes,
        .host_bytes = cache->host_bytes,
        .scratch_bytes = cache->scratch_bytes,
        .dense_equivalent = 2ull * cache->shape.n_layers * cache->shape.n_kv_heads * cache->capacity *
                            cache->shape.head_dim * cache->elem_size,
        .max_union_dims = u_max};
    fasa__unlock(cache->ctx);
    return FASA_OK;
}
