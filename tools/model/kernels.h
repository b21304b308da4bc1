/*
 * f32 compute kernels for the forward pass.  Weights are row-major [out][in]
 * (one GGUF row per output), activations token-major [n][in].  The inner
 * loops use GCC vector extensions with 8 independent lanes so they vectorise
 * without -ffast-math; on x86-64 an AVX2 clone is picked at run time.
 */
#ifndef FM_KERNELS_H
#define FM_KERNELS_H

#include <stdint.h>

#include "pool.h"

/* Y[t][r] = sum_c W[r][c] * X[t][c] for t < n, r < out_dim; threaded over
 * blocks of rows.  Y rows have y_stride floats (>= out_dim). */
void fm_matmul(fm_pool *pool, const float *W, uint32_t out_dim, uint32_t in_dim, const float *X,
               uint32_t n, float *Y, uint32_t y_stride);

float fm_dot(const float *a, const float *b, uint32_t n);
/* y += a * x */
void fm_axpy(float *y, float a, const float *x, uint32_t n);
/* Attention helpers (rows of q, k, v and s are *_stride floats apart):
 * s[i][j] = scale * dot(q_i, k_j) over d dims, for i < n_q, j < n_k. */
void fm_scores(const float *q, uint64_t q_stride, uint32_t n_q, const float *k, uint64_t k_stride,
               uint32_t n_k, uint32_t d, float scale, float *s, uint64_t s_stride);
/* s[i] = exp(s[i] - max) in place; returns the sum.  Weights below e^-80
 * become exactly 0: they cannot change an f32 sum that includes 1, and
 * denormal products would slow the weighted sum by an order of magnitude. */
float fm_softmax_exp(float *s, uint32_t n, float max);
/* o[0..d) = sum_i w[i] * (v + i*stride)[0..d), skipping zero weights. */
void fm_weighted_sum(const float *w, const float *v, uint64_t stride, uint32_t n, uint32_t d,
                     float *o);
/* y = x / sqrt(mean(x^2) + eps) * w, sums in double. */
void fm_rmsnorm(float *y, const float *x, const float *w, uint32_t n, float eps);
/* gate = silu(gate) * up */
void fm_swiglu(float *gate, const float *up, uint32_t n);
/* RoPE NORM: rotates dims (2i, 2i+1) of each of n_heads heads of width d by
 * the angle whose cos/sin are cs[i], sn[i] (d/2 entries). */
void fm_rope_norm(float *x, uint32_t n_heads, uint32_t d, const float *cs, const float *sn);

#endif
