/* FASA step vs dense step on the Vulkan backend, timed with GPU timestamps
 * (FASA_CONTEXT_PROFILE + fasa_context_last_step_ns).
 *
 * usage: bench_vk [L [reps [min_ratio]]]
 * Shape: Hq 32, Hkv 8, d 128, fp16 storage, N_tip 16 (dims shared per KV
 * group, so u = 32), N_fac 256, per-head selection.  Prints the median step
 * times; exits 1 when min_ratio > 0 and dense/FASA is below it. */
#include "vt_common.h"

#include <string.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t step_ns(fasa_context *ctx, fasa_kv_cache *c, const fasa_decode_desc *d, const float *q, float *o)
{
    uint64_t t = 0;
    VT_OK(ctx, fasa_decode_host(c, 0, d, q, o, NULL));
    VT_OK(ctx, fasa_context_last_step_ns(ctx, &t));
    return t;
}

/* Median times of the three steps, measured interleaved so that all of them
 * see the same machine load. */
static void median_steps(fasa_context *ctx, fasa_kv_cache *c, const fasa_decode_desc *d, const float *q, float *o,
                         int reps, uint64_t *med)
{
    uint64_t t[3][64];
    if (reps > 64) reps = 64;
    for (int k = 0; k < 3; k++) step_ns(ctx, c, &d[k], q, o); /* warm-up */
    for (int i = 0; i < reps; i++)
        for (int k = 0; k < 3; k++) t[k][i] = step_ns(ctx, c, &d[k], q, o);
    for (int k = 0; k < 3; k++) {
        qsort(t[k], (size_t)reps, sizeof t[k][0], cmp_u64);
        med[k] = t[k][reps / 2];
    }
}

int main(int argc, char **argv)
{
    uint32_t L = argc > 1 ? (uint32_t)atoi(argv[1]) : 65536;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    double min_ratio = argc > 3 ? atof(argv[3]) : 0;
    vt_require_vulkan();
    fasa_context *ctx = vt_context(FASA_BACKEND_VULKAN, FASA_CONTEXT_PROFILE);
    fasa_device_info dev;
    fasa_context_device(ctx, &dev);
    fasa_model_shape s = {1, 32, 8, 128, FASA_ROPE_NORM};
    fasa_calibration *cal = vt_calibration(ctx, &s, 16, true, 42);
    fasa_kv_cache_desc cd = {0};
    cd.shape = s;
    cd.capacity = L;
    cd.dtype = FASA_DTYPE_F16;
    cd.calibration = cal;
    cd.flags = FASA_CACHE_NO_DENSE_LAYERS;
    fasa_kv_cache *c = NULL;
    VT_OK(ctx, fasa_kv_cache_create(ctx, &cd, &c));
    if (!c) return 1;
    vt_rng r = {7};
    uint32_t row = s.n_kv_heads * s.head_dim, chunk = 4096;
    float *k = malloc((size_t)chunk * row * 4), *v = malloc((size_t)chunk * row * 4);
    for (uint32_t done = 0; done < L; done += chunk) {
        uint32_t n = L - done < chunk ? L - done : chunk;
        for (size_t i = 0; i < (size_t)n * row; i++) k[i] = vt_normal(&r), v[i] = vt_normal(&r);
        VT_OK(ctx, fasa_kv_cache_append(c, 0, n, k, v, FASA_DTYPE_F32));
    }
    float *q = malloc((size_t)s.n_q_heads * s.head_dim * 4), *o = malloc((size_t)s.n_q_heads * s.head_dim * 4);
    for (uint32_t i = 0; i < s.n_q_heads * s.head_dim; i++) q[i] = vt_normal(&r);
    fasa_decode_desc d[3] = {{.mode = FASA_MODE_FASA, .n_fac = 256, .n_sink = 0, .n_recent = 0, .gqa_select = FASA_GQA_PER_HEAD},
                             {.mode = FASA_MODE_FASA, .n_fac = 256, .n_sink = 0, .n_recent = 0, .gqa_select = FASA_GQA_PER_GROUP},
                             {.mode = FASA_MODE_DENSE, .n_fac = 256, .n_sink = 0, .n_recent = 0, .gqa_select = FASA_GQA_PER_HEAD}};
    uint64_t med[3];
    median_steps(ctx, c, d, q, o, reps, med);
    uint64_t tf = med[0], tg = med[1], td = med[2];
    double ratio = (double)td / (double)tf;
    printf("device: %s (%s)\n", dev.name, dev.driver);
    printf("L=%u Hq=32 Hkv=8 d=128 fp16 N_tip=16 (u=32) N_fac=256, median of %d interleaved runs\n", L, reps);
    printf("fasa step (per head):  %10.3f ms\n", tf / 1e6);
    printf("fasa step (per group): %10.3f ms\n", tg / 1e6);
    printf("dense step:            %10.3f ms\n", td / 1e6);
    printf("dense / fasa = %.2f\n", ratio);
    VT_CHECK(min_ratio <= 0 || ratio >= min_ratio, "dense/fasa %.2f is below %.2f", ratio, min_ratio);
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
    free(k), free(v), free(q), free(o);
    return vt_finish("bench_vk");
}
