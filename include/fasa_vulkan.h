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
 *   e.memory_allocator = (fasa_vk_memory_allocator){my_alloc, my_free, me}; // optional
 *   e.flags = FASA_VK_EMBED_RECORD_CACHE_INIT;    // optional: creation never submits
 *   fasa_context_desc cd = {.backend = FASA_BACKEND_VULKAN, .embed = &e,
 *                           .device_memory_budget = 512 << 20};  // optional
 *   fasa_context_create(&cd, &ctx);
 *   fasa_kv_cache_create(ctx, &kd, &cache);
 *   fasa_vk_buffer_wrap(ctx, my_q_buffer, 0, bytes, &q);   // likewise o, k, v
 *   vkBeginCommandBuffer(cmd, ...);
 *   fasa_vk_record_kv_cache_init(cache, cmd);     // with the flag: once, first
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
 * Device memory (fasa_vk_embed.memory_allocator, fasa_context_desc.device_memory_budget)
 *  - Every VkDeviceMemory libfasa uses comes from one place: its own
 *    vkAllocateMemory (+ vkMapMemory of host-visible coherent types), or,
 *    when the host sets memory_allocator, the host's allocate callback (VMA
 *    or the engine's own; libfasa then never calls vkAllocateMemory,
 *    vkMapMemory or vkFreeMemory for them).  The one exception is the import
 *    of application host memory (fasa_kv_cache_desc.host_memory), which
 *    libfasa makes itself and counts in no budget.
 *  - libfasa creates its VkBuffers (usage TRANSFER_SRC | TRANSFER_DST |
 *    STORAGE_BUFFER | SHADER_DEVICE_ADDRESS), asks for memory meeting the
 *    requirements in the request (one buffer's, or a block holding several
 *    buffers of a cache: size up to 1 GiB, alignment the largest of theirs,
 *    memoryTypeBits the intersection) and binds the buffers itself with
 *    vkBindBufferMemory at out->offset (+ the buffer's place in the block).
 *  - The memory must be allocated with request->allocate_flags in a
 *    VkMemoryAllocateFlagsInfo (today always
 *    VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT: libfasa's buffers have device
 *    addresses).  VMA: create the VmaAllocator with
 *    VMA_ALLOCATOR_CREATE_BUFFER_DEVICE_ADDRESS_BIT.
 *  - Host access: request->map = true (libfasa's staging buffer and the
 *    FASA-M counters) requires a persistent mapping of host-visible,
 *    host-coherent memory in out->mapped (the address of out->offset).
 *    Otherwise a mapping is optional but used when given for a
 *    HOST_COHERENT type: then libfasa writes its tables and reads results
 *    through it instead of through its staging buffer and a submission.
 *    libfasa never maps or unmaps memory it got from the allocator.
 *  - allocate is called only from inside fasa_context_create (libfasa's
 *    8 MiB staging buffer), fasa_kv_cache_create and fasa_buffer_create, on
 *    the calling thread, with the context locked; free from the matching
 *    destroy call (or a failing create).  Record calls allocate only on a
 *    paged cache's first use or growth: its block-table buffer (any record
 *    of a paged step) and its batch buffers (fasa_vk_record_decode_batch),
 *    which grow geometrically, are kept until fasa_kv_cache_destroy and
 *    count against the budget; a batch that cannot get them records its
 *    items one by one instead.
 *  - A VMA host, for example (the VmaAllocator in user):
 *
 *      static VkResult vma_allocate(void *user, const fasa_vk_memory_request *r,
 *                                   fasa_vk_memory_allocation *out)
 *      {
 *          VmaAllocationCreateInfo ci = {0};
 *          ci.requiredFlags = r->required_flags;
 *          ci.preferredFlags = r->preferred_flags;
 *          if (r->map) ci.flags = VMA_ALLOCATION_CREATE_MAPPED_BIT;
 *          VmaAllocation a;
 *          VmaAllocationInfo info;
 *          VkResult res = vmaAllocateMemory(user, &r->requirements, &ci, &a, &info);
 *          if (res != VK_SUCCESS) return res;
 *          out->memory = info.deviceMemory;
 *          out->offset = info.offset;
 *          out->memory_type_index = info.memoryType;
 *          out->mapped = info.pMappedData;
 *          out->allocation = a;
 *          return VK_SUCCESS;
 *      }
 *      static void vma_free(void *user, void *a) { vmaFreeMemory(user, a); }
 *
 *  - libfasa checks what allocate returns (a memory type in
 *    memoryTypeBits with required_flags, an aligned offset, a mapping where
 *    one is required): a bad answer is handed back to free and the call fails
 *    with FASA_ERROR_INVALID_ARGUMENT naming desc.embed->memory_allocator.  A
 *    failed allocate (its VkResult) fails the call like a failed
 *    vkAllocateMemory; VK_ERROR_OUT_OF_DEVICE_MEMORY is
 *    FASA_ERROR_OUT_OF_DEVICE_MEMORY.  Nothing of a failed create is kept.
 *  - The budget (fasa_context_desc.device_memory_budget, 0 = none) counts
 *    the bytes of every allocation above (requirements.size through the
 *    allocator), host-visible memory included; an allocation that would
 *    exceed it fails with FASA_ERROR_OUT_OF_DEVICE_MEMORY and a message
 *    with the numbers (a cache's KV arrays are checked as a whole before
 *    any of them is allocated; a failed create frees what it allocated).
 *    fasa_context_device_memory reports the bytes in use,
 *    fasa_kv_cache_memory a cache's share.  Where the physical device offers
 *    VK_EXT_memory_budget, out-of-memory messages add the heap's budget and
 *    usage from it (reporting only).
 *
 * Queue submissions on the host's queue (embedded contexts)
 *  - Only these calls submit to fasa_vk_embed.queue, each time with
 *    libfasa's own command pool and buffer, and wait for their own fence
 *    (never vkQueueWaitIdle or vkDeviceWaitIdle):
 *      fasa_decode, fasa_decode_host, fasa_kv_cache_append,
 *      fasa_kv_cache_append_buffers, fasa_kv_cache_sync     always;
 *      fasa_buffer_write, fasa_buffer_read                 when the buffer is
 *        not host-mapped (always for wrapped host buffers);
 *      fasa_kv_cache_read                                  when the rows are
 *        not host-mapped (always for an external cache's engine buffers);
 *      fasa_kv_cache_create                                when the cache needs
 *        initialisation commands (its tables are in memory that is not
 *        host-mapped, or a FASA-M row cache) and FASA_VK_EMBED_RECORD_CACHE_INIT
 *        is not set.
 *    The host must not use the queue from another thread during them
 *    (Vulkan requires external synchronisation of queues).  No other call
 *    touches the queue: context creation and destruction, buffer
 *    create/wrap/destroy, cache destroy, truncate, length, memory,
 *    transfer_stats and every record call.
 *  - FASA_VK_EMBED_RECORD_CACHE_INIT: fasa_kv_cache_create never submits.  A
 *    cache's initialisation (vkCmdUpdateBuffer of its tables, vkCmdFillBuffer
 *    of a row cache's state, then a barrier) is recorded by
 *    fasa_vk_record_kv_cache_init, or else by the first call that records
 *    or submits work on the cache, into that call's command buffer, before
 *    the call's own commands.  It is recorded once; in a host's command
 *    buffer it counts as done when recorded (like a recorded append), so
 *    that command buffer must be submitted before any later one using the
 *    cache.
 *
 * Synchronisation (what the caller provides)
 *  - Every record call begins with one global memory barrier
 *      srcStage  COMPUTE_SHADER | TRANSFER   srcAccess SHADER_WRITE | TRANSFER_WRITE
 *      dstStage  COMPUTE_SHADER | TRANSFER   dstAccess SHADER_READ | SHADER_WRITE |
 *                                                      TRANSFER_READ | TRANSFER_WRITE
 *    so the host's own compute-shader or transfer writes recorded before it
 *    on the same queue (q, k, v, an external K) need no barrier of the
 *    host's.  Writes made by other stages (fragment, vertex, ...) need the
 *    host's barrier to COMPUTE_SHADER | TRANSFER first; host writes to
 *    coherent memory before vkQueueSubmit are visible by the submission.
 *  - libfasa reads q, k and v and writes o only with vkCmdCopyBuffer
 *    (external K/V: read by compute shaders through device addresses).
 *  - How each call ends: fasa_vk_record_append, fasa_vk_record_kv_cache_sync
 *    and fasa_vk_record_kv_cache_init end with the barrier above;
 *    fasa_vk_record_decode ends with the copy into o and no barrier (a
 *    FASA_DECODE_PREFETCH step ends after its fetch, also without one).  Before
 *    reading o: a barrier srcStage = VK_PIPELINE_STAGE_TRANSFER_BIT,
 *    srcAccess = VK_ACCESS_TRANSFER_WRITE_BIT, dstStage/dstAccess = the
 *    consumer's.  A recorded FASA-M step also records a barrier
 *    COMPUTE_SHADER/SHADER_WRITE -> HOST/HOST_READ for its counters.
 *  - Every recorded call uses the cache's own scratch memory: command
 *    buffers holding work of one cache must execute in recording order on
 *    one queue, never concurrently (use semaphores across queues).
 *  - Record calls never submit or wait (allocation: see "Device memory";
 *    the first batch of a dtype also builds its batch pipelines).  The recorded command
 *    buffer references the cache: keep the cache (and wrapped buffers) alive
 *    until it has completed.
 *  - Recorded appends advance the cache length at record time: a decode
 *    recorded after the append attends to the appended tokens.  If the
 *    command buffer is never submitted, call fasa_kv_cache_truncate.
 *
 * State a record call leaves in the caller's command buffer
 *  - cmd must be in the recording state, outside a render pass (and outside
 *    dynamic rendering), from a pool of a compute-capable queue family of
 *    the context's device.  The commands recorded are only
 *    vkCmdPipelineBarrier (global VkMemoryBarriers, dependencyFlags 0),
 *    vkCmdCopyBuffer, vkCmdFillBuffer, vkCmdUpdateBuffer (cache init only),
 *    vkCmdBindPipeline (VK_PIPELINE_BIND_POINT_COMPUTE), vkCmdPushConstants
 *    and vkCmdDispatch.
 *  - Bound afterwards: one of libfasa's compute pipelines at the COMPUTE bind
 *    point, and libfasa's push constants: its pipeline layout has no
 *    descriptor set layouts and one push constant range,
 *    VK_SHADER_STAGE_COMPUTE_BIT, offset 0, size 128.  So before its next
 *    dispatch the host must bind its own compute pipeline again and push its
 *    constants again (a layout with that same single range sees libfasa's
 *    values; for any other layout the contents are undefined).
 *  - Left as they were: descriptor sets bound at every bind point (libfasa
 *    binds none and never disturbs them; the host's sets stay bound for its
 *    next dispatch), the graphics pipeline and every dynamic state, queries
 *    (a record call writes no timestamps), events.
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

/* What libfasa asks of the host's memory allocator (see "Device memory"). */
typedef struct fasa_vk_memory_request {
    VkMemoryRequirements requirements;     /* size, alignment and memoryTypeBits to meet */
    VkMemoryPropertyFlags required_flags;  /* the memory type must have all of these */
    VkMemoryPropertyFlags preferred_flags; /* and should have these (DEVICE_LOCAL for
                                              everything the kernels read per step) */
    VkMemoryPropertyFlags avoided_flags;   /* and should rather lack these (DEVICE_LOCAL
                                              for FASA-M's offloaded K and V) */
    VkMemoryAllocateFlags allocate_flags;  /* allocate with these in a VkMemoryAllocateFlagsInfo:
                                              VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT */
    bool map;                              /* a persistent mapping (out->mapped) is required;
                                              required_flags then hold HOST_VISIBLE | HOST_COHERENT */
    const char *what;                      /* what the memory is for, for the host's logs */
} fasa_vk_memory_request;

/* What the allocator returns: memory libfasa binds its buffers to. */
typedef struct fasa_vk_memory_allocation {
    VkDeviceMemory memory;
    VkDeviceSize offset;                   /* where the allocation starts in memory, a multiple
                                              of requirements.alignment */
    uint32_t memory_type_index;            /* the type of memory */
    void *mapped;                          /* host address of memory + offset, or NULL (not
                                              host-visible, or not mapped) */
    void *allocation;                      /* the allocator's handle (a VmaAllocation), given
                                              back to free */
} fasa_vk_memory_allocation;

/* Host device-memory callbacks: both set or both NULL (libfasa's own
 * vkAllocateMemory).  allocate returns VK_SUCCESS with *out filled (libfasa
 * zeroes it first) or an error (VK_ERROR_OUT_OF_DEVICE_MEMORY, ...). */
typedef struct fasa_vk_memory_allocator {
    VkResult (*allocate)(void *user, const fasa_vk_memory_request *request, fasa_vk_memory_allocation *out);
    void (*free)(void *user, void *allocation);
    void *user;
} fasa_vk_memory_allocator;

/* fasa_vk_embed.flags */
#define FASA_VK_EMBED_RECORD_CACHE_INIT 0x1u /* fasa_kv_cache_create never submits: caches are
                                                initialised by recorded commands (see "Queue
                                                submissions") */

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
    fasa_vk_memory_allocator memory_allocator; /* optional: the host allocates (and frees) all
                                             of libfasa's device memory (see "Device memory") */
    uint32_t flags;                       /* FASA_VK_EMBED_* */
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

/* Records a batch (fasa_decode_batch's arguments) into cmd.  Items of one
 * cache and one path are recorded together, one dispatch per kernel stage
 * with the item in the grid (an item alone on its cache and path is
 * recorded as fasa_vk_record_decode would); each item's o is bit for bit
 * what its single step writes.  Block tables, the per-item records and the
 * q/o copies are written in the command buffer (vkCmdUpdateBuffer, copies),
 * so the host arrays may be reused when the call returns.  Nothing is
 * recorded when the call fails. */
FASA_API fasa_status fasa_vk_record_decode_batch(fasa_context *ctx, uint32_t layer,
                                                 const fasa_decode_desc *desc, uint32_t n,
                                                 const fasa_decode_item *items, VkCommandBuffer cmd);

/* Records an append of n tokens (k, v: [n][Hkv][d] in src_dtype, not scanned
 * for NaN/Inf) and advances the layer's length at once.  Nothing is recorded
 * and the length is unchanged when the call fails. */
FASA_API fasa_status fasa_vk_record_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n,
                                           VkCommandBuffer cmd, fasa_buffer *k, uint64_t k_offset,
                                           fasa_buffer *v, uint64_t v_offset, fasa_dtype src_dtype);

/* Records the pending initialisation of a cache created with
 * FASA_VK_EMBED_RECORD_CACHE_INIT into cmd (see "Queue submissions"):
 * vkCmdUpdateBuffer of its tables where they are not host-mapped,
 * vkCmdFillBuffer of a row cache's state, then the barrier that ends every
 * record call.  Records nothing when nothing is pending (already recorded,
 * a cache that needs none, or one initialised at creation). */
FASA_API fasa_status fasa_vk_record_kv_cache_init(fasa_kv_cache *cache, VkCommandBuffer cmd);

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
