/* Per-context Vulkan function table (see vk_loader.h). */
#include "vk_loader.h"
#include "dynlib.h"

#include <stddef.h>
#include <stdio.h>

fasa_status fasa__vk_open_loader(vk_fns *fn, char *msg, size_t msg_size)
{
    static const char *const names[] = FASA_VULKAN_LOADER_NAMES;
    char why[512];
    fn->lib = fasa__dynlib_open(names, why, sizeof why);
    if (!fn->lib) {
        snprintf(msg, msg_size, "vulkan: %s; install the Vulkan loader (Debian: libvulkan1) and a driver", why);
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    PFN_vkGetInstanceProcAddr gipa = (PFN_vkGetInstanceProcAddr)fasa__dynlib_sym(fn->lib, "vkGetInstanceProcAddr");
    const char *missing = "vkGetInstanceProcAddr";
    if (!gipa || !fasa__vk_load_global(fn, gipa, &missing)) {
        snprintf(msg, msg_size, "vulkan: the loader %s lacks %s", names[0], missing);
        fasa__vk_close_loader(fn);
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    return FASA_OK;
}

void fasa__vk_close_loader(vk_fns *fn)
{
    fasa__dynlib_close(fn->lib);
    fn->lib = NULL;
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
