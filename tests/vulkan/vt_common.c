/* Helpers shared by the Vulkan backend tests. */
#include "vt_common.h"

#include <math.h>
#include <string.h>

int vt_failures = 0;

/* Keep drivers loaded: lavapipe leaves a 128-byte allocation reachable only
 * from its own data, which LeakSanitizer reports once the library is
 * unloaded (GPU_NOTES §1).  A no-op dlclose keeps real leaks visible. */
int dlclose(void *handle);
int dlclose(void *handle)
{
    (void)handle;
    return 0;
}

/* The validation layer's synchronization validation (1.3.239) leaves
 * objects of its own behind at vkDestroyInstance: LeakSanitizer ignores
 * leaks allocated inside the layer's module only (no effect without ASan). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libVkLayer_khronos_validation.so\n"; }

uint64_t vt_next(vt_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float vt_uniform(vt_rng *r) { return (float)(vt_next(r) >> 40) / (float)(1ull << 24); }

float vt_normal(vt_rng *r)
{
    float u = vt_uniform(r), v = vt_uniform(r);
    if (u < 1e-7f) u = 1e-7f;
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

int vt_int(vt_rng *r, int lo, int hi) { return lo + (int)(vt_next(r) % (uint64_t)(hi - lo + 1)); }

void vt_require_vulkan(void)
{
    fasa_device_info dev[8];
    uint32_t n = 8;
    char msg[512] = "";
    if (!fasa_backend_compiled(FASA_BACKEND_VULKAN)) {
        printf("SKIP: the vulkan backend is not compiled in\n");
        exit(VT_SKIP);
    }
    fasa_status st = fasa_list_devices(FASA_BACKEND_VULKAN, dev, &n, msg, sizeof msg);
    if (st != FASA_OK || n == 0) {
        printf("SKIP: no usable Vulkan device: %s (%s)\n", msg, fasa_status_string(st));
        exit(VT_SKIP);
    }
    printf("vulkan device 0: %s, %s, subgroup %u\n", dev[0].name, dev[0].driver, dev[0].subgroup_size);
}

fasa_context *vt_context(fasa_backend backend, uint32_t flags)
{
    char msg[1024] = "";
    fasa_context_desc d = {0};
    d.backend = backend;
    d.flags = flags;
    d.error_message = msg;
    d.error_message_size = sizeof msg;
    d.n_threads = 2;
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&d, &ctx);
    if (st != FASA_OK) {
        fprintf(stderr, "FAIL: context (%s): %s: %s\n", fasa_backend_name(backend), fasa_status_string(st), msg);
        exit(1);
    }
    return ctx;
}

fasa_context *vt_context_validated(void)
{
    fasa_context_desc d = {0};
    d.backend = FASA_BACKEND_VULKAN;
    d.flags = FASA_CONTEXT_ENABLE_VALIDATION;
    d.n_threads = 2;
    fasa_context *ctx = NULL;
    if (fasa_context_create(&d, &ctx) == FASA_ERROR_UNSUPPORTED) {
        printf("note: VK_LAYER_KHRONOS_validation is not installed; running without it\n");
        return vt_context(FASA_BACKEND_VULKAN, 0);
    }
    if (!ctx) return vt_context(FASA_BACKEND_VULKAN, FASA_CONTEXT_ENABLE_VALIDATION); /* reports the failure */
    return ctx;
}

static void fc_dims(fasa_rope_layout layout, uint32_t d, uint32_t j, uint16_t *a, uint16_t *b)
{
    *a = (uint16_t)(layout == FASA_ROPE_NORM ? 2 * j : j);
    *b = (uint16_t)(layout == FASA_ROPE_NORM ? 2 * j + 1 : j + d / 2);
}

static int cmp_u16(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

fasa_calibration *vt_calibration(fasa_context *ctx, const fasa_model_shape *s, uint32_t n_tip, bool share_group,
                                 uint64_t seed)
{
    vt_rng r = {seed};
    uint32_t G = s->n_q_heads / s->n_kv_heads, nfc = s->head_dim / 2;
    size_t per = 2 * n_tip;
    uint16_t *dims = calloc((size_t)s->n_layers * s->n_q_heads * per, sizeof(uint16_t));
    uint8_t *used = calloc(nfc, 1);
    for (uint32_t l = 0; l < s->n_layers; l++)
        for (uint32_t h = 0; h < s->n_q_heads; h++) {
            uint16_t *out = dims + ((size_t)l * s->n_q_heads + h) * per;
            if (share_group && h % G != 0) {
                memcpy(out, out - (h % G) * per, per * sizeof(uint16_t));
                continue;
            }
            memset(used, 0, nfc);
            for (uint32_t i = 0; i < n_tip; i++) {
                uint32_t j;
                do j = (uint32_t)(vt_next(&r) % nfc); while (used[j]);
                used[j] = 1;
                fc_dims(s->layout, s->head_dim, j, &out[2 * i], &out[2 * i + 1]);
            }
            qsort(out, per, sizeof(uint16_t), cmp_u16);
        }
    fasa_calibration_desc cd = {0};
    cd.shape = *s;
    cd.n_tip = n_tip;
    cd.dims = dims;
    cd.source = "synthetic";
    fasa_calibration *cal = NULL;
    fasa_status st = fasa_calibration_create(ctx, &cd, &cal);
    free(dims);
    free(used);
    if (st != FASA_OK) {
        fprintf(stderr, "FAIL: calibration: %s\n", fasa_context_last_error(ctx));
        exit(1);
    }
    return cal;
}

double vt_nmse(const float *ref, const float *x, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double dlt = (double)ref[i] - (double)x[i];
        num += dlt * dlt;
        den += (double)ref[i] * ref[i];
        if (x[i] != x[i]) return INFINITY;
    }
    return den > 0 ? num / den : num;
}

int vt_finish(const char *name)
{
    if (vt_failures) {
        printf("%s: %d check(s) failed\n", name, vt_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}
