/*
 * C-callable launch layer of the CUDA reference kernels (the .cu files in cuda_ref).
 *
 * Each function enqueues its kernels on `stream` and returns the launch
 * status (cudaGetLastError after the launches); none allocates, copies or
 * synchronises.  Pointers are device pointers, already offset to the data
 * the kernels use; element types follow the dtype fields (FASA_CU_F16,
 * _F32, _BF16 of fasa_cuda_logic.h: the fasa_dtype values; fp32 arithmetic)
 * or are named.  The host side is src/cuda.
 */
#ifndef FASA_CUDA_LAUNCH_H
#define FASA_CUDA_LAUNCH_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "fasa_cuda_fetch.h"
#include "fasa_cuda_logic.h"

#ifdef __cplusplus
extern "C" {
#endif

/* append: tokens [first, first + n) of one layer from k/v [n][Hkv][d]. */
typedef struct fasa_cu_append_args {
    const void *k, *v;            /* source rows, of type src_dtype */
    int src_dtype;
    void *k_dst, *v_dst;          /* layer storage [Hkv][cap][d] */
    void *kdom;                   /* layer K_dom [Hkv][cap][u_pad], or NULL */
    const uint16_t *udims;        /* the layer's union dims [Hkv][u_pad] */
    const uint32_t *usize;        /* the layer's union sizes [Hkv] */
    int dst_dtype;                /* storage dtype */
    uint32_t first, n, n_kv_heads, head_dim, cap, u_pad;
} fasa_cu_append_args;

/* sync (external K/V): the K_dom rows of tokens [first, first + n) of one
 * layer, cut from the engine's K (fasa_kv_cache_desc.external), as append
 * writes them. */
typedef struct fasa_cu_sync_args {
    const void *k;                /* the engine's K of the layer, its offset applied */
    uint64_t ts, hs;              /* its token and KV-head strides in elements */
    void *kdom;                   /* layer K_dom [Hkv][cap][u_pad] */
    const uint16_t *udims;        /* the layer's union dims [Hkv][u_pad] */
    const uint32_t *usize;        /* the layer's union sizes [Hkv] */
    int dtype;                    /* storage dtype (the engine's) */
    uint32_t first, n, n_kv_heads, cap, u_pad;
} fasa_cu_sync_args;

/* tip: S[row][j] for j in [0, L): the masked query of each head dotted with
 * the K_dom row of token j (or q . K for the oracle), summed over the
 * group's heads in head order with per_group.  Token j is row j, or with a
 * block table row fasa_cu_token_row(table, block_shift, j). */
typedef struct fasa_cu_tip_args {
    const void *rows;             /* row (g, j) at fasa_cu_row_at(g, j, ts, hs) */
    uint64_t ts, hs;              /* K_dom: width, cap * width; oracle: K's strides */
    int dtype;
    uint32_t width, L, n_kv_heads, group, head_dim;
    const float *q;               /* [Hq][d] */
    const int16_t *tip_map;       /* the layer's [Hq][u_pad]; NULL = oracle (q as is) */
    uint32_t u_pad;
    int per_group;
    float *scores;                /* [n_rows][score_stride] */
    uint32_t score_stride;
    const uint32_t *table;        /* paged caches: the sequence's block table (device),
                                     token j is row fasa_cu_token_row; NULL: row j */
    uint32_t block_shift;
} fasa_cu_tip_args;

/* topk: per row, the forced tokens [0, n_sink) and [L - n_recent, L) in
 * slots [0, forced), then the exact top-k of the window between them
 * (ties to the lowest index, NaN lowest) in slots [forced, forced + k), in
 * no particular order. */
typedef struct fasa_cu_topk_args {
    const float *scores;
    uint32_t score_stride, n_rows, L, n_sink, n_recent, k;
    int32_t *sel;                 /* [n_rows][sel_stride] */
    uint32_t sel_stride;
    uint32_t *state;              /* [n_rows][FASA_TK_WORDS] */
    uint32_t *hist;               /* [n_rows][256], zero between calls */
    uint32_t *tiles;              /* [n_rows][FASA_TK_MAX_TILES] */
} fasa_cu_topk_args;

/* attend: split-K online softmax partials.  Dense (sel == NULL): every KV
 * head's tokens [0, n_tokens).  FAC: each selection row's n_tokens listed
 * tokens; rows are query heads, or KV groups with per_group. */
typedef struct fasa_cu_attend_args {
    const void *k, *v;            /* row (g, t) at fasa_cu_row_at(g, t, ts, hs) */
    uint64_t ts, hs;              /* libfasa's storage [Hkv][cap][d]: d, cap * d */
    int dtype;
    uint32_t head_dim, group, n_q_heads, n_kv_heads;
    const float *q;               /* [Hq][d] */
    const int32_t *sel;           /* [rows][sel_stride] or NULL (dense) */
    uint32_t sel_stride;
    int per_group;
    uint32_t n_tokens;
    fasa_cu_split split;
    float scale;                  /* 1/sqrt(d) */
    float *part;                  /* [Hq][pmax][d + 2]: m, l, acc[d] */
    uint32_t pmax;
    const uint32_t *table;        /* paged caches: the sequence's block table (device);
                                     tokens (and the selection's) are mapped to rows by
                                     fasa_cu_token_row; NULL: token t is row t */
    uint32_t block_shift;
} fasa_cu_attend_args;

/* reduce: o[h] from the first n_parts partials of head h. */
typedef struct fasa_cu_reduce_args {
    const float *part;
    uint32_t pmax, n_parts, n_q_heads, head_dim;
    void *o;                      /* [Hq][d] of o_type */
    int o_type;                   /* FASA_CU_IO_*: fp32, or rounded into 16 bits */
} fasa_cu_reduce_args;

cudaError_t fasa_cu_append(const fasa_cu_append_args *a, cudaStream_t stream);
cudaError_t fasa_cu_sync(const fasa_cu_sync_args *a, cudaStream_t stream);
cudaError_t fasa_cu_tip(const fasa_cu_tip_args *a, cudaStream_t stream);
cudaError_t fasa_cu_topk(const fasa_cu_topk_args *a, cudaStream_t stream);
cudaError_t fasa_cu_attend(const fasa_cu_attend_args *a, cudaStream_t stream);
cudaError_t fasa_cu_reduce(const fasa_cu_reduce_args *a, cudaStream_t stream);
/* A q of n 16-bit elements (dtype FASA_CU_F16 or _BF16) widened into dst. */
cudaError_t fasa_cu_widen(const void *src, int dtype, uint32_t n, float *dst, cudaStream_t stream);
/* fetch (FASA-M): counts the distinct rows each KV head needs and, with
 * a->staged, places them in device slots, copies the misses and remaps
 * the selection (fasa_cuda_fetch.h). */
cudaError_t fasa_cu_fetch(const fasa_cu_fetch_args *a, cudaStream_t stream);

/* Whether this build's kernel images load on the current device
 * (cudaErrorNoKernelImageForDevice when neither SASS nor PTX fits). */
cudaError_t fasa_cu_probe(void);

#ifdef __cplusplus
}
#endif

#endif
