/* Per-context Vulkan function table, loaded with vkGetInstanceProcAddr and
 * vkGetDeviceProcAddr (no global state, no global vk* symbols: the host's
 * loader may be another one than ours in embedding mode).  libfasa does not
 * link the Vulkan loader: a standalone context (and each device listing)
 * opens libvulkan.so.1 at run time and closes it when done (dlopen counts
 * references, so the loader stays mapped while any context uses it); an
 * embedded context uses the host's get_instance_proc_addr and opens nothing. */
#ifndef FASA_VK_LOADER_H
#define FASA_VK_LOADER_H

#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <vulkan/vulkan.h>

#include "fasa.h"

#include <stdbool.h>
#include <stddef.h>

/* Loaded from vkGetInstanceProcAddr(NULL, ...). */
#define FASA_VK_GLOBAL_FNS(X)                                                                      \
    X(vkCreateInstance)                                                                            \
    X(vkEnumerateInstanceExtensionProperties)                                                      \
    X(vkEnumerateInstanceLayerProperties)

#define FASA_VK_INSTANCE_FNS(X)                                                                    \
    X(vkDestroyInstance)                                                                           \
    X(vkEnumeratePhysicalDevices)                                                                  \
    X(vkGetPhysicalDeviceProperties)                                                               \
    X(vkGetPhysicalDeviceProperties2)                                                              \
    X(vkGetPhysicalDeviceFeatures2)                                                                \
    X(vkGetPhysicalDeviceMemoryProperties)                                                         \
    X(vkGetPhysicalDeviceQueueFamilyProperties)                                                    \
    X(vkEnumerateDeviceExtensionProperties)                                                        \
    X(vkCreateDevice)                                                                              \
    X(vkGetDeviceProcAddr)

/* Optional instance functions (extensions). */
#define FASA_VK_INSTANCE_OPT_FNS(X)                                                                \
    X(vkCreateDebugUtilsMessengerEXT)                                                              \
    X(vkDestroyDebugUtilsMessengerEXT)                                                             \
    X(vkGetPhysicalDeviceMemoryProperties2)

#define FASA_VK_DEVICE_FNS(X)                                                                      \
    X(vkDestroyDevice)                                                                             \
    X(vkGetDeviceQueue)                                                                            \
    X(vkCreateBuffer)                                                                              \
    X(vkDestroyBuffer)                                                                             \
    X(vkGetBufferMemoryRequirements)                                                               \
    X(vkAllocateMemory)                                                                            \
    X(vkFreeMemory)                                                                                \
    X(vkBindBufferMemory)                                                                          \
    X(vkMapMemory)                                                                                 \
    X(vkUnmapMemory)                                                                               \
    X(vkFlushMappedMemoryRanges)                                                                   \
    X(vkInvalidateMappedMemoryRanges)                                                              \
    X(vkCreateShaderModule)                                                                        \
    X(vkDestroyShaderModule)                                                                       \
    X(vkCreatePipelineLayout)                                                                      \
    X(vkDestroyPipelineLayout)                                                                     \
    X(vkCreateComputePipelines)                                                                    \
    X(vkDestroyPipeline)                                                                           \
    X(vkCreatePipelineCache)                                                                       \
    X(vkDestroyPipelineCache)                                                                      \
    X(vkGetPipelineCacheData)                                                                      \
    X(vkCreateCommandPool)                                                                         \
    X(vkDestroyCommandPool)                                                                        \
    X(vkAllocateCommandBuffers)                                                                    \
    X(vkFreeCommandBuffers)                                                                        \
    X(vkBeginCommandBuffer)                                                                        \
    X(vkEndCommandBuffer)                                                                          \
    X(vkResetCommandBuffer)                                                                        \
    X(vkCmdBindPipeline)                                                                           \
    X(vkCmdPushConstants)                                                                          \
    X(vkCmdDispatch)                                                                               \
    X(vkCmdPipelineBarrier)                                                                        \
    X(vkCmdCopyBuffer)                                                                             \
    X(vkCmdFillBuffer)                                                                             \
    X(vkCmdUpdateBuffer)                                                                           \
    X(vkCmdWriteTimestamp)                                                                         \
    X(vkCmdResetQueryPool)                                                                         \
    X(vkCreateQueryPool)                                                                           \
    X(vkDestroyQueryPool)                                                                          \
    X(vkGetQueryPoolResults)                                                                       \
    X(vkQueueSubmit)                                                                               \
    X(vkCreateFence)                                                                               \
    X(vkDestroyFence)                                                                              \
    X(vkResetFences)                                                                               \
    X(vkWaitForFences)                                                                             \
    X(vkDeviceWaitIdle)

/* Optional device functions (extensions). */
#define FASA_VK_DEVICE_OPT_FNS(X)                                                                  \
    X(vkGetPipelineExecutablePropertiesKHR)                                                        \
    X(vkGetPipelineExecutableStatisticsKHR)

#define FASA_VK_DECLARE(name) PFN_##name name;

typedef struct vk_fns {
    void *lib;                   /* the loader libfasa opened (fasa__vk_open_loader), or NULL */
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
    FASA_VK_GLOBAL_FNS(FASA_VK_DECLARE)
    FASA_VK_INSTANCE_FNS(FASA_VK_DECLARE)
    FASA_VK_INSTANCE_OPT_FNS(FASA_VK_DECLARE)
    FASA_VK_DEVICE_FNS(FASA_VK_DECLARE)
    FASA_VK_DEVICE_OPT_FNS(FASA_VK_DECLARE)
    /* vkGetBufferDeviceAddress (1.2) or vkGetBufferDeviceAddressKHR */
    PFN_vkGetBufferDeviceAddress vkGetBufferDeviceAddress;
} vk_fns;

/* Standalone mode: opens the system Vulkan loader (libvulkan.so.1) into
 * fn->lib and loads the global functions; BACKEND_UNAVAILABLE with the
 * library's name and the dlerror() text in msg when it cannot. */
fasa_status fasa__vk_open_loader(vk_fns *fn, char *msg, size_t msg_size);
/* Closes fn->lib (NULL: nothing to do), after every instance made through
 * it is destroyed. */
void fasa__vk_close_loader(vk_fns *fn);
/* Global functions; false names the first missing one in *missing. */
bool fasa__vk_load_global(vk_fns *fn, PFN_vkGetInstanceProcAddr gipa, const char **missing);
bool fasa__vk_load_instance(vk_fns *fn, VkInstance instance, const char **missing);
/* Device functions; bda_khr: use the KHR name of vkGetBufferDeviceAddress. */
bool fasa__vk_load_device(vk_fns *fn, VkDevice device, bool bda_khr, const char **missing);

#endif
