/* CUDA backend: errors, devices, context and stream, buffers, command
 * streams (an exec is the context's stream) and the backend table.  Cache
 * storage is in cuda_cache.c, kernel dispatch in cuda_kernels.c, the
 * embedding API in cuda_embed.c; the kernels are in cuda_ref/. */
#include "cuda_internal.h"
#include "dynlib.h"

#include <stdio.h>
#include <string.h>

#define MIN_MAJOR 8 /* the -gencode list starts at sm_80 (cuda_ref/meson.build) */

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

fasa_status fasa__cuda_status_of(cudaError_t err)
{
    switch (err) {
    case cudaSuccess: return FASA_OK;
    case cudaErrorMemoryAllocation: return FASA_ERROR_OUT_OF_DEVICE_MEMORY;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorStubLibrary:
    case cudaErrorDevicesUnavailable:
    case cudaErrorSystemNotReady:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice: return FASA_ERROR_BACKEND_UNAVAILABLE;
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion: return FASA_ERROR_UNSUPPORTED;
    /* sticky errors: the CUDA context is unusable from now on */
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case cudaErrorAssert:
    case cudaErrorContextIsDestroyed:
    case cudaErrorExternalDevice: return FASA_ERROR_DEVICE_LOST;
    default: return FASA_ERROR_BACKEND;
    }
}

fasa_status fasa__cuda_fail(fasa_context *ctx, cudaError_t err, const char *what)
{
    /* reset the runtime's last error so a later, unrelated check does not
     * see this one again (sticky errors stay, by CUDA's design) */
    (void)cudaGetLastError();
    fasa_status st = fasa__cuda_status_of(err);
    cuda_ctx *cc = ctx ? ctx->impl : NULL;
    if (cc && st == FASA_ERROR_DEVICE_LOST) cc->lost = true; /* every later CUDA call fails too */
    return fasa__error(ctx, st, "cuda: %s failed: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

cudaError_t fasa__cuda_malloc(fasa_context *ctx, void **p, size_t size)
{
    if (fasa__fault(ctx, FASA_FAULT_DEVICE_ALLOC)) return cudaErrorMemoryAllocation;
    return cudaMalloc(p, size);
}

cudaError_t fasa__cuda_host_alloc(fasa_context *ctx, void **p, size_t size, unsigned int flags)
{
    if (fasa__fault(ctx, FASA_FAULT_DEVICE_ALLOC)) return cudaErrorMemoryAllocation;
    return cudaHostAlloc(p, size, flags);
}

cudaError_t fasa__cuda_host_map(fasa_context *ctx, void **dev, void *host)
{
    if (fasa__fault(ctx, FASA_FAULT_MAP)) return cudaErrorMemoryAllocation;
    return cudaHostGetDevicePointer(dev, host, 0);
}

/* ------------------------------------------------------------------------ */
/* Current device                                                            */
/* ------------------------------------------------------------------------ */

fasa_status fasa__cuda_enter(fasa_context *ctx, int *prev)
{
    *prev = -1;
    if (((cuda_ctx *)ctx->impl)->lost)
        return fasa__error(ctx, FASA_ERROR_DEVICE_LOST,
                           "cuda: the context is lost (an earlier call hit a sticky CUDA error); destroy it");
    return fasa__cuda_enter_any(ctx, prev);
}

fasa_status fasa__cuda_enter_any(fasa_context *ctx, int *prev)
{
    cuda_ctx *cc = ctx->impl;
    int cur = -1;
    *prev = -1;
    if (cudaGetDevice(&cur) != cudaSuccess) {
        (void)cudaGetLastError();
        cur = -1;
    }
    if (cur == cc->device) return FASA_OK;
    cudaError_t err = cudaSetDevice(cc->device);
    if (err != cudaSuccess) return fasa__cuda_fail(ctx, err, "cudaSetDevice");
    *prev = cur;
    return FASA_OK;
}

void fasa__cuda_leave(int prev)
{
    if (prev >= 0 && cudaSetDevice(prev) != cudaSuccess) (void)cudaGetLastError();
}

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */
/* ------------------------------------------------------------------------ */

static void no_device_msg(cudaError_t err, char *msg, size_t size)
{
    if (!msg || !size) return;
    /* The static runtime opens the driver (libcuda.so.1) at run time and
     * calls its absence an insufficient driver: say which library is missing. */
    static const char *const driver[] = {"libcuda.so.1", NULL};
    char why[512];
    void *lib = err == cudaErrorInsufficientDriver ? fasa__dynlib_open(driver, why, sizeof why) : NULL;
    fasa__dynlib_close(lib);
    if (err == cudaErrorInsufficientDriver && !lib)
        snprintf(msg, size, "cuda: compiled, no device (no NVIDIA driver: %s)", why);
    else if (err != cudaSuccess) snprintf(msg, size, "cuda: compiled, no device (%s)", cudaGetErrorString(err));
    else snprintf(msg, size, "cuda: compiled, no device (cudaGetDeviceCount found none)");
}

/* Device count, or BACKEND_UNAVAILABLE with the runtime's reason (no
 * driver, a stub libcuda, no GPU). */
static fasa_status device_count(int *n, char *msg, size_t msg_size)
{
    *n = 0;
    cudaError_t err = cudaGetDeviceCount(n);
    if (err == cudaSuccess && *n > 0) return FASA_OK;
    (void)cudaGetLastError();
    no_device_msg(err, msg, msg_size);
    *n = 0;
    return FASA_ERROR_BACKEND_UNAVAILABLE;
}

static cudaError_t fill_info(int dev, fasa_device_info *out, int *cc_major, int *cc_minor)
{
    memset(out, 0, sizeof *out);
    struct cudaDeviceProp p;
    cudaError_t err = cudaGetDeviceProperties(&p, dev);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(out->name, sizeof out->name, "CUDA device %d (properties unavailable)", dev);
        return err;
    }
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    snprintf(out->name, sizeof out->name, "%s", p.name);
    snprintf(out->driver, sizeof out->driver, "CUDA driver %d.%d, runtime %d.%d, sm_%d%d, PCI %04x:%02x:%02x",
             drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10, p.major, p.minor,
             (unsigned)p.pciDomainID, (unsigned)p.pciBusID, (unsigned)p.pciDeviceID);
    out->type = p.integrated ? FASA_DEVICE_INTEGRATED_GPU : FASA_DEVICE_DISCRETE_GPU;
    out->index = (uint32_t)dev;
    out->vendor_id = 0x10de; /* NVIDIA */
    out->subgroup_size = (uint32_t)p.warpSize;
    out->compute_units = (uint32_t)p.multiProcessorCount;
    out->max_shared_memory = p.sharedMemPerBlock; /* without opt-in: what the kernels use */
    out->max_buffer_size = p.totalGlobalMem;
    out->unified_memory = p.integrated != 0;
    out->heap_count = 1;
    out->heaps[0].size = p.totalGlobalMem;
    out->heaps[0].device_local = true;
    out->heaps[0].host_visible = p.integrated != 0;
    if (cc_major) *cc_major = p.major;
    if (cc_minor) *cc_minor = p.minor;
    return cudaSuccess;
}

static fasa_status cuda_list_devices(fasa_device_info *devices, uint32_t *count, char *msg, size_t msg_size)
{
    uint32_t capacity = *count;
    int n = 0;
    fasa_status st = device_count(&n, msg, msg_size);
    *count = (uint32_t)n;
    if (st != FASA_OK) return st;
    for (uint32_t i = 0; i < (uint32_t)n && i < capacity; i++) fill_info((int)i, &devices[i], NULL, NULL);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

static void cuda_context_destroy(fasa_context *ctx)
{
    cuda_ctx *cc = ctx->impl;
    if (!cc) return;
    int prev = -1;
    if (fasa__cuda_enter_any(ctx, &prev) == FASA_OK) {
        if (!cc->embedded && cc->stream) {
            cudaStreamSynchronize(cc->stream);
            cudaStreamDestroy(cc->stream);
        }
        if (cc->events) { /* released once pending records complete */
            cudaEventDestroy(cc->ev_start);
            cudaEventDestroy(cc->ev_stop);
        }
        (void)cudaGetLastError();
        fasa__cuda_leave(prev);
    }
    fasa__free(ctx, cc);
    ctx->impl = NULL;
}

/* Special stream handles that name no stream object (cudaStreamLegacy,
 * cudaStreamPerThread) or the legacy default stream (NULL). */
static bool special_stream(const void *s) { return (uintptr_t)s <= 2; }

static fasa_status check_embed(fasa_context *ctx, const fasa_cuda_embed *e, int n_devices)
{
    if (e->device >= n_devices)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: device %d out of range (%d CUDA device%s)",
                           e->device, n_devices, n_devices == 1 ? "" : "s");
    return FASA_OK;
}

/* The host's stream must be a stream of the embed's device. */
static fasa_status check_stream(fasa_context *ctx, const fasa_cuda_embed *e)
{
    if (special_stream(e->stream)) return FASA_OK;
    int dev = -1;
    cudaError_t err = cudaStreamGetDevice((cudaStream_t)e->stream, &dev);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: stream is not a valid CUDA stream (%s)",
                           cudaGetErrorString(err));
    }
    if (dev != e->device)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.embed: stream belongs to device %d, but embed.device is %d", dev, e->device);
    return FASA_OK;
}

/* Device facts, the minimum compute capability and whether the kernel
 * images load. */
static fasa_status probe_device(fasa_context *ctx, cuda_ctx *cc)
{
    int major = 0, minor = 0;
    cudaError_t err = fill_info(cc->device, &ctx->device, &major, &minor);
    if (err != cudaSuccess) return fasa__cuda_fail(ctx, err, "cudaGetDeviceProperties");
    ctx->device.backend = FASA_BACKEND_CUDA;
    cc->sm_count = ctx->device.compute_units ? ctx->device.compute_units : 1;
    if (major < MIN_MAJOR)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "cuda: device %d '%s' is sm_%d%d; this build carries code for sm_80 and newer",
                           cc->device, ctx->device.name, major, minor);
    /* test hook: a BUILD fault fails the kernel image load */
    err = fasa__fault(ctx, FASA_FAULT_BUILD) ? cudaErrorInvalidKernelImage : fasa_cu_probe();
    if (err != cudaSuccess) {
        char what[320];
        snprintf(what, sizeof what, "loading the kernels on device %d '%s' (sm_%d%d)", cc->device,
                 ctx->device.name, major, minor);
        return fasa__cuda_fail(ctx, err, what);
    }
    return FASA_OK;
}

static fasa_status open_stream(fasa_context *ctx, cuda_ctx *cc, const fasa_cuda_embed *e)
{
    if (e) {
        cc->stream = (cudaStream_t)e->stream;
        return FASA_OK;
    }
    cudaError_t err = cudaStreamCreateWithFlags(&cc->stream, cudaStreamNonBlocking);
    return err == cudaSuccess ? FASA_OK : fasa__cuda_fail(ctx, err, "cudaStreamCreateWithFlags");
}

static fasa_status open_events(fasa_context *ctx, cuda_ctx *cc)
{
    if (!(ctx->flags & FASA_CONTEXT_PROFILE)) return FASA_OK;
    cudaError_t err = cudaEventCreate(&cc->ev_start);
    if (err != cudaSuccess) return fasa__cuda_fail(ctx, err, "cudaEventCreate");
    err = cudaEventCreate(&cc->ev_stop);
    if (err != cudaSuccess) {
        cudaEventDestroy(cc->ev_start);
        return fasa__cuda_fail(ctx, err, "cudaEventCreate");
    }
    cc->events = true;
    return FASA_OK;
}

static fasa_status cuda_context_init(fasa_context *ctx, uint32_t device_index, const void *embed)
{
    const fasa_cuda_embed *e = embed;
    char msg[FASA_ERROR_MAX];
    int n = 0;
    if (e && e->device < 0) /* checked first: it needs no device */
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: device %d is negative", e->device);
    if (e && fasa__check_chain(ctx, e->next, "desc.embed->next", "fasa_cuda_embed") != FASA_OK)
        return FASA_ERROR_INVALID_ARGUMENT;
    if (device_count(&n, msg, sizeof msg) != FASA_OK)
        return fasa__error(ctx, FASA_ERROR_BACKEND_UNAVAILABLE, "%s", msg);
    fasa_status st = e ? check_embed(ctx, e, n) : FASA_OK;
    if (st != FASA_OK) return st;
    int dev = e ? e->device : (int)device_index;
    if (dev >= n)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.device_index: %d out of range (%d CUDA devices)",
                           dev, n);
    cuda_ctx *cc = fasa__alloc(ctx, sizeof *cc);
    if (!cc) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cuda: out of host memory");
    ctx->impl = cc;
    cc->device = dev;
    cc->embedded = e != NULL;
    if (ctx->flags & FASA_CONTEXT_ENABLE_VALIDATION)
        fasa__log(ctx, FASA_LOG_DEBUG, "cuda: FASA_CONTEXT_ENABLE_VALIDATION has no effect (use compute-sanitizer)");
    int prev = -1;
    st = fasa__cuda_enter(ctx, &prev);
    if (st == FASA_OK) {
        st = probe_device(ctx, cc);
        if (st == FASA_OK && e) st = check_stream(ctx, e);
        if (st == FASA_OK) st = open_stream(ctx, cc, e);
        if (st == FASA_OK) st = open_events(ctx, cc);
        fasa__cuda_leave(prev);
    }
    if (st != FASA_OK) cuda_context_destroy(ctx);
    return st;
}

static fasa_status cuda_finish(fasa_context *ctx)
{
    cuda_ctx *cc = ctx->impl;
    int prev;
    fasa_status st = fasa__cuda_enter(ctx, &prev);
    if (st != FASA_OK) return st;
    cudaError_t err = cudaStreamSynchronize(cc->stream);
    fasa__cuda_leave(prev);
    return err == cudaSuccess ? FASA_OK : fasa__cuda_fail(ctx, err, "cudaStreamSynchronize");
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

static fasa_status cuda_buffer_create(fasa_context *ctx, fasa_buffer *buf)
{
    cuda_ctx *cc = ctx->impl;
    int prev;
    fasa_status st = fasa__cuda_enter(ctx, &prev);
    if (st != FASA_OK) return st;
    void *p = NULL;
    cudaError_t err = fasa__cuda_malloc(ctx, &p, buf->size);
    if (err != cudaSuccess) {
        char what[96];
        snprintf(what, sizeof what, "cudaMalloc(%llu bytes)", (unsigned long long)buf->size);
        st = fasa__cuda_fail(ctx, err, what);
    } else {
        /* zeroed, as on the other backends: contents are deterministic */
        err = cudaMemsetAsync(p, 0, buf->size, cc->stream);
        if (err == cudaSuccess) err = cudaStreamSynchronize(cc->stream);
        if (err != cudaSuccess) {
            st = fasa__cuda_fail(ctx, err, "cudaMemsetAsync (new buffer)");
            cudaFree(p);
        } else {
            buf->impl = p;
        }
    }
    fasa__cuda_leave(prev);
    return st;
}

static void cuda_buffer_destroy(fasa_context *ctx, fasa_buffer *buf)
{
    cuda_ctx *cc = ctx->impl;
    if (buf->impl && !buf->wrapped) {
        int prev;
        if (fasa__cuda_enter_any(ctx, &prev) == FASA_OK) {
            cudaStreamSynchronize(cc->stream); /* no enqueued kernel may still use it */
            cudaFree(buf->impl);
            (void)cudaGetLastError();
            fasa__cuda_leave(prev);
        }
    }
    buf->impl = NULL;
}

/* Blocking copy between host memory and a buffer, ordered on the stream. */
static fasa_status copy_sync(fasa_context *ctx, void *dst, const void *src, uint64_t size,
                             enum cudaMemcpyKind kind, const char *what)
{
    cuda_ctx *cc = ctx->impl;
    int prev;
    fasa_status st = fasa__cuda_enter(ctx, &prev);
    if (st != FASA_OK) return st;
    cudaError_t err = cudaMemcpyAsync(dst, src, size, kind, cc->stream);
    if (err == cudaSuccess) err = cudaStreamSynchronize(cc->stream);
    if (err != cudaSuccess) st = fasa__cuda_fail(ctx, err, what);
    fasa__cuda_leave(prev);
    return st;
}

static fasa_status cuda_buffer_write(fasa_context *ctx, fasa_buffer *buf, uint64_t offset, const void *src,
                                     uint64_t size)
{
    return copy_sync(ctx, (char *)buf->impl + offset, src, size, cudaMemcpyHostToDevice,
                     "cudaMemcpyAsync (buffer write)");
}

static fasa_status cuda_buffer_read(fasa_context *ctx, fasa_buffer *buf, uint64_t offset, void *dst,
                                    uint64_t size)
{
    return copy_sync(ctx, dst, (const char *)buf->impl + offset, size, cudaMemcpyDeviceToHost,
                     "cudaMemcpyAsync (buffer read)");
}

/* ------------------------------------------------------------------------ */
/* Command streams                                                           */
/* ------------------------------------------------------------------------ */

static fasa_status cuda_exec_begin(fasa_context *ctx, fasa_exec **out)
{
    cuda_ctx *cc = ctx->impl;
    fasa_exec *e = &cc->exec;
    e->ctx = ctx;
    e->stream = cc->stream;
    e->profile = cc->events;
    fasa_status st = fasa__cuda_enter(ctx, &e->prev_device);
    if (st != FASA_OK) return st;
    if (e->profile) {
        cudaError_t err = cudaEventRecord(cc->ev_start, cc->stream);
        if (err != cudaSuccess) {
            fasa__cuda_leave(e->prev_device);
            return fasa__cuda_fail(ctx, err, "cudaEventRecord");
        }
    }
    *out = e;
    return FASA_OK;
}

/* With wait: a standalone context synchronises its own stream (never the
 * device); an embedded context leaves the host's stream running and waits
 * only for its own end event when profiling. */
static fasa_status cuda_exec_end(fasa_context *ctx, fasa_exec *e, bool wait)
{
    cuda_ctx *cc = ctx->impl;
    cudaError_t err = cudaSuccess;
    const char *what = "cudaEventRecord";
    if (e->profile) err = cudaEventRecord(cc->ev_stop, e->stream);
    if (err == cudaSuccess && wait && !cc->embedded) {
        what = "cudaStreamSynchronize (end of step)";
        err = cudaStreamSynchronize(e->stream);
    } else if (err == cudaSuccess && wait && e->profile) {
        what = "cudaEventSynchronize (end of step)";
        err = cudaEventSynchronize(cc->ev_stop);
    }
    if (err == cudaSuccess && wait && e->profile) {
        float ms = 0.0f;
        what = "cudaEventElapsedTime";
        err = cudaEventElapsedTime(&ms, cc->ev_start, cc->ev_stop);
        if (err == cudaSuccess) {
            ctx->last_step_ns = (uint64_t)((double)ms * 1e6 + 0.5);
            ctx->has_step_ns = true;
        }
    }
    fasa_status st = err == cudaSuccess ? FASA_OK : fasa__cuda_fail(ctx, err, what);
    fasa__cuda_leave(e->prev_device);
    e->prev_device = -1;
    return st;
}

const fasa_backend_ops fasa__cuda_ops = {
    .id = FASA_BACKEND_CUDA,
    .name = "cuda",
    .list_devices = cuda_list_devices,
    .context_init = cuda_context_init,
    .context_destroy = cuda_context_destroy,
    .finish = cuda_finish,
    .buffer_create = cuda_buffer_create,
    .buffer_destroy = cuda_buffer_destroy,
    .buffer_write = cuda_buffer_write,
    .buffer_read = cuda_buffer_read,
    .cache_create = fasa__cuda_cache_create,
    .cache_destroy = fasa__cuda_cache_destroy,
    .cache_truncate = fasa__cuda_cache_truncate,
    .transfer_stats_sync = fasa__cuda_transfer_stats_sync,
    .cache_read = fasa__cuda_cache_read,
    .exec_begin = cuda_exec_begin,
    .exec_end = cuda_exec_end,
    .append = fasa__cuda_append,
    .sync = fasa__cuda_sync,
    .upload_table = fasa__cuda_upload_table,
    .tip = fasa__cuda_tip,
    .topk = fasa__cuda_topk,
    .fac = fasa__cuda_fac,
    .dense = fasa__cuda_dense,
    .read_selection = fasa__cuda_read_selection,
};
