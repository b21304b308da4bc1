#include "kernels.h"

#include <math.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));


/* GCC only: clang 14 emits no symbol for an external target_clones function. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define FM_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef FM_CLONES
#define FM_CLONES
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Vectors are passed by pointer and loaded with memcpy (unaligned, no
 * aliasing issue), which also keeps GCC's -Wpsabi note about passing 32-byte
 * vectors by value without AVX away. */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v8f))

ALWAYS_INLINE float hsum8(const v8f *v)
{
    return (((*v)[0] + (*v)[4]) + ((*v)[1] + (*v)[5])) + (((*v)[2] + (*v)[6]) + ((*v)[3] + (*v)[7]));
}

/* Four weight rows (ws floats apart) against two activation rows over `in`
 * elements: 8 accumulators. */
ALWAYS_INLINE void dot_4x2(const float *w, uint64_t ws, uint32_t in, const float *x0,
                           const float *x1, float *y0, float *y1)
{
    v8f a00 = { 0 }, a01 = { 0 }, a10 = { 0 }, a11 = { 0 };
    v8f a20 = { 0 }, a21 = { 0 }, a30 = { 0 }, a31 = { 0 };
    const float *w1 = w + ws, *w2 = w1 + ws, *w3 = w2 + ws;
    uint32_t c = 0;
    for (; c + 8 <= in; c += 8) {
        v8f u, v, r0, r1, r2, r3;
        LOAD8(u, x0 + c);
        LOAD8(v, x1 + c);
        LOAD8(r0, w + c);
        LOAD8(r1, w1 + c);
        LOAD8(r2, w2 + c);
        LOAD8(r3, w3 + c);
        a00 += r0 * u; a01 += r0 * v;
        a10 += r1 * u; a11 += r1 * v;
        a20 += r2 * u; a21 += r2 * v;
        a30 += r3 * u; a31 += r3 * v;
    }
    float s[8] = { hsum8(&a00), hsum8(&a10), hsum8(&a20), hsum8(&a30),
                   hsum8(&a01), hsum8(&a11), hsum8(&a21), hsum8(&a31) };
    for (; c < in; c++) {
        for (int r = 0; r < 4; r++) {
            s[r] += w[r * ws + c] * x0[c];
            s[4 + r] += w[r * ws + c] * x1[c];
        }
    }
    memcpy(y0, s, 4 * sizeof(float));
    memcpy(y1, s + 4, 4 * sizeof(float));
}

/* Four weight rows against one activation row (decode). */
ALWAYS_INLINE void dot_4x1(const float *w, uint64_t ws, uint32_t in, const float *x, float *y)
{
    v8f a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
    const float *w1 = w + ws, *w2 = w1 + ws, *w3 = w2 + ws;
    uint32_t c = 0;
    for (; c + 8 <= in; c += 8) {
        v8f u, r0, r1, r2, r3;
        LOAD8(u, x + c);
        LOAD8(r0, w + c);
        LOAD8(r1, w1 + c);
        LOAD8(r2, w2 + c);
        LOAD8(r3, w3 + c);
        a0 += r0 * u;
        a1 += r1 * u;
        a2 += r2 * u;
        a3 += r3 * u;
    }
    float s[4] = { hsum8(&a0), hsum8(&a1), hsum8(&a2), hsum8(&a3) };
    for (; c < in; c++)
        for (int r = 0; r < 4; r++)
            s[r] += w[r * ws + c] * x[c];
    memcpy(y, s, sizeof s);
}

ALWAYS_INLINE float dot_1(const float *a, const float *b, uint32_t n)
{
    v8f acc = { 0 };
    uint32_t c = 0;
    for (; c + 8 <= n; c += 8) {
        v8f u, v;
        LOAD8(u, a + c);
        LOAD8(v, b + c);
        acc += u * v;
    }
    float s = hsum8(&acc);
    for (; c < n; c++)
        s += a[c] * b[c];
    return s;
}

typedef struct matmul_job {
    const float *W, *X;
    float *Y;
    uint32_t out_dim, in_dim, n, y_stride, rows_per_task;
} matmul_job;

#define TOKEN_BLOCK 32   /* activations reused from L1/L2 across a row tile */

/* Rows [r0, r1) for all tokens: token blocks outside, 4-row tiles inside, so
 * a tile of W stays in cache while the block of tokens streams past it. */
FM_CLONES static void matmul_rows(const matmul_job *j, uint32_t r0, uint32_t r1)
{
    const uint32_t in = j->in_dim;
    for (uint32_t t0 = 0; t0 < j->n; t0 += TOKEN_BLOCK) {
        uint32_t t1 = t0 + TOKEN_BLOCK < j->n ? t0 + TOKEN_BLOCK : j->n;
        uint32_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            const float *w = j->W + (uint64_t)r * in;
            uint32_t t = t0;
            for (; t + 2 <= t1; t += 2) {
                float y0[4], y1[4];
                dot_4x2(w, in, in, j->X + (uint64_t)t * in, j->X + (uint64_t)(t + 1) * in, y0, y1);
                memcpy(j->Y + (uint64_t)t * j->y_stride + r, y0, sizeof y0);
                memcpy(j->Y + (uint64_t)(t + 1) * j->y_stride + r, y1, sizeof y1);
            }
            if (t < t1) {
                float y0[4];
                dot_4x1(w, in, in, j->X + (uint64_t)t * in, y0);
                memcpy(j->Y + (uint64_t)t * j->y_stride + r, y0, sizeof y0);
            }
        }
        for (; r < r1; r++)
            for (uint32_t t = t0; t < t1; t++)
                j->Y[(uint64_t)t * j->y_stride + r] =
                    dot_1(j->W + (uint64_t)r * in, j->X + (uint64_t)t * in, in);
    }
}

static void matmul_task(void *ctx, uint32_t task, uint32_t thread)
{
    const matmul_job *j = ctx;
    (void)thread;
    uint32_t r0 = task * j->rows_per_task;
    uint32_t r1 = r0 + j->rows_per_task < j->out_dim ? r0 + j->rows_per_task : j->out_dim;
    matmul_rows(j, r0, r1);
}

void fm_matmul(fm_pool *pool, const float *W, uint32_t out_dim, uint32_t in_dim, const float *X,
               uint32_t n, float *Y, uint32_t y_stride)
{
    /* ~4 tasks per thread for balance, multiples of 4 rows, at least 16. */
    uint32_t threads = pool ? fm_pool_threads(pool) : 1;
    uint32_t rows = (out_dim / (4 * threads) + 3) & ~3u;
    if (rows < 16)
        rows = 16;
    matmul_job j = { W, X, Y, out_dim, in_dim, n, y_stride, rows };
    uint32_t tasks = (out_dim + rows - 1) / rows;
    if (pool)
        fm_pool_run(pool, tasks, matmul_task, &j);
    else
        for (uint32_t t = 0; t < tasks; t++)
            matmul_task(&j, t, 0);
}

FM_CLONES float fm_dot(const float *a, const float *b, uint32_t n)
{
    return dot_1(a, b, n);
}

FM_CLONES void fm_axpy(float *y, float a, const float *x, uint32_t n)
{
    uint32_t c = 0;
    for (; c + 8 <= n; c += 8) {
        v8f u, v;
        LOAD8(u, y + c);
        LOAD8(v, x + c);
        u += v * a;
        memcpy(y + c, &u, sizeof u);
    }
    for (; c < n; c++)
        y[c] += a * x[c];
}

/* Four keys against two queries per step (the matmul micro-kernel with a
 * key stride), so each key load serves two queries and each query load four
 * keys. */
FM_CLONES void fm_scores(const float *q, uint64_t q_stride, uint32_t n_q, const float *k,
                         uint64_t k_stride, uint32_t n_k, uint32_t d, float scale, float *s,
                         uint64_t s_stride)
{
    uint32_t j = 0;
    for (; j + 4 <= n_k; j += 4) {
        const float *kj = k + j * k_stride;
        uint32_t i = 0;
        for (; i + 2 <= n_q; i += 2) {
            float y0[4], y1[4];
            dot_4x2(kj, k_stride, d, q + i * q_stride, q + (i + 1) * q_stride, y0, y1);
            for (int r = 0; r < 4; r++) {
                s[i * s_stride + j + r] = y0[r] * scale;
                s[(i + 1) * s_stride + j + r] = y1[r] * scale;
            }
        }
        if (i < n_q) {
            float y0[4];
            dot_4x1(kj, k_stride, d, q + i * q_stride, y0);
            for (int r = 0; r < 4; r++)
                s[i * s_stride + j + r] = y0[r] * scale;
        }
    }
    for (; j < n_k; j++)
        for (uint32_t i = 0; i < n_q; i++)
            s[i * s_stride + j] = dot_1(q + i * q_stride, k + j * k_stride, d) * scale;
}

float fm_softmax_exp(float *s, uint32_t n, float max)
{
    float sum = 0.0f;
    for (uint32_t i = 0; i < n; i++) {
        float x = s[i] - max;
        s[i] = x < -80.0f ? 0.0f : expf(x);
        sum += s[i];
    }
    return sum;
}

/* Accumulators stay in registers: 32 output dims per pass over the keys. */
FM_CLONES void fm_weighted_sum(const float *w, const float *v, uint64_t stride, uint32_t n,
                               uint32_t d, float *o)
{
    uint32_t c = 0;
    for (; c + 32 <= d; c += 32) {
        v8f a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
        for (uint32_t i = 0; i < n; i++) {
            if (w[i] == 0.0f)
                continue;
            const float *row = v + i * stride + c;
            v8f b0, b1, b2, b3;
            LOAD8(b0, row);
            LOAD8(b1, row + 8);
            LOAD8(b2, row + 16);
            LOAD8(b3, row + 24);
            a0 += b0 * w[i];
            a1 += b1 * w[i];
            a2 += b2 * w[i];
            a3 += b3 * w[i];
        }
        memcpy(o + c, &a0, sizeof a0);
        memcpy(o + c + 8, &a1, sizeof a1);
        memcpy(o + c + 16, &a2, sizeof a2);
        memcpy(o + c + 24, &a3, sizeof a3);
    }
    for (; c < d; c++) {
        float a = 0.0f;
        for (uint32_t i = 0; i < n; i++)
            a += w[i] * v[i * stride + c];
        o[c] = a;
    }
}

void fm_rmsnorm(float *y, const float *x, const float *w, uint32_t n, float eps)
{
    double ss = 0.0;
    for (uint32_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (uint32_t i = 0; i < n; i++)
        y[i] = x[i] * scale * w[i];
}

void fm_swiglu(float *gate, const float *up, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void fm_rope_norm(float *x, uint32_t n_heads, uint32_t d, const float *cs, const float *sn)
{
    for (uint32_t h = 0; h < n_heads; h++) {
        float *v = x + (uint64_t)h * d;
        for (uint32_t i = 0; i < d / 2; i++) {
            float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * cs[i] - b * sn[i];
            v[2 * i + 1] = a * sn[i] + b * cs[i];
        }
    }
}
