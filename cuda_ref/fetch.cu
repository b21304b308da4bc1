/* fetch (FASA-M): the rows an offloaded cache's FAC needs, the row-cache
 * policy of src/rowcache.c and the staged gather; recorded by fac after
 * topk.  Same algorithm as the OpenCL kernels (opencl/fetch.cl explains
 * it); every phase is a function of cuda_ref/fasa_cuda_fetch.h, which
 * tests/cuda/test_cuda_fetch_logic.c replays on the host.
 *
 *   need_kernel   block per KV head: distinct needed tokens, ascending
 *                 (DIRECT stops here: counts only)
 *   slots_kernel  block per KV head: staging slots, or policy phases 0-3
 *                 (forget truncated rows, hits, victims, misses placed)
 *   order_kernel  row cache: the next victim order, and the remapped
 *                 selection (staging: slots_kernel remaps)
 *   copy_kernel   copy_blocks blocks per KV head copy the listed rows */
#include "common.cuh"
#include "fasa_cuda_fetch.h"

#include <cub/block/block_scan.cuh>

namespace {

#define FT FASA_FM_THREADS
typedef cub::BlockScan<uint32_t, FT> fm_scan;

/* Exclusive sum over the block; the storage is free again on return. */
__device__ __forceinline__ uint32_t scan(fm_scan::TempStorage &tmp, uint32_t v, uint32_t *total)
{
    uint32_t excl;
    fm_scan(tmp).ExclusiveSum(v, excl, *total);
    __syncthreads();
    return excl;
}

__global__ void __launch_bounds__(FT) need_kernel(fasa_cu_fetch_args a)
{
    __shared__ fm_scan::TempStorage tmp;
    uint32_t g = blockIdx.x, tid = threadIdx.x, lo, hi, total;
    fasa_fm_view v = fasa_fm_view_of(&a, g);
    fasa_fm_mark(&a, &v, tid, FT);
    __syncthreads();
    uint32_t c = fasa_fm_count_words(&a, &v, tid, FT, &lo, &hi);
    uint32_t pos = scan(tmp, c, &total);
    fasa_fm_emit(&a, &v, lo, hi, pos);
    if (tid == 0) fasa_fm_need_done(&a, g, total);
}

/* Victims in policy order (free slots, then the order list's unneeded
 * resident slots) into v.vict; returns how many. */
__device__ uint32_t victims(const fasa_cu_fetch_args &a, const fasa_fm_view &v, fm_scan::TempStorage &tmp)
{
    uint32_t tid = threadIdx.x, lo, hi, nfree, nkeep;
    fasa_fm_seg(v.S, tid, FT, &lo, &hi);
    uint32_t pos = scan(tmp, fasa_fm_pick_count(&a, &v, 0, lo, hi), &nfree);
    fasa_fm_pick_write(&a, &v, 0, lo, hi, pos, v.vict);
    fasa_fm_seg((uint32_t)v.lru[v.S], tid, FT, &lo, &hi);
    pos = scan(tmp, fasa_fm_keep_count(&a, &v, lo, hi), &nkeep);
    fasa_fm_keep_write(&a, &v, lo, hi, pos, v.vict + nfree);
    return nfree + nkeep;
}

__global__ void __launch_bounds__(FT) slots_kernel(fasa_cu_fetch_args a)
{
    __shared__ fm_scan::TempStorage tmp;
    uint32_t g = blockIdx.x, tid = threadIdx.x, lo, hi, m;
    fasa_fm_view v = fasa_fm_view_of(&a, g);
    uint32_t n = a.info[(size_t)g * 4];
    if (v.S == 0) { /* staging: slot i holds needed row i */
        fasa_fm_stage(&v, n, tid, FT);
        __syncthreads();
        fasa_fm_remap(&a, &v, g, tid, FT);
        __syncthreads();
        fasa_fm_unstage(&v, n, tid, FT);
        if (tid == 0) fasa_fm_slots_done(&a, g, 0, n);
        return;
    }
    fasa_fm_forget(&a, &v, tid, FT);
    __syncthreads();
    fasa_fm_seg(n, tid, FT, &lo, &hi);
    uint32_t rank = scan(tmp, fasa_fm_hits(&a, &v, lo, hi), &m);
    uint32_t nv = victims(a, v, tmp);
    __syncthreads();
    fasa_fm_assign(&a, &v, lo, hi, rank, nv);
    if (tid == 0) fasa_fm_slots_done(&a, g, n - m, m);
}

__global__ void __launch_bounds__(FT) order_kernel(fasa_cu_fetch_args a)
{
    __shared__ fm_scan::TempStorage tmp;
    uint32_t g = blockIdx.x, tid = threadIdx.x, lo, hi, na, nb;
    fasa_fm_view v = fasa_fm_view_of(&a, g);
    fasa_fm_seg((uint32_t)v.lru[v.S], tid, FT, &lo, &hi);
    uint32_t pos = scan(tmp, fasa_fm_keep_count(&a, &v, lo, hi), &na);
    fasa_fm_keep_write(&a, &v, lo, hi, pos, v.vict);
    fasa_fm_seg(v.S, tid, FT, &lo, &hi);
    pos = scan(tmp, fasa_fm_pick_count(&a, &v, 1, lo, hi), &nb);
    fasa_fm_pick_write(&a, &v, 1, lo, hi, pos, v.vict + na);
    __syncthreads();
    fasa_fm_order_store(&v, na + nb, tid, FT);
    fasa_fm_remap(&a, &v, g, tid, FT);
}

__global__ void __launch_bounds__(FASA_FM_COPY_THREADS) copy_kernel(fasa_cu_fetch_args a)
{
    uint32_t g = blockIdx.y;
    fasa_fm_view v = fasa_fm_view_of(&a, g);
    uint32_t m = a.info[(size_t)g * 4 + 2];
    for (uint32_t r = blockIdx.x; r < m; r += gridDim.x) fasa_fm_copy_row(&a, &v, g, r, threadIdx.x, FASA_FM_COPY_THREADS);
}

} // namespace

extern "C" cudaError_t fasa_cu_fetch(const fasa_cu_fetch_args *a, cudaStream_t stream)
{
    if (a->n_kv_heads == 0) return cudaSuccess;
    need_kernel<<<a->n_kv_heads, FT, 0, stream>>>(*a);
    if (a->staged) {
        slots_kernel<<<a->n_kv_heads, FT, 0, stream>>>(*a);
        if (a->slots) order_kernel<<<a->n_kv_heads, FT, 0, stream>>>(*a);
        copy_kernel<<<dim3(a->copy_blocks, a->n_kv_heads), FASA_FM_COPY_THREADS, 0, stream>>>(*a);
    }
    return fasa_cu::launched();
}
