/* tip: TIP scores (docs/SPEC.md §2).  For query head h of KV head g and token
 * j, S[h][j] = sum over union slots c of qm[h][c] * K_dom[g][j][c], where
 * qm[h][c] is q[h][dim] for the dim tip_map puts in slot c and 0 for slots
 * outside I_h (adding exact zeros leaves the sum unchanged).  The oracle
 * scores the full rows of K with q itself.  Group selection sums the G
 * scores of a group in head order.  Same statement: fasa__cpu_tip. */
#include "common.cuh"

namespace {

/* A score depends only on the head's own dims (docs/SPEC.md §8).  The fast dot
 * product also multiplies the other heads' slots of U_g by an exact zero,
 * which adds nothing unless the K value there is NaN or Inf (0 * NaN and
 * 0 * Inf are NaN): so a score that is not NaN is already exact, and only a
 * NaN one (fasa_tip_is_nan, a bit test) is recomputed over the head's own
 * slots (tip_map >= 0), in slot order, one fma per term (as
 * src/cpu/cpu_kernels.c, own_score).  It stays NaN when an own dim holds NaN
 * or its products give Inf - Inf.  The hot loop only adds a test of the sum
 * of a batch's scores (any NaN makes it NaN); the rare batch that fails it
 * is redone in plain loops, so the accumulators stay in registers. */
template <typename T>
__device__ float own_score(const T *row, const float *qh, const int16_t *map, uint32_t w)
{
    float acc = 0.0f;
    for (uint32_t c = 0; c < w; c++)
        if (map[c] >= 0) acc = fmaf(qh[c], fasa_cu::load1(row + c), acc);
    return acc;
}

/* One head's score of a row in a batch that met a NaN: the fast dot
 * product again (the hot loop's arithmetic, so the same value), over its
 * own dims when that is NaN. */
template <typename T>
__device__ float head_score(const T *row, const float *qh, const int16_t *map, uint32_t w)
{
    float acc = 0.0f;
    for (uint32_t c = 0; c < w; c += 2) {
        float2 k = fasa_cu::load2(row + c);
        acc = fmaf(qh[c + 1], k.y, fmaf(qh[c], k.x, acc));
    }
    return fasa_tip_is_nan(acc) ? own_score(row, qh, map, w) : acc;
}

/* Block: FASA_CU_TIP_THREADS consecutive tokens of one KV head (one per
 * thread); the masked queries of up to FASA_CU_HEADS heads sit in shared
 * memory, so each thread reads its row once per head batch and every head
 * of the batch uses it. */
template <typename T>
__global__ void tip_kernel(fasa_cu_tip_args a)
{
    __shared__ float qs[FASA_CU_HEADS * FASA_CU_MAX_WIDTH];
    uint32_t g = blockIdx.y, w = a.width, G = a.group;
    uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
    bool valid = j < a.L;
    const T *row = static_cast<const T *>(a.rows) +
                   fasa_cu_row_at(g, valid ? fasa_cu_token_row(a.table, a.block_shift, j) : 0, a.ts, a.hs);
    float group_sum = 0.0f;
    for (uint32_t m0 = 0; m0 < G; m0 += FASA_CU_HEADS) {
        uint32_t nb = G - m0 < FASA_CU_HEADS ? G - m0 : FASA_CU_HEADS;
        __syncthreads(); /* the previous batch is done with qs */
        for (uint32_t i = threadIdx.x; i < nb * w; i += blockDim.x) {
            uint32_t m = i / w, c = i % w, h = g * G + m0 + m;
            float x;
            if (!a.tip_map) x = a.q[(size_t)h * a.head_dim + c];
            else {
                int dim = a.tip_map[(size_t)h * a.u_pad + c];
                x = dim >= 0 ? a.q[(size_t)h * a.head_dim + dim] : 0.0f;
            }
            qs[m * w + c] = x;
        }
        __syncthreads();
        if (!valid) continue;
        float acc[FASA_CU_HEADS];
#pragma unroll
        for (uint32_t m = 0; m < FASA_CU_HEADS; m++) acc[m] = 0.0f;
        for (uint32_t c = 0; c < w; c += 2) {
            float2 k = fasa_cu::load2(row + c);
#pragma unroll
            for (uint32_t m = 0; m < FASA_CU_HEADS; m++)
                if (m < nb) acc[m] = fmaf(qs[m * w + c + 1], k.y, fmaf(qs[m * w + c], k.x, acc[m]));
        }
        bool redo = false;
        if (a.tip_map) {
            float any = 0.0f;
#pragma unroll
            for (uint32_t m = 0; m < FASA_CU_HEADS; m++)
                if (m < nb) any += acc[m];
            redo = fasa_tip_is_nan(any);
        }
        const int16_t *map = redo ? a.tip_map + (size_t)(g * G + m0) * a.u_pad : nullptr;
        if (a.per_group) {
            if (!redo) {
                for (uint32_t m = 0; m < nb; m++) group_sum += acc[m]; /* head order */
            } else {
#pragma unroll 1
                for (uint32_t m = 0; m < nb; m++) group_sum += head_score(row, qs + m * w, map + m * a.u_pad, w);
            }
        } else {
            for (uint32_t m = 0; m < nb; m++) a.scores[(size_t)(g * G + m0 + m) * a.score_stride + j] = acc[m];
            if (redo) {
#pragma unroll 1
                for (uint32_t m = 0; m < nb; m++) {
                    float *out = a.scores + (size_t)(g * G + m0 + m) * a.score_stride + j;
                    if (fasa_tip_is_nan(*out)) *out = own_score(row, qs + m * w, map + m * a.u_pad, w);
                }
            }
        }
    }
    if (valid && a.per_group) a.scores[(size_t)g * a.score_stride + j] = group_sum;
}

} // namespace

extern "C" cudaError_t fasa_cu_tip(const fasa_cu_tip_args *a, cudaStream_t stream)
{
    if (a->L == 0) return cudaSuccess;
    dim3 grid((a->L + FASA_CU_TIP_THREADS - 1) / FASA_CU_TIP_THREADS, a->n_kv_heads);
    switch (a->dtype) {
    case FASA_CU_F16: tip_kernel<__half><<<grid, FASA_CU_TIP_THREADS, 0, stream>>>(*a); break;
    case FASA_CU_BF16: tip_kernel<fasa_cu::bf16><<<grid, FASA_CU_TIP_THREADS, 0, stream>>>(*a); break;
    default: tip_kernel<float><<<grid, FASA_CU_TIP_THREADS, 0, stream>>>(*a); break;
    }
    return fasa_cu::launched();
}
