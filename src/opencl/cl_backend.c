/* OpenCL backend: devices, context and queue, buffers, command streams
 * (the in-order queue) and the backend table.  Program building and the
 * binary cache are in cl_program.c, cache storage in cl_cache.c, kernel
 * dispatch in cl_kernels.c, the embedding API in cl_embed.c. */
#include "cl_internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CL_PLATFORM_NOT_FOUND -1001 /* CL_PLATFORM_NOT_FOUND_KHR (cl_khr_icd) */
#define MAX_PLATFORMS 16u
#define MAX_DEVICES 64u

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

const char *fasa__cl_error_name(cl_int err)
{
    switch (err) {
    case CL_SUCCESS: return "CL_SUCCESS";
    case CL_DEVICE_NOT_FOUND: return "CL_DEVICE_NOT_FOUND";
    case CL_DEVICE_NOT_AVAILABLE: return "CL_DEVICE_NOT_AVAILABLE";
    case CL_COMPILER_NOT_AVAILABLE: return "CL_COMPILER_NOT_AVAILABLE";
    case CL_MEM_OBJECT_ALLOCATION_FAILURE: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case CL_OUT_OF_RESOURCES: return "CL_OUT_OF_RESOURCES";
    case CL_OUT_OF_HOST_MEMORY: return "CL_OUT_OF_HOST_MEMORY";
    case CL_PROFILING_INFO_NOT_AVAILABLE: return "CL_PROFILING_INFO_NOT_AVAILABLE";
    case CL_BUILD_PROGRAM_FAILURE: return "CL_BUILD_PROGRAM_FAILURE";
    case CL_MISALIGNED_SUB_BUFFER_OFFSET: return "CL_MISALIGNED_SUB_BUFFER_OFFSET";
    case CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST: return "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST";
    case CL_INVALID_VALUE: return "CL_INVALID_VALUE";
    case CL_INVALID_DEVICE: return "CL_INVALID_DEVICE";
    case CL_INVALID_CONTEXT: return "CL_INVALID_CONTEXT";
    case CL_INVALID_QUEUE_PROPERTIES: return "CL_INVALID_QUEUE_PROPERTIES";
    case CL_INVALID_COMMAND_QUEUE: return "CL_INVALID_COMMAND_QUEUE";
    case CL_INVALID_MEM_OBJECT: return "CL_INVALID_MEM_OBJECT";
    case CL_INVALID_BINARY: return "CL_INVALID_BINARY";
    case CL_INVALID_BUILD_OPTIONS: return "CL_INVALID_BUILD_OPTIONS";
    case CL_INVALID_PROGRAM: return "CL_INVALID_PROGRAM";
    case CL_INVALID_PROGRAM_EXECUTABLE: return "CL_INVALID_PROGRAM_EXECUTABLE";
    case CL_INVALID_KERNEL_NAME: return "CL_INVALID_KERNEL_NAME";
    case CL_INVALID_KERNEL: return "CL_INVALID_KERNEL";
    case CL_INVALID_ARG_INDEX: return "CL_INVALID_ARG_INDEX";
    case CL_INVALID_ARG_VALUE: return "CL_INVALID_ARG_VALUE";
    case CL_INVALID_ARG_SIZE: return "CL_INVALID_ARG_SIZE";
    case CL_INVALID_KERNEL_ARGS: return "CL_INVALID_KERNEL_ARGS";
    case CL_INVALID_WORK_DIMENSION: return "CL_INVALID_WORK_DIMENSION";
    case CL_INVALID_WORK_GROUP_SIZE: return "CL_INVALID_WORK_GROUP_SIZE";
    case CL_INVALID_WORK_ITEM_SIZE: return "CL_INVALID_WORK_ITEM_SIZE";
    case CL_INVALID_GLOBAL_OFFSET: return "CL_INVALID_GLOBAL_OFFSET";
    case CL_INVALID_EVENT: return "CL_INVALID_EVENT";
    case CL_INVALID_OPERATION: return "CL_INVALID_OPERATION";
    case CL_INVALID_BUFFER_SIZE: return "CL_INVALID_BUFFER_SIZE";
    case CL_INVALID_GLOBAL_WORK_SIZE: return "CL_INVALID_GLOBAL_WORK_SIZE";
    case CL_INVALID_PLATFORM: return "CL_INVALID_PLATFORM";
    case CL_PLATFORM_NOT_FOUND: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "unknown OpenCL error";
    }
}

fasa_status fasa__cl_status(cl_int err)
{
    switch (err) {
    case CL_SUCCESS: return FASA_OK;
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
    case CL_OUT_OF_RESOURCES:
    case CL_INVALID_BUFFER_SIZE: return FASA_ERROR_OUT_OF_DEVICE_MEMORY;
    case CL_OUT_OF_HOST_MEMORY: return FASA_ERROR_OUT_OF_HOST_MEMORY;
    case CL_DEVICE_NOT_FOUND:
    case CL_DEVICE_NOT_AVAILABLE:
    case CL_COMPILER_NOT_AVAILABLE:
    case CL_PLATFORM_NOT_FOUND: return FASA_ERROR_BACKEND_UNAVAILABLE;
    case CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST: return FASA_ERROR_DEVICE_LOST;
    default: return FASA_ERROR_BACKEND;
    }
}

fasa_status fasa__cl_fail(fasa_context *ctx, cl_int err, const char *what)
{
    return fasa__error(ctx, fasa__cl_status(err), "opencl: %s failed: %s (%d)", what,
                       fasa__cl_error_name(err), (int)err);
}

cl_mem fasa__cl_create_buffer(fasa_context *ctx, cl_mem_flags flags, size_t size, void *host, cl_int *err)
{
    if (fasa__fault(ctx, FASA_FAULT_DEVICE_ALLOC)) {
        *err = CL_MEM_OBJECT_ALLOCATION_FAILURE;
        return NULL;
    }
    return clCreateBuffer(((cl_ctx *)ctx->impl)->context, flags, size, host, err);
}

/* ------------------------------------------------------------------------ */
/* Memory requests, checked before anything is created                       */
/* ------------------------------------------------------------------------ */

void fasa__cl_request_add(cl_request *r, uint64_t total, uint64_t largest, bool host)
{
    if (largest > r->largest) r->largest = largest;
    if (host) r->host = fasa__sat_add(r->host, total);
    else r->device = fasa__sat_add(r->device, total);
}

/* "N bytes (X GiB)"; a saturated sum can only say that it reached 2^64 - 1. */
static const char *bytes_text(uint64_t n, char *out, size_t size)
{
    if (n == UINT64_MAX) snprintf(out, size, "at least %llu bytes (2^64 - 1)", (unsigned long long)n);
    else if (n < (1ull << 30)) snprintf(out, size, "%llu bytes (%.1f MiB)", (unsigned long long)n, (double)n / (1u << 20));
    else snprintf(out, size, "%llu bytes (%.1f GiB)", (unsigned long long)n, (double)n / (1u << 30));
    return out;
}

/* The host's physical memory (0 = unknown): where a CPU device (PoCL)
 * allocates from, and where FASA-M keeps K and V on other devices. */
static uint64_t physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? fasa__sat_mul((uint64_t)pages, (uint64_t)page) : 0;
}

/* Drivers accept requests they cannot keep (PoCL asserts inside
 * clCreateBuffer for huge ones, or hands out memory that the kernel's OOM
 * killer reclaims by ending the process when it is touched), so every
 * creation is checked here first against the device's own limits. */
fasa_status fasa__cl_check_request(fasa_context *ctx, const cl_request *r, const char *what)
{
    cl_ctx *cc = ctx->impl;
    char a[64], b[64];
    if (r->largest > cc->max_alloc)
        return fasa__error(ctx, FASA_ERROR_OUT_OF_DEVICE_MEMORY,
                           "opencl: %s requests %s in one allocation, more than CL_DEVICE_MAX_MEM_ALLOC_SIZE of "
                           "'%s' (%s)", what, bytes_text(r->largest, a, sizeof a), cc->device_name,
                           bytes_text(cc->max_alloc, b, sizeof b));
    if (cc->global_mem && r->device > cc->global_mem)
        return fasa__error(ctx, FASA_ERROR_OUT_OF_DEVICE_MEMORY,
                           "opencl: %s requests %s of device memory, more than CL_DEVICE_GLOBAL_MEM_SIZE of '%s' "
                           "(%s)", what, bytes_text(r->device, a, sizeof a), cc->device_name,
                           bytes_text(cc->global_mem, b, sizeof b));
    uint64_t in_host = cc->is_cpu ? fasa__sat_add(r->device, r->host) : r->host;
    if (cc->host_mem && in_host > cc->host_mem)
        return fasa__error(ctx, FASA_ERROR_OUT_OF_DEVICE_MEMORY,
                           "opencl: %s requests %s of host memory (%s), more than the host's physical memory (%s)",
                           what, bytes_text(in_host, a, sizeof a),
                           cc->is_cpu ? "the CPU device allocates everything there" : "FASA-M K and V",
                           bytes_text(cc->host_mem, b, sizeof b));
    return FASA_OK;
}

/* Errors reported while waiting for submitted work: the kernels ran (or
 * died) on the device, so a failure there means the device is gone. */
static fasa_status wait_fail(fasa_context *ctx, cl_int err, const char *what)
{
    fasa_status st = fasa__cl_status(err);
    if (st == FASA_ERROR_BACKEND || err == CL_OUT_OF_RESOURCES) st = FASA_ERROR_DEVICE_LOST;
    return fasa__error(ctx, st, "opencl: %s failed: %s (%d)", what, fasa__cl_error_name(err), (int)err);
}

/* ------------------------------------------------------------------------ */
/* Kernel arguments and launches                                             */
/* ------------------------------------------------------------------------ */

void fasa__cl_arg(cl_args *a, size_t size, const void *value)
{
    if (a->err == CL_SUCCESS) a->err = clSetKernelArg(a->k, a->i, size, value);
    a->i++;
}

void fasa__cl_arg_mem(cl_args *a, cl_mem m) { fasa__cl_arg(a, sizeof m, &m); }
void fasa__cl_arg_u32(cl_args *a, uint32_t v) { cl_uint x = v; fasa__cl_arg(a, sizeof x, &x); }
void fasa__cl_arg_u64(cl_args *a, uint64_t v) { cl_ulong x = v; fasa__cl_arg(a, sizeof x, &x); }
void fasa__cl_arg_f32(cl_args *a, float v) { cl_float x = v; fasa__cl_arg(a, sizeof x, &x); }

fasa_status fasa__cl_launch(fasa_exec *exec, int kind, cl_kernel k, cl_uint dims, const size_t *gws,
                            const size_t *lws)
{
    for (cl_uint i = 0; i < dims; i++)
        if (gws[i] == 0) return FASA_OK; /* nothing to do */
    cl_event ev = NULL;
    /* test hook (fasa_debug.h): a SUBMIT fault fails the launch as a driver
     * short of resources does; the kernels enqueued before it still run */
    cl_int err = fasa__fault(exec->ctx, FASA_FAULT_SUBMIT)
                     ? CL_OUT_OF_RESOURCES
                     : clEnqueueNDRangeKernel(exec->queue, k, dims, NULL, gws, lws, 0, NULL,
                                              exec->profile ? &ev : NULL);
    if (err != CL_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "clEnqueueNDRangeKernel(%s)", fasa__cl_kernel_names[kind]);
        return fasa__cl_fail(exec->ctx, err, what);
    }
    if (!ev) return FASA_OK;
    if (exec->n_events < FASA_CL_MAX_EVENTS) {
        exec->kinds[exec->n_events] = (uint8_t)kind;
        exec->events[exec->n_events++] = ev;
    } else {
        if (exec->last) clReleaseEvent(exec->last);
        exec->last = ev;
    }
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct dev_ref {
    cl_platform_id platform;
    cl_device_id device;
} dev_ref;

static void copy_msg(char *dst, size_t size, const char *src)
{
    if (dst && size) snprintf(dst, size, "%s", src);
}

/* Every device of every platform, in platform order. */
static fasa_status enumerate(dev_ref *out, uint32_t *n, char *msg, size_t msg_size)
{
    cl_platform_id plats[MAX_PLATFORMS];
    cl_uint np = 0;
    *n = 0;
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, plats, &np);
    if (err == CL_PLATFORM_NOT_FOUND || (err == CL_SUCCESS && np == 0)) {
        copy_msg(msg, msg_size, "opencl: no OpenCL platform found (the ICD loader lists no vendor "
                                "driver; install one, e.g. pocl-opencl-icd, or set OCL_ICD_VENDORS)");
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    if (err != CL_SUCCESS) {
        char m[160];
        snprintf(m, sizeof m, "opencl: clGetPlatformIDs failed: %s (%d)", fasa__cl_error_name(err), (int)err);
        copy_msg(msg, msg_size, m);
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    if (np > MAX_PLATFORMS) np = MAX_PLATFORMS;
    for (cl_uint p = 0; p < np; p++) {
        cl_device_id devs[MAX_DEVICES];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devs, &nd) != CL_SUCCESS) continue;
        if (nd > MAX_DEVICES) nd = MAX_DEVICES;
        for (cl_uint d = 0; d < nd && *n < MAX_DEVICES; d++) out[(*n)++] = (dev_ref){plats[p], devs[d]};
    }
    if (*n == 0) {
        copy_msg(msg, msg_size, "opencl: the OpenCL platforms expose no device");
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    return FASA_OK;
}

static void str_info_dev(cl_device_id d, cl_device_info what, char *out, size_t size)
{
    out[0] = '\0';
    if (clGetDeviceInfo(d, what, size, out, NULL) != CL_SUCCESS) out[0] = '\0';
    out[size - 1] = '\0';
}

static void str_info_plat(cl_platform_id p, cl_platform_info what, char *out, size_t size)
{
    out[0] = '\0';
    if (clGetPlatformInfo(p, what, size, out, NULL) != CL_SUCCESS) out[0] = '\0';
    out[size - 1] = '\0';
}

static uint64_t u64_info(cl_device_id d, cl_device_info what)
{
    cl_ulong v = 0;
    return clGetDeviceInfo(d, what, sizeof v, &v, NULL) == CL_SUCCESS ? v : 0;
}

static uint32_t u32_info(cl_device_id d, cl_device_info what)
{
    cl_uint v = 0;
    return clGetDeviceInfo(d, what, sizeof v, &v, NULL) == CL_SUCCESS ? v : 0;
}

static void fill_info(const dev_ref *r, fasa_device_info *out)
{
    memset(out, 0, sizeof *out);
    cl_device_type type = 0;
    clGetDeviceInfo(r->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    cl_bool uma = CL_FALSE;
    clGetDeviceInfo(r->device, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof uma, &uma, NULL);
    if (type & CL_DEVICE_TYPE_GPU) out->type = uma ? FASA_DEVICE_INTEGRATED_GPU : FASA_DEVICE_DISCRETE_GPU;
    else if (type & CL_DEVICE_TYPE_CPU) out->type = FASA_DEVICE_CPU;
    else out->type = FASA_DEVICE_OTHER;
    str_info_dev(r->device, CL_DEVICE_NAME, out->name, sizeof out->name);
    char plat[96], drv[64], ver[64];
    str_info_plat(r->platform, CL_PLATFORM_NAME, plat, sizeof plat);
    str_info_dev(r->device, CL_DRIVER_VERSION, drv, sizeof drv);
    str_info_dev(r->device, CL_DEVICE_VERSION, ver, sizeof ver);
    snprintf(out->driver, sizeof out->driver, "%.60s %.30s (%.30s)", plat, drv, ver);
    out->vendor_id = u32_info(r->device, CL_DEVICE_VENDOR_ID);
    out->compute_units = u32_info(r->device, CL_DEVICE_MAX_COMPUTE_UNITS);
    out->max_shared_memory = u64_info(r->device, CL_DEVICE_LOCAL_MEM_SIZE);
    out->max_buffer_size = u64_info(r->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE);
    out->subgroup_size = 0; /* the kernels use no subgroups */
    out->unified_memory = uma == CL_TRUE;
    out->heap_count = 1;
    out->heaps[0].size = u64_info(r->device, CL_DEVICE_GLOBAL_MEM_SIZE);
    out->heaps[0].device_local = true;
    out->heaps[0].host_visible = uma == CL_TRUE;
}

static fasa_status cl_list_devices(fasa_device_info *devices, uint32_t *count, char *msg,
                                   size_t msg_size)
{
    dev_ref refs[MAX_DEVICES];
    uint32_t n = 0, capacity = *count;
    fasa_status st = fasa__cl_load(msg, msg_size);
    if (st == FASA_OK) st = enumerate(refs, &n, msg, msg_size);
    if (st != FASA_OK) {
        *count = 0;
        return st;
    }
    for (uint32_t i = 0; i < n && i < capacity; i++) fill_info(&refs[i], &devices[i]);
    *count = n;
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

static uint32_t pow2_floor(uint64_t v)
{
    uint32_t p = 1;
    while ((uint64_t)p * 2 <= v && p < (1u << 30)) p *= 2;
    return p;
}

/* Work-group sizes and tiles (docs/OPENCL.md).  GPUs get wide groups and
 * local-memory tiles; CPU runtimes (PoCL) run a work-group as a loop over
 * its work-items, so they get groups of one work-item where a kernel
 * counts into local memory (no atomics then) and narrow ones elsewhere. */
void fasa__cl_tuning_preset(cl_tuning *out, bool cpu_style, uint64_t local_mem, size_t max_wg,
                            uint32_t compute_units)
{
    uint32_t cu = compute_units ? compute_units : 1;
    cl_tuning t = {
        .wg_append = 64, .wg_tip = 128, .tip_tpt = 4, .tip_hb = 8, .wg_topk = 256,
        .topk_tile = 4096, .wg_attn = 128, .att_ql = 4096, .att_hb = 8, .wg_red = 128,
        .red_pmax = 256, .half_load = FASA_CL_HALF_LOAD_DEFAULT, .target_groups = 4 * cu,
        .fuse_hist = 0, .wg_fetch = 256};
    if (cpu_style) {
        t.wg_append = 16;
        t.wg_tip = 1;
        t.tip_tpt = 256;
        t.wg_topk = 1;
        t.wg_attn = 64;
        t.wg_red = 32;
        t.target_groups = 8 * cu;
        t.dyn_loops = 1;
        t.fuse_hist = 1; /* one work-item per group: no atomics, one pass less */
        t.wg_fetch = 16; /* a few items: the scans run on PoCL too, at little cost */
    }
    if (local_mem < 40 * 1024) { /* 32 KiB devices */
        t.tip_hb = 4;
        t.topk_tile = 2048;
        t.att_ql = 2048;
    }
    uint32_t wg_max = pow2_floor(max_wg ? max_wg : 1);
    uint32_t *wgs[] = {&t.wg_append, &t.wg_tip, &t.wg_topk, &t.wg_attn, &t.wg_red, &t.wg_fetch};
    for (size_t i = 0; i < sizeof wgs / sizeof wgs[0]; i++)
        if (*wgs[i] > wg_max) *wgs[i] = wg_max;
    if (t.att_ql < t.wg_attn) t.att_ql = t.wg_attn;
    if (t.topk_tile < t.wg_topk) t.topk_tile = t.wg_topk;
    *out = t;
}

static void cl_context_destroy(fasa_context *ctx)
{
    cl_ctx *cc = ctx->impl;
    if (!cc) return;
    fasa__cl_release_programs(cc);
    if (cc->queue) clReleaseCommandQueue(cc->queue);
    if (cc->context) clReleaseContext(cc->context);
    fasa__free(ctx, cc);
    ctx->impl = NULL;
}

static fasa_status check_embed(fasa_context *ctx, const fasa_cl_embed *e)
{
    if (fasa__check_chain(ctx, e->next, "desc.embed->next", "fasa_cl_embed") != FASA_OK)
        return FASA_ERROR_INVALID_ARGUMENT;
    if (!e->context) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: context is NULL");
    if (!e->device) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: device is NULL");
    if (!e->queue) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: queue is NULL");
    cl_uint nd = 0;
    cl_int err = clGetContextInfo(e->context, CL_CONTEXT_NUM_DEVICES, sizeof nd, &nd, NULL);
    if (err != CL_SUCCESS)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.embed: context is not a valid cl_context (clGetContextInfo: %s)",
                           fasa__cl_error_name(err));
    cl_device_id devs[MAX_DEVICES];
    if (nd > MAX_DEVICES) nd = MAX_DEVICES;
    err = clGetContextInfo(e->context, CL_CONTEXT_DEVICES, nd * sizeof(cl_device_id), devs, NULL);
    bool found = false;
    for (cl_uint i = 0; err == CL_SUCCESS && i < nd; i++) found |= devs[i] == e->device;
    if (!found)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: device is not a device of context");
    cl_context qctx = NULL;
    cl_device_id qdev = NULL;
    cl_command_queue_properties props = 0;
    err = clGetCommandQueueInfo(e->queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
    if (err == CL_SUCCESS) err = clGetCommandQueueInfo(e->queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(e->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (err != CL_SUCCESS)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.embed: queue is not a valid cl_command_queue (clGetCommandQueueInfo: %s)",
                           fasa__cl_error_name(err));
    if (qctx != e->context)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: queue belongs to another cl_context");
    if (qdev != e->device)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: queue belongs to another device");
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.embed: queue is out-of-order (CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE); "
                           "libfasa needs an in-order queue");
    return FASA_OK;
}

/* Opens the context and queue (standalone) or adopts the host's (embedded). */
static fasa_status open_device(fasa_context *ctx, cl_ctx *cc, uint32_t index, const fasa_cl_embed *e)
{
    dev_ref refs[MAX_DEVICES];
    uint32_t n = 0;
    char msg[256] = "";
    fasa_status st = enumerate(refs, &n, msg, sizeof msg);
    if (e) {
        cc->device = e->device;
        cc->context = e->context;
        cc->queue = e->queue;
        clRetainContext(cc->context);
        clRetainCommandQueue(cc->queue);
        cc->embedded = true;
        cl_int err = clGetDeviceInfo(e->device, CL_DEVICE_PLATFORM, sizeof cc->platform, &cc->platform, NULL);
        if (err != CL_SUCCESS) return fasa__cl_fail(ctx, err, "clGetDeviceInfo(CL_DEVICE_PLATFORM)");
        dev_ref self = {cc->platform, cc->device};
        fill_info(&self, &ctx->device);
        ctx->device.backend = FASA_BACKEND_OPENCL;
        for (uint32_t i = 0; st == FASA_OK && i < n; i++)
            if (refs[i].device == e->device) ctx->device.index = i;
        cl_command_queue_properties props = 0;
        clGetCommandQueueInfo(cc->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
        cc->queue_profiling = (props & CL_QUEUE_PROFILING_ENABLE) != 0;
        return FASA_OK;
    }
    if (st != FASA_OK) return fasa__error(ctx, st, "%s", msg);
    if (index >= n)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.device_index: %u out of range (%u OpenCL devices)",
                           index, n);
    cc->platform = refs[index].platform;
    cc->device = refs[index].device;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)cc->platform, 0};
    cl_int err = CL_SUCCESS;
    cc->context = clCreateContext(props, 1, &cc->device, NULL, NULL, &err);
    if (!cc->context) return fasa__cl_fail(ctx, err, "clCreateContext");
    cc->queue = clCreateCommandQueue(cc->context, cc->device, CL_QUEUE_PROFILING_ENABLE, &err);
    if (!cc->queue) return fasa__cl_fail(ctx, err, "clCreateCommandQueue");
    cc->queue_profiling = true;
    return FASA_OK;
}

/* Reads the device facts the backend needs and checks the minimum. */
static fasa_status probe_device(fasa_context *ctx, cl_ctx *cc)
{
    str_info_plat(cc->platform, CL_PLATFORM_NAME, cc->platform_name, sizeof cc->platform_name);
    str_info_plat(cc->platform, CL_PLATFORM_VERSION, cc->platform_version, sizeof cc->platform_version);
    str_info_dev(cc->device, CL_DEVICE_NAME, cc->device_name, sizeof cc->device_name);
    str_info_dev(cc->device, CL_DEVICE_VERSION, cc->device_version, sizeof cc->device_version);
    str_info_dev(cc->device, CL_DRIVER_VERSION, cc->driver_version, sizeof cc->driver_version);
    cl_device_type type = 0;
    clGetDeviceInfo(cc->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    cc->is_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    cl_bool uma = CL_FALSE; /* deprecated in OpenCL 2.0 but still answered; CPUs share memory anyway */
    clGetDeviceInfo(cc->device, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof uma, &uma, NULL);
    cc->unified = uma || cc->is_cpu;
    cc->nvidia = strstr(cc->platform_name, "NVIDIA") != NULL;
    cc->max_alloc = u64_info(cc->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE);
    cc->global_mem = u64_info(cc->device, CL_DEVICE_GLOBAL_MEM_SIZE);
    cc->host_mem = physical_memory();
    cc->local_mem = u64_info(cc->device, CL_DEVICE_LOCAL_MEM_SIZE);
    cc->compute_units = u32_info(cc->device, CL_DEVICE_MAX_COMPUTE_UNITS);
    size_t wg = 0;
    clGetDeviceInfo(cc->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    cc->max_wg = wg;
    char cver[64];
    str_info_dev(cc->device, CL_DEVICE_OPENCL_C_VERSION, cver, sizeof cver);
    int major = 0, minor = 0;
    if (sscanf(cver, "OpenCL C %d.%d", &major, &minor) != 2 || major * 10 + minor < 12)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "opencl: device '%s' offers '%s'; libfasa needs OpenCL C 1.2", cc->device_name, cver);
    cl_bool compiler = CL_FALSE;
    clGetDeviceInfo(cc->device, CL_DEVICE_COMPILER_AVAILABLE, sizeof compiler, &compiler, NULL);
    if (!compiler)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED, "opencl: device '%s' has no OpenCL C compiler",
                           cc->device_name);
    if (cc->max_wg < 16 || cc->local_mem < 16 * 1024)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "opencl: device '%s' allows %zu work-items per group and %llu bytes of local "
                           "memory; libfasa needs 16 and 16 KiB", cc->device_name, cc->max_wg,
                           (unsigned long long)cc->local_mem);
    return FASA_OK;
}

/* What the device offers that a faster path could use one day (fp16
 * arithmetic, subgroups); the kernels use neither (docs/OPENCL.md). */
static void log_device(fasa_context *ctx, const cl_ctx *cc)
{
    size_t n = 0;
    char *ext = NULL;
    if (clGetDeviceInfo(cc->device, CL_DEVICE_EXTENSIONS, 0, NULL, &n) == CL_SUCCESS && n > 0) {
        ext = fasa__alloc(ctx, n + 1);
        if (ext && clGetDeviceInfo(cc->device, CL_DEVICE_EXTENSIONS, n, ext, NULL) != CL_SUCCESS) ext[0] = '\0';
    }
    const char *e = ext ? ext : "";
    fasa__log(ctx, FASA_LOG_INFO,
              "opencl: '%s' on '%s' (%s, driver %s): %u compute units, %llu KiB local memory, max allocation "
              "%llu MiB, %s queue%s; cl_khr_fp16 %s, cl_khr_subgroups %s, cl_intel_subgroups %s; %s preset",
              cc->device_name, cc->platform_name, cc->device_version, cc->driver_version, cc->compute_units,
              (unsigned long long)(cc->local_mem >> 10), (unsigned long long)(cc->max_alloc >> 20),
              cc->embedded ? "host" : "own", cc->queue_profiling ? " with profiling" : "",
              strstr(e, "cl_khr_fp16") ? "yes" : "no", strstr(e, "cl_khr_subgroups") ? "yes" : "no",
              strstr(e, "cl_intel_subgroups") ? "yes" : "no", cc->is_cpu ? "cpu" : "gpu");
    fasa__free(ctx, ext);
}

static fasa_status cl_context_init(fasa_context *ctx, uint32_t device_index, const void *embed)
{
    char why[FASA_ERROR_MAX];
    if (fasa__cl_load(why, sizeof why) != FASA_OK) return fasa__error(ctx, FASA_ERROR_BACKEND_UNAVAILABLE, "%s", why);
    cl_ctx *cc = fasa__alloc(ctx, sizeof *cc);
    if (!cc) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    ctx->impl = cc;
    const fasa_cl_embed *e = embed;
    fasa_status st = e ? check_embed(ctx, e) : FASA_OK;
    if (st == FASA_OK) st = open_device(ctx, cc, device_index, e);
    if (st == FASA_OK) st = probe_device(ctx, cc);
    if (st == FASA_OK) {
        fasa__cl_tuning_preset(&cc->tune, cc->is_cpu, cc->local_mem, cc->max_wg, cc->compute_units);
        log_device(ctx, cc);
        st = fasa__cl_build_programs(ctx, cc);
    }
    if (st != FASA_OK) cl_context_destroy(ctx);
    return st;
}

static fasa_status cl_finish(fasa_context *ctx)
{
    cl_ctx *cc = ctx->impl;
    cl_int err = clFinish(cc->queue);
    return err == CL_SUCCESS ? FASA_OK : wait_fail(ctx, err, "clFinish");
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

static fasa_status cl_buffer_create(fasa_context *ctx, fasa_buffer *buf)
{
    cl_ctx *cc = ctx->impl;
    cl_request req = {0};
    fasa__cl_request_add(&req, buf->size, buf->size, false);
    fasa_status st = fasa__cl_check_request(ctx, &req, "fasa_buffer_create");
    if (st != FASA_OK) return st;
    cl_buf *b = fasa__alloc(ctx, sizeof *b);
    if (!b) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    cl_int err = CL_SUCCESS;
    b->mem = fasa__cl_create_buffer(ctx, CL_MEM_READ_WRITE, buf->size, NULL, &err);
    if (!b->mem) {
        fasa__free(ctx, b);
        return fasa__cl_fail(ctx, err, "clCreateBuffer");
    }
    /* touch it, so a lazily allocating driver fails here and not later */
    cl_uchar zero = 0;
    err = clEnqueueFillBuffer(cc->queue, b->mem, &zero, 1, 0, buf->size, 0, NULL, NULL);
    if (err == CL_SUCCESS) err = clFinish(cc->queue);
    if (err != CL_SUCCESS) {
        clReleaseMemObject(b->mem);
        fasa__free(ctx, b);
        return fasa__cl_fail(ctx, err, "clEnqueueFillBuffer (new buffer)");
    }
    buf->impl = b;
    return FASA_OK;
}

static void cl_buffer_destroy(fasa_context *ctx, fasa_buffer *buf)
{
    cl_buf *b = buf->impl;
    if (!b) return;
    if (b->mem) clReleaseMemObject(b->mem); /* wrapped: releases the reference taken at wrap */
    fasa__free(ctx, b);
    buf->impl = NULL;
}

static fasa_status cl_buffer_write(fasa_context *ctx, fasa_buffer *buf, uint64_t offset,
                                   const void *src, uint64_t size)
{
    cl_ctx *cc = ctx->impl;
    cl_buf *b = buf->impl;
    cl_int err = clEnqueueWriteBuffer(cc->queue, b->mem, CL_TRUE, b->offset + offset, size, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? FASA_OK : fasa__cl_fail(ctx, err, "clEnqueueWriteBuffer");
}

static fasa_status cl_buffer_read(fasa_context *ctx, fasa_buffer *buf, uint64_t offset, void *dst,
                                  uint64_t size)
{
    cl_ctx *cc = ctx->impl;
    cl_buf *b = buf->impl;
    cl_int err = clEnqueueReadBuffer(cc->queue, b->mem, CL_TRUE, b->offset + offset, size, dst, 0, NULL, NULL);
    return err == CL_SUCCESS ? FASA_OK : fasa__cl_fail(ctx, err, "clEnqueueReadBuffer");
}

/* ------------------------------------------------------------------------ */
/* Command streams                                                           */
/* ------------------------------------------------------------------------ */

static fasa_status cl_exec_begin(fasa_context *ctx, fasa_exec **out)
{
    cl_ctx *cc = ctx->impl;
    fasa_exec *e = &cc->exec;
    e->ctx = ctx;
    e->queue = cc->queue;
    e->profile = (ctx->flags & FASA_CONTEXT_PROFILE) && cc->queue_profiling;
    e->n_events = 0;
    e->last = NULL;
    *out = e;
    return FASA_OK;
}

static void release_events(fasa_exec *e)
{
    for (uint32_t i = 0; i < e->n_events; i++) clReleaseEvent(e->events[i]);
    if (e->last) clReleaseEvent(e->last);
    e->n_events = 0;
    e->last = NULL;
}

static uint64_t event_time(cl_event ev, cl_profiling_info what, cl_int *err)
{
    cl_ulong t = 0;
    cl_int e = clGetEventProfilingInfo(ev, what, sizeof t, &t, NULL);
    if (e != CL_SUCCESS) *err = e;
    return t;
}

/* The step time runs from the start of the first kernel to the end of the
 * last one; the per-kernel sums are kept for the bench. */
static void record_times(fasa_context *ctx, cl_ctx *cc, fasa_exec *e)
{
    if (e->n_events == 0) return;
    cl_int err = CL_SUCCESS;
    uint64_t t0 = event_time(e->events[0], CL_PROFILING_COMMAND_START, &err);
    uint64_t t1 = event_time(e->last ? e->last : e->events[e->n_events - 1], CL_PROFILING_COMMAND_END, &err);
    memset(cc->stats.kernel_ns, 0, sizeof cc->stats.kernel_ns);
    memset(cc->stats.kernel_launches, 0, sizeof cc->stats.kernel_launches);
    for (uint32_t i = 0; i < e->n_events; i++) {
        uint64_t a = event_time(e->events[i], CL_PROFILING_COMMAND_START, &err);
        uint64_t b = event_time(e->events[i], CL_PROFILING_COMMAND_END, &err);
        cc->stats.kernel_ns[e->kinds[i]] += b > a ? b - a : 0;
        cc->stats.kernel_launches[e->kinds[i]]++;
    }
    if (err != CL_SUCCESS || t1 < t0) return;
    ctx->last_step_ns = t1 - t0;
    ctx->has_step_ns = true;
}

static fasa_status cl_exec_end(fasa_context *ctx, fasa_exec *e, bool wait)
{
    cl_ctx *cc = ctx->impl;
    fasa_status st = FASA_OK;
    cl_int err = CL_SUCCESS;
    if (wait) {
        err = clFinish(e->queue);
        if (err != CL_SUCCESS) st = wait_fail(ctx, err, "clFinish");
        else if (e->profile) record_times(ctx, cc, e);
    } else if (!cc->embedded) {
        err = clFlush(e->queue);
        if (err != CL_SUCCESS) st = fasa__cl_fail(ctx, err, "clFlush");
    }
    release_events(e);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Test hooks                                                                */
/* ------------------------------------------------------------------------ */

fasa_status fasa__cl_set_alloc_limit(fasa_context *ctx, uint64_t bytes)
{
    if (!ctx || ctx->backend != FASA_BACKEND_OPENCL) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    ((cl_ctx *)ctx->impl)->alloc_limit = bytes;
    fasa__unlock(ctx);
    return FASA_OK;
}

fasa_status fasa__cl_set_mem_limits(fasa_context *ctx, uint64_t global_mem, uint64_t host_mem)
{
    if (!ctx || ctx->backend != FASA_BACKEND_OPENCL) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    cl_ctx *cc = ctx->impl;
    cc->global_mem = global_mem ? global_mem : u64_info(cc->device, CL_DEVICE_GLOBAL_MEM_SIZE);
    cc->host_mem = host_mem ? host_mem : physical_memory();
    fasa__unlock(ctx);
    return FASA_OK;
}

fasa_status fasa__cl_set_offload_flags(fasa_context *ctx, uint32_t flags)
{
    if (!ctx || ctx->backend != FASA_BACKEND_OPENCL) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    ((cl_ctx *)ctx->impl)->offload_flags = flags;
    fasa__unlock(ctx);
    return FASA_OK;
}

fasa_status fasa__cl_retune(fasa_context *ctx, const cl_tuning *tune)
{
    if (!ctx || !tune || ctx->backend != FASA_BACKEND_OPENCL) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    cl_ctx *cc = ctx->impl;
    cl_tuning old = cc->tune;
    clFinish(cc->queue);
    fasa__cl_release_programs(cc);
    cc->tune = *tune;
    cc->tune.red_pmax = old.red_pmax; /* caches are laid out for it */
    fasa_status st = fasa__cl_build_programs(ctx, cc);
    if (st != FASA_OK) { /* keep the context usable */
        fasa__cl_release_programs(cc);
        cc->tune = old;
        fasa__cl_build_programs(ctx, cc);
    }
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa__cl_get_tuning(fasa_context *ctx, cl_tuning *out)
{
    if (!ctx || !out || ctx->backend != FASA_BACKEND_OPENCL) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    *out = ((cl_ctx *)ctx->impl)->tune;
    fasa__unlock(ctx);
    return FASA_OK;
}

fasa_status fasa__cl_get_stats(fasa_context *ctx, fasa_cl_stats *out)
{
    if (!ctx || !out || ctx->backend != FASA_BACKEND_OPENCL) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    *out = ((cl_ctx *)ctx->impl)->stats;
    fasa__unlock(ctx);
    return FASA_OK;
}

const fasa_backend_ops fasa__opencl_ops = {
    .id = FASA_BACKEND_OPENCL,
    .name = "opencl",
    .list_devices = cl_list_devices,
    .context_init = cl_context_init,
    .context_destroy = cl_context_destroy,
    .finish = cl_finish,
    .buffer_create = cl_buffer_create,
    .buffer_destroy = cl_buffer_destroy,
    .buffer_write = cl_buffer_write,
    .buffer_read = cl_buffer_read,
    .cache_create = fasa__cl_cache_create,
    .cache_destroy = fasa__cl_cache_destroy,
    .cache_truncate = fasa__cl_cache_truncate,
    .transfer_stats_sync = fasa__cl_transfer_stats_sync,
    .cache_read = fasa__cl_cache_read,
    .exec_begin = cl_exec_begin,
    .exec_end = cl_exec_end,
    .append = fasa__cl_append,
    .sync = fasa__cl_sync,
    .upload_table = fasa__cl_upload_table,
    .record_batch = fasa__cl_record_batch,
    .tip = fasa__cl_tip,
    .topk = fasa__cl_topk,
    .fac = fasa__cl_fac,
    .dense = fasa__cl_dense,
    .read_selection = fasa__cl_read_selection,
};
