/* The OpenCL embedding API (include/fasa_opencl.h): wrapping host cl_mem
 * objects and enqueue-only decode/append on the context's queue.  The
 * enqueue calls are fasa__enqueue_decode / fasa__enqueue_append
 * (src/decode.c, src/cache.c): the path of fasa_decode /
 * fasa_kv_cache_append_buffers, ending the exec without waiting. */
#include "cl_internal.h"

static fasa_status need_opencl(fasa_context *ctx, const char *fn)
{
    return fasa__need_backend(ctx, FASA_BACKEND_OPENCL, fn);
}

static fasa_status check_wrap(fasa_context *ctx, cl_mem mem, uint64_t offset, uint64_t size,
                              fasa_buffer **out)
{
    const char *fn = "fasa_cl_buffer_wrap";
    fasa_status st = need_opencl(ctx, fn);
    if (st != FASA_OK) return st;
    if (!out) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (!mem) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: mem is NULL", fn);
    if (size == 0) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: size is 0", fn);
    if (offset % 4 != 0)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: offset %llu is not a multiple of 4", fn,
                           (unsigned long long)offset);
    cl_context mctx = NULL;
    size_t msize = 0;
    cl_int err = clGetMemObjectInfo(mem, CL_MEM_CONTEXT, sizeof mctx, &mctx, NULL);
    if (err == CL_SUCCESS) err = clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof msize, &msize, NULL);
    if (err != CL_SUCCESS)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: mem is not a valid cl_mem (clGetMemObjectInfo: %s)",
                           fn, fasa__cl_error_name(err));
    if (mctx != ((cl_ctx *)ctx->impl)->context)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: mem belongs to another cl_context", fn);
    if (offset > msize || size > msize - offset)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: range [%llu, %llu) exceeds the cl_mem's %zu bytes", fn,
                           (unsigned long long)offset, (unsigned long long)(offset + size), msize);
    return FASA_OK;
}

fasa_status fasa_cl_buffer_wrap(fasa_context *ctx, cl_mem mem, uint64_t offset, uint64_t size,
                                fasa_buffer **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    if (out) *out = NULL;
    fasa_status st = check_wrap(ctx, mem, offset, size, out);
    fasa_buffer *buf = NULL;
    cl_buf *b = NULL;
    if (st == FASA_OK) {
        buf = fasa__alloc(ctx, sizeof *buf);
        b = fasa__alloc(ctx, sizeof *b);
        if (!buf || !b) {
            fasa__free(ctx, buf);
            fasa__free(ctx, b);
            st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "fasa_cl_buffer_wrap: out of host memory");
        }
    }
    if (st == FASA_OK) {
        cl_int err = clRetainMemObject(mem);
        if (err != CL_SUCCESS) {
            fasa__free(ctx, buf);
            fasa__free(ctx, b);
            st = fasa__cl_fail(ctx, err, "clRetainMemObject");
        }
    }
    if (st == FASA_OK) {
        b->mem = mem;
        b->offset = offset;
        buf->ctx = ctx;
        buf->size = size;
        buf->impl = b;
        buf->wrapped = true;
        *out = buf;
    }
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_cl_buffer_handle(const fasa_buffer *buf, cl_mem *mem, uint64_t *offset)
{
    if (!buf) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = buf->ctx;
    fasa__lock(ctx);
    fasa_status st = need_opencl(ctx, "fasa_cl_buffer_handle");
    if (st == FASA_OK && !mem)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_cl_buffer_handle: mem is NULL");
    if (st == FASA_OK && !buf->impl)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_cl_buffer_handle: buf has no OpenCL memory");
    if (st == FASA_OK) {
        const cl_buf *b = buf->impl;
        *mem = b->mem;
        if (offset) *offset = b->offset;
    }
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_cl_enqueue_decode(fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *desc,
                                   fasa_buffer *q, uint64_t q_offset, fasa_buffer *o, uint64_t o_offset)
{
    return fasa__enqueue_decode(FASA_BACKEND_OPENCL, "fasa_cl_enqueue_decode", cache, layer, desc,
                                q, q_offset, o, o_offset);
}

fasa_status fasa_cl_enqueue_decode_batch(fasa_context *ctx, uint32_t layer, const fasa_decode_desc *desc,
                                         uint32_t n, const fasa_decode_item *items)
{
    return fasa__enqueue_decode_batch(FASA_BACKEND_OPENCL, "fasa_cl_enqueue_decode_batch", ctx, layer, desc, n,
                                      items);
}

fasa_status fasa_cl_enqueue_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n, fasa_buffer *k,
                                   uint64_t k_offset, fasa_buffer *v, uint64_t v_offset,
                                   fasa_dtype src_dtype)
{
    return fasa__enqueue_append(FASA_BACKEND_OPENCL, "fasa_cl_enqueue_append", cache, layer, n,
                                k, k_offset, v, v_offset, src_dtype);
}

fasa_status fasa_cl_enqueue_kv_cache_sync(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n)
{
    return fasa__enqueue_sync(FASA_BACKEND_OPENCL, "fasa_cl_enqueue_kv_cache_sync", cache, layer, first, n);
}
