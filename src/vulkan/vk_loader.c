/* Per-context Vulkan function table (see vk_loader.h). */
#include <vulkan/vulkan.h> /* with prototypes: vkGetInstanceProcAddr of the loader we link */

#include "vk_loader.h"

#include <stddef.h>

PFN_vkGetInstanceProcAddr fasa__vk_loader_gipa(void)
{
    return vkGetInstanceProcAddr;
}

#define LOAD_GLOBAL(name)                                                                          \
    fn->name = (PFN_##name)gipa(NULL, #name);                                                      \
    if (!fn->name) {                                                                               \
        *missing = #name;                                                                          \
        return false;                                                                              \
    }

bool fasa__vk_load_global(vk_fns *fn, PFN_vkGetInstanceProcAddr gipa, const char **missing)
{
    fn->vkGetInstanceProcAddr = gipa;
    FASA_VK_GLOBAL_FNS(LOAD_GLOBAL)
    return true;
}

#define LOAD_INSTANCE(name)                                                                        \
    fn->name = (PFN_##name)fn->vkGetInstanceProcAddr(instance, #name);                             \
    if (!fn->name) {                                                                               \
        *missing = #name;                                                                          \
        return false;                                                                              \
    }
#define LOAD_INSTANCE_OPT(name) fn->name = (PFN_##name)fn->vkGetInstanceProcAddr(instance, #name);

bool fasa__vk_load_instance(vk_fns *fn, VkInstance instance, const char **missing)
{
    FASA_VK_INSTANCE_FNS(LOAD_INSTANCE)
    FASA_VK_INSTANCE_OPT_FNS(LOAD_INSTANCE_OPT)
    return true;
}

#define LOAD_DEVICE(name)                                                                          \
    fn->name = (PFN_##name)fn->vkGetDeviceProcAddr(device, #name);                                 \
    if (!fn->name) {                                                                               \
        *missing = #name;                                                                          \
        return false;                                                                              \
    }
#define LOAD_DEVICE_OPT(name) fn->name = (PFN_##name)fn->vkGetDeviceProcAddr(device, #name);

bool fasa__vk_load_device(vk_fns *fn, VkDevice device, bool bda_khr, const char **missing)
{
    FASA_VK_DEVICE_FNS(LOAD_DEVICE)
    FASA_VK_DEVICE_OPT_FNS(LOAD_DEVICE_OPT)
    const char *bda = bda_khr ? "vkGetBufferDeviceAddressKHR" : "vkGetBufferDeviceAddress";
    fn->vkGetBufferDeviceAddress = (PFN_vkGetBufferDeviceAddress)fn->vkGetDeviceProcAddr(device, bda);
    if (!fn->vkGetBufferDeviceAddress) {
        *missing = bda;
        return false;
    }
    return true;
}
