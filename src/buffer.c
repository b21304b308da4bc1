/* fasa_buffer: memory the kernels of the context's backend can use. */
#include "backend.h"

#include <string.h>

static fasa_status new_buffer(fasa_context *ctx, uint64_t size, fasa_buffer **out)
{
    fasa_buffer *buf = fasa__alloc(ctx, sizeof *buf);
    if (!buf) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "buffer: out of host memory");
    buf->ctx = ctx;
    buf->size = size;
    *out = buf;
    return FASA_OK;
}

fasa_status fasa__buffer_new(fasa_context *ctx, uint64_t size, fasa_buffer **out)
{
    fasa_buffer *buf = NULL;
    fasa_status st = new_buffer(ctx, size, &buf);
    if (st == FASA_OK) {
        st = ctx->ops->buffer_create(ctx, buf);
        if (st != FASA_OK) { fasa__free(ctx, buf); buf = NULL; }
    }
    *out = buf;
    return st;
}

void fasa__buffer_free(fasa_buffer *buf)
{
    if (!buf) return;
    fasa_context *ctx = buf->ctx;
    if (!buf->wrapped || buf->impl) ctx->ops->buffer_destroy(ctx, buf);
    fasa__free(ctx, buf);
}

fasa_status fasa_buffer_create(fasa_context *ctx, uint64_t size, fasa_buffer **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_buffer_create: out is NULL");
    else if (size == 0) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_buffer_create: size is 0");
    if (st == FASA_OK) st = fasa__buffer_new(ctx, size, out);
    else if (out) *out = NULL;
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_buffer_wrap_host(fasa_context *ctx, void *ptr, uint64_t size, fasa_buffer **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_buffer_wrap_host: out is NULL");
    else if (!ptr) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_buffer_wrap_host: ptr is NULL");
    else if (size == 0) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_buffer_wrap_host: size is 0");
    else if (ctx->backend != FASA_BACKEND_CPU)
        st = fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                         "fasa_buffer_wrap_host: only the cpu backend wraps host memory; the %s "
                         "backend wraps its native buffers (see fasa_%s.h)",
                         fasa_backend_name(ctx->backend),
                         ctx->backend == FASA_BACKEND_VULKAN ? "vulkan"
                         : ctx->backend == FASA_BACKEND_OPENCL ? "opencl" : "cuda");
    fasa_buffer *buf = NULL;
    if (st == FASA_OK) st = new_buffer(ctx, size, &buf);
    if (st == FASA_OK) {
        buf->host = ptr;
        buf->wrapped = true;
    }
    if (out) *out = buf;
    fasa__unlock(ctx);
    return st;
}

void fasa_buffer_destroy(fasa_buffer *buf)
{
    if (!buf) return;
    fasa_context *ctx = buf->ctx;
    fasa__lock(ctx);
    fasa__buffer_free(buf);
    fasa__unlock(ctx);
}

uint64_t fasa_buffer_size(const fasa_buffer *buf) { return buf ? buf->size : 0; }

static fasa_status check_range(fasa_buffer *buf, uint64_t offset, const void *p, uint64_t size,
                               const char *fn)
{
    if (!p) return fasa__error(buf->ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: host pointer is NULL", fn);
    if (size == 0) return fasa__error(buf->ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: size is 0", fn);
    if (offset > buf->size || size > buf->size - offset)
        return fasa__error(buf->ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: range [%llu, %llu) exceeds the buffer size %llu", fn,
                           (unsigned long long)offset, (unsigned long long)(offset + size),
                           (unsigned long long)buf->size);
    return FASA_OK;
}

fasa_status fasa_buffer_write(fasa_buffer *buf, uint64_t offset, const void *src, uint64_t size)
{
    if (!buf) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(buf->ctx);
    fasa_status st = check_range(buf, offset, src, size, "fasa_buffer_write");
    if (st == FASA_OK) st = buf->ctx->ops->buffer_write(buf->ctx, buf, offset, src, size);
    fasa__unlock(buf->ctx);
    return st;
}

fasa_status fasa_buffer_read(fasa_buffer *buf, uint64_t offset, void *dst, uint64_t size)
{
    if (!buf) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(buf->ctx);
    fasa_status st = check_range(buf, offset, dst, size, "fasa_buffer_read");
    if (st == FASA_OK) st = buf->ctx->ops->buffer_read(buf->ctx, buf, offset, dst, size);
    fasa__unlock(buf->ctx);
    return st;
}
