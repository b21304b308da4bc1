/* fp32 -> fp16 with round-to-nearest-even, bit-exact with src/half.c
 * (packHalf2x16 leaves the rounding mode to the implementation). */
uint f32_to_f16(float f)
{
    uint u = floatBitsToUint(f);
    uint sign = (u >> 16) & 0x8000u;
    uint a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* Inf or NaN: quiet the NaN, keep its top payload */
        return sign | 0x7c00u | (a > 0x7f800000u ? (0x200u | ((a >> 13) & 0x3ffu)) : 0u);
    if (a >= 0x477ff000u) return sign | 0x7c00u; /* rounds to >= 65520 */
    if (a < 0x38800000u) { /* subnormal half or zero */
        if (a < 0x33000000u) return sign; /* below half the smallest subnormal */
        uint m = (a & 0x7fffffu) | 0x800000u;
        uint sh = 126u - (a >> 23); /* value * 2^24 = m >> sh, sh in 14..24 */
        uint q = m >> sh, rest = m & ((1u << sh) - 1u), half_ulp = 1u << (sh - 1u);
        if (rest > half_ulp || (rest == half_ulp && (q & 1u) != 0u)) q++;
        return sign | q;
    }
    uint h = (a >> 13) - (112u << 10);
    uint rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) != 0u)) h++;
    return sign | h;
}

/* fp32 -> bf16 with round-to-nearest-even, bit-exact with src/half.c: the
 * 16 dropped bits round the kept ones, a carry may reach the exponent (up
 * to Inf from 0x7f7f8000); NaN keeps its sign and top payload, made quiet. */
uint f32_to_bf16(float f)
{
    uint u = floatBitsToUint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
