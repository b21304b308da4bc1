/* Vulkan backend kernels: append, tip, fac, dense (top-k is in vk_topk.c).
 * Each records dispatches with push constants mirroring the shaders' push
 * blocks (the .comp files in shaders/) and the barriers between dependent work.
 *
 * Step layout in one command buffer:
 *   barrier(all) | copy q -> scratch, clear histograms/states | barrier
 *   tip | barrier | top-k passes (vk_topk.c) | [FASA-M: fetch (vk_fetch.c)]
 *   | fac | barrier | reduce | barrier | copy scratch o -> o
 * or, on the dense path: ... | dense | barrier | reduce | barrier | copy o. */
#include "vk_push.h"

#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Push constant blocks (std430 push_constant layout: uvec2 = uint64_t)      */
/* ------------------------------------------------------------------------ */

typedef struct push_append {
    uint64_t k_tab, v_tab, kd_tab, stage, dims;
    uint32_t first, n, hkv, kv_stride;
    uint32_t kv_shift, kd_shift, d, u_pad;
    uint32_t v_off, src_type, has_dom, pad0; /* src_type: the source's fasa_dtype */
} push_append;

typedef struct push_sync {
    uint64_t k, kd_tab, dims;
    uint32_t first, n, kv_stride, kd_shift;
    uint32_t u_pad, ts, hs, pad0;
} push_sync;

_Static_assert(sizeof(push_append) <= VK_PUSH_MAX, "push_append");
_Static_assert(sizeof(push_sync) <= VK_PUSH_MAX, "push_sync");
/* the block-table fields sit where the shaders' push blocks put them */
_Static_assert(offsetof(push_tip, table) == 104, "tip.comp pc.table");
_Static_assert(offsetof(push_attend, table) == 88, "attend.glsl pc.table");

static const vk_buf *vkbuf(const fasa_buffer *b) { return b->impl; }

static void copy(fasa_exec *e, const vk_buf *src, uint64_t src_off, const vk_buf *dst, uint64_t dst_off,
                 uint64_t size)
{
    VkBufferCopy region = {src->offset + src_off, dst->offset + dst_off, size};
    e->vk->fn.vkCmdCopyBuffer(e->cmd, src->buffer, dst->buffer, 1, &region);
}

/* ------------------------------------------------------------------------ */
/* append                                                                    */
/* ------------------------------------------------------------------------ */

static push_append append_push(const fasa_kv_cache *c, const vk_cache *vc, uint32_t layer)
{
    const vk_layer *lay = &vc->layers[layer];
    push_append p;
    memset(&p, 0, sizeof p);
    p.k_tab = lay->k.table;
    p.v_tab = lay->v.table;
    p.kd_tab = c->has_dims ? lay->kd.table : 0;
    p.stage = vc->scratch.addr + (uint64_t)vc->stage_off * 4;
    p.dims = c->has_dims ? vc->tables.addr + vc->dims_at + (uint64_t)layer * c->shape.n_kv_heads * c->u_pad * 4 : 0;
    p.hkv = c->shape.n_kv_heads;
    p.kv_stride = vc->kv_stride;
    p.kv_shift = lay->k.shift;
    p.kd_shift = c->has_dims ? lay->kd.shift : 0;
    p.d = c->shape.head_dim;
    p.u_pad = c->u_pad;
    p.v_off = vc->stage_half;
    p.has_dom = c->has_dims;
    return p;
}

fasa_status fasa__vk_append(fasa_exec *e, fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n,
                            fasa_buffer *k, uint64_t k_offset, fasa_buffer *v, uint64_t v_offset,
                            fasa_dtype src_dtype)
{
    vk_cache *vc = c->impl;
    uint64_t row_bytes = (uint64_t)c->shape.n_kv_heads * c->shape.head_dim * fasa__dtype_size(src_dtype);
    push_append p = append_push(c, vc, layer);
    p.src_type = (uint32_t)src_dtype;
    fasa__vk_cache_init_record(e, c); /* a cache's first work records its init (vk_cache.c) */
    for (uint32_t done = 0; done < n; done += vc->stage_tokens) {
        uint32_t piece = n - done < vc->stage_tokens ? n - done : vc->stage_tokens;
        fasa__vk_barrier_all(e); /* the previous piece or step is done with the stage */
        copy(e, vkbuf(k), k_offset + done * row_bytes, &vc->scratch, (uint64_t)vc->stage_off * 4, piece * row_bytes);
        copy(e, vkbuf(v), v_offset + done * row_bytes, &vc->scratch,
             ((uint64_t)vc->stage_off + vc->stage_half) * 4, piece * row_bytes);
        fasa__vk_barrier_all(e);
        p.first = first + done;
        p.n = piece;
        fasa__vk_dispatch(e, VK_K_APPEND, fasa__vk_dtype(c), &p, sizeof p, piece < 65535 ? piece : 65535,
                          c->shape.n_kv_heads);
    }
    fasa__vk_barrier_all(e);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* sync (external K/V): K_dom rows from the engine's K                       */
/* ------------------------------------------------------------------------ */

fasa_status fasa__vk_sync(fasa_exec *e, fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n)
{
    vk_cache *vc = c->impl;
    const vk_layer *lay = &vc->layers[layer];
    push_sync p = {lay->k_ext, lay->kd.table,
                   vc->tables.addr + vc->dims_at + (uint64_t)layer * c->shape.n_kv_heads * c->u_pad * 4,
                   first, n, vc->kv_stride, lay->kd.shift, c->u_pad, vc->ext_ts, vc->ext_hs, 0};
    fasa__vk_cache_init_record(e, c);
    fasa__vk_barrier_all(e); /* the engine's writes of K (compute or transfer) come first */
    fasa__vk_dispatch(e, VK_K_SYNC, fasa__vk_dtype(c), &p, sizeof p, n < 65535 ? n : 65535, c->shape.n_kv_heads);
    fasa__vk_barrier_all(e);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Block tables of paged caches                                              */
/* ------------------------------------------------------------------------ */

static void table_barrier(fasa_exec *e, VkPipelineStageFlags src, VkAccessFlags src_access,
                          VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = src_access;
    mb.dstAccessMask = dst_access;
    e->vk->fn.vkCmdPipelineBarrier(e->cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* Writes the step's block table into cache->tables at entry `first`.  The
 * entries may have been read (and written) by steps recorded earlier (every
 * public call starts its tables at entry 0, and a host may record several
 * layers' steps into one command buffer), so the write waits for those; the
 * barrier after it makes the table visible to the step's kernels. */
fasa_status fasa__vk_upload_table(fasa_exec *e, fasa_kv_cache *c, uint32_t first, uint32_t n, const uint32_t *src)
{
    if (n == 0) return FASA_OK;
    table_barrier(e, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                  VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);
    fasa__vk_update(e, vkbuf(c->tables), (VkDeviceSize)first * 4, src, (VkDeviceSize)n * 4);
    table_barrier(e, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    return FASA_OK;
}

/* Where a paged step's kernels find its block table (0 when not paged;
 * the kernels then read row j for token j, exactly as before paging). */
static uint64_t table_addr(const fasa_step *step)
{
    if (!step->paged) return 0;
    return vkbuf(step->cache->tables)->addr + (uint64_t)step->table_offset * 4;
}

/* ------------------------------------------------------------------------ */
/* Parameters (shared with batches, vk_batch.c)                              */
/* ------------------------------------------------------------------------ */

vk_area fasa__vk_cache_area(const fasa_kv_cache *c)
{
    const vk_cache *vc = c->impl;
    vk_area a = {vc->scratch.addr, vc->q_off, vc->o_off, vc->sel_off, vc->part_off, VK_MAX_SPLITS,
                 vc->hist_off, vc->state_off, vc->tcnt_off, vc->ttie_off,
                 vc->scores.table, vc->cand.table, vc->sc_stride, vc->scores.shift, vc->n_tiles};
    return a;
}

vk_kernel fasa__vk_tip_kernel(const fasa_step *step)
{
    return step->oracle && step->cache->ext ? VK_K_TIP_X : VK_K_TIP; /* oracle rows from the engine's K */
}

push_tip fasa__vk_tip_push(const fasa_step *step, const vk_area *a)
{
    fasa_kv_cache *c = step->cache;
    vk_cache *vc = c->impl;
    const vk_layer *lay = &vc->layers[step->layer];
    const vk_array *rows = step->oracle ? &lay->k : &lay->kd;
    bool ext = step->oracle && c->ext;
    push_tip p;
    memset(&p, 0, sizeof p);
    p.rows_tab = ext ? lay->k_ext : rows->table;
    p.ts = vc->ext_ts;
    p.hs = vc->ext_hs;
    p.sc_tab = a->sc_tab;
    p.scratch = a->scratch;
    p.map = c->has_dims ? vc->tables.addr + vc->map_at + (uint64_t)step->layer * c->shape.n_q_heads * c->u_pad * 4 : 0;
    p.L = step->L;
    p.lo = step->n_sink;
    p.hi = step->L - step->n_recent;
    p.G = c->group;
    p.width = step->oracle ? c->shape.head_dim : c->u_pad;
    p.kv_stride = vc->kv_stride;
    p.kv_shift = rows->shift;
    p.sc_stride = a->sc_stride;
    p.sc_shift = a->sc_shift;
    p.q_off = a->q_off;
    p.hist_off = a->hist_off;
    p.flags = (step->select == FASA_GQA_PER_GROUP ? 1u : 0u) | (step->oracle ? 2u : 0u) | (step->paged ? 4u : 0u);
    p.table = table_addr(step);
    p.tshift = step->block_shift;
    p.d = c->shape.head_dim;
    p.u_pad = c->u_pad;
    p.n_batches = step->select == FASA_GQA_PER_GROUP ? 1 : (c->group + 7) / 8;
    return p;
}

/* The attention kernel for a cache: external caches run its _X variant. */
static vk_kernel attend_kernel(const fasa_kv_cache *c, vk_kernel k)
{
    if (!c->ext) return k;
    return k == VK_K_FAC ? VK_K_FAC_X : k == VK_K_FAC8 ? VK_K_FAC8_X : k == VK_K_DENSE ? VK_K_DENSE_X : VK_K_DENSE8_X;
}

/* Heads per attention workgroup (4 or 8), the kernel and its grid for
 * `rows` rows of `heads` query heads each over `count` tokens. */
static vk_attend_plan plan_attend(fasa_exec *e, const fasa_kv_cache *c, bool dense, uint32_t rows, uint32_t heads,
                                  uint32_t count, push_attend *p)
{
    bool w = heads > 4 && !e->vk->tun.narrow;
    uint32_t per = w ? 8 : 4, S = VK_ATTEND_S / (w ? 2 : 1);
    uint32_t chunks = (count + S - 1) / S;
    uint32_t n_splits = chunks < VK_MAX_SPLITS ? chunks : VK_MAX_SPLITS;
    p->cps = (chunks + n_splits - 1) / n_splits;
    p->n_batches = (heads + per - 1) / per;
    p->count = count;
    vk_kernel k = dense ? (w ? VK_K_DENSE8 : VK_K_DENSE) : (w ? VK_K_FAC8 : VK_K_FAC);
    vk_attend_plan plan = {attend_kernel(c, k), (chunks + p->cps - 1) / p->cps, rows * p->n_batches};
    return plan;
}

push_attend fasa__vk_attend_push(fasa_exec *e, const fasa_step *step, const vk_area *a, bool dense,
                                 vk_attend_plan *plan)
{
    fasa_kv_cache *c = step->cache;
    vk_cache *vc = c->impl;
    const vk_layer *lay = &vc->layers[step->layer];
    bool per_group = !dense && step->select == FASA_GQA_PER_GROUP;
    push_attend p;
    memset(&p, 0, sizeof p);
    p.k_tab = c->ext ? lay->k_ext : lay->k.table;
    p.v_tab = c->ext ? lay->v_ext : lay->v.table;
    p.ts = vc->ext_ts;
    p.hs = vc->ext_hs;
    p.scratch = a->scratch;
    p.q_off = a->q_off;
    p.part_off = a->part_off;
    p.sel_off = a->sel_off;
    p.kv_stride = vc->kv_stride;
    p.kv_shift = lay->k.shift;
    p.d = c->shape.head_dim;
    p.G = c->group;
    p.max_n_fac = c->max_n_fac;
    p.maxs = a->maxs;
    p.scale = step->scale;
    p.flags = (step->paged ? 2u : 0u) | (per_group ? 1u : 0u);
    p.table = table_addr(step);
    p.tshift = step->block_shift;
    if (dense) *plan = plan_attend(e, c, true, c->shape.n_kv_heads, c->group, step->L, &p);
    else *plan = plan_attend(e, c, false, step->n_rows, per_group ? c->group : 1, step->n_fac, &p);
    return p;
}

push_reduce fasa__vk_reduce_push(const fasa_step *step, const vk_area *a, uint32_t n_splits)
{
    push_reduce p = {a->scratch, a->part_off, a->o_off, step->cache->shape.head_dim, n_splits, a->maxs, 0};
    return p;
}

/* q and o in a 16-bit io type (fasa_decode_desc.q_type / o_type) are
 * converted inside the scratch by convert.comp: q's bits are copied into
 * the o area (unused until the reduce) and widened into the q area; o is
 * reduced into the o area as always and rounded into the q area (no longer
 * needed), whose bits are copied out. */
push_convert fasa__vk_convert_push(const fasa_step *step, const vk_area *a, bool in)
{
    const fasa_kv_cache *c = step->cache;
    uint32_t n_words = c->shape.n_q_heads * c->shape.head_dim / 2; /* d is even */
    fasa_io_type t = in ? step->q_type : step->o_type;
    uint32_t mode = (in ? 0u : 2u) + (t == FASA_IO_F16 ? 0u : 1u);
    push_convert p = {a->scratch, a->o_off, a->q_off, n_words, mode}; /* both ways: o area -> q area */
    return p;
}

static void convert(fasa_exec *e, const fasa_step *step, const vk_area *a, bool in)
{
    push_convert p = fasa__vk_convert_push(step, a, in);
    fasa__vk_dispatch(e, VK_K_CONVERT, 0, &p, sizeof p, (p.n_words + VK_WG_CONVERT - 1) / VK_WG_CONVERT, 1);
}

/* ------------------------------------------------------------------------ */
/* Step prologue / epilogue                                                  */
/* ------------------------------------------------------------------------ */

/* Orders the step after earlier work, brings q into scratch and clears the
 * histograms and row states. */
static void step_prologue(fasa_exec *e, const fasa_step *step, bool clear)
{
    fasa_kv_cache *c = step->cache;
    vk_cache *vc = c->impl;
    vk_area a = fasa__vk_cache_area(c);
    uint64_t n = (uint64_t)c->shape.n_q_heads * c->shape.head_dim;
    bool q16 = step->q_type != FASA_IO_F32;
    fasa__vk_cache_init_record(e, c);
    fasa__vk_barrier_all(e);
    copy(e, vkbuf(step->q), step->q_offset, &vc->scratch, (uint64_t)(q16 ? vc->o_off : vc->q_off) * 4,
         n * fasa__io_size(step->q_type));
    if (clear)
        e->vk->fn.vkCmdFillBuffer(e->cmd, vc->scratch.buffer, vc->scratch.offset + (uint64_t)vc->zero_off * 4,
                                  (uint64_t)vc->zero_words * 4, 0);
    fasa__vk_barrier_all(e);
    if (q16) {
        convert(e, step, &a, true);
        fasa__vk_barrier(e);
    }
    e->is_step = true;
}

/* Reduces the split partials into o (scratch) and copies o out. */
static void step_epilogue(fasa_exec *e, const fasa_step *step, uint32_t n_splits)
{
    fasa_kv_cache *c = step->cache;
    vk_cache *vc = c->impl;
    vk_area a = fasa__vk_cache_area(c);
    uint64_t n = (uint64_t)c->shape.n_q_heads * c->shape.head_dim;
    bool o16 = step->o_type != FASA_IO_F32;
    push_reduce p = fasa__vk_reduce_push(step, &a, n_splits);
    fasa__vk_barrier(e);
    fasa__vk_dispatch(e, VK_K_REDUCE, 0, &p, sizeof p, c->shape.n_q_heads, 1);
    if (o16) {
        fasa__vk_barrier(e);
        convert(e, step, &a, false);
    }
    fasa__vk_barrier_all(e);
    copy(e, &vc->scratch, (uint64_t)(o16 ? vc->q_off : vc->o_off) * 4, vkbuf(step->o), step->o_offset,
         n * fasa__io_size(step->o_type));
}

/* ------------------------------------------------------------------------ */
/* tip, fac and dense                                                        */
/* ------------------------------------------------------------------------ */

fasa_status fasa__vk_tip(fasa_exec *e, const fasa_step *step)
{
    fasa_kv_cache *c = step->cache;
    vk_area a = fasa__vk_cache_area(c);
    push_tip p = fasa__vk_tip_push(step, &a);
    step_prologue(e, step, true);
    fasa__vk_dispatch(e, fasa__vk_tip_kernel(step), fasa__vk_dtype(c), &p, sizeof p,
                      (step->L + VK_TIP_TOKENS - 1) / VK_TIP_TOKENS, c->shape.n_kv_heads * p.n_batches);
    return FASA_OK;
}

fasa_status fasa__vk_fac(fasa_exec *e, const fasa_step *step)
{
    vk_area a = fasa__vk_cache_area(step->cache);
    vk_attend_plan plan;
    push_attend p = fasa__vk_attend_push(e, step, &a, false, &plan);
    vk_cache *vc = step->cache->impl;
    if (vc->fm) { /* FASA-M: count (DIRECT) or stage (STAGED) the rows first
                     (never paged: external caches are placement DEVICE) */
        vk_fac_source src = fasa__vk_fetch_record(e, step);
        if (step->prefetch) return FASA_OK; /* rows placed; no attention, no trailing barrier */
        p.k_tab = src.k_tab;
        p.v_tab = src.v_tab;
        p.kv_stride = src.kv_stride;
        p.kv_shift = src.kv_shift;
        p.sel_off = src.sel_off;
    }
    fasa__vk_barrier(e); /* top-k (and fetch) -> fac */
    fasa__vk_dispatch(e, plan.kernel, fasa__vk_dtype(step->cache), &p, sizeof p, plan.n_splits, plan.gy);
    step_epilogue(e, step, plan.n_splits);
    return FASA_OK;
}

fasa_status fasa__vk_dense(fasa_exec *e, const fasa_step *step)
{
    fasa_kv_cache *c = step->cache;
    vk_area a = fasa__vk_cache_area(c);
    vk_attend_plan plan;
    push_attend p = fasa__vk_attend_push(e, step, &a, true, &plan);
    step_prologue(e, step, false);
    fasa__vk_dispatch(e, plan.kernel, fasa__vk_dtype(c), &p, sizeof p, plan.n_splits, plan.gy);
    step_epilogue(e, step, plan.n_splits);
    return FASA_OK;
}
