/* Helpers shared by the OpenCL tests: device choice, skip (exit 77), seeded
 * data, calibrations, comparisons.  Header-only; every test is one file. */
#ifndef FASA_CL_TEST_H
#define FASA_CL_TEST_H

#include "fasa.h"
#include "fasa_opencl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_passed, t_failed;

#define T_CHECK(cond, ...)                                                          \
    do {                                                                            \
        if (cond) {                                                                 \
            t_passed++;                                                             \
        } else {                                                                    \
            t_failed++;                                                             \
            fprintf(stderr, "%s:%d: FAIL %s: ", __FILE__, __LINE__, #cond);         \
            fprintf(stderr, __VA_ARGS__);                                           \
            fprintf(stderr, "\n");                                                  \
        }                                                                           \
    } while (0)

static inline const char *t_field(const char *f) { return f ? f : ""; }

/* status + the message naming the field ("" or NULL: any message) */
#define T_STATUS(ctx, expr, want, field)                                            \
    do {                                                                            \
        fasa_status st_ = (expr);                                                   \
        const char *msg_ = (ctx) ? fasa_context_last_error(ctx) : "";               \
        const char *f_ = t_field(field);                                            \
        T_CHECK(st_ == (want) && strstr(msg_, f_) != NULL,                          \
                "%s -> %s (wanted %s, message '%s' should name '%s')", #expr,       \
                fasa_status_string(st_), fasa_status_string(want), msg_, f_);       \
    } while (0)

static inline int t_done(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, t_passed, t_failed);
    return t_failed ? 1 : 0;
}

/* The OpenCL device the tests run on: the first one whose name contains
 * $FASA_TEST_CL_DEVICE (a test may read the environment; the library
 * never does), else device 0.  Exits 77 (skip) when there is none. */
static inline int32_t t_cl_device(const char *test)
{
    fasa_device_info devs[16];
    uint32_t n = 16;
    char msg[512] = "";
    fasa_status st = fasa_list_devices(FASA_BACKEND_OPENCL, devs, &n, msg, sizeof msg);
    if (st != FASA_OK || n == 0) {
        printf("%s: SKIP: no OpenCL device (%s: %s)\n", test, fasa_status_string(st), msg);
        exit(77);
    }
    const char *want = getenv("FASA_TEST_CL_DEVICE");
    for (uint32_t i = 0; want && want[0] && i < n && i < 16; i++)
        if (strstr(devs[i].name, want) || strstr(devs[i].driver, want)) {
            printf("%s: OpenCL device %u: %s (%s)\n", test, i, devs[i].name, devs[i].driver);
            return (int32_t)i;
        }
    printf("%s: OpenCL device 0: %s (%s)\n", test, devs[0].name, devs[0].driver);
    return 0;
}

static inline fasa_context *t_context(fasa_backend b, int32_t device, uint32_t flags, const char *cache_dir)
{
    char msg[1024] = "";
    fasa_context_desc d = {0};
    d.backend = b;
    d.device_index = device;
    d.flags = flags;
    d.cache_dir = cache_dir;
    d.error_message = msg;
    d.error_message_size = sizeof msg;
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&d, &ctx);
    if (st != FASA_OK) {
        fprintf(stderr, "context (%s) failed: %s: %s\n", fasa_backend_name(b), fasa_status_string(st), msg);
        exit(1);
    }
    return ctx;
}

/* xorshift64*: fixed, printed seeds */
static inline uint64_t t_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static inline float t_uniform(uint64_t *s) { return (float)((t_rand(s) >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }

/* Integer-valued data in [-r, r] (exact in fp16 and in fp32 products). */
static inline float t_int(uint64_t *s, int r) { return (float)((int)(t_rand(s) % (uint64_t)(2 * r + 1)) - r); }

/* Calibration with per-head dims: head h takes n_tip whole FCs, chosen by a
 * seeded shuffle per KV group with a per-head offset (so u_g > 2*n_tip);
 * shared = true gives every head of a group the same dims. */
static inline fasa_calibration *t_calibration(fasa_context *ctx, const fasa_model_shape *s, uint32_t n_tip,
                                              bool shared, uint64_t seed)
{
    uint32_t d = s->head_dim, n_fc = d / 2, G = s->n_q_heads / s->n_kv_heads;
    size_t heads = (size_t)s->n_layers * s->n_q_heads;
    uint16_t *dims = calloc(heads * 2 * n_tip, sizeof *dims);
    uint32_t *perm = malloc(n_fc * sizeof *perm);
    for (size_t hi = 0; hi < heads; hi++) {
        uint32_t h = (uint32_t)(hi % s->n_q_heads);
        uint64_t st = seed + 7919 * (hi / G) + 1;
        for (uint32_t i = 0; i < n_fc; i++) perm[i] = i;
        for (uint32_t i = n_fc - 1; i > 0; i--) {
            uint32_t j = (uint32_t)(t_rand(&st) % (i + 1));
            uint32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
        }
        uint32_t off = shared ? 0 : (h % G) * (n_tip / 2 + 1);
        bool taken[FASA_MAX_HEAD_DIM / 2] = {false};
        for (uint32_t k = 0; k < n_tip; k++) taken[perm[(k + off) % n_fc]] = true;
        uint16_t *out = dims + hi * 2 * n_tip;
        uint32_t w = 0;
        for (uint32_t fc = 0; fc < n_fc; fc++) {
            if (!taken[fc]) continue;
            out[w++] = (uint16_t)(s->layout == FASA_ROPE_NORM ? 2 * fc : fc);
            out[w++] = (uint16_t)(s->layout == FASA_ROPE_NORM ? 2 * fc + 1 : fc + d / 2);
        }
        for (uint32_t i = 1; i < w; i++) /* ascending */
            for (uint32_t k = i; k > 0 && out[k] < out[k - 1]; k--) {
                uint16_t t = out[k]; out[k] = out[k - 1]; out[k - 1] = t;
            }
    }
    fasa_calibration_desc cd = {.shape = *s, .n_tip = n_tip, .dims = dims, .source = "synthetic"};
    fasa_calibration *cal = NULL;
    fasa_status st = fasa_calibration_create(ctx, &cd, &cal);
    free(dims);
    free(perm);
    if (st != FASA_OK) {
        fprintf(stderr, "calibration failed: %s\n", fasa_context_last_error(ctx));
        exit(1);
    }
    return cal;
}

/* NMSE = sum (a-b)^2 / sum a^2; any NaN/Inf in b is a failure (returns 1e30). */
static inline double t_nmse(const float *ref, const float *got, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return 1e30;
        double e = (double)ref[i] - got[i];
        num += e * e;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

static inline int t_cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Number of indices two selections of n entries share (as sets). */
static inline uint32_t t_overlap(const int32_t *a, const int32_t *b, uint32_t n)
{
    int32_t *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    memcpy(x, a, n * sizeof *x);
    memcpy(y, b, n * sizeof *y);
    qsort(x, n, sizeof *x, t_cmp_i32);
    qsort(y, n, sizeof *y, t_cmp_i32);
    uint32_t i = 0, j = 0, common = 0;
    while (i < n && j < n) {
        if (x[i] == y[j]) { common++; i++; j++; }
        else if (x[i] < y[j]) i++;
        else j++;
    }
    free(x);
    free(y);
    return common;
}

/* True when a selection of n entries holds n distinct indices in [0, L). */
static inline bool t_valid_selection(const int32_t *a, uint32_t n, uint32_t L)
{
    int32_t *x = malloc(n * sizeof *x);
    memcpy(x, a, n * sizeof *x);
    qsort(x, n, sizeof *x, t_cmp_i32);
    bool ok = true;
    for (uint32_t i = 0; i < n; i++) ok &= x[i] >= 0 && (uint32_t)x[i] < L && (i == 0 || x[i] != x[i - 1]);
    free(x);
    return ok;
}

#endif
