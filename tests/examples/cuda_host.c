/*
 * cuda_host.c: a CUDA engine that embeds libfasa.
 *
 * The application owns the CUDA stream and the device memory holding k, v, q
 * and o (cudaMalloc).  libfasa runs on that stream (fasa_cuda_embed), wraps
 * the application's device pointers and only *enqueues* its kernels: work
 * the application put on the stream before (its uploads, in an engine the
 * kernels producing q, k, v) is seen by libfasa, and work put on the stream
 * after (the copy of o back) sees libfasa's results.  The enqueue calls
 * never synchronise, so they may also be captured into a CUDA graph.
 *
 * The check: the outputs of both layers (layer 0 dense by default, layer 1
 * FASA) equal a CPU-backend decode of the same data within a max abs
 * difference of 1e-4.
 *
 * Build against an installed libfasa (the application links its own CUDA
 * runtime; libfasa carries a private static copy):
 *   cc cuda_host.c $(pkg-config --cflags --libs fasa) -I$CUDA/include -L$CUDA/lib64 -lcudart -lm -o cuda_host
 * Exit status: 0 = pass, 1 = failure, 77 = skipped (no CUDA device, or
 * libfasa built without CUDA).
 */
#include <fasa_cuda.h>

#include <cuda_runtime_api.h>
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

#define CU(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "FAIL: %s: %s (line %d)\n", #call, cudaGetErrorString(e_), __LINE__);  \
            exit(1);                                                                               \
        }                                                                                          \
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

int main(void)
{
    if (!fasa_backend_compiled(FASA_BACKEND_CUDA)) {
        printf("SKIP: this libfasa was built without the CUDA backend\n");
        return SKIP;
    }
    int n_devices = 0;
    cudaError_t ce = cudaGetDeviceCount(&n_devices);
    if (ce != cudaSuccess || n_devices == 0) {
        printf("SKIP: no CUDA device (%s)\n", ce != cudaSuccess ? cudaGetErrorString(ce) : "0 devices");
        return SKIP;
    }
    const uint32_t L = PROMPT + 1;
    const size_t row = (size_t)HKV * D, nq = (size_t)HQ * D, q_bytes = nq * 4, kv_bytes = L * row * 4;
    fasa_model_shape shape = {.n_layers = N_LAYERS, .n_q_heads = HQ, .n_kv_heads = HKV, .head_dim = D,
                              .layout = FASA_ROPE_NORM};

    float *k = malloc(kv_bytes), *v = malloc(kv_bytes), *q = malloc(q_bytes);
    for (size_t i = 0; i < L * row; i++) k[i] = small_int(), v[i] = uniform();
    for (size_t i = 0; i < nq; i++) q[i] = small_int();

    /* The application's device, stream and memory. */
    const int device = 0;
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, device));
    printf("device: %s\n", prop.name);
    CU(cudaSetDevice(device));
    cudaStream_t stream;
    CU(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    float *dk, *dv, *dq, *d_o;
    CU(cudaMalloc((void **)&dk, kv_bytes));
    CU(cudaMalloc((void **)&dv, kv_bytes));
    CU(cudaMalloc((void **)&dq, q_bytes));
    CU(cudaMalloc((void **)&d_o, N_LAYERS * q_bytes)); /* one output per layer */

    /* libfasa on the application's stream. */
    fasa_cuda_embed embed = {.device = device, .stream = (void *)stream};
    char msg[512] = "";
    fasa_context_desc cdesc = {.backend = FASA_BACKEND_CUDA, .embed = &embed, .error_message = msg,
                               .error_message_size = sizeof msg};
    fasa_context *cu = NULL;
    fasa_status st = fasa_context_create(&cdesc, &cu);
    if (st == FASA_ERROR_BACKEND_UNAVAILABLE || st == FASA_ERROR_UNSUPPORTED) {
        printf("SKIP: %s: %s\n", fasa_status_string(st), msg);
        return SKIP;
    }
    if (st != FASA_OK) {
        fprintf(stderr, "FAIL: fasa_context_create: %s: %s\n", fasa_status_string(st), msg);
        return 1;
    }
    fasa_kv_cache *cache = make_cache(cu, &shape);
    fasa_buffer *fk = NULL, *fv = NULL, *fq = NULL, *fo = NULL; /* wrappers; the memory stays the application's */
    fasa_ok(cu, fasa_cuda_buffer_wrap(cu, dk, kv_bytes, &fk), "wrap k");
    fasa_ok(cu, fasa_cuda_buffer_wrap(cu, dv, kv_bytes, &fv), "wrap v");
    fasa_ok(cu, fasa_cuda_buffer_wrap(cu, dq, q_bytes, &fq), "wrap q");
    fasa_ok(cu, fasa_cuda_buffer_wrap(cu, d_o, N_LAYERS * q_bytes, &fo), "wrap o");

    /* Everything in stream order: uploads, prefill, one decode step, read-back. */
    CU(cudaMemcpyAsync(dk, k, kv_bytes, cudaMemcpyHostToDevice, stream));
    CU(cudaMemcpyAsync(dv, v, kv_bytes, cudaMemcpyHostToDevice, stream));
    CU(cudaMemcpyAsync(dq, q, q_bytes, cudaMemcpyHostToDevice, stream));
    fasa_decode_desc step = {.mode = FASA_MODE_FASA, .n_fac = N_FAC, .n_sink = 4, .n_recent = 28};
    for (uint32_t l = 0; l < N_LAYERS; l++) {
        fasa_ok(cu, fasa_cuda_enqueue_append(cache, l, PROMPT, fk, 0, fv, 0, FASA_DTYPE_F32), "enqueue prefill");
        fasa_ok(cu, fasa_cuda_enqueue_append(cache, l, 1, fk, PROMPT * row * 4, fv, PROMPT * row * 4, FASA_DTYPE_F32),
                "enqueue append");
        fasa_ok(cu, fasa_cuda_enqueue_decode(cache, l, &step, fq, 0, fo, l * q_bytes), "enqueue decode");
    }
    float *o_cuda = malloc(N_LAYERS * q_bytes);
    CU(cudaMemcpyAsync(o_cuda, d_o, N_LAYERS * q_bytes, cudaMemcpyDeviceToHost, stream));
    CU(cudaStreamSynchronize(stream));

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
            double diff = fabs((double)o_cuda[l * nq + i] - o_cpu[l * nq + i]);
            if (diff > max_diff || isnan(diff)) max_diff = diff; /* a NaN sticks */
        }
        printf("layer %u (%s): max |o_cuda - o_cpu| = %.3g (tolerance %.0e)\n", l, l == 0 ? "dense" : "FASA",
               max_diff, TOLERANCE);
        if (!(max_diff <= TOLERANCE)) failed = 1;
    }

    /* libfasa's objects first; the stream and memory are the application's. */
    fasa_buffer_destroy(fk), fasa_buffer_destroy(fv), fasa_buffer_destroy(fq), fasa_buffer_destroy(fo);
    fasa_kv_cache_destroy(cache);
    fasa_context_destroy(cu);
    fasa_kv_cache_destroy(cpu_cache);
    fasa_context_destroy(cpu);
    cudaFree(dk), cudaFree(dv), cudaFree(dq), cudaFree(d_o);
    cudaStreamDestroy(stream);
    free(k), free(v), free(q), free(o_cuda), free(o_cpu);
    printf("cuda_host: %s\n", failed ? "FAILED" : "ok");
    return failed;
}
