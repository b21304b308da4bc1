/* The run-time side of the ABI rules (docs/API.md, "Loading and ABI"):
 * fasa_version() against the header macros, and the extension chain (`next`)
 * of every description struct: NULL works as before, an entry of a type the
 * library does not know is FASA_ERROR_INVALID_ARGUMENT naming the struct and
 * the type, at every entry point that takes the struct.  Links libfasa.so
 * like an application. */
#include "../check.h"
#include "fasa.h"
#include "fasa_cuda.h"
#ifdef FASA_TEST_HAVE_VULKAN
#include "fasa_vulkan.h"
#endif
#ifdef FASA_TEST_HAVE_OPENCL
#include "fasa_opencl.h"
#endif

#include <stdlib.h>
#include <string.h>

#define HQ 4
#define HKV 2
#define D 64
#define NTIP 4
#define L 40

/* A chain entry of a type no libfasa of this version knows. */
static const fasa_struct_header unknown_ext = {.type = (fasa_struct_type)0x4242, .next = NULL};

/* The message names the struct and the type (0x4242 = 16962). */
static int names_chain(const char *msg, const char *struct_name)
{
    return strstr(msg, struct_name) && strstr(msg, "16962") && strstr(msg, "next");
}

#define EXPECT_CHAIN(ctx, expr, struct_name)                                                       \
    do {                                                                                           \
        fasa_status st_ = (expr);                                                                  \
        const char *m_ = fasa_context_last_error(ctx);                                             \
        CHECK(st_ == FASA_ERROR_INVALID_ARGUMENT && names_chain(m_, struct_name),                  \
              "%s: got %s (%s), wanted INVALID_ARGUMENT naming %s and type 16962", #expr,           \
              fasa_status_string(st_), m_, struct_name);                                           \
    } while (0)

static void test_version(void)
{
    uint32_t v = fasa_version();
    CHECK(v == FASA_VERSION, "fasa_version() 0x%x, headers 0x%x", v, (unsigned)FASA_VERSION);
    CHECK(FASA_VERSION_GET_MAJOR(v) == FASA_VERSION_MAJOR && FASA_VERSION_GET_MINOR(v) == FASA_VERSION_MINOR &&
              FASA_VERSION_GET_PATCH(v) == FASA_VERSION_PATCH,
          "version fields %u.%u.%u", FASA_VERSION_GET_MAJOR(v), FASA_VERSION_GET_MINOR(v), FASA_VERSION_GET_PATCH(v));
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", FASA_VERSION_MAJOR, FASA_VERSION_MINOR, FASA_VERSION_PATCH);
    CHECK(fasa_version_string() && strcmp(fasa_version_string(), want) == 0, "fasa_version_string() '%s', want '%s'",
          fasa_version_string() ? fasa_version_string() : "(null)", want);
    CHECK(FASA_MAKE_VERSION(1, 2, 3) > FASA_MAKE_VERSION(1, 1, 999) &&
              FASA_MAKE_VERSION(2, 0, 0) > FASA_MAKE_VERSION(1, 1023, 4095),
          "versions order as numbers");
}

static void test_context_chain(void)
{
    char msg[512] = "";
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 1, .error_message = msg,
                            .error_message_size = sizeof msg, .next = &unknown_ext};
    fasa_status st = fasa_context_create(&cd, &ctx);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && !ctx && names_chain(msg, "fasa_context_desc"),
          "context desc chain: %s (%s)", fasa_status_string(st), msg);
    /* a chain that loops is refused, not walked forever */
    fasa_struct_header loop = {.type = (fasa_struct_type)7, .next = NULL};
    loop.next = &loop;
    cd.next = &loop;
    st = fasa_context_create(&cd, &ctx);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && !ctx, "looping chain: %s (%s)", fasa_status_string(st), msg);
    fasa_context_destroy(ctx);
}

/* Embedding structs: the chain is checked before anything of the host's is
 * touched, so NULL handles are fine here. */
static void test_embed_chains(void)
{
    char msg[512] = "";
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.error_message = msg, .error_message_size = sizeof msg};
    fasa_status st;
#ifdef FASA_TEST_HAVE_VULKAN
    fasa_vk_embed ve = {.next = &unknown_ext};
    cd.backend = FASA_BACKEND_VULKAN, cd.embed = &ve;
    st = fasa_context_create(&cd, &ctx);
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && !ctx && names_chain(msg, "fasa_vk_embed"), "vk embed chain: %s (%s)",
          fasa_status_string(st), msg);
#endif
#ifdef FASA_TEST_HAVE_OPENCL
    fasa_cl_embed ce = {.next = &unknown_ext};
    cd.backend = FASA_BACKEND_OPENCL, cd.embed = &ce;
    msg[0] = '\0';
    st = fasa_context_create(&cd, &ctx);
    /* without the ICD loader the backend is unavailable before the embed is read */
    CHECK(!ctx && ((st == FASA_ERROR_INVALID_ARGUMENT && names_chain(msg, "fasa_cl_embed")) ||
                   (st == FASA_ERROR_BACKEND_UNAVAILABLE && strstr(msg, "libOpenCL"))),
          "cl embed chain: %s (%s)", fasa_status_string(st), msg);
#endif
    fasa_cuda_embed ue = {.device = 0, .next = &unknown_ext};
    cd.backend = FASA_BACKEND_CUDA, cd.embed = &ue;
    msg[0] = '\0';
    st = fasa_context_create(&cd, &ctx);
    if (fasa_backend_compiled(FASA_BACKEND_CUDA))
        CHECK(st == FASA_ERROR_INVALID_ARGUMENT && !ctx && names_chain(msg, "fasa_cuda_embed"),
              "cuda embed chain: %s (%s)", fasa_status_string(st), msg);
    else
        CHECK(st == FASA_ERROR_BACKEND_UNAVAILABLE && !ctx, "cuda not compiled: %s (%s)", fasa_status_string(st), msg);
    (void)st;
}

static void test_object_chains(void)
{
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 1};
    if (fasa_context_create(&cd, &ctx) != FASA_OK) {
        CHECK(0, "CPU context");
        return;
    }
    fasa_model_shape shape = {.n_layers = 2, .n_q_heads = HQ, .n_kv_heads = HKV, .head_dim = D};

    /* calibration */
    uint16_t dims[2 * HQ * 2 * NTIP];
    for (int h = 0; h < 2 * HQ; h++)
        for (int i = 0; i < 2 * NTIP; i++) dims[h * 2 * NTIP + i] = (uint16_t)(40 + i);
    fasa_calibration_desc cald = {.shape = shape, .n_tip = NTIP, .dims = dims, .next = &unknown_ext};
    fasa_calibration *cal = NULL;
    EXPECT_CHAIN(ctx, fasa_calibration_create(ctx, &cald, &cal), "fasa_calibration_desc");
    CHECK(cal == NULL, "no calibration on failure");
    cald.next = NULL;
    CHECK_STATUS(ctx, fasa_calibration_create(ctx, &cald, &cal), FASA_OK);

    /* calibrator */
    fasa_calibrator_desc crd = {.shape = shape, .n_tip = NTIP, .next = &unknown_ext};
    fasa_calibrator *cr = NULL;
    EXPECT_CHAIN(ctx, fasa_calibrator_create(ctx, &crd, &cr), "fasa_calibrator_desc");
    crd.next = NULL;
    CHECK_STATUS(ctx, fasa_calibrator_create(ctx, &crd, &cr), FASA_OK);
    fasa_calibrator_destroy(cr);

    /* cache: create and the host-memory query share the check */
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = 64, .calibration = cal, .next = &unknown_ext};
    fasa_kv_cache *cache = NULL;
    EXPECT_CHAIN(ctx, fasa_kv_cache_create(ctx, &kd, &cache), "fasa_kv_cache_desc");
    CHECK(cache == NULL, "no cache on failure");
    uint64_t size = 0, align = 0;
    kd.placement = FASA_PLACEMENT_OFFLOAD;
    EXPECT_CHAIN(ctx, fasa_kv_cache_host_memory_requirements(ctx, &kd, &size, &align), "fasa_kv_cache_desc");
    kd.placement = FASA_PLACEMENT_DEVICE;
    kd.next = NULL;
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_OK);
    if (!cache) goto out;

    float k[L * HKV * D], v[L * HKV * D], q[HQ * D], o[HQ * D], o_ref[HQ * D];
    for (int i = 0; i < L * HKV * D; i++) k[i] = (float)((i * 37) % 17) / 17.0f - 0.5f, v[i] = (float)(i % 13) / 13.0f;
    for (int i = 0; i < HQ * D; i++) q[i] = (float)((i * 11) % 7) / 7.0f - 0.5f;
    for (uint32_t l = 0; l < shape.n_layers; l++)
        CHECK_STATUS(ctx, fasa_kv_cache_append(cache, l, L, k, v, FASA_DTYPE_F32), FASA_OK);

    /* decode: NULL chain (zero-initialised) works exactly as before */
    fasa_decode_desc dd = {.n_fac = 16};
    int32_t sel[HQ * 16];
    fasa_decode_outputs out = {.selected = sel, .selected_stride = 16};
    CHECK_STATUS(ctx, fasa_decode_host(cache, 1, &dd, q, o_ref, &out), FASA_OK);
    CHECK(out.path == FASA_PATH_SPARSE && out.n_selected == 16, "sparse step: path %d, %u selected", (int)out.path,
          out.n_selected);

    /* an unknown desc chain: rejected, o untouched */
    for (int i = 0; i < HQ * D; i++) o[i] = 12345.0f;
    dd.next = &unknown_ext;
    EXPECT_CHAIN(ctx, fasa_decode_host(cache, 1, &dd, q, o, NULL), "fasa_decode_desc");
    CHECK(o[0] == 12345.0f && o[HQ * D - 1] == 12345.0f, "o untouched after a rejected step");
    fasa_buffer *qb = NULL, *ob = NULL;
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, sizeof q, &qb), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, sizeof o, &ob), FASA_OK);
    if (qb && ob) {
        CHECK_STATUS(ctx, fasa_buffer_write(qb, 0, q, sizeof q), FASA_OK);
        EXPECT_CHAIN(ctx, fasa_decode(cache, 1, &dd, qb, 0, ob, 0), "fasa_decode_desc");
        dd.next = NULL;
        CHECK_STATUS(ctx, fasa_decode(cache, 1, &dd, qb, 0, ob, 0), FASA_OK);
        CHECK_STATUS(ctx, fasa_buffer_read(ob, 0, o, sizeof o), FASA_OK);
        CHECK(memcmp(o, o_ref, sizeof o) == 0, "fasa_decode equals fasa_decode_host");
    }
    fasa_buffer_destroy(qb);
    fasa_buffer_destroy(ob);

    /* an unknown outputs chain */
    dd.next = NULL;
    out.next = (void *)&unknown_ext;
    EXPECT_CHAIN(ctx, fasa_decode_host(cache, 1, &dd, q, o, &out), "fasa_decode_outputs");
    out.next = NULL;
    CHECK_STATUS(ctx, fasa_decode_host(cache, 1, &dd, q, o, &out), FASA_OK);
    CHECK(memcmp(o, o_ref, sizeof o) == 0, "same output after the rejected calls");
    fasa_kv_cache_destroy(cache);
out:
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
}

int main(void)
{
    test_version();
    test_context_chain();
    test_embed_chains();
    test_object_chains();
    return check_done("test_abi");
}
