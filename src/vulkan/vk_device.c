/* Vulkan backend: instances, device enumeration and selection, device
 * creation (standalone) or adoption (embedding), statuses and validation. */
#include "vk_internal.h"

#include <stdio.h>
#include <string.h>

#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"
#define STAGING_BYTES (8u << 20)
#define BLOCK_MAX (1ull << 30) /* largest memory block (GPU_NOTES §4 rule 7) */

/* ------------------------------------------------------------------------ */
/* Statuses and validation messages                                          */
/* ------------------------------------------------------------------------ */

static const char *result_name(VkResult r)
{
    switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_INVALID_SHADER_NV: return "VK_ERROR_INVALID_SHADER_NV";
    default: return "VkResult";
    }
}

fasa_status fasa__vk_result(vk_context *vk, VkResult r, const char *what)
{
    fasa_context *ctx = vk ? vk->ctx : NULL;
    switch (r) {
    case VK_SUCCESS: return FASA_OK;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        return fasa__error(ctx, FASA_ERROR_OUT_OF_DEVICE_MEMORY, "vulkan: %s: VK_ERROR_OUT_OF_DEVICE_MEMORY", what);
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: %s: VK_ERROR_OUT_OF_HOST_MEMORY", what);
    case VK_ERROR_DEVICE_LOST:
        if (vk) vk->lost = true;
        return fasa__error(ctx, FASA_ERROR_DEVICE_LOST,
                           "vulkan: %s: VK_ERROR_DEVICE_LOST (GPU reset or driver failure; "
                           "destroy the context)", what);
    default:
        return fasa__error(ctx, FASA_ERROR_BACKEND, "vulkan: %s failed: %s (%d)", what, result_name(r), (int)r);
    }
}

fasa_status fasa__vk_check(vk_context *vk, fasa_status st)
{
    if (vk->n_vmsg == 0) return st;
    uint32_t n = vk->n_vmsg;
    vk->n_vmsg = 0;
    if (st != FASA_OK) return st;
    return fasa__error(vk->ctx, FASA_ERROR_BACKEND, "vulkan validation (%u message%s): %s", n,
                       n == 1 ? "" : "s", vk->vmsg);
}

/* Whether a debug-utils message is a validation finding that must fail the
 * call: a WARNING or ERROR of type VALIDATION.  The loader reports its own
 * business through the same messenger as GENERAL messages, some at WARNING
 * (with VK_INSTANCE_LAYERS set: "env var 'VK_INSTANCE_LAYERS' defined and
 * adding layers ..."), and performance advice (best practices) is PERFORMANCE:
 * neither is a validation error, so both are only logged. */
static bool counts_as_validation(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                 VkDebugUtilsMessageTypeFlagsEXT types)
{
    VkDebugUtilsMessageSeverityFlagsEXT bad = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                                              VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    return (severity & bad) && (types & VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT);
}

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                               VkDebugUtilsMessageTypeFlagsEXT types,
                                               const VkDebugUtilsMessengerCallbackDataEXT *data,
                                               void *user)
{
    vk_context *vk = user;
    const char *text = data && data->pMessage ? data->pMessage : "(no text)";
    if (!vk) return VK_FALSE;
    if (!counts_as_validation(severity, types)) {
        if (vk->ctx) fasa__log(vk->ctx, FASA_LOG_INFO, "vulkan (not a validation error): %s", text);
        return VK_FALSE;
    }
    if (vk->n_vmsg++ == 0) snprintf(vk->vmsg, sizeof vk->vmsg, "%s", text);
    if (vk->ctx) fasa__log(vk->ctx, FASA_LOG_WARN, "vulkan validation: %s", text);
    return VK_FALSE;
}

/* Warnings and errors of every type reach debug_cb, which counts only the
 * validation ones; the rest are logged for the record. */
static VkDebugUtilsMessengerCreateInfoEXT messenger_info(vk_context *vk)
{
    VkDebugUtilsMessengerCreateInfoEXT mi = {.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
    mi.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                         VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    mi.pfnUserCallback = debug_cb;
    mi.pUserData = vk;
    return mi;
}

/* ------------------------------------------------------------------------ */
/* Instances                                                                 */
/* ------------------------------------------------------------------------ */

static bool has_layer(vk_fns *fn, const char *name)
{
    VkLayerProperties props[64];
    uint32_t n = 64;
    VkResult r = fn->vkEnumerateInstanceLayerProperties(&n, props);
    for (uint32_t i = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && i < n; i++)
        if (strcmp(props[i].layerName, name) == 0) return true;
    return false;
}

static bool has_instance_ext(vk_fns *fn, const char *layer, const char *name)
{
    VkExtensionProperties props[256];
    uint32_t n = 256;
    VkResult r = fn->vkEnumerateInstanceExtensionProperties(layer, &n, props);
    for (uint32_t i = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && i < n; i++)
        if (strcmp(props[i].extensionName, name) == 0) return true;
    return false;
}

/* Creates an instance; with vk_msgs != NULL enables the validation layer and
 * routes its messages to vk_msgs. */
static fasa_status create_instance(vk_fns *fn, vk_context *vk_msgs, VkInstance *out, char *msg,
                                   size_t msg_size)
{
    const char *layers[1] = {VALIDATION_LAYER};
    const char *exts[1] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
    VkDebugUtilsMessengerCreateInfoEXT mi = messenger_info(vk_msgs);
    if (vk_msgs && !has_layer(fn, VALIDATION_LAYER)) {
        snprintf(msg, msg_size, "desc.flags: FASA_CONTEXT_ENABLE_VALIDATION needs %s, which is not installed",
                 VALIDATION_LAYER);
        return FASA_ERROR_UNSUPPORTED;
    }
    if (vk_msgs && !has_instance_ext(fn, NULL, exts[0]) && !has_instance_ext(fn, VALIDATION_LAYER, exts[0])) {
        snprintf(msg, msg_size, "desc.flags: validation needs %s, which the loader lacks", exts[0]);
        return FASA_ERROR_UNSUPPORTED;
    }
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "libfasa";
    app.pEngineName = "libfasa";
    app.apiVersion = VK_API_VERSION_1_3;
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ci.pApplicationInfo = &app;
    if (vk_msgs) {
        ci.pNext = &mi;
        ci.enabledLayerCount = 1;
        ci.ppEnabledLayerNames = layers;
        ci.enabledExtensionCount = 1;
        ci.ppEnabledExtensionNames = exts;
    }
    VkResult r = fn->vkCreateInstance(&ci, NULL, out);
    if (r != VK_SUCCESS) {
        snprintf(msg, msg_size, "vulkan: vkCreateInstance failed: %s (%d); is a Vulkan driver installed?",
                 result_name(r), (int)r);
        return r == VK_ERROR_OUT_OF_HOST_MEMORY ? FASA_ERROR_OUT_OF_HOST_MEMORY : FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    const char *missing = NULL;
    if (!fasa__vk_load_instance(fn, *out, &missing)) {
        PFN_vkDestroyInstance destroy = (PFN_vkDestroyInstance)fn->vkGetInstanceProcAddr(*out, "vkDestroyInstance");
        if (destroy) destroy(*out, NULL);
        *out = VK_NULL_HANDLE;
        snprintf(msg, msg_size, "vulkan: the loader lacks %s (Vulkan 1.1 is required)", missing);
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Physical devices                                                          */
/* ------------------------------------------------------------------------ */

static bool has_device_ext(vk_fns *fn, VkPhysicalDevice pd, const char *name)
{
    uint32_t n = 0;
    if (fn->vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || n == 0) return false;
    VkExtensionProperties props[512];
    if (n > 512) n = 512;
    VkResult r = fn->vkEnumerateDeviceExtensionProperties(pd, NULL, &n, props);
    for (uint32_t i = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && i < n; i++)
        if (strcmp(props[i].extensionName, name) == 0) return true;
    return false;
}

/* First queue family with compute, preferring one with timestamps. */
static int compute_family(vk_fns *fn, VkPhysicalDevice pd)
{
    VkQueueFamilyProperties qf[32];
    uint32_t n = 32;
    fn->vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, qf);
    int best = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!(qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || qf[i].queueCount == 0) continue;
        if (best < 0 || (qf[best].timestampValidBits == 0 && qf[i].timestampValidBits > 0)) best = (int)i;
    }
    return best;
}

/* Whether libfasa can run on a device; why names the reason when not. */
static bool device_usable(vk_fns *fn, VkPhysicalDevice pd, bool *bda_khr, char *why, size_t why_size)
{
    VkPhysicalDeviceProperties p;
    fn->vkGetPhysicalDeviceProperties(pd, &p);
    VkPhysicalDeviceMemoryProperties mem;
    fn->vkGetPhysicalDeviceMemoryProperties(pd, &mem);
    bool khr = p.apiVersion < VK_API_VERSION_1_2;
    if (p.apiVersion < VK_API_VERSION_1_1)
        snprintf(why, why_size, "%s: Vulkan %u.%u, 1.1 is required", p.deviceName,
                 VK_API_VERSION_MAJOR(p.apiVersion), VK_API_VERSION_MINOR(p.apiVersion));
    else if (mem.memoryTypeCount == 0)
        snprintf(why, why_size, "%s: no memory types (a null-hardware device)", p.deviceName);
    else if (compute_family(fn, pd) < 0)
        snprintf(why, why_size, "%s: no compute queue", p.deviceName);
    else if (khr && !has_device_ext(fn, pd, VK_KHR_BUFFER_DEVICE_ADDRESS_EXTENSION_NAME))
        snprintf(why, why_size, "%s: no bufferDeviceAddress (Vulkan 1.1 without %s)", p.deviceName,
                 VK_KHR_BUFFER_DEVICE_ADDRESS_EXTENSION_NAME);
    else {
        VkPhysicalDeviceBufferDeviceAddressFeatures bda = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_BUFFER_DEVICE_ADDRESS_FEATURES};
        VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &bda};
        fn->vkGetPhysicalDeviceFeatures2(pd, &f2);
        if (!bda.bufferDeviceAddress) snprintf(why, why_size, "%s: no bufferDeviceAddress feature", p.deviceName);
        else {
            if (bda_khr) *bda_khr = khr;
            return true;
        }
    }
    return false;
}

/* The usable physical devices, in enumeration order. */
static fasa_status usable_devices(vk_fns *fn, VkInstance inst, VkPhysicalDevice *out, uint32_t *n_out,
                                  char *msg, size_t msg_size)
{
    VkPhysicalDevice all[32];
    uint32_t n = 32;
    VkResult r = fn->vkEnumeratePhysicalDevices(inst, &n, all);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        snprintf(msg, msg_size, "vulkan: vkEnumeratePhysicalDevices failed: %s (no usable driver)", result_name(r));
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    char why[512] = "", one[256];
    *n_out = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (device_usable(fn, all[i], NULL, one, sizeof one)) out[(*n_out)++] = all[i];
        else if (strlen(why) + strlen(one) + 3 < sizeof why) {
            if (why[0]) strcat(why, "; ");
            strcat(why, one);
        }
    }
    if (*n_out == 0) {
        snprintf(msg, msg_size, "vulkan: no usable device (%u found%s%s)", n, why[0] ? ": " : "", why);
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    return FASA_OK;
}

static fasa_device_type device_type(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return FASA_DEVICE_DISCRETE_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return FASA_DEVICE_INTEGRATED_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return FASA_DEVICE_VIRTUAL_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return FASA_DEVICE_CPU;
    default: return FASA_DEVICE_OTHER;
    }
}

static void describe_memory(const VkPhysicalDeviceMemoryProperties *mem, fasa_device_info *info)
{
    bool all_local = mem->memoryHeapCount > 0, local_visible = false;
    info->heap_count = mem->memoryHeapCount < FASA_MAX_HEAPS ? mem->memoryHeapCount : FASA_MAX_HEAPS;
    for (uint32_t h = 0; h < mem->memoryHeapCount; h++) {
        bool local = mem->memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
        all_local = all_local && local;
        if (h < FASA_MAX_HEAPS) {
            info->heaps[h].size = mem->memoryHeaps[h].size;
            info->heaps[h].device_local = local;
        }
    }
    for (uint32_t t = 0; t < mem->memoryTypeCount; t++) {
        VkMemoryPropertyFlags f = mem->memoryTypes[t].propertyFlags;
        uint32_t h = mem->memoryTypes[t].heapIndex;
        if ((f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) && h < FASA_MAX_HEAPS) info->heaps[h].host_visible = true;
        if ((f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) && (f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT)) local_visible = true;
    }
    info->unified_memory = all_local && local_visible;
}

static void describe_device(vk_fns *fn, VkPhysicalDevice pd, fasa_device_info *info)
{
    VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceSubgroupProperties sg = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, .pNext = &sg};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3};
    VkPhysicalDeviceProperties p;
    fn->vkGetPhysicalDeviceProperties(pd, &p);
    if (p.apiVersion >= VK_API_VERSION_1_2) sg.pNext = &drv;
    fn->vkGetPhysicalDeviceProperties2(pd, &p2);
    memset(info, 0, sizeof *info);
    info->backend = FASA_BACKEND_VULKAN;
    info->type = device_type(p.deviceType);
    snprintf(info->name, sizeof info->name, "%s", p.deviceName);
    if (p.apiVersion >= VK_API_VERSION_1_2)
        snprintf(info->driver, sizeof info->driver, "%.40s %.50s (Vulkan %u.%u.%u)", drv.driverName, drv.driverInfo,
                 VK_API_VERSION_MAJOR(p.apiVersion), VK_API_VERSION_MINOR(p.apiVersion), VK_API_VERSION_PATCH(p.apiVersion));
    else
        snprintf(info->driver, sizeof info->driver, "driver 0x%x (Vulkan %u.%u.%u)", p.driverVersion,
                 VK_API_VERSION_MAJOR(p.apiVersion), VK_API_VERSION_MINOR(p.apiVersion), VK_API_VERSION_PATCH(p.apiVersion));
    info->vendor_id = p.vendorID;
    info->device_id = p.deviceID;
    info->subgroup_size = sg.subgroupSize;
    info->max_shared_memory = p.limits.maxComputeSharedMemorySize;
    info->max_buffer_size = m3.maxMemoryAllocationSize;
    VkPhysicalDeviceMemoryProperties mem;
    fn->vkGetPhysicalDeviceMemoryProperties(pd, &mem);
    describe_memory(&mem, info);
}

void fasa__vk_describe(vk_context *vk, const VkPhysicalDeviceProperties *props, fasa_device_info *info)
{
    (void)props;
    describe_device(&vk->fn, vk->phys, info);
}

fasa_status fasa__vk_list_devices(fasa_device_info *devices, uint32_t *count, char *msg, size_t msg_size)
{
    char tmp[FASA_ERROR_MAX];
    if (!msg || msg_size == 0) msg = tmp, msg_size = sizeof tmp;
    vk_fns fn;
    memset(&fn, 0, sizeof fn);
    fasa_status st = fasa__vk_open_loader(&fn, msg, msg_size);
    if (st != FASA_OK) return st;
    VkInstance inst = VK_NULL_HANDLE;
    st = create_instance(&fn, NULL, &inst, msg, msg_size);
    if (st != FASA_OK) {
        fasa__vk_close_loader(&fn);
        return st;
    }
    VkPhysicalDevice pds[32];
    uint32_t n = 0;
    st = usable_devices(&fn, inst, pds, &n, msg, msg_size);
    uint32_t capacity = *count;
    for (uint32_t i = 0; st == FASA_OK && i < n && i < capacity; i++) describe_device(&fn, pds[i], &devices[i]);
    if (st == FASA_OK) *count = n;
    fn.vkDestroyInstance(inst, NULL);
    fasa__vk_close_loader(&fn);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Standalone: our own instance and device                                   */
/* ------------------------------------------------------------------------ */

/* VK_EXT_external_memory_host, enabled on the device: its entry point and
 * the alignment imported pointers (and sizes) need. */
static void init_host_import(vk_context *vk)
{
    VkPhysicalDeviceExternalMemoryHostPropertiesEXT hp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &hp};
    vk->fn.vkGetPhysicalDeviceProperties2(vk->phys, &p2);
    vk->import_align = hp.minImportedHostPointerAlignment;
    vk->host_ptr_props = (PFN_vkGetMemoryHostPointerPropertiesEXT)vk->fn.vkGetDeviceProcAddr(
        vk->device, "vkGetMemoryHostPointerPropertiesEXT");
    if (!vk->import_align) vk->host_ptr_props = NULL;
}

static fasa_status create_device(vk_context *vk)
{
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qi.queueFamilyIndex = vk->queue_family;
    qi.queueCount = 1;
    qi.pQueuePriorities = &prio;
    VkPhysicalDeviceBufferDeviceAddressFeatures bda = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_BUFFER_DEVICE_ADDRESS_FEATURES};
    bda.bufferDeviceAddress = VK_TRUE;
    const char *exts[2];
    uint32_t n_ext = 0;
    if (vk->bda_khr) exts[n_ext++] = VK_KHR_BUFFER_DEVICE_ADDRESS_EXTENSION_NAME;
    /* optional: lets FASA-M caches import application host memory */
    bool host_import = has_device_ext(&vk->fn, vk->phys, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
    if (host_import) exts[n_ext++] = VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME;
    VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &bda};
    ci.queueCreateInfoCount = 1;
    ci.pQueueCreateInfos = &qi;
    ci.enabledExtensionCount = n_ext;
    ci.ppEnabledExtensionNames = exts;
    VkResult r = vk->fn.vkCreateDevice(vk->phys, &ci, NULL, &vk->device);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkCreateDevice");
    const char *missing = NULL;
    if (!fasa__vk_load_device(&vk->fn, vk->device, vk->bda_khr, &missing))
        return fasa__error(vk->ctx, FASA_ERROR_BACKEND, "vulkan: the device lacks %s", missing);
    vk->fn.vkGetDeviceQueue(vk->device, vk->queue_family, 0, &vk->queue);
    if (host_import) init_host_import(vk);
    return FASA_OK;
}

static fasa_status init_standalone(vk_context *vk, uint32_t device_index)
{
    fasa_context *ctx = vk->ctx;
    char msg[FASA_ERROR_MAX] = "";
    fasa_status st = fasa__vk_open_loader(&vk->fn, msg, sizeof msg);
    if (st != FASA_OK) return fasa__error(ctx, st, "%s", msg);
    bool validation = ctx->flags & FASA_CONTEXT_ENABLE_VALIDATION;
    st = create_instance(&vk->fn, validation ? vk : NULL, &vk->instance, msg, sizeof msg);
    if (st != FASA_OK) return fasa__error(ctx, st, "%s", msg);
    vk->owns_device = true;
    if (validation) {
        VkDebugUtilsMessengerCreateInfoEXT mi = messenger_info(vk);
        if (!vk->fn.vkCreateDebugUtilsMessengerEXT)
            return fasa__error(ctx, FASA_ERROR_UNSUPPORTED, "vulkan: vkCreateDebugUtilsMessengerEXT is missing");
        VkResult r = vk->fn.vkCreateDebugUtilsMessengerEXT(vk->instance, &mi, NULL, &vk->messenger);
        if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkCreateDebugUtilsMessengerEXT");
    }
    VkPhysicalDevice pds[32];
    uint32_t n = 0;
    st = usable_devices(&vk->fn, vk->instance, pds, &n, msg, sizeof msg);
    if (st != FASA_OK) return fasa__error(ctx, st, "%s", msg);
    if (device_index >= n)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.device_index: %u out of range (%u usable devices)",
                           device_index, n);
    vk->phys = pds[device_index];
    device_usable(&vk->fn, vk->phys, &vk->bda_khr, msg, sizeof msg);
    vk->queue_family = (uint32_t)compute_family(&vk->fn, vk->phys);
    VkPhysicalDeviceProperties p;
    vk->fn.vkGetPhysicalDeviceProperties(vk->phys, &p);
    vk->api_version = p.apiVersion < VK_API_VERSION_1_3 ? p.apiVersion : VK_API_VERSION_1_3;
    return create_device(vk);
}

/* ------------------------------------------------------------------------ */
/* Embedding: the host's instance, device and queue                          */
/* ------------------------------------------------------------------------ */

static fasa_status check_embed(vk_context *vk, const fasa_vk_embed *e)
{
    fasa_context *ctx = vk->ctx;
    const char *field = !e->instance ? "instance"
                        : !e->physical_device ? "physical_device"
                        : !e->device ? "device"
                        : !e->queue ? "queue"
                        : !e->get_instance_proc_addr ? "get_instance_proc_addr" : NULL;
    if (fasa__check_chain(ctx, e->next, "desc.embed->next", "fasa_vk_embed") != FASA_OK)
        return FASA_ERROR_INVALID_ARGUMENT;
    if (field) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed (fasa_vk_embed): %s is NULL", field);
    if (e->api_version && e->api_version < VK_API_VERSION_1_1)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.embed: api_version %u.%u is below the Vulkan 1.1 libfasa needs",
                           VK_API_VERSION_MAJOR(e->api_version), VK_API_VERSION_MINOR(e->api_version));
    if (!e->buffer_device_address_enabled)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.embed: buffer_device_address_enabled is false; libfasa needs the "
                           "bufferDeviceAddress feature enabled on the device (see fasa_vulkan.h)");
    if (!e->memory_allocator.allocate != !e->memory_allocator.free)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.embed->memory_allocator: allocate and free must both be set or both be NULL");
    if (e->flags & ~FASA_VK_EMBED_RECORD_CACHE_INIT)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed->flags: unknown bits 0x%x",
                           e->flags & ~FASA_VK_EMBED_RECORD_CACHE_INIT);
    return FASA_OK;
}

static fasa_status init_embedded(vk_context *vk, const fasa_vk_embed *e)
{
    fasa_context *ctx = vk->ctx;
    fasa_status st = check_embed(vk, e);
    if (st != FASA_OK) return st;
    const char *missing = NULL;
    if (!fasa__vk_load_global(&vk->fn, e->get_instance_proc_addr, &missing) ||
        !fasa__vk_load_instance(&vk->fn, e->instance, &missing))
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED, "desc.embed: get_instance_proc_addr gives no %s", missing);
    vk->instance = e->instance;
    vk->phys = e->physical_device;
    vk->device = e->device;
    vk->queue = e->queue;
    vk->queue_family = e->queue_family_index;
    vk->vk_alloc = e->allocation_callbacks;
    vk->host_alloc = e->memory_allocator;
    vk->record_init = e->flags & FASA_VK_EMBED_RECORD_CACHE_INIT;
    vk->api_version = e->api_version ? e->api_version : VK_API_VERSION_1_1;
    VkQueueFamilyProperties qf[32];
    uint32_t n = 32;
    vk->fn.vkGetPhysicalDeviceQueueFamilyProperties(vk->phys, &n, qf);
    if (vk->queue_family >= n || !(qf[vk->queue_family].queueFlags & VK_QUEUE_COMPUTE_BIT))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.embed: queue_family_index %u is not a compute queue family of the device",
                           vk->queue_family);
    char why[256];
    if (!device_usable(&vk->fn, vk->phys, NULL, why, sizeof why))
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED, "desc.embed: device unusable: %s", why);
    vk->bda_khr = vk->api_version < VK_API_VERSION_1_2;
    if (!fasa__vk_load_device(&vk->fn, vk->device, vk->bda_khr, &missing))
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.embed: the device gives no %s (enable bufferDeviceAddress%s)", missing,
                           vk->bda_khr ? " through VK_KHR_buffer_device_address" : "");
    if (e->pipeline_cache) vk->pcache = e->pipeline_cache;
    if (e->external_memory_host_enabled) init_host_import(vk);
    describe_device(&vk->fn, vk->phys, &ctx->device);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Common part: limits, command buffer, timestamps, staging, pipelines        */
/* ------------------------------------------------------------------------ */

static fasa_status check_limits(vk_context *vk)
{
    const VkPhysicalDeviceLimits *lim = &vk->props.limits;
    if (lim->maxComputeWorkGroupInvocations < 256 || lim->maxComputeWorkGroupSize[0] < 256)
        return fasa__error(vk->ctx, FASA_ERROR_UNSUPPORTED,
                           "vulkan: the device allows %u invocations per workgroup; libfasa needs 256",
                           lim->maxComputeWorkGroupInvocations);
    if (lim->maxPushConstantsSize < VK_PUSH_MAX)
        return fasa__error(vk->ctx, FASA_ERROR_UNSUPPORTED, "vulkan: %u bytes of push constants; 128 are needed",
                           lim->maxPushConstantsSize);
    /* shared memory: tip and attend use about 25 KiB (8 heads per batch) */
    if (lim->maxComputeSharedMemorySize < 32u * 1024)
        return fasa__error(vk->ctx, FASA_ERROR_UNSUPPORTED, "vulkan: %u bytes of shared memory; 32 KiB are needed",
                           lim->maxComputeSharedMemorySize);
    vk->tun.qmax = 4096;
    vk->tun.narrow = vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3};
    vk->fn.vkGetPhysicalDeviceProperties2(vk->phys, &p2);
    uint64_t limit = lim->maxStorageBufferRange;
    if (m3.maxMemoryAllocationSize && m3.maxMemoryAllocationSize < limit) limit = m3.maxMemoryAllocationSize;
    if (limit > BLOCK_MAX) limit = BLOCK_MAX;
    vk->chunk_limit = limit;
    return FASA_OK;
}

static fasa_status init_commands(vk_context *vk)
{
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = vk->queue_family;
    VkResult r = vk->fn.vkCreateCommandPool(vk->device, &pi, vk->vk_alloc, &vk->pool);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkCreateCommandPool");
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = vk->pool;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    r = vk->fn.vkAllocateCommandBuffers(vk->device, &ai, &vk->cmd);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = vk->fn.vkCreateFence(vk->device, &fi, vk->vk_alloc, &vk->fence);
    if (r != VK_SUCCESS) return fasa__vk_result(vk, r, "vkCreateFence");
    VkQueueFamilyProperties qf[32];
    uint32_t n = 32;
    vk->fn.vkGetPhysicalDeviceQueueFamilyProperties(vk->phys, &n, qf);
    uint32_t bits = vk->queue_family < n ? qf[vk->queue_family].timestampValidBits : 0;
    if (!(vk->ctx->flags & FASA_CONTEXT_PROFILE) || bits == 0) return FASA_OK;
    vk->ts_mask = bits >= 64 ? ~0ull : (1ull << bits) - 1;
    VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qi.queryCount = 2;
    r = vk->fn.vkCreateQueryPool(vk->device, &qi, vk->vk_alloc, &vk->qpool);
    return r == VK_SUCCESS ? FASA_OK : fasa__vk_result(vk, r, "vkCreateQueryPool");
}

/* VK_EXT_memory_budget: a physical-device query, used in out-of-memory
 * messages only (nothing is decided by it). */
void fasa__vk_heap_note(vk_context *vk, uint32_t heap, char *out, size_t size)
{
    out[0] = '\0';
    if (!vk->has_memory_budget || heap >= VK_MAX_MEMORY_HEAPS) return;
    VkPhysicalDeviceMemoryBudgetPropertiesEXT mb = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
    VkPhysicalDeviceMemoryProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2, .pNext = &mb};
    vk->fn.vkGetPhysicalDeviceMemoryProperties2(vk->phys, &p2);
    snprintf(out, size, " (VK_EXT_memory_budget: heap %u budget %llu MiB, %llu MiB in use by the process)", heap,
             (unsigned long long)(mb.heapBudget[heap] >> 20), (unsigned long long)(mb.heapUsage[heap] >> 20));
}

static fasa_status init_common(vk_context *vk)
{
    vk->fn.vkGetPhysicalDeviceProperties(vk->phys, &vk->props);
    vk->fn.vkGetPhysicalDeviceMemoryProperties(vk->phys, &vk->mem);
    vk->has_memory_budget = vk->fn.vkGetPhysicalDeviceMemoryProperties2 &&
                            has_device_ext(&vk->fn, vk->phys, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
    VkPhysicalDeviceSubgroupProperties sg = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sg};
    vk->fn.vkGetPhysicalDeviceProperties2(vk->phys, &p2);
    vk->subgroup_size = sg.subgroupSize;
    fasa_status st = check_limits(vk);
    if (st == FASA_OK) st = init_commands(vk);
    if (st == FASA_OK) st = fasa__vk_pipelines_init(vk);
    if (st == FASA_OK) st = fasa__vk_buf_create(vk, STAGING_BYTES, true, "libfasa's staging buffer", &vk->staging);
    if (st == FASA_OK && !vk->staging.map)
        st = fasa__error(vk->ctx, FASA_ERROR_UNSUPPORTED, "vulkan: no host-visible memory for staging");
    return fasa__vk_check(vk, st);
}

fasa_status fasa__vk_context_init(fasa_context *ctx, uint32_t device_index, const void *embed)
{
    vk_context *vk = fasa__alloc(ctx, sizeof *vk);
    if (!vk) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    vk->ctx = ctx;
    ctx->impl = vk;
    fasa_status st = embed ? init_embedded(vk, embed) : init_standalone(vk, device_index);
    if (st == FASA_OK) st = init_common(vk);
    if (st != FASA_OK) fasa__vk_context_destroy(ctx);
    return st;
}

void fasa__vk_context_destroy(fasa_context *ctx)
{
    vk_context *vk = fasa__vk(ctx);
    if (!vk) return;
    /* standalone streams are waited for at submission: nothing of ours is
     * pending (work recorded into host command buffers is the host's to wait for) */
    if (vk->device && vk->owns_device) vk->fn.vkDeviceWaitIdle(vk->device);
    if (vk->device) {
        fasa__vk_buf_destroy(vk, &vk->staging);
        fasa__vk_pipelines_destroy(vk);
        if (vk->qpool) vk->fn.vkDestroyQueryPool(vk->device, vk->qpool, vk->vk_alloc);
        if (vk->fence) vk->fn.vkDestroyFence(vk->device, vk->fence, vk->vk_alloc);
        if (vk->pool) vk->fn.vkDestroyCommandPool(vk->device, vk->pool, vk->vk_alloc);
    }
    if (vk->owns_device) {
        if (vk->device) vk->fn.vkDestroyDevice(vk->device, NULL);
        if (vk->messenger) vk->fn.vkDestroyDebugUtilsMessengerEXT(vk->instance, vk->messenger, NULL);
        if (vk->instance) vk->fn.vkDestroyInstance(vk->instance, NULL);
    }
    fasa__vk_close_loader(&vk->fn);
    fasa__free(ctx, vk);
    ctx->impl = NULL;
}
