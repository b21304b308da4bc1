/* Portable and x86-64 AVX2 versions of the CPU kernels' inner loops. */
#include "cpu_simd.h"
#include "internal.h"

#include <math.h>
#include <string.h>

/* ---- portable ------------------------------------------------------------ */

static void half_to_float_c(const uint16_t *src, float *dst, size_t n)
{
    fasa__half_to_float_n(src, dst, n);
}

static void bf16_to_float_c(const uint16_t *src, float *dst, size_t n)
{
    fasa__bf16_to_float_n(src, dst, n);
}

static float dot_c(const float *a, const float *b, size_t n)
{
    /* four partial sums so the compiler can vectorise without -ffast-math */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void axpy_c(float *y, float a, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void scale_c(float *y, float a, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] *= a;
}

static void dot8_c(const void *rows, fasa_dtype dt, uint32_t width, const float *q, uint32_t n_q,
                   float *out, size_t out_stride)
{
    float tmp[FASA_MAX_HEAD_DIM];
    for (uint32_t t = 0; t < 8; t++) {
        const float *row = (const float *)rows + (size_t)t * width;
        if (dt != FASA_DTYPE_F32) {
            fasa__dtype_to_float_n(dt, (const uint16_t *)rows + (size_t)t * width, tmp, width);
            row = tmp;
        }
        for (uint32_t m = 0; m < n_q; m++) out[m * out_stride + t] = dot_c(q + (size_t)m * width, row, width);
    }
}

static bool tip16_c(const void *cols, fasa_dtype dt, size_t col_stride, uint32_t width, const float *q,
                    uint32_t n_q, float *out, size_t out_stride)
{
    uint32_t nan = 0;
    for (uint32_t m = 0; m < n_q; m++) {
        float acc[16] = {0};
        for (uint32_t s = 0; s < width; s++) {
            float qs = q[(size_t)m * width + s];
            for (int t = 0; t < 16; t++) {
                acc[t] = fmaf(qs, fasa__dtype_load(dt, cols, (size_t)s * col_stride + t), acc[t]);
            }
        }
        for (int t = 0; t < 16; t++) {
            uint32_t u;
            memcpy(&u, &acc[t], 4);
            nan |= (u & 0x7fffffffu) > 0x7f800000u; /* the bits: no float mode drops it */
            out[m * out_stride + t] = acc[t];
        }
    }
    return nan != 0;
}

static const fasa_cpu_simd simd_c = {"portable", half_to_float_c, bf16_to_float_c, dot_c, axpy_c, scale_c,
                                     dot8_c, tip16_c};

/* ---- x86-64 AVX2 + FMA + F16C ------------------------------------------- */
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static void half_to_float_avx2(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = fasa__half_to_float(src[i]);
}

/* Eight bf16 values widened to fp32: each is the top half of its fp32. */
AVX2 static inline __m256 bf16x8(const uint16_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

AVX2 static void bf16_to_float_avx2(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, bf16x8(src + i));
    for (; i < n; i++) dst[i] = fasa__bf16_to_float(src[i]);
}

AVX2 static float hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

AVX2 static float dot_avx2(const float *a, const float *b, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

AVX2 static void axpy_avx2(float *y, float a, const float *x, size_t n)
{
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

AVX2 static void scale_avx2(float *y, float a, size_t n)
{
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] *= a;
}

/* Eight horizontal sums at once: lane t of the result is the sum of v[t]. */
AVX2 static __m256 hsum8(const __m256 v[8])
{
    __m256 a = _mm256_hadd_ps(v[0], v[1]), b = _mm256_hadd_ps(v[2], v[3]);
    __m256 c = _mm256_hadd_ps(v[4], v[5]), d = _mm256_hadd_ps(v[6], v[7]);
    __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
    /* ab holds (0,1,2,3 | 0,1,2,3) halves; cd the same for 4..7 */
    __m256 lo = _mm256_permute2f128_ps(ab, cd, 0x20), hi = _mm256_permute2f128_ps(ab, cd, 0x31);
    return _mm256_add_ps(lo, hi);
}

AVX2 static void dot8_avx2(const void *rows, fasa_dtype dt, uint32_t width, const float *q, uint32_t n_q,
                           float *out, size_t out_stride)
{
    float buf[8 * FASA_MAX_HEAD_DIM] __attribute__((aligned(32)));
    const float *r = rows;
    if (dt == FASA_DTYPE_F16) { /* convert the 8 rows once for all heads */
        const uint16_t *h = rows;
        for (uint32_t i = 0; i < 8 * width; i += 8)
            _mm256_store_ps(buf + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
        r = buf;
    } else if (dt == FASA_DTYPE_BF16) {
        const uint16_t *h = rows;
        for (uint32_t i = 0; i < 8 * width; i += 8) _mm256_store_ps(buf + i, bf16x8(h + i));
        r = buf;
    }
    for (uint32_t m = 0; m < n_q; m++) {
        const float *qm = q + (size_t)m * width;
        __m256 acc[8];
        for (int t = 0; t < 8; t++) acc[t] = _mm256_setzero_ps();
        for (uint32_t c = 0; c < width; c += 8) {
            __m256 qv = _mm256_loadu_ps(qm + c);
            for (int t = 0; t < 8; t++) acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(r + (size_t)t * width + c), qv, acc[t]);
        }
        float sums[8];
        _mm256_storeu_ps(sums, hsum8(acc));
        for (int t = 0; t < 8; t++) out[m * out_stride + t] = sums[t];
    }
}

/* Four heads at a time (absent heads read a zero query), 16 tokens as two
 * vectors: eight accumulators stay in registers across the whole column.
 * One copy of the loop per storage type (dt is a constant in each), so the
 * column loads are resolved at compile time. */
#define TIP16_ARGS const void *cols, size_t col_stride, uint32_t width, const float *q, uint32_t n_q, float *out, \
                   size_t out_stride
AVX2 static inline __attribute__((always_inline)) bool tip16_body(fasa_dtype dt, TIP16_ARGS)
{
    static const float zeros[FASA_MAX_HEAD_DIM];
    __m256 nan = _mm256_setzero_ps();
    for (uint32_t m0 = 0; m0 < n_q; m0 += 4) {
        const float *qm[4];
        for (uint32_t m = 0; m < 4; m++) qm[m] = m0 + m < n_q ? q + (size_t)(m0 + m) * width : zeros;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
        for (uint32_t s = 0; s < width; s++) {
            __m256 k0, k1;
            if (dt == FASA_DTYPE_F16) {
                const uint16_t *p = (const uint16_t *)cols + (size_t)s * col_stride;
                k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
                k1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
            } else if (dt == FASA_DTYPE_BF16) {
                const uint16_t *p = (const uint16_t *)cols + (size_t)s * col_stride;
                k0 = bf16x8(p);
                k1 = bf16x8(p + 8);
            } else {
                const float *p = (const float *)cols + (size_t)s * col_stride;
                k0 = _mm256_loadu_ps(p);
                k1 = _mm256_loadu_ps(p + 8);
            }
            __m256 qa = _mm256_broadcast_ss(qm[0] + s), qb = _mm256_broadcast_ss(qm[1] + s);
            __m256 qc = _mm256_broadcast_ss(qm[2] + s), qd = _mm256_broadcast_ss(qm[3] + s);
            a0 = _mm256_fmadd_ps(qa, k0, a0), a1 = _mm256_fmadd_ps(qa, k1, a1);
            b0 = _mm256_fmadd_ps(qb, k0, b0), b1 = _mm256_fmadd_ps(qb, k1, b1);
            c0 = _mm256_fmadd_ps(qc, k0, c0), c1 = _mm256_fmadd_ps(qc, k1, c1);
            d0 = _mm256_fmadd_ps(qd, k0, d0), d1 = _mm256_fmadd_ps(qd, k1, d1);
        }
        __m256 acc[8] = {a0, a1, b0, b1, c0, c1, d0, d1};
        for (uint32_t m = 0; m < 4 && m0 + m < n_q; m++) {
            _mm256_storeu_ps(out + (m0 + m) * out_stride, acc[2 * m]);
            _mm256_storeu_ps(out + (m0 + m) * out_stride + 8, acc[2 * m + 1]);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(acc[2 * m], acc[2 * m], _CMP_UNORD_Q));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(acc[2 * m + 1], acc[2 * m + 1], _CMP_UNORD_Q));
        }
    }
    return _mm256_movemask_ps(nan) != 0;
}

AVX2 static bool tip16_f16(TIP16_ARGS) { return tip16_body(FASA_DTYPE_F16, cols, col_stride, width, q, n_q, out, out_stride); }
AVX2 static bool tip16_f32(TIP16_ARGS) { return tip16_body(FASA_DTYPE_F32, cols, col_stride, width, q, n_q, out, out_stride); }
AVX2 static bool tip16_bf16(TIP16_ARGS) { return tip16_body(FASA_DTYPE_BF16, cols, col_stride, width, q, n_q, out, out_stride); }

static bool tip16_avx2(const void *cols, fasa_dtype dt, size_t col_stride, uint32_t width, const float *q,
                       uint32_t n_q, float *out, size_t out_stride)
{
    switch (dt) {
    case FASA_DTYPE_F16: return tip16_f16(cols, col_stride, width, q, n_q, out, out_stride);
    case FASA_DTYPE_BF16: return tip16_bf16(cols, col_stride, width, q, n_q, out, out_stride);
    case FASA_DTYPE_F32: break;
    }
    return tip16_f32(cols, col_stride, width, q, n_q, out, out_stride);
}

static const fasa_cpu_simd simd_avx2 = {"avx2+fma+f16c", half_to_float_avx2, bf16_to_float_avx2, dot_avx2,
                                        axpy_avx2, scale_avx2, dot8_avx2, tip16_avx2};

/* F16C is CPUID leaf 1 ECX bit 29 (not every compiler's
 * __builtin_cpu_supports knows its name). */
static bool has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

const fasa_cpu_simd *fasa__cpu_simd(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c()) return &simd_avx2;
    return &simd_c;
}
#else
const fasa_cpu_simd *fasa__cpu_simd(void) { return &simd_c; }
#endif
