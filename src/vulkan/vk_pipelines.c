/* Vulkan backend pipelines: one push-constant-only layout, the embedded
 * SPIR-V, specialization constants, and the optional on-disk pipeline cache
 * under ctx->cache_dir.  Pipelines of a storage dtype are built once per
 * context, when the first cache of that dtype is created. */
#include "vk_internal.h"
#include "vk_spirv.h"
#include "blobcache.h"

#include <stdio.h>
#include <string.h>

typedef struct kernel_info {
    const char *name[VK_DT_COUNT];  /* per storage dtype (f16, f32, bf16); the same name when dtype-free */
    const char *spirv[VK_DT_COUNT]; /* the SPIR-V module each one runs */
    bool ext;              /* external K/V only: EXT_KV = 1 (sync reads the engine's K anyway) */
    vk_kernel single;      /* a batch variant: its single kernel (specialization), else VK_K_COUNT */
} kernel_info;

#define PER_DTYPE(n, m) {n "_f16", n "_f32", n "_bf16"}, {m "_f16", m "_f32", m "_bf16"}
#define ONE(n) {n, n, n}, {n, n, n}

#define NB VK_K_COUNT /* not a batch variant */
static const kernel_info kernels[VK_K_COUNT] = {
    [VK_K_APPEND] = {PER_DTYPE("append", "append"), false, NB},
    [VK_K_TIP] = {PER_DTYPE("tip", "tip"), false, NB},
    [VK_K_TOPK_SCAN] = {ONE("topk_scan"), false, NB},
    [VK_K_TOPK_PASS] = {ONE("topk_pass"), false, NB},
    [VK_K_FAC] = {PER_DTYPE("fac", "fac"), false, NB},
    [VK_K_FAC8] = {PER_DTYPE("fac8", "fac8"), false, NB},
    [VK_K_DENSE] = {PER_DTYPE("dense", "dense"), false, NB},
    [VK_K_DENSE8] = {PER_DTYPE("dense8", "dense8"), false, NB},
    [VK_K_REDUCE] = {ONE("reduce"), false, NB},
    [VK_K_FETCH] = {ONE("fetch"), false, NB},
    [VK_K_SYNC] = {PER_DTYPE("sync", "sync"), true, NB},
    [VK_K_TIP_X] = {PER_DTYPE("tip_ext", "tip"), true, NB},
    [VK_K_FAC_X] = {PER_DTYPE("fac_ext", "fac"), true, NB},
    [VK_K_FAC8_X] = {PER_DTYPE("fac8_ext", "fac8"), true, NB},
    [VK_K_DENSE_X] = {PER_DTYPE("dense_ext", "dense"), true, NB},
    [VK_K_DENSE8_X] = {PER_DTYPE("dense8_ext", "dense8"), true, NB},
    [VK_K_CONVERT] = {ONE("convert"), false, NB},
    [VK_K_TIP_B] = {PER_DTYPE("tip_b", "tip_b"), false, VK_K_TIP},
    [VK_K_TIP_XB] = {PER_DTYPE("tip_b_ext", "tip_b"), true, VK_K_TIP_X},
    [VK_K_TOPK_SCAN_B] = {ONE("topk_scan_b"), false, VK_K_TOPK_SCAN},
    [VK_K_TOPK_PASS_B] = {ONE("topk_pass_b"), false, VK_K_TOPK_PASS},
    [VK_K_FAC_B] = {PER_DTYPE("fac_b", "fac_b"), false, VK_K_FAC},
    [VK_K_FAC8_B] = {PER_DTYPE("fac8_b", "fac8_b"), false, VK_K_FAC8},
    [VK_K_DENSE_B] = {PER_DTYPE("dense_b", "dense_b"), false, VK_K_DENSE},
    [VK_K_DENSE8_B] = {PER_DTYPE("dense8_b", "dense8_b"), false, VK_K_DENSE8},
    [VK_K_FAC_XB] = {PER_DTYPE("fac_b_ext", "fac_b"), true, VK_K_FAC_X},
    [VK_K_FAC8_XB] = {PER_DTYPE("fac8_b_ext", "fac8_b"), true, VK_K_FAC8_X},
    [VK_K_DENSE_XB] = {PER_DTYPE("dense_b_ext", "dense_b"), true, VK_K_DENSE_X},
    [VK_K_DENSE8_XB] = {PER_DTYPE("dense8_b_ext", "dense8_b"), true, VK_K_DENSE8_X},
    [VK_K_REDUCE_B] = {ONE("reduce_b"), false, VK_K_REDUCE},
    [VK_K_CONVERT_B] = {ONE("convert_b"), false, VK_K_CONVERT},
};

vk_kernel fasa__vk_batch_kernel(vk_kernel k)
{
    for (int b = 0; b < VK_K_COUNT; b++)
        if (kernels[b].single == k) return (vk_kernel)b;
    return VK_K_COUNT;
}

bool fasa__vk_kernel_has_dtype(vk_kernel k) { return strcmp(kernels[k].name[0], kernels[k].name[1]) != 0; }

const char *fasa__vk_kernel_name(vk_kernel k, int dtype) { return kernels[k].name[dtype]; }

static const fasa_vk_spirv *find_spirv(const char *name)
{
    for (uint32_t i = 0; i < fasa__vk_spirv_count; i++)
        if (strcmp(fasa__vk_spirv[i].name, name) == 0) return &fasa__vk_spirv[i];
    return NULL;
}

/* Specialization constants of a kernel: ids[i] = values[i]. */
static uint32_t spec_values(const vk_context *vk, vk_kernel k, uint32_t *id, uint32_t *v)
{
    uint32_t ext = kernels[k].ext && k != VK_K_SYNC; /* EXT_KV (constant_id 3) */
    if (kernels[k].single != NB) k = kernels[k].single; /* a batch variant: its kernel's constants */
    switch (k) {
    case VK_K_APPEND:
    case VK_K_SYNC: id[0] = 0, v[0] = VK_WG_APPEND; return 1;
    case VK_K_TIP:
    case VK_K_TIP_X: id[0] = 0, v[0] = VK_WG_TIP; id[1] = 2, v[1] = vk->tun.qmax; id[2] = 3, v[2] = ext; return 3;
    case VK_K_TOPK_SCAN: return 0;
    case VK_K_TOPK_PASS: id[0] = 0, v[0] = VK_WG_TOPK; return 1;
    case VK_K_FAC:
    case VK_K_FAC8:
    case VK_K_DENSE:
    case VK_K_DENSE8:
    case VK_K_FAC_X:
    case VK_K_FAC8_X:
    case VK_K_DENSE_X:
    case VK_K_DENSE8_X:
        id[0] = 0, v[0] = VK_WG_ATTEND; id[1] = 2, v[1] = FASA_MAX_HEAD_DIM; id[2] = 3, v[2] = ext; return 3;
    case VK_K_REDUCE: id[0] = 0, v[0] = VK_WG_REDUCE; id[1] = 1, v[1] = VK_MAX_SPLITS; return 2;
    case VK_K_FETCH: id[0] = 0, v[0] = VK_WG_FETCH; id[1] = 1, v[1] = VK_FETCH_RPW; return 2;
    case VK_K_CONVERT: id[0] = 0, v[0] = VK_WG_CONVERT; return 1;
    default: return 0;
    }
}

/* The two build calls, each a point of the BUILD test hook (fasa_debug.h):
 * a hit fails it with VK_ERROR_OUT_OF_HOST_MEMORY, as a driver whose
 * compiler runs out of memory does. */
static VkResult create_module(vk_context *vk, const fasa_vk_spirv *spv, VkShaderModule *out)
{
    if (fasa__fault(vk->ctx, FASA_FAULT_BUILD)) return VK_ERROR_OUT_OF_HOST_MEMORY;
    VkShaderModuleCreateInfo mi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    mi.codeSize = spv->size;
    mi.pCode = spv->code;
    return vk->fn.vkCreateShaderModule(vk->device, &mi, vk->vk_alloc, out);
}

static VkResult create_pipeline(vk_context *vk, const VkComputePipelineCreateInfo *ci, VkPipeline *out)
{
    if (fasa__fault(vk->ctx, FASA_FAULT_BUILD)) {
        *out = VK_NULL_HANDLE; /* as vkCreateComputePipelines leaves a failed pipeline */
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    }
    return vk->fn.vkCreateComputePipelines(vk->device, vk->pcache, 1, ci, vk->vk_alloc, out);
}

VkResult fasa__vk_pipeline_create(vk_context *vk, vk_kernel k, int dtype, uint32_t required_subgroup_size,
                                  VkPipelineCreateFlags flags, VkPipeline *out)
{
    const fasa_vk_spirv *spv = find_spirv(kernels[k].spirv[dtype]);
    if (!spv) return VK_ERROR_INITIALIZATION_FAILED;
    VkShaderModule module = VK_NULL_HANDLE;
    VkResult r = create_module(vk, spv, &module);
    if (r != VK_SUCCESS) return r;
    uint32_t ids[4], values[4];
    VkSpecializationMapEntry entries[4];
    uint32_t n = spec_values(vk, k, ids, values);
    for (uint32_t i = 0; i < n; i++) entries[i] = (VkSpecializationMapEntry){ids[i], i * 4, 4};
    VkSpecializationInfo si = {n, entries, n * 4, values};
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfo rs = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO};
    rs.requiredSubgroupSize = required_subgroup_size;
    VkComputePipelineCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    ci.flags = flags;
    ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    ci.stage.pNext = required_subgroup_size ? &rs : NULL;
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = module;
    ci.stage.pName = "main";
    ci.stage.pSpecializationInfo = n ? &si : NULL;
    ci.layout = vk->layout;
    r = create_pipeline(vk, &ci, out);
    vk->fn.vkDestroyShaderModule(vk->device, module, vk->vk_alloc);
    return r;
}

fasa_status fasa__vk_pipelines_ensure(vk_context *vk, int dtype, bool ext, bool batch)
{
    for (int k = 0; k < VK_K_COUNT; k++) {
        int d = fasa__vk_kernel_has_dtype((vk_kernel)k) ? dtype : 0;
        if (vk->pipes[k][d] || (kernels[k].ext && !ext) || (kernels[k].single != NB) != batch) continue;
        VkResult r = fasa__vk_pipeline_create(vk, (vk_kernel)k, d, 0, 0, &vk->pipes[k][d]);
        if (r != VK_SUCCESS) {
            char what[96];
            snprintf(what, sizeof what, "creating the %s pipeline", fasa__vk_kernel_name((vk_kernel)k, d));
            return fasa__vk_check(vk, fasa__vk_result(vk, r, what));
        }
    }
    return fasa__vk_check(vk, FASA_OK);
}

/* ------------------------------------------------------------------------ */
/* On-disk pipeline cache                                                    */
/* ------------------------------------------------------------------------ */

/* The entry: <cache_dir>/libfasa-vk-<vendor>-<device>-<driver>.bin in the
 * envelope of src/blobcache.h (kind "VKPC"), payload = vkGetPipelineCacheData.
 * Drivers validate the data's header themselves, but not always its body,
 * so the same rule as for OpenCL binaries applies: size, hash, key, and
 * the VkPipelineCacheHeaderVersionOne against this device before the
 * driver sees a byte; anything else is dropped and rewritten at destroy. */
#define VK_BLOB_KIND "VKPC"
#define VK_BLOB_MAX (64u << 20)

static bool cache_path(const vk_context *vk, char *out, size_t size)
{
    if (!vk->ctx->cache_dir || !vk->ctx->cache_dir[0]) return false;
    int n = snprintf(out, size, "%s/libfasa-vk-%04x-%04x-%08x.bin", vk->ctx->cache_dir, vk->props.vendorID,
                     vk->props.deviceID, vk->props.driverVersion);
    return n > 0 && (size_t)n < size;
}

/* The device and driver the data is for, and the shaders in it (so the
 * pipelines of older shaders do not pile up in the file). */
static void cache_key(const vk_context *vk, uint8_t key[FASA_SHA256_SIZE])
{
    const VkPhysicalDeviceProperties *p = &vk->props;
    fasa__blob_key k;
    fasa__blob_key_begin(&k, VK_BLOB_KIND);
    uint32_t ids[3] = {p->vendorID, p->deviceID, p->driverVersion};
    fasa__blob_key_add(&k, ids, sizeof ids);
    fasa__blob_key_add(&k, p->pipelineCacheUUID, VK_UUID_SIZE);
    fasa__blob_key_str(&k, p->deviceName);
    for (uint32_t i = 0; i < fasa__vk_spirv_count; i++) {
        fasa__blob_key_str(&k, fasa__vk_spirv[i].name);
        fasa__blob_key_add(&k, fasa__vk_spirv[i].code, fasa__vk_spirv[i].size);
    }
    fasa__blob_key_end(&k, key);
}

static uint32_t le32(const unsigned char *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* VkPipelineCacheHeaderVersionOne (little-endian by the specification):
 * headerSize, headerVersion, vendorID, deviceID, pipelineCacheUUID. */
static const char *check_header(void *user, const unsigned char *d, size_t n)
{
    const vk_context *vk = user;
    if (n < 16 + VK_UUID_SIZE) return "pipeline cache data shorter than its header";
    uint32_t header_size = le32(d);
    if (header_size < 16 + VK_UUID_SIZE || header_size > n) return "pipeline cache header of a bad size";
    if (le32(d + 4) != VK_PIPELINE_CACHE_HEADER_VERSION_ONE) return "unknown pipeline cache header version";
    if (le32(d + 8) != vk->props.vendorID || le32(d + 12) != vk->props.deviceID ||
        memcmp(d + 16, vk->props.pipelineCacheUUID, VK_UUID_SIZE) != 0)
        return "pipeline cache of another device or driver (vendorID, deviceID or pipelineCacheUUID differ)";
    return NULL;
}

/* Reads the checked cache data of this device into out; false when there
 * is none or it was rejected. */
static bool read_cache_file(vk_context *vk, const char *path, fasa__blob *out)
{
    uint8_t key[FASA_SHA256_SIZE];
    cache_key(vk, key);
    char why[256] = "";
    fasa__blob_result r = fasa__blob_load(vk->ctx, path, VK_BLOB_KIND, key, VK_BLOB_MAX, check_header, vk, out, why,
                                          sizeof why);
    if (r == FASA_BLOB_REJECTED)
        fasa__log(vk->ctx, FASA_LOG_WARN, "vulkan: pipeline cache %s rejected: %s; starting empty (rewritten at "
                  "context destroy)", path, why);
    if (r != FASA_BLOB_LOADED) return false;
    fasa__sha256(out->payload, out->size, vk->pcache_loaded);
    vk->has_pcache_loaded = true;
    fasa__log(vk->ctx, FASA_LOG_INFO, "vulkan: pipeline cache loaded from %s (%zu bytes)", path, out->size);
    return true;
}

static void save_cache(vk_context *vk)
{
    char path[4096], why[256] = "";
    if (!vk->owns_pcache || !cache_path(vk, path, sizeof path)) return;
    size_t size = 0;
    if (vk->fn.vkGetPipelineCacheData(vk->device, vk->pcache, &size, NULL) != VK_SUCCESS || size == 0 ||
        size > VK_BLOB_MAX)
        return;
    unsigned char *data = fasa__alloc(vk->ctx, size);
    if (!data) return;
    uint8_t key[FASA_SHA256_SIZE], digest[FASA_SHA256_SIZE];
    if (vk->fn.vkGetPipelineCacheData(vk->device, vk->pcache, &size, data) != VK_SUCCESS) size = 0;
    const char *bad = size ? check_header(vk, data, size) : "no data";
    if (!bad) fasa__sha256(data, size, digest);
    if (bad) {
        fasa__log(vk->ctx, FASA_LOG_INFO, "vulkan: pipeline cache data not saved: %s", bad);
    } else if (vk->has_pcache_loaded && memcmp(digest, vk->pcache_loaded, sizeof digest) == 0) {
        fasa__log(vk->ctx, FASA_LOG_DEBUG, "vulkan: pipeline cache %s unchanged", path);
    } else {
        cache_key(vk, key);
        if (fasa__blob_store(vk->ctx->cache_dir, path, VK_BLOB_KIND, key, data, size, why, sizeof why) == 0)
            fasa__log(vk->ctx, FASA_LOG_DEBUG, "vulkan: saved pipeline cache %s (%zu bytes)", path, size);
        else
            fasa__log(vk->ctx, FASA_LOG_WARN, "vulkan: could not write pipeline cache %s: %s", path, why);
    }
    fasa__free(vk->ctx, data);
}

fasa_status fasa__vk_pipelines_init(vk_context *vk)
{
    VkPushConstantRange range = {VK_SHADER_STAGE_COMPUTE_BIT, 0, VK_PUSH_MAX};
    VkPipelineLayoutCreateInfo li = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    li.pushConstantRangeCount = 1;
    li.pPushConstantRanges = &range;
    VkResult r = vk->fn.vkCreatePipelineLayout(vk->device, &li, vk->vk_alloc, &vk->layout);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkCreatePipelineLayout");
    if (vk->pcache) return FASA_OK; /* the host's */
    char path[4096];
    fasa__blob data = {0};
    bool loaded = cache_path(vk, path, sizeof path) && read_cache_file(vk, path, &data);
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    ci.initialDataSize = loaded ? data.size : 0;
    ci.pInitialData = loaded ? data.payload : NULL;
    r = vk->fn.vkCreatePipelineCache(vk->device, &ci, vk->vk_alloc, &vk->pcache);
    fasa__blob_free(vk->ctx, &data);
    if (r != VK_SUCCESS && loaded) { /* a cache only saves time: start empty instead */
        fasa__log(vk->ctx, FASA_LOG_WARN, "vulkan: the driver refused the pipeline cache %s; starting empty", path);
        vk->has_pcache_loaded = false;
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        r = vk->fn.vkCreatePipelineCache(vk->device, &ci, vk->vk_alloc, &vk->pcache);
    }
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkCreatePipelineCache");
    vk->owns_pcache = true;
    return FASA_OK;
}

void fasa__vk_pipelines_destroy(vk_context *vk)
{
    if (vk->pcache) save_cache(vk);
    for (int k = 0; k < VK_K_COUNT; k++)
        for (int d = 0; d < VK_DT_COUNT; d++)
            if (vk->pipes[k][d]) vk->fn.vkDestroyPipeline(vk->device, vk->pipes[k][d], vk->vk_alloc);
    memset(vk->pipes, 0, sizeof vk->pipes);
    if (vk->owns_pcache && vk->pcache) vk->fn.vkDestroyPipelineCache(vk->device, vk->pcache, vk->vk_alloc);
    vk->pcache = VK_NULL_HANDLE;
    if (vk->layout) vk->fn.vkDestroyPipelineLayout(vk->device, vk->layout, vk->vk_alloc);
    vk->layout = VK_NULL_HANDLE;
}
