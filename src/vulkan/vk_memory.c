/* Vulkan backend memory: memory types, buffers with device addresses,
 * host transfers (mapped or through the staging buffer), chunked arrays and
 * the block sub-allocator that backs them. */
#include "vk_internal.h"

#include <stdio.h>
#include <string.h>

#define BUF_USAGE                                                                                  \
    (VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |                        \
     VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT)
#define HOST_MAPPABLE (VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)

int fasa__vk_memory_type(const vk_context *vk, uint32_t type_bits, VkMemoryPropertyFlags want,
                         VkMemoryPropertyFlags avoid)
{
    int fallback = -1;
    for (uint32_t t = 0; t < vk->mem.memoryTypeCount; t++) {
        VkMemoryPropertyFlags f = vk->mem.memoryTypes[t].propertyFlags;
        if (!(type_bits & (1u << t)) || (f & want) != want) continue;
        if (!(f & avoid)) return (int)t;
        if (fallback < 0) fallback = (int)t;
    }
    return fallback;
}

static bool mappable(const vk_context *vk, uint32_t type)
{
    return (vk->mem.memoryTypes[type].propertyFlags & HOST_MAPPABLE) == HOST_MAPPABLE;
}

/* Every allocation, buffer object and mapping of the backend goes through
 * allocate (or the host's allocator), create_buffer and map_memory, so that
 * the test hook of fasa_debug.h fails the n-th one with the driver's own
 * error code (VK_ERROR_OUT_OF_DEVICE_MEMORY, VK_ERROR_MEMORY_MAP_FAILED)
 * and the caller takes the path a real failure takes. */
static VkResult allocate(vk_context *vk, VkDeviceSize size, uint32_t type, VkDeviceMemory *out)
{
    if (fasa__fault(vk->ctx, FASA_FAULT_DEVICE_ALLOC)) return VK_ERROR_OUT_OF_DEVICE_MEMORY;
    VkMemoryAllocateFlagsInfo fi = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO};
    fi.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .pNext = &fi};
    ai.allocationSize = size;
    ai.memoryTypeIndex = type;
    return vk->fn.vkAllocateMemory(vk->device, &ai, vk->vk_alloc, out);
}

static VkDeviceAddress buffer_address(vk_context *vk, VkBuffer b)
{
    VkBufferDeviceAddressInfo ai = {.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
    ai.buffer = b;
    return vk->fn.vkGetBufferDeviceAddress(vk->device, &ai);
}

/* external: the buffer will be bound to imported host memory. */
static VkResult create_buffer_ext(vk_context *vk, VkDeviceSize size, bool external, VkBuffer *out)
{
    if (fasa__fault(vk->ctx, FASA_FAULT_DEVICE_ALLOC)) return VK_ERROR_OUT_OF_DEVICE_MEMORY;
    VkExternalMemoryBufferCreateInfo ei = {.sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
    ei.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .pNext = external ? &ei : NULL};
    bi.size = size;
    bi.usage = BUF_USAGE;
    bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    return vk->fn.vkCreateBuffer(vk->device, &bi, vk->vk_alloc, out);
}

static VkResult create_buffer(vk_context *vk, VkDeviceSize size, VkBuffer *out)
{
    return create_buffer_ext(vk, size, false, out);
}

static VkResult map_memory(vk_context *vk, VkDeviceMemory memory, void **out)
{
    if (fasa__fault(vk->ctx, FASA_FAULT_MAP)) return VK_ERROR_MEMORY_MAP_FAILED;
    return vk->fn.vkMapMemory(vk->device, memory, 0, VK_WHOLE_SIZE, 0, out);
}

/* ------------------------------------------------------------------------ */
/* The one allocation path: budget, then the host's allocator or our own     */
/* ------------------------------------------------------------------------ */

/* What memory is for: read by the kernels every step (device), a host
 * mapping libfasa needs (staging, counters), or FASA-M's offloaded rows. */
typedef enum mem_kind { MEM_DEVICE, MEM_MAPPED, MEM_OFFLOAD } mem_kind;

static fasa_vk_memory_request make_request(VkDeviceSize size, VkDeviceSize align, uint32_t type_bits,
                                           mem_kind kind, const char *what)
{
    fasa_vk_memory_request r;
    memset(&r, 0, sizeof r);
    r.requirements.size = size;
    r.requirements.alignment = align;
    r.requirements.memoryTypeBits = type_bits;
    r.required_flags = kind == MEM_DEVICE ? 0 : HOST_MAPPABLE;
    r.preferred_flags = kind == MEM_DEVICE ? VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT : 0;
    r.avoided_flags = kind == MEM_OFFLOAD ? VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT : 0;
    r.allocate_flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
    r.map = kind == MEM_MAPPED;
    r.what = what;
    return r;
}

/* The memory type libfasa picks itself: required + preferred without the
 * avoided flags, else required + preferred, then the same without preferred. */
static int pick_type(const vk_context *vk, const fasa_vk_memory_request *r)
{
    uint32_t bits = r->requirements.memoryTypeBits;
    int t = fasa__vk_memory_type(vk, bits, r->required_flags | r->preferred_flags, r->avoided_flags);
    if (t < 0 && r->preferred_flags) t = fasa__vk_memory_type(vk, bits, r->required_flags, r->avoided_flags);
    return t;
}

static fasa_status no_type(vk_context *vk, const fasa_vk_memory_request *r)
{
    return fasa__error(vk->ctx, FASA_ERROR_UNSUPPORTED, "vulkan: no %s memory type for %s",
                       r->required_flags ? "host-visible coherent" : "usable", r->what);
}

/* size more bytes must fit desc.device_memory_budget. */
static fasa_status budget_check(vk_context *vk, uint64_t size, const char *what)
{
    fasa_context *ctx = vk->ctx;
    uint64_t used = ctx->device_memory_used, budget = ctx->device_memory_budget;
    if (!budget || (size <= budget && used <= budget - size)) return FASA_OK;
    return fasa__error(ctx, FASA_ERROR_OUT_OF_DEVICE_MEMORY,
                       "vulkan: %s needs %llu bytes of device memory, more than the %llu bytes left of "
                       "desc.device_memory_budget (%llu bytes, %llu in use)", what, (unsigned long long)size,
                       (unsigned long long)(used < budget ? budget - used : 0), (unsigned long long)budget,
                       (unsigned long long)used);
}

/* Adds the heap's VK_EXT_memory_budget numbers to a failed allocation's message. */
static fasa_status with_heap_note(vk_context *vk, fasa_status st, uint32_t type)
{
    char note[256];
    fasa__vk_heap_note(vk, vk->mem.memoryTypes[type].heapIndex, note, sizeof note);
    if (st != FASA_ERROR_OUT_OF_DEVICE_MEMORY || !note[0]) return st;
    char why[FASA_ERROR_MAX]; /* a copy: the message is rewritten from it */
    snprintf(why, sizeof why, "%s", vk->ctx->last_error);
    return fasa__error(vk->ctx, st, "%s%s", why, note);
}

static fasa_status own_alloc(vk_context *vk, const fasa_vk_memory_request *r, vk_mem *m)
{
    int type = pick_type(vk, r);
    if (type < 0) return no_type(vk, r);
    m->type = (uint32_t)type;
    VkResult res = allocate(vk, r->requirements.size, m->type, &m->memory);
    if (res == VK_SUCCESS && mappable(vk, m->type) && (r->map || !vk->force_staging)) {
        void *p = NULL;
        res = map_memory(vk, m->memory, &p);
        m->map = p;
    }
    if (res == VK_SUCCESS) return FASA_OK;
    char call[160];
    snprintf(call, sizeof call, "%s (%s, %llu bytes)", m->memory ? "vkMapMemory" : "vkAllocateMemory", r->what,
             (unsigned long long)r->requirements.size);
    fasa_status st = with_heap_note(vk, fasa__vk_result(vk, res, call), m->type);
    if (m->memory) vk->fn.vkFreeMemory(vk->device, m->memory, vk->vk_alloc);
    m->memory = VK_NULL_HANDLE;
    return st;
}

/* What is wrong with the host allocator's answer to r, or NULL. */
static const char *bad_answer(const vk_context *vk, const fasa_vk_memory_request *r,
                              const fasa_vk_memory_allocation *a, char *why, size_t n)
{
    uint32_t t = a->memory_type_index;
    VkMemoryPropertyFlags f = t < vk->mem.memoryTypeCount ? vk->mem.memoryTypes[t].propertyFlags : 0;
    if (!a->memory) snprintf(why, n, "returned VK_SUCCESS with memory VK_NULL_HANDLE");
    else if (t >= vk->mem.memoryTypeCount || !(r->requirements.memoryTypeBits & (1u << t)))
        snprintf(why, n, "returned memory type %u, not in the requested memoryTypeBits 0x%x", t,
                 r->requirements.memoryTypeBits);
    else if ((f & r->required_flags) != r->required_flags)
        snprintf(why, n, "returned memory type %u (flags 0x%x) without the required flags 0x%x", t, f,
                 r->required_flags);
    else if (a->offset % r->requirements.alignment)
        snprintf(why, n, "returned offset %llu, not a multiple of the requested alignment %llu",
                 (unsigned long long)a->offset, (unsigned long long)r->requirements.alignment);
    else if (r->map && !a->mapped) snprintf(why, n, "returned no mapping (mapped NULL) where request->map is set");
    else return NULL;
    return why;
}

static fasa_status host_alloc(vk_context *vk, const fasa_vk_memory_request *r, vk_mem *m)
{
    const fasa_vk_memory_allocator *h = &vk->host_alloc;
    fasa_vk_memory_allocation a;
    memset(&a, 0, sizeof a);
    char call[160], why[256];
    snprintf(call, sizeof call, "desc.embed->memory_allocator.allocate (%s, %llu bytes)", r->what,
             (unsigned long long)r->requirements.size);
    VkResult res = fasa__fault(vk->ctx, FASA_FAULT_DEVICE_ALLOC) ? VK_ERROR_OUT_OF_DEVICE_MEMORY
                                                                 : h->allocate(h->user, r, &a);
    if (res != VK_SUCCESS) return fasa__vk_result(vk, res, call);
    if (bad_answer(vk, r, &a, why, sizeof why)) {
        h->free(h->user, a.allocation);
        return fasa__error(vk->ctx, FASA_ERROR_INVALID_ARGUMENT, "vulkan: %s %s", call, why);
    }
    m->memory = a.memory;
    m->offset = a.offset;
    m->type = a.memory_type_index;
    m->allocation = a.allocation;
    m->from_host = true;
    if (a.mapped && mappable(vk, m->type) && (r->map || !vk->force_staging)) m->map = a.mapped;
    return FASA_OK;
}

fasa_status fasa__vk_mem_alloc(vk_context *vk, const fasa_vk_memory_request *r, vk_mem *out)
{
    memset(out, 0, sizeof *out);
    fasa_status st = budget_check(vk, r->requirements.size, r->what);
    if (st == FASA_OK) st = vk->host_alloc.allocate ? host_alloc(vk, r, out) : own_alloc(vk, r, out);
    if (st != FASA_OK) return st;
    out->counted = r->requirements.size;
    vk->ctx->device_memory_used += out->counted;
    return FASA_OK;
}

void fasa__vk_mem_free(vk_context *vk, vk_mem *m)
{
    if (m->from_host) vk->host_alloc.free(vk->host_alloc.user, m->allocation);
    else if (m->memory) vk->fn.vkFreeMemory(vk->device, m->memory, vk->vk_alloc);
    vk->ctx->device_memory_used -= m->counted;
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------ */
/* Single buffers with their own memory                                      */
/* ------------------------------------------------------------------------ */

fasa_status fasa__vk_buf_create(vk_context *vk, VkDeviceSize size, bool host, const char *what, vk_buf *out)
{
    memset(out, 0, sizeof *out);
    out->size = size;
    VkResult r = create_buffer(vk, size, &out->buffer);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkCreateBuffer");
    VkMemoryRequirements req;
    vk->fn.vkGetBufferMemoryRequirements(vk->device, out->buffer, &req);
    fasa_vk_memory_request rq = make_request(req.size, req.alignment, req.memoryTypeBits,
                                             host ? MEM_MAPPED : MEM_DEVICE, what);
    fasa_status st = fasa__vk_mem_alloc(vk, &rq, &out->mem);
    if (st == FASA_OK) {
        r = vk->fn.vkBindBufferMemory(vk->device, out->buffer, out->mem.memory, out->mem.offset);
        st = fasa__vk_result(vk, r, "vkBindBufferMemory");
    }
    if (st != FASA_OK) {
        fasa__vk_buf_destroy(vk, out);
        return st;
    }
    out->map = out->mem.map;
    out->coherent = out->map != NULL;
    out->addr = buffer_address(vk, out->buffer);
    return FASA_OK;
}

void fasa__vk_buf_destroy(vk_context *vk, vk_buf *b)
{
    if (!b->wrapped && b->buffer) vk->fn.vkDestroyBuffer(vk->device, b->buffer, vk->vk_alloc);
    fasa__vk_mem_free(vk, &b->mem);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------------ */
/* Host transfers                                                            */
/* ------------------------------------------------------------------------ */

static fasa_status staged_copy(vk_context *vk, const vk_buf *b, VkDeviceSize offset, VkDeviceSize size,
                               bool upload)
{
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    VkResult r = vk->fn.vkBeginCommandBuffer(vk->cmd, &bi);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkBeginCommandBuffer");
    VkBufferCopy region = {0, b->offset + offset, size};
    if (upload) {
        vk->fn.vkCmdCopyBuffer(vk->cmd, vk->staging.buffer, b->buffer, 1, &region);
    } else {
        region.srcOffset = b->offset + offset;
        region.dstOffset = 0;
        vk->fn.vkCmdCopyBuffer(vk->cmd, b->buffer, vk->staging.buffer, 1, &region);
    }
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT;
    vk->fn.vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
                                VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT |
                                    VK_PIPELINE_STAGE_TRANSFER_BIT,
                                0, 1, &mb, 0, NULL, 0, NULL);
    r = vk->fn.vkEndCommandBuffer(vk->cmd);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkEndCommandBuffer");
    return fasa__vk_submit_wait(vk);
}

fasa_status fasa__vk_upload(vk_context *vk, const vk_buf *b, VkDeviceSize offset, const void *src,
                            VkDeviceSize size)
{
    if (vk->lost) return fasa__error(vk->ctx, FASA_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    if (b->map) {
        memcpy(b->map + offset, src, size);
        return FASA_OK;
    }
    for (VkDeviceSize done = 0; done < size;) {
        VkDeviceSize piece = size - done < vk->staging.size ? size - done : vk->staging.size;
        memcpy(vk->staging.map, (const uint8_t *)src + done, piece);
        fasa_status st = staged_copy(vk, b, offset + done, piece, true);
        if (st != FASA_OK) return st;
        done += piece;
    }
    return FASA_OK;
}

fasa_status fasa__vk_download(vk_context *vk, const vk_buf *b, VkDeviceSize offset, void *dst,
                              VkDeviceSize size)
{
    if (vk->lost) return fasa__error(vk->ctx, FASA_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    if (b->map) {
        memcpy(dst, b->map + offset, size);
        return FASA_OK;
    }
    for (VkDeviceSize done = 0; done < size;) {
        VkDeviceSize piece = size - done < vk->staging.size ? size - done : vk->staging.size;
        fasa_status st = staged_copy(vk, b, offset + done, piece, false);
        if (st != FASA_OK) return st;
        memcpy((uint8_t *)dst + done, vk->staging.map, piece);
        done += piece;
    }
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Chunked arrays                                                            */
/* ------------------------------------------------------------------------ */

void fasa__vk_array_plan(const vk_context *vk, vk_array *a, uint64_t n_rows, uint32_t row_words)
{
    memset(a, 0, sizeof *a);
    a->n_rows = n_rows;
    a->row_words = row_words;
    uint64_t row_bytes = (uint64_t)row_words * 4;
    uint32_t shift = 0;
    while (shift < 31 && (2ull << shift) * row_bytes <= vk->chunk_limit && (1ull << shift) < n_rows) shift++;
    a->shift = shift;
    a->n_chunks = (uint32_t)((n_rows + (1ull << shift) - 1) >> shift);
}

static uint64_t chunk_rows(const vk_array *a, uint32_t c)
{
    uint64_t first = (uint64_t)c << a->shift, per = 1ull << a->shift;
    return a->n_rows - first < per ? a->n_rows - first : per;
}

fasa_status fasa__vk_array_create(vk_context *vk, vk_array *a, const char *what)
{
    a->chunks = fasa__alloc(vk->ctx, a->n_chunks * sizeof(vk_buf));
    if (!a->chunks) return fasa__error(vk->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    for (uint32_t c = 0; c < a->n_chunks; c++) {
        vk_buf *b = &a->chunks[c];
        b->size = chunk_rows(a, c) * a->row_words * 4;
        VkResult r = create_buffer_ext(vk, b->size, a->host_import, &b->buffer);
        if (r != VK_SUCCESS) {
            char why[FASA_ERROR_MAX]; /* a copy: the message is rewritten from it */
            fasa_status st = fasa__vk_result(vk, r, "vkCreateBuffer");
            snprintf(why, sizeof why, "%s", vk->ctx->last_error);
            return fasa__error(vk->ctx, st, "vulkan: creating chunk %u of %s failed (%s)", c, what, why);
        }
    }
    return FASA_OK;
}

void fasa__vk_array_destroy(vk_context *vk, vk_array *a)
{
    for (uint32_t c = 0; a->chunks && c < a->n_chunks; c++)
        if (a->chunks[c].buffer) vk->fn.vkDestroyBuffer(vk->device, a->chunks[c].buffer, vk->vk_alloc);
    fasa__free(vk->ctx, a->chunks);
    a->chunks = NULL;
}

fasa_status fasa__vk_array_read(vk_context *vk, const vk_array *a, uint64_t row0, uint64_t n, void *dst)
{
    uint64_t row_bytes = (uint64_t)a->row_words * 4;
    for (uint64_t r = row0; r < row0 + n;) {
        uint32_t c = (uint32_t)(r >> a->shift);
        uint64_t in_chunk = r - ((uint64_t)c << a->shift);
        uint64_t end = ((uint64_t)c << a->shift) + chunk_rows(a, c);
        uint64_t take = (row0 + n < end ? row0 + n : end) - r;
        fasa_status st = fasa__vk_download(vk, &a->chunks[c], in_chunk * row_bytes,
                                           (uint8_t *)dst + (r - row0) * row_bytes, take * row_bytes);
        if (st != FASA_OK) return st;
        r += take;
    }
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Arena: the chunks of several arrays packed into blocks of memory          */
/* ------------------------------------------------------------------------ */

typedef struct placement {
    vk_buf *buf;
    uint32_t block;
    VkDeviceSize offset;
} placement;

static uint64_t block_limit(const vk_context *vk)
{
    VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3};
    vk->fn.vkGetPhysicalDeviceProperties2(vk->phys, &p2);
    uint64_t lim = 1ull << 30;
    if (m3.maxMemoryAllocationSize && m3.maxMemoryAllocationSize < lim) lim = m3.maxMemoryAllocationSize;
    return lim < vk->chunk_limit ? vk->chunk_limit : lim;
}

/* Packs the chunks in order; fills place[] and the size of each block, and
 * the memory types and alignment every chunk allows. */
static uint32_t pack(vk_context *vk, placement *place, uint32_t n, uint64_t limit, uint64_t *block_size,
                     uint32_t *type_bits, VkDeviceSize *align)
{
    uint32_t n_blocks = 0;
    VkDeviceSize cur = 0;
    for (uint32_t i = 0; i < n; i++) {
        VkMemoryRequirements req;
        vk->fn.vkGetBufferMemoryRequirements(vk->device, place[i].buf->buffer, &req);
        *type_bits &= req.memoryTypeBits;
        if (req.alignment > *align) *align = req.alignment;
        VkDeviceSize at = (cur + req.alignment - 1) / req.alignment * req.alignment;
        if (n_blocks == 0 || at + req.size > limit) {
            n_blocks++;
            at = 0;
        }
        place[i].block = n_blocks - 1;
        place[i].offset = at;
        cur = at + req.size;
        block_size[n_blocks - 1] = cur;
    }
    return n_blocks;
}

/* Before anything is allocated: the whole arena must fit the budget and,
 * where libfasa picks the memory type itself, that type's heap. */
static fasa_status check_fit(vk_context *vk, const fasa_vk_memory_request *r, const uint64_t *block_size,
                             uint32_t n_blocks)
{
    uint64_t total = 0;
    for (uint32_t b = 0; b < n_blocks; b++) total += block_size[b];
    fasa_status st = budget_check(vk, total, r->what);
    if (st != FASA_OK || vk->host_alloc.allocate) return st;
    int type = pick_type(vk, r);
    if (type < 0) return no_type(vk, r);
    uint32_t heap = vk->mem.memoryTypes[type].heapIndex;
    uint64_t have = vk->mem.memoryHeaps[heap].size;
    if (total <= have) return FASA_OK;
    char note[256];
    fasa__vk_heap_note(vk, heap, note, sizeof note);
    return fasa__error(vk->ctx, FASA_ERROR_OUT_OF_DEVICE_MEMORY,
                       "vulkan: %s needs %llu MiB but memory heap %u has %llu MiB%s", r->what,
                       (unsigned long long)(total >> 20), heap, (unsigned long long)(have >> 20), note);
}

static fasa_status alloc_blocks(vk_context *vk, vk_arena *arena, const fasa_vk_memory_request *base,
                                const uint64_t *block_size)
{
    arena->blocks = fasa__alloc(vk->ctx, arena->n_blocks * sizeof(vk_mem));
    if (!arena->blocks) return fasa__error(vk->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    memset(arena->blocks, 0, arena->n_blocks * sizeof(vk_mem));
    for (uint32_t b = 0; b < arena->n_blocks; b++) {
        fasa_vk_memory_request r = *base;
        r.requirements.size = block_size[b];
        fasa_status st = fasa__vk_mem_alloc(vk, &r, &arena->blocks[b]);
        if (st != FASA_OK) { /* the status of the failed call: allocation or mapping */
            char why[FASA_ERROR_MAX]; /* a copy: the message is rewritten from it */
            snprintf(why, sizeof why, "%s", vk->ctx->last_error);
            return fasa__error(vk->ctx, st, "vulkan: allocating block %u (%llu MiB) of %s failed: %s", b,
                               (unsigned long long)(block_size[b] >> 20), base->what, why);
        }
    }
    arena->type = arena->blocks[0].type;
    return FASA_OK;
}

/* Binds a chunk at offset of memory; map: its host address, NULL when the
 * memory is not mapped (then reached through the staging buffer). */
static fasa_status bind_chunk(vk_context *vk, vk_buf *b, VkDeviceMemory memory, VkDeviceSize offset, uint8_t *map)
{
    VkResult r = vk->fn.vkBindBufferMemory(vk->device, b->buffer, memory, offset);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkBindBufferMemory");
    b->addr = buffer_address(vk, b->buffer);
    b->map = map;
    b->coherent = map != NULL;
    return FASA_OK;
}

static fasa_status bind_chunks(vk_context *vk, vk_arena *arena, const placement *place, uint32_t n)
{
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; st == FASA_OK && i < n; i++) {
        const vk_mem *m = &arena->blocks[place[i].block];
        st = bind_chunk(vk, place[i].buf, m->memory, m->offset + place[i].offset,
                        m->map ? m->map + place[i].offset : NULL);
    }
    return st;
}

fasa_status fasa__vk_arena_bind(vk_context *vk, vk_arena *arena, vk_array **arrays, uint32_t n_arrays,
                                bool host, const char *what)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_arrays; i++) n += arrays[i]->n_chunks;
    if (n == 0) return FASA_OK;
    placement *place = fasa__alloc(vk->ctx, n * sizeof *place);
    uint64_t *block_size = fasa__alloc(vk->ctx, n * sizeof *block_size);
    fasa_status st = FASA_OK;
    if (!place || !block_size) st = fasa__error(vk->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    for (uint32_t i = 0, k = 0; st == FASA_OK && i < n_arrays; i++)
        for (uint32_t c = 0; c < arrays[i]->n_chunks; c++) place[k++].buf = &arrays[i]->chunks[c];
    uint32_t type_bits = ~0u;
    VkDeviceSize align = 1;
    if (st == FASA_OK) arena->n_blocks = pack(vk, place, n, block_limit(vk), block_size, &type_bits, &align);
    fasa_vk_memory_request base = make_request(0, align, type_bits, host ? MEM_OFFLOAD : MEM_DEVICE, what);
    if (st == FASA_OK) st = check_fit(vk, &base, block_size, arena->n_blocks);
    if (st == FASA_OK) st = alloc_blocks(vk, arena, &base, block_size);
    if (st == FASA_OK) st = bind_chunks(vk, arena, place, n);
    fasa__free(vk->ctx, place);
    fasa__free(vk->ctx, block_size);
    return st;
}

void fasa__vk_arena_free(vk_context *vk, vk_arena *arena)
{
    for (uint32_t b = 0; arena->blocks && b < arena->n_blocks; b++) fasa__vk_mem_free(vk, &arena->blocks[b]);
    fasa__free(vk->ctx, arena->blocks);
    memset(arena, 0, sizeof *arena);
}

/* ------------------------------------------------------------------------ */
/* Application host memory (VK_EXT_external_memory_host)                     */
/* ------------------------------------------------------------------------ */

/* The import layout: the chunks of the arrays in order, each at the next
 * multiple of the import alignment A and taking its size rounded up to A,
 * one imported allocation per chunk.  It is fixed by the arrays' plans
 * alone, so fasa_kv_cache_host_memory_requirements needs no device objects;
 * binding checks that every chunk's requirements fit it. */
static uint64_t round_up64(uint64_t x, uint64_t m) { return (x + m - 1) / m * m; }

uint64_t fasa__vk_import_size(const vk_context *vk, const vk_array *a)
{
    uint64_t bytes = 0;
    for (uint32_t c = 0; c < a->n_chunks; c++) bytes += round_up64(chunk_rows(a, c) * a->row_words * 4, vk->import_align);
    return bytes;
}

static VkResult import_host(vk_context *vk, void *ptr, VkDeviceSize size, uint32_t type, VkDeviceMemory *out)
{
    if (fasa__fault(vk->ctx, FASA_FAULT_DEVICE_ALLOC)) return VK_ERROR_OUT_OF_DEVICE_MEMORY;
    VkImportMemoryHostPointerInfoEXT ii = {.sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT};
    ii.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
    ii.pHostPointer = ptr;
    VkMemoryAllocateFlagsInfo fi = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO, .pNext = &ii};
    fi.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .pNext = &fi};
    ai.allocationSize = size;
    ai.memoryTypeIndex = type;
    return vk->fn.vkAllocateMemory(vk->device, &ai, vk->vk_alloc, out);
}

/* The memory type for chunk b imported at ptr: host-visible and coherent
 * (the host writes appends through the pointer), not device-local if it can
 * be helped. */
static fasa_status import_type(vk_context *vk, const vk_buf *b, void *ptr, VkDeviceSize span, const char *what,
                               uint32_t *type)
{
    VkMemoryRequirements req;
    vk->fn.vkGetBufferMemoryRequirements(vk->device, b->buffer, &req);
    if (vk->import_align % req.alignment || req.size > span)
        return fasa__error(vk->ctx, FASA_ERROR_UNSUPPORTED,
                           "vulkan: a chunk of %s needs %llu bytes at alignment %llu, beyond the import layout (%llu "
                           "bytes at %llu)", what, (unsigned long long)req.size, (unsigned long long)req.alignment,
                           (unsigned long long)span, (unsigned long long)vk->import_align);
    VkMemoryHostPointerPropertiesEXT hp = {.sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT};
    VkResult r = vk->host_ptr_props(vk->device, VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT, ptr, &hp);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkGetMemoryHostPointerPropertiesEXT");
    int t = fasa__vk_memory_type(vk, req.memoryTypeBits & hp.memoryTypeBits, HOST_MAPPABLE,
                                 VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (t < 0)
        return fasa__error(vk->ctx, FASA_ERROR_UNSUPPORTED,
                           "vulkan: no host-visible coherent memory type can import desc.host_memory for %s", what);
    *type = (uint32_t)t;
    return FASA_OK;
}

fasa_status fasa__vk_arena_import(vk_context *vk, vk_arena *arena, vk_array **arrays, uint32_t n_arrays,
                                  uint8_t *base, const char *what)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_arrays; i++) n += arrays[i]->n_chunks;
    arena->blocks = fasa__alloc(vk->ctx, n * sizeof(vk_mem));
    if (!arena->blocks) return fasa__error(vk->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    memset(arena->blocks, 0, n * sizeof(vk_mem));
    arena->n_blocks = n;
    uint64_t at = 0;
    for (uint32_t i = 0, k = 0; i < n_arrays; i++)
        for (uint32_t c = 0; c < arrays[i]->n_chunks; c++, k++) {
            vk_buf *b = &arrays[i]->chunks[c];
            VkDeviceSize span = round_up64(b->size, vk->import_align);
            uint32_t type = 0;
            fasa_status st = import_type(vk, b, base + at, span, what, &type);
            if (st != FASA_OK) return st;
            /* libfasa's own allocation in any case (an allocator cannot import), in no budget */
            VkResult r = import_host(vk, base + at, span, type, &arena->blocks[k].memory);
            if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkAllocateMemory (host pointer import)");
            arena->blocks[k].type = arena->type = type;
            st = bind_chunk(vk, b, arena->blocks[k].memory, 0, base + at); /* mapped: the application's memory itself */
            if (st != FASA_OK) return st;
            at += span;
        }
    return FASA_OK;
}
