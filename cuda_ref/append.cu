/* append: writes the K and V rows of new tokens into a layer's storage,
 * converting to the storage dtype, and the token's K_dom row: the union
 * dims U_g of its KV head, zero padded to u_pad (as fasa__cpu_append). */
#include "common.cuh"

namespace {

/* One element from the source dtype into the storage dtype.  Equal dtypes
 * copy the bits, so a stored row is bit-identical to the CPU backend's;
 * others go through the exact fp32 value and round once (store1). */
template <typename D, typename S>
__device__ __forceinline__ void put(D *d, const S *s) { fasa_cu::store1(d, fasa_cu::load1(s)); }
template <typename T>
__device__ __forceinline__ void put(T *d, const T *s) { *d = *s; }

/* One block per (token, KV head); threads stride over the dims. */
template <typename S, typename D>
__global__ void append_kernel(fasa_cu_append_args a)
{
    uint32_t t = blockIdx.x, g = blockIdx.y, d = a.head_dim;
    size_t src = ((size_t)t * a.n_kv_heads + g) * d;
    size_t row = (size_t)g * a.cap + a.first + t;
    const S *ks = static_cast<const S *>(a.k) + src;
    const S *vs = static_cast<const S *>(a.v) + src;
    D *kd = static_cast<D *>(a.k_dst) + row * d;
    D *vd = static_cast<D *>(a.v_dst) + row * d;
    for (uint32_t c = threadIdx.x; c < d; c += blockDim.x) {
        put(kd + c, ks + c);
        put(vd + c, vs + c);
    }
    if (!a.kdom) return;
    /* K_dom holds the same converted values as the K row it is cut from */
    D *dd = static_cast<D *>(a.kdom) + row * a.u_pad;
    const uint16_t *dims = a.udims + (size_t)g * a.u_pad;
    uint32_t u = a.usize[g];
    for (uint32_t s = threadIdx.x; s < a.u_pad; s += blockDim.x) {
        if (s < u) put(dd + s, ks + dims[s]);
        else fasa_cu::store1(dd + s, 0.0f);
    }
}

/* sync: one block per (token, KV head) writes the K_dom row of a token the
 * engine wrote into its own K, read in place in the storage dtype. */
template <typename T>
__global__ void sync_kernel(fasa_cu_sync_args a)
{
    uint32_t t = a.first + blockIdx.x, g = blockIdx.y;
    const T *ks = static_cast<const T *>(a.k) + fasa_cu_row_at(g, t, a.ts, a.hs);
    T *dd = static_cast<T *>(a.kdom) + ((size_t)g * a.cap + t) * a.u_pad;
    const uint16_t *dims = a.udims + (size_t)g * a.u_pad;
    uint32_t u = a.usize[g];
    for (uint32_t s = threadIdx.x; s < a.u_pad; s += blockDim.x) {
        if (s < u) put(dd + s, ks + dims[s]);
        else fasa_cu::store1(dd + s, 0.0f);
    }
}

template <typename S, typename D>
cudaError_t launch(const fasa_cu_append_args *a, cudaStream_t stream)
{
    dim3 grid(a->n, a->n_kv_heads);
    append_kernel<S, D><<<grid, FASA_CU_APPEND_THREADS, 0, stream>>>(*a);
    return fasa_cu::launched();
}

template <typename S>
cudaError_t launch_to(const fasa_cu_append_args *a, cudaStream_t stream)
{
    switch (a->dst_dtype) {
    case FASA_CU_F16: return launch<S, __half>(a, stream);
    case FASA_CU_BF16: return launch<S, fasa_cu::bf16>(a, stream);
    default: return launch<S, float>(a, stream);
    }
}

template <typename T>
cudaError_t launch_sync(const fasa_cu_sync_args *a, cudaStream_t stream)
{
    dim3 grid(a->n, a->n_kv_heads);
    sync_kernel<T><<<grid, FASA_CU_APPEND_THREADS, 0, stream>>>(*a);
    return fasa_cu::launched();
}

/* A q in a 16-bit io type widened to fp32, exactly. */
template <typename T>
__global__ void widen_kernel(const T *src, uint32_t n, float *dst)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = fasa_cu::load1(src + i);
}

} // namespace

extern "C" cudaError_t fasa_cu_append(const fasa_cu_append_args *a, cudaStream_t stream)
{
    if (a->n == 0) return cudaSuccess;
    switch (a->src_dtype) {
    case FASA_CU_F16: return launch_to<__half>(a, stream);
    case FASA_CU_BF16: return launch_to<fasa_cu::bf16>(a, stream);
    default: return launch_to<float>(a, stream);
    }
}

extern "C" cudaError_t fasa_cu_sync(const fasa_cu_sync_args *a, cudaStream_t stream)
{
    if (a->n == 0) return cudaSuccess;
    switch (a->dtype) {
    case FASA_CU_F16: return launch_sync<__half>(a, stream);
    case FASA_CU_BF16: return launch_sync<fasa_cu::bf16>(a, stream);
    default: return launch_sync<float>(a, stream);
    }
}

extern "C" cudaError_t fasa_cu_widen(const void *src, int dtype, uint32_t n, float *dst, cudaStream_t stream)
{
    if (n == 0) return cudaSuccess;
    uint32_t blocks = (n + 127) / 128;
    if (dtype == FASA_CU_BF16) widen_kernel<<<blocks, 128, 0, stream>>>(static_cast<const fasa_cu::bf16 *>(src), n, dst);
    else widen_kernel<<<blocks, 128, 0, stream>>>(static_cast<const __half *>(src), n, dst);
    return fasa_cu::launched();
}

/* Any kernel will do: every .cu file is built with the same -gencode list,
 * so if this image loads on the device, all of them do. */
extern "C" cudaError_t fasa_cu_probe(void)
{
    cudaFuncAttributes attr;
    return cudaFuncGetAttributes(&attr, append_kernel<float, float>);
}
