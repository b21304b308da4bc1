/* IEEE binary16 and bfloat16 <-> binary32 conversion in portable C
 * (subnormals, Inf and NaN included; float -> 16 bits rounds to nearest
 * even), and the same for any fasa_dtype. */
#include "internal.h"

#include <string.h>

static uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float fasa__half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) /* Inf / NaN: keep the payload */
        return bits_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) return bits_float(sign);
        /* subnormal: value = mant * 2^-24, exact in fp32 */
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t fasa__float_to_half(float f)
{
    uint32_t u = float_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* Inf or NaN (quiet the NaN, keep it NaN) */
        return sign | 0x7c00u | (abs > 0x7f800000u ? (uint16_t)(0x200u | ((abs >> 13) & 0x3ffu)) : 0);
    if (abs >= 0x477ff000u) /* rounds to >= 65520: overflow to Inf */
        return sign | 0x7c00u;
    if (abs < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        /* value * 2^24 rounded to nearest even gives the subnormal mantissa */
        float v = bits_float(abs) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float frac = v - (float)m;
        if (frac > 0.5f || (frac == 0.5f && (m & 1u))) m++;
        return sign | (uint16_t)m;
    }
    /* normal: rebias the exponent and round the 13 dropped bits to nearest even */
    uint32_t h = ((abs >> 13) - (112u << 10));
    uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return sign | (uint16_t)h;
}

void fasa__half_to_float_n(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = fasa__half_to_float(src[i]);
}

void fasa__float_to_half_n(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = fasa__float_to_half(src[i]);
}

/* ---- bfloat16: the top half of an fp32 ----------------------------------- */

float fasa__bf16_to_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

uint16_t fasa__float_to_bf16(float f)
{
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign and top payload, set the quiet bit */
        return (uint16_t)((u >> 16) | 0x40u);
    /* round the 16 dropped bits to nearest even; a carry out of the
     * fraction bumps the exponent, up to Inf from 0x7f7f8000 on */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

void fasa__bf16_to_float_n(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = fasa__bf16_to_float(src[i]);
}

void fasa__float_to_bf16_n(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = fasa__float_to_bf16(src[i]);
}

/* ---- any element type ------------------------------------------------------ */

float fasa__dtype_load(fasa_dtype t, const void *src, size_t i)
{
    switch (t) {
    case FASA_DTYPE_F16: return fasa__half_to_float(((const uint16_t *)src)[i]);
    case FASA_DTYPE_BF16: return fasa__bf16_to_float(((const uint16_t *)src)[i]);
    case FASA_DTYPE_F32: break;
    }
    return ((const float *)src)[i];
}

void fasa__dtype_to_float_n(fasa_dtype t, const void *src, float *dst, size_t n)
{
    switch (t) {
    case FASA_DTYPE_F16: fasa__half_to_float_n(src, dst, n); return;
    case FASA_DTYPE_BF16: fasa__bf16_to_float_n(src, dst, n); return;
    case FASA_DTYPE_F32: break;
    }
    memmove(dst, src, n * sizeof(float));
}

void fasa__float_to_dtype_n(fasa_dtype t, const float *src, void *dst, size_t n)
{
    switch (t) {
    case FASA_DTYPE_F16: fasa__float_to_half_n(src, dst, n); return;
    case FASA_DTYPE_BF16: fasa__float_to_bf16_n(src, dst, n); return;
    case FASA_DTYPE_F32: break;
    }
    memmove(dst, src, n * sizeof(float));
}

void fasa__convert_n(fasa_dtype to, void *dst, fasa_dtype from, const void *src, size_t n)
{
    if (to == from) { /* the bits, unchanged (a NaN payload too) */
        memmove(dst, src, n * fasa__dtype_size(to));
        return;
    }
    float tmp[256];
    for (size_t i = 0; i < n; i += 256) {
        size_t m = n - i < 256 ? n - i : 256;
        fasa__dtype_to_float_n(from, (const char *)src + i * fasa__dtype_size(from), tmp, m);
        fasa__float_to_dtype_n(to, tmp, (char *)dst + i * fasa__dtype_size(to), m);
    }
}

fasa_dtype fasa__io_dtype(fasa_io_type t)
{
    return t == FASA_IO_F16 ? FASA_DTYPE_F16 : t == FASA_IO_BF16 ? FASA_DTYPE_BF16 : FASA_DTYPE_F32;
}
