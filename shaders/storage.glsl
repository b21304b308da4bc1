/* The storage type of K, V and K_dom in a shader variant (shaders/meson.build
 * compiles each with one of):
 *   STORAGE_F16  = 1: IEEE binary16, two elements per word (low half first)
 *   STORAGE_BF16 = 1: bfloat16 (the top half of an fp32), two per word
 *   neither:          fp32, one per word
 * STORAGE_16 is set for both 16-bit types (the word layout they share);
 * unpack2 widens the two elements of a word to fp32 and unpack1 one element
 * held in the low 16 bits (both exact: bf16 is a shift, fp16 unpackHalf2x16). */
#ifndef STORAGE_F16
#define STORAGE_F16 0
#endif
#ifndef STORAGE_BF16
#define STORAGE_BF16 0
#endif
#if STORAGE_F16 || STORAGE_BF16
#define STORAGE_16 1
#else
#define STORAGE_16 0
#endif

vec2 unpack2(uint w)
{
#if STORAGE_BF16
    return vec2(uintBitsToFloat(w << 16), uintBitsToFloat(w & 0xffff0000u));
#else
    return unpackHalf2x16(w);
#endif
}

float unpack1(uint h)
{
#if STORAGE_BF16
    return uintBitsToFloat(h << 16);
#else
    return unpackHalf2x16(h).x;
#endif
}
