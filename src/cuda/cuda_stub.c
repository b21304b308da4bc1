/* The CUDA embedding API in builds without the CUDA backend: include/
 * fasa_cuda.h needs no CUDA toolkit, so programs written against it link
 * with every libfasa.  No context can be a CUDA context here, so each call
 * answers as the real API does for a context of another backend:
 * FASA_ERROR_UNSUPPORTED, naming the backend (INVALID_ARGUMENT without a
 * context to report on). */
#include "backend.h"
#include "fasa_cuda.h"

static fasa_status not_cuda(fasa_context *ctx, const char *fn)
{
    fasa__lock(ctx);
    fasa_status st = fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                                 "%s: the context's backend is %s, not cuda (the cuda backend is not "
                                 "compiled into this build)", fn, fasa_backend_name(ctx->backend));
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_cuda_buffer_wrap(fasa_context *ctx, void *device_ptr, uint64_t size, fasa_buffer **out)
{
    (void)device_ptr;
    (void)size;
    if (out) *out = NULL;
    return ctx ? not_cuda(ctx, "fasa_cuda_buffer_wrap") : FASA_ERROR_INVALID_ARGUMENT;
}

fasa_status fasa_cuda_buffer_pointer(const fasa_buffer *buf, void **device_ptr)
{
    (void)device_ptr;
    return buf ? not_cuda(buf->ctx, "fasa_cuda_buffer_pointer") : FASA_ERROR_INVALID_ARGUMENT;
}

fasa_status fasa_cuda_context_stream(const fasa_context *ctx, void **stream)
{
    (void)stream;
    return ctx ? not_cuda((fasa_context *)ctx, "fasa_cuda_context_stream") : FASA_ERROR_INVALID_ARGUMENT;
}

fasa_status fasa_cuda_enqueue_decode(fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *desc,
                                     fasa_buffer *q, uint64_t q_offset, fasa_buffer *o, uint64_t o_offset)
{
    (void)layer, (void)desc, (void)q, (void)q_offset, (void)o, (void)o_offset;
    return cache ? not_cuda(cache->ctx, "fasa_cuda_enqueue_decode") : FASA_ERROR_INVALID_ARGUMENT;
}

fasa_status fasa_cuda_enqueue_decode_batch(fasa_context *ctx, uint32_t layer, const fasa_decode_desc *desc,
                                           uint32_t n, const fasa_decode_item *items)
{
    (void)layer, (void)desc, (void)n, (void)items;
    return ctx ? not_cuda(ctx, "fasa_cuda_enqueue_decode_batch") : FASA_ERROR_INVALID_ARGUMENT;
}

fasa_status fasa_cuda_enqueue_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n, fasa_buffer *k,
                                     uint64_t k_offset, fasa_buffer *v, uint64_t v_offset, fasa_dtype src_dtype)
{
    (void)layer, (void)n, (void)k, (void)k_offset, (void)v, (void)v_offset, (void)src_dtype;
    return cache ? not_cuda(cache->ctx, "fasa_cuda_enqueue_append") : FASA_ERROR_INVALID_ARGUMENT;
}

fasa_status fasa_cuda_enqueue_kv_cache_sync(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n)
{
    (void)layer, (void)first, (void)n;
    return cache ? not_cuda(cache->ctx, "fasa_cuda_enqueue_kv_cache_sync") : FASA_ERROR_INVALID_ARGUMENT;
}
