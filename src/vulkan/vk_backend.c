/* Vulkan backend: the ops table, buffers, command streams (exec), barriers
 * and dispatches.  Devices are in vk_device.c, memory in vk_memory.c, the
 * cache in vk_cache.c and the kernels in vk_kernels.c / vk_topk.c. */
#include "vk_internal.h"

#include <string.h>

#define WAIT_TIMEOUT_NS (600ull * 1000000000ull) /* a step that takes longer is treated as a hang */

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

static fasa_status vk_buffer_create(fasa_context *ctx, fasa_buffer *buf)
{
    vk_context *vk = fasa__vk(ctx);
    if (vk->lost) return fasa__error(ctx, FASA_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3};
    vk->fn.vkGetPhysicalDeviceProperties2(vk->phys, &p2);
    if (m3.maxMemoryAllocationSize && buf->size > m3.maxMemoryAllocationSize)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "fasa_buffer_create: size %llu exceeds the device's maxMemoryAllocationSize %llu",
                           (unsigned long long)buf->size, (unsigned long long)m3.maxMemoryAllocationSize);
    vk_buf *b = fasa__alloc(ctx, sizeof *b);
    if (!b) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    fasa_status st = fasa__vk_buf_create(vk, buf->size, false, "a fasa_buffer", b);
    if (st == FASA_OK) buf->impl = b;
    else fasa__free(ctx, b);
    return fasa__vk_check(vk, st);
}

static void vk_buffer_destroy(fasa_context *ctx, fasa_buffer *buf)
{
    vk_buf *b = buf->impl;
    if (!b) return;
    if (!b->wrapped) fasa__vk_buf_destroy(fasa__vk(ctx), b);
    fasa__free(ctx, b);
    buf->impl = NULL;
}

static fasa_status vk_buffer_write(fasa_context *ctx, fasa_buffer *buf, uint64_t offset, const void *src,
                                   uint64_t size)
{
    vk_context *vk = fasa__vk(ctx);
    return fasa__vk_check(vk, fasa__vk_upload(vk, buf->impl, offset, src, size));
}

static fasa_status vk_buffer_read(fasa_context *ctx, fasa_buffer *buf, uint64_t offset, void *dst,
                                  uint64_t size)
{
    vk_context *vk = fasa__vk(ctx);
    return fasa__vk_check(vk, fasa__vk_download(vk, buf->impl, offset, dst, size));
}

/* ------------------------------------------------------------------------ */
/* Command streams                                                           */
/* ------------------------------------------------------------------------ */

fasa_status fasa__vk_submit_wait(vk_context *vk)
{
    VkResult r = vk->fn.vkResetFences(vk->device, 1, &vk->fence);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkResetFences");
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &vk->cmd;
    /* test hook (fasa_debug.h): a SUBMIT fault fails the submission with
     * VK_ERROR_OUT_OF_DEVICE_MEMORY, after which, as the specification
     * requires of a failed vkQueueSubmit, nothing of it has run */
    r = fasa__fault(vk->ctx, FASA_FAULT_SUBMIT) ? VK_ERROR_OUT_OF_DEVICE_MEMORY
                                                : vk->fn.vkQueueSubmit(vk->queue, 1, &si, vk->fence);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkQueueSubmit");
    r = vk->fn.vkWaitForFences(vk->device, 1, &vk->fence, VK_TRUE, WAIT_TIMEOUT_NS);
    if (r == VK_TIMEOUT) {
        vk->lost = true;
        return fasa__error(vk->ctx, FASA_ERROR_DEVICE_LOST,
                           "vulkan: the queue did not finish within 600 s (treated as a device loss)");
    }
    return fasa__vk_result(vk, r, "vkWaitForFences");
}

fasa_status fasa__vk_exec_begin(fasa_context *ctx, fasa_exec **exec)
{
    vk_context *vk = fasa__vk(ctx);
    if (vk->lost) return fasa__error(ctx, FASA_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    VkResult r = vk->fn.vkBeginCommandBuffer(vk->cmd, &bi);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkBeginCommandBuffer");
    if (vk->qpool) {
        vk->fn.vkCmdResetQueryPool(vk->cmd, vk->qpool, 0, 2);
        vk->fn.vkCmdWriteTimestamp(vk->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, vk->qpool, 0);
    }
    if (vk->test_invalid) { /* VUID-vkCmdFillBuffer-dstOffset-00025 */
        vk->test_invalid = false;
        vk->fn.vkCmdFillBuffer(vk->cmd, vk->staging.buffer, 2, 4, 0);
    }
    memset(&vk->own_exec, 0, sizeof vk->own_exec);
    vk->own_exec.vk = vk;
    vk->own_exec.ctx = ctx;
    vk->own_exec.cmd = vk->cmd;
    *exec = &vk->own_exec;
    return FASA_OK;
}

static void read_timestamps(vk_context *vk)
{
    uint64_t ts[2] = {0, 0};
    VkResult r = vk->fn.vkGetQueryPoolResults(vk->device, vk->qpool, 0, 2, sizeof ts, ts, sizeof ts[0],
                                              VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    if (r != VK_SUCCESS) return;
    uint64_t ticks = ((ts[1] & vk->ts_mask) - (ts[0] & vk->ts_mask)) & vk->ts_mask;
    vk->ctx->last_step_ns = (uint64_t)((double)ticks * (double)vk->props.limits.timestampPeriod + 0.5);
    vk->ctx->has_step_ns = true;
}

fasa_status fasa__vk_exec_end(fasa_context *ctx, fasa_exec *exec, bool wait)
{
    (void)wait; /* every standalone stream is waited for: scratch is reused */
    vk_context *vk = fasa__vk(ctx);
    if (exec->embedded) return fasa__vk_check(vk, FASA_OK);
    if (vk->qpool && !exec->failed)
        vk->fn.vkCmdWriteTimestamp(vk->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, vk->qpool, 1);
    /* results read through mappings after the fence: make them visible to the host */
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    vk->fn.vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                                VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    VkResult r = vk->fn.vkEndCommandBuffer(vk->cmd);
    if (exec->failed) return fasa__vk_check(vk, FASA_OK); /* the kernel reported its error */
    fasa_status st = r == VK_SUCCESS ? fasa__vk_submit_wait(vk) : fasa__vk_result(vk, r, "vkEndCommandBuffer");
    if (st == FASA_OK && exec->applies_trunc) *exec->applies_trunc = VK_NO_TRUNC;
    if (st == FASA_OK && exec->applies_init) *exec->applies_init = false;
    if (st == FASA_OK && exec->is_step && vk->qpool) read_timestamps(vk);
    return fasa__vk_check(vk, st);
}

static fasa_status vk_finish(fasa_context *ctx)
{
    vk_context *vk = fasa__vk(ctx);
    if (vk->lost) return fasa__error(ctx, FASA_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    return fasa__vk_check(vk, FASA_OK); /* standalone streams are waited for at exec_end */
}

void fasa__vk_barrier(fasa_exec *e)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
    e->vk->fn.vkCmdPipelineBarrier(e->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                                   0, 1, &mb, 0, NULL, 0, NULL);
}

void fasa__vk_barrier_all(fasa_exec *e)
{
    VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                       VK_ACCESS_TRANSFER_WRITE_BIT;
    e->vk->fn.vkCmdPipelineBarrier(e->cmd, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
}

#define UPDATE_MAX 65536u /* bytes one vkCmdUpdateBuffer may write */

void fasa__vk_update(fasa_exec *e, const vk_buf *b, VkDeviceSize offset, const void *src, VkDeviceSize size)
{
    const uint8_t *p = src;
    for (VkDeviceSize at = 0; at < size; at += UPDATE_MAX) {
        VkDeviceSize n = size - at < UPDATE_MAX ? size - at : UPDATE_MAX;
        e->vk->fn.vkCmdUpdateBuffer(e->cmd, b->buffer, b->offset + offset + at, n, p + at);
    }
}

void fasa__vk_dispatch3(fasa_exec *e, vk_kernel k, int dtype, const void *push, uint32_t push_size,
                        uint32_t gx, uint32_t gy, uint32_t gz)
{
    vk_context *vk = e->vk;
    VkPipeline p = vk->pipes[k][fasa__vk_kernel_has_dtype(k) ? dtype : 0];
    vk->fn.vkCmdBindPipeline(e->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p);
    vk->fn.vkCmdPushConstants(e->cmd, vk->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);
    vk->fn.vkCmdDispatch(e->cmd, gx, gy, gz);
}

void fasa__vk_dispatch(fasa_exec *e, vk_kernel k, int dtype, const void *push, uint32_t push_size,
                       uint32_t gx, uint32_t gy)
{
    fasa__vk_dispatch3(e, k, dtype, push, push_size, gx, gy, 1);
}

/* ------------------------------------------------------------------------ */
/* Test hooks                                                                */
/* ------------------------------------------------------------------------ */

void fasa__vk_test_set_chunk_limit(fasa_context *ctx, uint64_t bytes)
{
    if (!ctx || ctx->backend != FASA_BACKEND_VULKAN || !ctx->impl) return;
    fasa__vk(ctx)->chunk_limit = bytes < (64u << 10) ? (64u << 10) : bytes;
}

void fasa__vk_test_force_staging(fasa_context *ctx, bool on)
{
    if (!ctx || ctx->backend != FASA_BACKEND_VULKAN || !ctx->impl) return;
    fasa__vk(ctx)->force_staging = on;
}

void fasa__vk_test_set_narrow(fasa_context *ctx, bool narrow)
{
    if (!ctx || ctx->backend != FASA_BACKEND_VULKAN || !ctx->impl) return;
    fasa__vk(ctx)->tun.narrow = narrow;
}

void fasa__vk_test_inject_invalid(fasa_context *ctx)
{
    if (!ctx || ctx->backend != FASA_BACKEND_VULKAN || !ctx->impl) return;
    fasa__vk(ctx)->test_invalid = true;
}

const fasa_backend_ops fasa__vulkan_ops = {
    .id = FASA_BACKEND_VULKAN,
    .name = "vulkan",
    .list_devices = fasa__vk_list_devices,
    .context_init = fasa__vk_context_init,
    .context_destroy = fasa__vk_context_destroy,
    .finish = vk_finish,
    .buffer_create = vk_buffer_create,
    .buffer_destroy = vk_buffer_destroy,
    .buffer_write = vk_buffer_write,
    .buffer_read = vk_buffer_read,
    .cache_create = fasa__vk_cache_create,
    .host_memory_requirements = fasa__vk_host_memory_requirements,
    .cache_destroy = fasa__vk_cache_destroy,
    .cache_truncate = fasa__vk_cache_truncate,
    .transfer_stats_sync = fasa__vk_transfer_stats_sync,
    .cache_read = fasa__vk_cache_read,
    .exec_begin = fasa__vk_exec_begin,
    .exec_end = fasa__vk_exec_end,
    .append = fasa__vk_append,
    .sync = fasa__vk_sync,
    .upload_table = fasa__vk_upload_table,
    .record_batch = fasa__vk_record_batch,
    .tip = fasa__vk_tip,
    .topk = fasa__vk_topk,
    .fac = fasa__vk_fac,
    .dense = fasa__vk_dense,
    .read_selection = fasa__vk_read_selection,
};
