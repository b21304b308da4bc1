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
#include "vk_internal.h"

#include <string.h>

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

_Static_assert(sizeof(push_scan) <= VK_PUSH_MAX, "push_scan");
_Static_assert(sizeof(push_pass) <= VK_PUSH_MAX, "push_pass");

static uint32_t hist_of(const fasa_kv_cache *c, const vk_cache *vc, uint32_t digit)
{
    return vc->hist_off + digit * c->shape.n_q_heads * 256u;
}

static void scan(fasa_exec *e, const fasa_step *step, uint32_t digit, uint32_t k)
{
    fasa_kv_cache *c = step->cache;
    vk_cache *vc = c->impl;
    push_scan p = {vc->scratch.addr, hist_of(c, vc, digit), vc->state_off, vc->sel_off, digit,
                   k, step->n_sink, step->n_recent, step->L, c->max_n_fac, 0};
    fasa__vk_dispatch(e, VK_K_TOPK_SCAN, 0, &p, sizeof p, step->n_rows, 1);
    fasa__vk_barrier(e);
}

static void pass(fasa_exec *e, const fasa_step *step, uint32_t mode, uint32_t cmp_shift)
{
    fasa_kv_cache *c = step->cache;
    vk_cache *vc = c->impl;
    uint32_t lo = step->n_sink, hi = step->L - step->n_recent;
    uint32_t tile0 = lo / VK_TOPK_TILE, tiles = (hi - 1) / VK_TOPK_TILE - tile0 + 1;
    uint32_t next_digit = mode < 2 ? (32u - cmp_shift) / 8u : 0u;
    push_pass p;
    memset(&p, 0, sizeof p);
    p.sc_tab = vc->scores.table;
    p.cand_tab = vc->cand.table;
    p.scratch = vc->scratch.addr;
    p.sc_stride = vc->sc_stride;
    p.sc_shift = vc->scores.shift;
    p.lo = lo;
    p.hi = hi;
    p.tile0 = tile0;
    p.mode = mode;
    p.cmp_shift = cmp_shift;
    p.hist_off = hist_of(c, vc, next_digit);
    p.state_off = vc->state_off;
    p.tcnt_off = vc->tcnt_off;
    p.ttie_off = vc->ttie_off;
    p.sel_off = vc->sel_off;
    p.n_tiles = vc->n_tiles;
    p.max_n_fac = c->max_n_fac;
    p.n_forced = step->n_sink + step->n_recent;
    fasa__vk_dispatch(e, VK_K_TOPK_PASS, 0, &p, sizeof p, tiles, step->n_rows);
    fasa__vk_barrier(e);
}

fasa_status fasa__vk_topk(fasa_exec *e, const fasa_step *step)
{
    uint32_t k = step->n_fac - step->n_sink - step->n_recent;
    fasa__vk_barrier(e); /* scores and histogram 0 from tip */
    scan(e, step, 0, k);
    if (k == 0) return FASA_OK; /* the forced tokens fill the budget */
    pass(e, step, 0, 24);
    scan(e, step, 1, k);
    pass(e, step, 1, 16);
    scan(e, step, 2, k);
    pass(e, step, 1, 8);
    scan(e, step, 3, k);
    pass(e, step, 2, 0);
    pass(e, step, 3, 0);
    return FASA_OK;
}
