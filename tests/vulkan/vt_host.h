/* A host application's own Vulkan instance, device, queue, command buffer
 * and buffers, for the embedding tests (validation layer on when installed,
 * messages counted by the host's own debug messenger). */
#ifndef FASA_VT_HOST_H
#define FASA_VT_HOST_H

#include "fasa_vulkan.h"

typedef struct host {
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice pd;
    VkDevice dev;
    VkQueue queue;
    uint32_t family;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
    uint32_t n_messages;
    bool sync_validation;        /* set before create_instance: also synchronization validation */
} host;

typedef struct hbuf {
    VkBuffer buf;
    VkDeviceMemory mem;
    void *map;
    VkDeviceSize size;
} hbuf;

/* Exit 77 when no device with Vulkan 1.2 bufferDeviceAddress exists. */
void create_instance(host *h);
void create_device(host *h);
void destroy_host(host *h);
/* A host-visible coherent buffer with exactly `usage`. */
hbuf make_buffer(host *h, VkDeviceSize size, VkBufferUsageFlags usage);
void free_buffer(host *h, hbuf *b);
void begin(host *h);
/* Ends cmd with a transfer-write -> host-read barrier, submits, waits. */
void end_and_submit(host *h);
/* The fasa_vk_embed of the host's objects. */
fasa_vk_embed host_embed(const host *h);

#endif
