/* bfloat16 conversions (src/half.c) against a reference that rounds by
 * value, not by bit tricks: exhaustive over all 2^32 fp32 bit patterns
 * (fp32 -> bf16 -> fp32), over all 2^16 bf16 patterns (bf16 -> fp32), and
 * over all 2^16 patterns of each 16-bit type converted into the other
 * (fasa__convert_n: fp16 <-> bf16, rounded once through the exact fp32).
 *
 * The reference for a finite x: the two bf16 neighbours lo <= |x| < hi
 * (lo = |x| with the low 16 fraction bits cleared, hi the next bf16 up,
 * 2^128 standing for Inf), then the nearer one by their distances in
 * double, a tie to the one with an even last fraction bit.  (bf16 -> fp32
 * is checked against the value computed from the fields.)  NaN must stay
 * NaN (quiet) with its sign; Inf stays Inf. */
#include "check.h"
#include "internal.h"

#include <math.h>
#include <string.h>

static float bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* The value of bf16 bits b, by its fields. */
static double bf16_value(uint16_t b)
{
    int sign = b >> 15, e = (b >> 7) & 0xff, m = b & 0x7f;
    double v;
    if (e == 0xff) v = m ? NAN : INFINITY;
    else if (e == 0) v = ldexp(m / 128.0, -126); /* subnormal */
    else v = ldexp(1.0 + m / 128.0, e - 127);
    return sign ? -v : v;
}

/* The bf16 bits nearest to x (finite or Inf), ties to even. */
static uint16_t ref_bf16(float x)
{
    uint32_t u = f_bits(x), sign = u & 0x80000000u, a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)((sign | a) >> 16); /* Inf (NaN is checked apart) */
    uint32_t lo = a & 0xffff0000u; /* truncation: the neighbour at or below |x| */
    if (lo == a) return (uint16_t)((sign | lo) >> 16);
    /* the neighbours' values: bf16 bits b are the fp32 value of b << 16 */
    double ax = fabs((double)x), vlo = bits_f(lo);
    double vhi = lo + 0x10000u >= 0x7f800000u ? 0x1p128 : (double)bits_f(lo + 0x10000u);
    double dlo = ax - vlo, dhi = vhi - ax;
    uint32_t pick = dlo < dhi ? lo : dhi < dlo ? lo + 0x10000u : ((lo >> 16) & 1u ? lo + 0x10000u : lo);
    return (uint16_t)((sign | pick) >> 16);
}

int main(void)
{
    /* bf16 -> fp32: exact, every pattern */
    uint32_t bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        float got = fasa__bf16_to_float((uint16_t)b);
        double want = bf16_value((uint16_t)b);
        if (isnan(want)) bad += !isnan(got) || (f_bits(got) >> 16) != b; /* the payload kept */
        else bad += (double)got != want || !signbit(got) != !signbit(want);
    }
    CHECK(bad == 0, "%u bf16 values widen wrongly", bad);

    /* fp32 -> bf16 -> fp32: every fp32 pattern */
    bad = 0;
    uint32_t bad_nan = 0, first_bad = 0;
    for (uint64_t w = 0; w < (1ull << 32); w++) {
        uint32_t u = (uint32_t)w;
        float f = bits_f(u);
        uint16_t got = fasa__float_to_bf16(f);
        if (f != f) {
            /* NaN: still NaN, quiet, same sign */
            bad_nan += (got & 0x7f80u) != 0x7f80u || (got & 0x40u) == 0 || (got >> 15) != (u >> 31);
            continue;
        }
        uint16_t want = ref_bf16(f);
        if (got != want) {
            if (!bad) first_bad = u;
            bad++;
        }
        /* the round trip is the rounded value, exactly */
        float back = fasa__bf16_to_float(got);
        if (f_bits(back) != (uint32_t)want << 16) bad++;
    }
    CHECK(bad == 0, "%u fp32 values round wrongly to bf16 (first: bits 0x%08x)", bad, first_bad);
    CHECK(bad_nan == 0, "%u NaNs do not stay quiet NaNs of their sign", bad_nan);
    /* the documented edges */
    CHECK(fasa__float_to_bf16(3e38f) == 0x7f62u, "3e38 is finite in bf16 (got 0x%04x)", fasa__float_to_bf16(3e38f));
    CHECK(fasa__float_to_bf16(bits_f(0x7f7f7fffu)) == 0x7f7fu, "just below 0x1.fep127 rounds down to the largest bf16");
    CHECK(fasa__float_to_bf16(bits_f(0x7f7f8000u)) == 0x7f80u, "0x1.fep127 (a tie) rounds to +Inf");
    CHECK(fasa__float_to_bf16(-3.4028235e38f) == 0xff80u, "-FLT_MAX rounds to -Inf");
    CHECK(fasa__float_to_bf16(1.0f + 0x1p-8f) == 0x3f80u, "1 + 2^-8 ties to even (down)");
    CHECK(fasa__float_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82u, "1 + 3*2^-8 ties to even (up)");
    CHECK(fasa__float_to_bf16(bits_f(0x00000001u)) == 0, "the smallest fp32 subnormal rounds to +0");
    CHECK(fasa__float_to_bf16(bits_f(0x7f800001u)) == 0x7fc0u, "a signalling NaN becomes quiet");

    /* fp16 <-> bf16, every pattern of each, through fasa__convert_n */
    uint16_t src[65536], dst[65536];
    for (uint32_t i = 0; i < 65536; i++) src[i] = (uint16_t)i;
    fasa__convert_n(FASA_DTYPE_BF16, dst, FASA_DTYPE_F16, src, 65536);
    bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        float h = fasa__half_to_float((uint16_t)i); /* exact (test_half checks it) */
        if (h != h) bad += (dst[i] & 0x7f80u) != 0x7f80u || (dst[i] & 0x7fu) == 0;
        else bad += dst[i] != ref_bf16(h);
    }
    CHECK(bad == 0, "%u fp16 values convert wrongly to bf16", bad);
    fasa__convert_n(FASA_DTYPE_F16, dst, FASA_DTYPE_BF16, src, 65536);
    bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        float b = fasa__bf16_to_float((uint16_t)i);
        if (b != b) bad += (dst[i] & 0x7c00u) != 0x7c00u || (dst[i] & 0x3ffu) == 0;
        else bad += dst[i] != fasa__float_to_half(b); /* one rounding, from the exact value */
    }
    CHECK(bad == 0, "%u bf16 values convert wrongly to fp16", bad);
    CHECK(fasa__float_to_half(fasa__bf16_to_float(0x4780u)) == 0x7c00u, "bf16 65536 overflows fp16");
    /* equal types copy the bits, a NaN payload included */
    uint16_t nan_in[2] = {0x7f81u, 0xffa5u}, nan_out[2];
    fasa__convert_n(FASA_DTYPE_BF16, nan_out, FASA_DTYPE_BF16, nan_in, 2);
    CHECK(memcmp(nan_in, nan_out, 4) == 0, "bf16 -> bf16 copies the bits");
    return check_done("test_bf16conv");
}
