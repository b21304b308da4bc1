/* Vulkan backend pipelines: one push-constant-only layout, the embedded
 * SPIR-V, specialization constants, and the optional on-disk pipeline cache
 * under ctx->cache_dir.  Pipelines of a storage dtype are built once per
 * context, when the first cache of that dtype is created. */
#include "vk_internal.h"
#include "vk_spirv.h"

#include <stdio.h>
#include <string.h>

typedef struct kernel_info {
    const char *base;      /* SPIR-V name; "_f16"/"_f32" appended when per dtype */
    bool per_dtype;
} kernel_info;

static const kernel_info kernels[VK_K_COUNT] = {
    [VK_K_APPEND] = {"append", true},
    [VK_K_TIP] = {"tip", true},
    [VK_K_TOPK_SCAN] = {"topk_scan", false},
    [VK_K_TOPK_PASS] = {"topk_pass", false},
    [VK_K_FAC] = {"fac", true},
    [VK_K_FAC8] = {"fac8", true},
    [VK_K_DENSE] = {"dense", true},
    [VK_K_DENSE8] = {"dense8", true},
    [VK_K_REDUCE] = {"reduce", false},
    [VK_K_FETCH] = {"fetch", false},
};

bool fasa__vk_kernel_has_dtype(vk_kernel k) { return kernels[k].per_dtype; }

const char *fasa__vk_kernel_name(vk_kernel k, int dtype)
{
    static const char *names[VK_K_COUNT][2] = {
        {"append_f16", "append_f32"}, {"tip_f16", "tip_f32"}, {"topk_scan", "topk_scan"},
        {"topk_pass", "topk_pass"},   {"fac_f16", "fac_f32"}, {"fac8_f16", "fac8_f32"},
        {"dense_f16", "dense_f32"},   {"dense8_f16", "dense8_f32"}, {"reduce", "reduce"},
        {"fetch", "fetch"}};
    return names[k][dtype];
}

static const fasa_vk_spirv *find_spirv(const char *name)
{
    for (uint32_t i = 0; i < fasa__vk_spirv_count; i++)
        if (strcmp(fasa__vk_spirv[i].name, name) == 0) return &fasa__vk_spirv[i];
    return NULL;
}

/* Specialization constants of a kernel: ids[i] = values[i]. */
static uint32_t spec_values(const vk_context *vk, vk_kernel k, uint32_t *id, uint32_t *v)
{
    switch (k) {
    case VK_K_APPEND: id[0] = 0, v[0] = VK_WG_APPEND; return 1;
    case VK_K_TIP: id[0] = 0, v[0] = VK_WG_TIP; id[1] = 2, v[1] = vk->tun.qmax; return 2;
    case VK_K_TOPK_SCAN: return 0;
    case VK_K_TOPK_PASS: id[0] = 0, v[0] = VK_WG_TOPK; return 1;
    case VK_K_FAC:
    case VK_K_FAC8:
    case VK_K_DENSE:
    case VK_K_DENSE8: id[0] = 0, v[0] = VK_WG_ATTEND; id[1] = 2, v[1] = FASA_MAX_HEAD_DIM; return 2;
    case VK_K_REDUCE: id[0] = 0, v[0] = VK_WG_REDUCE; id[1] = 1, v[1] = VK_MAX_SPLITS; return 2;
    case VK_K_FETCH: id[0] = 0, v[0] = VK_WG_FETCH; id[1] = 1, v[1] = VK_FETCH_RPW; return 2;
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
    const fasa_vk_spirv *spv = find_spirv(fasa__vk_kernel_name(k, dtype));
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

fasa_status fasa__vk_pipelines_ensure(vk_context *vk, int dtype)
{
    for (int k = 0; k < VK_K_COUNT; k++) {
        int d = kernels[k].per_dtype ? dtype : 0;
        if (vk->pipes[k][d]) continue;
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

static bool cache_path(const vk_context *vk, char *out, size_t size)
{
    if (!vk->ctx->cache_dir || !vk->ctx->cache_dir[0]) return false;
    int n = snprintf(out, size, "%s/libfasa-vk-%04x-%04x-%08x.bin", vk->ctx->cache_dir, vk->props.vendorID,
                     vk->props.deviceID, vk->props.driverVersion);
    return n > 0 && (size_t)n < size;
}

/* Reads a cache file whose header matches this device; NULL otherwise. */
static void *read_cache_file(vk_context *vk, const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *data = NULL;
    long len = 0;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) > 32 && len < (64l << 20) && fseek(f, 0, SEEK_SET) == 0) {
        data = fasa__alloc(vk->ctx, (size_t)len);
        if (data && fread(data, 1, (size_t)len, f) != (size_t)len) {
            fasa__free(vk->ctx, data);
            data = NULL;
        }
    }
    fclose(f);
    const uint32_t *h = data;
    bool ok = data && h[0] >= 32 && h[1] == VK_PIPELINE_CACHE_HEADER_VERSION_ONE && h[2] == vk->props.vendorID &&
              h[3] == vk->props.deviceID && memcmp(h + 4, vk->props.pipelineCacheUUID, VK_UUID_SIZE) == 0;
    if (!ok) {
        if (data) fasa__log(vk->ctx, FASA_LOG_INFO, "vulkan: ignoring stale pipeline cache %s", path);
        fasa__free(vk->ctx, data);
        return NULL;
    }
    *size = (size_t)len;
    return data;
}

static void save_cache(vk_context *vk)
{
    char path[4096], tmp[4200];
    if (!vk->owns_pcache || !cache_path(vk, path, sizeof path)) return;
    size_t size = 0;
    if (vk->fn.vkGetPipelineCacheData(vk->device, vk->pcache, &size, NULL) != VK_SUCCESS || size == 0) return;
    void *data = fasa__alloc(vk->ctx, size);
    if (!data) return;
    if (vk->fn.vkGetPipelineCacheData(vk->device, vk->pcache, &size, data) == VK_SUCCESS) {
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "wb");
        bool ok = f && fwrite(data, 1, size, f) == size;
        if (f && fclose(f) != 0) ok = false;
        if (ok && rename(tmp, path) == 0)
            fasa__log(vk->ctx, FASA_LOG_DEBUG, "vulkan: saved pipeline cache %s (%zu bytes)", path, size);
        else {
            remove(tmp);
            fasa__log(vk->ctx, FASA_LOG_WARN, "vulkan: could not write pipeline cache %s", path);
        }
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
    size_t size = 0;
    void *data = cache_path(vk, path, sizeof path) ? read_cache_file(vk, path, &size) : NULL;
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    ci.initialDataSize = size;
    ci.pInitialData = data;
    r = vk->fn.vkCreatePipelineCache(vk->device, &ci, vk->vk_alloc, &vk->pcache);
    fasa__free(vk->ctx, data);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkCreatePipelineCache");
    vk->owns_pcache = true;
    return FASA_OK;
}

void fasa__vk_pipelines_destroy(vk_context *vk)
{
    if (vk->pcache) save_cache(vk);
    for (int k = 0; k < VK_K_COUNT; k++)
        for (int d = 0; d < 2; d++)
            if (vk->pipes[k][d]) vk->fn.vkDestroyPipeline(vk->device, vk->pipes[k][d], vk->vk_alloc);
    memset(vk->pipes, 0, sizeof vk->pipes);
    if (vk->owns_pcache && vk->pcache) vk->fn.vkDestroyPipelineCache(vk->device, vk->pcache, vk->vk_alloc);
    vk->pcache = VK_NULL_HANDLE;
    if (vk->layout) vk->fn.vkDestroyPipelineLayout(vk->device, vk->layout, vk->vk_alloc);
    vk->layout = VK_NULL_HANDLE;
}
