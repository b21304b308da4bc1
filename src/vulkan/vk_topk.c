/* Vulkan backend top-k: exact MSD radix select with 8-bit digits over the
 * order-preserving keys of the TIP scores (docs/SPEC.md §8), per selection row.
 *
 *   tip       writes the scores and the histogram of digit 0 (fused)
 *   scan 0    picks digit 0, writes the forced tokens (sinks, recent)
 *   pass 0    scores in the window: keys above the bin win (appended to the
 *             selection), keys in the bin become candidates, compacted in
 *             index order per 4096-token tile; histogram of digit 1
 *   scan 1, pass 1 (digit 1 -> histogram 2), scan 2, pass 1 (-> histogram 3),
 *   scan 3    candidates only: the threshold key tau and k_rem, the number
 *             of keys equal to tau still needed
 *   pass 2    keys above tau win; ties stay, counted per tile (all win when
 *             every tie is needed)
 *   pass 3    the k_rem lowest-index ties win (tile prefix + rank in tile)
 *
 * Every pass reads only the tiles of the candidate window [n_sink,
 * L - n_recent); after pass 0 only the surviving candidates.  A barrier
 * separates dependent dispatches. */
#include "vk_push.h"

#include <string.h>

static uint32_t hist_of(const fasa_kv_cache *c, const vk_area *a, uint32_t digit)
{
    return a->hist_off + digit * c->shape.n_q_heads * 256u;
}

/* The dispatches after tip, in order; a step whose forced tokens fill the
 * budget (k = 0) runs scan 0 only. */
static const vk_topk_op topk_ops[] = {
    {false, 0, 0, 0}, {true, 0, 0, 24}, {false, 1, 0, 0}, {true, 0, 1, 16}, {false, 2, 0, 0},
    {true, 0, 1, 8},  {false, 3, 0, 0}, {true, 0, 2, 0},  {true, 0, 3, 0},
};

uint32_t fasa__vk_topk_ops(const fasa_step *step, const vk_topk_op **ops)
{
    *ops = topk_ops;
    return step->n_fac == step->n_sink + step->n_recent ? 1u : (uint32_t)(sizeof topk_ops / sizeof topk_ops[0]);
}

push_scan fasa__vk_scan_push(const fasa_step *step, const vk_area *a, uint32_t digit)
{
    fasa_kv_cache *c = step->cache;
    uint32_t k = step->n_fac - step->n_sink - step->n_recent;
    push_scan p = {a->scratch, hist_of(c, a, digit), a->state_off, a->sel_off, digit,
                   k, step->n_sink, step->n_recent, step->L, c->max_n_fac, 0};
    return p;
}

push_pass fasa__vk_pass_push(const fasa_step *step, const vk_area *a, uint32_t mode, uint32_t cmp_shift,
                             uint32_t *tiles_out)
{
    fasa_kv_cache *c = step->cache;
    uint32_t lo = step->n_sink, hi = step->L - step->n_recent;
    uint32_t tile0 = lo / VK_TOPK_TILE;
    uint32_t next_digit = mode < 2 ? (32u - cmp_shift) / 8u : 0u;
    push_pass p;
    memset(&p, 0, sizeof p);
    p.sc_tab = a->sc_tab;
    p.cand_tab = a->cand_tab;
    p.scratch = a->scratch;
    p.sc_stride = a->sc_stride;
    p.sc_shift = a->sc_shift;
    p.lo = lo;
    p.hi = hi;
    p.tile0 = tile0;
    p.mode = mode;
    p.cmp_shift = cmp_shift;
    p.hist_off = hist_of(c, a, next_digit);
    p.state_off = a->state_off;
    p.tcnt_off = a->tcnt_off;
    p.ttie_off = a->ttie_off;
    p.sel_off = a->sel_off;
    p.n_tiles = a->n_tiles;
    p.max_n_fac = c->max_n_fac;
    p.n_forced = step->n_sink + step->n_recent;
    *tiles_out = (hi - 1) / VK_TOPK_TILE - tile0 + 1;
    return p;
}

fasa_status fasa__vk_topk(fasa_exec *e, const fasa_step *step)
{
    vk_area a = fasa__vk_cache_area(step->cache);
    const vk_topk_op *ops;
    uint32_t n = fasa__vk_topk_ops(step, &ops);
    fasa__vk_barrier(e); /* scores and histogram 0 from tip */
    for (uint32_t i = 0; i < n; i++) {
        if (ops[i].pass) {
            uint32_t tiles;
            push_pass p = fasa__vk_pass_push(step, &a, ops[i].mode, ops[i].cmp_shift, &tiles);
            fasa__vk_dispatch(e, VK_K_TOPK_PASS, 0, &p, sizeof p, tiles, step->n_rows);
        } else {
            push_scan p = fasa__vk_scan_push(step, &a, ops[i].digit);
            fasa__vk_dispatch(e, VK_K_TOPK_SCAN, 0, &p, sizeof p, step->n_rows, 1);
        }
        fasa__vk_barrier(e);
    }
    return FASA_OK;
}
