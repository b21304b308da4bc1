/* Inner loops of the CPU kernels, with a runtime-chosen AVX2/F16C/FMA
 * version on x86-64 and a portable one elsewhere. */
#ifndef FASA_CPU_SIMD_H
#define FASA_CPU_SIMD_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "fasa.h"

typedef struct fasa_cpu_simd {
    const char *name;
    /* dst[i] = float(src[i]) for fp16 bits, and for bf16 bits (a shift) */
    void (*half_to_float)(const uint16_t *src, float *dst, size_t n);
    void (*bf16_to_float)(const uint16_t *src, float *dst, size_t n);
    float (*dot)(const float *a, const float *b, size_t n);
    /* y[i] += a * x[i] */
    void (*axpy)(float *y, float a, const float *x, size_t n);
    /* y[i] *= a */
    void (*scale)(float *y, float a, size_t n);
    /* TIP block: out[m * out_stride + t] = dot(q[m], row t) for 8 rows of
     * `width` elements (a multiple of 8) in the cache dtype `dt`, m < n_q.
     * The sum of each dot runs over width in order of 8-lane partial sums,
     * like dot(); 16-bit rows are widened to fp32 first (exactly), so every
     * storage type computes the same sums from the same values. */
    void (*dot8)(const void *rows, fasa_dtype dt, uint32_t width, const float *q, uint32_t n_q,
                 float *out, size_t out_stride);
    /* TIP over dim-major columns: out[m * out_stride + t] = sum over s of
     * q[m * width + s] * col_s[t] for 16 tokens t, with col_s at
     * cols + s * col_stride elements in the cache dtype `dt`, m < n_q.  The
     * sum runs over s in order, one fused multiply-add per term.  Returns
     * whether some out value is NaN (the caller then recomputes those over
     * the head's own dims), at no cost to the loop. */
    bool (*tip16)(const void *cols, fasa_dtype dt, size_t col_stride, uint32_t width, const float *q,
                  uint32_t n_q, float *out, size_t out_stride);
} fasa_cpu_simd;

/* The fastest version this CPU supports. */
const fasa_cpu_simd *fasa__cpu_simd(void);

#endif
