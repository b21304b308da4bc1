/* Helpers shared by the Vulkan backend tests. */
#ifndef FASA_VT_COMMON_H
#define FASA_VT_COMMON_H

#include "fasa.h"

#include <stdio.h>
#include <stdlib.h>

#define VT_SKIP 77

extern int vt_failures;

#define VT_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            vt_failures++;                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Fails the test with the context's message when st is not FASA_OK. */
#define VT_OK(ctx, st)                                                                             \
    do {                                                                                           \
        fasa_status vt_st_ = (st);                                                                 \
        VT_CHECK(vt_st_ == FASA_OK, "%s -> %s: %s", #st, fasa_status_string(vt_st_),               \
                 fasa_context_last_error(ctx));                                                    \
    } while (0)

typedef struct vt_rng {
    uint64_t s;
} vt_rng;

uint64_t vt_next(vt_rng *r);
float vt_uniform(vt_rng *r);          /* [0, 1) */
float vt_normal(vt_rng *r);
int vt_int(vt_rng *r, int lo, int hi); /* [lo, hi] */

/* Exits 77 (skipped) with the reason when no Vulkan device is usable. */
void vt_require_vulkan(void);
/* Creates a context or exits with a failure. */
fasa_context *vt_context(fasa_backend backend, uint32_t flags);
/* A Vulkan context with the validation layer, or without it (and a note)
 * where the layer is not installed (e.g. the H200 test machine). */
fasa_context *vt_context_validated(void);
/* A calibration with random dominant FCs per (layer, q head); with
 * share_group every head of a KV group gets the same dims. */
fasa_calibration *vt_calibration(fasa_context *ctx, const fasa_model_shape *s, uint32_t n_tip, bool share_group,
                                 uint64_t seed);
/* Sum (a-b)^2 / sum a^2 over n values (a = reference). */
double vt_nmse(const float *ref, const float *x, size_t n);
int vt_finish(const char *name);

#endif
