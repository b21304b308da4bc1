/* tip: TIP scores (FASA_SPEC §2).  For query head h of KV head g and token
 * j, S[h][j] = sum over union slots c of qm[h][c] * K_dom[g][j][c], where
 * qm[h][c] is q[h][dim] for the dim tip_map puts in slot c and 0 for slots
 * outside I_h (adding exact zeros leaves the sum unchanged).  The oracle
 * scores the full rows of K with q itself.  Group selection sums the G
 * scores of a group in head order.  Same statement: fasa__cpu_tip. */
#include "common.cuh"

namespace {

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
    const T *row = static_cast<const T *>(a.rows) + ((size_t)g * a.cap + (valid ? j : 0)) * w;
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
        if (a.per_group) {
            for (uint32_t m = 0; m < nb; m++) group_sum += acc[m]; /* head order */
        } else {
            for (uint32_t m = 0; m < nb; m++) a.scores[(size_t)(g * G + m0 + m) * a.score_stride + j] = acc[m];
        }
    }
    if (valid && a.per_group) a.scores[(size_t)g * a.score_stride + j] = group_sum;
}

} // namespace

extern "C" cudaError_t fasa_cu_tip(const fasa_cu_tip_args *a, cudaStream_t stream)
{
    if (a->L == 0) return cudaSuccess;
    dim3 grid((a->L + FASA_CU_TIP_THREADS - 1) / FASA_CU_TIP_THREADS, a->n_kv_heads);
    if (a->f16) tip_kernel<__half><<<grid, FASA_CU_TIP_THREADS, 0, stream>>>(*a);
    else tip_kernel<float><<<grid, FASA_CU_TIP_THREADS, 0, stream>>>(*a);
    return fasa_cu::launched();
}
