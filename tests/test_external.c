/* External K/V caches (fasa_kv_cache_desc.external) on one backend,
 * through the public API:
 *
 *  - every validation rule of the engine's layout and buffers fails
 *    fasa_kv_cache_create with the right status, a message naming the
 *    field and *out == NULL;
 *  - appends are refused, syncs are checked (layer, n, a gap, capacity, a
 *    cache that owns its K/V) and a refused sync changes nothing;
 *  - synced tokens decode exactly like a cache that owns the same values
 *    (FASA, oracle, dense path; per head and per group), also after a
 *    rewind (truncate) and the tokens rewritten with other values;
 *  - reads go through the layout, and the memory report counts no K/V.
 *
 * Usage: test_external [cpu|vulkan|opencl|cuda]  (77 when the backend has
 * no device).  Vulkan runs with the validation layer where installed. */
#include "api_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NL 2
#define HQ 4
#define HKV 2
#define D 8
#define CAP 40
#define NFAC 8

static const fasa_model_shape shape = {NL, HQ, HKV, D, FASA_ROPE_NORM};

static fasa_calibration *make_calibration(fasa_context *ctx)
{
    uint16_t dims[NL * HQ * 2];
    for (int i = 0; i < NL * HQ; i++) { /* one chunk per head, differing inside each group */
        dims[2 * i] = (uint16_t)(2 * (i % 4));
        dims[2 * i + 1] = (uint16_t)(2 * (i % 4) + 1);
    }
    fasa_calibration_desc cd = {.shape = shape, .n_tip = 1, .dims = dims};
    fasa_calibration *cal = NULL;
    CHECK_STATUS(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_OK);
    return cal;
}

/* The engine: K and V of both layers, token-major in two buffers. */
typedef struct engine {
    fasa_buffer *k, *v;
    fasa_buffer *ks[NL], *vs[NL];
    fasa_kv_external ext;
} engine;

static void engine_init(fasa_context *ctx, engine *e, uint64_t bytes)
{
    memset(e, 0, sizeof *e);
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, bytes, &e->k), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, bytes, &e->v), FASA_OK);
    for (int l = 0; l < NL; l++) e->ks[l] = e->k, e->vs[l] = e->v;
    e->ext = (fasa_kv_external){.token_stride = HKV * D, .head_stride = D, .k = e->ks, .v = e->vs};
}

static void engine_free(engine *e)
{
    fasa_buffer_destroy(e->k);
    fasa_buffer_destroy(e->v);
}

/* Token-major fp32 values of tokens [0, n) (k and v [n][HKV][D]). */
static void make_tokens(uint32_t n, uint32_t seed, float *k, float *v)
{
    uint32_t s = seed * 2654435761u + 1;
    for (uint32_t i = 0; i < n * HKV * D; i++) {
        s = s * 1664525u + 1013904223u;
        k[i] = (float)((int)(s >> 24) - 128) / 32.0f;
        s = s * 1664525u + 1013904223u;
        v[i] = (float)((int)(s >> 24) - 128) / 64.0f;
    }
}

/* ------------------------------------------------------------------------ */
/* Validation of the descriptor                                              */
/* ------------------------------------------------------------------------ */

static void expect_create_fails(fasa_context *ctx, const fasa_kv_cache_desc *kd, fasa_status want, const char *what)
{
    fasa_kv_cache *cache = (fasa_kv_cache *)&cache; /* must be reset to NULL */
    fasa_status st = fasa_kv_cache_create(ctx, kd, &cache);
    const char *msg = fasa_context_last_error(ctx);
    CHECK(st == want, "%s: got %s (%s), wanted %s", what, fasa_status_string(st), msg, fasa_status_string(want));
    CHECK(strstr(msg, what) != NULL, "message '%s' does not name '%s'", msg, what);
    CHECK(cache == NULL, "%s: *out not NULL", what);
    if (st == FASA_OK) fasa_kv_cache_destroy(cache);
}

static void test_bad_desc(fasa_context *ctx, fasa_context *other)
{
    engine e;
    engine_init(ctx, &e, (uint64_t)CAP * HKV * D * 4);
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = CAP, .dtype = FASA_DTYPE_F32, .external = &e.ext};
    fasa_kv_external x = e.ext;
    kd.external = &x;

    kd.placement = FASA_PLACEMENT_OFFLOAD;
    expect_create_fails(ctx, &kd, FASA_ERROR_UNSUPPORTED, "desc.external: FASA-M");
    kd.placement = FASA_PLACEMENT_DEVICE;

    x.k = NULL;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->k is NULL");
    x = e.ext, x.v = NULL;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->v is NULL");

    fasa_buffer *ks[NL] = {e.k, NULL}, *foreign = NULL;
    x = e.ext, x.k = ks;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->k[1] is NULL");
    CHECK_STATUS(other, fasa_buffer_create(other, (uint64_t)CAP * HKV * D * 4, &foreign), FASA_OK);
    fasa_buffer *vs[NL] = {foreign, e.v};
    x = e.ext, x.v = vs;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->v[0] belongs to another context");

    x = e.ext, x.token_stride = HKV * D + 1;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->token_stride: 17 is odd");
    x = e.ext, x.head_stride = 1ull << 32;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->head_stride: 4294967296 is more");
    x = e.ext, x.token_stride = D - 2;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->token_stride: 6 elements is less");
    x = e.ext, x.head_stride = D - 2;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->head_stride: 6 elements is less");
    x = e.ext, x.token_stride = D, x.head_stride = 2 * D; /* head 1 of token t is token t + 2 of head 0 */
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "interleave rows");
    x = e.ext, x.token_stride = HKV * D, x.head_stride = D + 2; /* token t's head 1 runs into token t + 1 */
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "interleave rows");

    uint64_t offs[NL] = {0, 4}; /* fp32: two elements are 8 bytes */
    x = e.ext, x.k_offset = offs;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->k_offset[1]: 4 is not a multiple of 8");
    offs[1] = 8; /* aligned, but the last row now ends past the buffer */
    x = e.ext, x.v_offset = offs;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->v[1]: 2560 bytes from offset 8");
    x = e.ext;
    kd.dtype = FASA_DTYPE_F16; /* fp16: two elements are 4 bytes */
    uint64_t offs16[NL] = {2, 0};
    x.k_offset = offs16;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->k_offset[0]: 2 is not a multiple of 4");
    kd.dtype = FASA_DTYPE_F32;
    x = e.ext, x.token_stride = 0xfffffffeull, x.head_stride = D; /* 2^30 tokens of 16 GiB: near 2^64 bytes */
    kd.capacity = 1u << 30;
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->k[0]: 18446744047939747912 bytes");
    kd.capacity = CAP;
    x = e.ext, x.token_stride = 1ull << 20; /* fits 2^64, not the buffer */
    expect_create_fails(ctx, &kd, FASA_ERROR_INVALID_ARGUMENT, "desc.external->k[0]:");

    /* a stride that is never used is not checked */
    fasa_kv_cache *cache = NULL;
    fasa_model_shape one_head = {NL, HQ, 1, D, FASA_ROPE_NORM};
    fasa_kv_cache_desc kd1 = {.shape = one_head, .capacity = CAP, .dtype = FASA_DTYPE_F32, .external = &x};
    x = e.ext, x.token_stride = D, x.head_stride = 0;
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &kd1, &cache), FASA_OK);
    fasa_kv_cache_destroy(cache);
    fasa_buffer_destroy(foreign);
    engine_free(&e);
}

/* ------------------------------------------------------------------------ */
/* Appends, syncs and their checks                                           */
/* ------------------------------------------------------------------------ */

static void expect_fails(fasa_context *ctx, fasa_status got, fasa_status want, const char *what)
{
    const char *msg = fasa_context_last_error(ctx);
    CHECK(got == want, "%s: got %s (%s)", what, fasa_status_string(got), msg);
    CHECK(strstr(msg, what) != NULL, "message '%s' does not name '%s'", msg, what);
}

static uint32_t length_of(const fasa_kv_cache *cache, uint32_t layer)
{
    uint32_t n = 0;
    fasa_kv_cache_length(cache, layer, &n);
    return n;
}

static void test_sync_rules(fasa_context *ctx, fasa_calibration *cal)
{
    engine e;
    engine_init(ctx, &e, (uint64_t)CAP * HKV * D * 4);
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = CAP, .dtype = FASA_DTYPE_F32, .calibration = cal,
                             .external = &e.ext};
    fasa_kv_cache *cache = NULL, *owned = NULL;
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_OK);
    if (!cache) return;
    float k[HKV * D] = {0}, v[HKV * D] = {0};
    expect_fails(ctx, fasa_kv_cache_append(cache, 1, 1, k, v, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
                 "fasa_kv_cache_append: the cache reads the engine's K and V in place (desc.external)");
    expect_fails(ctx, fasa_kv_cache_append_buffers(cache, 1, 1, e.k, 0, e.v, 0, FASA_DTYPE_F32),
                 FASA_ERROR_INVALID_ARGUMENT, "calls fasa_kv_cache_sync");
    CHECK(length_of(cache, 1) == 0, "a refused append changed the length");

    CHECK_STATUS(ctx, fasa_kv_cache_sync(cache, 1, 0, 10), FASA_OK);
    CHECK(length_of(cache, 1) == 10 && length_of(cache, 0) == 0, "sync of [0, 10) gives %u", length_of(cache, 1));
    expect_fails(ctx, fasa_kv_cache_sync(cache, NL, 0, 1), FASA_ERROR_INVALID_ARGUMENT, "layer 2 out of range");
    expect_fails(ctx, fasa_kv_cache_sync(cache, 1, 0, 0), FASA_ERROR_INVALID_ARGUMENT, "n is 0");
    expect_fails(ctx, fasa_kv_cache_sync(cache, 1, 11, 1), FASA_ERROR_INVALID_ARGUMENT, "first (11) is past the 10");
    expect_fails(ctx, fasa_kv_cache_sync(cache, 1, 10, CAP - 9), FASA_ERROR_CAPACITY, "tokens [10, 41) of layer 1");
    expect_fails(ctx, fasa_kv_cache_sync(cache, 1, 0xffffffffu, 2), FASA_ERROR_INVALID_ARGUMENT, "is past the 10");
    CHECK(length_of(cache, 1) == 10, "a refused sync changed the length to %u", length_of(cache, 1));
    CHECK_STATUS(ctx, fasa_kv_cache_sync(cache, 1, 4, 3), FASA_OK); /* below the length: stays 10 */
    CHECK(length_of(cache, 1) == 10, "sync of [4, 7) changed the length to %u", length_of(cache, 1));
    CHECK_STATUS(ctx, fasa_kv_cache_sync(cache, 1, 10, CAP - 10), FASA_OK);
    CHECK(length_of(cache, 1) == CAP, "sync to capacity gives %u", length_of(cache, 1));
    CHECK(fasa_kv_cache_sync(NULL, 0, 0, 1) == FASA_ERROR_INVALID_ARGUMENT, "NULL cache");

    fasa_kv_cache_desc od = {.shape = shape, .capacity = CAP, .dtype = FASA_DTYPE_F32, .calibration = cal};
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &od, &owned), FASA_OK);
    if (owned)
        expect_fails(ctx, fasa_kv_cache_sync(owned, 0, 0, 1), FASA_ERROR_INVALID_ARGUMENT,
                     "fasa_kv_cache_sync: the cache owns its K and V (no desc.external)");
    fasa_memory_report me, mo;
    CHECK_STATUS(ctx, fasa_kv_cache_memory(cache, &me), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_memory(owned, &mo), FASA_OK);
    uint64_t kv = 2ull * NL * CAP * HKV * D * 4;
    CHECK(me.dense_equivalent == kv && mo.device_bytes >= me.device_bytes + kv,
          "memory: external %llu, owned %llu device bytes, K+V %llu", (unsigned long long)me.device_bytes,
          (unsigned long long)mo.device_bytes, (unsigned long long)kv);
    fasa_kv_cache_destroy(owned);
    fasa_kv_cache_destroy(cache);
    engine_free(&e);
}

/* ------------------------------------------------------------------------ */
/* Same results as a cache that owns the values                              */
/* ------------------------------------------------------------------------ */

typedef struct run_out {
    float o[HQ * D];
    int32_t sel[HQ * NFAC];
    fasa_path path;
} run_out;

static void decode_both(fasa_context *ctx, fasa_kv_cache *ext, fasa_kv_cache *own, uint32_t layer,
                        const fasa_decode_desc *dd, const char *what)
{
    float q[HQ * D];
    for (int i = 0; i < HQ * D; i++) q[i] = (float)((i * 7) % 13 - 6) / 4.0f;
    run_out a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    fasa_decode_outputs oa = {.selected = a.sel, .selected_stride = NFAC};
    fasa_decode_outputs ob = {.selected = b.sel, .selected_stride = NFAC};
    CHECK_STATUS(ctx, fasa_decode_host(ext, layer, dd, q, a.o, &oa), FASA_OK);
    CHECK_STATUS(ctx, fasa_decode_host(own, layer, dd, q, b.o, &ob), FASA_OK);
    CHECK(oa.path == ob.path, "%s: paths differ", what);
    CHECK(memcmp(a.o, b.o, sizeof a.o) == 0, "%s: o differs from the owned cache's", what);
    if (oa.path != FASA_PATH_SPARSE) return;
    for (uint32_t r = 0; r < oa.n_rows; r++) /* same set: GPUs emit the top-k in any order */
        for (uint32_t i = 0; i < NFAC; i++) {
            bool found = false;
            for (uint32_t j = 0; j < NFAC; j++) found |= a.sel[r * NFAC + i] == b.sel[r * NFAC + j];
            CHECK(found, "%s: row %u selects %d, the owned cache does not", what, r, a.sel[r * NFAC + i]);
        }
}

static void test_same_as_owned(fasa_context *ctx, fasa_calibration *cal)
{
    engine e;
    uint64_t bytes = (uint64_t)CAP * HKV * D * 4;
    engine_init(ctx, &e, bytes);
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = CAP, .dtype = FASA_DTYPE_F32, .calibration = cal,
                             .flags = FASA_CACHE_NO_DENSE_LAYERS, .external = &e.ext};
    fasa_kv_cache_desc od = kd;
    od.external = NULL;
    fasa_kv_cache *ext = NULL, *own = NULL;
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &ext), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &od, &own), FASA_OK);
    float k[CAP * HKV * D], v[CAP * HKV * D], back[CAP * HKV * D];
    make_tokens(CAP, 1, k, v);
    CHECK_STATUS(ctx, fasa_buffer_write(e.k, 0, k, bytes), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_write(e.v, 0, v, bytes), FASA_OK);
    if (!ext || !own) return;
    for (uint32_t layer = 0; layer < NL; layer++) {
        CHECK_STATUS(ctx, fasa_kv_cache_sync(ext, layer, 0, 25), FASA_OK);
        CHECK_STATUS(ctx, fasa_kv_cache_sync(ext, layer, 25, CAP - 25), FASA_OK);
        CHECK_STATUS(ctx, fasa_kv_cache_append(own, layer, CAP, k, v, FASA_DTYPE_F32), FASA_OK);
    }
    CHECK_STATUS(ctx, fasa_kv_cache_read(ext, 1, 3, CAP - 3, back, NULL), FASA_OK);
    CHECK(memcmp(back, k + 3 * HKV * D, (CAP - 3) * HKV * D * 4) == 0, "read K differs from the engine's");
    CHECK_STATUS(ctx, fasa_kv_cache_read(ext, 1, 0, CAP, NULL, back), FASA_OK);
    CHECK(memcmp(back, v, sizeof back) == 0, "read V differs from the engine's");
    fasa_decode_desc dd = {.n_fac = NFAC, .n_sink = 1, .n_recent = 2};
    decode_both(ctx, ext, own, 1, &dd, "fasa per head");
    dd.gqa_select = FASA_GQA_PER_GROUP;
    decode_both(ctx, ext, own, 0, &dd, "fasa per group");
    dd.mode = FASA_MODE_ORACLE;
    decode_both(ctx, ext, own, 1, &dd, "oracle");
    dd.mode = FASA_MODE_DENSE;
    decode_both(ctx, ext, own, 1, &dd, "dense");

    /* rewind: both caches drop tokens 30.., the engine writes other values there */
    CHECK_STATUS(ctx, fasa_kv_cache_truncate(ext, 30), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_truncate(own, 30), FASA_OK);
    float k2[CAP * HKV * D], v2[CAP * HKV * D];
    make_tokens(CAP, 2, k2, v2);
    size_t at = 30 * HKV * D;
    CHECK_STATUS(ctx, fasa_buffer_write(e.k, at * 4, k2 + at, bytes - at * 4), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_write(e.v, at * 4, v2 + at, bytes - at * 4), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_sync(ext, 1, 30, 5), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_sync(ext, 1, 35, CAP - 35), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_append(own, 1, CAP - 30, k2 + at, v2 + at, FASA_DTYPE_F32), FASA_OK);
    dd = (fasa_decode_desc){.n_fac = NFAC};
    decode_both(ctx, ext, own, 1, &dd, "fasa after a rewind");
    dd.mode = FASA_MODE_DENSE;
    decode_both(ctx, ext, own, 1, &dd, "dense after a rewind");
    /* the dense path of a short layer (L <= n_fac) */
    CHECK_STATUS(ctx, fasa_kv_cache_truncate(ext, 5), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_truncate(own, 5), FASA_OK);
    dd = (fasa_decode_desc){.n_fac = NFAC};
    decode_both(ctx, ext, own, 1, &dd, "short layer");
    fasa_kv_cache_destroy(ext);
    fasa_kv_cache_destroy(own);
    engine_free(&e);
}

/* Without a calibration an external cache has no K_dom: a sync only moves
 * the length, and dense decoding works. */
static void test_no_calibration(fasa_context *ctx)
{
    engine e;
    uint64_t bytes = (uint64_t)CAP * HKV * D * 4;
    engine_init(ctx, &e, bytes);
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = CAP, .dtype = FASA_DTYPE_F32, .external = &e.ext};
    fasa_kv_cache_desc od = kd;
    od.external = NULL;
    fasa_kv_cache *ext = NULL, *own = NULL;
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &ext), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &od, &own), FASA_OK);
    float k[CAP * HKV * D], v[CAP * HKV * D];
    make_tokens(CAP, 3, k, v);
    CHECK_STATUS(ctx, fasa_buffer_write(e.k, 0, k, bytes), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_write(e.v, 0, v, bytes), FASA_OK);
    if (!ext || !own) return;
    CHECK_STATUS(ctx, fasa_kv_cache_sync(ext, 1, 0, CAP), FASA_OK);
    CHECK_STATUS(ctx, fasa_kv_cache_append(own, 1, CAP, k, v, FASA_DTYPE_F32), FASA_OK);
    fasa_decode_desc dd = {.mode = FASA_MODE_DENSE, .n_fac = NFAC};
    decode_both(ctx, ext, own, 1, &dd, "dense without a calibration");
    fasa_kv_cache_destroy(ext);
    fasa_kv_cache_destroy(own);
    engine_free(&e);
}

int main(int argc, char **argv)
{
    fasa_context *ctx = NULL;
    fasa_context *other = NULL;
    int status = api_test_open(argc, argv, "test_external", &ctx);
    if (status) return status;
    fasa_context_desc od = {.backend = FASA_BACKEND_CPU, .n_threads = 1};
    CHECK_STATUS(NULL, fasa_context_create(&od, &other), FASA_OK);
    fasa_calibration *cal = make_calibration(ctx);
    test_bad_desc(ctx, other);
    test_sync_rules(ctx, cal);
    test_same_as_owned(ctx, cal);
    test_no_calibration(ctx);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(other);
    return api_test_close(ctx);
}
