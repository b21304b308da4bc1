/*
 * vulkan_host.c: a Vulkan engine that embeds libfasa.
 *
 * The application owns everything Vulkan: the VkInstance (with its own debug
 * messenger), the VkDevice with the bufferDeviceAddress feature libfasa
 * needs, the queue, the command pool and buffer, the fence and the VkBuffers
 * holding k, v, q and o.  libfasa gets the device through fasa_vk_embed,
 * wraps the application's buffers, and only *records* its work (appends and
 * decode steps) into the application's command buffer; the application
 * submits and waits as it does for its own kernels.
 *
 * libfasa never touches the application's queue here: the context is
 * created with FASA_VK_EMBED_RECORD_CACHE_INIT, so the cache's
 * initialisation is recorded into the application's first command buffer
 * (fasa_vk_record_kv_cache_init) instead of being submitted by
 * fasa_kv_cache_create.
 *
 * Per generated token the engine records, in one command buffer:
 *   its own command writing q (here vkCmdUpdateBuffer; in an engine the
 *   q projection + RoPE), a barrier making q readable by transfers,
 *   fasa_vk_record_append (the token's k/v) and fasa_vk_record_decode per
 *   layer, a barrier, then its own consumer of o (here a copy to a
 *   host-visible read-back buffer).
 *
 * The check: the outputs of both layers (layer 0 dense by default, layer 1
 * FASA) equal a CPU-backend decode of the same data within a max abs
 * difference of 1e-4, and the debug messenger saw no validation message
 * (run with VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation).
 *
 * Build against an installed libfasa (the application links its own loader):
 *   cc vulkan_host.c $(pkg-config --cflags --libs fasa) -lvulkan -lm -o vulkan_host
 * Exit status: 0 = pass, 1 = failure, 77 = skipped (no Vulkan 1.2 device
 * with bufferDeviceAddress, or libfasa built without Vulkan).
 */
#include <fasa_vulkan.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_LAYERS 2u
#define HQ 8u
#define HKV 2u
#define D 64u
#define N_TIP 8u
#define PROMPT 1500u
#define N_FAC 256u
#define TOLERANCE 1e-4
#define SKIP 77

/* Deterministic data: integer K and q (exact TIP scores on every backend,
 * so both backends select the same tokens), V in steps of 1/256. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
static float small_int(void) { return (float)((int)(next_u64() >> 33) % 5 - 2); }
static float uniform(void) { return (float)((int)(next_u64() >> 33) % 513 - 256) / 256.0f; }

#define VK(call)                                                                       \
    do {                                                                               \
        VkResult r_ = (call);                                                          \
        if (r_ != VK_SUCCESS) {                                                        \
            fprintf(stderr, "FAIL: %s returned %d (line %d)\n", #call, r_, __LINE__);  \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* Stops at the first failing libfasa call, printing what the context says. */
static void fasa_ok(fasa_context *ctx, fasa_status st, const char *what)
{
    if (st == FASA_OK) return;
    fprintf(stderr, "FAIL: %s: %s: %s\n", what, fasa_status_string(st), ctx ? fasa_context_last_error(ctx) : "");
    exit(1);
}

/* ------------------------------------------------------------------------ */
/* The application's Vulkan objects                                          */
/* ------------------------------------------------------------------------ */

typedef struct app {
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice physical;
    VkDevice device;
    uint32_t family;
    VkQueue queue;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
} app;

typedef struct app_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    void *map; /* host-visible buffers only */
} app_buffer;

static unsigned validation_messages = 0;

/* Counts what the validation layer reports, about the application's calls
 * and about libfasa's (they share the instance). */
static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                 VkDebugUtilsMessageTypeFlagsEXT type,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    (void)user;
    if (severity >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT &&
        (type & (VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT))) {
        validation_messages++;
        fprintf(stderr, "validation: %s\n", data->pMessage);
    }
    return VK_FALSE;
}

static int has_instance_extension(const char *name)
{
    uint32_t n = 0;
    vkEnumerateInstanceExtensionProperties(NULL, &n, NULL);
    VkExtensionProperties *props = calloc(n ? n : 1, sizeof *props);
    vkEnumerateInstanceExtensionProperties(NULL, &n, props);
    int found = 0;
    for (uint32_t i = 0; i < n; i++) found |= strcmp(props[i].extensionName, name) == 0;
    free(props);
    return found;
}

static void create_instance(app *a)
{
    uint32_t version = VK_API_VERSION_1_0;
    vkEnumerateInstanceVersion(&version);
    if (version < VK_API_VERSION_1_2) {
        printf("SKIP: the Vulkan loader is older than 1.2\n");
        exit(SKIP);
    }
    VkDebugUtilsMessengerCreateInfoEXT mi = {.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
    mi.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    mi.pfnUserCallback = on_message;
    int debug = has_instance_extension(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    const char *ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    VkApplicationInfo info = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "vulkan_host",
                              .apiVersion = VK_API_VERSION_1_2};
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &info};
    if (debug) { /* the chained messenger also sees instance creation and destruction */
        ci.pNext = &mi;
        ci.enabledExtensionCount = 1;
        ci.ppEnabledExtensionNames = &ext;
    }
    if (vkCreateInstance(&ci, NULL, &a->instance) != VK_SUCCESS) {
        printf("SKIP: vkCreateInstance failed (no Vulkan driver)\n");
        exit(SKIP);
    }
    if (debug) {
        PFN_vkCreateDebugUtilsMessengerEXT create =
            (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(a->instance, "vkCreateDebugUtilsMessengerEXT");
        VK(create(a->instance, &mi, NULL, &a->messenger));
    }
    const char *layers = getenv("VK_INSTANCE_LAYERS");
    printf("instance: debug messenger %s, VK_INSTANCE_LAYERS=%s\n", debug ? "on" : "unavailable",
           layers ? layers : "(unset)");
}

/* The first device with Vulkan 1.2, bufferDeviceAddress and a compute queue. */
static void create_device(app *a)
{
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(a->instance, &n, NULL);
    VkPhysicalDevice *devices = calloc(n ? n : 1, sizeof *devices);
    vkEnumeratePhysicalDevices(a->instance, &n, devices);
    for (uint32_t i = 0; i < n && !a->physical; i++) {
        VkPhysicalDeviceProperties props;
        vkGetPhysicalDeviceProperties(devices[i], &props);
        VkPhysicalDeviceVulkan12Features f12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
        VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12};
        if (props.apiVersion < VK_API_VERSION_1_2) continue;
        vkGetPhysicalDeviceFeatures2(devices[i], &f2);
        if (!f12.bufferDeviceAddress) continue;
        uint32_t nq = 0;
        vkGetPhysicalDeviceQueueFamilyProperties(devices[i], &nq, NULL);
        VkQueueFamilyProperties *qf = calloc(nq ? nq : 1, sizeof *qf);
        vkGetPhysicalDeviceQueueFamilyProperties(devices[i], &nq, qf);
        for (uint32_t f = 0; f < nq; f++)
            if (qf[f].queueFlags & VK_QUEUE_COMPUTE_BIT) {
                a->physical = devices[i];
                a->family = f;
                printf("device: %s\n", props.deviceName);
                break;
            }
        free(qf);
    }
    free(devices);
    if (!a->physical) {
        printf("SKIP: no Vulkan 1.2 device with bufferDeviceAddress and a compute queue\n");
        exit(SKIP);
    }
    /* libfasa's only device requirement: bufferDeviceAddress enabled */
    VkPhysicalDeviceVulkan12Features f12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                                            .bufferDeviceAddress = VK_TRUE};
    float priority = 1.0f;
    VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = a->family,
                                  .queueCount = 1, .pQueuePriorities = &priority};
    VkDeviceCreateInfo di = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f12,
                             .queueCreateInfoCount = 1, .pQueueCreateInfos = &qi};
    VK(vkCreateDevice(a->physical, &di, NULL, &a->device));
    vkGetDeviceQueue(a->device, a->family, 0, &a->queue);
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                  .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                  .queueFamilyIndex = a->family};
    VK(vkCreateCommandPool(a->device, &pi, NULL, &a->pool));
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = a->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1};
    VK(vkAllocateCommandBuffers(a->device, &ai, &a->cmd));
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VK(vkCreateFence(a->device, &fi, NULL, &a->fence));
}

/* A buffer in the first memory type that has all of `props`. */
static app_buffer make_buffer(app *a, VkDeviceSize size, VkBufferUsageFlags usage, VkMemoryPropertyFlags props)
{
    app_buffer b = {.size = size};
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size, .usage = usage,
                             .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VK(vkCreateBuffer(a->device, &bi, NULL, &b.buffer));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(a->device, b.buffer, &req);
    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(a->physical, &mem);
    uint32_t type = 0;
    while (type < mem.memoryTypeCount &&
           (!(req.memoryTypeBits & (1u << type)) || (mem.memoryTypes[type].propertyFlags & props) != props))
        type++;
    if (type == mem.memoryTypeCount) {
        fprintf(stderr, "FAIL: no memory type with properties 0x%x\n", (unsigned)props);
        exit(1);
    }
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                               .memoryTypeIndex = type};
    VK(vkAllocateMemory(a->device, &ai, NULL, &b.memory));
    VK(vkBindBufferMemory(a->device, b.buffer, b.memory, 0));
    if (props & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) VK(vkMapMemory(a->device, b.memory, 0, VK_WHOLE_SIZE, 0, &b.map));
    return b;
}

static void free_buffer(app *a, app_buffer *b)
{
    vkDestroyBuffer(a->device, b->buffer, NULL);
    vkFreeMemory(a->device, b->memory, NULL);
}

static void begin_commands(app *a)
{
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VK(vkResetCommandBuffer(a->cmd, 0));
    VK(vkBeginCommandBuffer(a->cmd, &bi));
}

static void submit_and_wait(app *a)
{
    VK(vkEndCommandBuffer(a->cmd));
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &a->cmd};
    VK(vkResetFences(a->device, 1, &a->fence));
    VK(vkQueueSubmit(a->queue, 1, &si, a->fence));
    VK(vkWaitForFences(a->device, 1, &a->fence, VK_TRUE, UINT64_MAX));
}

/* A global memory barrier between two stages of the application's commands. */
static void barrier(app *a, VkPipelineStageFlags src_stage, VkAccessFlags src_access, VkPipelineStageFlags dst_stage,
                    VkAccessFlags dst_access)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = src_access,
                          .dstAccessMask = dst_access};
    vkCmdPipelineBarrier(a->cmd, src_stage, dst_stage, 0, 1, &mb, 0, NULL, 0, NULL);
}

static void destroy_app(app *a)
{
    vkDestroyFence(a->device, a->fence, NULL);
    vkDestroyCommandPool(a->device, a->pool, NULL);
    vkDestroyDevice(a->device, NULL);
    if (a->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT destroy =
            (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(a->instance, "vkDestroyDebugUtilsMessengerEXT");
        destroy(a->instance, a->messenger, NULL);
    }
    vkDestroyInstance(a->instance, NULL);
}

/* ------------------------------------------------------------------------ */
/* libfasa: the same calibration and cache on any context                    */
/* ------------------------------------------------------------------------ */

static fasa_kv_cache *make_cache(fasa_context *ctx, const fasa_model_shape *shape)
{
    static uint16_t dims[N_LAYERS][HQ][2 * N_TIP];
    for (uint32_t l = 0; l < N_LAYERS; l++)
        for (uint32_t h = 0; h < HQ; h++) { /* N_TIP distinct chunks per head, as ascending dims */
            uint8_t used[D / 2] = {0};
            for (uint32_t i = 0; i < N_TIP; i++) used[(h + 3 * i + l) % (D / 2)] = 1;
            for (uint32_t j = 0, w = 0; j < D / 2; j++)
                if (used[j]) dims[l][h][w++] = (uint16_t)(2 * j), dims[l][h][w++] = (uint16_t)(2 * j + 1);
        }
    fasa_calibration_desc cal_desc = {.shape = *shape, .n_tip = N_TIP, .dims = &dims[0][0][0], .source = "synthetic"};
    fasa_calibration *cal = NULL;
    fasa_ok(ctx, fasa_calibration_create(ctx, &cal_desc, &cal), "fasa_calibration_create");
    fasa_kv_cache_desc desc = {.shape = *shape, .capacity = 2048, .calibration = cal}; /* fp16, layer 0 dense */
    fasa_kv_cache *cache = NULL;
    fasa_ok(ctx, fasa_kv_cache_create(ctx, &desc, &cache), "fasa_kv_cache_create");
    fasa_calibration_destroy(cal);
    return cache;
}

int main(void)
{
    if (!fasa_backend_compiled(FASA_BACKEND_VULKAN)) {
        printf("SKIP: this libfasa was built without the Vulkan backend\n");
        return SKIP;
    }
    const uint32_t L = PROMPT + 1;
    const size_t row = (size_t)HKV * D, nq = (size_t)HQ * D;
    const VkDeviceSize q_bytes = nq * 4, kv_bytes = L * row * 4;
    fasa_model_shape shape = {.n_layers = N_LAYERS, .n_q_heads = HQ, .n_kv_heads = HKV, .head_dim = D,
                              .layout = FASA_ROPE_NORM};

    /* Host data: k/v of the prompt and the new token, the new token's q. */
    float *k = malloc(kv_bytes), *v = malloc(kv_bytes), *q = malloc(q_bytes);
    for (size_t i = 0; i < L * row; i++) k[i] = small_int(), v[i] = uniform();
    for (size_t i = 0; i < nq; i++) q[i] = small_int();

    app a;
    memset(&a, 0, sizeof a);
    create_instance(&a);
    create_device(&a);

    /* libfasa on the application's device. */
    fasa_vk_embed embed = {.instance = a.instance, .physical_device = a.physical, .device = a.device,
                           .queue = a.queue, .queue_family_index = a.family,
                           .get_instance_proc_addr = vkGetInstanceProcAddr, .api_version = VK_API_VERSION_1_2,
                           .buffer_device_address_enabled = true,
                           .flags = FASA_VK_EMBED_RECORD_CACHE_INIT}; /* no submission at cache creation */
    char msg[512] = "";
    fasa_context_desc cdesc = {.backend = FASA_BACKEND_VULKAN, .embed = &embed, .error_message = msg,
                               .error_message_size = sizeof msg};
    fasa_context *vk = NULL;
    fasa_status st = fasa_context_create(&cdesc, &vk);
    if (st == FASA_ERROR_BACKEND_UNAVAILABLE || st == FASA_ERROR_UNSUPPORTED) {
        printf("SKIP: %s: %s\n", fasa_status_string(st), msg);
        destroy_app(&a);
        return SKIP;
    }
    if (st != FASA_OK) {
        fprintf(stderr, "FAIL: fasa_context_create: %s: %s\n", fasa_status_string(st), msg);
        return 1;
    }
    fasa_kv_cache *cache = make_cache(vk, &shape);

    /* The application's buffers with exactly the usage libfasa documents:
     * k, v and q are read by libfasa's copies (TRANSFER_SRC), o is written by
     * one (TRANSFER_DST).  k and v are host-visible staging here; q and o are
     * device-local, written and read by the application's own commands. */
    const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    app_buffer kb = make_buffer(&a, kv_bytes, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, host);
    app_buffer vb = make_buffer(&a, kv_bytes, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, host);
    app_buffer qb = make_buffer(&a, q_bytes, VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    app_buffer ob = make_buffer(&a, N_LAYERS * q_bytes, /* one output per layer */
                                VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    app_buffer readback = make_buffer(&a, N_LAYERS * q_bytes, VK_BUFFER_USAGE_TRANSFER_DST_BIT, host);
    memcpy(kb.map, k, kv_bytes);
    memcpy(vb.map, v, kv_bytes);

    fasa_buffer *fk = NULL, *fv = NULL, *fq = NULL, *fo = NULL; /* wrappers; the VkBuffers stay the application's */
    fasa_ok(vk, fasa_vk_buffer_wrap(vk, kb.buffer, 0, kv_bytes, &fk), "wrap k");
    fasa_ok(vk, fasa_vk_buffer_wrap(vk, vb.buffer, 0, kv_bytes, &fv), "wrap v");
    fasa_ok(vk, fasa_vk_buffer_wrap(vk, qb.buffer, 0, q_bytes, &fq), "wrap q");
    fasa_ok(vk, fasa_vk_buffer_wrap(vk, ob.buffer, 0, N_LAYERS * q_bytes, &fo), "wrap o");

    /* Submission 1, prefill: the prompt's k/v into every layer.  k and v
     * were written by the host before the submit, which makes them visible. */
    begin_commands(&a);
    fasa_ok(vk, fasa_vk_record_kv_cache_init(cache, a.cmd), "record cache init"); /* before the cache's first use */
    for (uint32_t l = 0; l < N_LAYERS; l++)
        fasa_ok(vk, fasa_vk_record_append(cache, l, PROMPT, a.cmd, fk, 0, fv, 0, FASA_DTYPE_F32), "record prefill");
    submit_and_wait(&a);

    /* Submission 2, one decode step. */
    fasa_decode_desc step = {.mode = FASA_MODE_FASA, .n_fac = N_FAC, .n_sink = 4, .n_recent = 28};
    begin_commands(&a);
    vkCmdUpdateBuffer(a.cmd, qb.buffer, 0, q_bytes, q); /* the engine's own producer of q */
    /* q's writer before libfasa's copy (libfasa's leading barrier covers transfer
     * and compute writers already; a producer in another stage needs this) */
    barrier(&a, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_READ_BIT);
    for (uint32_t l = 0; l < N_LAYERS; l++) {
        /* libfasa orders its own commands (a barrier opens every recorded call) */
        fasa_ok(vk, fasa_vk_record_append(cache, l, 1, a.cmd, fk, PROMPT * row * 4, fv, PROMPT * row * 4,
                                          FASA_DTYPE_F32), "record append");
        fasa_ok(vk, fasa_vk_record_decode(cache, l, &step, a.cmd, fq, 0, fo, l * q_bytes), "record decode");
    }
    /* o was written by a copy: order the application's consumer after it.  libfasa
     * left its own compute pipeline and push constants bound: an engine binds its
     * pipeline and pushes its constants again before its next dispatch (its
     * descriptor sets are untouched). */
    barrier(&a, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_READ_BIT);
    VkBufferCopy region = {.size = N_LAYERS * q_bytes};
    vkCmdCopyBuffer(a.cmd, ob.buffer, readback.buffer, 1, &region);
    barrier(&a, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_HOST_READ_BIT);
    submit_and_wait(&a);
    const float *o_vk = readback.map;

    /* The same step on the CPU backend. */
    fasa_context_desc cpu_desc = {.backend = FASA_BACKEND_CPU};
    fasa_context *cpu = NULL;
    fasa_ok(NULL, fasa_context_create(&cpu_desc, &cpu), "CPU context");
    fasa_kv_cache *cpu_cache = make_cache(cpu, &shape);
    float *o_cpu = malloc(N_LAYERS * q_bytes);
    for (uint32_t l = 0; l < N_LAYERS; l++) {
        fasa_ok(cpu, fasa_kv_cache_append(cpu_cache, l, L, k, v, FASA_DTYPE_F32), "CPU append");
        fasa_ok(cpu, fasa_decode_host(cpu_cache, l, &step, q, o_cpu + l * nq, NULL), "CPU decode");
    }

    int failed = 0;
    for (uint32_t l = 0; l < N_LAYERS; l++) {
        double max_diff = 0;
        for (size_t i = 0; i < nq; i++) {
            double diff = fabs((double)o_vk[l * nq + i] - o_cpu[l * nq + i]);
            if (diff > max_diff || isnan(diff)) max_diff = diff; /* a NaN sticks */
        }
        printf("layer %u (%s): max |o_vulkan - o_cpu| = %.3g (tolerance %.0e)\n", l, l == 0 ? "dense" : "FASA",
               max_diff, TOLERANCE);
        if (!(max_diff <= TOLERANCE)) failed = 1;
    }

    /* Teardown: libfasa's objects before the device they live on. */
    fasa_buffer_destroy(fk), fasa_buffer_destroy(fv), fasa_buffer_destroy(fq), fasa_buffer_destroy(fo);
    fasa_kv_cache_destroy(cache);
    fasa_context_destroy(vk);
    fasa_kv_cache_destroy(cpu_cache);
    fasa_context_destroy(cpu);
    free_buffer(&a, &kb), free_buffer(&a, &vb), free_buffer(&a, &qb), free_buffer(&a, &ob);
    free_buffer(&a, &readback);
    destroy_app(&a);
    printf("validation messages: %u\n", validation_messages);
    if (validation_messages) failed = 1;
    free(k), free(v), free(q), free(o_cpu);
    printf("vulkan_host: %s\n", failed ? "FAILED" : "ok");
    return failed;
}
