/* The Vulkan embedding API (include/fasa_vulkan.h): wrapping host buffers
 * and recording appends and decode steps into host command buffers. */
#include "vk_internal.h"

#include <string.h>

static fasa_status need_vulkan(fasa_context *ctx, const char *fn)
{
    if (ctx->backend != FASA_BACKEND_VULKAN || !ctx->impl)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: the context uses the %s backend, not vulkan",
                           fn, fasa_backend_name(ctx->backend));
    if (fasa__vk(ctx)->lost) return fasa__error(ctx, FASA_ERROR_DEVICE_LOST, "%s: the device was lost", fn);
    return FASA_OK;
}

/* Record calls need a context made from a fasa_vk_embed: only then does the
 * caller's command buffer belong to the context's device. */
static fasa_status need_embedded(fasa_context *ctx, VkCommandBuffer cmd, const char *fn)
{
    fasa_status st = need_vulkan(ctx, fn);
    if (st != FASA_OK) return st;
    if (fasa__vk(ctx)->owns_device)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: the context owns its device; record calls need a context created "
                           "with a fasa_vk_embed (desc.embed)", fn);
    if (!cmd) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: cmd is NULL", fn);
    return FASA_OK;
}

static fasa_status check_wrap(fasa_context *ctx, VkBuffer buffer, VkDeviceSize offset, VkDeviceSize size,
                              fasa_buffer **out)
{
    const char *fn = "fasa_vk_buffer_wrap";
    fasa_status st = need_vulkan(ctx, fn);
    if (st != FASA_OK) return st;
    if (!out) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (!buffer) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: buffer is VK_NULL_HANDLE", fn);
    if (size == 0) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: size is 0", fn);
    if (offset % 4 || size % 4)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: offset (%llu) and size (%llu) must be multiples of 4",
                           fn, (unsigned long long)offset, (unsigned long long)size);
    if (offset + size < offset)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: offset + size overflows", fn);
    vk_context *vk = fasa__vk(ctx);
    VkMemoryRequirements req;
    vk->fn.vkGetBufferMemoryRequirements(vk->device, buffer, &req);
    if (offset + size > req.size)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: range [%llu, %llu) exceeds the buffer (%llu bytes of memory requirements)", fn,
                           (unsigned long long)offset, (unsigned long long)(offset + size),
                           (unsigned long long)req.size);
    return FASA_OK;
}

fasa_status fasa_vk_buffer_wrap(fasa_context *ctx, VkBuffer buffer, VkDeviceSize offset, VkDeviceSize size,
                                fasa_buffer **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st = check_wrap(ctx, buffer, offset, size, out);
    fasa_buffer *buf = NULL;
    vk_buf *b = NULL;
    if (st == FASA_OK) {
        buf = fasa__alloc(ctx, sizeof *buf);
        b = fasa__alloc(ctx, sizeof *b);
        if (!buf || !b) st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "fasa_vk_buffer_wrap: out of host memory");
    }
    if (st == FASA_OK) {
        b->buffer = buffer;
        b->offset = offset;
        b->size = size;
        b->wrapped = true;
        buf->ctx = ctx;
        buf->size = size;
        buf->impl = b;
        buf->wrapped = true;
        *out = buf;
    } else {
        fasa__free(ctx, buf);
        fasa__free(ctx, b);
    }
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_vk_buffer_handle(const fasa_buffer *buf, VkBuffer *buffer, VkDeviceSize *offset)
{
    if (!buf) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = buf->ctx;
    fasa__lock(ctx);
    const char *fn = "fasa_vk_buffer_handle";
    fasa_status st = need_vulkan(ctx, fn);
    if (st == FASA_OK && !buffer) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: buffer is NULL", fn);
    if (st == FASA_OK && !offset) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: offset is NULL", fn);
    if (st == FASA_OK && !buf->impl) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: buf has no storage", fn);
    if (st == FASA_OK) {
        const vk_buf *b = buf->impl;
        *buffer = b->buffer;
        *offset = b->offset;
    }
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_vk_record_decode(fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *desc,
                                  VkCommandBuffer cmd, fasa_buffer *q, uint64_t q_offset, fasa_buffer *o,
                                  uint64_t o_offset)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cache->ctx;
    fasa__lock(ctx);
    fasa_step step;
    fasa_status st = need_embedded(ctx, cmd, "fasa_vk_record_decode");
    if (st == FASA_OK) st = fasa__step_resolve(cache, layer, desc, q, q_offset, o, o_offset, &step);
    if (st == FASA_OK) {
        struct fasa_exec exec = {.vk = fasa__vk(ctx), .ctx = ctx, .cmd = cmd, .embedded = true};
        st = fasa__step_record(&exec, &step);
        st = fasa__vk_check(fasa__vk(ctx), st);
    }
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_vk_record_decode_batch(fasa_context *ctx, uint32_t layer, const fasa_decode_desc *desc,
                                        uint32_t n, const fasa_decode_item *items, VkCommandBuffer cmd)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_step *steps = NULL;
    fasa_status st = need_embedded(ctx, cmd, "fasa_vk_record_decode_batch");
    if (st == FASA_OK && (n == 0 || n > FASA_MAX_BATCH || !items))
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                         "fasa_vk_record_decode_batch: %s", !items ? "items is NULL" : "n must be 1 to 4096");
    if (st == FASA_OK && !(steps = fasa__alloc(ctx, (size_t)n * sizeof *steps)))
        st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "fasa_vk_record_decode_batch: out of host memory");
    if (st == FASA_OK) st = fasa__batch_resolve(ctx, layer, desc, n, items, steps, "fasa_vk_record_decode_batch");
    if (st == FASA_OK) {
        struct fasa_exec exec = {.vk = fasa__vk(ctx), .ctx = ctx, .cmd = cmd, .embedded = true};
        st = fasa__batch_record(&exec, steps, n);
        st = fasa__vk_check(fasa__vk(ctx), st);
    }
    fasa__free(ctx, steps);
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_vk_record_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n, VkCommandBuffer cmd,
                                  fasa_buffer *k, uint64_t k_offset, fasa_buffer *v, uint64_t v_offset,
                                  fasa_dtype src_dtype)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cache->ctx;
    fasa__lock(ctx);
    fasa_status st = need_embedded(ctx, cmd, "fasa_vk_record_append");
    if (st == FASA_OK) st = fasa__append_check(cache, layer, n, k, k_offset, v, v_offset, src_dtype, "fasa_vk_record_append");
    if (st == FASA_OK) {
        struct fasa_exec exec = {.vk = fasa__vk(ctx), .ctx = ctx, .cmd = cmd, .embedded = true};
        st = fasa__vk_append(&exec, cache, layer, cache->length[layer], n, k, k_offset, v, v_offset, src_dtype);
        st = fasa__vk_check(fasa__vk(ctx), st);
    }
    if (st == FASA_OK) cache->length[layer] += n;
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_vk_record_kv_cache_sync(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n,
                                         VkCommandBuffer cmd)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cache->ctx;
    fasa__lock(ctx);
    fasa_status st = need_embedded(ctx, cmd, "fasa_vk_record_kv_cache_sync");
    if (st == FASA_OK) st = fasa__sync_check(cache, layer, first, n, "fasa_vk_record_kv_cache_sync");
    if (st == FASA_OK && cache->has_dims) {
        struct fasa_exec exec = {.vk = fasa__vk(ctx), .ctx = ctx, .cmd = cmd, .embedded = true};
        st = fasa__vk_sync(&exec, cache, layer, first, n);
        st = fasa__vk_check(fasa__vk(ctx), st);
    }
    if (st == FASA_OK) cache->length[layer] = fasa__synced_length(cache, layer, first, n);
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_vk_record_kv_cache_init(fasa_kv_cache *cache, VkCommandBuffer cmd)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cache->ctx;
    fasa__lock(ctx);
    fasa_status st = need_embedded(ctx, cmd, "fasa_vk_record_kv_cache_init");
    if (st == FASA_OK) {
        struct fasa_exec exec = {.vk = fasa__vk(ctx), .ctx = ctx, .cmd = cmd, .embedded = true};
        fasa__vk_cache_init_record(&exec, cache);
        st = fasa__vk_check(fasa__vk(ctx), FASA_OK);
    }
    fasa__unlock(ctx);
    return st;
}
