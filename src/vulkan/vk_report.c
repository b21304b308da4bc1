/* Compile report: builds every pipeline on any Vulkan device (no memory is
 * allocated, so RADV's null-hardware devices work) and collects the driver's
 * per-pipeline statistics (see vk_report.h). */
#include "vk_internal.h"
#include "vk_report.h"

#include <stdio.h>
#include <string.h>

typedef struct report {
    vk_context vk;
    fasa_vk_report_row *rows;
    uint32_t capacity, n;
    uint32_t sizes[4], n_sizes;  /* subgroup sizes to require, or {0} */
    char *msg;
    size_t msg_size;
} report;

static fasa_status fail(report *r, fasa_status st, const char *fmt, const char *arg)
{
    if (r->msg && r->msg_size) snprintf(r->msg, r->msg_size, fmt, arg);
    return st;
}

static bool has_ext(vk_fns *fn, VkPhysicalDevice pd, const char *name)
{
    VkExtensionProperties props[512];
    uint32_t n = 512;
    VkResult res = fn->vkEnumerateDeviceExtensionProperties(pd, NULL, &n, props);
    for (uint32_t i = 0; (res == VK_SUCCESS || res == VK_INCOMPLETE) && i < n; i++)
        if (strcmp(props[i].extensionName, name) == 0) return true;
    return false;
}

static fasa_status open_instance(report *r, uint32_t device_index)
{
    vk_context *vk = &r->vk;
    const char *missing = NULL;
    char why[FASA_ERROR_MAX];
    if (fasa__vk_open_loader(&vk->fn, why, sizeof why) != FASA_OK)
        return fail(r, FASA_ERROR_BACKEND_UNAVAILABLE, "%s", why);
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "libfasa compile report";
    app.apiVersion = VK_API_VERSION_1_3;
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ci.pApplicationInfo = &app;
    if (vk->fn.vkCreateInstance(&ci, NULL, &vk->instance) != VK_SUCCESS)
        return fail(r, FASA_ERROR_BACKEND_UNAVAILABLE, "vulkan: vkCreateInstance failed%s", "");
    if (!fasa__vk_load_instance(&vk->fn, vk->instance, &missing))
        return fail(r, FASA_ERROR_BACKEND_UNAVAILABLE, "vulkan: the loader lacks %s", missing);
    VkPhysicalDevice pds[32];
    uint32_t n = 32;
    VkResult res = vk->fn.vkEnumeratePhysicalDevices(vk->instance, &n, pds);
    if ((res != VK_SUCCESS && res != VK_INCOMPLETE) || device_index >= n)
        return fail(r, FASA_ERROR_BACKEND_UNAVAILABLE, "vulkan: no device at that index%s", "");
    vk->phys = pds[device_index];
    vk->fn.vkGetPhysicalDeviceProperties(vk->phys, &vk->props);
    if (vk->props.apiVersion < VK_API_VERSION_1_1)
        return fail(r, FASA_ERROR_UNSUPPORTED, "vulkan: %s has Vulkan 1.0", vk->props.deviceName);
    if (!has_ext(&vk->fn, vk->phys, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME))
        return fail(r, FASA_ERROR_UNSUPPORTED, "vulkan: the device lacks %s",
                    VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
    return FASA_OK;
}

/* Subgroup sizes the device can require for compute pipelines. */
static void subgroup_sizes(report *r, bool size_control)
{
    vk_context *vk = &r->vk;
    VkPhysicalDeviceSubgroupSizeControlProperties sc = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sc};
    vk->fn.vkGetPhysicalDeviceProperties2(vk->phys, &p2);
    r->n_sizes = 0;
    if (size_control && (sc.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT))
        for (uint32_t s = sc.minSubgroupSize; s && s <= sc.maxSubgroupSize && r->n_sizes < 4; s *= 2)
            r->sizes[r->n_sizes++] = s;
    if (r->n_sizes == 0) r->sizes[r->n_sizes++] = 0;
}

static fasa_status open_device(report *r)
{
    vk_context *vk = &r->vk;
    VkPhysicalDeviceSubgroupSizeControlFeatures scf = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
    VkPhysicalDeviceBufferDeviceAddressFeatures bda = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_BUFFER_DEVICE_ADDRESS_FEATURES, .pNext = &scf};
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pe = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR, .pNext = &bda};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &pe};
    bool sc_ext = vk->props.apiVersion >= VK_API_VERSION_1_3 || has_ext(&vk->fn, vk->phys, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    vk->bda_khr = vk->props.apiVersion < VK_API_VERSION_1_2;
    if (!sc_ext) bda.pNext = NULL;
    vk->fn.vkGetPhysicalDeviceFeatures2(vk->phys, &f2);
    if (!pe.pipelineExecutableInfo || !bda.bufferDeviceAddress)
        return fail(r, FASA_ERROR_UNSUPPORTED, "vulkan: %s lacks pipelineExecutableInfo or bufferDeviceAddress",
                    vk->props.deviceName);
    subgroup_sizes(r, sc_ext && scf.subgroupSizeControl);
    scf.computeFullSubgroups = VK_FALSE;
    const char *exts[3] = {VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME};
    uint32_t n_ext = 1;
    if (vk->bda_khr) exts[n_ext++] = VK_KHR_BUFFER_DEVICE_ADDRESS_EXTENSION_NAME;
    if (sc_ext && vk->props.apiVersion < VK_API_VERSION_1_3) exts[n_ext++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
    VkQueueFamilyProperties qf[32];
    uint32_t nq = 32, fam = 0;
    vk->fn.vkGetPhysicalDeviceQueueFamilyProperties(vk->phys, &nq, qf);
    while (fam < nq && !(qf[fam].queueFlags & VK_QUEUE_COMPUTE_BIT)) fam++;
    if (fam == nq) return fail(r, FASA_ERROR_UNSUPPORTED, "vulkan: %s has no compute queue", vk->props.deviceName);
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qi = {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, NULL, 0, fam, 1, &prio};
    VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &pe};
    ci.queueCreateInfoCount = 1;
    ci.pQueueCreateInfos = &qi;
    ci.enabledExtensionCount = n_ext;
    ci.ppEnabledExtensionNames = exts;
    if (vk->fn.vkCreateDevice(vk->phys, &ci, NULL, &vk->device) != VK_SUCCESS)
        return fail(r, FASA_ERROR_BACKEND, "vulkan: vkCreateDevice failed on %s", vk->props.deviceName);
    const char *missing = NULL;
    if (!fasa__vk_load_device(&vk->fn, vk->device, vk->bda_khr, &missing) ||
        !vk->fn.vkGetPipelineExecutablePropertiesKHR || !vk->fn.vkGetPipelineExecutableStatisticsKHR)
        return fail(r, FASA_ERROR_BACKEND, "vulkan: the device lacks %s", missing ? missing : "pipeline statistics");
    VkPushConstantRange range = {VK_SHADER_STAGE_COMPUTE_BIT, 0, VK_PUSH_MAX};
    VkPipelineLayoutCreateInfo li = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    li.pushConstantRangeCount = 1;
    li.pPushConstantRanges = &range;
    if (vk->fn.vkCreatePipelineLayout(vk->device, &li, NULL, &vk->layout) != VK_SUCCESS)
        return fail(r, FASA_ERROR_BACKEND, "vulkan: vkCreatePipelineLayout failed%s", "");
    vk->tun.qmax = 4096;
    return FASA_OK;
}

static void read_stats(report *r, VkPipeline p, fasa_vk_report_row *row)
{
    vk_context *vk = &r->vk;
    VkPipelineExecutableInfoKHR ei = {.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR};
    ei.pipeline = p;
    ei.executableIndex = 0;
    VkPipelineExecutableStatisticKHR st[FASA_VK_REPORT_MAX_STATS];
    for (uint32_t i = 0; i < FASA_VK_REPORT_MAX_STATS; i++)
        st[i] = (VkPipelineExecutableStatisticKHR){.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR};
    uint32_t n = FASA_VK_REPORT_MAX_STATS;
    VkResult res = vk->fn.vkGetPipelineExecutableStatisticsKHR(vk->device, &ei, &n, st);
    if (res != VK_SUCCESS && res != VK_INCOMPLETE) n = 0;
    row->n_stats = n;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(row->stats[i].name, sizeof row->stats[i].name, "%s", st[i].name);
        switch (st[i].format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR: row->stats[i].value = st[i].value.b32; break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR: row->stats[i].value = (double)st[i].value.i64; break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR: row->stats[i].value = (double)st[i].value.u64; break;
        default: row->stats[i].value = st[i].value.f64; break;
        }
    }
}

static fasa_status build_all(report *r)
{
    vk_context *vk = &r->vk;
    for (int k = 0; k < VK_K_COUNT; k++)
        for (int d = 0; d < (fasa__vk_kernel_has_dtype((vk_kernel)k) ? VK_DT_COUNT : 1); d++)
            for (uint32_t s = 0; s < r->n_sizes; s++) {
                VkPipeline p = VK_NULL_HANDLE;
                VkResult res = fasa__vk_pipeline_create(vk, (vk_kernel)k, d, r->sizes[s],
                                                        VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR, &p);
                if (res != VK_SUCCESS)
                    return fail(r, FASA_ERROR_BACKEND, "vulkan: building pipeline %s failed",
                                fasa__vk_kernel_name((vk_kernel)k, d));
                if (r->n < r->capacity) {
                    fasa_vk_report_row *row = &r->rows[r->n];
                    memset(row, 0, sizeof *row);
                    snprintf(row->device, sizeof row->device, "%.127s", vk->props.deviceName);
                    snprintf(row->pipeline, sizeof row->pipeline, "%s", fasa__vk_kernel_name((vk_kernel)k, d));
                    row->subgroup_size = r->sizes[s];
                    read_stats(r, p, row);
                }
                r->n++;
                vk->fn.vkDestroyPipeline(vk->device, p, NULL);
            }
    return FASA_OK;
}

fasa_status fasa_vk_compile_report(uint32_t device_index, fasa_vk_report_row *rows, uint32_t *count, char *msg,
                                   size_t msg_size)
{
    if (!count || (*count > 0 && !rows)) {
        if (msg && msg_size) snprintf(msg, msg_size, "%s", !count ? "count is NULL" : "rows is NULL but *count > 0");
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    report *r = fasa__alloc(NULL, sizeof *r);
    if (!r) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    r->rows = rows;
    r->capacity = *count;
    r->msg = msg;
    r->msg_size = msg_size;
    fasa_status st = open_instance(r, device_index);
    if (st == FASA_OK) st = open_device(r);
    if (st == FASA_OK) st = build_all(r);
    if (st == FASA_OK) *count = r->n;
    vk_context *vk = &r->vk;
    if (vk->layout) vk->fn.vkDestroyPipelineLayout(vk->device, vk->layout, NULL);
    if (vk->device) vk->fn.vkDestroyDevice(vk->device, NULL);
    if (vk->instance) vk->fn.vkDestroyInstance(vk->instance, NULL);
    fasa__vk_close_loader(&vk->fn);
    fasa__free(NULL, r);
    return st;
}

double fasa_vk_report_stat(const fasa_vk_report_row *row, const char *name)
{
    for (uint32_t i = 0; row && name && i < row->n_stats; i++)
        if (strcmp(row->stats[i].name, name) == 0) return row->stats[i].value;
    return -1;
}
