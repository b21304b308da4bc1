/* Context creation, device selection, errors, logging and host memory. */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Status and names                                                          */
/* ------------------------------------------------------------------------ */

const char *fasa_status_string(fasa_status status)
{
    switch (status) {
    case FASA_OK: return "FASA_OK: success";
    case FASA_ERROR_INVALID_ARGUMENT: return "FASA_ERROR_INVALID_ARGUMENT: invalid argument";
    case FASA_ERROR_NON_FINITE: return "FASA_ERROR_NON_FINITE: NaN or Inf in an input";
    case FASA_ERROR_CAPACITY: return "FASA_ERROR_CAPACITY: cache capacity exceeded";
    case FASA_ERROR_OUT_OF_HOST_MEMORY: return "FASA_ERROR_OUT_OF_HOST_MEMORY: out of host memory";
    case FASA_ERROR_OUT_OF_DEVICE_MEMORY: return "FASA_ERROR_OUT_OF_DEVICE_MEMORY: out of device memory";
    case FASA_ERROR_UNSUPPORTED: return "FASA_ERROR_UNSUPPORTED: not supported by this backend or device";
    case FASA_ERROR_BACKEND_UNAVAILABLE: return "FASA_ERROR_BACKEND_UNAVAILABLE: backend not compiled in or no device";
    case FASA_ERROR_DEVICE_LOST: return "FASA_ERROR_DEVICE_LOST: device lost";
    case FASA_ERROR_BACKEND: return "FASA_ERROR_BACKEND: driver or runtime error";
    case FASA_ERROR_IO: return "FASA_ERROR_IO: file could not be read or written";
    case FASA_ERROR_PARSE: return "FASA_ERROR_PARSE: malformed file content";
    case FASA_ERROR_MISMATCH: return "FASA_ERROR_MISMATCH: incompatible shapes";
    default: return "FASA_ERROR_UNKNOWN: unknown status";
    }
}

static const char *const backend_names[FASA_BACKEND_COUNT_] = {"auto", "cpu", "vulkan", "opencl",
                                                                "cuda"};

const char *fasa_backend_name(fasa_backend backend)
{
    if ((unsigned)backend >= FASA_BACKEND_COUNT_) return "unknown";
    return backend_names[backend];
}

fasa_status fasa_backend_from_name(const char *name, fasa_backend *out)
{
    if (!name || !out) return FASA_ERROR_INVALID_ARGUMENT;
    for (int b = 0; b < FASA_BACKEND_COUNT_; b++) {
        if (strcmp(name, backend_names[b]) == 0) {
            *out = (fasa_backend)b;
            return FASA_OK;
        }
    }
    return FASA_ERROR_INVALID_ARGUMENT;
}

fasa_status fasa__need_backend(fasa_context *ctx, fasa_backend backend, const char *fn)
{
    if (ctx->backend == backend) return FASA_OK;
    return fasa__error(ctx, FASA_ERROR_UNSUPPORTED, "%s: the context's backend is %s, not %s", fn,
                       fasa_backend_name(ctx->backend), fasa_backend_name(backend));
}

const fasa_backend_ops *fasa__backend_ops(fasa_backend backend)
{
    switch (backend) {
    case FASA_BACKEND_CPU: return &fasa__cpu_ops;
#ifdef FASA_HAVE_VULKAN
    case FASA_BACKEND_VULKAN: return &fasa__vulkan_ops;
#endif
#ifdef FASA_HAVE_OPENCL
    case FASA_BACKEND_OPENCL: return &fasa__opencl_ops;
#endif
#ifdef FASA_HAVE_CUDA
    case FASA_BACKEND_CUDA: return &fasa__cuda_ops;
#endif
    default: return NULL;
    }
}

bool fasa_backend_compiled(fasa_backend backend)
{
    return fasa__backend_ops(backend) != NULL;
}

/* ------------------------------------------------------------------------ */
/* Errors and logging                                                        */
/* ------------------------------------------------------------------------ */

static void deliver_log(const fasa_logger *logger, fasa_log_level level, const char *msg)
{
    if (logger->log && level >= logger->min_level) logger->log(logger->user, level, msg);
}

fasa_status fasa__error(fasa_context *ctx, fasa_status status, const char *fmt, ...)
{
    if (!ctx) return status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
    va_end(ap);
    deliver_log(&ctx->logger, FASA_LOG_ERROR, ctx->last_error);
    return status;
}

void fasa__log(fasa_context *ctx, fasa_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->logger.log || level < ctx->logger.min_level) return;
    char msg[FASA_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctx->logger.log(ctx->logger.user, level, msg);
}

void fasa__lock(fasa_context *ctx) { pthread_mutex_lock(&ctx->lock); }
void fasa__unlock(fasa_context *ctx) { pthread_mutex_unlock(&ctx->lock); }

const char *fasa_context_last_error(const fasa_context *ctx)
{
    return ctx ? ctx->last_error : "no context";
}

/* ------------------------------------------------------------------------ */
/* Host memory                                                               */
/* ------------------------------------------------------------------------ */

bool fasa__fault(fasa_context *ctx, fasa_fault kind)
{
    if (!ctx || (unsigned)kind >= FASA_FAULT_COUNT_) return false;
    ctx->fault_seen[kind]++;
    return ctx->fault_at[kind] != 0 && ctx->fault_seen[kind] == ctx->fault_at[kind];
}

fasa_status fasa_debug_fault(fasa_context *ctx, fasa_fault kind, uint32_t n)
{
    if (!ctx || (unsigned)kind >= FASA_FAULT_COUNT_) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    ctx->fault_at[kind] = n;
    ctx->fault_seen[kind] = 0;
    fasa__unlock(ctx);
    return FASA_OK;
}

uint32_t fasa_debug_fault_count(const fasa_context *ctx, fasa_fault kind)
{
    if (!ctx || (unsigned)kind >= FASA_FAULT_COUNT_) return 0;
    return ctx->fault_seen[kind];
}

void *fasa__alloc_aligned(fasa_context *ctx, size_t size, size_t align)
{
    if (size == 0) size = 1;
    if (fasa__fault(ctx, FASA_FAULT_HOST_ALLOC)) return NULL;
    if (ctx && ctx->alloc.alloc) return ctx->alloc.alloc(ctx->alloc.user, size, align);
    void *p = NULL;
    if (posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size) != 0) return NULL;
    return p;
}

void *fasa__alloc(fasa_context *ctx, size_t size)
{
    void *p = fasa__alloc_aligned(ctx, size, 64);
    if (p) memset(p, 0, size ? size : 1);
    return p;
}

void fasa__free(fasa_context *ctx, void *ptr)
{
    if (!ptr) return;
    if (ctx && ctx->alloc.free) ctx->alloc.free(ctx->alloc.user, ptr);
    else free(ptr);
}

char *fasa__strdup(fasa_context *ctx, const char *s)
{
    if (!s) s = "";
    size_t n = strlen(s) + 1;
    char *d = fasa__alloc_aligned(ctx, n, 8);
    if (d) memcpy(d, s, n);
    return d;
}

/* ------------------------------------------------------------------------ */
/* Devices and the AUTO rule                                                 */
/* ------------------------------------------------------------------------ */

static void copy_msg(char *dst, size_t dst_size, const char *src)
{
    if (dst && dst_size) snprintf(dst, dst_size, "%s", src);
}

fasa_status fasa_list_devices(fasa_backend backend, fasa_device_info *devices, uint32_t *count,
                              char *msg, size_t msg_size)
{
    if (!count) {
        copy_msg(msg, msg_size, "count is NULL");
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    if (*count > 0 && !devices) {
        copy_msg(msg, msg_size, "devices is NULL but *count > 0");
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    if (backend == FASA_BACKEND_AUTO || (unsigned)backend >= FASA_BACKEND_COUNT_) {
        copy_msg(msg, msg_size, "backend must be cpu, vulkan, opencl or cuda");
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    const fasa_backend_ops *ops = fasa__backend_ops(backend);
    if (!ops) {
        char m[128];
        snprintf(m, sizeof m, "backend '%s' is not compiled into this build",
                 fasa_backend_name(backend));
        copy_msg(msg, msg_size, m);
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    uint32_t capacity = *count;
    fasa_status st = ops->list_devices(devices, count, msg, msg_size);
    for (uint32_t i = 0; st == FASA_OK && i < *count && i < capacity; i++) {
        devices[i].backend = backend;
        devices[i].index = i;
    }
    return st;
}

/* Rank for AUTO: lower is better.  Software GPU drivers (lavapipe, PoCL)
 * report a CPU device type; the plain CPU backend beats them, so they rank
 * after it. */
static int device_rank(const fasa_device_info *dev)
{
    switch (dev->type) {
    case FASA_DEVICE_DISCRETE_GPU: return 0;
    case FASA_DEVICE_INTEGRATED_GPU: return 1;
    case FASA_DEVICE_VIRTUAL_GPU: return 2;
    case FASA_DEVICE_OTHER: return 3;
    default: return dev->backend == FASA_BACKEND_CPU ? 4 : 5;
    }
}

/* Among equal ranks prefer Vulkan, then CUDA, then OpenCL, then CPU. */
static int backend_preference(fasa_backend b)
{
    switch (b) {
    case FASA_BACKEND_VULKAN: return 0;
    case FASA_BACKEND_CUDA: return 1;
    case FASA_BACKEND_OPENCL: return 2;
    default: return 3;
    }
}

static bool pick_auto(uint32_t flags, fasa_device_info *best)
{
    bool found = false;
    const fasa_backend order[] = {FASA_BACKEND_VULKAN, FASA_BACKEND_CUDA, FASA_BACKEND_OPENCL,
                                  FASA_BACKEND_CPU};
    for (size_t b = 0; b < sizeof order / sizeof order[0]; b++) {
        fasa_device_info devs[16];
        uint32_t n = 16;
        if (!fasa_backend_compiled(order[b])) continue;
        if (fasa_list_devices(order[b], devs, &n, NULL, 0) != FASA_OK) continue;
        for (uint32_t i = 0; i < n && i < 16; i++) {
            bool software = devs[i].type == FASA_DEVICE_CPU && order[b] != FASA_BACKEND_CPU;
            if (software && (flags & FASA_CONTEXT_NO_SOFTWARE_DEVICES)) continue;
            int r = device_rank(&devs[i]), br = found ? device_rank(best) : 99;
            if (!found || r < br ||
                (r == br && backend_preference(order[b]) < backend_preference(best->backend))) {
                *best = devs[i];
                found = true;
            }
        }
    }
    return found;
}

/* ------------------------------------------------------------------------ */
/* Context lifetime                                                          */
/* ------------------------------------------------------------------------ */

static fasa_status create_fail(const fasa_context_desc *desc, fasa_status st, const char *msg)
{
    if (desc && desc->error_message && desc->error_message_size)
        snprintf(desc->error_message, desc->error_message_size, "%s", msg);
    if (desc && desc->logger.log && FASA_LOG_ERROR >= desc->logger.min_level)
        desc->logger.log(desc->logger.user, FASA_LOG_ERROR, msg);
    return st;
}

static fasa_status check_context_desc(const fasa_context_desc *desc, char *msg, size_t n)
{
    if (!fasa__chain_ok(desc->next, "desc.next", "fasa_context_desc", msg, n)) return FASA_ERROR_INVALID_ARGUMENT;
    if ((unsigned)desc->backend >= FASA_BACKEND_COUNT_) {
        snprintf(msg, n, "desc.backend: unknown backend %d", (int)desc->backend);
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    if (desc->device_index < -1) {
        snprintf(msg, n, "desc.device_index: %d is negative (use -1 or 0 for the default)",
                 desc->device_index);
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    if (!desc->allocator.alloc != !desc->allocator.free) {
        snprintf(msg, n, "desc.allocator: alloc and free must both be set or both be NULL");
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    if (desc->flags & ~(FASA_CONTEXT_ENABLE_VALIDATION | FASA_CONTEXT_NO_SOFTWARE_DEVICES |
                        FASA_CONTEXT_PROFILE)) {
        snprintf(msg, n, "desc.flags: unknown bits 0x%x", desc->flags);
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    if (desc->embed && desc->backend == FASA_BACKEND_AUTO) {
        snprintf(msg, n, "desc.embed: embedding needs an explicit backend, not auto");
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    if (desc->embed && desc->backend == FASA_BACKEND_CPU) {
        snprintf(msg, n, "desc.embed: the cpu backend has nothing to embed");
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    if (desc->n_threads > 1024) {
        snprintf(msg, n, "desc.n_threads: %u is more than 1024", desc->n_threads);
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    return FASA_OK;
}

/* Fills ctx->device for an explicit backend and index. */
static fasa_status resolve_device(const fasa_context_desc *desc, fasa_context *ctx, char *msg,
                                  size_t n)
{
    if (desc->backend == FASA_BACKEND_AUTO) {
        if (!pick_auto(desc->flags, &ctx->device)) {
            snprintf(msg, n, "backend auto: no usable device found");
            return FASA_ERROR_BACKEND_UNAVAILABLE;
        }
        return FASA_OK;
    }
    const fasa_backend_ops *ops = fasa__backend_ops(desc->backend);
    if (!ops) {
        snprintf(msg, n, "desc.backend: '%s' is not compiled into this build",
                 fasa_backend_name(desc->backend));
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    if (desc->embed) { /* the backend describes the host's device itself */
        memset(&ctx->device, 0, sizeof ctx->device);
        ctx->device.backend = desc->backend;
        return FASA_OK;
    }
    fasa_device_info devs[32];
    uint32_t count = 32;
    fasa_status st = fasa_list_devices(desc->backend, devs, &count, msg, n);
    if (st != FASA_OK) return st;
    uint32_t index = desc->device_index < 0 ? 0 : (uint32_t)desc->device_index;
    if (index >= count || index >= 32) {
        snprintf(msg, n, "desc.device_index: %u out of range (backend '%s' has %u device%s)", index,
                 fasa_backend_name(desc->backend), count, count == 1 ? "" : "s");
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    ctx->device = devs[index];
    return FASA_OK;
}

/* fault_kind / fault_at: a fault armed from the start (fasa_debug_context_create). */
static fasa_status context_create(const fasa_context_desc *desc, fasa_fault fault_kind, uint32_t fault_at,
                                  fasa_context **out)
{
    char msg[FASA_ERROR_MAX] = "";
    if (!out) return create_fail(desc, FASA_ERROR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    fasa_context_desc defaults = {0};
    if (!desc) desc = &defaults;
    fasa_status st = check_context_desc(desc, msg, sizeof msg);
    if (st != FASA_OK) return create_fail(desc, st, msg);

    fasa_context tmp = {0};
    tmp.alloc = desc->allocator;
    fasa_context *ctx = fasa__alloc(&tmp, sizeof *ctx);
    if (!ctx) return create_fail(desc, FASA_ERROR_OUT_OF_HOST_MEMORY, "context allocation failed");
    ctx->alloc = desc->allocator;
    ctx->logger = desc->logger;
    ctx->flags = desc->flags;
    ctx->device_memory_budget = desc->device_memory_budget;
    if ((unsigned)fault_kind < FASA_FAULT_COUNT_) ctx->fault_at[fault_kind] = fault_at;
    pthread_mutex_init(&ctx->lock, NULL);
    if (desc->cache_dir && !(ctx->cache_dir = fasa__strdup(ctx, desc->cache_dir))) {
        pthread_mutex_destroy(&ctx->lock);
        fasa__free(ctx, ctx);
        return create_fail(desc, FASA_ERROR_OUT_OF_HOST_MEMORY, "context allocation failed");
    }

    st = resolve_device(desc, ctx, msg, sizeof msg);
    if (st == FASA_OK) {
        ctx->backend = ctx->device.backend;
        ctx->ops = fasa__backend_ops(ctx->backend);
        ctx->n_threads = desc->n_threads ? desc->n_threads : fasa__cpu_count();
        st = fasa__pool_create(ctx, ctx->n_threads, &ctx->pool);
        if (st != FASA_OK) snprintf(msg, sizeof msg, "could not start %u worker threads", ctx->n_threads);
    }
    if (st == FASA_OK && desc->device_memory_budget && ctx->backend != FASA_BACKEND_VULKAN) {
        snprintf(msg, sizeof msg, "desc.device_memory_budget: the %s backend does not enforce a device-memory "
                 "budget (the vulkan backend does); leave it 0", fasa_backend_name(ctx->backend));
        st = FASA_ERROR_UNSUPPORTED;
    }
    if (st == FASA_OK) {
        st = ctx->ops->context_init(ctx, ctx->device.index, desc->embed);
        if (st != FASA_OK) {
            snprintf(msg, sizeof msg, "%s", ctx->last_error);
            ctx->ops = NULL; /* nothing to destroy on the backend side */
        }
    }
    if (st != FASA_OK) {
        fasa__pool_destroy(ctx, ctx->pool);
        pthread_mutex_destroy(&ctx->lock);
        fasa__free(ctx, ctx->cache_dir);
        fasa__free(ctx, ctx);
        return create_fail(desc, st, msg);
    }
    fasa__log(ctx, FASA_LOG_INFO, "libfasa: backend %s, device %u '%s'%s",
              fasa_backend_name(ctx->backend), ctx->device.index, ctx->device.name,
              desc->backend == FASA_BACKEND_AUTO ? " (picked by auto)" : "");
    *out = ctx;
    return FASA_OK;
}

fasa_status fasa_context_create(const fasa_context_desc *desc, fasa_context **out)
{
    return context_create(desc, FASA_FAULT_COUNT_, 0, out);
}

fasa_status fasa_debug_context_create(const fasa_context_desc *desc, fasa_fault kind, uint32_t n,
                                      fasa_context **out)
{
    if ((unsigned)kind >= FASA_FAULT_COUNT_) {
        if (out) *out = NULL;
        return create_fail(desc, FASA_ERROR_INVALID_ARGUMENT, "fasa_debug_context_create: unknown fault kind");
    }
    return context_create(desc, kind, n, out);
}

void fasa_context_destroy(fasa_context *ctx)
{
    if (!ctx) return;
    if (ctx->ops) ctx->ops->context_destroy(ctx);
    fasa__pool_destroy(ctx, ctx->pool);
    pthread_mutex_destroy(&ctx->lock);
    fasa__free(ctx, ctx->cache_dir);
    fasa__free(ctx, ctx);
}

fasa_status fasa_context_device(const fasa_context *ctx, fasa_device_info *out)
{
    if (!ctx || !out) return FASA_ERROR_INVALID_ARGUMENT;
    *out = ctx->device;
    return FASA_OK;
}

fasa_backend fasa_context_backend(const fasa_context *ctx)
{
    return ctx ? ctx->backend : FASA_BACKEND_AUTO;
}

fasa_status fasa_context_finish(fasa_context *ctx)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st = ctx->ops->finish(ctx);
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_context_last_step_ns(const fasa_context *ctx, uint64_t *ns)
{
    if (!ctx || !ns) return FASA_ERROR_INVALID_ARGUMENT;
    if (!(ctx->flags & FASA_CONTEXT_PROFILE) || !ctx->has_step_ns)
        return FASA_ERROR_UNSUPPORTED;
    *ns = ctx->last_step_ns;
    return FASA_OK;
}

fasa_status fasa_context_device_memory(const fasa_context *ctx, uint64_t *used, uint64_t *budget)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *c = (fasa_context *)ctx; /* the lock and the message are not the context's value */
    fasa__lock(c);
    fasa_status st = FASA_OK;
    if (!used || !budget)
        st = fasa__error(c, FASA_ERROR_INVALID_ARGUMENT, "fasa_context_device_memory: %s is NULL",
                         !used ? "used" : "budget");
    else if (ctx->backend != FASA_BACKEND_VULKAN)
        st = fasa__error(c, FASA_ERROR_UNSUPPORTED, "fasa_context_device_memory: the %s backend does not count "
                         "its device memory (the vulkan backend does)", fasa_backend_name(ctx->backend));
    if (st == FASA_OK) {
        *used = ctx->device_memory_used;
        *budget = ctx->device_memory_budget;
    }
    fasa__unlock(c);
    return st;
}
