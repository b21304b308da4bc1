/* Bad-input matrix of the CUDA-specific entry points that needs no CUDA
 * device, so it runs (and must pass) on every machine and in every build:
 * NULL arguments, contexts and caches of another backend, embedding
 * descriptions that are wrong before any device is touched, and how a
 * machine without a device is reported ("cuda: compiled, no device (...)").
 * CT_EXPECT_CUDA (from meson) says whether the backend is compiled in; in
 * builds without it the stubs of src/cuda/cuda_stub.c answer. */
#include "ct_common.h"
#include "fasa_cuda.h"

#include <string.h>

#ifndef CT_EXPECT_CUDA
#error "build with -DCT_EXPECT_CUDA=0 or 1"
#endif

static bool has_device;

static void check_listing(void)
{
    CT_CHECK(fasa_backend_compiled(FASA_BACKEND_CUDA) == CT_EXPECT_CUDA, "fasa_backend_compiled(CUDA) is %d",
             (int)fasa_backend_compiled(FASA_BACKEND_CUDA));
    fasa_device_info dev[4];
    uint32_t n = 4;
    char msg[512] = "";
    fasa_status st = fasa_list_devices(FASA_BACKEND_CUDA, dev, &n, msg, sizeof msg);
    has_device = st == FASA_OK && n > 0;
    if (!CT_EXPECT_CUDA) {
        CT_CHECK(st == FASA_ERROR_BACKEND_UNAVAILABLE && strstr(msg, "not compiled"), "not compiled: %s (%s)",
                 fasa_status_string(st), msg);
        return;
    }
    if (has_device) {
        printf("a CUDA device is present: %s (%s); the no-device checks are skipped\n", dev[0].name, dev[0].driver);
        CT_CHECK(dev[0].backend == FASA_BACKEND_CUDA && dev[0].vendor_id == 0x10de && dev[0].subgroup_size == 32,
                 "device info: backend %d vendor 0x%x subgroup %u", (int)dev[0].backend, dev[0].vendor_id,
                 dev[0].subgroup_size);
        return;
    }
    printf("no CUDA device: %s\n", msg);
    CT_CHECK(st == FASA_ERROR_BACKEND_UNAVAILABLE, "no device: %s", fasa_status_string(st));
    CT_CHECK(strncmp(msg, "cuda: compiled, no device (", 27) == 0, "no-device message: '%s'", msg);
    CT_CHECK(n == 0, "no device but count %u", n);
    /* a context on the CUDA backend fails the same way, with the reason */
    char err[512] = "";
    fasa_context_desc d = {.backend = FASA_BACKEND_CUDA, .error_message = err, .error_message_size = sizeof err};
    fasa_context *ctx = NULL;
    CT_STATUS(NULL, fasa_context_create(&d, &ctx), FASA_ERROR_BACKEND_UNAVAILABLE);
    CT_CHECK(ctx == NULL && strstr(err, "cuda: compiled, no device ("), "context message: '%s'", err);
    /* so does an embedding description that is valid on its face */
    fasa_cuda_embed e = {.device = 0, .stream = NULL};
    d.embed = &e;
    CT_STATUS(NULL, fasa_context_create(&d, &ctx), FASA_ERROR_BACKEND_UNAVAILABLE);
    CT_CHECK(strstr(err, "no device"), "embedded context message: '%s'", err);
}

/* Embedding descriptions rejected before any device is touched. */
static void check_embed_desc(void)
{
    char err[512] = "";
    fasa_context *ctx = NULL;
    fasa_cuda_embed e = {.device = -1, .stream = NULL};
    fasa_context_desc d = {.backend = FASA_BACKEND_CUDA, .embed = &e, .error_message = err,
                           .error_message_size = sizeof err};
    CT_STATUS(NULL, fasa_context_create(&d, &ctx),
              CT_EXPECT_CUDA ? FASA_ERROR_INVALID_ARGUMENT : FASA_ERROR_BACKEND_UNAVAILABLE);
    if (CT_EXPECT_CUDA) CT_CHECK(strstr(err, "desc.embed: device -1"), "negative device message: '%s'", err);
    e.device = 0;
    d.backend = FASA_BACKEND_AUTO; /* embedding needs an explicit backend */
    CT_STATUS(NULL, fasa_context_create(&d, &ctx), FASA_ERROR_INVALID_ARGUMENT);
    CT_CHECK(strstr(err, "desc.embed"), "auto + embed message: '%s'", err);
    d.backend = FASA_BACKEND_CPU;
    CT_STATUS(NULL, fasa_context_create(&d, &ctx), FASA_ERROR_INVALID_ARGUMENT);
    CT_CHECK(ctx == NULL, "a failed create left a context");
    if (has_device && CT_EXPECT_CUDA) {
        e.device = 1 << 20; /* out of range on any machine */
        d.backend = FASA_BACKEND_CUDA;
        CT_STATUS(NULL, fasa_context_create(&d, &ctx), FASA_ERROR_INVALID_ARGUMENT);
        CT_CHECK(strstr(err, "out of range"), "device range message: '%s'", err);
    }
}

/* NULL arguments and objects of another backend (a CPU context). */
static void check_wrong_backend(void)
{
    fasa_context *cpu = ct_context(FASA_BACKEND_CPU, 0);
    float host[64] = {0};
    fasa_buffer *buf = (fasa_buffer *)(uintptr_t)1; /* must be overwritten with NULL */
    void *ptr = NULL, *stream = NULL;

    CT_STATUS(NULL, fasa_cuda_buffer_wrap(NULL, host, sizeof host, &buf), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(cpu, fasa_cuda_buffer_wrap(cpu, host, sizeof host, &buf), FASA_ERROR_UNSUPPORTED);
    CT_CHECK(buf == NULL, "wrap on a cpu context left *out set");
    CT_CHECK(strstr(fasa_context_last_error(cpu), "fasa_cuda_buffer_wrap") &&
                 strstr(fasa_context_last_error(cpu), "not cuda"),
             "message: '%s'", fasa_context_last_error(cpu));
    CT_STATUS(cpu, fasa_cuda_buffer_wrap(cpu, NULL, 0, NULL), FASA_ERROR_UNSUPPORTED);

    fasa_buffer *cb = NULL;
    CT_OK(cpu, fasa_buffer_create(cpu, 256, &cb));
    CT_STATUS(NULL, fasa_cuda_buffer_pointer(NULL, &ptr), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(cpu, fasa_cuda_buffer_pointer(cb, &ptr), FASA_ERROR_UNSUPPORTED);
    CT_CHECK(ptr == NULL, "buffer_pointer wrote a pointer for a cpu buffer");
    CT_STATUS(cpu, fasa_cuda_buffer_pointer(cb, NULL), FASA_ERROR_UNSUPPORTED);
    CT_STATUS(NULL, fasa_cuda_context_stream(NULL, &stream), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(cpu, fasa_cuda_context_stream(cpu, &stream), FASA_ERROR_UNSUPPORTED);
    CT_CHECK(strstr(fasa_context_last_error(cpu), "fasa_cuda_context_stream"), "message: '%s'",
             fasa_context_last_error(cpu));

    fasa_model_shape s = {1, 4, 2, 16, FASA_ROPE_NORM};
    fasa_kv_cache_desc cd = {.shape = s, .capacity = 64, .flags = FASA_CACHE_NO_DENSE_LAYERS};
    fasa_kv_cache *cache = NULL;
    CT_OK(cpu, fasa_kv_cache_create(cpu, &cd, &cache));
    fasa_decode_desc dd = {.mode = FASA_MODE_DENSE};
    CT_STATUS(NULL, fasa_cuda_enqueue_decode(NULL, 0, &dd, cb, 0, cb, 0), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(cpu, fasa_cuda_enqueue_decode(cache, 0, &dd, cb, 0, cb, 0), FASA_ERROR_UNSUPPORTED);
    CT_CHECK(strstr(fasa_context_last_error(cpu), "fasa_cuda_enqueue_decode"), "message: '%s'",
             fasa_context_last_error(cpu));
    CT_STATUS(cpu, fasa_cuda_enqueue_decode(cache, 0, NULL, NULL, 0, NULL, 0), FASA_ERROR_UNSUPPORTED);
    CT_STATUS(NULL, fasa_cuda_enqueue_append(NULL, 0, 1, cb, 0, cb, 0, FASA_DTYPE_F32),
              FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(cpu, fasa_cuda_enqueue_append(cache, 0, 1, cb, 0, cb, 0, FASA_DTYPE_F32), FASA_ERROR_UNSUPPORTED);
    uint32_t len = 99;
    CT_OK(cpu, fasa_kv_cache_length(cache, 0, &len));
    CT_CHECK(len == 0, "a rejected append changed the cache length to %u", len);
    fasa_kv_cache_destroy(cache);
    fasa_buffer_destroy(cb);
    fasa_context_destroy(cpu);
}

int main(void)
{
    check_listing();
    check_embed_desc();
    check_wrong_backend();
    return ct_finish("test_cuda_validate");
}
