/*
 * Embedding mode: the host owns the cl_context, the in-order queue and the
 * buffers (q, o, k, v at offsets inside its own cl_mem objects); libfasa
 * only enqueues.  Results are checked against the CPU backend.  Also the
 * bad-input matrix of the OpenCL entry points (fasa_opencl.h and the embed
 * description): every call returns a status whose message names the field,
 * and a failed call changes nothing.
 */
#include "cl_test.h"
#include "opencl/cl_internal.h"

#include <pthread.h>

#define HQ 8u
#define HKV 2u
#define D 64u
#define CAP 3000u
#define N1 1000u
#define N2 1800u
#define Q_OFF 256u

typedef struct host_cl host_cl;
static void bad_entry_points(fasa_context *ctx, fasa_context *cpu, fasa_kv_cache *cache, fasa_kv_cache *cpu_cache,
                             fasa_buffer *kb, fasa_buffer *vb, fasa_buffer *qb, fasa_buffer *ob, const host_cl *h,
                             cl_mem kmem);

struct host_cl {
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
};

/* The device with fasa's OpenCL index `index`: platforms in order, then
 * their devices (the same enumeration fasa_list_devices uses). */
static bool host_open(int32_t index, cl_command_queue_properties props, host_cl *h)
{
    cl_platform_id plats[16];
    cl_uint np = 0;
    if (clGetPlatformIDs(16, plats, &np) != CL_SUCCESS) return false;
    int32_t seen = 0;
    for (cl_uint p = 0; p < np && p < 16; p++) {
        cl_device_id devs[64];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 64, devs, &nd) != CL_SUCCESS) continue;
        for (cl_uint d = 0; d < nd && d < 64; d++, seen++) {
            if (seen != index) continue;
            h->platform = plats[p];
            h->device = devs[d];
            cl_int err;
            h->context = clCreateContext(NULL, 1, &h->device, NULL, NULL, &err);
            if (!h->context) return false;
            h->queue = clCreateCommandQueue(h->context, h->device, props, &err);
            return h->queue != NULL;
        }
    }
    return false;
}

static void host_close(host_cl *h)
{
    if (h->queue) clReleaseCommandQueue(h->queue);
    if (h->context) clReleaseContext(h->context);
}

static cl_uint refcount_ctx(cl_context c)
{
    cl_uint n = 0;
    clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL);
    return n;
}

static cl_uint refcount_mem(cl_mem m)
{
    cl_uint n = 0;
    clGetMemObjectInfo(m, CL_MEM_REFERENCE_COUNT, sizeof n, &n, NULL);
    return n;
}

static fasa_context *embed_context(const host_cl *h, uint32_t flags, fasa_status *st, char *msg, size_t msg_size)
{
    fasa_cl_embed e = {.context = h->context, .device = h->device, .queue = h->queue};
    fasa_context_desc d = {.backend = FASA_BACKEND_OPENCL, .embed = &e, .flags = flags,
                           .error_message = msg, .error_message_size = msg_size};
    fasa_context *ctx = NULL;
    *st = fasa_context_create(&d, &ctx);
    return ctx;
}

static fasa_status embed_status(cl_context c, cl_device_id dev, cl_command_queue q, fasa_backend b, char *msg)
{
    fasa_cl_embed e = {.context = c, .device = dev, .queue = q};
    fasa_context_desc d = {.backend = b, .embed = &e, .error_message = msg, .error_message_size = 512};
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&d, &ctx);
    fasa_context_destroy(ctx);
    return st;
}

#define T_EMBED(c, dev, q, b, want, field)                                                        \
    do {                                                                                         \
        char m_[512] = "";                                                                       \
        fasa_status s_ = embed_status(c, dev, q, b, m_);                                         \
        T_CHECK(s_ == (want) && strstr(m_, field), "embed(%s, %s, %s) -> %s '%s' (wanted %s naming '%s')", \
                #c, #dev, #q, fasa_status_string(s_), m_, fasa_status_string(want), field);      \
    } while (0)

static void bad_embed(const host_cl *h)
{
    T_EMBED(NULL, h->device, h->queue, FASA_BACKEND_OPENCL, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: context");
    T_EMBED(h->context, NULL, h->queue, FASA_BACKEND_OPENCL, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: device");
    T_EMBED(h->context, h->device, NULL, FASA_BACKEND_OPENCL, FASA_ERROR_INVALID_ARGUMENT, "desc.embed: queue");
    T_EMBED(h->context, h->device, h->queue, FASA_BACKEND_AUTO, FASA_ERROR_INVALID_ARGUMENT, "desc.embed");
    T_EMBED(h->context, h->device, h->queue, FASA_BACKEND_CPU, FASA_ERROR_INVALID_ARGUMENT, "desc.embed");
    /* a queue of another context */
    cl_int err;
    cl_context other = clCreateContext(NULL, 1, &h->device, NULL, NULL, &err);
    cl_command_queue oq = other ? clCreateCommandQueue(other, h->device, 0, &err) : NULL;
    if (oq) T_EMBED(h->context, h->device, oq, FASA_BACKEND_OPENCL, FASA_ERROR_INVALID_ARGUMENT, "another cl_context");
    if (oq) clReleaseCommandQueue(oq);
    if (other) clReleaseContext(other);
    /* an out-of-order queue */
    cl_command_queue ooo = clCreateCommandQueue(h->context, h->device, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &err);
    if (ooo) {
        T_EMBED(h->context, h->device, ooo, FASA_BACKEND_OPENCL, FASA_ERROR_INVALID_ARGUMENT, "out-of-order");
        clReleaseCommandQueue(ooo);
    } else {
        printf("  (out-of-order queues unsupported here: %d; check skipped)\n", err);
    }
    /* a device that is not in the context: a sub-device */
    cl_device_partition_property part[] = {CL_DEVICE_PARTITION_EQUALLY, 1, 0};
    cl_device_id sub[8];
    cl_uint n_sub = 0;
    if (clCreateSubDevices(h->device, part, 8, sub, &n_sub) == CL_SUCCESS && n_sub > 0) {
        T_EMBED(h->context, sub[0], h->queue, FASA_BACKEND_OPENCL, FASA_ERROR_INVALID_ARGUMENT,
                "not a device of context");
        for (cl_uint i = 0; i < n_sub && i < 8; i++) clReleaseDevice(sub[i]);
    } else {
        printf("  (no sub-devices here; device-not-in-context check skipped)\n");
    }
}

static void fill(uint64_t *s, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = t_uniform(s);
}

static fasa_calibration *calib(fasa_context *ctx)
{
    fasa_model_shape shape = {2, HQ, HKV, D, FASA_ROPE_NORM};
    return t_calibration(ctx, &shape, 8, false, 99);
}

/* The user event holds the queue: an enqueue-only call must return at once. */
typedef struct gate_args {
    fasa_kv_cache *cache;
    fasa_buffer *q, *o;
    fasa_status st;
    volatile int done;
} gate_args;

static void *enqueue_behind_gate(void *p)
{
    gate_args *a = p;
    fasa_decode_desc dd = {.n_fac = 64};
    a->st = fasa_cl_enqueue_decode(a->cache, 1, &dd, a->q, Q_OFF, a->o, 0);
    a->done = 1;
    return NULL;
}

/* An external cache over the host's own cl_mems (kb, vb: token-major
 * [N1 + N2][HKV][D] fp32 at offset 64 of kmem/vmem, the values of k and
 * v): enqueue-only syncs, then the same outputs as a CPU-backend cache of
 * the same values; the sync's bad inputs. */
static void external_run(fasa_context *ctx, fasa_context *ref, const float *k, const float *v, fasa_buffer *kb,
                         fasa_buffer *vb, fasa_buffer *qb, fasa_buffer *ob, cl_mem kmem, const float *q)
{
    fasa_calibration *cal = calib(ctx), *cal_ref = calib(ref);
    fasa_buffer *ks[2] = {kb, kb}, *vs[2] = {vb, vb};
    fasa_kv_external x = {.token_stride = HKV * D, .head_stride = D, .k = ks, .v = vs};
    fasa_kv_cache_desc kd = {.shape = {2, HQ, HKV, D, FASA_ROPE_NORM}, .capacity = N1 + N2, .calibration = cal_ref,
                             .dtype = FASA_DTYPE_F32};
    fasa_kv_cache *cache = NULL, *rcache = NULL;
    T_STATUS(ref, fasa_kv_cache_create(ref, &kd, &rcache), FASA_OK, NULL);
    kd.calibration = cal;
    kd.external = &x;
    T_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_OK, NULL);
    if (!cache || !rcache) exit(1);
    T_STATUS(ref, fasa_kv_cache_append(rcache, 1, N1 + N2, k, v, FASA_DTYPE_F32), FASA_OK, NULL);
    T_STATUS(ctx, fasa_cl_enqueue_kv_cache_sync(cache, 1, 0, N1), FASA_OK, NULL);
    T_STATUS(ctx, fasa_cl_enqueue_kv_cache_sync(cache, 1, N1, N2), FASA_OK, NULL);
    uint32_t len = 0;
    fasa_kv_cache_length(cache, 1, &len);
    T_CHECK(len == N1 + N2, "length after enqueued syncs %u", len);
    size_t nq = (size_t)HQ * D;
    float *o = malloc(nq * 4), *o_ref = malloc(nq * 4);
    const fasa_decode_desc descs[] = {{.n_fac = 64}, {.n_fac = 200, .gqa_select = FASA_GQA_PER_GROUP, .n_sink = 4},
                                      {.mode = FASA_MODE_ORACLE, .n_fac = 128}, {.mode = FASA_MODE_DENSE}};
    for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++) {
        T_STATUS(ctx, fasa_decode_host(cache, 1, &descs[i], q, o, NULL), FASA_OK, NULL);
        T_STATUS(ref, fasa_decode_host(rcache, 1, &descs[i], q, o_ref, NULL), FASA_OK, NULL);
        T_CHECK(t_nmse(o_ref, o, nq) <= 1e-7, "external desc %zu: NMSE %g vs cpu", i, t_nmse(o_ref, o, nq));
    }
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &descs[0], qb, Q_OFF, ob, 0), FASA_OK, NULL);
    /* the sync's bad inputs; a failure leaves the length */
    const fasa_status INV = FASA_ERROR_INVALID_ARGUMENT;
    T_CHECK(fasa_cl_enqueue_kv_cache_sync(NULL, 1, 0, 1) == INV, "sync with a NULL cache");
    T_STATUS(ctx, fasa_cl_enqueue_kv_cache_sync(cache, 2, 0, 1), INV, "layer 2");
    T_STATUS(ctx, fasa_cl_enqueue_kv_cache_sync(cache, 1, 0, 0), INV, "n is 0");
    T_STATUS(ctx, fasa_cl_enqueue_kv_cache_sync(cache, 0, 5, 1), INV, "first (5) is past the 0");
    T_STATUS(ctx, fasa_cl_enqueue_kv_cache_sync(cache, 1, 1, N1 + N2), FASA_ERROR_CAPACITY, "exceed the capacity");
    T_STATUS(ref, fasa_cl_enqueue_kv_cache_sync(rcache, 1, 0, 1), FASA_ERROR_UNSUPPORTED, "backend is cpu");
    fasa_kv_cache_length(cache, 1, &len);
    T_CHECK(len == N1 + N2, "a failed sync changed the length to %u", len);
    /* the kernels read element pairs from the start of the cl_mem: a wrap at
     * 4 bytes does not start an fp32 pair */
    fasa_buffer *odd = NULL;
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, kmem, 4, (N1 + N2) * HKV * D * 4, &odd), FASA_OK, NULL);
    ks[0] = odd;
    fasa_kv_cache *bad = NULL;
    T_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &bad), INV, "desc.external->k[0]: the wrapped cl_mem offset");
    T_CHECK(bad == NULL, "a refused create returned a cache");
    fasa_buffer_destroy(odd);
    free(o);
    free(o_ref);
    fasa_kv_cache_destroy(cache);
    fasa_kv_cache_destroy(rcache);
    fasa_calibration_destroy(cal);
    fasa_calibration_destroy(cal_ref);
}

static void embedded_run(const host_cl *h, fasa_context *ref)
{
    char msg[1024];
    fasa_status st;
    cl_uint rc0 = refcount_ctx(h->context);
    fasa_context *ctx = embed_context(h, FASA_CONTEXT_PROFILE, &st, msg, sizeof msg);
    T_CHECK(st == FASA_OK, "embedded context: %s", msg);
    if (!ctx) return;
    T_CHECK(fasa_context_backend(ctx) == FASA_BACKEND_OPENCL, "backend");
    fasa_device_info info;
    fasa_context_device(ctx, &info);
    char name[256] = "";
    clGetDeviceInfo(h->device, CL_DEVICE_NAME, sizeof name, name, NULL);
    T_CHECK(strcmp(info.name, name) == 0, "device name '%s' vs '%s'", info.name, name);

    /* host data */
    uint64_t seed = 4242;
    size_t row = (size_t)HKV * D, nq = (size_t)HQ * D;
    float *k = malloc((N1 + N2) * row * 4), *v = malloc((N1 + N2) * row * 4), *q = malloc(nq * 4);
    fill(&seed, k, (N1 + N2) * row);
    fill(&seed, v, (N1 + N2) * row);
    fill(&seed, q, nq);

    /* host-owned buffers: k and v at offset 64 in one cl_mem each, q and o
     * in one shared cl_mem */
    cl_int err;
    size_t kv_bytes = 64 + (N1 + N2) * row * 4, io_bytes = Q_OFF + 2 * nq * 4 + 128;
    cl_mem kmem = clCreateBuffer(h->context, CL_MEM_READ_WRITE, kv_bytes, NULL, &err);
    cl_mem vmem = clCreateBuffer(h->context, CL_MEM_READ_WRITE, kv_bytes, NULL, &err);
    cl_mem io = clCreateBuffer(h->context, CL_MEM_READ_WRITE, io_bytes, NULL, &err);
    clEnqueueWriteBuffer(h->queue, kmem, CL_TRUE, 64, (N1 + N2) * row * 4, k, 0, NULL, NULL);
    clEnqueueWriteBuffer(h->queue, vmem, CL_TRUE, 64, (N1 + N2) * row * 4, v, 0, NULL, NULL);
    clEnqueueWriteBuffer(h->queue, io, CL_TRUE, Q_OFF, nq * 4, q, 0, NULL, NULL);
    cl_uint rc_mem = refcount_mem(kmem);

    fasa_buffer *kb = NULL, *vb = NULL, *qb = NULL, *ob = NULL;
    uint64_t o_off = Q_OFF + nq * 4 + 64;
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, kmem, 64, (N1 + N2) * row * 4, &kb), FASA_OK, NULL);
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, vmem, 64, (N1 + N2) * row * 4, &vb), FASA_OK, NULL);
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, io, 0, Q_OFF + nq * 4, &qb), FASA_OK, NULL);
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, io, o_off, nq * 4, &ob), FASA_OK, NULL);
    T_CHECK(refcount_mem(kmem) == rc_mem + 1, "wrap retains the cl_mem");
    cl_mem hm = NULL;
    uint64_t hoff = 0;
    T_STATUS(ctx, fasa_cl_buffer_handle(ob, &hm, &hoff), FASA_OK, NULL);
    T_CHECK(hm == io && hoff == o_off, "handle %p+%llu", (void *)hm, (unsigned long long)hoff);

    fasa_calibration *cal = calib(ctx), *cal_ref = calib(ref);
    fasa_kv_cache_desc kd = {.shape = {2, HQ, HKV, D, FASA_ROPE_NORM}, .capacity = CAP, .calibration = cal};
    fasa_kv_cache *cache = NULL, *rcache = NULL;
    T_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_OK, NULL);
    kd.calibration = cal_ref;
    T_STATUS(ref, fasa_kv_cache_create(ref, &kd, &rcache), FASA_OK, NULL);
    if (!cache || !rcache) exit(1);

    /* enqueue-only appends (two pieces, the second from an offset) */
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, N1, kb, 0, vb, 0, FASA_DTYPE_F32), FASA_OK, NULL);
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, N2, kb, N1 * row * 4, vb, N1 * row * 4, FASA_DTYPE_F32), FASA_OK, NULL);
    uint32_t len = 0;
    fasa_kv_cache_length(cache, 1, &len);
    T_CHECK(len == N1 + N2, "length after enqueued appends %u", len);
    T_STATUS(ref, fasa_kv_cache_append(rcache, 1, N1 + N2, k, v, FASA_DTYPE_F32), FASA_OK, NULL);
    /* layer 0 (dense by default) through the blocking host path */
    T_STATUS(ctx, fasa_kv_cache_append(cache, 0, 500, k, v, FASA_DTYPE_F32), FASA_OK, NULL);
    T_STATUS(ref, fasa_kv_cache_append(rcache, 0, 500, k, v, FASA_DTYPE_F32), FASA_OK, NULL);

    const fasa_decode_desc descs[] = {
        {.mode = FASA_MODE_FASA, .n_fac = 64},
        {.mode = FASA_MODE_FASA, .n_fac = 200, .gqa_select = FASA_GQA_PER_GROUP, .n_sink = 4, .n_recent = 8},
        {.mode = FASA_MODE_ORACLE, .n_fac = 128},
        {.mode = FASA_MODE_DENSE},
    };
    float *o_ref = malloc(nq * 4), *o = malloc(nq * 4);
    for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++) {
        for (uint32_t layer = 0; layer < 2; layer++) {
            /* the host changes q with a non-blocking write: the in-order
             * queue orders it before libfasa's kernels */
            q[i % nq] += 0.25f;
            clEnqueueWriteBuffer(h->queue, io, CL_FALSE, Q_OFF, nq * 4, q, 0, NULL, NULL);
            T_STATUS(ctx, fasa_cl_enqueue_decode(cache, layer, &descs[i], qb, Q_OFF, ob, 0), FASA_OK, NULL);
            clEnqueueReadBuffer(h->queue, io, CL_FALSE, o_off, nq * 4, o, 0, NULL, NULL);
            clFinish(h->queue);
            T_STATUS(ref, fasa_decode_host(rcache, layer, &descs[i], q, o_ref, NULL), FASA_OK, NULL);
            double e = t_nmse(o_ref, o, nq);
            T_CHECK(e <= 1e-7, "desc %zu layer %u: NMSE %g vs cpu", i, layer, e);
        }
    }
    /* the blocking paths on the embedded context, with event timings */
    T_STATUS(ctx, fasa_decode(cache, 1, &descs[0], qb, Q_OFF, ob, 0), FASA_OK, NULL);
    uint64_t ns = 0;
    T_STATUS(ctx, fasa_context_last_step_ns(ctx, &ns), FASA_OK, NULL);
    T_CHECK(ns > 0, "step time %llu ns", (unsigned long long)ns);
    T_STATUS(ctx, fasa_decode_host(cache, 1, &descs[0], q, o, NULL), FASA_OK, NULL);
    T_STATUS(ref, fasa_decode_host(rcache, 1, &descs[0], q, o_ref, NULL), FASA_OK, NULL);
    T_CHECK(t_nmse(o_ref, o, nq) <= 1e-7, "blocking decode_host on the embedded context");

    /* enqueue-only with q and o in bf16 (desc q_type / o_type): o is the fp32
     * step's o of the same (bf16-valued) q, rounded, bit for bit */
    {
        uint16_t *qh = malloc(nq * 2), *oh = malloc(nq * 2);
        float *qr = malloc(nq * 4);
        for (size_t i = 0; i < nq; i++) qr[i] = fasa__bf16_to_float(qh[i] = fasa__float_to_bf16(q[i]));
        fasa_decode_desc dd = descs[1];
        T_STATUS(ctx, fasa_decode_host(cache, 1, &dd, qr, o, NULL), FASA_OK, NULL);
        clEnqueueWriteBuffer(h->queue, io, CL_FALSE, Q_OFF, nq * 2, qh, 0, NULL, NULL);
        dd.q_type = dd.o_type = FASA_IO_BF16;
        T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &dd, qb, Q_OFF, ob, 0), FASA_OK, NULL);
        clEnqueueReadBuffer(h->queue, io, CL_TRUE, o_off, nq * 2, oh, 0, NULL, NULL);
        size_t bad = 0;
        for (size_t i = 0; i < nq; i++) bad += oh[i] != fasa__float_to_bf16(o[i]);
        T_CHECK(bad == 0, "enqueued bf16 q/o decode: %zu elements differ from the fp32 o rounded", bad);
        free(qh);
        free(oh);
        free(qr);
    }

    /* enqueue-only: with the queue held by a user event the call returns */
    cl_event gate = clCreateUserEvent(h->context, &err);
    if (gate && clEnqueueBarrierWithWaitList(h->queue, 1, &gate, NULL) == CL_SUCCESS) {
        gate_args ga = {cache, qb, ob, FASA_ERROR_BACKEND, 0};
        pthread_t th;
        pthread_create(&th, NULL, enqueue_behind_gate, &ga);
        for (int i = 0; i < 2000 && !ga.done; i++) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
        T_CHECK(ga.done, "fasa_cl_enqueue_decode blocked on a held queue (it must only enqueue)");
        clSetUserEventStatus(gate, CL_COMPLETE);
        pthread_join(th, NULL);
        T_CHECK(ga.st == FASA_OK, "enqueue behind the gate: %s", fasa_context_last_error(ctx));
        clFinish(h->queue);
    }
    if (gate) clReleaseEvent(gate);

    external_run(ctx, ref, k, v, kb, vb, qb, ob, kmem, q);
    bad_entry_points(ctx, ref, cache, rcache, kb, vb, qb, ob, h, kmem);

    fasa_kv_cache_destroy(cache);
    fasa_kv_cache_destroy(rcache);
    fasa_calibration_destroy(cal);
    fasa_calibration_destroy(cal_ref);
    fasa_buffer_destroy(kb);
    fasa_buffer_destroy(vb);
    fasa_buffer_destroy(qb);
    fasa_buffer_destroy(ob);
    T_CHECK(refcount_mem(kmem) == rc_mem, "destroying the wrapper releases its reference");
    fasa_context_destroy(ctx);
    T_CHECK(clFinish(h->queue) == CL_SUCCESS, "the host queue still works");
    clReleaseMemObject(kmem);
    clReleaseMemObject(vmem);
    clReleaseMemObject(io);
    T_CHECK(refcount_ctx(h->context) == rc0, "context refcount %u after destroy (was %u)", refcount_ctx(h->context), rc0);
    free(k);
    free(v);
    free(q);
    free(o);
    free(o_ref);
}

static void bad_entry_points(fasa_context *ctx, fasa_context *cpu, fasa_kv_cache *cache, fasa_kv_cache *cpu_cache,
                             fasa_buffer *kb, fasa_buffer *vb, fasa_buffer *qb, fasa_buffer *ob, const host_cl *h,
                             cl_mem kmem)
{
    const fasa_status INV = FASA_ERROR_INVALID_ARGUMENT, UNS = FASA_ERROR_UNSUPPORTED;
    size_t kmem_size = 0;
    clGetMemObjectInfo(kmem, CL_MEM_SIZE, sizeof kmem_size, &kmem_size, NULL);
    /* fasa_cl_buffer_wrap */
    fasa_buffer *b = (fasa_buffer *)&b;
    T_CHECK(fasa_cl_buffer_wrap(NULL, kmem, 0, 64, &b) == INV, "wrap with a NULL context");
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, kmem, 0, 64, NULL), INV, "out is NULL");
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, NULL, 0, 64, &b), INV, "mem is NULL");
    T_CHECK(b == NULL, "out is NULL after a failed wrap");
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, kmem, 0, 0, &b), INV, "size is 0");
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, kmem, 2, 64, &b), INV, "offset 2");
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, kmem, 64, kmem_size, &b), INV, "exceeds");
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, kmem, kmem_size + 4, 4, &b), INV, "exceeds");
    T_STATUS(cpu, fasa_cl_buffer_wrap(cpu, kmem, 0, 64, &b), UNS, "backend is cpu");
    cl_int err;
    cl_context other = clCreateContext(NULL, 1, &h->device, NULL, NULL, &err);
    cl_mem alien = other ? clCreateBuffer(other, CL_MEM_READ_WRITE, 1024, NULL, &err) : NULL;
    if (alien) T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, alien, 0, 64, &b), INV, "another cl_context");
    /* fasa_cl_buffer_handle */
    cl_mem m = NULL;
    T_CHECK(fasa_cl_buffer_handle(NULL, &m, NULL) == INV, "handle of NULL");
    T_STATUS(ctx, fasa_cl_buffer_handle(kb, NULL, NULL), INV, "mem is NULL");
    T_STATUS(ctx, fasa_cl_buffer_handle(kb, &m, NULL), FASA_OK, NULL);
    fasa_buffer *cpu_buf = NULL;
    T_STATUS(cpu, fasa_buffer_create(cpu, 4096, &cpu_buf), FASA_OK, NULL);
    T_STATUS(cpu, fasa_cl_buffer_handle(cpu_buf, &m, NULL), UNS, "backend is cpu");
    float host[16];
    T_STATUS(ctx, fasa_buffer_wrap_host(ctx, host, sizeof host, &b), UNS, "fasa_buffer_wrap_host");

    /* fasa_cl_enqueue_decode: nothing may be written when it fails */
    size_t nq = (size_t)HQ * D;
    float *before = malloc(nq * 4), *after = malloc(nq * 4);
    fasa_buffer_read(ob, 0, before, nq * 4);
    fasa_decode_desc ok = {.n_fac = 64};
    fasa_decode_desc bad_mode = {.mode = (fasa_mode)9}, bad_sel = {.gqa_select = (fasa_gqa_select)7};
    fasa_decode_desc big = {.n_fac = 5000}, forced = {.n_fac = 16, .n_sink = 10, .n_recent = 10};
    T_CHECK(fasa_cl_enqueue_decode(NULL, 1, &ok, qb, Q_OFF, ob, 0) == INV, "decode with a NULL cache");
    T_STATUS(cpu, fasa_cl_enqueue_decode(cpu_cache, 1, &ok, cpu_buf, 0, cpu_buf, 2048), UNS, "backend is cpu");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 7, &ok, qb, Q_OFF, ob, 0), INV, "layer 7");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &bad_mode, qb, Q_OFF, ob, 0), INV, "desc.mode");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &bad_sel, qb, Q_OFF, ob, 0), INV, "desc.gqa_select");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &big, qb, Q_OFF, ob, 0), INV, "desc.n_fac");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &forced, qb, Q_OFF, ob, 0), INV, "desc.n_sink");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &ok, NULL, 0, ob, 0), INV, "q is NULL");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &ok, qb, Q_OFF, NULL, 0), INV, "o is NULL");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &ok, qb, Q_OFF + 2, ob, 0), INV, "q_offset");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &ok, qb, Q_OFF, ob, 4), INV, "o needs");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &ok, cpu_buf, 0, ob, 0), INV, "another context");
    T_STATUS(ctx, fasa_cl_enqueue_decode(cache, 1, &ok, qb, Q_OFF, qb, Q_OFF), INV, "overlap");
    fasa_kv_cache_desc kd = {.shape = {1, HQ, HKV, D, FASA_ROPE_NORM}, .capacity = 16};
    fasa_kv_cache *empty = NULL;
    T_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &empty), FASA_OK, NULL);
    fasa_decode_desc dense = {.mode = FASA_MODE_DENSE};
    T_STATUS(ctx, fasa_cl_enqueue_decode(empty, 0, &dense, qb, Q_OFF, ob, 0), INV, "holds no tokens");
    T_STATUS(ctx, fasa_cl_enqueue_decode(empty, 0, &ok, qb, Q_OFF, ob, 0), INV, "calibration");
    clFinish(h->queue);
    fasa_buffer_read(ob, 0, after, nq * 4);
    T_CHECK(memcmp(before, after, nq * 4) == 0, "a failed enqueue_decode wrote o");

    /* fasa_cl_enqueue_append: the length stays when it fails */
    uint32_t len0 = 0, len1 = 0;
    fasa_kv_cache_length(cache, 1, &len0);
    size_t row_bytes = (size_t)HKV * D * 4;
    T_CHECK(fasa_cl_enqueue_append(NULL, 1, 1, kb, 0, vb, 0, FASA_DTYPE_F32) == INV, "append with a NULL cache");
    T_STATUS(cpu, fasa_cl_enqueue_append(cpu_cache, 1, 1, cpu_buf, 0, cpu_buf, 0, FASA_DTYPE_F32), UNS, "backend is cpu");
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 9, 1, kb, 0, vb, 0, FASA_DTYPE_F32), INV, "layer 9");
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, 0, kb, 0, vb, 0, FASA_DTYPE_F32), INV, "n is 0");
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, 1, NULL, 0, vb, 0, FASA_DTYPE_F32), INV, "k is NULL");
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, 1, kb, 0, NULL, 0, FASA_DTYPE_F32), INV, "v is NULL");
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, 1, kb, 0, vb, 0, (fasa_dtype)5), INV, "src_dtype");
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, CAP, kb, 0, vb, 0, FASA_DTYPE_F32), FASA_ERROR_CAPACITY, "do not fit");
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, 1, kb, (N1 + N2) * row_bytes, vb, 0, FASA_DTYPE_F32), INV, "k range");
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, 1, kb, 0, vb, 2, FASA_DTYPE_F32), INV, "v_offset");
    T_STATUS(ctx, fasa_cl_enqueue_append(cache, 1, 1, kb, 0, cpu_buf, 0, FASA_DTYPE_F32), INV, "another context");
    fasa_kv_cache_length(cache, 1, &len1);
    T_CHECK(len0 == len1, "a failed append changed the length (%u -> %u)", len0, len1);

    fasa_kv_cache_destroy(empty);
    fasa_buffer_destroy(cpu_buf);
    free(before);
    free(after);
    if (alien) clReleaseMemObject(alien);
    if (other) clReleaseContext(other);
}

/* fasa_cl_enqueue_decode_batch on the host's queue: items alternating
 * between two caches of different lengths, q and o in the host's cl_mem
 * (o in reverse item order); after clFinish every item's o equals an
 * enqueued single step of that item bit for bit. */
static void embedded_batch(const host_cl *h)
{
    enum { NB = 7 };
    char msg[512];
    fasa_status st;
    fasa_context *ctx = embed_context(h, 0, &st, msg, sizeof msg);
    T_CHECK(st == FASA_OK, "embedded context: %s", msg);
    if (!ctx) return;
    fasa_calibration *cal = calib(ctx);
    fasa_kv_cache *c[2] = {NULL, NULL};
    uint32_t lens[2] = {900, 400};
    uint64_t seed = 21;
    float *kv = malloc((size_t)900 * HKV * D * 4);
    fill(&seed, kv, (size_t)900 * HKV * D);
    for (int i = 0; i < 2; i++) {
        fasa_kv_cache_desc kd = {.shape = {2, HQ, HKV, D, FASA_ROPE_NORM}, .capacity = 1024, .calibration = cal,
                                 .flags = FASA_CACHE_NO_DENSE_LAYERS};
        T_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &c[i]), FASA_OK, NULL);
        if (c[i]) T_STATUS(ctx, fasa_kv_cache_append(c[i], 1, lens[i], kv, kv, FASA_DTYPE_F32), FASA_OK, NULL);
    }
    size_t row = (size_t)HQ * D * 4;
    float *q = malloc(NB * row), *got = malloc(NB * row), *one = malloc(row);
    fill(&seed, q, (size_t)NB * HQ * D);
    cl_int err;
    cl_mem qm = clCreateBuffer(h->context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, NB * row, q, &err);
    cl_mem om = clCreateBuffer(h->context, CL_MEM_READ_WRITE, NB * row, NULL, &err);
    fasa_buffer *qb = NULL, *ob = NULL, *o1 = NULL;
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, qm, 0, NB * row, &qb), FASA_OK, NULL);
    T_STATUS(ctx, fasa_cl_buffer_wrap(ctx, om, 0, NB * row, &ob), FASA_OK, NULL);
    T_STATUS(ctx, fasa_buffer_create(ctx, row, &o1), FASA_OK, NULL);
    fasa_decode_item it[NB];
    for (int i = 0; i < NB; i++)
        it[i] = (fasa_decode_item){c[i % 2], NULL, qb, (uint64_t)i * row, ob, (uint64_t)(NB - 1 - i) * row};
    fasa_decode_desc dd = {.n_fac = 96, .n_sink = 2, .n_recent = 2};
    if (c[0] && c[1] && qb && ob && o1) {
        T_STATUS(ctx, fasa_cl_enqueue_decode_batch(ctx, 1, &dd, NB, it), FASA_OK, NULL);
        clFinish(h->queue);
        clEnqueueReadBuffer(h->queue, om, CL_TRUE, 0, NB * row, got, 0, NULL, NULL);
        for (int i = 0; i < NB; i++) {
            T_STATUS(ctx, fasa_cl_enqueue_decode(c[i % 2], 1, &dd, qb, (uint64_t)i * row, o1, 0), FASA_OK, NULL);
            T_STATUS(ctx, fasa_buffer_read(o1, 0, one, row), FASA_OK, NULL);
            T_CHECK(memcmp(one, (char *)got + (size_t)(NB - 1 - i) * row, row) == 0,
                    "item %d: the enqueued batch's o differs from a single enqueued step", i);
        }
    }
    fasa_buffer_destroy(qb);
    fasa_buffer_destroy(ob);
    fasa_buffer_destroy(o1);
    clReleaseMemObject(qm);
    clReleaseMemObject(om);
    fasa_kv_cache_destroy(c[0]);
    fasa_kv_cache_destroy(c[1]);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
    free(kv);
    free(q);
    free(got);
    free(one);
}

int main(void)
{
    int32_t dev = t_cl_device("test_cl_embed");
    host_cl h = {0};
    if (!host_open(dev, CL_QUEUE_PROFILING_ENABLE, &h)) {
        printf("test_cl_embed: could not open OpenCL device %d on the host side\n", dev);
        return 1;
    }
    fasa_context *ref = t_context(FASA_BACKEND_CPU, 0, 0, NULL);
    bad_embed(&h);
    embedded_run(&h, ref);
    embedded_batch(&h);

    /* a queue without profiling: timings are unsupported, the rest works */
    host_cl h2 = {0};
    if (host_open(dev, 0, &h2)) {
        char msg[512];
        fasa_status st;
        fasa_context *ctx = embed_context(&h2, FASA_CONTEXT_PROFILE, &st, msg, sizeof msg);
        T_CHECK(st == FASA_OK, "embedded context without profiling: %s", msg);
        if (ctx) {
            fasa_kv_cache_desc kd = {.shape = {1, HQ, HKV, D, FASA_ROPE_NORM}, .capacity = 64,
                                     .flags = FASA_CACHE_NO_DENSE_LAYERS};
            fasa_kv_cache *c = NULL;
            T_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &c), FASA_OK, NULL);
            float kv[64 * HKV * D], q[HQ * D], o[HQ * D];
            uint64_t seed = 5;
            fill(&seed, kv, 64 * HKV * D);
            fill(&seed, q, HQ * D);
            T_STATUS(ctx, fasa_kv_cache_append(c, 0, 64, kv, kv, FASA_DTYPE_F32), FASA_OK, NULL);
            fasa_decode_desc dd = {.mode = FASA_MODE_DENSE};
            T_STATUS(ctx, fasa_decode_host(c, 0, &dd, q, o, NULL), FASA_OK, NULL);
            uint64_t ns;
            T_STATUS(ctx, fasa_context_last_step_ns(ctx, &ns), FASA_ERROR_UNSUPPORTED, NULL);
            fasa_kv_cache_destroy(c);
            fasa_context_destroy(ctx);
        }
        host_close(&h2);
    }
    /* FASA-M placement: K and V in CL_MEM_ALLOC_HOST_PTR buffers; the same
     * kernels give bit-identical results (tests/opencl/test_cl_fasam.c runs
     * the fetch strategies; here the memory report, accounted as for a
     * discrete GPU since a unified-memory device saves nothing) */
    {
        fasa_context *ctx = t_context(FASA_BACKEND_OPENCL, dev, 0, NULL);
        fasa__cl_set_offload_flags(ctx, FASA_CL_OFFLOAD_AS_DISCRETE);
        fasa_calibration *cal = calib(ctx);
        fasa_kv_cache *c[2] = {NULL, NULL};
        float o[2][HQ * D], q[HQ * D];
        uint64_t seed = 8;
        float *kv = malloc((size_t)700 * HKV * D * 4);
        fill(&seed, kv, (size_t)700 * HKV * D);
        fill(&seed, q, HQ * D);
        for (int i = 0; i < 2; i++) {
            fasa_kv_cache_desc kd = {.shape = {2, HQ, HKV, D, FASA_ROPE_NORM}, .capacity = 700, .calibration = cal,
                                     .placement = i ? FASA_PLACEMENT_OFFLOAD : FASA_PLACEMENT_DEVICE};
            T_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &c[i]), FASA_OK, NULL);
            T_STATUS(ctx, fasa_kv_cache_append(c[i], 1, 700, kv, kv, FASA_DTYPE_F32), FASA_OK, NULL);
            fasa_decode_desc dd = {.n_fac = 100};
            T_STATUS(ctx, fasa_decode_host(c[i], 1, &dd, q, o[i], NULL), FASA_OK, NULL);
        }
        fasa_memory_report mr[2];
        fasa_kv_cache_memory(c[0], &mr[0]);
        fasa_kv_cache_memory(c[1], &mr[1]);
        T_CHECK(memcmp(o[0], o[1], sizeof o[0]) == 0, "FASA-M output differs from FASA-C");
        T_CHECK(mr[0].host_bytes == 0 && mr[1].host_bytes > 0 && mr[1].device_bytes < mr[0].device_bytes,
                "memory report: device %llu/%llu host %llu/%llu", (unsigned long long)mr[0].device_bytes,
                (unsigned long long)mr[1].device_bytes, (unsigned long long)mr[0].host_bytes,
                (unsigned long long)mr[1].host_bytes);
        fasa_kv_cache_destroy(c[0]);
        fasa_kv_cache_destroy(c[1]);
        fasa_calibration_destroy(cal);
        fasa_context_destroy(ctx);
        free(kv);
    }
    fasa_context_destroy(ref);
    host_close(&h);
    return t_done("test_cl_embed");
}
