/* Vulkan backend odds and ends: the device report of fasa_list_devices,
 * the on-disk pipeline cache under cache_dir, GPU timestamps, clear statuses
 * for allocations the device cannot hold, FASA-M placement, and the staging
 * paths used when device memory is not host-visible. */
#include "vt_common.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fasa__vk_test_force_staging(fasa_context *ctx, bool on);
void fasa__vk_test_inject_invalid(fasa_context *ctx);

static void devices(void)
{
    fasa_device_info d[8];
    uint32_t n = 8;
    char msg[256];
    VT_CHECK(fasa_list_devices(FASA_BACKEND_VULKAN, d, &n, msg, sizeof msg) == FASA_OK, "list_devices: %s", msg);
    for (uint32_t i = 0; i < n && i < 8; i++) {
        printf("device %u: %s | %s | vendor 0x%04x device 0x%04x | type %d | subgroup %u | shared %llu | max alloc %llu | "
               "UMA %d\n", i, d[i].name, d[i].driver, d[i].vendor_id, d[i].device_id, (int)d[i].type, d[i].subgroup_size,
               (unsigned long long)d[i].max_shared_memory, (unsigned long long)d[i].max_buffer_size, d[i].unified_memory);
        for (uint32_t h = 0; h < d[i].heap_count; h++)
            printf("  heap %u: %llu MiB%s%s\n", h, (unsigned long long)(d[i].heaps[h].size >> 20),
                   d[i].heaps[h].device_local ? " device-local" : "", d[i].heaps[h].host_visible ? " host-visible" : "");
        VT_CHECK(d[i].backend == FASA_BACKEND_VULKAN && d[i].index == i, "device %u: backend/index", i);
        VT_CHECK(d[i].name[0] && d[i].driver[0], "device %u: empty name or driver", i);
        VT_CHECK(d[i].subgroup_size > 0 && d[i].heap_count > 0 && d[i].max_buffer_size > 0,
                 "device %u: missing subgroup size, heaps or allocation limit", i);
    }
    uint32_t zero = 0;
    VT_CHECK(fasa_list_devices(FASA_BACKEND_VULKAN, NULL, &zero, NULL, 0) == FASA_OK && zero == n,
             "count-only query gave %u", zero);
}

static fasa_context *context(uint32_t flags, const char *cache_dir)
{
    fasa_context_desc d = {0};
    d.backend = FASA_BACKEND_VULKAN;
    d.flags = flags;
    d.cache_dir = cache_dir;
    fasa_context *ctx = NULL;
    VT_OK(NULL, fasa_context_create(&d, &ctx));
    if (!ctx) exit(1);
    return ctx;
}

static fasa_kv_cache *cache(fasa_context *ctx, const fasa_model_shape *s, uint32_t cap, fasa_placement pl,
                            fasa_dtype dt, fasa_status want)
{
    fasa_kv_cache_desc cd = {0};
    cd.shape = *s;
    cd.capacity = cap;
    cd.dtype = dt;
    cd.placement = pl;
    cd.flags = FASA_CACHE_NO_DENSE_LAYERS;
    fasa_kv_cache *c = NULL;
    fasa_status st = fasa_kv_cache_create(ctx, &cd, &c);
    VT_CHECK(st == want, "cache create: %s (want %s): %s", fasa_status_string(st), fasa_status_string(want),
             fasa_context_last_error(ctx));
    return c;
}

static void pipeline_cache(void)
{
    char dir[] = "/tmp/fasa-vk-cache-XXXXXX";
    VT_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    fasa_model_shape s = {1, 4, 2, 64, FASA_ROPE_NORM};
    for (int round = 0; round < 2; round++) {
        fasa_context *ctx = context(0, dir);
        fasa_kv_cache *c = cache(ctx, &s, 64, FASA_PLACEMENT_DEVICE, FASA_DTYPE_F16, FASA_OK);
        fasa_kv_cache_destroy(c);
        fasa_context_destroy(ctx);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls %s/libfasa-vk-*.bin >/dev/null 2>&1", dir);
    VT_CHECK(system(cmd) == 0, "no pipeline cache file written under %s", dir);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static void fill(fasa_context *ctx, fasa_kv_cache *c, uint32_t n, uint32_t row, uint64_t seed)
{
    vt_rng r = {seed};
    float *k = malloc((size_t)n * row * 4), *v = malloc((size_t)n * row * 4);
    for (size_t i = 0; i < (size_t)n * row; i++) k[i] = vt_normal(&r), v[i] = vt_normal(&r);
    VT_OK(ctx, fasa_kv_cache_append(c, 0, n, k, v, FASA_DTYPE_F32));
    free(k), free(v);
}

/* Dense and oracle steps agree between placements and transfer paths. */
static void placements_and_staging(void)
{
    fasa_model_shape s = {1, 8, 2, 64, FASA_ROPE_NEOX};
    uint32_t n = 3000, row = s.n_kv_heads * s.head_dim, nq = s.n_q_heads * s.head_dim;
    fasa_context *a = context(FASA_CONTEXT_PROFILE, NULL), *b = context(0, NULL);
    fasa__vk_test_force_staging(b, true);
    fasa_kv_cache *ca = cache(a, &s, n, FASA_PLACEMENT_DEVICE, FASA_DTYPE_F16, FASA_OK);
    fasa_kv_cache *cb = cache(b, &s, n, FASA_PLACEMENT_OFFLOAD, FASA_DTYPE_F16, FASA_OK);
    if (!ca || !cb) return;
    fill(a, ca, n, row, 11);
    fill(b, cb, n, row, 11);
    float q[8 * 64], oa[8 * 64], ob[8 * 64];
    vt_rng r = {12};
    for (uint32_t i = 0; i < nq; i++) q[i] = vt_normal(&r);
    fasa_decode_desc modes[2] = {{.mode = FASA_MODE_DENSE, .n_fac = 0, .n_sink = 0, .n_recent = 0, .gqa_select = 0}, {.mode = FASA_MODE_ORACLE, .n_fac = 300, .n_sink = 4, .n_recent = 4, .gqa_select = FASA_GQA_PER_GROUP}};
    for (int m = 0; m < 2; m++) {
        VT_OK(a, fasa_decode_host(ca, 0, &modes[m], q, oa, NULL));
        VT_OK(b, fasa_decode_host(cb, 0, &modes[m], q, ob, NULL));
        double e = vt_nmse(oa, ob, nq);
        VT_CHECK(e <= 1e-12, "mode %d: device placement vs offload+staging NMSE %.3g", m, e);
        uint64_t ns = 0;
        VT_CHECK(fasa_context_last_step_ns(a, &ns) == FASA_OK && ns > 0, "no step time with FASA_CONTEXT_PROFILE");
        printf("mode %d step: %.3f ms (GPU timestamps)\n", m, ns / 1e6);
    }
    uint64_t ns = 0;
    VT_CHECK(fasa_context_last_step_ns(b, &ns) == FASA_ERROR_UNSUPPORTED, "step time without FASA_CONTEXT_PROFILE");
    /* FASA-M saves device memory only where host-visible memory is not
     * device-local; a unified-memory device (lavapipe) reports it all as device */
    fasa_memory_report ra, rb;
    fasa_kv_cache_memory(ca, &ra);
    fasa_kv_cache_memory(cb, &rb);
    fasa_device_info dev;
    fasa_context_device(b, &dev);
    bool saves = dev.unified_memory ? rb.host_bytes == 0 && rb.device_bytes == ra.device_bytes
                                    : rb.host_bytes > 0 && rb.device_bytes < ra.device_bytes;
    VT_CHECK(ra.host_bytes == 0 && saves, "placement accounting (unified memory %d): device %llu/%llu host %llu/%llu",
             (int)dev.unified_memory, (unsigned long long)ra.device_bytes, (unsigned long long)rb.device_bytes,
             (unsigned long long)ra.host_bytes, (unsigned long long)rb.host_bytes);
    /* staged buffer round trip at odd offsets */
    fasa_buffer *buf = NULL;
    VT_OK(b, fasa_buffer_create(b, 40000, &buf));
    uint8_t *x = malloc(40000), *y = malloc(40000);
    for (int i = 0; i < 40000; i++) x[i] = (uint8_t)(i * 7 + 3);
    VT_OK(b, fasa_buffer_write(buf, 4, x, 39992));
    memset(y, 0, 40000);
    VT_OK(b, fasa_buffer_read(buf, 4, y, 39992));
    VT_CHECK(memcmp(x, y, 39992) == 0, "staged buffer round trip differs");
    fasa_buffer_destroy(buf);
    free(x), free(y);
    fasa_kv_cache_destroy(ca);
    fasa_kv_cache_destroy(cb);
    fasa_context_destroy(a);
    fasa_context_destroy(b);
}

static void limits(void)
{
    fasa_context *ctx = context(0, NULL);
    fasa_model_shape big = {4, 64, 64, 512, FASA_ROPE_NORM};
    fasa_kv_cache *c = cache(ctx, &big, 1u << 20, FASA_PLACEMENT_DEVICE, FASA_DTYPE_F32, FASA_ERROR_OUT_OF_DEVICE_MEMORY);
    VT_CHECK(c == NULL, "an impossible cache was created");
    printf("huge cache: %s\n", fasa_context_last_error(ctx));
    fasa_buffer *buf = NULL;
    fasa_status st = fasa_buffer_create(ctx, 1ull << 40, &buf);
    VT_CHECK(st == FASA_ERROR_UNSUPPORTED || st == FASA_ERROR_OUT_OF_DEVICE_MEMORY, "1 TiB buffer: %s",
             fasa_status_string(st));
    printf("1 TiB buffer: %s\n", fasa_context_last_error(ctx));
    fasa_context_destroy(ctx);
}

/* FASA-M accounting: rows needed, row-cache hits and bytes equal the CPU
 * backend's (the reference policy of src/rowcache.c) step after step. */
static void transfer_stats(void)
{
    fasa_model_shape s = {1, 8, 2, 64, FASA_ROPE_NORM};
    uint32_t n = 3000, row = s.n_kv_heads * s.head_dim, nq = s.n_q_heads * s.head_dim;
    fasa_context *ctx[2] = {context(0, NULL), vt_context(FASA_BACKEND_CPU, 0)};
    fasa_kv_cache *c[2];
    for (int b = 0; b < 2; b++) {
        fasa_kv_cache_desc cd = {0};
        cd.shape = s;
        cd.capacity = n;
        cd.dtype = FASA_DTYPE_F32;
        cd.flags = FASA_CACHE_NO_DENSE_LAYERS;
        cd.placement = FASA_PLACEMENT_OFFLOAD;
        cd.fetch = FASA_FETCH_STAGED;
        cd.row_cache_rows = 600;
        c[b] = NULL;
        VT_OK(ctx[b], fasa_kv_cache_create(ctx[b], &cd, &c[b]));
        if (!c[b]) return;
        fill(ctx[b], c[b], n, row, 21);
    }
    vt_rng r = {22};
    float *q = malloc(nq * 4), *o = malloc(nq * 4);
    for (int step = 0; step < 6; step++) {
        for (uint32_t i = 0; i < nq; i++) q[i] = vt_normal(&r) + (step % 2 ? 0.0f : 0.5f);
        fasa_decode_desc d = {.mode = FASA_MODE_ORACLE, .n_fac = 64, .n_sink = 0, .n_recent = 0, .gqa_select = step >= 3 ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD};
        for (int b = 0; b < 2; b++) VT_OK(ctx[b], fasa_decode_host(c[b], 0, &d, q, o, NULL));
    }
    fasa_transfer_stats t[2];
    for (int b = 0; b < 2; b++) VT_OK(ctx[b], fasa_kv_cache_transfer_stats(c[b], &t[b], false));
    printf("FASA-M stats vulkan: %llu steps, %llu rows, %llu cached, %llu bytes; cpu: %llu, %llu, %llu, %llu\n",
           (unsigned long long)t[0].steps, (unsigned long long)t[0].rows_needed, (unsigned long long)t[0].rows_cached,
           (unsigned long long)t[0].bytes, (unsigned long long)t[1].steps, (unsigned long long)t[1].rows_needed,
           (unsigned long long)t[1].rows_cached, (unsigned long long)t[1].bytes);
    VT_CHECK(memcmp(&t[0], &t[1], sizeof t[0]) == 0 && t[0].steps == 6 && t[0].rows_cached > 0,
             "transfer statistics differ from the CPU backend's");
    for (int b = 0; b < 2; b++) {
        fasa_kv_cache_destroy(c[b]);
        fasa_context_destroy(ctx[b]);
    }
    free(q), free(o);
}

/* A validation message fails the call that caused it, naming the message. */
static void validation_fails_the_call(void)
{
    fasa_context_desc vd = {0};
    vd.backend = FASA_BACKEND_VULKAN;
    vd.flags = FASA_CONTEXT_ENABLE_VALIDATION;
    fasa_context *probe = NULL;
    if (fasa_context_create(&vd, &probe) == FASA_ERROR_UNSUPPORTED) {
        printf("note: no validation layer installed; skipping the validation check\n");
        return;
    }
    fasa_context_destroy(probe);
    fasa_context *ctx = context(FASA_CONTEXT_ENABLE_VALIDATION, NULL);
    fasa_model_shape s = {1, 4, 2, 32, FASA_ROPE_NORM};
    fasa_kv_cache *c = cache(ctx, &s, 16, FASA_PLACEMENT_DEVICE, FASA_DTYPE_F32, FASA_OK);
    if (!c) return;
    fill(ctx, c, 4, s.n_kv_heads * s.head_dim, 3);
    float q[4 * 32] = {0}, o[4 * 32];
    fasa_decode_desc d = {.mode = FASA_MODE_DENSE, .n_fac = 0, .n_sink = 0, .n_recent = 0, .gqa_select = 0};
    VT_OK(ctx, fasa_decode_host(c, 0, &d, q, o, NULL));
    fasa__vk_test_inject_invalid(ctx);
    fasa_status st = fasa_decode_host(c, 0, &d, q, o, NULL);
    const char *m = fasa_context_last_error(ctx);
    VT_CHECK(st == FASA_ERROR_BACKEND && strstr(m, "validation") && strstr(m, "VUID"),
             "invalid command: %s, message \"%s\"", fasa_status_string(st), m);
    printf("validation message -> %s: %.120s...\n", fasa_status_string(st), m);
    VT_OK(ctx, fasa_decode_host(c, 0, &d, q, o, NULL)); /* the next call is clean again */
    fasa_kv_cache_destroy(c);
    fasa_context_destroy(ctx);
}

/* With VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation in the environment
 * (the usual way to turn validation on) the loader announces the variable
 * through the debug messenger; that note is no validation message: the
 * backend stays available, with and without FASA_CONTEXT_ENABLE_VALIDATION,
 * and a real validation error is still counted. */
static void instance_layers_env(void)
{
    const char *env = getenv("VK_INSTANCE_LAYERS");
    VT_CHECK(env && strstr(env, "VK_LAYER_KHRONOS_validation"), "run this mode with VK_INSTANCE_LAYERS set (got %s)",
             env ? env : "nothing");
    fasa_device_info d[4];
    uint32_t n = 4;
    char msg[512] = "";
    VT_CHECK(fasa_list_devices(FASA_BACKEND_VULKAN, d, &n, msg, sizeof msg) == FASA_OK && n > 0,
             "vulkan unavailable with VK_INSTANCE_LAYERS set: %s", msg);
    for (int validated = 0; validated < 2; validated++) {
        fasa_context_desc cd = {0};
        cd.backend = FASA_BACKEND_VULKAN;
        cd.flags = validated ? FASA_CONTEXT_ENABLE_VALIDATION : 0;
        cd.error_message = msg;
        cd.error_message_size = sizeof msg;
        fasa_context *ctx = NULL;
        fasa_status st = fasa_context_create(&cd, &ctx);
        if (validated && st == FASA_ERROR_UNSUPPORTED) {
            printf("note: no validation layer installed (%s)\n", msg);
            break;
        }
        VT_CHECK(st == FASA_OK, "context%s with VK_INSTANCE_LAYERS set: %s: %s", validated ? " (validation)" : "",
                 fasa_status_string(st), msg);
        if (!ctx) continue;
        fasa_model_shape s = {1, 4, 2, 32, FASA_ROPE_NORM};
        fasa_kv_cache *c = cache(ctx, &s, 16, FASA_PLACEMENT_DEVICE, FASA_DTYPE_F32, FASA_OK);
        if (c) {
            fill(ctx, c, 4, s.n_kv_heads * s.head_dim, 3);
            float q[4 * 32] = {0}, o[4 * 32];
            fasa_decode_desc dd = {.mode = FASA_MODE_DENSE};
            VT_OK(ctx, fasa_decode_host(c, 0, &dd, q, o, NULL));
            fasa_kv_cache_destroy(c);
        }
        fasa_context_destroy(ctx);
    }
    validation_fails_the_call();
}

int main(int argc, char **argv)
{
    vt_require_vulkan();
    if (argc > 1 && strcmp(argv[1], "instance-layers") == 0) {
        instance_layers_env();
        return vt_finish("test_vk_misc instance-layers");
    }
    devices();
    pipeline_cache();
    placements_and_staging();
    limits();
    validation_fails_the_call();
    transfer_stats();
    return vt_finish("test_vk_misc");
}
