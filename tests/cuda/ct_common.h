/* Helpers shared by the CUDA backend tests. */
#ifndef FASA_CT_COMMON_H
#define FASA_CT_COMMON_H

#include "fasa.h"

#include <stdio.h>
#include <stdlib.h>

#define CT_SKIP 77

extern int ct_passed, ct_failed;

#define CT_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (cond) {                                                                                \
            ct_passed++;                                                                           \
        } else {                                                                                   \
            ct_failed++;                                                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* expr must return `want`; prints the context's message otherwise. */
#define CT_STATUS(ctx, expr, want)                                                                 \
    do {                                                                                           \
        fasa_status ct_st_ = (expr);                                                               \
        CT_CHECK(ct_st_ == (want), "%s -> %s, wanted %s (%s)", #expr, fasa_status_string(ct_st_), \
                 fasa_status_string(want), (ctx) ? fasa_context_last_error(ctx) : "");             \
    } while (0)

#define CT_OK(ctx, expr) CT_STATUS(ctx, expr, FASA_OK)

typedef struct ct_rng {
    uint64_t s;
} ct_rng;

uint64_t ct_next(ct_rng *r);
float ct_normal(ct_rng *r);
int ct_int(ct_rng *r, int lo, int hi); /* [lo, hi] */

/* Exits 77 (meson: SKIP) with the reason when no CUDA device is usable. */
void ct_require_cuda(void);
/* Creates a context or exits with a failure. */
fasa_context *ct_context(fasa_backend backend, uint32_t flags);
/* A calibration with random dominant FCs per (layer, q head); with
 * share_group every head of a KV group gets the same dims. */
fasa_calibration *ct_calibration(fasa_context *ctx, const fasa_model_shape *s, uint32_t n_tip, bool share_group,
                                 uint64_t seed);
/* Sum (a-b)^2 / sum a^2 (a = reference); Inf when b holds a NaN. */
double ct_nmse(const float *ref, const float *x, size_t n);
/* Prints "<name>: N passed, N failed" and returns the exit status. */
int ct_finish(const char *name);

#endif
