/* Device helpers shared by the CUDA reference kernels: fp16/fp32 storage
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

/* Two consecutive elements as fp32.  Callers pass an even element offset
 * of a row whose width is even, so the pair is 4-byte (fp16) or 8-byte
 * (fp32) aligned. */
__device__ __forceinline__ float2 load2(const float *p) { return *reinterpret_cast<const float2 *>(p); }
__device__ __forceinline__ float2 load2(const __half *p)
{
    return __half22float2(*reinterpret_cast<const __half2 *>(p));
}

__device__ __forceinline__ float load1(const float *p) { return *p; }
__device__ __forceinline__ float load1(const __half *p) { return __half2float(*p); }

/* Storage conversion; float -> half rounds to nearest even and overflows
 * to Inf, exactly like fasa__float_to_half. */
__device__ __forceinline__ void store1(float *p, float x) { *p = x; }
__device__ __forceinline__ void store1(__half *p, float x) { *p = __float2half_rn(x); }

/* A launch's status without waiting for the kernel. */
inline cudaError_t launched() { return cudaGetLastError(); }

} // namespace fasa_cu

#endif
