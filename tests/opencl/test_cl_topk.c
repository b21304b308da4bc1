/*
 * Exact top-k at scale through the public API (GPU_NOTES §5 tests): with
 * d = 2, one frequency chunk and q = (+1, 0) / (-1, 0), the TIP score of
 * token j is exactly +K[j][0] / -K[j][0], so the scores are chosen directly.
 * L in {2^10, 2^10+11, 2^16, 2^16+11, 2^20, 2^20+11}, k (= n_fac) in
 * {1, 7, 100, 256, 1023, 1024, 1025, 2047, 2048, 4096, 8191, 8192}, score
 * distributions: distinct (a shuffled permutation), ties (integers in
 * 0..49), constant, and specials (NaN, +-Inf, -0.0, +0.0 mixed into ties,
 * written through device buffers, which are not scanned).  Forced sink and
 * recent tokens at the largest L.  The selection must equal the CPU
 * backend's index for index (forced first, then ascending), and for
 * L <= 65547 also an independent sort-based reference.
 * Everything runs twice: with the device's tunables and with the GPU preset
 * (wide groups, local atomics, scan-ordered compaction).
 * Seeds are fixed and printed.  Exit 77 when there is no OpenCL device.
 */
#include "cl_test.h"
#include "opencl/cl_internal.h"

#define MAX_K 8192u

typedef enum dist { DISTINCT, TIES, CONSTANT, SPECIALS, N_DIST } dist;
static const char *dist_name[] = {"distinct", "ties", "constant", "specials"};

static uint32_t key_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0;
    if (u == 0x80000000u) u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static const float *g_scores;
static int by_rank(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    uint32_t ki = key_of(g_scores[i]), kj = key_of(g_scores[j]);
    if (ki != kj) return ki > kj ? -1 : 1;
    return i < j ? -1 : 1;
}

/* Independent reference: sort by (key desc, index asc), take k, ascending. */
static void reference(const float *s, uint32_t L, uint32_t k, int32_t *out)
{
    uint32_t *idx = malloc(L * sizeof *idx);
    for (uint32_t j = 0; j < L; j++) idx[j] = j;
    g_scores = s;
    qsort(idx, L, sizeof *idx, by_rank);
    for (uint32_t i = 0; i < k; i++) out[i] = (int32_t)idx[i];
    qsort(out, k, sizeof *out, t_cmp_i32);
    free(idx);
}

static void fill(dist d, uint64_t *seed, float *k0, uint32_t L)
{
    for (uint32_t j = 0; j < L; j++) {
        switch (d) {
        case DISTINCT: k0[j] = (float)j - (float)(L / 2); break;
        case TIES: k0[j] = (float)(t_rand(seed) % 50); break;
        case CONSTANT: k0[j] = 3.0f; break;
        case SPECIALS: {
            uint64_t r = t_rand(seed) % 100;
            uint32_t bits = r == 0 ? 0x7fc00000u : r == 1 ? 0x7f800000u : r == 2 ? 0xff800000u
                          : r < 6 ? 0x80000000u : 0u;
            if (r >= 10) k0[j] = (float)(t_rand(seed) % 20) - 10.0f;
            else memcpy(&k0[j], &bits, 4);
            break;
        }
        default: break;
        }
    }
    if (d == DISTINCT) /* shuffle the permutation */
        for (uint32_t j = L - 1; j > 0; j--) {
            uint32_t i = (uint32_t)(t_rand(seed) % (j + 1));
            float t = k0[i]; k0[i] = k0[j]; k0[j] = t;
        }
}

int main(void)
{
    int32_t dev = t_cl_device("test_cl_topk");
    fasa_context *ctx[2] = {t_context(FASA_BACKEND_CPU, 0, 0, NULL), t_context(FASA_BACKEND_OPENCL, dev, 0, NULL)};
    const uint32_t Ls[] = {1u << 10, (1u << 10) + 11, 1u << 16, (1u << 16) + 11, 1u << 20, (1u << 20) + 11};
    const uint32_t Ks[] = {1, 7, 100, 256, 1023, 1024, 1025, 2047, 2048, 4096, 8191, 8192};
    const uint32_t cap = (1u << 20) + 11;
    fasa_model_shape shape = {1, 2, 1, 2, FASA_ROPE_NORM};
    uint16_t dims[4] = {0, 1, 0, 1};
    fasa_calibration_desc cd = {.shape = shape, .n_tip = 1, .dims = dims};
    fasa_kv_cache *cache[2];
    fasa_buffer *kb[2], *vb[2];
    fasa_calibration *cal[2];
    float *kv = calloc((size_t)cap * 2, sizeof(float)), *zero = calloc((size_t)cap * 2, sizeof(float));
    for (int b = 0; b < 2; b++) {
        T_STATUS(ctx[b], fasa_calibration_create(ctx[b], &cd, &cal[b]), FASA_OK, NULL);
        fasa_kv_cache_desc kd = {.shape = shape, .capacity = cap, .dtype = FASA_DTYPE_F32, .calibration = cal[b],
                                 .flags = FASA_CACHE_NO_DENSE_LAYERS, .max_n_fac = MAX_K};
        T_STATUS(ctx[b], fasa_kv_cache_create(ctx[b], &kd, &cache[b]), FASA_OK, NULL);
        if (b == 0) { /* CPU backend: wrap host memory */
            T_STATUS(ctx[b], fasa_buffer_wrap_host(ctx[b], kv, (uint64_t)cap * 8, &kb[b]), FASA_OK, NULL);
            T_STATUS(ctx[b], fasa_buffer_wrap_host(ctx[b], zero, (uint64_t)cap * 8, &vb[b]), FASA_OK, NULL);
        } else {
            T_STATUS(ctx[b], fasa_buffer_create(ctx[b], (uint64_t)cap * 8, &kb[b]), FASA_OK, NULL);
            T_STATUS(ctx[b], fasa_buffer_create(ctx[b], (uint64_t)cap * 8, &vb[b]), FASA_OK, NULL);
            T_STATUS(ctx[b], fasa_buffer_write(vb[b], 0, zero, (uint64_t)cap * 8), FASA_OK, NULL);
        }
        if (!cache[b]) return 1;
    }
    float q[4] = {1.0f, 0.0f, -1.0f, 0.0f}, o[4];
    int32_t *sel[2], *ref = malloc(MAX_K * sizeof *ref), *want = malloc(MAX_K * sizeof *want);
    float *k0 = malloc(cap * sizeof *k0), *neg = malloc(cap * sizeof *neg);
    for (int b = 0; b < 2; b++) sel[b] = malloc(2 * (MAX_K + 3) * sizeof(int32_t));
    uint32_t n_cases = 0;
    for (int preset = 0; preset < 2; preset++) {
        if (preset) {
            cl_tuning t;
            fasa__cl_tuning_preset(&t, false, 48 * 1024, 1024, 8);
            T_STATUS(ctx[1], fasa__cl_retune(ctx[1], &t), FASA_OK, NULL);
        }
        uint64_t seed = 1128;
        for (int di = 0; di < N_DIST; di++) {
            printf("  %s scores, seed %llu, %s tunables\n", dist_name[di], (unsigned long long)seed,
                   preset ? "GPU preset" : "device");
            fflush(stdout);
            for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++) {
                uint32_t L = Ls[li];
                fill((dist)di, &seed, k0, L);
                for (uint32_t j = 0; j < L; j++) {
                    kv[2 * j] = k0[j];
                    kv[2 * j + 1] = 0.0f;
                    neg[j] = -k0[j];
                }
                T_STATUS(ctx[1], fasa_buffer_write(kb[1], 0, kv, (uint64_t)L * 8), FASA_OK, NULL);
                for (int b = 0; b < 2; b++) {
                    fasa_kv_cache_truncate(cache[b], 0);
                    T_STATUS(ctx[b], fasa_kv_cache_append_buffers(cache[b], 0, L, kb[b], 0, vb[b], 0, FASA_DTYPE_F32),
                             FASA_OK, NULL);
                }
                for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
                    uint32_t k = Ks[ki];
                    if (k >= L) continue;
                    for (int forced = 0; forced < (L > 1000000 ? 2 : 1); forced++) {
                        fasa_decode_desc dd = {.mode = FASA_MODE_FASA, .n_fac = k};
                        if (forced) {
                            dd.n_sink = k / 4;
                            dd.n_recent = k / 3;
                        }
                        for (int b = 0; b < 2; b++) {
                            fasa_decode_outputs out = {.selected = sel[b], .selected_stride = MAX_K + 3};
                            T_STATUS(ctx[b], fasa_decode_host(cache[b], 0, &dd, q, o, &out), FASA_OK, NULL);
                        }
                        for (uint32_t r = 0; r < 2; r++) {
                            const int32_t *x = sel[0] + r * (MAX_K + 3), *y = sel[1] + r * (MAX_K + 3);
                            bool same = memcmp(x, y, k * sizeof *x) == 0;
                            T_CHECK(same, "%s L %u k %u forced %d row %u: OpenCL selection differs from the cpu (%u shared)",
                                    dist_name[di], L, k, forced, r, t_overlap(x, y, k));
                            if (!forced && L <= 65547 && (ki % 3 == 0 || k == 8192)) {
                                reference(r ? neg : k0, L, k, want);
                                T_CHECK(memcmp(y, want, k * sizeof *y) == 0,
                                        "%s L %u k %u row %u: selection differs from the sort reference", dist_name[di],
                                        L, k, r);
                            }
                        }
                        n_cases++;
                    }
                }
            }
        }
    }
    printf("  %u steps, each compared on 2 rows\n", n_cases);
    for (int b = 0; b < 2; b++) {
        fasa_buffer_destroy(kb[b]);
        fasa_buffer_destroy(vb[b]);
        fasa_kv_cache_destroy(cache[b]);
        fasa_calibration_destroy(cal[b]);
        fasa_context_destroy(ctx[b]);
        free(sel[b]);
    }
    free(kv); free(zero); free(ref); free(want); free(k0); free(neg);
    return t_done("test_cl_topk");
}
