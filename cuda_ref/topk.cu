/* topk: exact top-k per selection row (docs/SPEC.md §8; same statement:
 * fasa__cpu_topk and fasa__select_topk).
 *
 * Row r holds scores[r][0, L).  Slots [0, forced) of its selection get the
 * forced tokens (sinks, then the recent window); the candidates are the
 * window [lo, lo + n_cand) between them, lo = n_sink; k = n_fac - forced.
 * MSD radix select with 8-bit digits over the order-preserving keys:
 *
 *   init               zero the histogram, reset the state, forced tokens
 *   hist(24) scan(24)  histogram of the top digit; pick the bin holding the
 *   hist(16) scan(16)  k-th largest key and fix the digit; each later pass
 *   hist(8)  scan(8)   counts only keys whose higher digits match
 *   hist(0)  scan(0)   -> threshold key tau and NEED ties to take
 *   count              every key above tau goes to a slot from an atomic
 *                      counter (the output is a set); per tile, ties counted
 *   emit               ties in index order: a tile's rank base is the sum of
 *                      the tie counts of the tiles before it, inside a tile a
 *                      block scan over contiguous per-thread runs; the NEED
 *                      lowest-index ties are taken
 *
 * A scan whose bin holds exactly the keys still needed ends the search
 * (DONE): later passes return at once.  All index math is in
 * fasa_cuda_logic.h and is emulated on the host by tests/cuda. */
#include "common.cuh"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

namespace {

typedef cub::BlockReduce<uint32_t, FASA_TK_THREADS> block_sum;
typedef cub::BlockScan<uint32_t, FASA_TK_THREADS> block_scan;

__device__ __forceinline__ void load_state(const uint32_t *g, uint32_t *st)
{
#pragma unroll
    for (int i = 0; i < FASA_TK_WORDS; i++) st[i] = g[i];
}

__global__ void __launch_bounds__(FASA_TK_THREADS) topk_init(fasa_cu_topk_args a)
{
    uint32_t r = blockIdx.x, tid = threadIdx.x;
    a.hist[(size_t)r * 256 + tid] = 0; /* FASA_TK_THREADS == 256 bins */
    if (tid == 0) {
        uint32_t st[FASA_TK_WORDS];
        fasa_tk_init(st, a.k);
        for (int i = 0; i < FASA_TK_WORDS; i++) a.state[(size_t)r * FASA_TK_WORDS + i] = st[i];
    }
    int32_t *out = a.sel + (size_t)r * a.sel_stride;
    uint32_t forced = a.n_sink + a.n_recent;
    for (uint32_t i = tid; i < forced; i += blockDim.x)
        out[i] = (int32_t)(i < a.n_sink ? i : a.L - a.n_recent + (i - a.n_sink));
}

/* Histogram of the digit at `shift` over one tile of the window. */
__global__ void __launch_bounds__(FASA_TK_THREADS) topk_hist(fasa_cu_topk_args a, uint32_t shift)
{
    __shared__ uint32_t h[256];
    uint32_t r = blockIdx.y, tid = threadIdx.x;
    uint32_t st[FASA_TK_WORDS];
    load_state(a.state + (size_t)r * FASA_TK_WORDS, st);
    if (st[FASA_TK_DONE]) return; /* uniform over the block */
    h[tid] = 0;
    __syncthreads();
    uint32_t n_cand = a.L - a.n_sink - a.n_recent;
    uint32_t t0 = blockIdx.x * FASA_TK_HIST_TILE;
    uint32_t t1 = t0 + FASA_TK_HIST_TILE < n_cand ? t0 + FASA_TK_HIST_TILE : n_cand;
    const float *x = a.scores + (size_t)r * a.score_stride + a.n_sink;
    for (uint32_t i = t0 + tid; i < t1; i += blockDim.x) {
        uint32_t key = fasa_tk_key(x[i]);
        if (fasa_tk_matches(key, st)) atomicAdd(&h[fasa_tk_digit(key, shift)], 1u);
    }
    __syncthreads();
    if (h[tid]) atomicAdd(&a.hist[(size_t)r * 256 + tid], h[tid]);
}

/* One block per row: fixes the digit at `shift` and clears the histogram
 * for the next pass.  Every thread reads DONE before the barrier and only
 * thread 0 writes the state after it, so the early return is uniform. */
__global__ void __launch_bounds__(FASA_TK_THREADS) topk_scan(fasa_cu_topk_args a, uint32_t shift)
{
    __shared__ uint32_t h[256];
    uint32_t r = blockIdx.x, tid = threadIdx.x;
    uint32_t *gst = a.state + (size_t)r * FASA_TK_WORDS;
    if (gst[FASA_TK_DONE]) return;
    h[tid] = a.hist[(size_t)r * 256 + tid];
    a.hist[(size_t)r * 256 + tid] = 0;
    __syncthreads();
    if (tid != 0) return;
    uint32_t st[FASA_TK_WORDS];
    load_state(gst, st);
    fasa_tk_pick(h, shift, st);
    for (int i = 0; i < FASA_TK_WORDS; i++) gst[i] = st[i];
}

/* Per tile: emits every key above the threshold, counts the ties. */
__global__ void __launch_bounds__(FASA_TK_THREADS) topk_count(fasa_cu_topk_args a, uint32_t te)
{
    __shared__ typename block_sum::TempStorage tmp;
    uint32_t r = blockIdx.y, t = blockIdx.x, tid = threadIdx.x;
    uint32_t *gst = a.state + (size_t)r * FASA_TK_WORDS;
    uint32_t st[FASA_TK_WORDS];
    load_state(gst, st);
    uint32_t n_cand = a.L - a.n_sink - a.n_recent, start = t * te;
    uint32_t n = te < n_cand - start ? te : n_cand - start; /* the grid has no empty tile */
    const float *x = a.scores + (size_t)r * a.score_stride + a.n_sink + start;
    int32_t *out = a.sel + (size_t)r * a.sel_stride + a.n_sink + a.n_recent;
    uint32_t eq = 0;
    for (uint32_t i = tid; i < n; i += blockDim.x) {
        int c = fasa_tk_class(fasa_tk_key(x[i]), st);
        if (c > 0) out[atomicAdd(&gst[FASA_TK_GT], 1u)] = (int32_t)(a.n_sink + start + i);
        else if (c == 0) eq++;
    }
    uint32_t total = block_sum(tmp).Sum(eq);
    if (tid == 0) a.tiles[(size_t)r * FASA_TK_MAX_TILES + t] = total;
}

/* Per tile: emits its ties whose index-order rank is below NEED. */
__global__ void __launch_bounds__(FASA_TK_THREADS) topk_emit(fasa_cu_topk_args a, uint32_t te)
{
    __shared__ union {
        typename block_sum::TempStorage sum;
        typename block_scan::TempStorage scan;
    } tmp;
    __shared__ uint32_t eq_before;
    uint32_t r = blockIdx.y, t = blockIdx.x, tid = threadIdx.x;
    uint32_t st[FASA_TK_WORDS];
    load_state(a.state + (size_t)r * FASA_TK_WORDS, st);
    const uint32_t *tc = a.tiles + (size_t)r * FASA_TK_MAX_TILES;
    uint32_t part = 0;
    for (uint32_t i = tid; i < t; i += blockDim.x) part += tc[i];
    uint32_t before = block_sum(tmp.sum).Sum(part);
    if (tid == 0) eq_before = before;
    __syncthreads(); /* also ends the use of tmp.sum before tmp.scan */
    before = eq_before;
    if (!fasa_tk_tile_emits(tc[t], before, st)) return; /* uniform over the block */

    uint32_t n_cand = a.L - a.n_sink - a.n_recent, start = t * te;
    uint32_t n = te < n_cand - start ? te : n_cand - start;
    const float *x = a.scores + (size_t)r * a.score_stride + a.n_sink + start;
    uint32_t lo, hi, mine = 0;
    fasa_tk_run(n, tid, &lo, &hi);
    for (uint32_t i = lo; i < hi; i++) mine += fasa_tk_class(fasa_tk_key(x[i]), st) == 0;
    uint32_t excl;
    block_scan(tmp.scan).ExclusiveSum(mine, excl);
    uint32_t rank = before + excl;
    int32_t *out = a.sel + (size_t)r * a.sel_stride + a.n_sink + a.n_recent;
    for (uint32_t i = lo; i < hi && rank < st[FASA_TK_NEED]; i++) {
        if (fasa_tk_class(fasa_tk_key(x[i]), st) != 0) continue;
        out[fasa_tk_tie_slot(st, rank)] = (int32_t)(a.n_sink + start + i);
        rank++;
    }
}

} // namespace

extern "C" cudaError_t fasa_cu_topk(const fasa_cu_topk_args *a, cudaStream_t stream)
{
    if (a->n_rows == 0) return cudaSuccess;
    topk_init<<<a->n_rows, FASA_TK_THREADS, 0, stream>>>(*a);
    cudaError_t err = fasa_cu::launched();
    if (err != cudaSuccess || a->k == 0) return err; /* the forced tokens fill the budget */
    uint32_t n_cand = a->L - a->n_sink - a->n_recent;
    for (int shift = 24; shift >= 0 && err == cudaSuccess; shift -= 8) {
        topk_hist<<<dim3(fasa_tk_n_hist_blocks(n_cand), a->n_rows), FASA_TK_THREADS, 0, stream>>>(*a, (uint32_t)shift);
        topk_scan<<<a->n_rows, FASA_TK_THREADS, 0, stream>>>(*a, (uint32_t)shift);
        err = fasa_cu::launched();
    }
    uint32_t te = fasa_tk_tile(n_cand);
    dim3 tiles(fasa_tk_n_tiles(n_cand, te), a->n_rows);
    if (err == cudaSuccess) {
        topk_count<<<tiles, FASA_TK_THREADS, 0, stream>>>(*a, te);
        topk_emit<<<tiles, FASA_TK_THREADS, 0, stream>>>(*a, te);
        err = fasa_cu::launched();
    }
    return err;
}
