/* The bad-input matrix: every public entry point with NULLs, zero sizes,
 * out-of-range values and inconsistent objects.  Each must return the right
 * status, name the bad field in its message, and leave outputs and caches
 * as they were.  Run under valgrind/ASan, it also shows nothing leaks. */
#include "check.h"
#include "fasa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The call fails with `want` and the context message mentions `field`. */
#define EXPECT_FAIL(ctx, expr, want, field)                                              \
    do {                                                                                 \
        fasa_status st_ = (expr);                                                        \
        const char *msg_ = (ctx) ? fasa_context_last_error(ctx) : "";                    \
        CHECK(st_ == (want) && (!(ctx) || strstr(msg_, field) != NULL),                  \
              "%s: got %s (%s), wanted %s naming '%s'", #expr, fasa_status_string(st_),  \
              msg_, fasa_status_string(want), field);                                    \
    } while (0)

#define HQ 4
#define HKV 2
#define D 64
#define NTIP 4

static const fasa_model_shape shape = {2, HQ, HKV, D, FASA_ROPE_NORM};

static void make_dims(uint16_t *dims)
{
    for (int h = 0; h < 2 * HQ; h++)
        for (int i = 0; i < 2 * NTIP; i++) dims[h * 2 * NTIP + i] = (uint16_t)(40 + i);
}

static void test_names(void)
{
    for (int s = 0; s <= FASA_STATUS_COUNT_; s++) CHECK(fasa_status_string((fasa_status)s) != NULL, "status %d", s);
    CHECK(strstr(fasa_status_string((fasa_status)999), "UNKNOWN") != NULL, "unknown status string");
    CHECK(strcmp(fasa_backend_name(FASA_BACKEND_CPU), "cpu") == 0, "cpu name");
    CHECK(strcmp(fasa_backend_name((fasa_backend)99), "unknown") == 0, "unknown backend name");
    fasa_backend b;
    CHECK(fasa_backend_from_name("vulkan", &b) == FASA_OK && b == FASA_BACKEND_VULKAN, "parse vulkan");
    CHECK(fasa_backend_from_name("metal", &b) == FASA_ERROR_INVALID_ARGUMENT, "unknown name");
    CHECK(fasa_backend_from_name(NULL, &b) == FASA_ERROR_INVALID_ARGUMENT, "NULL name");
    CHECK(fasa_backend_from_name("cpu", NULL) == FASA_ERROR_INVALID_ARGUMENT, "NULL out");
    CHECK(fasa_backend_compiled(FASA_BACKEND_CPU), "cpu is always compiled");
    CHECK(!fasa_backend_compiled((fasa_backend)99), "unknown backend is not compiled");
}

static void test_list_devices(void)
{
    char msg[256];
    uint32_t n = 0;
    CHECK(fasa_list_devices(FASA_BACKEND_CPU, NULL, NULL, msg, sizeof msg) == FASA_ERROR_INVALID_ARGUMENT &&
              strstr(msg, "count"), "NULL count: %s", msg);
    n = 1;
    CHECK(fasa_list_devices(FASA_BACKEND_CPU, NULL, &n, msg, sizeof msg) == FASA_ERROR_INVALID_ARGUMENT &&
              strstr(msg, "devices"), "NULL devices with capacity: %s", msg);
    n = 0;
    CHECK(fasa_list_devices(FASA_BACKEND_AUTO, NULL, &n, msg, sizeof msg) == FASA_ERROR_INVALID_ARGUMENT, "auto");
    n = 0;
    CHECK(fasa_list_devices(FASA_BACKEND_CPU, NULL, &n, NULL, 0) == FASA_OK && n == 1, "count query: %u", n);
    fasa_device_info info;
    n = 1;
    CHECK(fasa_list_devices(FASA_BACKEND_CPU, &info, &n, NULL, 0) == FASA_OK && info.type == FASA_DEVICE_CPU &&
              info.backend == FASA_BACKEND_CPU, "cpu device");
    for (int b = FASA_BACKEND_VULKAN; b < FASA_BACKEND_COUNT_; b++) {
        n = 0;
        msg[0] = '\0';
        fasa_status st = fasa_list_devices((fasa_backend)b, NULL, &n, msg, sizeof msg);
        CHECK(st == FASA_OK || (st == FASA_ERROR_BACKEND_UNAVAILABLE && msg[0]), "backend %d: %s", b, msg);
    }
}

static void test_context(void)
{
    char msg[512];
    fasa_context *ctx = (fasa_context *)&msg; /* must be reset to NULL on failure */
    fasa_context_desc d = {.backend = (fasa_backend)42, .error_message = msg, .error_message_size = sizeof msg};
    CHECK(fasa_context_create(&d, &ctx) == FASA_ERROR_INVALID_ARGUMENT && strstr(msg, "desc.backend") && !ctx,
          "bad backend: %s", msg);
    d = (fasa_context_desc){.backend = FASA_BACKEND_CPU, .device_index = 5, .error_message = msg,
                            .error_message_size = sizeof msg};
    CHECK(fasa_context_create(&d, &ctx) == FASA_ERROR_INVALID_ARGUMENT && strstr(msg, "device_index"),
          "device index: %s", msg);
    d.device_index = -3;
    CHECK(fasa_context_create(&d, &ctx) == FASA_ERROR_INVALID_ARGUMENT && strstr(msg, "device_index"), "negative");
    d.device_index = 0;
    d.allocator.alloc = (void *(*)(void *, size_t, size_t))1;
    CHECK(fasa_context_create(&d, &ctx) == FASA_ERROR_INVALID_ARGUMENT && strstr(msg, "allocator"), "half allocator");
    d.allocator.alloc = NULL;
    d.flags = 0x800;
    CHECK(fasa_context_create(&d, &ctx) == FASA_ERROR_INVALID_ARGUMENT && strstr(msg, "flags"), "flags");
    d.flags = 0;
    d.embed = &d;
    CHECK(fasa_context_create(&d, &ctx) == FASA_ERROR_INVALID_ARGUMENT && strstr(msg, "embed"), "cpu embed");
    d.embed = NULL;
    d.n_threads = 5000;
    CHECK(fasa_context_create(&d, &ctx) == FASA_ERROR_INVALID_ARGUMENT && strstr(msg, "n_threads"), "threads");
    CHECK(fasa_context_create(NULL, NULL) == FASA_ERROR_INVALID_ARGUMENT, "NULL out");
    for (int b = FASA_BACKEND_VULKAN; b < FASA_BACKEND_COUNT_; b++)
        if (!fasa_backend_compiled((fasa_backend)b)) {
            d = (fasa_context_desc){.backend = (fasa_backend)b, .error_message = msg, .error_message_size = sizeof msg};
            CHECK(fasa_context_create(&d, &ctx) == FASA_ERROR_BACKEND_UNAVAILABLE && strstr(msg, "compiled"),
                  "missing backend %d: %s", b, msg);
        }
    /* NULL contexts everywhere */
    CHECK(fasa_context_device(NULL, NULL) == FASA_ERROR_INVALID_ARGUMENT, "device NULL");
    CHECK(fasa_context_finish(NULL) == FASA_ERROR_INVALID_ARGUMENT, "finish NULL");
    uint64_t ns;
    CHECK(fasa_context_last_step_ns(NULL, &ns) == FASA_ERROR_INVALID_ARGUMENT, "step ns NULL");
    CHECK(fasa_context_backend(NULL) == FASA_BACKEND_AUTO, "backend of NULL");
    CHECK(strlen(fasa_context_last_error(NULL)) > 0, "last error of NULL");
    fasa_context_destroy(NULL);
    /* a good one: auto with a logger that records */
    d = (fasa_context_desc){.backend = FASA_BACKEND_CPU, .n_threads = 2};
    CHECK(fasa_context_create(&d, &ctx) == FASA_OK, "cpu context");
    CHECK(fasa_context_last_step_ns(ctx, &ns) == FASA_ERROR_UNSUPPORTED, "no profiling flag");
    fasa_context_destroy(ctx);
}

static void test_buffers(fasa_context *ctx)
{
    fasa_buffer *b = (fasa_buffer *)ctx;
    EXPECT_FAIL(ctx, fasa_buffer_create(ctx, 0, &b), FASA_ERROR_INVALID_ARGUMENT, "size");
    CHECK(b == NULL, "out reset on failure");
    EXPECT_FAIL(ctx, fasa_buffer_create(ctx, 16, NULL), FASA_ERROR_INVALID_ARGUMENT, "out");
    CHECK(fasa_buffer_create(NULL, 16, &b) == FASA_ERROR_INVALID_ARGUMENT, "NULL ctx");
    float host[8] = {0};
    EXPECT_FAIL(ctx, fasa_buffer_wrap_host(ctx, NULL, 32, &b), FASA_ERROR_INVALID_ARGUMENT, "ptr");
    EXPECT_FAIL(ctx, fasa_buffer_wrap_host(ctx, host, 0, &b), FASA_ERROR_INVALID_ARGUMENT, "size");
    CHECK(fasa_buffer_create(ctx, 32, &b) == FASA_OK, "create");
    float src[8] = {1, 2, 3, 4, 5, 6, 7, 8}, dst[8] = {0};
    EXPECT_FAIL(ctx, fasa_buffer_write(b, 16, src, 32), FASA_ERROR_INVALID_ARGUMENT, "exceeds");
    EXPECT_FAIL(ctx, fasa_buffer_write(b, 0, NULL, 8), FASA_ERROR_INVALID_ARGUMENT, "NULL");
    EXPECT_FAIL(ctx, fasa_buffer_write(b, 0, src, 0), FASA_ERROR_INVALID_ARGUMENT, "size");
    EXPECT_FAIL(ctx, fasa_buffer_read(b, UINT64_MAX, dst, 4), FASA_ERROR_INVALID_ARGUMENT, "exceeds");
    CHECK(fasa_buffer_write(NULL, 0, src, 4) == FASA_ERROR_INVALID_ARGUMENT, "NULL buffer write");
    CHECK(fasa_buffer_read(NULL, 0, dst, 4) == FASA_ERROR_INVALID_ARGUMENT, "NULL buffer read");
    CHECK(fasa_buffer_write(b, 0, src, 32) == FASA_OK && fasa_buffer_read(b, 0, dst, 32) == FASA_OK &&
              memcmp(src, dst, 32) == 0, "round trip");
    CHECK(fasa_buffer_size(b) == 32 && fasa_buffer_size(NULL) == 0, "size");
    fasa_buffer_destroy(b);
    fasa_buffer_destroy(NULL);
}

static void test_shape_and_calibration(fasa_context *ctx)
{
    fasa_model_shape s = shape;
    s.n_kv_heads = 3;
    EXPECT_FAIL(ctx, fasa_model_shape_check(ctx, &s), FASA_ERROR_INVALID_ARGUMENT, "n_kv_heads");
    s = shape; s.head_dim = 63;
    EXPECT_FAIL(ctx, fasa_model_shape_check(ctx, &s), FASA_ERROR_INVALID_ARGUMENT, "head_dim");
    s = shape; s.n_layers = 0;
    EXPECT_FAIL(ctx, fasa_model_shape_check(ctx, &s), FASA_ERROR_INVALID_ARGUMENT, "n_layers");
    s = shape; s.n_q_heads = 0;
    EXPECT_FAIL(ctx, fasa_model_shape_check(ctx, &s), FASA_ERROR_INVALID_ARGUMENT, "n_q_heads");
    s = shape; s.layout = (fasa_rope_layout)7;
    EXPECT_FAIL(ctx, fasa_model_shape_check(ctx, &s), FASA_ERROR_INVALID_ARGUMENT, "layout");
    EXPECT_FAIL(ctx, fasa_model_shape_check(ctx, NULL), FASA_ERROR_INVALID_ARGUMENT, "shape");

    uint16_t dims[2 * HQ * 2 * NTIP];
    make_dims(dims);
    fasa_calibration *cal = NULL;
    fasa_calibration_desc cd = {.shape = shape, .n_tip = D / 2 + 1, .dims = dims};
    EXPECT_FAIL(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_ERROR_INVALID_ARGUMENT, "n_tip");
    cd.n_tip = NTIP;
    cd.dims = NULL;
    EXPECT_FAIL(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_ERROR_INVALID_ARGUMENT, "dims");
    cd.dims = dims;
    dims[5] = 99; /* out of range */
    EXPECT_FAIL(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_ERROR_INVALID_ARGUMENT, "layer 0 head 0");
    make_dims(dims);
    dims[2 * NTIP * 3 + 1] = 40; /* duplicate in head 3 */
    EXPECT_FAIL(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_ERROR_INVALID_ARGUMENT, "twice");
    make_dims(dims);
    dims[2 * NTIP * 5 + 7] = 48; /* 47 without its partner 46? no: 48 breaks pair (46,47) */
    EXPECT_FAIL(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_ERROR_INVALID_ARGUMENT, "partner");
    make_dims(dims);
    uint16_t t = dims[0]; dims[0] = dims[1]; dims[1] = t; /* not ascending */
    EXPECT_FAIL(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_ERROR_INVALID_ARGUMENT, "ascending");
    make_dims(dims);
    float ca[2 * HQ * D / 2];
    for (size_t i = 0; i < sizeof ca / sizeof ca[0]; i++) ca[i] = 0.1f;
    ca[3] = NAN;
    cd.ca_mean = ca;
    EXPECT_FAIL(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_ERROR_INVALID_ARGUMENT, "ca_mean");
    ca[3] = 0.1f;
    CHECK(cal == NULL, "no object after failures");
    EXPECT_FAIL(ctx, fasa_calibration_create(ctx, NULL, &cal), FASA_ERROR_INVALID_ARGUMENT, "desc");
    EXPECT_FAIL(ctx, fasa_calibration_create(ctx, &cd, NULL), FASA_ERROR_INVALID_ARGUMENT, "out");
    CHECK(fasa_calibration_create(NULL, &cd, &cal) == FASA_ERROR_INVALID_ARGUMENT, "NULL ctx");
    CHECK(fasa_calibration_create(ctx, &cd, &cal) == FASA_OK, "valid calibration");

    uint16_t got[2 * NTIP];
    EXPECT_FAIL(ctx, fasa_calibration_get_dims(cal, 2, 0, got, 2 * NTIP), FASA_ERROR_INVALID_ARGUMENT, "layer");
    EXPECT_FAIL(ctx, fasa_calibration_get_dims(cal, 0, HQ, got, 2 * NTIP), FASA_ERROR_INVALID_ARGUMENT, "head");
    EXPECT_FAIL(ctx, fasa_calibration_get_dims(cal, 0, 0, got, 3), FASA_ERROR_INVALID_ARGUMENT, "capacity");
    EXPECT_FAIL(ctx, fasa_calibration_get_dims(cal, 0, 0, NULL, 8), FASA_ERROR_INVALID_ARGUMENT, "out");
    uint32_t u;
    EXPECT_FAIL(ctx, fasa_calibration_union_size(cal, 0, HKV, &u), FASA_ERROR_INVALID_ARGUMENT, "head");
    CHECK(fasa_calibration_union_size(cal, 1, 1, &u) == FASA_OK && u == 2 * NTIP, "union %u", u);
    float row[D / 2];
    EXPECT_FAIL(ctx, fasa_calibration_get_ca(cal, 0, 0, row, 2), FASA_ERROR_INVALID_ARGUMENT, "capacity");
    CHECK(fasa_calibration_get_ca(cal, 1, 3, row, D / 2) == FASA_OK && row[0] == 0.1f, "ca row");
    fasa_calibration *other = NULL;
    EXPECT_FAIL(ctx, fasa_calibration_reselect(cal, 0, &other), FASA_ERROR_INVALID_ARGUMENT, "n_tip");
    EXPECT_FAIL(ctx, fasa_calibration_reselect(cal, 2, NULL), FASA_ERROR_INVALID_ARGUMENT, "out");
    EXPECT_FAIL(ctx, fasa_calibration_remap_layout(cal, (fasa_rope_layout)9, &other), FASA_ERROR_INVALID_ARGUMENT, "layout");
    CHECK(other == NULL, "no object");
    fasa_calibration_info info;
    CHECK(fasa_calibration_get_info(NULL, &info) == FASA_ERROR_INVALID_ARGUMENT, "info NULL");
    CHECK(fasa_calibration_get_info(cal, &info) == FASA_OK && info.has_ca_mean && info.n_tip == NTIP, "info");
    EXPECT_FAIL(ctx, fasa_calibration_save(cal, NULL), FASA_ERROR_INVALID_ARGUMENT, "path");
    EXPECT_FAIL(ctx, fasa_calibration_save(cal, "/nonexistent-dir/x.json"), FASA_ERROR_IO, "nonexistent");
    EXPECT_FAIL(ctx, fasa_calibration_load(ctx, "/nonexistent-dir/x.json", NULL, &other), FASA_ERROR_IO, "cannot open");
    EXPECT_FAIL(ctx, fasa_calibration_load(ctx, NULL, NULL, &other), FASA_ERROR_INVALID_ARGUMENT, "path");
    EXPECT_FAIL(ctx, fasa_calibration_load_memory(ctx, "{}", 0, NULL, &other), FASA_ERROR_PARSE, "empty");
    EXPECT_FAIL(ctx, fasa_calibration_load_memory(ctx, NULL, 3, NULL, &other), FASA_ERROR_INVALID_ARGUMENT, "json");
    fasa_calibration_destroy(cal);
    fasa_calibration_destroy(NULL);
}

static void test_calibrator(fasa_context *ctx)
{
    fasa_calibrator *c = NULL;
    fasa_calibrator_desc d = {.shape = shape, .n_tip = D};
    EXPECT_FAIL(ctx, fasa_calibrator_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "n_tip");
    d.n_tip = 0;
    d.convention = (fasa_fc_convention)5;
    EXPECT_FAIL(ctx, fasa_calibrator_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "convention");
    d.convention = FASA_FC_TRUE_PAIR;
    EXPECT_FAIL(ctx, fasa_calibrator_create(ctx, NULL, &c), FASA_ERROR_INVALID_ARGUMENT, "desc");
    CHECK(fasa_calibrator_create(ctx, &d, &c) == FASA_OK, "calibrator");
    float q[HQ * D], k[3 * HKV * D];
    for (int i = 0; i < HQ * D; i++) q[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < 3 * HKV * D; i++) k[i] = (float)(i % 5) - 2.0f;
    EXPECT_FAIL(ctx, fasa_calibrator_add(c, 2, q, k, 3), FASA_ERROR_INVALID_ARGUMENT, "layer");
    EXPECT_FAIL(ctx, fasa_calibrator_add(c, 0, NULL, k, 3), FASA_ERROR_INVALID_ARGUMENT, "q");
    EXPECT_FAIL(ctx, fasa_calibrator_add(c, 0, q, NULL, 3), FASA_ERROR_INVALID_ARGUMENT, "k");
    EXPECT_FAIL(ctx, fasa_calibrator_add(c, 0, q, k, 0), FASA_ERROR_INVALID_ARGUMENT, "n_keys");
    k[7] = INFINITY;
    EXPECT_FAIL(ctx, fasa_calibrator_add(c, 0, q, k, 3), FASA_ERROR_NON_FINITE, "k[7]");
    k[7] = 0;
    fasa_calibration *cal = NULL;
    CHECK(fasa_calibrator_add(c, 0, q, k, 3) == FASA_OK, "add");
    EXPECT_FAIL(ctx, fasa_calibrator_finish(c, &cal), FASA_ERROR_INVALID_ARGUMENT, "layer 1");
    CHECK(fasa_calibrator_add(c, 1, q, k, 3) == FASA_OK && fasa_calibrator_next_sample(c) == FASA_OK, "add 1");
    EXPECT_FAIL(ctx, fasa_calibrator_finish(c, NULL), FASA_ERROR_INVALID_ARGUMENT, "out");
    CHECK(fasa_calibrator_finish(c, &cal) == FASA_OK && cal, "finish");
    CHECK(fasa_calibrator_add(NULL, 0, q, k, 3) == FASA_ERROR_INVALID_ARGUMENT, "NULL calibrator");
    fasa_calibration_destroy(cal);
    fasa_calibrator_destroy(c);
    fasa_calibrator_destroy(NULL);
}

/* A cache with tokens in layer 1; returns the calibration through *cal. */
static fasa_kv_cache *make_cache(fasa_context *ctx, fasa_calibration **cal, uint32_t L, float *k, float *v)
{
    uint16_t dims[2 * HQ * 2 * NTIP];
    make_dims(dims);
    fasa_calibration_desc cd = {.shape = shape, .n_tip = NTIP, .dims = dims};
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = 64};
    fasa_kv_cache *cache = NULL;
    if (fasa_calibration_create(ctx, &cd, cal) != FASA_OK) return NULL;
    kd.calibration = *cal;
    if (fasa_kv_cache_create(ctx, &kd, &cache) != FASA_OK) return NULL;
    for (uint32_t i = 0; i < L * HKV * D; i++) {
        k[i] = (float)((i * 7) % 11) * 0.1f - 0.5f;
        v[i] = (float)((i * 3) % 13) * 0.1f - 0.6f;
    }
    if (fasa_kv_cache_append(cache, 1, L, k, v, FASA_DTYPE_F32) != FASA_OK) return NULL;
    return cache;
}

static void test_cache_create(fasa_context *ctx, fasa_calibration *cal)
{
    fasa_kv_cache *c = NULL;
    fasa_kv_cache_desc d = {.shape = shape, .capacity = 0};
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "capacity");
    d.capacity = 8;
    d.dtype = (fasa_dtype)3;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "dtype");
    d.dtype = FASA_DTYPE_F16;
    d.placement = (fasa_placement)4;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "placement");
    d.placement = FASA_PLACEMENT_DEVICE;
    d.fetch = FASA_FETCH_STAGED;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "OFFLOAD");
    d.placement = FASA_PLACEMENT_OFFLOAD;
    d.fetch = (fasa_fetch)7;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "desc.fetch");
    d.fetch = FASA_FETCH_DIRECT;
    d.row_cache_rows = 4;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "FASA_FETCH_STAGED");
    d.fetch = FASA_FETCH_STAGED;
    d.row_cache_rows = 9;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "row_cache_rows");
    d.row_cache_rows = 0;
    d.fetch = FASA_FETCH_DIRECT;
    d.placement = FASA_PLACEMENT_DEVICE;
    d.max_n_fac = FASA_MAX_N_FAC + 1;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "max_n_fac");
    d.max_n_fac = 0;
    uint32_t dense[] = {0, 5};
    d.dense_layers = dense;
    d.n_dense_layers = 2;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "dense_layers[1]");
    d.dense_layers = NULL;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "dense_layers");
    d.n_dense_layers = 0;
    d.flags = 0x10;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "flags");
    d.flags = 0;
    d.shape.n_q_heads = 5;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_INVALID_ARGUMENT, "n_kv_heads");
    d.shape = shape;
    d.shape.n_layers = 3;
    d.calibration = cal;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_MISMATCH, "n_layers");
    d.shape = shape;
    d.shape.layout = FASA_ROPE_NEOX;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_MISMATCH, "layout");
    /* more than the machine's memory (2^30 tokens x 1024 heads x 512 dims):
     * refused up front with the numbers, nothing touched */
    d.shape = (fasa_model_shape){4, 1024, 1024, 512, FASA_ROPE_NORM};
    d.capacity = 1u << 30;
    d.calibration = NULL;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, &c), FASA_ERROR_OUT_OF_HOST_MEMORY, "physical memory");
    d.shape = shape;
    d.capacity = 8;
    d.calibration = cal;
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, NULL, &c), FASA_ERROR_INVALID_ARGUMENT, "desc");
    EXPECT_FAIL(ctx, fasa_kv_cache_create(ctx, &d, NULL), FASA_ERROR_INVALID_ARGUMENT, "out");
    CHECK(c == NULL, "no cache after failures");
    CHECK(fasa_kv_cache_create(NULL, &d, &c) == FASA_ERROR_INVALID_ARGUMENT, "NULL ctx");
    CHECK(fasa_kv_cache_context(NULL) == NULL, "context of NULL");
    fasa_kv_cache_destroy(NULL);
}

static void test_append(fasa_context *ctx, fasa_kv_cache *cache)
{
    float k[70 * HKV * D], v[70 * HKV * D], kr[HKV * D], kr2[HKV * D];
    for (int i = 0; i < 70 * HKV * D; i++) k[i] = v[i] = 0.25f;
    uint32_t len0, len;
    fasa_kv_cache_length(cache, 1, &len0);
    CHECK(fasa_kv_cache_read(cache, 1, len0 - 1, 1, kr, NULL) == FASA_OK, "read last row");
    EXPECT_FAIL(ctx, fasa_kv_cache_append(cache, 2, 1, k, v, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT, "layer");
    EXPECT_FAIL(ctx, fasa_kv_cache_append(cache, 1, 0, k, v, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT, "n is 0");
    EXPECT_FAIL(ctx, fasa_kv_cache_append(cache, 1, 1, NULL, v, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT, "k is NULL");
    EXPECT_FAIL(ctx, fasa_kv_cache_append(cache, 1, 1, k, NULL, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT, "v is NULL");
    EXPECT_FAIL(ctx, fasa_kv_cache_append(cache, 1, 1, k, v, (fasa_dtype)9), FASA_ERROR_INVALID_ARGUMENT, "src_dtype");
    EXPECT_FAIL(ctx, fasa_kv_cache_append(cache, 1, 70, k, v, FASA_DTYPE_F32), FASA_ERROR_CAPACITY, "do not fit");
    k[HKV * D + D + 5] = NAN; /* token 1, head 1, dim 5 */
    EXPECT_FAIL(ctx, fasa_kv_cache_append(cache, 1, 2, k, v, FASA_DTYPE_F32), FASA_ERROR_NON_FINITE,
                "k[token 1][head 1][dim 5]");
    k[HKV * D + D + 5] = 0.25f;
    v[3] = -INFINITY;
    EXPECT_FAIL(ctx, fasa_kv_cache_append(cache, 1, 2, k, v, FASA_DTYPE_F32), FASA_ERROR_NON_FINITE, "v[token 0]");
    v[3] = 0.25f;
    uint16_t hk[HKV * D], hv[HKV * D];
    for (int i = 0; i < HKV * D; i++) hk[i] = hv[i] = 0x3c00; /* 1.0 */
    hk[9] = 0x7e00; /* half NaN */
    EXPECT_FAIL(ctx, fasa_kv_cache_append(cache, 1, 1, hk, hv, FASA_DTYPE_F16), FASA_ERROR_NON_FINITE, "dim 9");
    CHECK(fasa_kv_cache_append(NULL, 1, 1, k, v, FASA_DTYPE_F32) == FASA_ERROR_INVALID_ARGUMENT, "NULL cache");
    /* nothing was written: same length, same last row */
    fasa_kv_cache_length(cache, 1, &len);
    CHECK(fasa_kv_cache_read(cache, 1, len0 - 1, 1, kr2, NULL) == FASA_OK && len == len0 &&
              memcmp(kr, kr2, sizeof kr) == 0, "failed appends changed the cache");
    /* buffers variant */
    fasa_buffer *kb = NULL, *vb = NULL;
    CHECK(fasa_buffer_create(ctx, HKV * D * 4, &kb) == FASA_OK && fasa_buffer_create(ctx, HKV * D * 4, &vb) == FASA_OK,
          "buffers");
    EXPECT_FAIL(ctx, fasa_kv_cache_append_buffers(cache, 1, 2, kb, 0, vb, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
                "exceeds");
    EXPECT_FAIL(ctx, fasa_kv_cache_append_buffers(cache, 1, 1, kb, 2, vb, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
                "k range");
    EXPECT_FAIL(ctx, fasa_kv_cache_append_buffers(cache, 1, 1, NULL, 0, vb, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
                "k is NULL");
    EXPECT_FAIL(ctx, fasa_kv_cache_append_buffers(cache, 1, 1, kb, 0, vb, 0, FASA_DTYPE_F16 + 5), FASA_ERROR_INVALID_ARGUMENT,
                "src_dtype");
    CHECK(fasa_kv_cache_append_buffers(cache, 1, 1, kb, 0, vb, 0, FASA_DTYPE_F16) == FASA_OK, "half of a row buffer");
    fasa_kv_cache_truncate(cache, len0);
    fasa_buffer_destroy(kb);
    fasa_buffer_destroy(vb);
    /* queries */
    EXPECT_FAIL(ctx, fasa_kv_cache_length(cache, 9, &len), FASA_ERROR_INVALID_ARGUMENT, "layer");
    EXPECT_FAIL(ctx, fasa_kv_cache_length(cache, 0, NULL), FASA_ERROR_INVALID_ARGUMENT, "out");
    EXPECT_FAIL(ctx, fasa_kv_cache_read(cache, 1, len0, 1, kr, NULL), FASA_ERROR_INVALID_ARGUMENT, "exceed");
    EXPECT_FAIL(ctx, fasa_kv_cache_read(cache, 1, 0, 1, NULL, NULL), FASA_ERROR_INVALID_ARGUMENT, "both NULL");
    EXPECT_FAIL(ctx, fasa_kv_cache_read(cache, 1, 0, 0, kr, NULL), FASA_ERROR_INVALID_ARGUMENT, "n is 0");
    EXPECT_FAIL(ctx, fasa_kv_cache_read(cache, 5, 0, 1, kr, NULL), FASA_ERROR_INVALID_ARGUMENT, "layer");
    CHECK(fasa_kv_cache_truncate(NULL, 0) == FASA_ERROR_INVALID_ARGUMENT, "truncate NULL");
    fasa_memory_report mem;
    CHECK(fasa_kv_cache_context(cache) == ctx, "cache context");
    fasa_transfer_stats ts;
    CHECK(fasa_kv_cache_transfer_stats(NULL, &ts, false) == FASA_ERROR_INVALID_ARGUMENT, "transfer stats NULL");
    EXPECT_FAIL(ctx, fasa_kv_cache_transfer_stats(cache, NULL, false), FASA_ERROR_INVALID_ARGUMENT, "out");
    CHECK(fasa_kv_cache_transfer_stats(cache, &ts, true) == FASA_OK && ts.bytes == 0, "transfer stats of FASA-C");
    CHECK(fasa_kv_cache_memory(NULL, &mem) == FASA_ERROR_INVALID_ARGUMENT, "memory NULL");
    CHECK(fasa_kv_cache_memory(cache, &mem) == FASA_OK && mem.dense_equivalent == 2ull * 2 * HKV * 64 * D * 2 &&
              mem.max_union_dims == 2 * NTIP, "memory report");
}

static bool all_equal(const float *a, float value, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &value, 4) != 0) return false;
    return true;
}

static void test_decode(fasa_context *ctx, fasa_kv_cache *cache, fasa_kv_cache *no_cal_cache)
{
    float q[HQ * D], o[HQ * D];
    const float poison = -1234.5f;
    for (int i = 0; i < HQ * D; i++) { q[i] = (float)(i % 9) * 0.1f; o[i] = poison; }
    fasa_decode_desc d = {.n_fac = 8};
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 2, &d, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "layer");
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 0, &d, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "no tokens");
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, NULL, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "q is NULL");
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, q, NULL, NULL), FASA_ERROR_INVALID_ARGUMENT, "o is NULL");
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, q, q + 1, NULL), FASA_ERROR_INVALID_ARGUMENT, "overlap");
    d.mode = (fasa_mode)7;
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "mode");
    d.mode = FASA_MODE_FASA;
    d.gqa_select = (fasa_gqa_select)3;
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "gqa_select");
    d.gqa_select = FASA_GQA_PER_HEAD;
    d.n_fac = 3000;
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "max_n_fac");
    d.n_fac = 8;
    d.n_sink = 5;
    d.n_recent = 4; /* forced 9 > budget 8: rejected, never truncated */
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "n_sink + desc.n_recent");
    d.n_sink = d.n_recent = 0;
    q[D + 3] = NAN;
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, q, o, NULL), FASA_ERROR_NON_FINITE, "q[head 1][dim 3]");
    q[D + 3] = 0;
    int32_t sel[HQ * 8];
    fasa_decode_outputs out = {.selected = sel, .selected_stride = 4};
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, q, o, &out), FASA_ERROR_INVALID_ARGUMENT, "selected_stride");
    float scores[HQ * 64];
    out = (fasa_decode_outputs){.scores = scores, .scores_stride = 3};
    EXPECT_FAIL(ctx, fasa_decode_host(cache, 1, &d, q, o, &out), FASA_ERROR_INVALID_ARGUMENT, "scores_stride");
    EXPECT_FAIL(ctx, fasa_decode_host(no_cal_cache, 1, &d, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "calibration");
    CHECK(fasa_decode_host(NULL, 1, &d, q, o, NULL) == FASA_ERROR_INVALID_ARGUMENT, "NULL cache");
    CHECK(all_equal(o, poison, HQ * D), "a failed decode wrote o");
    /* buffer variant */
    fasa_buffer *qb = NULL, *ob = NULL, *small = NULL;
    CHECK(fasa_buffer_create(ctx, HQ * D * 4, &qb) == FASA_OK && fasa_buffer_create(ctx, HQ * D * 4, &ob) == FASA_OK &&
              fasa_buffer_create(ctx, 16, &small) == FASA_OK, "buffers");
    EXPECT_FAIL(ctx, fasa_decode(cache, 1, &d, NULL, 0, ob, 0), FASA_ERROR_INVALID_ARGUMENT, "q is NULL");
    EXPECT_FAIL(ctx, fasa_decode(cache, 1, &d, qb, 0, small, 0), FASA_ERROR_INVALID_ARGUMENT, "o needs");
    EXPECT_FAIL(ctx, fasa_decode(cache, 1, &d, qb, 2, ob, 0), FASA_ERROR_INVALID_ARGUMENT, "q_offset");
    EXPECT_FAIL(ctx, fasa_decode(cache, 1, &d, qb, 0, qb, 0), FASA_ERROR_INVALID_ARGUMENT, "overlap");
    fasa_context *other = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 1};
    fasa_buffer *foreign = NULL;
    CHECK(fasa_context_create(&cd, &other) == FASA_OK && fasa_buffer_create(other, HQ * D * 4, &foreign) == FASA_OK,
          "second context");
    EXPECT_FAIL(ctx, fasa_decode(cache, 1, &d, foreign, 0, ob, 0), FASA_ERROR_INVALID_ARGUMENT, "another context");
    CHECK(fasa_buffer_write(qb, 0, q, sizeof q) == FASA_OK && fasa_decode(cache, 1, &d, qb, 0, ob, 0) == FASA_OK,
          "valid buffer decode");
    fasa_buffer_destroy(foreign);
    fasa_context_destroy(other);
    fasa_buffer_destroy(qb);
    fasa_buffer_destroy(ob);
    fasa_buffer_destroy(small);
}

int main(void)
{
    test_names();
    test_list_devices();
    test_context();
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 2};
    if (fasa_context_create(&cd, &ctx) != FASA_OK) return 1;
    test_buffers(ctx);
    test_shape_and_calibration(ctx);
    test_calibrator(ctx);
    fasa_calibration *cal = NULL;
    static float k[64 * HKV * D], v[64 * HKV * D];
    fasa_kv_cache *cache = make_cache(ctx, &cal, 40, k, v);
    CHECK(cache != NULL, "cache: %s", fasa_context_last_error(ctx));
    fasa_kv_cache *plain = NULL;
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = 64};
    CHECK(fasa_kv_cache_create(ctx, &kd, &plain) == FASA_OK &&
              fasa_kv_cache_append(plain, 1, 40, k, v, FASA_DTYPE_F32) == FASA_OK, "cache without calibration");
    if (cache) {
        test_cache_create(ctx, cal);
        test_append(ctx, cache);
        test_decode(ctx, cache, plain);
    }
    fasa_kv_cache_destroy(plain);
    fasa_kv_cache_destroy(cache);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
    return check_done("test_api");
}
