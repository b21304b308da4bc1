/*
 * libfasa Vulkan embedding API (bring your own device, VkFFT-style).
 *
 * A host that owns a Vulkan device creates a libfasa context on it and
 * records libfasa's work into its own command buffers:
 *
 *   fasa_vk_embed e = {0};
 *   e.instance = inst; e.physical_device = pd; e.device = dev;
 *   e.queue = q; e.queue_family_index = fam;
 *   e.get_instance_proc_addr = vkGetInstanceProcAddr;
 *   e.api_version = VK_API_VERSION_1_2;           // what the instance was created with
 *   e.buffer_device_address_enabled = true;       // see "Device requirements"
 *   fasa_context_desc cd = {.backend = FASA_BACKEND_VULKAN, .embed = &e};
 *   fasa_context_create(&cd, &ctx);
 *   fasa_vk_buffer_wrap(ctx, my_q_buffer, 0, bytes, &q);   // likewise o, k, v
 *   vkBeginCommandBuffer(cmd, ...);
 *   fasa_vk_record_append(cache, layer, 1, cmd, k, 0, v, 0, FASA_DTYPE_F32);
 *   fasa_vk_record_decode(cache, layer, &desc, cmd, q, 0, o, 0);
 *   vkEndCommandBuffer(cmd); vkQueueSubmit(...);
 *
 * Device requirements (embedding and standalone alike)
 *  - Vulkan 1.1 or later with a queue family that supports compute.
 *  - The bufferDeviceAddress feature enabled on the VkDevice: on 1.2+ through
 *    VkPhysicalDeviceVulkan12Features (or VkPhysicalDeviceBufferDeviceAddress-
 *    Features), on 1.1 with VK_KHR_buffer_device_address.  libfasa addresses
 *    its chunked KV cache through device addresses, so no array has to fit
 *    in one buffer or descriptor.  Set buffer_device_address_enabled to
 *    confirm it (Vulkan offers no query for the enabled features).
 *  - Nothing else: no descriptor sets, 16-bit storage or subgroup features are
 *    needed; fp16 is stored as packed uints.
 *
 * Buffers the host passes in (fasa_vk_buffer_wrap)
 *  - libfasa only copies from and to them with vkCmdCopyBuffer:
 *      q (decode input)        VK_BUFFER_USAGE_TRANSFER_SRC_BIT
 *      o (decode output)       VK_BUFFER_USAGE_TRANSFER_DST_BIT
 *      k, v (append inputs)    VK_BUFFER_USAGE_TRANSFER_SRC_BIT
 *      external K, V            VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT (the
 *      (fasa_kv_external)       kernels read them in place through device
 *                               addresses; memory allocated with
 *                               VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT), plus
 *                               TRANSFER_SRC for fasa_kv_cache_read
 *    Buffers used with fasa_buffer_read/fasa_buffer_write also need the
 *    other transfer bit.  No STORAGE usage is needed, nor (but for external
 *    K/V) SHADER_DEVICE_ADDRESS.
 *  - The wrap does not take ownership; fasa_buffer_destroy frees only the
 *    wrapper.  Keep the VkBuffer alive while the wrapper is used.
 *
 * Synchronisation (what the caller provides)
 *  - Before a recorded call: make the host's writes of q (or k, v) available
 *    to the transfer stage, e.g. a barrier srcStage = the producing stage
 *    (COMPUTE_SHADER, TRANSFER, ...), srcAccess = its write access,
 *    dstStage = VK_PIPELINE_STAGE_TRANSFER_BIT, dstAccess =
 *    VK_ACCESS_TRANSFER_READ_BIT.
 *  - After fasa_vk_record_decode: o was written by a copy, so before reading
 *    it use srcStage = VK_PIPELINE_STAGE_TRANSFER_BIT, srcAccess =
 *    VK_ACCESS_TRANSFER_WRITE_BIT, dstStage/dstAccess = the consumer's.
 *  - Between libfasa's own commands libfasa records the barriers itself,
 *    including one at the start of every recorded call that orders it after
 *    all earlier compute and transfer work of the queue (so appends and
 *    decodes of one cache may follow each other in one or several command
 *    buffers of the same queue without host barriers).
 *  - Every recorded call uses the cache's own scratch memory: command
 *    buffers holding work of one cache must execute in recording order on
 *    one queue, never concurrently (use semaphores across queues).
 *  - Record calls never submit, wait or allocate.  The recorded command
 *    buffer references the cache: keep the cache (and wrapped buffers) alive
 *    until it has completed.
 *  - Recorded appends advance the cache length at record time: a decode
 *    recorded after the append attends to the appended tokens.  If the
 *    command buffer is never submitted, call fasa_kv_cache_truncate.
 *
 * Offloaded caches (FASA-M, fasa_kv_cache_desc.placement OFFLOAD)
 *  - A recorded sparse decode step also records libfasa's fetch kernel after
 *    the top-k (it counts the rows the step needs and, with FASA_FETCH_STAGED,
 *    copies the missing K/V rows into the device row cache or staging slots
 *    that fac then reads); its barriers are libfasa's own, inside the call.
 *  - The step's transfer counters are written by the device into host-visible
 *    memory and made available to the host stage by a barrier in the recorded
 *    commands.  fasa_kv_cache_transfer_stats reads them: call it after waiting
 *    (fence, vkQueueWaitIdle, ...) for the command buffers holding the steps
 *    to be counted; steps still in flight are counted by a later call.
 *  - fasa_kv_cache_truncate does not submit anything on such a cache: the
 *    device forgets the row-cache rows of dropped tokens at each layer's next
 *    recorded (or standalone) decode step.  It therefore applies to the steps
 *    recorded after the call, in recording order, like the length itself.
 *
 * Standalone calls on an embedded context (fasa_decode, fasa_kv_cache_append,
 * fasa_buffer_read/write, ...) submit to the given queue with libfasa's own
 * command pool and wait; the host must not use that queue from another
 * thread meanwhile (Vulkan requires external synchronisation of queues).
 * FASA_CONTEXT_ENABLE_VALIDATION is ignored for embedded contexts: the host
 * controls layers and debug messengers.  FASA_CONTEXT_PROFILE times
 * standalone steps only.
 */
#ifndef FASA_VULKAN_H
#define FASA_VULKAN_H

#include "fasa.h"

#include <vulkan/vulkan.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fasa_vk_embed {
    VkInstance instance;
    VkPhysicalDevice physical_device;
    VkDevice device;
    VkQueue queue;                        /* a queue of queue_family_index */
    uint32_t queue_family_index;          /* must support VK_QUEUE_COMPUTE_BIT */
    PFN_vkGetInstanceProcAddr get_instance_proc_addr; /* the host's loader entry */
    uint32_t api_version;                 /* apiVersion the instance and device use
                                             (VK_API_VERSION_1_1 or later; 0 = 1.1) */
    bool buffer_device_address_enabled;   /* the host enabled bufferDeviceAddress */
    VkPipelineCache pipeline_cache;       /* optional: used instead of libfasa's own */
    const VkAllocationCallbacks *allocation_callbacks; /* optional, for every vkCreate*
                                             libfasa makes on the host's device */
    bool external_memory_host_enabled;    /* the host enabled VK_EXT_external_memory_host:
                                             FASA-M caches may then import application
                                             host memory (fasa_kv_cache_desc.host_memory) */
    const void *next;                     /* extension chain (fasa_struct_header), NULL */
} fasa_vk_embed;

/* Wraps [offset, offset + size) of a host VkBuffer of ctx's device as a
 * fasa_buffer.  offset and size must be multiples of 4 and lie inside the
 * buffer's memory requirements.  Usage flags: see the header comment. */
FASA_API fasa_status fasa_vk_buffer_wrap(fasa_context *ctx, VkBuffer buffer, VkDeviceSize offset,
                                         VkDeviceSize size, fasa_buffer **out);

/* The VkBuffer and byte offset holding a buffer (created or wrapped).
 * Buffers created by fasa_buffer_create have TRANSFER_SRC, TRANSFER_DST,
 * STORAGE_BUFFER and SHADER_DEVICE_ADDRESS usage. */
FASA_API fasa_status fasa_vk_buffer_handle(const fasa_buffer *buf, VkBuffer *buffer,
                                           VkDeviceSize *offset);

/* Records one decode step of `layer` into cmd (in the recording state, from
 * a pool of a compute-capable family of the context's device).  Same
 * arguments and validation as fasa_decode; q is read and o written through
 * copies (see the synchronisation rules above).  Nothing is recorded when
 * the call fails. */
FASA_API fasa_status fasa_vk_record_decode(fasa_kv_cache *cache, uint32_t layer,
                                           const fasa_decode_desc *desc, VkCommandBuffer cmd,
                                           fasa_buffer *q, uint64_t q_offset, fasa_buffer *o,
                                           uint64_t o_offset);

/* Records an append of n tokens (k, v: [n][Hkv][d] in src_dtype, not scanned
 * for NaN/Inf) and advances the layer's length at once.  Nothing is recorded
 * and the length is unchanged when the call fails. */
FASA_API fasa_status fasa_vk_record_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n,
                                           VkCommandBuffer cmd, fasa_buffer *k, uint64_t k_offset,
                                           fasa_buffer *v, uint64_t v_offset, fasa_dtype src_dtype);

/* fasa_kv_cache_sync, recorded into cmd: the K_dom rows of tokens
 * [first, first + n) of an external cache's layer are recomputed from the
 * engine's K (a compute dispatch reading it through its device address)
 * and the layer's length becomes max(length, first + n) at once.  The
 * recorded commands begin with a barrier after all earlier compute and
 * transfer work of the queue, so the engine's own writes of K recorded
 * before it (a compute shader or a copy) are seen; writes from another
 * queue need a semaphore.  Nothing is recorded and the length is unchanged
 * when the call fails. */
FASA_API fasa_status fasa_vk_record_kv_cache_sync(fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                                                  uint32_t n, VkCommandBuffer cmd);

#ifdef __cplusplus
}
#endif

#endif /* FASA_VULKAN_H */
