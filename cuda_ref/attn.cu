/* fac and dense: exact softmax attention (scale 1/sqrt(d), fp32), split
 * over tokens (flash-decoding): each block writes the online-softmax
 * partial (m, l, acc[d]) of its heads over one split, and reduce combines
 * the splits of a head.  Same statement: attend/reduce_partials in
 * src/cpu/cpu_kernels.c.
 *
 * A block serves up to FASA_CU_HEADS query heads that share its tokens
 * (the heads of a group for dense and per-group FAC; one head for
 * per-head FAC), so every K and V row is read once for all of them.
 * Per tile of FASA_CU_ATT_THREADS tokens:
 *   scores   thread t dots its token's K row with each head's q
 *   max      thread m: running max of head m, correction exp(m_old - m_new)
 *   weights  p = exp(s - m_new)
 *   sums     thread m: l = l * corr + sum p;  all threads: acc[c] = acc[c] *
 *            corr + sum_t p[t] * V[t][c] for the dims c they own */
#include "common.cuh"

namespace {

#define TT FASA_CU_ATT_THREADS
#define DIMS_PER_THREAD (FASA_CU_MAX_WIDTH / FASA_CU_ATT_THREADS)

template <typename T>
__global__ void __launch_bounds__(TT) attend_kernel(fasa_cu_attend_args a)
{
    __shared__ float qs[FASA_CU_HEADS * FASA_CU_MAX_WIDTH];
    __shared__ float ps[FASA_CU_HEADS][TT];
    __shared__ uint32_t toks[TT]; /* the tile's K/V rows */
    __shared__ float m_run[FASA_CU_HEADS], l_run[FASA_CU_HEADS], corr[FASA_CU_HEADS];
    const uint32_t tid = threadIdx.x, d = a.head_dim, split = blockIdx.x;
    const fasa_cu_unit u = fasa_cu_unit_of(blockIdx.y, a.sel && !a.per_group, a.group);
    const uint32_t nh = u.nh;
    const uint32_t begin = split * a.split.split_len;
    const uint32_t left = begin < a.n_tokens ? a.n_tokens - begin : 0; /* the plan makes no empty split */
    const uint32_t end = begin + (left < a.split.split_len ? left : a.split.split_len);
    const int32_t *idx = a.sel ? a.sel + (size_t)u.row * a.sel_stride : nullptr;
    const T *kb = static_cast<const T *>(a.k) + fasa_cu_row_at(u.g, 0, a.ts, a.hs); /* the KV head's token 0 */
    const T *vb = static_cast<const T *>(a.v) + fasa_cu_row_at(u.g, 0, a.ts, a.hs);

    for (uint32_t i = tid; i < nh * d; i += blockDim.x) qs[i] = a.q[(size_t)u.h0 * d + i]; /* heads are consecutive */
    if (tid < FASA_CU_HEADS) {
        m_run[tid] = FASA_NEG_START;
        l_run[tid] = 0.0f;
    }
    float acc[FASA_CU_HEADS][DIMS_PER_THREAD];
#pragma unroll
    for (uint32_t m = 0; m < FASA_CU_HEADS; m++)
#pragma unroll
        for (uint32_t ci = 0; ci < DIMS_PER_THREAD; ci++) acc[m][ci] = 0.0f;

    for (uint32_t t0 = begin; t0 < end; t0 += TT) {
        uint32_t nt = end - t0 < TT ? end - t0 : TT;
        __syncthreads(); /* q is loaded; the previous tile is done with toks, ps, corr */
        if (tid < nt) {
            uint32_t tok = idx ? (uint32_t)idx[t0 + tid] : t0 + tid;
            tok = fasa_cu_token_row(a.table, a.block_shift, tok); /* the token's row */
            toks[tid] = tok;
            const T *row = kb + (size_t)tok * a.ts;
            float s[FASA_CU_HEADS];
#pragma unroll
            for (uint32_t m = 0; m < FASA_CU_HEADS; m++) s[m] = 0.0f;
            for (uint32_t c = 0; c < d; c += 2) {
                float2 k = fasa_cu::load2(row + c);
#pragma unroll
                for (uint32_t m = 0; m < FASA_CU_HEADS; m++)
                    if (m < nh) s[m] = fmaf(qs[m * d + c + 1], k.y, fmaf(qs[m * d + c], k.x, s[m]));
            }
            for (uint32_t m = 0; m < nh; m++) ps[m][tid] = s[m] * a.scale;
        }
        __syncthreads();
        if (tid < nh) {
            float mx = m_run[tid];
            for (uint32_t t = 0; t < nt; t++) mx = ps[tid][t] > mx ? ps[tid][t] : mx; /* NaN never wins, as on the CPU */
            corr[tid] = expf(m_run[tid] - mx);
            m_run[tid] = mx;
        }
        __syncthreads();
        for (uint32_t i = tid; i < nh * TT; i += blockDim.x) {
            uint32_t m = i / TT, t = i % TT;
            ps[m][t] = t < nt ? expf(ps[m][t] - m_run[m]) : 0.0f;
        }
        __syncthreads();
        if (tid < nh) {
            float sum = 0.0f;
            for (uint32_t t = 0; t < nt; t++) sum += ps[tid][t];
            l_run[tid] = l_run[tid] * corr[tid] + sum;
        }
#pragma unroll
        for (uint32_t ci = 0; ci < DIMS_PER_THREAD; ci++) {
            uint32_t c = tid + ci * TT;
            if (c >= d) break;
#pragma unroll
            for (uint32_t m = 0; m < FASA_CU_HEADS; m++)
                if (m < nh) acc[m][ci] *= corr[m];
            for (uint32_t t = 0; t < nt; t++) {
                float v = fasa_cu::load1(vb + (size_t)toks[t] * a.ts + c);
#pragma unroll
                for (uint32_t m = 0; m < FASA_CU_HEADS; m++)
                    if (m < nh) acc[m][ci] = fmaf(ps[m][t], v, acc[m][ci]);
            }
        }
    }
    __syncthreads(); /* m_run and l_run of the last tile are visible */
#pragma unroll
    for (uint32_t m = 0; m < FASA_CU_HEADS; m++) {
        if (m >= nh) break;
        float *p = a.part + ((size_t)(u.h0 + m) * a.pmax + split) * (d + 2);
        if (tid == 0) {
            p[0] = m_run[m];
            p[1] = l_run[m];
        }
#pragma unroll
        for (uint32_t ci = 0; ci < DIMS_PER_THREAD; ci++) {
            uint32_t c = tid + ci * TT;
            if (c < d) p[2 + c] = acc[m][ci];
        }
    }
}

/* One block per query head: o = sum_s acc_s * w_s / sum_s l_s * w_s with
 * w_s = exp(m_s - max m), and 0 where l is 0 (as reduce_partials), stored
 * as O (fp32, or rounded to nearest even into a 16-bit io type). */
template <typename O>
__global__ void __launch_bounds__(FASA_CU_RED_THREADS) reduce_kernel(fasa_cu_reduce_args a)
{
    O *out = static_cast<O *>(a.o);
    uint32_t h = blockIdx.x, d = a.head_dim, stride = d + 2;
    const float *p = a.part + (size_t)h * a.pmax * stride;
    float mx = FASA_NEG_START, l = 0.0f;
    for (uint32_t s = 0; s < a.n_parts; s++) mx = p[(size_t)s * stride] > mx ? p[(size_t)s * stride] : mx;
    for (uint32_t s = 0; s < a.n_parts; s++) l += p[(size_t)s * stride + 1] * expf(p[(size_t)s * stride] - mx);
    for (uint32_t c = threadIdx.x; c < d; c += blockDim.x) {
        float o = 0.0f;
        for (uint32_t s = 0; s < a.n_parts; s++) o += p[(size_t)s * stride + 2 + c] * expf(p[(size_t)s * stride] - mx);
        fasa_cu::store1(out + (size_t)h * d + c, l > 0.0f ? o / l : 0.0f);
    }
}

} // namespace

extern "C" cudaError_t fasa_cu_attend(const fasa_cu_attend_args *a, cudaStream_t stream)
{
    int per_head_rows = a->sel && !a->per_group;
    dim3 grid(a->split.n_splits, fasa_cu_units(per_head_rows, a->n_q_heads, a->n_kv_heads, a->group));
    if (grid.x == 0 || grid.y == 0) return cudaSuccess;
    switch (a->dtype) {
    case FASA_CU_F16: attend_kernel<__half><<<grid, TT, 0, stream>>>(*a); break;
    case FASA_CU_BF16: attend_kernel<fasa_cu::bf16><<<grid, TT, 0, stream>>>(*a); break;
    default: attend_kernel<float><<<grid, TT, 0, stream>>>(*a); break;
    }
    return fasa_cu::launched();
}

extern "C" cudaError_t fasa_cu_reduce(const fasa_cu_reduce_args *a, cudaStream_t stream)
{
    if (a->n_q_heads == 0) return cudaSuccess;
    switch (a->o_type) {
    case FASA_CU_IO_F16: reduce_kernel<__half><<<a->n_q_heads, FASA_CU_RED_THREADS, 0, stream>>>(*a); break;
    case FASA_CU_IO_BF16: reduce_kernel<fasa_cu::bf16><<<a->n_q_heads, FASA_CU_RED_THREADS, 0, stream>>>(*a); break;
    default: reduce_kernel<float><<<a->n_q_heads, FASA_CU_RED_THREADS, 0, stream>>>(*a); break;
    }
    return fasa_cu::launched();
}
