/*
 * Index math of the CUDA reference kernels, in plain C so that the same
 * functions run inside the kernels (nvcc: __host__ __device__), in the host
 * launch code (src/cuda) and in a host-side emulation test
 * (tests/cuda/test_cuda_logic.c) on machines without a GPU.
 *
 * Nothing here touches memory beyond its arguments; no CUDA header is
 * needed.  What each kernel computes is stated by the CPU backend
 * (src/cpu/cpu_kernels.c, src/select.c).
 */
#ifndef FASA_CUDA_LOGIC_H
#define FASA_CUDA_LOGIC_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define FASA_HD static __host__ __device__ inline
#else
#define FASA_HD static inline
#endif

/* ------------------------------------------------------------------------ */
/* Limits shared by kernels and host code                                    */
/* ------------------------------------------------------------------------ */

#define FASA_CU_MAX_WIDTH 512u   /* longest row a kernel dots: d or u_pad (FASA_MAX_HEAD_DIM) */
#define FASA_CU_HEADS 8u         /* query heads one block scores against the same rows */
#define FASA_CU_TIP_THREADS 128u /* tokens per TIP block (one per thread) */
#define FASA_CU_ATT_THREADS 128u /* threads of an attention block = tokens per tile */
#define FASA_CU_RED_THREADS 128u
#define FASA_CU_APPEND_THREADS 128u
#define FASA_CU_MAX_SPLITS 512u  /* partial slots per query head, at most */

#define FASA_TK_THREADS 256u     /* threads of every top-k block (one per histogram bin) */
#define FASA_TK_HIST_TILE 4096u  /* window positions per histogram block */
#define FASA_TK_MAX_TILES 1024u  /* count/emit tiles per row, at most */

/* Per-row top-k state words (device scratch [rows][FASA_TK_WORDS]). */
enum {
    FASA_TK_PREFIX = 0,          /* digits of the threshold key fixed so far */
    FASA_TK_MASK,                /* which bits of the key PREFIX covers */
    FASA_TK_NEED,                /* keys still to take among those matching PREFIX */
    FASA_TK_DONE,                /* 1: the threshold is known, skip further passes */
    FASA_TK_K,                   /* keys to select from the window (n_fac - forced) */
    FASA_TK_GT,                  /* counter: keys above the threshold emitted so far */
    FASA_TK_WORDS = 8
};

/* ------------------------------------------------------------------------ */
/* K/V rows                                                                  */
/* ------------------------------------------------------------------------ */

/* Element offset of the row of (KV head g, token t) in K, V or K_dom under
 * the strides ts (from a token to the next) and hs (from a KV head to the
 * next): libfasa's arrays [Hkv][cap][width] have ts = width and hs = cap *
 * width; an external cache's K and V are the engine's layout
 * (fasa_kv_cache_desc.external).  t is a physical row: a paged cache's
 * sequence tokens are mapped to rows first (fasa_cu_token_row). */
FASA_HD uint64_t fasa_cu_row_at(uint32_t g, uint32_t t, uint64_t ts, uint64_t hs)
{
    return (uint64_t)t * ts + (uint64_t)g * hs;
}

/* The row of sequence token j: with a block table (paged or shared caches,
 * blocks of 1 << shift rows) src/internal.h's fasa__row_of bit for bit;
 * table NULL (contiguous caches) row j. */
FASA_HD uint32_t fasa_cu_token_row(const uint32_t *table, uint32_t shift, uint32_t j)
{
    if (!table) return j;
    return (table[j >> shift] << shift) | (j & ((1u << shift) - 1u));
}

/* ------------------------------------------------------------------------ */
/* TIP                                                                       */
/* ------------------------------------------------------------------------ */

/* Is a TIP score NaN?  Read from the bits, so that no floating-point mode
 * can drop the test.  A NaN score is recomputed over the head's own dims
 * (cuda_ref/tip.cu): the fast masked dot product multiplies the other heads'
 * slots by zero, and 0 * NaN or 0 * Inf there is NaN. */
FASA_HD int fasa_tip_is_nan(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (u & 0x7fffffffu) > 0x7f800000u;
}

/* ------------------------------------------------------------------------ */
/* Top-k: MSD radix select over order-preserving keys (docs/SPEC.md §8)      */
/* ------------------------------------------------------------------------ */

/* Order-preserving key, identical to fasa__score_key (src/select.c): larger
 * score -> larger key; NaN -> 0 (below everything); -0 == +0. */
FASA_HD uint32_t fasa_tk_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0;
    if (u == 0x80000000u) u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

FASA_HD void fasa_tk_init(uint32_t *st, uint32_t k)
{
    for (uint32_t i = 0; i < FASA_TK_WORDS; i++) st[i] = 0;
    st[FASA_TK_NEED] = k;
    st[FASA_TK_DONE] = k == 0;
    st[FASA_TK_K] = k;
}

/* Does a key take part in the histogram pass (its higher digits equal the
 * prefix found so far)? */
FASA_HD int fasa_tk_matches(uint32_t key, const uint32_t *st)
{
    return (key & st[FASA_TK_MASK]) == st[FASA_TK_PREFIX];
}

FASA_HD uint32_t fasa_tk_digit(uint32_t key, uint32_t shift) { return (key >> shift) & 255u; }

/* After the histogram of the digit at `shift` over the matching keys: walk
 * from the top bin to the one holding the need-th largest key, fix that
 * digit, and keep in NEED how many keys of that bin are still to be taken.
 * Invariant: 1 <= need <= (keys matching the prefix), so the walk always
 * stops at a bin.  When that bin holds exactly NEED keys, every one of them
 * is taken and no later digit can split a tie: DONE. */
FASA_HD void fasa_tk_pick(const uint32_t *hist, uint32_t shift, uint32_t *st)
{
    uint32_t need = st[FASA_TK_NEED], b = 255;
    while (b > 0 && hist[b] < need) {
        need -= hist[b];
        b--;
    }
    st[FASA_TK_PREFIX] |= b << shift;
    st[FASA_TK_MASK] |= 255u << shift;
    st[FASA_TK_NEED] = need;
    st[FASA_TK_DONE] = hist[b] == need || shift == 0;
}

/* After the passes: +1 the key ranks above the threshold (always taken),
 * 0 it ties with it (the NEED lowest window positions are taken), -1 below. */
FASA_HD int fasa_tk_class(uint32_t key, const uint32_t *st)
{
    uint32_t m = key & st[FASA_TK_MASK];
    return m > st[FASA_TK_PREFIX] ? 1 : (m == st[FASA_TK_PREFIX] ? 0 : -1);
}

/* Window positions per count/emit tile: a multiple of the block size, at
 * least 8 per thread, and few enough that a row has at most MAX_TILES. */
FASA_HD uint32_t fasa_tk_tile(uint32_t n_cand)
{
    uint32_t te = (uint32_t)(((uint64_t)n_cand + FASA_TK_MAX_TILES - 1) / FASA_TK_MAX_TILES);
    if (te < 8 * FASA_TK_THREADS) te = 8 * FASA_TK_THREADS;
    return (te + FASA_TK_THREADS - 1) / FASA_TK_THREADS * FASA_TK_THREADS;
}

FASA_HD uint32_t fasa_tk_n_tiles(uint32_t n_cand, uint32_t te)
{
    return (uint32_t)(((uint64_t)n_cand + te - 1) / te);
}

FASA_HD uint32_t fasa_tk_n_hist_blocks(uint32_t n_cand)
{
    return (uint32_t)(((uint64_t)n_cand + FASA_TK_HIST_TILE - 1) / FASA_TK_HIST_TILE);
}

/* The contiguous run [*a, *b) of a tile of n positions that thread tid owns
 * in the emit pass: runs are in thread order, so an exclusive scan of the
 * per-thread tie counts gives each tie its rank in index order. */
FASA_HD void fasa_tk_run(uint32_t n, uint32_t tid, uint32_t *a, uint32_t *b)
{
    uint32_t per = (n + FASA_TK_THREADS - 1) / FASA_TK_THREADS;
    uint32_t lo = tid * per < n ? tid * per : n;
    *a = lo;
    *b = lo + per < n ? lo + per : n;
}

/* Output slot (after the forced tokens) of the tie of index-order rank
 * `rank`: keys above the threshold fill slots [0, K - NEED), ties the rest. */
FASA_HD uint32_t fasa_tk_tie_slot(const uint32_t *st, uint32_t rank)
{
    return st[FASA_TK_K] - st[FASA_TK_NEED] + rank;
}

/* Does tile t emit ties?  Only if it holds some and the ties before it do
 * not already fill NEED. */
FASA_HD int fasa_tk_tile_emits(uint32_t tile_eq, uint32_t eq_before, const uint32_t *st)
{
    return tile_eq > 0 && eq_before < st[FASA_TK_NEED];
}

/* ------------------------------------------------------------------------ */
/* Attention: which heads and tokens one block serves                        */
/* ------------------------------------------------------------------------ */

typedef struct fasa_cu_unit {
    uint32_t g;                  /* KV head */
    uint32_t h0, nh;             /* query heads [h0, h0 + nh) */
    uint32_t row;                /* selection row (fac) */
} fasa_cu_unit;

/* Head batches per KV group when a block serves up to FASA_CU_HEADS heads. */
FASA_HD uint32_t fasa_cu_head_batches(uint32_t group)
{
    return (group + FASA_CU_HEADS - 1) / FASA_CU_HEADS;
}

/* Units (grid rows) of an attention launch: dense and per-group FAC give a
 * block the heads of one head batch of a group (they share the tokens, so
 * each K/V row is read once for all of them); per-head FAC one head. */
FASA_HD uint32_t fasa_cu_units(int per_head_rows, uint32_t n_q_heads, uint32_t n_kv_heads, uint32_t group)
{
    return per_head_rows ? n_q_heads : n_kv_heads * fasa_cu_head_batches(group);
}

FASA_HD fasa_cu_unit fasa_cu_unit_of(uint32_t unit, int per_head_rows, uint32_t group)
{
    fasa_cu_unit u;
    if (per_head_rows) {
        u.g = unit / group;
        u.h0 = unit;
        u.nh = 1;
        u.row = unit;
        return u;
    }
    uint32_t nhb = fasa_cu_head_batches(group), hb = unit % nhb;
    u.g = unit / nhb;
    u.h0 = u.g * group + hb * FASA_CU_HEADS;
    u.nh = group - hb * FASA_CU_HEADS < FASA_CU_HEADS ? group - hb * FASA_CU_HEADS : FASA_CU_HEADS;
    u.row = u.g;
    return u;
}

/* Split-K plan: n tokens per unit cut into n_splits pieces of split_len
 * (the last may be shorter, none is empty), enough pieces for about
 * target_blocks blocks in all, each at least min_len tokens long, and at
 * most pmax pieces (the partial slots of a head). */
typedef struct fasa_cu_split {
    uint32_t split_len, n_splits;
} fasa_cu_split;

FASA_HD fasa_cu_split fasa_cu_plan_split(uint32_t n, uint32_t units, uint32_t target_blocks, uint32_t pmax,
                                         uint32_t min_len)
{
    fasa_cu_split s;
    uint32_t want = units ? (target_blocks + units - 1) / units : 1;
    uint32_t by_len = min_len ? (uint32_t)(((uint64_t)n + min_len - 1) / min_len) : n;
    uint32_t k = want;
    if (k > by_len) k = by_len;
    if (k > pmax) k = pmax;
    if (k < 1) k = 1;
    s.split_len = (uint32_t)(((uint64_t)n + k - 1) / k);
    if (s.split_len < 1) s.split_len = 1;
    s.n_splits = (uint32_t)(((uint64_t)n + s.split_len - 1) / s.split_len);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Element types                                                             */
/* ------------------------------------------------------------------------ */

/* The element types of the kernels' launch arguments: the fasa_dtype
 * values (K/V storage, append sources) and the fasa_io_type values (q, o). */
enum { FASA_CU_F16 = 0, FASA_CU_F32 = 1, FASA_CU_BF16 = 2 };
enum { FASA_CU_IO_F32 = 0, FASA_CU_IO_F16 = 1, FASA_CU_IO_BF16 = 2 };

/* The storage type (FASA_CU_*) of an io type (FASA_CU_IO_*). */
FASA_HD int fasa_cu_io_dtype(int io) { return io == FASA_CU_IO_F16 ? FASA_CU_F16 : io == FASA_CU_IO_BF16 ? FASA_CU_BF16 : FASA_CU_F32; }

/* bfloat16 on the bits of an fp32 (the kernels pass __float_as_uint):
 * widening is exact (the top half), narrowing rounds to nearest even with
 * a carry into the exponent (to Inf from 0x7f7f8000) and keeps a NaN a NaN
 * of its sign and top payload, made quiet: bit for bit src/half.c's
 * fasa__float_to_bf16 (tests/cuda/test_cuda_logic.c checks it). */
FASA_HD uint32_t fasa_cu_bf16_to_f32_bits(uint16_t b) { return (uint32_t)b << 16; }
FASA_HD uint16_t fasa_cu_f32_bits_to_bf16(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Partial slots per head: as many as fit a 64 MiB partials buffer, capped
 * at FASA_CU_MAX_SPLITS, at least 1. */
FASA_HD uint32_t fasa_cu_plan_pmax(uint32_t n_q_heads, uint32_t head_dim)
{
    uint64_t per_slot = (uint64_t)n_q_heads * (head_dim + 2) * 4;
    uint64_t p = (64ull << 20) / per_slot;
    if (p > FASA_CU_MAX_SPLITS) p = FASA_CU_MAX_SPLITS;
    return p < 1 ? 1 : (uint32_t)p;
}

#endif
