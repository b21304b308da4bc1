/* The parameter blocks of the decode kernels and their builders, shared by
 * single steps (vk_kernels.c, vk_topk.c) and batches (vk_batch.c: item 0's
 * block plus the strides between items, shaders/params.glsl), all pushed
 * as push constants.  Each struct mirrors a shader's PARAMS list in std430
 * layout (uvec2 = uint64_t). */
#ifndef FASA_VK_PUSH_H
#define FASA_VK_PUSH_H

#include "vk_internal.h"

typedef struct push_tip {
    uint64_t rows_tab, sc_tab, scratch, map;
    uint32_t L, lo, hi, G;
    uint32_t width, kv_stride, kv_shift, sc_stride;
    uint32_t sc_shift, q_off, hist_off, flags;
    uint32_t d, u_pad, n_batches, ts;
    uint32_t hs, tshift;
    uint64_t table;  /* paged (flags & 4): the step's block table, log2(block size) tshift */
} push_tip;

typedef struct push_attend {
    uint64_t k_tab, v_tab, scratch;
    uint32_t q_off, part_off, sel_off, kv_stride;
    uint32_t kv_shift, d, G, flags;
    uint32_t count, n_batches, max_n_fac, maxs;
    float scale;
    uint32_t cps;
    uint32_t ts, hs;
    uint64_t table;  /* paged (flags & 2): the step's block table, log2(block size) tshift */
    uint32_t tshift, pad0;
} push_attend;

typedef struct push_convert {
    uint64_t scratch;
    uint32_t src, dst, n_words, mode; /* mode: 0 f16 -> f32, 1 bf16 -> f32, 2 f32 -> f16, 3 f32 -> bf16 */
} push_convert;

typedef struct push_reduce {
    uint64_t scratch;
    uint32_t part_off, o_off, d, n_splits;
    uint32_t maxs, pad0;
} push_reduce;

typedef struct push_scan {
    uint64_t scratch;
    uint32_t hist_off, state_off, sel_off, digit;
    uint32_t k, n_sink, n_recent, L;
    uint32_t max_n_fac, pad0;
} push_scan;

typedef struct push_pass {
    uint64_t sc_tab, cand_tab, scratch;
    uint32_t sc_stride, sc_shift, lo, hi;
    uint32_t tile0, mode, cmp_shift, hist_off;
    uint32_t state_off, tcnt_off, ttie_off, sel_off;
    uint32_t n_tiles, max_n_fac, n_forced, pad0;
} push_pass;

/* Where a step's data lives, as word offsets from `scratch`: the cache's
 * own scratch for a single step (fasa__vk_cache_area), item 0's region of
 * the batch scratch in a batch.  The scores and candidates are chunked
 * arrays (sc_tab / cand_tab: chunk tables, sc_shift). */
typedef struct vk_area {
    VkDeviceAddress scratch;
    uint32_t q_off, o_off, sel_off, part_off;
    uint32_t maxs;               /* partials per head (the stride of part) */
    uint32_t hist_off, state_off, tcnt_off, ttie_off;
    VkDeviceAddress sc_tab, cand_tab;
    uint32_t sc_stride, sc_shift, n_tiles;
} vk_area;

/* An attention dispatch: kernel (the cache's _X variant included) and grid. */
typedef struct vk_attend_plan {
    vk_kernel kernel;
    uint32_t n_splits, gy;
} vk_attend_plan;

/* One top-k dispatch after tip (vk_topk.c): a scan of `digit`, or a pass
 * in `mode` comparing the digit at cmp_shift. */
typedef struct vk_topk_op {
    bool pass;
    uint32_t digit, mode, cmp_shift;
} vk_topk_op;

/* vk_kernels.c */
vk_area fasa__vk_cache_area(const fasa_kv_cache *c);
vk_kernel fasa__vk_tip_kernel(const fasa_step *step);
push_tip fasa__vk_tip_push(const fasa_step *step, const vk_area *a);
/* fac (dense false) or dense: the step's parameters and its plan */
push_attend fasa__vk_attend_push(fasa_exec *e, const fasa_step *step, const vk_area *a, bool dense,
                                 vk_attend_plan *plan);
push_reduce fasa__vk_reduce_push(const fasa_step *step, const vk_area *a, uint32_t n_splits);
/* q into the fp32 q area (in) or o into the io type's area (!in) */
push_convert fasa__vk_convert_push(const fasa_step *step, const vk_area *a, bool in);

/* vk_topk.c: the ops of a step with k = n_fac - forced (k == 0: scan 0 only) */
uint32_t fasa__vk_topk_ops(const fasa_step *step, const vk_topk_op **ops);
push_scan fasa__vk_scan_push(const fasa_step *step, const vk_area *a, uint32_t digit);
/* *tiles: the grid x of the pass (the tiles of the candidate window) */
push_pass fasa__vk_pass_push(const fasa_step *step, const vk_area *a, uint32_t mode, uint32_t cmp_shift,
                             uint32_t *tiles);

_Static_assert(sizeof(push_tip) <= VK_PUSH_MAX && sizeof(push_tip) % 8 == 0, "push_tip");
_Static_assert(sizeof(push_attend) <= VK_PUSH_MAX && sizeof(push_attend) % 8 == 0, "push_attend");
_Static_assert(sizeof(push_reduce) <= VK_PUSH_MAX && sizeof(push_reduce) % 8 == 0, "push_reduce");
_Static_assert(sizeof(push_convert) <= VK_PUSH_MAX && sizeof(push_convert) % 8 == 0, "push_convert");
_Static_assert(sizeof(push_scan) <= VK_PUSH_MAX && sizeof(push_scan) % 8 == 0, "push_scan");
_Static_assert(sizeof(push_pass) <= VK_PUSH_MAX && sizeof(push_pass) % 8 == 0, "push_pass");

#endif
