/* Inner loops of the CPU kernels, with a runtime-chosen AVX2/F16C/FMA
 * version on x86-64 and a portable one elsewhere. */
#ifndef FASA_CPU_SIMD_H
#define FASA_CPU_SIMD_H

#include <stddef.h>
#include <stdint.h>

typedef struct fasa_cpu_simd {
    const char *name;
    /* dst[i] = float(src[i]) for fp16 bits */
    void (*half_to_float)(const uint16_t *src, float *dst, size_t n);
    float (*dot)(const float *a, const float *b, size_t n);
    /* y[i] += a * x[i] */
    void (*axpy)(float *y, float a, const float *x, size_t n);
    /* y[i] *= a */
    void (*scale)(float *y, float a, size_t n);
} fasa_cpu_simd;

/* The fastest version this CPU supports. */
const fasa_cpu_simd *fasa__cpu_simd(void);

#endif
