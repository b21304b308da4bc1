/* The FASA-M row cache policy (src/rowcache.c): hits, victim order (free
 * slots, then oldest, ties to the lower slot), truncation; and the
 * transfer statistics an offloaded cache reports on the CPU backend. */
#include "check.h"
#include "internal.h"

#include <math.h>
#include <string.h>

static void test_policy(fasa_context *ctx)
{
    fasa_rowcache *rc = fasa__rowcache_create(ctx, 4, 100);
    int32_t slots[4];
    const int32_t a[] = {5, 9, 20};
    CHECK(fasa__rowcache_step(rc, a, 3, 1, slots) == 0 && slots[0] == 0 && slots[1] == 1 && slots[2] == 2,
          "cold step: free slots in order");
    const int32_t b[] = {9, 30};
    CHECK(fasa__rowcache_step(rc, b, 2, 2, slots) == 1 && slots[0] == 1 && slots[1] == 3, "free slot before eviction");
    const int32_t c[] = {9, 40, 41};
    /* not needed now: slot 0 (token 5, step 1), 2 (token 20, step 1), 3 (token 30, step 2): oldest first, lower slot */
    CHECK(fasa__rowcache_step(rc, c, 3, 3, slots) == 1 && slots[1] == 0 && slots[2] == 2, "LRU victims, ties to lower slot");
    const int32_t d[] = {5};
    CHECK(fasa__rowcache_step(rc, d, 1, 4, slots) == 0 && slots[0] == 3, "evicted token misses; oldest victim reused");
    fasa__rowcache_truncate(rc, 35);
    const int32_t e[] = {9, 40};
    CHECK(fasa__rowcache_step(rc, e, 2, 5, NULL) == 1, "truncation forgets rows past the length");
    fasa__rowcache_destroy(ctx, rc);
}

static void test_stats(fasa_context *ctx)
{
    enum { HQ = 4, HKV = 2, D = 64, L = 500 };
    static float k[L * HKV * D], v[L * HKV * D];
    float q[HQ * D], o[HQ * D];
    for (int i = 0; i < L * HKV * D; i++) {
        k[i] = sinf(0.3f * (float)i);
        v[i] = cosf(0.7f * (float)i);
    }
    for (int i = 0; i < HQ * D; i++) q[i] = sinf((float)i);
    uint16_t dims[HQ * 8];
    for (int h = 0; h < HQ; h++)
        for (int i = 0; i < 8; i++) dims[h * 8 + i] = (uint16_t)(16 + i);
    fasa_model_shape shape = {1, HQ, HKV, D, FASA_ROPE_NORM};
    fasa_calibration_desc cd = {.shape = shape, .n_tip = 4, .dims = dims};
    fasa_calibration *cal = NULL;
    fasa_calibration_create(ctx, &cd, &cal);
    fasa_kv_cache_desc direct = {.shape = shape, .capacity = L, .calibration = cal, .flags = FASA_CACHE_NO_DENSE_LAYERS,
                                 .placement = FASA_PLACEMENT_OFFLOAD};
    fasa_kv_cache_desc staged = direct;
    staged.fetch = FASA_FETCH_STAGED;
    staged.row_cache_rows = 2 * 64;
    fasa_kv_cache *cd_ = NULL, *cs = NULL;
    CHECK(fasa_kv_cache_create(ctx, &direct, &cd_) == FASA_OK && fasa_kv_cache_create(ctx, &staged, &cs) == FASA_OK,
          "offloaded caches");
    fasa_kv_cache_append(cd_, 0, L, k, v, FASA_DTYPE_F32);
    fasa_kv_cache_append(cs, 0, L, k, v, FASA_DTYPE_F32);
    fasa_decode_desc dd = {.n_fac = 64};
    float o2[HQ * D];
    for (int s = 0; s < 3; s++) {
        CHECK(fasa_decode_host(cd_, 0, &dd, q, o, NULL) == FASA_OK && fasa_decode_host(cs, 0, &dd, q, o2, NULL) == FASA_OK &&
                  memcmp(o, o2, sizeof o) == 0, "direct and staged give the same output");
    }
    fasa_transfer_stats a, b;
    fasa_kv_cache_transfer_stats(cd_, &a, false);
    fasa_kv_cache_transfer_stats(cs, &b, true);
    uint64_t row = 2ull * D * 2; /* K and V rows, fp16 */
    CHECK(a.steps == 3 && a.rows_needed >= 3 * 2 * 64 && a.rows_cached == 0 && a.bytes == a.rows_needed * row,
          "direct: every needed row crosses (%llu rows, %llu bytes)", (unsigned long long)a.rows_needed,
          (unsigned long long)a.bytes);
    CHECK(b.rows_needed == a.rows_needed && b.rows_cached == a.rows_needed / 3 * 2 &&
              b.bytes == (b.rows_needed - b.rows_cached) * row,
          "staged with a row cache: repeated steps hit (%llu of %llu)", (unsigned long long)b.rows_cached,
          (unsigned long long)b.rows_needed);
    CHECK(fasa_kv_cache_transfer_stats(cs, &b, false) == FASA_OK && b.steps == 0, "reset");
    /* a row cache smaller than one step's rows is rejected at decode */
    fasa_decode_desc big = {.n_fac = 100};
    CHECK(fasa_decode_host(cs, 0, &big, q, o, NULL) == FASA_ERROR_INVALID_ARGUMENT &&
              strstr(fasa_context_last_error(ctx), "row_cache_rows"), "row cache too small: %s", fasa_context_last_error(ctx));
    fasa_kv_cache_destroy(cd_);
    fasa_kv_cache_destroy(cs);
    fasa_calibration_destroy(cal);
}

/* FASA_DECODE_PREFETCH on the CPU backend: validation, no output written,
 * the rows placed so that the same step then hits them all, its own
 * counters, nothing on the dense path, and outputs unchanged. */
static void test_prefetch(fasa_context *ctx)
{
    enum { HQ = 4, HKV = 2, D = 64, L = 400 };
    static float k[L * HKV * D], v[L * HKV * D];
    float q[HQ * D], o[HQ * D], o_ref[HQ * D];
    for (int i = 0; i < L * HKV * D; i++) {
        k[i] = sinf(0.11f * (float)i);
        v[i] = cosf(0.37f * (float)i);
    }
    for (int i = 0; i < HQ * D; i++) q[i] = cosf(0.5f * (float)i);
    uint16_t dims[HQ * 8];
    for (int i = 0; i < HQ * 8; i++) dims[i] = (uint16_t)(8 + i % 8);
    fasa_model_shape shape = {1, HQ, HKV, D, FASA_ROPE_NORM};
    fasa_calibration_desc cd = {.shape = shape, .n_tip = 4, .dims = dims};
    fasa_calibration *cal = NULL;
    fasa_calibration_create(ctx, &cd, &cal);
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = L, .calibration = cal, .flags = FASA_CACHE_NO_DENSE_LAYERS,
                             .placement = FASA_PLACEMENT_OFFLOAD, .fetch = FASA_FETCH_STAGED, .row_cache_rows = 2 * 64};
    fasa_kv_cache_desc plain = kd;
    plain.fetch = FASA_FETCH_DIRECT;
    plain.row_cache_rows = 0;
    fasa_kv_cache *c = NULL, *ref = NULL;
    CHECK(fasa_kv_cache_create(ctx, &kd, &c) == FASA_OK && fasa_kv_cache_create(ctx, &plain, &ref) == FASA_OK, "caches");
    fasa_kv_cache_append(c, 0, L, k, v, FASA_DTYPE_F32);
    fasa_kv_cache_append(ref, 0, L, k, v, FASA_DTYPE_F32);
    fasa_decode_desc d = {.n_fac = 64}, pd = d;
    pd.flags = FASA_DECODE_PREFETCH;
    fasa_decode_desc bad = d;
    bad.flags = 0x6;
    CHECK(fasa_decode_host(c, 0, &bad, q, o, NULL) == FASA_ERROR_INVALID_ARGUMENT &&
              strstr(fasa_context_last_error(ctx), "desc.flags: unknown bits 0x6"), "unknown flags: %s",
          fasa_context_last_error(ctx));
    CHECK(fasa_decode_host(ref, 0, &pd, q, NULL, NULL) == FASA_ERROR_INVALID_ARGUMENT &&
              strstr(fasa_context_last_error(ctx), "row cache"), "prefetch without a row cache: %s",
          fasa_context_last_error(ctx));
    CHECK(fasa_decode_host(c, 0, &d, q, NULL, NULL) == FASA_ERROR_INVALID_ARGUMENT, "o NULL without prefetch");
    for (int i = 0; i < HQ * D; i++) o[i] = NAN; /* poison: a prefetch writes no output */
    CHECK(fasa_decode_host(c, 0, &pd, q, o, NULL) == FASA_OK && isnan(o[0]) && isnan(o[HQ * D - 1]),
          "prefetch leaves o alone");
    fasa_transfer_stats a, b;
    fasa_kv_cache_transfer_stats(c, &a, false);
    CHECK(fasa_decode_host(c, 0, &d, q, o, NULL) == FASA_OK && fasa_decode_host(ref, 0, &d, q, o_ref, NULL) == FASA_OK &&
              memcmp(o, o_ref, sizeof o) == 0, "outputs unchanged by a prefetch");
    fasa_kv_cache_transfer_stats(c, &b, false);
    uint64_t row = 2ull * D * 2;
    CHECK(a.steps == 0 && a.prefetch_steps == 1 && a.prefetch_rows >= 64 && a.prefetch_bytes == a.prefetch_rows * row,
          "prefetch counters (%llu steps, %llu rows)", (unsigned long long)a.prefetch_steps,
          (unsigned long long)a.prefetch_rows);
    CHECK(b.steps == 1 && b.rows_needed == a.prefetch_rows && b.rows_cached == b.rows_needed && b.bytes == 0,
          "the prefetched step hits every row (%llu of %llu)", (unsigned long long)b.rows_cached,
          (unsigned long long)b.rows_needed);
    fasa_decode_desc wide = pd;
    wide.n_fac = 2 * L; /* L <= n_fac: the dense path, nothing to prefetch */
    fasa_kv_cache_desc big = kd;
    big.max_n_fac = 2 * L;
    fasa_kv_cache *cb = NULL;
    fasa_kv_cache_create(ctx, &big, &cb);
    fasa_kv_cache_append(cb, 0, L, k, v, FASA_DTYPE_F32);
    CHECK(fasa_decode_host(cb, 0, &wide, q, NULL, NULL) == FASA_OK && fasa_kv_cache_transfer_stats(cb, &a, false) == FASA_OK &&
              a.prefetch_steps == 0 && a.prefetch_rows == 0, "a dense-path prefetch does nothing");
    fasa_kv_cache_destroy(cb);
    /* application host memory: a Vulkan feature; the CPU backend says so */
    uint64_t size = 0, align = 0;
    static uint8_t mem[4096];
    CHECK(fasa_kv_cache_host_memory_requirements(ctx, &kd, &size, &align) == FASA_ERROR_UNSUPPORTED &&
              strstr(fasa_context_last_error(ctx), "desc.host_memory"), "requirements on cpu: %s",
          fasa_context_last_error(ctx));
    CHECK(fasa_kv_cache_host_memory_requirements(ctx, &kd, NULL, &align) == FASA_ERROR_INVALID_ARGUMENT &&
              strstr(fasa_context_last_error(ctx), "size is NULL"), "NULL size");
    fasa_kv_cache_desc hm = kd;
    hm.host_memory_size = sizeof mem;
    CHECK(fasa_kv_cache_create(ctx, &hm, &cb) == FASA_ERROR_INVALID_ARGUMENT &&
              strstr(fasa_context_last_error(ctx), "desc.host_memory_size: set without"), "size without memory");
    hm.host_memory = mem;
    CHECK(fasa_kv_cache_create(ctx, &hm, &cb) == FASA_ERROR_UNSUPPORTED, "host memory on cpu: %s",
          fasa_context_last_error(ctx));
    fasa_kv_cache_destroy(c);
    fasa_kv_cache_destroy(ref);
    fasa_calibration_destroy(cal);
}

int main(void)
{
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 2};
    if (fasa_context_create(&cd, &ctx) != FASA_OK) return 1;
    test_policy(ctx);
    test_stats(ctx);
    test_prefetch(ctx);
    fasa_context_destroy(ctx);
    return check_done("test_rowcache");
}
