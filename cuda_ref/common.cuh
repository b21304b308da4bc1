/* Device helpers shared by the CUDA reference kernels: fp16/bf16/fp32 storage
 * loads (fp32 arithmetic everywhere, docs/SPEC.md §2 rules 4 and 8) and the launch
 * status check. */
#ifndef FASA_CUDA_COMMON_CUH
#define FASA_CUDA_COMMON_CUH

#include <cuda_fp16.h>
#include <cfloat>

#include "fasa_cuda_launch.h"

/* Online softmax starts from a finite value, never -inf (docs/SPEC.md §2
 * rule 8), as the CPU backend does. */
#define FASA_NEG_START (-FLT_MAX / 2)

namespace fasa_cu {

/* bfloat16 storage: the bits, converted by the shared bit functions of
 * fasa_cuda_logic.h (round to nearest even, NaN kept quiet), so a stored
 * element equals the CPU backend's bit for bit. */
struct bf16 {
    uint16_t bits;
};
static_assert(sizeof(bf16) == 2, "bf16 is two bytes");

/* Two consecutive elements as fp32.  Callers pass an even element offset
 * of a row whose width is even, so the pair is 4-byte (16-bit types) or
 * 8-byte (fp32) aligned. */
__device__ __forceinline__ float2 load2(const float *p) { return *reinterpret_cast<const float2 *>(p); }
__device__ __forceinline__ float2 load2(const __half *p)
{
    return __half22float2(*reinterpret_cast<const __half2 *>(p));
}
__device__ __forceinline__ float2 load2(const bf16 *p)
{
    uint32_t w = *reinterpret_cast<const uint32_t *>(p);
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}

__device__ __forceinline__ float load1(const float *p) { return *p; }
__device__ __forceinline__ float load1(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float load1(const bf16 *p) { return __uint_as_float(fasa_cu_bf16_to_f32_bits(p->bits)); }

/* Storage conversion; float -> half rounds to nearest even and overflows
 * to Inf, exactly like fasa__float_to_half; float -> bf16 like
 * fasa__float_to_bf16. */
__device__ __forceinline__ void store1(float *p, float x) { *p = x; }
__device__ __forceinline__ void store1(__half *p, float x) { *p = __float2half_rn(x); }
__device__ __forceinline__ void store1(bf16 *p, float x) { p->bits = fasa_cu_f32_bits_to_bf16(__float_as_uint(x)); }

/* A launch's status without waiting for the kernel. */
inline cudaError_t launched() { return cudaGetLastError(); }

} // namespace fasa_cu

#endif
