/* Exact top-k on the Vulkan backend at lengths up to 1M tokens, k up to
 * 8192, on distinct, tie-heavy and constant scores, with the cache split
 * into many small chunks (chunk limit forced to 64 KiB) and read back
 * through the staging path.
 *
 * The oracle mode with q = e0 makes the score of token j exactly k_j[0]
 * (fp32 storage), so the expected set is known on the host: the k largest
 * values, ties to the lowest index.  Every selection is compared with that
 * host reference and with the CPU backend; the forced sink/recent tokens and
 * the per-group rows (score = k_j[0] + k_j[1]) are checked too.
 *
 * usage: test_vk_topk [L_MAX]   (default 1048587 = 2^20 + 11) */
#include "vt_common.h"

#include <string.h>

void fasa__vk_test_set_chunk_limit(fasa_context *ctx, uint64_t bytes);
void fasa__vk_test_force_staging(fasa_context *ctx, bool on);

#define D 8u

typedef struct ctx_pair {
    fasa_context *vk, *cpu;
    fasa_kv_cache *vc, *cc;
    uint32_t L;
    float *x0, *x1;     /* k_j[0], k_j[1] of every token */
} ctx_pair;

static const char *pattern_name[] = {"distinct", "ties", "constant"};

static float value(int pattern, uint32_t j, vt_rng *r, const uint32_t *perm)
{
    if (pattern == 0) return (float)perm[j] - 500000.0f;
    if (pattern == 1) return (float)(perm[j] / 16u) - 30000.0f;
    (void)r;
    return 1.0f;
}

static void append_to(ctx_pair *p, uint32_t L, int pattern, vt_rng *r, const uint32_t *perm)
{
    const uint32_t chunk = 8192;
    float *k = malloc((size_t)chunk * D * 4), *v = malloc((size_t)chunk * D * 4);
    while (p->L < L) {
        uint32_t n = L - p->L < chunk ? L - p->L : chunk;
        for (uint32_t t = 0; t < n; t++) {
            uint32_t j = p->L + t;
            for (uint32_t c = 0; c < D; c++) {
                k[t * D + c] = c == 0 ? value(pattern, j, r, perm) : c == 1 ? (float)vt_int(r, -4, 4) : vt_normal(r);
                v[t * D + c] = vt_normal(r);
            }
            p->x0[j] = k[t * D];
            p->x1[j] = k[t * D + 1];
        }
        VT_OK(p->vk, fasa_kv_cache_append(p->vc, 0, n, k, v, FASA_DTYPE_F32));
        VT_OK(p->cpu, fasa_kv_cache_append(p->cc, 0, n, k, v, FASA_DTYPE_F32));
        p->L += n;
    }
    free(k), free(v);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static const float *g_keys;
static int cmp_rank(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (g_keys[x] != g_keys[y]) return g_keys[x] > g_keys[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* Host reference: forced tokens, then the top-(k - forced) of the window by
 * (score desc, index asc); written sorted ascending. */
static void reference(const float *s, uint32_t L, uint32_t n_fac, uint32_t n_sink, uint32_t n_recent, int32_t *out)
{
    uint32_t lo = n_sink, hi = L - n_recent, w = 0;
    for (uint32_t j = 0; j < n_sink; j++) out[w++] = (int32_t)j;
    for (uint32_t j = hi; j < L; j++) out[w++] = (int32_t)j;
    uint32_t n = hi - lo, *idx = malloc((size_t)n * 4);
    for (uint32_t i = 0; i < n; i++) idx[i] = lo + i;
    g_keys = s;
    qsort(idx, n, 4, cmp_rank);
    for (uint32_t i = 0; w < n_fac; i++) out[w++] = (int32_t)idx[i];
    free(idx);
    qsort(out, n_fac, 4, cmp_i32);
}

static void check(ctx_pair *p, int pattern, uint32_t n_fac, uint32_t n_sink, uint32_t n_recent, bool group)
{
    fasa_decode_desc d = {.mode = FASA_MODE_ORACLE, .n_fac = n_fac, .n_sink = n_sink, .n_recent = n_recent, .gqa_select = group ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD};
    uint32_t rows = group ? 1 : 2;
    float q[2 * D] = {0}, o[2 * D];
    q[0] = 1.0f;          /* head 0: score = k[0] */
    q[D + 1] = 1.0f;      /* head 1: score = k[1] (ties galore); the group sums both */
    int32_t *sv = malloc((size_t)rows * n_fac * 4), *sc = malloc((size_t)rows * n_fac * 4), *ref = malloc((size_t)n_fac * 4);
    fasa_decode_outputs ov = {0}, oc = {0};
    ov.selected = sv, ov.selected_stride = n_fac;
    oc.selected = sc, oc.selected_stride = n_fac;
    VT_OK(p->vk, fasa_decode_host(p->vc, 0, &d, q, o, &ov));
    VT_OK(p->cpu, fasa_decode_host(p->cc, 0, &d, q, o, &oc));
    float *s = malloc((size_t)p->L * 4);
    for (uint32_t r = 0; r < rows; r++) {
        for (uint32_t j = 0; j < p->L; j++)
            s[j] = group ? p->x0[j] + p->x1[j] : r == 0 ? p->x0[j] : p->x1[j];
        reference(s, p->L, n_fac, n_sink, n_recent, ref);
        int32_t *a = sv + (size_t)r * n_fac, *b = sc + (size_t)r * n_fac;
        uint32_t forced = n_sink + n_recent;
        for (uint32_t i = 0; i < forced; i++)
            VT_CHECK(a[i] == (int32_t)(i < n_sink ? i : p->L - n_recent + i - n_sink),
                     "%s L=%u k=%u row %u: forced token %u is %d", pattern_name[pattern], p->L, n_fac, r, i, a[i]);
        qsort(a, n_fac, 4, cmp_i32);
        qsort(b, n_fac, 4, cmp_i32);
        VT_CHECK(memcmp(a, ref, (size_t)n_fac * 4) == 0, "%s L=%u k=%u sink=%u recent=%u %s row %u: vulkan set differs from the host reference",
                 pattern_name[pattern], p->L, n_fac, n_sink, n_recent, group ? "group" : "head", r);
        VT_CHECK(memcmp(b, ref, (size_t)n_fac * 4) == 0, "%s L=%u k=%u row %u: cpu set differs from the host reference",
                 pattern_name[pattern], p->L, n_fac, r);
    }
    free(s), free(sv), free(sc), free(ref);
}

int main(int argc, char **argv)
{
    uint32_t L_max = argc > 1 ? (uint32_t)atoi(argv[1]) : (1u << 20) + 11;
    vt_require_vulkan();
    ctx_pair p;
    memset(&p, 0, sizeof p);
    p.vk = vt_context(FASA_BACKEND_VULKAN, 0);
    p.cpu = vt_context(FASA_BACKEND_CPU, 0);
    fasa__vk_test_set_chunk_limit(p.vk, 64u << 10); /* thousands of chunks */
    fasa__vk_test_force_staging(p.vk, true);         /* read-backs through the staging buffer */
    fasa_model_shape s = {1, 2, 1, D, FASA_ROPE_NORM};
    fasa_kv_cache_desc cd = {0};
    cd.shape = s;
    cd.capacity = L_max;
    cd.dtype = FASA_DTYPE_F32;
    cd.flags = FASA_CACHE_NO_DENSE_LAYERS;
    cd.max_n_fac = 8192;
    VT_OK(p.vk, fasa_kv_cache_create(p.vk, &cd, &p.vc));
    VT_OK(p.cpu, fasa_kv_cache_create(p.cpu, &cd, &p.cc));
    if (!p.vc || !p.cc) return 1;
    p.x0 = malloc((size_t)L_max * 4);
    p.x1 = malloc((size_t)L_max * 4);
    uint32_t *perm = malloc((size_t)L_max * 4);
    vt_rng r = {0x70c4};
    printf("seed 0x70c4, L_max %u, chunk limit 64 KiB, staged read-backs\n", L_max);
    for (uint32_t i = 0; i < L_max; i++) perm[i] = i;
    for (uint32_t i = L_max - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(vt_next(&r) % (i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    const uint32_t lengths[] = {4096 + 11, 65536, 65536 + 11, 1u << 20, (1u << 20) + 11};
    const uint32_t ks[] = {1, 7, 100, 256, 1023, 1024, 1025, 2047, 2048, 4096, 8192};
    for (int pattern = 0; pattern < 3; pattern++) {
        VT_OK(p.vk, fasa_kv_cache_truncate(p.vc, 0));
        VT_OK(p.cpu, fasa_kv_cache_truncate(p.cc, 0));
        p.L = 0;
        for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
            if (lengths[li] > L_max) continue;
            append_to(&p, lengths[li], pattern, &r, perm);
            bool huge = p.L >= (1u << 20);
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                uint32_t k = ks[ki];
                if (k >= p.L || (huge && k != 1 && k != 1025 && k != 8192)) continue;
                check(&p, pattern, k, 0, 0, false);
                if (k >= 100 && !huge) check(&p, pattern, k, 3, 40, false);
                if (k == 1025 || k == 7) check(&p, pattern, k, 0, 0, true);
            }
            printf("  %-8s L=%u checked, %d failures\n", pattern_name[pattern], p.L, vt_failures);
            fflush(stdout);
        }
    }
    fasa_memory_report mr;
    fasa_kv_cache_memory(p.vc, &mr);
    printf("vulkan cache: %llu device bytes, %llu scratch bytes\n", (unsigned long long)mr.device_bytes,
           (unsigned long long)mr.scratch_bytes);
    fasa_kv_cache_destroy(p.vc);
    fasa_kv_cache_destroy(p.cc);
    fasa_context_destroy(p.vk);
    fasa_context_destroy(p.cpu);
    free(p.x0), free(p.x1), free(perm);
    return vt_finish("test_vk_topk");
}
