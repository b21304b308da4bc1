/*
 * opencl_host.c: an OpenCL engine that embeds libfasa.
 *
 * The application owns the cl_context, the in-order cl_command_queue and the
 * cl_mem buffers holding k, v, q and o.  libfasa runs inside that context
 * (fasa_cl_embed), wraps the application's buffers (at byte offsets, here
 * q and o share one cl_mem) and only *enqueues* its kernels on the
 * application's queue: work the application enqueued before (its writes of
 * q, k, v) is seen by libfasa, and work enqueued after (its read of o) sees
 * libfasa's results.  Nothing is flushed or waited for by the enqueue calls.
 *
 * The check: the outputs of both layers (layer 0 dense by default, layer 1
 * FASA) equal a CPU-backend decode of the same data within a max abs
 * difference of 1e-4.
 *
 * Build against an installed libfasa (the application links its own ICD loader):
 *   cc opencl_host.c $(pkg-config --cflags --libs fasa) -lOpenCL -lm -o opencl_host
 * Exit status: 0 = pass, 1 = failure, 77 = skipped (no OpenCL device, or
 * libfasa built without OpenCL).
 */
#include <fasa_opencl.h>

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

#define CL(call)                                                                        \
    do {                                                                                \
        cl_int e_ = (call);                                                             \
        if (e_ != CL_SUCCESS) {                                                         \
            fprintf(stderr, "FAIL: %s returned %d (line %d)\n", #call, e_, __LINE__);   \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* Stops at the first failing libfasa call, printing what the context says. */
static void fasa_ok(fasa_context *ctx, fasa_status st, const char *what)
{
    if (st == FASA_OK) return;
    fprintf(stderr, "FAIL: %s: %s: %s\n", what, fasa_status_string(st), ctx ? fasa_context_last_error(ctx) : "");
    exit(1);
}

/* The same synthetic calibration and cache on any context. */
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

/* The application's device: the first GPU of any platform, else the first
 * device at all. */
static int pick_device(cl_platform_id *platform, cl_device_id *device)
{
    cl_platform_id plats[16];
    cl_uint np = 0;
    if (clGetPlatformIDs(16, plats, &np) != CL_SUCCESS || np == 0) return 0;
    if (np > 16) np = 16;
    for (int want_gpu = 1; want_gpu >= 0; want_gpu--)
        for (cl_uint p = 0; p < np; p++) {
            cl_uint nd = 0;
            if (clGetDeviceIDs(plats[p], want_gpu ? CL_DEVICE_TYPE_GPU : CL_DEVICE_TYPE_ALL, 1, device, &nd) ==
                    CL_SUCCESS && nd > 0) {
                *platform = plats[p];
                return 1;
            }
        }
    return 0;
}

int main(void)
{
    if (!fasa_backend_compiled(FASA_BACKEND_OPENCL)) {
        printf("SKIP: this libfasa was built without the OpenCL backend\n");
        return SKIP;
    }
    const uint32_t L = PROMPT + 1;
    const size_t row = (size_t)HKV * D, nq = (size_t)HQ * D, q_bytes = nq * 4, kv_bytes = L * row * 4;
    fasa_model_shape shape = {.n_layers = N_LAYERS, .n_q_heads = HQ, .n_kv_heads = HKV, .head_dim = D,
                              .layout = FASA_ROPE_NORM};

    float *k = malloc(kv_bytes), *v = malloc(kv_bytes), *q = malloc(q_bytes);
    for (size_t i = 0; i < L * row; i++) k[i] = small_int(), v[i] = uniform();
    for (size_t i = 0; i < nq; i++) q[i] = small_int();

    /* The application's OpenCL objects: context and an in-order queue. */
    cl_platform_id platform;
    cl_device_id device;
    if (!pick_device(&platform, &device)) {
        printf("SKIP: no OpenCL platform with a device\n");
        return SKIP;
    }
    char name[256] = "";
    clGetDeviceInfo(device, CL_DEVICE_NAME, sizeof name, name, NULL);
    printf("device: %s\n", name);
    cl_int err;
    cl_context context = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
    CL(err);
    cl_command_queue queue = clCreateCommandQueue(context, device, 0, &err); /* in order: what libfasa needs */
    CL(err);

    /* libfasa inside them (it retains both until fasa_context_destroy). */
    fasa_cl_embed embed = {.context = context, .device = device, .queue = queue};
    char msg[512] = "";
    fasa_context_desc cdesc = {.backend = FASA_BACKEND_OPENCL, .embed = &embed, .error_message = msg,
                               .error_message_size = sizeof msg};
    fasa_context *cl = NULL;
    fasa_status st = fasa_context_create(&cdesc, &cl);
    if (st == FASA_ERROR_BACKEND_UNAVAILABLE || st == FASA_ERROR_UNSUPPORTED) {
        printf("SKIP: %s: %s\n", fasa_status_string(st), msg);
        return SKIP;
    }
    if (st != FASA_OK) {
        fprintf(stderr, "FAIL: fasa_context_create: %s: %s\n", fasa_status_string(st), msg);
        return 1;
    }
    fasa_kv_cache *cache = make_cache(cl, &shape); /* blocking: finishes the queue */

    /* The application's buffers: k and v, and one buffer holding q followed
     * by an output per layer. */
    cl_mem kmem = clCreateBuffer(context, CL_MEM_READ_WRITE, kv_bytes, NULL, &err);
    CL(err);
    cl_mem vmem = clCreateBuffer(context, CL_MEM_READ_WRITE, kv_bytes, NULL, &err);
    CL(err);
    cl_mem io = clCreateBuffer(context, CL_MEM_READ_WRITE, (1 + N_LAYERS) * q_bytes, NULL, &err);
    CL(err);
    fasa_buffer *fk = NULL, *fv = NULL, *fq = NULL, *fo = NULL;
    fasa_ok(cl, fasa_cl_buffer_wrap(cl, kmem, 0, kv_bytes, &fk), "wrap k");
    fasa_ok(cl, fasa_cl_buffer_wrap(cl, vmem, 0, kv_bytes, &fv), "wrap v");
    fasa_ok(cl, fasa_cl_buffer_wrap(cl, io, 0, q_bytes, &fq), "wrap q");
    fasa_ok(cl, fasa_cl_buffer_wrap(cl, io, q_bytes, N_LAYERS * q_bytes, &fo), "wrap o");

    /* Prefill and one decode step, all enqueued on the application's queue. */
    CL(clEnqueueWriteBuffer(queue, kmem, CL_FALSE, 0, kv_bytes, k, 0, NULL, NULL));
    CL(clEnqueueWriteBuffer(queue, vmem, CL_FALSE, 0, kv_bytes, v, 0, NULL, NULL));
    CL(clEnqueueWriteBuffer(queue, io, CL_FALSE, 0, q_bytes, q, 0, NULL, NULL));
    fasa_decode_desc step = {.mode = FASA_MODE_FASA, .n_fac = N_FAC, .n_sink = 4, .n_recent = 28};
    for (uint32_t l = 0; l < N_LAYERS; l++) {
        fasa_ok(cl, fasa_cl_enqueue_append(cache, l, PROMPT, fk, 0, fv, 0, FASA_DTYPE_F32), "enqueue prefill");
        fasa_ok(cl, fasa_cl_enqueue_append(cache, l, 1, fk, PROMPT * row * 4, fv, PROMPT * row * 4, FASA_DTYPE_F32),
                "enqueue append");
        fasa_ok(cl, fasa_cl_enqueue_decode(cache, l, &step, fq, 0, fo, l * q_bytes), "enqueue decode");
    }
    float *o_cl = malloc(N_LAYERS * q_bytes);
    CL(clEnqueueReadBuffer(queue, io, CL_TRUE, q_bytes, N_LAYERS * q_bytes, o_cl, 0, NULL, NULL)); /* waits */

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
            double diff = fabs((double)o_cl[l * nq + i] - o_cpu[l * nq + i]);
            if (diff > max_diff || isnan(diff)) max_diff = diff; /* a NaN sticks */
        }
        printf("layer %u (%s): max |o_opencl - o_cpu| = %.3g (tolerance %.0e)\n", l, l == 0 ? "dense" : "FASA",
               max_diff, TOLERANCE);
        if (!(max_diff <= TOLERANCE)) failed = 1;
    }

    fasa_buffer_destroy(fk), fasa_buffer_destroy(fv), fasa_buffer_destroy(fq), fasa_buffer_destroy(fo);
    fasa_kv_cache_destroy(cache);
    fasa_context_destroy(cl);
    fasa_kv_cache_destroy(cpu_cache);
    fasa_context_destroy(cpu);
    clReleaseMemObject(kmem), clReleaseMemObject(vmem), clReleaseMemObject(io);
    clReleaseCommandQueue(queue);
    clReleaseContext(context);
    free(k), free(v), free(q), free(o_cl), free(o_cpu);
    printf("opencl_host: %s\n", failed ? "FAILED" : "ok");
    return failed;
}
