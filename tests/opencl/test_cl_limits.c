/*
 * OpenCL memory requests are checked before anything is created
 * (fasa__cl_check_request): a cache of capacity 2^30 with 1024 KV heads of
 * d 512 (petabytes; PoCL used to assert inside clCreateBuffer or hand out
 * memory that the OOM killer then reclaimed by ending the process), the
 * same in FASA-M placement, one whose size passes 2^64 (4096 layers, f32),
 * a cache just over CL_DEVICE_GLOBAL_MEM_SIZE, a buffer just over
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE but under the global memory, and (through
 * the fasa__cl_set_mem_limits hook) the global-memory and physical-memory
 * limits at small sizes.  Each fails quickly with OUT_OF_DEVICE_MEMORY and
 * a message naming the requested bytes, the limit and its value; the
 * context then still works.
 */
#include "cl_test.h"
#include "opencl/cl_internal.h"

#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* The call fails with OUT_OF_DEVICE_MEMORY within 10 s, and the message
 * names `limit` and contains `number` (a decimal byte count). */
static void expect_oodm(fasa_context *ctx, fasa_status st, double t0, const char *what, const char *limit,
                        const char *number)
{
    double dt = now_s() - t0;
    const char *m = fasa_context_last_error(ctx);
    T_CHECK(st == FASA_ERROR_OUT_OF_DEVICE_MEMORY, "%s: %s (%s)", what, fasa_status_string(st), m);
    T_CHECK(strstr(m, limit) != NULL, "%s: the message should name %s: %s", what, limit, m);
    T_CHECK(!number || strstr(m, number) != NULL, "%s: the message should hold %s: %s", what, number, m);
    T_CHECK(strstr(m, "requests") && strstr(m, "bytes"), "%s: the message should give the request: %s", what, m);
    T_CHECK(dt < 10.0, "%s: took %.1f s", what, dt);
    printf("  %s (%.3f s): %s\n", what, dt, m);
}

static fasa_status make_cache(fasa_context *ctx, fasa_model_shape s, uint32_t cap, fasa_dtype dt, fasa_placement pl,
                              fasa_fetch fetch, uint32_t rows, fasa_kv_cache **out)
{
    fasa_kv_cache_desc kd = {.shape = s, .capacity = cap, .dtype = dt, .placement = pl, .fetch = fetch,
                             .row_cache_rows = rows, .flags = FASA_CACHE_NO_DENSE_LAYERS};
    *out = NULL;
    return fasa_kv_cache_create(ctx, &kd, out);
}

/* A small cache decodes densely: the context is still usable. */
static void still_works(fasa_context *ctx, const char *after)
{
    fasa_model_shape s = {1, 4, 2, 32, FASA_ROPE_NORM};
    fasa_kv_cache *c = NULL;
    T_STATUS(ctx, make_cache(ctx, s, 64, FASA_DTYPE_F32, FASA_PLACEMENT_DEVICE, FASA_FETCH_DIRECT, 0, &c), FASA_OK, NULL);
    if (!c) return;
    float k[8 * 2 * 32], v[8 * 2 * 32], q[4 * 32], o[4 * 32];
    uint64_t seed = 9;
    for (size_t i = 0; i < sizeof k / 4; i++) k[i] = t_uniform(&seed), v[i] = t_uniform(&seed);
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = t_uniform(&seed);
    T_STATUS(ctx, fasa_kv_cache_append(c, 0, 8, k, v, FASA_DTYPE_F32), FASA_OK, NULL);
    fasa_decode_desc dd = {.mode = FASA_MODE_DENSE};
    fasa_status st = fasa_decode_host(c, 0, &dd, q, o, NULL);
    T_CHECK(st == FASA_OK && isfinite(o[0]), "after %s: decode %s", after, fasa_status_string(st));
    fasa_kv_cache_destroy(c);
}

int main(void)
{
    int32_t dev = t_cl_device("test_cl_limits");
    fasa_context *ctx = t_context(FASA_BACKEND_OPENCL, dev, 0, NULL);
    fasa_device_info info;
    fasa_context_device(ctx, &info);
    uint64_t max_alloc = info.max_buffer_size, global = info.heaps[0].size;
    char global_s[32], alloc_s[32];
    snprintf(global_s, sizeof global_s, "%llu", (unsigned long long)global);
    snprintf(alloc_s, sizeof alloc_s, "%llu", (unsigned long long)max_alloc);
    printf("device: max allocation %s bytes, global memory %s bytes\n", alloc_s, global_s);
    fasa_kv_cache *c = NULL;
    double t0;

    /* capacity 2^30 x 1024 KV heads x d 512: 2 PiB of K and V per layer */
    fasa_model_shape huge = {1, 1024, 1024, 512, FASA_ROPE_NORM};
    t0 = now_s();
    fasa_status st = make_cache(ctx, huge, 1u << 30, FASA_DTYPE_F16, FASA_PLACEMENT_DEVICE, FASA_FETCH_DIRECT, 0, &c);
    expect_oodm(ctx, st, t0, "2^30 x 1024 heads x d 512", "CL_DEVICE_GLOBAL_MEM_SIZE", global_s);
    T_CHECK(c == NULL, "a failed create returned a cache");
    t0 = now_s();
    st = make_cache(ctx, huge, 1u << 30, FASA_DTYPE_F16, FASA_PLACEMENT_OFFLOAD, FASA_FETCH_STAGED, 1u << 30, &c);
    expect_oodm(ctx, st, t0, "the same, FASA-M staged with a full row cache",
                info.unified_memory ? "CL_DEVICE_GLOBAL_MEM_SIZE" : "memory", NULL);
    /* 4096 layers in f32: the sum passes 2^64 and must not wrap into a small request */
    fasa_model_shape wraps = {4096, 1024, 1024, 512, FASA_ROPE_NORM};
    t0 = now_s();
    st = make_cache(ctx, wraps, 1u << 30, FASA_DTYPE_F32, FASA_PLACEMENT_DEVICE, FASA_FETCH_DIRECT, 0, &c);
    expect_oodm(ctx, st, t0, "4096 layers, f32 (more than 2^64 bytes)", "CL_DEVICE_GLOBAL_MEM_SIZE",
                "at least 18446744073709551615 bytes");

    /* K and V alone just over the global memory (8 KiB per token) */
    fasa_model_shape mid = {1, 8, 8, 128, FASA_ROPE_NORM};
    uint64_t cap = global / 8192 + 1;
    if (cap <= (1u << 30)) {
        t0 = now_s();
        st = make_cache(ctx, mid, (uint32_t)cap, FASA_DTYPE_F32, FASA_PLACEMENT_DEVICE, FASA_FETCH_DIRECT, 0, &c);
        expect_oodm(ctx, st, t0, "K and V just over the global memory", "CL_DEVICE_GLOBAL_MEM_SIZE", global_s);
    }

    /* a buffer one byte over the largest allocation, under the global memory */
    fasa_buffer *b = NULL;
    if (max_alloc < global) {
        t0 = now_s();
        st = fasa_buffer_create(ctx, max_alloc + 1, &b);
        expect_oodm(ctx, st, t0, "buffer of CL_DEVICE_MAX_MEM_ALLOC_SIZE + 1", "CL_DEVICE_MAX_MEM_ALLOC_SIZE", alloc_s);
        T_CHECK(b == NULL, "a failed buffer create returned a buffer");
    } else {
        printf("  (max allocation = global memory here: the just-over-max-alloc buffer case is skipped)\n");
    }
    t0 = now_s();
    st = fasa_buffer_create(ctx, UINT64_MAX, &b);
    expect_oodm(ctx, st, t0, "buffer of 2^64 - 1 bytes", "CL_DEVICE_MAX_MEM_ALLOC_SIZE", alloc_s);

    /* the limits at small sizes: a 100 MiB cache against 64 MiB */
    uint32_t small_cap = 12800; /* 100 MiB of K and V */
    fasa__cl_set_mem_limits(ctx, 64u << 20, 0);
    t0 = now_s();
    st = make_cache(ctx, mid, small_cap, FASA_DTYPE_F32, FASA_PLACEMENT_DEVICE, FASA_FETCH_DIRECT, 0, &c);
    expect_oodm(ctx, st, t0, "100 MiB against 64 MiB of global memory", "CL_DEVICE_GLOBAL_MEM_SIZE", "67108864");
    fasa__cl_set_mem_limits(ctx, 0, 64u << 20);
    t0 = now_s();
    st = make_cache(ctx, mid, small_cap, FASA_DTYPE_F32, FASA_PLACEMENT_OFFLOAD, FASA_FETCH_DIRECT, 0, &c);
    if (info.type == FASA_DEVICE_CPU || !info.unified_memory)
        expect_oodm(ctx, st, t0, "100 MiB FASA-M against 64 MiB of physical memory", "physical memory", "67108864");
    else
        fasa_kv_cache_destroy(c); /* an integrated GPU keeps it in device memory */
    fasa__cl_set_mem_limits(ctx, 0, 0);
    still_works(ctx, "the refused requests");
    /* with the real limits the 100 MiB cache is created */
    T_STATUS(ctx, make_cache(ctx, mid, small_cap, FASA_DTYPE_F32, FASA_PLACEMENT_DEVICE, FASA_FETCH_DIRECT, 0, &c),
             FASA_OK, NULL);
    fasa_kv_cache_destroy(c);
    fasa_context_destroy(ctx);
    return t_done("test_cl_limits");
}
