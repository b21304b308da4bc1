/* The CUDA embedding API (include/fasa_cuda.h): wrapping device pointers
 * and enqueue-only decode/append on the context's stream.  The enqueue
 * calls are fasa__enqueue_decode / fasa__enqueue_append (src/decode.c,
 * src/cache.c): the path of fasa_decode / fasa_kv_cache_append_buffers,
 * ending the exec without waiting. */
#include "cuda_internal.h"

static fasa_status need_cuda(fasa_context *ctx, const char *fn)
{
    return fasa__need_backend(ctx, FASA_BACKEND_CUDA, fn);
}

/* The pointer must be device (or managed) memory of the context's device. */
static fasa_status check_pointer(fasa_context *ctx, const void *ptr, const char *fn)
{
    const cuda_ctx *cc = ctx->impl;
    int prev;
    fasa_status st = fasa__cuda_enter(ctx, &prev);
    if (st != FASA_OK) return st;
    struct cudaPointerAttributes attr;
    cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
    fasa__cuda_leave(prev);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: device_ptr is not a CUDA pointer (%s)", fn,
                           cudaGetErrorString(err));
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: device_ptr is %s memory, not device memory", fn,
                           attr.type == cudaMemoryTypeHost ? "pinned host" : "unregistered host");
    if (attr.type == cudaMemoryTypeDevice && attr.device != cc->device)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: device_ptr belongs to device %d; the context uses device %d", fn, attr.device,
                           cc->device);
    return FASA_OK;
}

static fasa_status check_wrap(fasa_context *ctx, void *ptr, uint64_t size, fasa_buffer **out)
{
    const char *fn = "fasa_cuda_buffer_wrap";
    fasa_status st = need_cuda(ctx, fn);
    if (st != FASA_OK) return st;
    if (!out) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (!ptr) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: device_ptr is NULL", fn);
    if (size == 0) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: size is 0", fn);
    if ((uintptr_t)ptr % 4 != 0)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: device_ptr %p is not 4-byte aligned", fn, ptr);
    return check_pointer(ctx, ptr, fn);
}

fasa_status fasa_cuda_buffer_wrap(fasa_context *ctx, void *device_ptr, uint64_t size, fasa_buffer **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    if (out) *out = NULL;
    fasa_status st = check_wrap(ctx, device_ptr, size, out);
    if (st == FASA_OK) {
        fasa_buffer *buf = fasa__alloc(ctx, sizeof *buf);
        if (!buf) st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "fasa_cuda_buffer_wrap: out of host memory");
        else {
            buf->ctx = ctx;
            buf->size = size;
            buf->impl = device_ptr;
            buf->wrapped = true;
            *out = buf;
        }
    }
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_cuda_buffer_pointer(const fasa_buffer *buf, void **device_ptr)
{
    if (!buf) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = buf->ctx;
    fasa__lock(ctx);
    fasa_status st = need_cuda(ctx, "fasa_cuda_buffer_pointer");
    if (st == FASA_OK && !device_ptr)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_cuda_buffer_pointer: device_ptr is NULL");
    if (st == FASA_OK) *device_ptr = buf->impl;
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_cuda_context_stream(const fasa_context *cctx, void **stream)
{
    if (!cctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = (fasa_context *)cctx; /* locking writes the mutex only */
    fasa__lock(ctx);
    fasa_status st = need_cuda(ctx, "fasa_cuda_context_stream");
    if (st == FASA_OK && !stream)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_cuda_context_stream: stream is NULL");
    if (st == FASA_OK) *stream = (void *)((const cuda_ctx *)ctx->impl)->stream;
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_cuda_enqueue_decode(fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *desc,
                                     fasa_buffer *q, uint64_t q_offset, fasa_buffer *o, uint64_t o_offset)
{
    return fasa__enqueue_decode(FASA_BACKEND_CUDA, "fasa_cuda_enqueue_decode", cache, layer, desc,
                                q, q_offset, o, o_offset);
}

fasa_status fasa_cuda_enqueue_decode_batch(fasa_context *ctx, uint32_t layer, const fasa_decode_desc *desc,
                                           uint32_t n, const fasa_decode_item *items)
{
    return fasa__enqueue_decode_batch(FASA_BACKEND_CUDA, "fasa_cuda_enqueue_decode_batch", ctx, layer, desc, n,
                                      items);
}

fasa_status fasa_cuda_enqueue_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n, fasa_buffer *k,
                                     uint64_t k_offset, fasa_buffer *v, uint64_t v_offset, fasa_dtype src_dtype)
{
    return fasa__enqueue_append(FASA_BACKEND_CUDA, "fasa_cuda_enqueue_append", cache, layer, n,
                                k, k_offset, v, v_offset, src_dtype);
}

fasa_status fasa_cuda_enqueue_kv_cache_sync(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n)
{
    return fasa__enqueue_sync(FASA_BACKEND_CUDA, "fasa_cuda_enqueue_kv_cache_sync", cache, layer, first, n);
}
