/* A host application's own Vulkan objects for the embedding tests. */
#include "vt_host.h"
#include "vt_common.h"

#include <string.h>

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                 VkDebugUtilsMessageTypeFlagsEXT type,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    host *h = user;
    /* as libfasa counts (src/vulkan/vk_device.c): validation warnings and
     * errors, not the loader's GENERAL notes (VK_INSTANCE_LAYERS set) */
    if (sev >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT && (type & VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT)) {
        h->n_messages++;
        fprintf(stderr, "host validation: %s\n", data->pMessage);
    }
    return VK_FALSE;
}

static bool has_layer(const char *name)
{
    VkLayerProperties props[64];
    uint32_t n = 64;
    vkEnumerateInstanceLayerProperties(&n, props);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(props[i].layerName, name) == 0) return true;
    return false;
}

void create_instance(host *h)
{
    const char *layer = "VK_LAYER_KHRONOS_validation";
    const char *exts[2] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME};
    bool validate = has_layer(layer);
    VkDebugUtilsMessengerCreateInfoEXT mi = {.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
    mi.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    mi.pfnUserCallback = on_message;
    mi.pUserData = h;
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "libfasa embedding test";
    app.apiVersion = VK_API_VERSION_1_2;
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ci.pApplicationInfo = &app;
    VkValidationFeatureEnableEXT sync = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkValidationFeaturesEXT vf = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT, .pNext = &mi};
    vf.enabledValidationFeatureCount = 1;
    vf.pEnabledValidationFeatures = &sync;
    if (validate) {
        ci.pNext = h->sync_validation ? (const void *)&vf : (const void *)&mi;
        ci.enabledLayerCount = 1;
        ci.ppEnabledLayerNames = &layer;
        ci.enabledExtensionCount = h->sync_validation ? 2 : 1; /* validation features: the layer's own */
        ci.ppEnabledExtensionNames = exts;
    }
    if (vkCreateInstance(&ci, NULL, &h->inst) != VK_SUCCESS) {
        printf("SKIP: vkCreateInstance failed\n");
        exit(VT_SKIP);
    }
    printf("host instance: validation layer %s%s\n", validate ? "on" : "not installed",
           validate && h->sync_validation ? ", with synchronization validation" : "");
    if (validate) {
        PFN_vkCreateDebugUtilsMessengerEXT create =
            (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(h->inst, "vkCreateDebugUtilsMessengerEXT");
        create(h->inst, &mi, NULL, &h->messenger);
    }
}

void create_device(host *h)
{
    VkPhysicalDevice pds[16];
    uint32_t n = 16;
    if (vkEnumeratePhysicalDevices(h->inst, &n, pds) != VK_SUCCESS || n == 0) {
        printf("SKIP: no Vulkan device\n");
        exit(VT_SKIP);
    }
    h->pd = pds[0];
    VkPhysicalDeviceBufferDeviceAddressFeatures bda = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_BUFFER_DEVICE_ADDRESS_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &bda};
    vkGetPhysicalDeviceFeatures2(h->pd, &f2);
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(h->pd, &p);
    if (!bda.bufferDeviceAddress || p.apiVersion < VK_API_VERSION_1_2) {
        printf("SKIP: %s lacks Vulkan 1.2 bufferDeviceAddress\n", p.deviceName);
        exit(VT_SKIP);
    }
    VkQueueFamilyProperties qf[16];
    uint32_t nq = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(h->pd, &nq, qf);
    for (h->family = 0; h->family < nq && !(qf[h->family].queueFlags & VK_QUEUE_COMPUTE_BIT); h->family++) {}
    float prio = 1;
    VkDeviceQueueCreateInfo qi = {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, NULL, 0, h->family, 1, &prio};
    VkPhysicalDeviceBufferDeviceAddressFeatures on = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_BUFFER_DEVICE_ADDRESS_FEATURES};
    on.bufferDeviceAddress = VK_TRUE;
    VkDeviceCreateInfo di = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &on};
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &qi;
    if (vkCreateDevice(h->pd, &di, NULL, &h->dev) != VK_SUCCESS) {
        fprintf(stderr, "FAIL: vkCreateDevice\n");
        exit(1);
    }
    vkGetDeviceQueue(h->dev, h->family, 0, &h->queue);
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = h->family;
    vkCreateCommandPool(h->dev, &pi, NULL, &h->pool);
    VkCommandBufferAllocateInfo ai = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, NULL, h->pool,
                                      VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1};
    vkAllocateCommandBuffers(h->dev, &ai, &h->cmd);
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    vkCreateFence(h->dev, &fi, NULL, &h->fence);
    printf("host device: %s\n", p.deviceName);
}

/* A host-visible buffer with exactly the usage libfasa documents. */
hbuf make_buffer(host *h, VkDeviceSize size, VkBufferUsageFlags usage)
{
    hbuf b = {0};
    b.size = size;
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bi.size = size;
    bi.usage = usage;
    vkCreateBuffer(h->dev, &bi, NULL, &b.buf);
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(h->dev, b.buf, &req);
    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(h->pd, &mem);
    uint32_t want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, type = 0;
    while (type < mem.memoryTypeCount &&
           (!(req.memoryTypeBits & (1u << type)) || (mem.memoryTypes[type].propertyFlags & want) != want))
        type++;
    /* device-address buffers (external K/V read in place) need memory that has addresses */
    VkMemoryAllocateFlagsInfo fl = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO};
    fl.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
    bool addr = (usage & VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT) != 0;
    VkMemoryAllocateInfo ai = {VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, addr ? &fl : NULL, req.size, type};
    vkAllocateMemory(h->dev, &ai, NULL, &b.mem);
    vkBindBufferMemory(h->dev, b.buf, b.mem, 0);
    vkMapMemory(h->dev, b.mem, 0, VK_WHOLE_SIZE, 0, &b.map);
    return b;
}

void free_buffer(host *h, hbuf *b)
{
    vkDestroyBuffer(h->dev, b->buf, NULL);
    vkFreeMemory(h->dev, b->mem, NULL);
}

void begin(host *h)
{
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    vkResetCommandBuffer(h->cmd, 0);
    vkBeginCommandBuffer(h->cmd, &bi);
}

/* The caller's part of the contract: o was written by a transfer; make it
 * visible to the host before reading the mapping. */
void end_and_submit(host *h)
{
    VkMemoryBarrier mb = {VK_STRUCTURE_TYPE_MEMORY_BARRIER, NULL, VK_ACCESS_TRANSFER_WRITE_BIT, VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(h->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0,
                         NULL);
    vkEndCommandBuffer(h->cmd);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &h->cmd;
    vkResetFences(h->dev, 1, &h->fence);
    VT_CHECK(vkQueueSubmit(h->queue, 1, &si, h->fence) == VK_SUCCESS, "vkQueueSubmit");
    VT_CHECK(vkWaitForFences(h->dev, 1, &h->fence, VK_TRUE, UINT64_MAX) == VK_SUCCESS, "vkWaitForFences");
}

fasa_vk_embed host_embed(const host *h)
{
    fasa_vk_embed e;
    memset(&e, 0, sizeof e);
    e.instance = h->inst;
    e.physical_device = h->pd;
    e.device = h->dev;
    e.queue = h->queue;
    e.queue_family_index = h->family;
    e.get_instance_proc_addr = vkGetInstanceProcAddr;
    e.api_version = VK_API_VERSION_1_2;
    e.buffer_device_address_enabled = true;
    return e;
}

void destroy_host(host *h)
{
    vkDestroyFence(h->dev, h->fence, NULL);
    vkDestroyCommandPool(h->dev, h->pool, NULL);
    vkDestroyDevice(h->dev, NULL);
    if (h->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT destroy =
            (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(h->inst, "vkDestroyDebugUtilsMessengerEXT");
        destroy(h->inst, h->messenger, NULL);
    }
    vkDestroyInstance(h->inst, NULL);
}
