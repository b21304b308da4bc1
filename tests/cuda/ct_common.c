/* Helpers shared by the CUDA backend tests. */
#include "ct_common.h"

#include <math.h>
#include <string.h>

int ct_passed = 0, ct_failed = 0;

uint64_t ct_next(ct_rng *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float uniform(ct_rng *r) { return (float)(ct_next(r) >> 40) / (float)(1ull << 24); }

float ct_normal(ct_rng *r)
{
    float u = uniform(r), v = uniform(r);
    if (u < 1e-7f) u = 1e-7f;
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

int ct_int(ct_rng *r, int lo, int hi) { return lo + (int)(ct_next(r) % (uint64_t)(hi - lo + 1)); }

void ct_require_cuda(void)
{
    fasa_device_info dev[8];
    uint32_t n = 8;
    char msg[512] = "";
    if (!fasa_backend_compiled(FASA_BACKEND_CUDA)) {
        printf("SKIP: the cuda backend is not compiled into this build\n");
        exit(CT_SKIP);
    }
    fasa_status st = fasa_list_devices(FASA_BACKEND_CUDA, dev, &n, msg, sizeof msg);
    if (st != FASA_OK || n == 0) {
        printf("SKIP: no usable CUDA device: %s (%s)\n", msg, fasa_status_string(st));
        exit(CT_SKIP);
    }
    printf("cuda device 0: %s, %s\n", dev[0].name, dev[0].driver);
}

fasa_context *ct_context(fasa_backend backend, uint32_t flags)
{
    char msg[1024] = "";
    fasa_context_desc d = {0};
    d.backend = backend;
    d.flags = flags;
    d.error_message = msg;
    d.error_message_size = sizeof msg;
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&d, &ctx);
    if (st != FASA_OK) {
        fprintf(stderr, "FAIL: context (%s): %s: %s\n", fasa_backend_name(backend), fasa_status_string(st), msg);
        exit(1);
    }
    return ctx;
}

static int cmp_u16(const void *a, const void *b) { return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b; }

fasa_calibration *ct_calibration(fasa_context *ctx, const fasa_model_shape *s, uint32_t n_tip, bool share_group,
                                 uint64_t seed)
{
    ct_rng r = {seed};
    uint32_t G = s->n_q_heads / s->n_kv_heads, nfc = s->head_dim / 2, per = 2 * n_tip;
    uint16_t *dims = calloc((size_t)s->n_layers * s->n_q_heads * per, sizeof(uint16_t));
    uint8_t *used = calloc(nfc, 1);
    for (uint32_t l = 0; l < s->n_layers; l++)
        for (uint32_t h = 0; h < s->n_q_heads; h++) {
            uint16_t *out = dims + ((size_t)l * s->n_q_heads + h) * per;
            if (share_group && h % G != 0) {
                memcpy(out, out - (size_t)(h % G) * per, per * sizeof(uint16_t));
                continue;
            }
            memset(used, 0, nfc);
            for (uint32_t i = 0; i < n_tip; i++) { /* n_tip distinct true rotation pairs */
                uint32_t j;
                do j = (uint32_t)(ct_next(&r) % nfc);
                while (used[j]);
                used[j] = 1;
                bool norm = s->layout == FASA_ROPE_NORM;
                out[2 * i] = (uint16_t)(norm ? 2 * j : j);
                out[2 * i + 1] = (uint16_t)(norm ? 2 * j + 1 : j + s->head_dim / 2);
            }
            qsort(out, per, sizeof(uint16_t), cmp_u16);
        }
    fasa_calibration_desc cd = {.shape = *s, .n_tip = n_tip, .dims = dims, .source = "synthetic"};
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

double ct_nmse(const float *ref, const float *x, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != x[i]) return INFINITY;
        double dlt = (double)ref[i] - (double)x[i];
        num += dlt * dlt;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

int ct_finish(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, ct_passed, ct_failed);
    return ct_failed ? 1 : 0;
}
