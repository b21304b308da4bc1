/* The embedding contract of fasa_vulkan.h beyond recording itself:
 *  - device memory through the host's allocator (a VMA-like sub-allocator
 *    written here: pages of its own vkAllocateMemory, allocations at nonzero
 *    offsets, mappings only where libfasa requires one, like device-local
 *    memory of a discrete GPU); every allocation goes through it, all are
 *    freed at destroy, outputs equal libfasa's own allocations bit for bit;
 *  - the device-memory budget (refusals with the numbers, nothing leaked)
 *    and the host allocator's wrong answers;
 *  - queue submissions: libfasa gets a spying vkGetInstanceProcAddr whose
 *    vkGetDeviceProcAddr wraps vkQueueSubmit / vkQueueSubmit2 (and counts
 *    vkAllocateMemory / vkMapMemory / vkFreeMemory); with
 *    FASA_VK_EMBED_RECORD_CACHE_INIT nothing but the calls the header lists
 *    submits;
 *  - the state a record call leaves bound: the host's own compute dispatch
 *    after fasa_vk_record_decode must rebind its pipeline and push its
 *    constants again; its descriptor set stays bound.
 * The host's instance runs the validation layer with synchronization
 * validation; every message fails the test. */
#include "vt_common.h"

#include "host_probe_spv.h"
#include "vt_host.h"

#include <string.h>

#define HOST_MAPPABLE (VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)

static const fasa_model_shape shape = {2, 8, 2, 64, FASA_ROPE_NORM};
#define N0 3000u   /* tokens appended: under one 4096-score top-k tile, so the
                      selection order (and the output) is deterministic */
#define CAP 4096u
#define N_Q (8u * 64u)

/* ------------------------------------------------------------------------ */
/* The spy: libfasa's view of the device functions                           */
/* ------------------------------------------------------------------------ */

static struct {
    uint32_t submits, allocs, maps, frees;
} spy;
static PFN_vkGetDeviceProcAddr real_gdpa;
static PFN_vkQueueSubmit real_submit;
static PFN_vkQueueSubmit2 real_submit2, real_submit2_khr;
static PFN_vkAllocateMemory real_alloc;
static PFN_vkMapMemory real_map;
static PFN_vkFreeMemory real_free;

static VKAPI_ATTR VkResult VKAPI_CALL spy_submit(VkQueue q, uint32_t n, const VkSubmitInfo *si, VkFence f)
{
    spy.submits++;
    return real_submit(q, n, si, f);
}

static VKAPI_ATTR VkResult VKAPI_CALL spy_submit2(VkQueue q, uint32_t n, const VkSubmitInfo2 *si, VkFence f)
{
    spy.submits++;
    return real_submit2(q, n, si, f);
}

static VKAPI_ATTR VkResult VKAPI_CALL spy_submit2_khr(VkQueue q, uint32_t n, const VkSubmitInfo2 *si, VkFence f)
{
    spy.submits++;
    return real_submit2_khr(q, n, si, f);
}

static VKAPI_ATTR VkResult VKAPI_CALL spy_alloc(VkDevice d, const VkMemoryAllocateInfo *ai,
                                                const VkAllocationCallbacks *cb, VkDeviceMemory *out)
{
    spy.allocs++;
    return real_alloc(d, ai, cb, out);
}

static VKAPI_ATTR VkResult VKAPI_CALL spy_map(VkDevice d, VkDeviceMemory m, VkDeviceSize off, VkDeviceSize size,
                                              VkMemoryMapFlags flags, void **out)
{
    spy.maps++;
    return real_map(d, m, off, size, flags, out);
}

static VKAPI_ATTR void VKAPI_CALL spy_free(VkDevice d, VkDeviceMemory m, const VkAllocationCallbacks *cb)
{
    spy.frees++;
    real_free(d, m, cb);
}

/* The real function behind each name libfasa asks for, and its spy. */
static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL spy_gdpa(VkDevice d, const char *name)
{
    PFN_vkVoidFunction real = real_gdpa(d, name);
    if (!real) return NULL;
    if (strcmp(name, "vkQueueSubmit") == 0) {
        real_submit = (PFN_vkQueueSubmit)real;
        return (PFN_vkVoidFunction)spy_submit;
    }
    if (strcmp(name, "vkQueueSubmit2") == 0) {
        real_submit2 = (PFN_vkQueueSubmit2)real;
        return (PFN_vkVoidFunction)spy_submit2;
    }
    if (strcmp(name, "vkQueueSubmit2KHR") == 0) {
        real_submit2_khr = (PFN_vkQueueSubmit2)real;
        return (PFN_vkVoidFunction)spy_submit2_khr;
    }
    if (strcmp(name, "vkAllocateMemory") == 0) {
        real_alloc = (PFN_vkAllocateMemory)real;
        return (PFN_vkVoidFunction)spy_alloc;
    }
    if (strcmp(name, "vkMapMemory") == 0) {
        real_map = (PFN_vkMapMemory)real;
        return (PFN_vkVoidFunction)spy_map;
    }
    if (strcmp(name, "vkFreeMemory") == 0) {
        real_free = (PFN_vkFreeMemory)real;
        return (PFN_vkVoidFunction)spy_free;
    }
    return real;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL spy_gipa(VkInstance inst, const char *name)
{
    if (inst && strcmp(name, "vkGetDeviceProcAddr") == 0) {
        real_gdpa = (PFN_vkGetDeviceProcAddr)vkGetInstanceProcAddr(inst, name);
        return (PFN_vkVoidFunction)spy_gdpa;
    }
    return vkGetInstanceProcAddr(inst, name);
}

/* ------------------------------------------------------------------------ */
/* The host's allocator: pages of 16 MiB (bigger requests get their own),    */
/* allocations bumped from 4 KiB into a page, a page freed when empty        */
/* ------------------------------------------------------------------------ */

#define PAGE_BYTES (16ull << 20)
#define PAGE_HEAD 4096u /* no allocation starts at offset 0 */
#define MAX_PAGES 256u

typedef struct page {
    VkDeviceMemory mem;
    uint32_t type;
    VkDeviceSize size, top;
    uint8_t *map;
    uint32_t live;
} page;

typedef struct piece {
    uint32_t page;
    VkDeviceSize size;
} piece;

typedef enum fail_mode { FAIL_NONE, FAIL_ALIGN, FAIL_TYPE, FAIL_OOM, FAIL_NO_MAP } fail_mode;

typedef struct test_alloc {
    host *h;
    VkPhysicalDeviceMemoryProperties props;
    page pages[MAX_PAGES];
    fail_mode fail;
    uint32_t live, calls, bad_requests;
    uint64_t live_bytes;
} test_alloc;

static int find_type(const test_alloc *a, uint32_t bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid)
{
    for (uint32_t t = 0; t < a->props.memoryTypeCount; t++) {
        VkMemoryPropertyFlags f = a->props.memoryTypes[t].propertyFlags;
        if ((bits & (1u << t)) && (f & want) == want && !(f & avoid)) return (int)t;
    }
    return -1;
}

static int pick_type(const test_alloc *a, const fasa_vk_memory_request *r)
{
    uint32_t bits = r->requirements.memoryTypeBits;
    int t = find_type(a, bits, r->required_flags | r->preferred_flags, r->avoided_flags);
    if (t < 0) t = find_type(a, bits, r->required_flags | r->preferred_flags, 0);
    return t >= 0 ? t : find_type(a, bits, r->required_flags, 0);
}

static bool new_page(test_alloc *a, page *p, uint32_t type, VkDeviceSize size)
{
    VkMemoryAllocateFlagsInfo fi = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO};
    fi.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
    VkMemoryAllocateInfo ai = {VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &fi, size, type};
    if (vkAllocateMemory(a->h->dev, &ai, NULL, &p->mem) != VK_SUCCESS) return false;
    p->type = type;
    p->size = size;
    p->top = PAGE_HEAD;
    p->live = 0;
    p->map = NULL;
    if ((a->props.memoryTypes[type].propertyFlags & HOST_MAPPABLE) == HOST_MAPPABLE)
        vkMapMemory(a->h->dev, p->mem, 0, VK_WHOLE_SIZE, 0, (void **)&p->map);
    return true;
}

/* A page of the type with room for size at align, or a new one. */
static page *place(test_alloc *a, uint32_t type, VkDeviceSize size, VkDeviceSize align, VkDeviceSize *at)
{
    page *empty = NULL;
    for (uint32_t i = 0; i < MAX_PAGES; i++) {
        page *p = &a->pages[i];
        if (!p->mem) {
            if (!empty) empty = p;
            continue;
        }
        VkDeviceSize off = (p->top + align - 1) / align * align;
        if (p->type == type && off + size <= p->size) {
            *at = off;
            return p;
        }
    }
    VkDeviceSize need = PAGE_HEAD + size + align;
    if (!empty || !new_page(a, empty, type, need > PAGE_BYTES ? need : PAGE_BYTES)) return NULL;
    *at = (empty->top + align - 1) / align * align;
    return empty;
}

static void note_request(test_alloc *a, const fasa_vk_memory_request *r)
{
    a->calls++;
    bool ok = (r->allocate_flags & VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT) && r->what && r->what[0] &&
              r->requirements.size > 0 && r->requirements.alignment > 0 &&
              (!r->map || (r->required_flags & HOST_MAPPABLE) == HOST_MAPPABLE);
    if (!ok) a->bad_requests++;
}

static VkResult ta_allocate(void *user, const fasa_vk_memory_request *r, fasa_vk_memory_allocation *out)
{
    test_alloc *a = user;
    note_request(a, r);
    int type = pick_type(a, r);
    VkDeviceSize at = 0;
    page *p = type < 0 || a->fail == FAIL_OOM ? NULL
                                              : place(a, (uint32_t)type, r->requirements.size,
                                                      r->requirements.alignment, &at);
    piece *pc = p ? malloc(sizeof *pc) : NULL;
    if (!pc) return VK_ERROR_OUT_OF_DEVICE_MEMORY;
    pc->page = (uint32_t)(p - a->pages);
    pc->size = r->requirements.size;
    p->top = at + r->requirements.size;
    p->live++;
    a->live++;
    a->live_bytes += pc->size;
    out->memory = p->mem;
    out->offset = at + (a->fail == FAIL_ALIGN ? 4 : 0);
    out->memory_type_index = a->fail == FAIL_TYPE ? a->props.memoryTypeCount : (uint32_t)type;
    /* mapped only where libfasa needs it: the rest behaves like device-local
     * memory of a discrete GPU (tables written by commands, staged copies) */
    out->mapped = r->map && p->map && a->fail != FAIL_NO_MAP ? p->map + at : NULL;
    out->allocation = pc;
    return VK_SUCCESS;
}

static void ta_free(void *user, void *allocation)
{
    test_alloc *a = user;
    piece *pc = allocation;
    page *p = &a->pages[pc->page];
    a->live--;
    a->live_bytes -= pc->size;
    if (--p->live == 0) {
        vkFreeMemory(a->h->dev, p->mem, NULL);
        memset(p, 0, sizeof *p);
    }
    free(pc);
}

static fasa_vk_memory_allocator allocator_of(test_alloc *a)
{
    fasa_vk_memory_allocator m = {ta_allocate, ta_free, a};
    return m;
}

/* ------------------------------------------------------------------------ */
/* The host's data and libfasa objects                                       */
/* ------------------------------------------------------------------------ */

typedef struct data {
    hbuf k, v, q, o;             /* k, v: N0 tokens; q at offset 128; o: 3 slots */
    float *kf;
} data;

typedef struct results {
    float o[3][N_Q];             /* FASA-C FASA step, FASA-C dense step, FASA-M (row cache) step */
    float *k_back;               /* K of layer 1 read back */
} results;

static fasa_context *embedded(const fasa_vk_embed *e, uint64_t budget, char *msg, size_t msg_size,
                              fasa_status *st)
{
    fasa_context_desc cd = {.backend = FASA_BACKEND_VULKAN, .embed = e, .error_message = msg,
                            .error_message_size = msg_size, .device_memory_budget = budget};
    fasa_context *ctx = NULL;
    *st = fasa_context_create(&cd, &ctx);
    return ctx;
}

static fasa_kv_cache *make_cache(fasa_context *ctx, fasa_calibration *cal, fasa_placement where, uint32_t cap,
                                 fasa_status *st)
{
    fasa_kv_cache_desc cd = {.shape = shape, .capacity = cap, .dtype = FASA_DTYPE_F16, .calibration = cal,
                             .flags = FASA_CACHE_NO_DENSE_LAYERS, .placement = where};
    if (where == FASA_PLACEMENT_OFFLOAD) {
        cd.fetch = FASA_FETCH_STAGED;
        cd.row_cache_rows = 1024; /* one step's rows: n_fac 256 x 4 query heads per KV head */
    }
    fasa_kv_cache *c = NULL;
    *st = fasa_kv_cache_create(ctx, &cd, &c);
    return c;
}

static data make_data(host *h)
{
    data d;
    size_t row = (size_t)shape.n_kv_heads * shape.head_dim;
    VkBufferUsageFlags src = VK_BUFFER_USAGE_TRANSFER_SRC_BIT;
    d.k = make_buffer(h, N0 * row * 4, src);
    d.v = make_buffer(h, N0 * row * 4, src);
    d.q = make_buffer(h, 128 + N_Q * 4, src);
    d.o = make_buffer(h, 3 * N_Q * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT);
    vt_rng r = {77};
    d.kf = d.k.map;
    float *vf = d.v.map, *q = (float *)((char *)d.q.map + 128);
    for (size_t i = 0; i < N0 * row; i++) d.kf[i] = vt_normal(&r), vf[i] = vt_normal(&r);
    for (size_t i = 0; i < N_Q; i++) q[i] = vt_normal(&r);
    return d;
}

typedef struct wraps {
    fasa_buffer *k, *v, *q, *o;
} wraps;

static wraps wrap_all(fasa_context *ctx, const data *d)
{
    wraps w = {0};
    VT_OK(ctx, fasa_vk_buffer_wrap(ctx, d->k.buf, 0, d->k.size, &w.k));
    VT_OK(ctx, fasa_vk_buffer_wrap(ctx, d->v.buf, 0, d->v.size, &w.v));
    VT_OK(ctx, fasa_vk_buffer_wrap(ctx, d->q.buf, 0, d->q.size, &w.q));
    VT_OK(ctx, fasa_vk_buffer_wrap(ctx, d->o.buf, 0, d->o.size, &w.o));
    return w;
}

static void unwrap_all(wraps *w)
{
    fasa_buffer_destroy(w->k);
    fasa_buffer_destroy(w->v);
    fasa_buffer_destroy(w->q);
    fasa_buffer_destroy(w->o);
}

static const fasa_decode_desc fasa_step = {.n_fac = 256, .n_sink = 2, .n_recent = 2};
static const fasa_decode_desc dense_step = {.mode = FASA_MODE_DENSE};

/* Appends N0 tokens to both layers of both caches and records three steps. */
static void record_steps(host *h, fasa_context *ctx, fasa_kv_cache *c1, fasa_kv_cache *c2, const wraps *w)
{
    for (uint32_t l = 0; l < shape.n_layers; l++) {
        VT_OK(ctx, fasa_vk_record_append(c1, l, N0, h->cmd, w->k, 0, w->v, 0, FASA_DTYPE_F32));
        VT_OK(ctx, fasa_vk_record_append(c2, l, N0, h->cmd, w->k, 0, w->v, 0, FASA_DTYPE_F32));
    }
    VT_OK(ctx, fasa_vk_record_decode(c1, 1, &fasa_step, h->cmd, w->q, 128, w->o, 0));
    VT_OK(ctx, fasa_vk_record_decode(c1, 0, &dense_step, h->cmd, w->q, 128, w->o, N_Q * 4));
    VT_OK(ctx, fasa_vk_record_decode(c2, 1, &fasa_step, h->cmd, w->q, 128, w->o, 2 * N_Q * 4));
}

/* ------------------------------------------------------------------------ */
/* The state a record call leaves bound                                      */
/* ------------------------------------------------------------------------ */

typedef struct probe {
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipeline pipe;
    VkDescriptorPool pool;
    VkDescriptorSet set;
    hbuf log;
} probe;

/* The host's pipeline: one storage buffer in set 0 and the same single push
 * constant range as libfasa's layout (compute, offset 0, 128 bytes), so
 * the two are compatible for push constants. */
static probe make_probe(host *h)
{
    probe p;
    memset(&p, 0, sizeof p);
    p.log = make_buffer(h, 64, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT);
    VkDescriptorSetLayoutBinding b = {0, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL};
    VkDescriptorSetLayoutCreateInfo li = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                          .bindingCount = 1, .pBindings = &b};
    vkCreateDescriptorSetLayout(h->dev, &li, NULL, &p.dsl);
    VkPushConstantRange range = {VK_SHADER_STAGE_COMPUTE_BIT, 0, 128};
    VkPipelineLayoutCreateInfo pl = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                     .pSetLayouts = &p.dsl, .pushConstantRangeCount = 1, .pPushConstantRanges = &range};
    vkCreatePipelineLayout(h->dev, &pl, NULL, &p.layout);
    VkShaderModuleCreateInfo mi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                   .codeSize = sizeof host_probe_spv, .pCode = host_probe_spv};
    VkShaderModule mod;
    vkCreateShaderModule(h->dev, &mi, NULL, &mod);
    VkComputePipelineCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO, .layout = p.layout};
    ci.stage = (VkPipelineShaderStageCreateInfo){.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                                                 .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = mod, .pName = "main"};
    vkCreateComputePipelines(h->dev, VK_NULL_HANDLE, 1, &ci, NULL, &p.pipe);
    vkDestroyShaderModule(h->dev, mod, NULL);
    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1};
    VkDescriptorPoolCreateInfo dp = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = 1,
                                     .poolSizeCount = 1, .pPoolSizes = &ps};
    vkCreateDescriptorPool(h->dev, &dp, NULL, &p.pool);
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorPool = p.pool,
                                      .descriptorSetCount = 1, .pSetLayouts = &p.dsl};
    vkAllocateDescriptorSets(h->dev, &ai, &p.set);
    VkDescriptorBufferInfo bi = {p.log.buf, 0, VK_WHOLE_SIZE};
    VkWriteDescriptorSet wr = {.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = p.set, .descriptorCount = 1,
                               .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .pBufferInfo = &bi};
    vkUpdateDescriptorSets(h->dev, 1, &wr, 0, NULL);
    return p;
}

static void destroy_probe(host *h, probe *p)
{
    vkDestroyPipeline(h->dev, p->pipe, NULL);
    vkDestroyPipelineLayout(h->dev, p->layout, NULL);
    vkDestroyDescriptorPool(h->dev, p->pool, NULL);
    vkDestroyDescriptorSetLayout(h->dev, p->dsl, NULL);
    free_buffer(h, &p->log);
}

/* Binds the host's pipeline (always: libfasa's is bound after a record
 * call), optionally its set and a pushed value, and dispatches once. */
static void probe_dispatch(host *h, probe *p, bool bind_set, const uint32_t *value)
{
    vkCmdBindPipeline(h->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipe);
    if (bind_set) vkCmdBindDescriptorSets(h->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, 1, &p->set, 0, NULL);
    if (value) vkCmdPushConstants(h->cmd, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, 4, value);
    vkCmdDispatch(h->cmd, 1, 1, 1);
}

static void host_barrier(host *h, VkPipelineStageFlags src, VkAccessFlags src_access, VkPipelineStageFlags dst,
                         VkAccessFlags dst_access)
{
    VkMemoryBarrier mb = {VK_STRUCTURE_TYPE_MEMORY_BARRIER, NULL, src_access, dst_access};
    vkCmdPipelineBarrier(h->cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* host dispatch (set + push A) | libfasa dense decode | host dispatch with
 * the pipeline rebound only | barrier | host dispatch with push B: the log
 * holds A, libfasa's push word (not A: the host must push again), B, and o
 * equals the same step recorded without the host's work around it. */
static void bound_state(host *h, fasa_context *ctx, fasa_kv_cache *c, const wraps *w, const data *d,
                        const float *o_expect)
{
    probe p = make_probe(h);
    uint32_t *log = p.log.map;
    memset(log, 0, 32);
    const uint32_t a = 0xa5a5a5a5u, b = 0x5a5a5a5bu;
    begin(h);
    probe_dispatch(h, &p, true, &a);
    VT_OK(ctx, fasa_vk_record_decode(c, 0, &dense_step, h->cmd, w->q, 128, w->o, N_Q * 4));
    probe_dispatch(h, &p, false, NULL);
    host_barrier(h, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                 VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    probe_dispatch(h, &p, false, &b);
    host_barrier(h, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                 VK_ACCESS_HOST_READ_BIT);
    end_and_submit(h);
    printf("bound state: host dispatches logged count %u: 0x%08x, 0x%08x (libfasa's push word), 0x%08x\n", log[0],
           log[1], log[2], log[3]);
    VT_CHECK(log[0] == 3 && log[1] == a && log[3] == b, "the host's dispatches around a record call did not run "
             "with its set and pushed values (count %u, 0x%x, 0x%x)", log[0], log[1], log[3]);
    VT_CHECK(log[2] != a, "the host's push constant survived a record call; the header says libfasa's are bound");
    const float *o = (const float *)((const char *)d->o.map + N_Q * 4);
    VT_CHECK(memcmp(o, o_expect, N_Q * 4) == 0, "the decode between the host's dispatches gave another output");
    destroy_probe(h, &p);
}

/* ------------------------------------------------------------------------ */
/* One run: two caches, recorded appends and steps                           */
/* ------------------------------------------------------------------------ */

typedef struct run_cfg {
    const char *name;
    const fasa_vk_embed *embed;
    int create_submits;          /* submissions expected from the two cache creations */
    bool explicit_init;          /* fasa_vk_record_kv_cache_init for the first cache */
    bool check_bound_state;
} run_cfg;

static void run(host *h, const run_cfg *cfg, const data *d, results *out)
{
    char msg[1024] = "";
    fasa_status st;
    uint32_t s0 = spy.submits;
    fasa_context *ctx = embedded(cfg->embed, 0, msg, sizeof msg, &st);
    VT_CHECK(st == FASA_OK, "%s: embedded context: %s", cfg->name, msg);
    if (!ctx) exit(1);
    VT_CHECK(spy.submits == s0, "%s: context creation submitted to the host's queue", cfg->name);
    fasa_calibration *cal = vt_calibration(ctx, &shape, 8, false, 99);
    fasa_kv_cache *c1 = make_cache(ctx, cal, FASA_PLACEMENT_DEVICE, CAP, &st);
    VT_OK(ctx, st);
    fasa_kv_cache *c2 = make_cache(ctx, cal, FASA_PLACEMENT_OFFLOAD, CAP, &st);
    VT_OK(ctx, st);
    if (!c1 || !c2) exit(1);
    printf("%s: cache creation submitted %u time(s) to the host's queue (expected %d)\n", cfg->name,
           spy.submits - s0, cfg->create_submits);
    VT_CHECK(spy.submits - s0 == (uint32_t)cfg->create_submits, "%s: cache creation submitted %u times, not %d",
             cfg->name, spy.submits - s0, cfg->create_submits);
    wraps w = wrap_all(ctx, d);
    uint32_t s1 = spy.submits;
    begin(h);
    if (cfg->explicit_init) VT_OK(ctx, fasa_vk_record_kv_cache_init(c1, h->cmd));
    record_steps(h, ctx, c1, c2, &w);
    VT_OK(ctx, fasa_vk_record_kv_cache_init(c1, h->cmd)); /* nothing pending any more: records nothing */
    end_and_submit(h);
    memcpy(out->o, d->o.map, sizeof out->o);
    fasa_transfer_stats ts;
    fasa_memory_report mr;
    uint64_t used = 0, budget = 1;
    VT_OK(ctx, fasa_kv_cache_transfer_stats(c2, &ts, false));
    VT_OK(ctx, fasa_kv_cache_memory(c1, &mr));
    VT_OK(ctx, fasa_context_device_memory(ctx, &used, &budget));
    printf("%s: %llu bytes of device memory in use (budget %llu), FASA-M step rows %llu\n", cfg->name,
           (unsigned long long)used, (unsigned long long)budget, (unsigned long long)ts.rows_needed);
    if (cfg->check_bound_state) bound_state(h, ctx, c1, &w, d, out->o[1]);
    VT_OK(ctx, fasa_kv_cache_truncate(c2, 10));
    VT_CHECK(spy.submits == s1, "%s: record calls, transfer_stats, memory or truncate submitted %u times", cfg->name,
             spy.submits - s1);
    out->k_back = malloc((size_t)N0 * shape.n_kv_heads * shape.head_dim * 4);
    VT_OK(ctx, fasa_kv_cache_read(c1, 1, 0, N0, out->k_back, NULL)); /* a listed call: may submit */
    unwrap_all(&w);
    fasa_kv_cache_destroy(c1);
    fasa_kv_cache_destroy(c2);
    fasa_calibration_destroy(cal);
    VT_OK(ctx, fasa_context_device_memory(ctx, &used, &budget));
    printf("%s: %llu bytes in use once the caches are gone (the staging buffer)\n", cfg->name, (unsigned long long)used);
    fasa_context_destroy(ctx);
}

static void same_results(const char *what, const results *a, const results *b)
{
    static const char *const step[3] = {"FASA-C FASA step", "FASA-C dense step", "FASA-M row-cache step"};
    for (int i = 0; i < 3; i++)
        VT_CHECK(memcmp(a->o[i], b->o[i], N_Q * 4) == 0, "%s: the %s differs from libfasa's own memory", what, step[i]);
    size_t n = (size_t)N0 * shape.n_kv_heads * shape.head_dim;
    VT_CHECK(memcmp(a->k_back, b->k_back, n * 4) == 0, "%s: K read back differs", what);
    printf("%s: the three outputs and K read back equal libfasa's own allocations bit for bit\n", what);
}

/* FASA_VK_EMBED_RECORD_CACHE_INIT with a standalone call first: the init
 * goes into libfasa's own submission (the host's queue, a listed call). */
static void standalone_first(const fasa_vk_embed *e, const data *d, const results *expect)
{
    char msg[1024] = "";
    fasa_status st;
    fasa_context *ctx = embedded(e, 0, msg, sizeof msg, &st);
    VT_CHECK(st == FASA_OK, "standalone first: %s", msg);
    if (!ctx) return;
    fasa_calibration *cal = vt_calibration(ctx, &shape, 8, false, 99);
    fasa_kv_cache *c = make_cache(ctx, cal, FASA_PLACEMENT_OFFLOAD, CAP, &st);
    VT_OK(ctx, st);
    const float *vf = d->v.map, *q = (const float *)((const char *)d->q.map + 128);
    float o[N_Q];
    for (uint32_t l = 0; st == FASA_OK && l < shape.n_layers; l++)
        VT_OK(ctx, fasa_kv_cache_append(c, l, N0, d->kf, vf, FASA_DTYPE_F32));
    VT_OK(ctx, fasa_decode_host(c, 1, &fasa_step, q, o, NULL));
    VT_CHECK(memcmp(o, expect->o[2], sizeof o) == 0, "standalone calls on a cache with a pending init differ");
    printf("recorded init, standalone calls first: the FASA-M step equals the recorded one bit for bit\n");
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
}

/* ------------------------------------------------------------------------ */
/* Budget, bad allocator answers, bad arguments                              */
/* ------------------------------------------------------------------------ */

static bool says(fasa_status st, fasa_status want, const char *msg, const char *a, const char *b)
{
    return st == want && strstr(msg, a) && (!b || strstr(msg, b));
}

static void budget_checks(const fasa_vk_embed *e, test_alloc *ta)
{
    char msg[1024] = "";
    fasa_status st;
    fasa_context *ctx = embedded(e, 1u << 20, msg, sizeof msg, &st); /* below the 8 MiB staging buffer */
    printf("budget 1 MiB: %s\n", msg);
    VT_CHECK(!ctx && says(st, FASA_ERROR_OUT_OF_DEVICE_MEMORY, msg, "desc.device_memory_budget", "1048576 bytes"),
             "context over budget: %s: %s", fasa_status_string(st), msg);
    VT_CHECK(ta->live == 0, "a refused context left %u allocations", ta->live);
    ctx = embedded(e, 72ull << 20, msg, sizeof msg, &st);
    VT_CHECK(st == FASA_OK, "context with a 72 MiB budget: %s", msg);
    if (!ctx) return;
    fasa_calibration *cal = vt_calibration(ctx, &shape, 8, false, 5);
    uint64_t used0 = 0, budget = 0, used1 = 0;
    uint32_t live0 = ta->live;
    VT_OK(ctx, fasa_context_device_memory(ctx, &used0, &budget));
    fasa_kv_cache *big = make_cache(ctx, cal, FASA_PLACEMENT_DEVICE, 1u << 20, &st);
    const char *m = fasa_context_last_error(ctx);
    printf("budget 72 MiB, a 1M-token cache: %s\n", m);
    VT_CHECK(!big && says(st, FASA_ERROR_OUT_OF_DEVICE_MEMORY, m, "desc.device_memory_budget", "in use"),
             "cache over budget: %s: %s", fasa_status_string(st), m);
    VT_OK(ctx, fasa_context_device_memory(ctx, &used1, &budget));
    VT_CHECK(used1 == used0 && ta->live == live0 && used0 == ta->live_bytes,
             "a refused cache leaked: %llu -> %llu bytes, %u -> %u allocations", (unsigned long long)used0,
             (unsigned long long)used1, live0, ta->live);
    fasa_kv_cache *small = make_cache(ctx, cal, FASA_PLACEMENT_DEVICE, CAP, &st);
    VT_OK(ctx, st);
    fasa_kv_cache_destroy(small);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
    VT_CHECK(ta->live == 0, "%u allocations left after destroy", ta->live);
}

/* The budget on libfasa's own allocations (a standalone context) and on a
 * backend that does not enforce one. */
static void budget_other(void)
{
    char msg[1024] = "";
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .device_memory_budget = 1u << 30, .error_message = msg,
                            .error_message_size = sizeof msg};
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&cd, &ctx);
    VT_CHECK(!ctx && says(st, FASA_ERROR_UNSUPPORTED, msg, "desc.device_memory_budget", NULL),
             "budget on the CPU backend: %s: %s", fasa_status_string(st), msg);
    cd.backend = FASA_BACKEND_VULKAN;
    cd.device_memory_budget = 24ull << 20;
    st = fasa_context_create(&cd, &ctx);
    VT_CHECK(st == FASA_OK, "standalone vulkan context with a budget: %s", msg);
    if (!ctx) return;
    fasa_calibration *cal = vt_calibration(ctx, &shape, 8, false, 5);
    fasa_kv_cache *big = make_cache(ctx, cal, FASA_PLACEMENT_DEVICE, 1u << 18, &st);
    VT_CHECK(!big && says(st, FASA_ERROR_OUT_OF_DEVICE_MEMORY, fasa_context_last_error(ctx), "desc.device_memory_budget",
                          NULL), "standalone cache over budget: %s", fasa_context_last_error(ctx));
    uint64_t used = 0, budget = 0;
    VT_OK(ctx, fasa_context_device_memory(ctx, &used, &budget));
    VT_CHECK(budget == 24ull << 20 && used >= (8u << 20) && used < (9u << 20), "standalone: %llu bytes in use",
             (unsigned long long)used);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
}

static void bad_answer(const fasa_vk_embed *e, test_alloc *ta, fail_mode mode, fasa_status want, const char *text)
{
    char msg[1024] = "";
    fasa_status st;
    bool at_create = mode == FAIL_NO_MAP || mode == FAIL_OOM;
    ta->fail = at_create ? mode : FAIL_NONE;
    fasa_context *ctx = embedded(e, 0, msg, sizeof msg, &st);
    if (at_create) {
        VT_CHECK(!ctx && says(st, want, msg, "memory_allocator", text), "allocator mode %d at context creation: %s: %s",
                 mode, fasa_status_string(st), msg);
        printf("allocator mode %d: %s\n", mode, msg);
    } else if (ctx) {
        fasa_calibration *cal = vt_calibration(ctx, &shape, 8, false, 5);
        uint32_t live0 = ta->live;
        ta->fail = mode;
        fasa_kv_cache *c = make_cache(ctx, cal, FASA_PLACEMENT_DEVICE, CAP, &st);
        const char *m = fasa_context_last_error(ctx);
        printf("allocator mode %d: %s\n", mode, m);
        VT_CHECK(!c && says(st, want, m, "memory_allocator", text), "allocator mode %d: %s: %s", mode,
                 fasa_status_string(st), m);
        VT_CHECK(ta->live == live0, "allocator mode %d: a refused answer was not freed", mode);
        ta->fail = FAIL_NONE;
        fasa_calibration_destroy(cal);
        fasa_context_destroy(ctx);
    }
    ta->fail = FAIL_NONE;
    VT_CHECK(ta->live == 0, "allocator mode %d: %u allocations left", mode, ta->live);
}

static void bad_embeds(const fasa_vk_embed *base)
{
    char msg[1024] = "";
    fasa_status st;
    fasa_vk_embed e = *base;
    e.memory_allocator.free = NULL;
    fasa_context *ctx = embedded(&e, 0, msg, sizeof msg, &st);
    VT_CHECK(!ctx && says(st, FASA_ERROR_INVALID_ARGUMENT, msg, "desc.embed->memory_allocator", NULL),
             "half an allocator: %s", msg);
    e = *base;
    e.flags = 0x80;
    ctx = embedded(&e, 0, msg, sizeof msg, &st);
    VT_CHECK(!ctx && says(st, FASA_ERROR_INVALID_ARGUMENT, msg, "desc.embed->flags", "0x80"), "flag 0x80: %s", msg);
    VT_CHECK(fasa_vk_record_kv_cache_init(NULL, VK_NULL_HANDLE) == FASA_ERROR_INVALID_ARGUMENT, "init of NULL");
    fasa_context *sa = vt_context(FASA_BACKEND_VULKAN, 0);
    fasa_calibration *cal = vt_calibration(sa, &shape, 8, false, 5);
    fasa_kv_cache *c = make_cache(sa, cal, FASA_PLACEMENT_DEVICE, 64, &st);
    VT_OK(sa, st);
    VkCommandBuffer fake = (VkCommandBuffer)(uintptr_t)1;
    VT_CHECK(fasa_vk_record_kv_cache_init(c, fake) == FASA_ERROR_INVALID_ARGUMENT &&
                 strstr(fasa_context_last_error(sa), "owns its device"),
             "init on a standalone context: %s", fasa_context_last_error(sa));
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(sa);
}

int main(void)
{
    host h;
    memset(&h, 0, sizeof h);
    h.sync_validation = true;
    create_instance(&h);
    create_device(&h);
    data d = make_data(&h);
    test_alloc ta;
    memset(&ta, 0, sizeof ta);
    ta.h = &h;
    vkGetPhysicalDeviceMemoryProperties(h.pd, &ta.props);

    fasa_vk_embed own = host_embed(&h);
    own.get_instance_proc_addr = spy_gipa;
    fasa_vk_embed hosted = own, hosted_init = own;
    hosted.memory_allocator = hosted_init.memory_allocator = allocator_of(&ta);
    hosted_init.flags = FASA_VK_EMBED_RECORD_CACHE_INIT;

    /* libfasa's own memory (mapped on lavapipe): the row cache's state is
     * filled by one submission at creation */
    results r_own, r_host, r_init;
    run_cfg c_own = {"own memory", &own, 1, false, false};
    run(&h, &c_own, &d, &r_own);
    VT_CHECK(spy.allocs > 0 && spy.frees == spy.allocs, "own memory: %u vkAllocateMemory, %u vkFreeMemory", spy.allocs,
             spy.frees);

    /* the host's allocator, device memory unmapped: both caches need init
     * commands (tables by vkCmdUpdateBuffer), submitted at creation */
    memset(&spy, 0, sizeof spy);
    run_cfg c_host = {"host allocator", &hosted, 2, false, false};
    run(&h, &c_host, &d, &r_host);
    same_results("host allocator", &r_own, &r_host);

    /* the same with FASA_VK_EMBED_RECORD_CACHE_INIT: no submission at all
     * outside the listed calls; the first cache's init recorded explicitly,
     * the second's by its first recorded append */
    run_cfg c_init = {"host allocator, recorded init", &hosted_init, 0, true, true};
    run(&h, &c_init, &d, &r_init);
    same_results("recorded init", &r_own, &r_init);
    VT_CHECK(spy.allocs == 0 && spy.maps == 0 && spy.frees == 0,
             "with an allocator libfasa still called vkAllocateMemory %u, vkMapMemory %u, vkFreeMemory %u times",
             spy.allocs, spy.maps, spy.frees);
    printf("host allocator: %u requests, %u live after destroy, %u malformed\n", ta.calls, ta.live, ta.bad_requests);
    VT_CHECK(ta.calls > 0 && ta.live == 0 && ta.live_bytes == 0 && ta.bad_requests == 0,
             "allocator: %u calls, %u live (%llu bytes), %u malformed requests", ta.calls, ta.live,
             (unsigned long long)ta.live_bytes, ta.bad_requests);

    standalone_first(&hosted_init, &d, &r_own);
    VT_CHECK(ta.live == 0, "standalone first: %u allocations left", ta.live);
    budget_checks(&hosted_init, &ta);
    budget_other();
    bad_answer(&hosted, &ta, FAIL_NO_MAP, FASA_ERROR_INVALID_ARGUMENT, "mapped NULL");
    bad_answer(&hosted, &ta, FAIL_OOM, FASA_ERROR_OUT_OF_DEVICE_MEMORY, "VK_ERROR_OUT_OF_DEVICE_MEMORY");
    bad_answer(&hosted, &ta, FAIL_ALIGN, FASA_ERROR_INVALID_ARGUMENT, "alignment");
    bad_answer(&hosted, &ta, FAIL_TYPE, FASA_ERROR_INVALID_ARGUMENT, "memoryTypeBits");
    bad_embeds(&hosted);

    for (int i = 0; i < 3; i++) free(i == 0 ? r_own.k_back : i == 1 ? r_host.k_back : r_init.k_back);
    free_buffer(&h, &d.k);
    free_buffer(&h, &d.v);
    free_buffer(&h, &d.q);
    free_buffer(&h, &d.o);
    destroy_host(&h);
    VT_CHECK(h.n_messages == 0, "%u validation message(s) on the host's instance", h.n_messages);
    return vt_finish("test_vk_embed_contract");
}
