/* OpenCL kernel dispatch: append, tip, topk, fac, dense (fetch, the FASA-M
 * gather fac records first, is in cl_fetch.c).  What each kernel
 * computes is stated by the CPU backend (src/cpu/cpu_kernels.c); the
 * OpenCL C is in opencl/.  Every kernel is dispatched once per storage
 * chunk (and per scratch block): one dispatch each in the common case. */
#include "cl_internal.h"

#include <stdio.h>
#include <string.h>

static cl_ctx *ctx_of(const fasa_kv_cache *c) { return c->ctx->impl; }

static cl_kernel kern(const fasa_kv_cache *c, int id)
{
    return ctx_of(c)->progs[c->dtype].kernels[id];
}

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }
static uint32_t ceil_div(uint32_t a, uint32_t b) { return (a + b - 1) / b; }
static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }
static uint32_t max_u32(uint32_t a, uint32_t b) { return a > b ? a : b; }

static fasa_status args_done(fasa_context *ctx, const cl_args *a, int kind)
{
    if (a->err == CL_SUCCESS) return FASA_OK;
    char what[96];
    snprintf(what, sizeof what, "clSetKernelArg(%s, arg %u)", fasa__cl_kernel_names[kind], a->i - 1);
    return fasa__cl_fail(ctx, a->err, what);
}

static const cl_chunk *chunk_at(const cl_cache *cl, uint32_t layer, uint32_t i)
{
    return &cl->chunks[(size_t)layer * cl->n_chunks + i];
}

/* Element offset of a byte offset into a buffer (the buffer's own offset
 * inside its cl_mem included). */
static uint64_t elems(const fasa_buffer *b, uint64_t offset, uint32_t size)
{
    return (((const cl_buf *)b->impl)->offset + offset) / size;
}

static cl_mem mem_of(const fasa_buffer *b) { return ((const cl_buf *)b->impl)->mem; }

cl_kernel fasa__cl_kern(const fasa_kv_cache *c, int id) { return kern(c, id); }

/* Arrays [heads from gk0][tpb tokens from t0][width] (storage chunks,
 * FASA-M slots). */
static cl_view chunk_view(cl_mem k, cl_mem v, uint32_t width, uint32_t tpb, uint32_t gk0, uint32_t t0)
{
    int64_t base = -((int64_t)gk0 * tpb + t0) * width;
    return (cl_view){k, v, base, base, width, tpb * width, width % 8 == 0};
}

/* The engine's K and V of a layer of an external cache. */
static cl_view external_view(const fasa_kv_cache *c, uint32_t layer)
{
    const fasa_kv_ext *x = c->ext;
    uint64_t k0 = elems(x->k[layer], x->k_offset[layer], c->elem_size);
    uint64_t v0 = elems(x->v[layer], x->v_offset[layer], c->elem_size);
    bool vec8 = c->shape.head_dim % 8 == 0 && k0 % 8 == 0 && v0 % 8 == 0 && x->token_stride % 8 == 0 &&
                x->head_stride % 8 == 0;
    return (cl_view){mem_of(x->k[layer]), mem_of(x->v[layer]), (int64_t)k0, (int64_t)v0,
                     (uint32_t)x->token_stride, (uint32_t)x->head_stride, vec8};
}

/* Attention runs once per storage chunk; over an external cache's K and
 * V once, as over one chunk spanning every token and KV head. */
static uint32_t attn_chunks(const fasa_kv_cache *c)
{
    return c->ext ? 1 : ((const cl_cache *)c->impl)->n_chunks;
}

static cl_chunk attn_chunk(const fasa_kv_cache *c, uint32_t layer, uint32_t i)
{
    const cl_cache *cl = c->impl;
    if (c->ext) return (cl_chunk){.g0 = 0, .ng = c->shape.n_kv_heads, .t0 = 0, .nt = c->capacity};
    return cl->chunks[(size_t)layer * cl->n_chunks + i];
}

static uint32_t attn_tokens_per_chunk(const fasa_kv_cache *c)
{
    return c->ext ? c->capacity : ((const cl_cache *)c->impl)->tokens_per_chunk;
}

/* The block-table arguments of tip, fac and dense (tab, tab_off, shift,
 * paged): a paged step's table in cache->tables (uploaded by
 * fasa__cl_upload_table before the step's kernels), else the placeholder
 * buffer and paged = 0 (token j is row j). */
static void table_args(cl_args *x, const fasa_step *s)
{
    const fasa_kv_cache *c = s->cache;
    if (s->paged) {
        const cl_buf *b = c->tables->impl;
        fasa__cl_arg_mem(x, b->mem);
        fasa__cl_arg_u64(x, b->offset / 4 + s->table_offset);
        fasa__cl_arg_u32(x, s->block_shift);
        fasa__cl_arg_u32(x, 1);
    } else {
        fasa__cl_arg_mem(x, ((const cl_cache *)c->impl)->dummy);
        fasa__cl_arg_u64(x, 0);
        fasa__cl_arg_u32(x, 0);
        fasa__cl_arg_u32(x, 0);
    }
}

/* ------------------------------------------------------------------------ */
/* upload_table (paged caches)                                               */
/* ------------------------------------------------------------------------ */

/* A blocking write on the exec's in-order queue: the kernels enqueued after
 * it read the entries, and the caller's array may be reused at once. */
fasa_status fasa__cl_upload_table(fasa_exec *exec, fasa_kv_cache *c, uint32_t first, uint32_t n,
                                  const uint32_t *src)
{
    if (n == 0) return FASA_OK;
    const cl_buf *b = c->tables->impl;
    cl_int err = clEnqueueWriteBuffer(exec->queue, b->mem, CL_TRUE, (size_t)(b->offset + (uint64_t)first * 4),
                                      (size_t)n * 4, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? FASA_OK : fasa__cl_fail(c->ctx, err, "clEnqueueWriteBuffer (block table)");
}

/* ------------------------------------------------------------------------ */
/* append                                                                    */
/* ------------------------------------------------------------------------ */

fasa_status fasa__cl_append(fasa_exec *exec, fasa_kv_cache *c, uint32_t layer, uint32_t first,
                            uint32_t n, fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                            uint64_t v_offset, fasa_dtype src_dtype)
{
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    uint32_t es = fasa__dtype_size(src_dtype);
    for (uint32_t i = 0; i < cl->n_chunks; i++) {
        const cl_chunk *ch = chunk_at(cl, layer, i);
        uint32_t a = max_u32(first, ch->t0), b = min_u32(first + n, ch->t0 + ch->nt);
        if (a >= b) continue;
        cl_args x = {kern(c, CLK_APPEND), 0, CL_SUCCESS};
        fasa__cl_arg_mem(&x, mem_of(k));
        fasa__cl_arg_u64(&x, elems(k, k_offset, es));
        fasa__cl_arg_mem(&x, mem_of(v));
        fasa__cl_arg_u64(&x, elems(v, v_offset, es));
        fasa__cl_arg_u32(&x, (uint32_t)src_dtype);
        fasa__cl_arg_u32(&x, first);
        fasa__cl_arg_u32(&x, c->shape.n_kv_heads);
        fasa__cl_arg_u32(&x, c->shape.head_dim);
        fasa__cl_arg_mem(&x, ch->k);
        fasa__cl_arg_mem(&x, ch->v);
        fasa__cl_arg_mem(&x, c->has_dims ? ch->kdom : cl->dummy);
        fasa__cl_arg_u32(&x, ch->nt);
        fasa__cl_arg_u32(&x, ch->g0);
        fasa__cl_arg_u32(&x, ch->t0);
        fasa__cl_arg_u32(&x, a);
        fasa__cl_arg_u32(&x, b - a);
        fasa__cl_arg_u32(&x, ch->g0);
        fasa__cl_arg_u32(&x, c->has_dims);
        fasa__cl_arg_u32(&x, c->u_pad);
        fasa__cl_arg_mem(&x, c->has_dims ? cl->udims : cl->dummy);
        fasa__cl_arg_mem(&x, c->has_dims ? cl->usize : cl->dummy);
        fasa__cl_arg_u32(&x, layer * c->shape.n_kv_heads);
        fasa_status st = args_done(c->ctx, &x, CLK_APPEND);
        size_t gws[2] = {round_up(b - a, t->wg_append), ch->ng}, lws[2] = {t->wg_append, 1};
        if (st == FASA_OK) st = fasa__cl_launch(exec, CLK_APPEND, x.k, 2, gws, lws);
        if (st != FASA_OK) return st;
    }
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* sync (external K/V): K_dom rows from the engine's K                       */
/* ------------------------------------------------------------------------ */

fasa_status fasa__cl_sync(fasa_exec *exec, fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n)
{
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    cl_view kv = external_view(c, layer);
    for (uint32_t i = 0; i < cl->n_chunks; i++) {
        const cl_chunk *ch = chunk_at(cl, layer, i);
        uint32_t a = max_u32(first, ch->t0), b = min_u32(first + n, ch->t0 + ch->nt);
        if (a >= b) continue;
        cl_args x = {kern(c, CLK_SYNC), 0, CL_SUCCESS};
        fasa__cl_arg_mem(&x, kv.k);
        fasa__cl_arg_u64(&x, (uint64_t)kv.k_base);
        fasa__cl_arg_u32(&x, kv.ts);
        fasa__cl_arg_u32(&x, kv.hs);
        fasa__cl_arg_mem(&x, ch->kdom);
        fasa__cl_arg_u32(&x, ch->nt);
        fasa__cl_arg_u32(&x, ch->g0);
        fasa__cl_arg_u32(&x, ch->t0);
        fasa__cl_arg_u32(&x, a);
        fasa__cl_arg_u32(&x, b - a);
        fasa__cl_arg_u32(&x, ch->g0);
        fasa__cl_arg_u32(&x, c->u_pad);
        fasa__cl_arg_mem(&x, cl->udims);
        fasa__cl_arg_mem(&x, cl->usize);
        fasa__cl_arg_u32(&x, layer * c->shape.n_kv_heads);
        fasa_status st = args_done(c->ctx, &x, CLK_SYNC);
        size_t gws[2] = {round_up(b - a, t->wg_append), ch->ng}, lws[2] = {t->wg_append, 1};
        if (st == FASA_OK) st = fasa__cl_launch(exec, CLK_SYNC, x.k, 2, gws, lws);
        if (st != FASA_OK) return st;
    }
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* tip (+ the top-k state reset and the fused first histogram pass)          */
/* ------------------------------------------------------------------------ */

/* Selection rows of a scratch block and the first one's global index. */
static uint32_t block_rows(const fasa_step *s, const cl_sblock *sb)
{
    return s->select == FASA_GQA_PER_GROUP ? sb->ng : sb->ng * s->cache->group;
}

static uint32_t block_row0(const fasa_step *s, const cl_sblock *sb)
{
    return s->select == FASA_GQA_PER_GROUP ? sb->g0 : sb->g0 * s->cache->group;
}

static uint32_t topk_k(const fasa_step *s) { return s->n_fac - s->n_sink - s->n_recent; }

/* Where the kernels read q: the caller's buffer (fp32), or the copy that
 * widen_q made of a 16-bit q. */
static void q_args(cl_args *x, const fasa_step *s)
{
    if (s->q_type == FASA_IO_F32) {
        fasa__cl_arg_mem(x, mem_of(s->q));
        fasa__cl_arg_u64(x, elems(s->q, s->q_offset, 4));
    } else {
        fasa__cl_arg_mem(x, ((const cl_cache *)s->cache->impl)->qf);
        fasa__cl_arg_u64(x, 0);
    }
}

/* A 16-bit q (fasa_decode_desc.q_type) widened to fp32 into the scratch:
 * the first kernel of a step (tip or dense), which every later one reads. */
static fasa_status widen_q(fasa_exec *exec, const fasa_step *s)
{
    if (s->q_type == FASA_IO_F32) return FASA_OK;
    fasa_kv_cache *c = s->cache;
    uint32_t n = c->shape.n_q_heads * c->shape.head_dim;
    cl_args x = {kern(c, CLK_WIDEN), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, mem_of(s->q));
    fasa__cl_arg_u64(&x, elems(s->q, s->q_offset, 2));
    fasa__cl_arg_u32(&x, n);
    fasa__cl_arg_u32(&x, (uint32_t)fasa__io_dtype(s->q_type));
    fasa__cl_arg_mem(&x, ((const cl_cache *)c->impl)->qf);
    fasa_status st = args_done(c->ctx, &x, CLK_WIDEN);
    size_t gws[1] = {round_up(n, 64)}, lws[1] = {64};
    return st == FASA_OK ? fasa__cl_launch(exec, CLK_WIDEN, x.k, 1, gws, lws) : st;
}

static fasa_status tip_prep(fasa_exec *exec, const fasa_step *s, uint32_t width)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    cl_args x = {kern(c, CLK_TIP_PREP), 0, CL_SUCCESS};
    q_args(&x, s);
    fasa__cl_arg_u32(&x, c->shape.head_dim);
    fasa__cl_arg_u32(&x, width);
    fasa__cl_arg_u32(&x, s->oracle);
    fasa__cl_arg_mem(&x, c->has_dims ? cl->tip_map : cl->dummy);
    fasa__cl_arg_u64(&x, (uint64_t)s->layer * c->shape.n_q_heads * c->u_pad);
    fasa__cl_arg_u32(&x, c->u_pad);
    fasa__cl_arg_mem(&x, cl->qm);
    fasa_status st = args_done(c->ctx, &x, CLK_TIP_PREP);
    size_t gws[2] = {round_up(width, 64), c->shape.n_q_heads}, lws[2] = {64, 1};
    return st == FASA_OK ? fasa__cl_launch(exec, CLK_TIP_PREP, x.k, 2, gws, lws) : st;
}

static fasa_status topk_init(fasa_exec *exec, const fasa_step *s, const cl_sblock *sb)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    cl_args x = {kern(c, CLK_TOPK_INIT), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, sb->state);
    fasa__cl_arg_mem(&x, sb->hist);
    fasa__cl_arg_mem(&x, cl->sel);
    fasa__cl_arg_u32(&x, c->max_n_fac);
    fasa__cl_arg_u32(&x, block_row0(s, sb));
    fasa__cl_arg_u32(&x, topk_k(s));
    fasa__cl_arg_u32(&x, s->n_sink);
    fasa__cl_arg_u32(&x, s->n_recent);
    fasa__cl_arg_u32(&x, s->L);
    fasa_status st = args_done(c->ctx, &x, CLK_TOPK_INIT);
    size_t gws[1] = {(size_t)block_rows(s, sb) * t->wg_topk}, lws[1] = {t->wg_topk};
    return st == FASA_OK ? fasa__cl_launch(exec, CLK_TOPK_INIT, x.k, 1, gws, lws) : st;
}

/* TIP over the tokens and heads of chunk ch whose rows `rows` holds (its
 * K_dom, or for the oracle K: the chunk's or the engine's). */
static fasa_status tip_dispatch(fasa_exec *exec, const fasa_step *s, const cl_chunk *ch, const cl_view *rows,
                                const cl_sblock *sb, uint32_t width)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    uint32_t ga = max_u32(ch->g0, sb->g0), gb = min_u32(ch->g0 + ch->ng, sb->g0 + sb->ng);
    /* a paged step's tokens may sit in any rows: every chunk goes over all
     * of them and scores those whose row it holds */
    uint32_t lo = s->paged ? 0 : ch->t0;
    uint32_t end = s->paged ? s->L : min_u32(ch->t0 + ch->nt, s->L);
    if (ga >= gb || lo >= end) return FASA_OK;
    bool per_group = s->select == FASA_GQA_PER_GROUP;
    uint32_t nhb = per_group ? 1 : ceil_div(c->group, t->tip_hb);
    cl_args x = {kern(c, CLK_TIP), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, rows->k);
    fasa__cl_arg_u32(&x, width);
    fasa__cl_arg_u64(&x, (uint64_t)rows->k_base);
    fasa__cl_arg_u32(&x, rows->ts);
    fasa__cl_arg_u32(&x, rows->hs);
    fasa__cl_arg_u32(&x, rows->vec8);
    fasa__cl_arg_u32(&x, lo);
    fasa__cl_arg_u32(&x, end - lo);
    fasa__cl_arg_u32(&x, ga);
    fasa__cl_arg_u32(&x, nhb);
    fasa__cl_arg_mem(&x, cl->qm);
    fasa__cl_arg_u32(&x, c->group);
    fasa__cl_arg_u32(&x, per_group);
    fasa__cl_arg_mem(&x, sb->scores);
    fasa__cl_arg_u32(&x, c->capacity);
    fasa__cl_arg_u32(&x, sb->g0);
    fasa__cl_arg_mem(&x, sb->hist);
    fasa__cl_arg_u32(&x, topk_k(s) > 0 && t->fuse_hist);
    fasa__cl_arg_u32(&x, s->n_sink);
    fasa__cl_arg_u32(&x, s->L - s->n_recent);
    fasa__cl_arg_mem(&x, s->oracle || !c->has_dims ? cl->dummy : cl->tip_map);
    fasa__cl_arg_u64(&x, s->oracle ? 0 : (uint64_t)s->layer * c->shape.n_q_heads * c->u_pad);
    fasa__cl_arg_u32(&x, !s->oracle);
    table_args(&x, s);
    fasa__cl_arg_u32(&x, ch->t0);
    fasa__cl_arg_u32(&x, ch->t0 + ch->nt);
    fasa_status st = args_done(c->ctx, &x, CLK_TIP);
    size_t per_wg = (size_t)t->wg_tip * t->tip_tpt;
    size_t gws[2] = {(end - lo + per_wg - 1) / per_wg * t->wg_tip, (size_t)(gb - ga) * nhb};
    size_t lws[2] = {t->wg_tip, 1};
    return st == FASA_OK ? fasa__cl_launch(exec, CLK_TIP, x.k, 2, gws, lws) : st;
}

/* What TIP reads for chunk i: K_dom (K for the oracle) of the chunk, or
 * the engine's K for an external cache's oracle (one chunk then). */
cl_view fasa__cl_tip_view(const fasa_step *s, uint32_t i, cl_chunk *ch)
{
    const fasa_kv_cache *c = s->cache;
    uint32_t width = s->oracle ? c->shape.head_dim : c->u_pad;
    if (s->oracle && c->ext) {
        *ch = attn_chunk(c, s->layer, 0);
        return external_view(c, s->layer);
    }
    *ch = *chunk_at(c->impl, s->layer, i);
    return chunk_view(s->oracle ? ch->k : ch->kdom, NULL, width, ch->nt, ch->g0, ch->t0);
}

fasa_status fasa__cl_tip(fasa_exec *exec, const fasa_step *s)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    uint32_t width = s->oracle ? c->shape.head_dim : c->u_pad;
    fasa_status st = widen_q(exec, s);
    if (st == FASA_OK) st = tip_prep(exec, s, width);
    for (uint32_t b = 0; st == FASA_OK && b < cl->n_sblocks; b++) st = topk_init(exec, s, &cl->sblocks[b]);
    bool ext = s->oracle && c->ext; /* the oracle reads the engine's K */
    uint32_t n_chunks = ext ? 1 : cl->n_chunks;
    for (uint32_t i = 0; st == FASA_OK && i < n_chunks; i++) {
        cl_chunk ch;
        cl_view rows = fasa__cl_tip_view(s, i, &ch);
        for (uint32_t b = 0; st == FASA_OK && b < cl->n_sblocks; b++)
            st = tip_dispatch(exec, s, &ch, &rows, &cl->sblocks[b], width);
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* topk: scan / pass x3 / scan, count, emit (see opencl/topk.cl)             */
/* ------------------------------------------------------------------------ */

static fasa_status topk_scan(fasa_exec *exec, const fasa_step *s, const cl_sblock *sb, uint32_t shift)
{
    fasa_kv_cache *c = s->cache;
    const cl_tuning *t = &ctx_of(c)->tune;
    cl_args x = {kern(c, CLK_TOPK_SCAN), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, sb->state);
    fasa__cl_arg_mem(&x, sb->hist);
    fasa__cl_arg_u32(&x, shift);
    fasa__cl_arg_u32(&x, ((cl_cache *)c->impl)->list_cap);
    fasa_status st = args_done(c->ctx, &x, CLK_TOPK_SCAN);
    size_t gws[1] = {(size_t)block_rows(s, sb) * t->wg_topk}, lws[1] = {t->wg_topk};
    return st == FASA_OK ? fasa__cl_launch(exec, CLK_TOPK_SCAN, x.k, 1, gws, lws) : st;
}

static fasa_status topk_pass(fasa_exec *exec, const fasa_step *s, const cl_sblock *sb, uint32_t shift)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    uint32_t n_cand = s->L - s->n_sink - s->n_recent;
    cl_args x = {kern(c, CLK_TOPK_PASS), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, sb->scores);
    fasa__cl_arg_u32(&x, c->capacity);
    fasa__cl_arg_u32(&x, s->n_sink);
    fasa__cl_arg_u32(&x, n_cand);
    fasa__cl_arg_mem(&x, sb->state);
    fasa__cl_arg_mem(&x, sb->hist);
    fasa__cl_arg_mem(&x, sb->lists);
    fasa__cl_arg_u32(&x, cl->list_cap);
    fasa__cl_arg_u32(&x, shift);
    fasa_status st = args_done(c->ctx, &x, CLK_TOPK_PASS);
    size_t gws[2] = {(size_t)ceil_div(n_cand, t->topk_tile) * t->wg_topk, block_rows(s, sb)};
    size_t lws[2] = {t->wg_topk, 1};
    return st == FASA_OK ? fasa__cl_launch(exec, CLK_TOPK_PASS, x.k, 2, gws, lws) : st;
}

static fasa_status topk_out(fasa_exec *exec, const fasa_step *s, const cl_sblock *sb, int kind,
                            uint32_t te)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    uint32_t n_cand = s->L - s->n_sink - s->n_recent;
    cl_args x = {kern(c, kind), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, sb->scores);
    fasa__cl_arg_u32(&x, c->capacity);
    fasa__cl_arg_u32(&x, s->n_sink);
    fasa__cl_arg_u32(&x, n_cand);
    fasa__cl_arg_mem(&x, sb->state);
    fasa__cl_arg_mem(&x, sb->tiles);
    fasa__cl_arg_u32(&x, cl->max_tiles);
    fasa__cl_arg_u32(&x, te);
    if (kind == CLK_TOPK_EMIT) {
        fasa__cl_arg_mem(&x, cl->sel);
        fasa__cl_arg_u32(&x, c->max_n_fac);
        fasa__cl_arg_u32(&x, block_row0(s, sb));
        fasa__cl_arg_u32(&x, s->n_sink + s->n_recent);
    }
    fasa_status st = args_done(c->ctx, &x, kind);
    size_t gws[2] = {(size_t)ceil_div(n_cand, te) * t->wg_topk, block_rows(s, sb)};
    size_t lws[2] = {t->wg_topk, 1};
    return st == FASA_OK ? fasa__cl_launch(exec, kind, x.k, 2, gws, lws) : st;
}

/* Output tiles: at most max_tiles per row (each emit group sums the
 * counts of the tiles before it), at least a pass tile, a multiple of the
 * group size. */
uint32_t fasa__cl_topk_te(const fasa_step *s, uint32_t max_tiles)
{
    const cl_tuning *t = &ctx_of(s->cache)->tune;
    uint32_t n_cand = s->L - s->n_sink - s->n_recent;
    uint32_t te = max_u32(t->topk_tile, ceil_div(n_cand, max_tiles));
    return (uint32_t)round_up(te, t->wg_topk);
}

fasa_status fasa__cl_topk(fasa_exec *exec, const fasa_step *s)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    if (topk_k(s) == 0) return FASA_OK; /* the forced tokens fill the budget */
    uint32_t te = fasa__cl_topk_te(s, cl->max_tiles);
    fasa_status st = FASA_OK;
    for (uint32_t b = 0; st == FASA_OK && b < cl->n_sblocks; b++) {
        const cl_sblock *sb = &cl->sblocks[b];
        if (!t->fuse_hist) st = topk_pass(exec, s, sb, 24); /* first pass not fused into tip */
        if (st == FASA_OK) st = topk_scan(exec, s, sb, 24);
        for (int shift = 16; st == FASA_OK && shift >= 0; shift -= 8) {
            st = topk_pass(exec, s, sb, (uint32_t)shift);
            if (st == FASA_OK) st = topk_scan(exec, s, sb, (uint32_t)shift);
        }
        if (st == FASA_OK) st = topk_out(exec, s, sb, CLK_TOPK_COUNT, te);
        if (st == FASA_OK) st = topk_out(exec, s, sb, CLK_TOPK_EMIT, te);
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* fac / dense: split-K attention partials, then the reduce                  */
/* ------------------------------------------------------------------------ */

/* Query heads one attention work-group serves (their q must fit ATT_QL). */
uint32_t fasa__cl_heads_per_group(const fasa_kv_cache *c)
{
    const cl_tuning *t = &ctx_of(c)->tune;
    uint32_t hb = t->att_ql / c->shape.head_dim;
    hb = min_u32(hb, t->att_hb);
    return min_u32(max_u32(hb, 1), c->group);
}

static uint32_t tchunks_used(const fasa_kv_cache *c, uint32_t L) { return ceil_div(L, attn_tokens_per_chunk(c)); }

static fasa_status reduce(fasa_exec *exec, const fasa_step *s, uint32_t n_parts)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    cl_args x = {kern(c, CLK_REDUCE), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, cl->part);
    fasa__cl_arg_u32(&x, cl->pmax);
    fasa__cl_arg_u32(&x, n_parts);
    fasa__cl_arg_u32(&x, c->shape.head_dim);
    fasa__cl_arg_mem(&x, mem_of(s->o));
    fasa__cl_arg_u64(&x, elems(s->o, s->o_offset, fasa__io_size(s->o_type)));
    fasa__cl_arg_u32(&x, (uint32_t)s->o_type);
    fasa_status st = args_done(c->ctx, &x, CLK_REDUCE);
    size_t gws[1] = {(size_t)c->shape.n_q_heads * t->wg_red}, lws[1] = {t->wg_red};
    return st == FASA_OK ? fasa__cl_launch(exec, CLK_REDUCE, x.k, 1, gws, lws) : st;
}

/* Common leading arguments of fasa_dense and fasa_fac: K, V and where
 * their rows are (kv_view, with the block table of a paged step). */
static void attn_head_args(cl_args *x, const fasa_step *s, const cl_view *w)
{
    const fasa_kv_cache *c = s->cache;
    fasa__cl_arg_mem(x, w->k);
    fasa__cl_arg_mem(x, w->v);
    fasa__cl_arg_u32(x, c->shape.head_dim);
    fasa__cl_arg_u64(x, (uint64_t)w->k_base);
    fasa__cl_arg_u64(x, (uint64_t)w->v_base);
    fasa__cl_arg_u32(x, w->ts);
    fasa__cl_arg_u32(x, w->hs);
    fasa__cl_arg_u32(x, w->vec8);
    table_args(x, s);
}

/* What fac reads for chunk ch: the chunk (or its FASA-M source) or the
 * engine's K and V; the selection and the token range it covers. */
cl_view fasa__cl_fac_view(const fasa_kv_cache *c, uint32_t layer, const cl_chunk *ch, cl_mem *sel, uint32_t *t0,
                        uint32_t *t_end)
{
    if (c->ext) {
        *sel = ((const cl_cache *)c->impl)->sel;
        *t0 = 0;
        *t_end = c->capacity;
        return external_view(c, layer);
    }
    cl_fac_src src;
    fasa__cl_fac_source(c, layer, ch, &src);
    *sel = src.sel;
    *t0 = src.t0;
    *t_end = src.t_end;
    return chunk_view(src.k, src.v, c->shape.head_dim, src.tpb, src.gk0, src.t0);
}

void fasa__cl_fac_split(const fasa_step *s, uint32_t *splits_out, uint32_t *split_len_out)
{
    const fasa_kv_cache *c = s->cache;
    const cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    bool per_group = s->select == FASA_GQA_PER_GROUP;
    uint32_t hb = fasa__cl_heads_per_group(c), nhb = per_group ? ceil_div(c->group, hb) : 1;
    uint32_t units = per_group ? c->shape.n_kv_heads * nhb : c->shape.n_q_heads;
    uint32_t n_tc = tchunks_used(c, s->L);
    uint32_t splits = min_u32(max_u32(ceil_div(t->target_groups, units), 1), ceil_div(s->n_fac, t->wg_attn));
    splits = min_u32(splits, max_u32(cl->pmax / n_tc, 1));
    uint32_t split_len = (uint32_t)round_up(ceil_div(s->n_fac, splits), t->wg_attn);
    *splits_out = ceil_div(s->n_fac, split_len);
    *split_len_out = split_len;
}

fasa_status fasa__cl_fac(fasa_exec *exec, const fasa_step *s)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    bool per_group = s->select == FASA_GQA_PER_GROUP;
    uint32_t hb = fasa__cl_heads_per_group(c), nhb = per_group ? ceil_div(c->group, hb) : 1;
    uint32_t n_tc = tchunks_used(c, s->L), splits, split_len;
    fasa__cl_fac_split(s, &splits, &split_len);
    /* FASA-M: counts, and with STAGED the rows gathered into device slots */
    fasa_status fst = c->placement == FASA_PLACEMENT_OFFLOAD ? fasa__cl_fetch(exec, s) : FASA_OK;
    if (fst != FASA_OK || s->prefetch) return fst; /* a prefetch places rows, no attention */
    for (uint32_t i = 0; i < attn_chunks(c); i++) {
        cl_chunk chunk = attn_chunk(c, s->layer, i), *ch = &chunk;
        if (ch->t0 >= s->L) continue;
        cl_mem sel;
        uint32_t t0, t_end;
        cl_view w = fasa__cl_fac_view(c, s->layer, ch, &sel, &t0, &t_end);
        cl_args x = {kern(c, CLK_FAC), 0, CL_SUCCESS};
        attn_head_args(&x, s, &w);
        fasa__cl_arg_u32(&x, t0);
        fasa__cl_arg_u32(&x, t_end);
        fasa__cl_arg_u32(&x, ch->g0);
        fasa__cl_arg_u32(&x, nhb);
        fasa__cl_arg_u32(&x, hb);
        q_args(&x, s);
        fasa__cl_arg_u32(&x, c->group);
        fasa__cl_arg_u32(&x, per_group);
        fasa__cl_arg_mem(&x, sel);
        fasa__cl_arg_u32(&x, c->max_n_fac);
        fasa__cl_arg_u32(&x, s->n_fac);
        fasa__cl_arg_u32(&x, split_len);
        fasa__cl_arg_mem(&x, cl->part);
        fasa__cl_arg_u32(&x, cl->pmax);
        fasa__cl_arg_u32(&x, ch->tc * splits);
        fasa__cl_arg_f32(&x, s->scale);
        fasa_status st = args_done(c->ctx, &x, CLK_FAC);
        size_t gws[2] = {(size_t)splits * t->wg_attn, (size_t)ch->ng * (per_group ? nhb : c->group)};
        size_t lws[2] = {t->wg_attn, 1};
        if (st == FASA_OK) st = fasa__cl_launch(exec, CLK_FAC, x.k, 2, gws, lws);
        if (st != FASA_OK) return st;
    }
    return reduce(exec, s, n_tc * splits);
}

fasa_status fasa__cl_dense(fasa_exec *exec, const fasa_step *s)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    uint32_t hb = fasa__cl_heads_per_group(c), nhb = ceil_div(c->group, hb);
    uint32_t units = c->shape.n_kv_heads * nhb;
    uint32_t want = max_u32(ceil_div(t->target_groups, units), 1);
    uint32_t split_len = (uint32_t)round_up(max_u32(ceil_div(s->L, want), t->wg_attn), t->wg_attn);
    uint32_t tpc = attn_tokens_per_chunk(c), n_tc = tchunks_used(c, s->L), n_parts;
    for (;;) { /* every token chunk's splits must fit the partial slots */
        uint32_t last = s->L - (n_tc - 1) * tpc;
        n_parts = (n_tc - 1) * ceil_div(tpc, split_len) + ceil_div(last, split_len);
        if (n_parts <= cl->pmax) break;
        split_len *= 2;
    }
    uint32_t per_chunk = ceil_div(tpc, split_len);
    fasa_status wst = widen_q(exec, s);
    if (wst != FASA_OK) return wst;
    for (uint32_t i = 0; i < attn_chunks(c); i++) {
        cl_chunk chunk = attn_chunk(c, s->layer, i), *ch = &chunk;
        if (ch->t0 >= s->L) continue;
        uint32_t n_tok = min_u32(ch->nt, s->L - ch->t0);
        cl_view w = c->ext ? external_view(c, s->layer)
                           : chunk_view(ch->k, ch->v, c->shape.head_dim, ch->nt, ch->g0, ch->t0);
        cl_args x = {kern(c, CLK_DENSE), 0, CL_SUCCESS};
        attn_head_args(&x, s, &w);
        fasa__cl_arg_u32(&x, ch->g0);
        fasa__cl_arg_u32(&x, nhb);
        fasa__cl_arg_u32(&x, hb);
        q_args(&x, s);
        fasa__cl_arg_u32(&x, c->group);
        fasa__cl_arg_u32(&x, ch->t0);
        fasa__cl_arg_u32(&x, n_tok);
        fasa__cl_arg_u32(&x, split_len);
        fasa__cl_arg_mem(&x, cl->part);
        fasa__cl_arg_u32(&x, cl->pmax);
        fasa__cl_arg_u32(&x, ch->tc * per_chunk);
        fasa__cl_arg_f32(&x, s->scale);
        fasa_status st = args_done(c->ctx, &x, CLK_DENSE);
        size_t gws[2] = {(size_t)ceil_div(n_tok, split_len) * t->wg_attn, (size_t)ch->ng * nhb};
        size_t lws[2] = {t->wg_attn, 1};
        if (st == FASA_OK) st = fasa__cl_launch(exec, CLK_DENSE, x.k, 2, gws, lws);
        if (st != FASA_OK) return st;
    }
    return reduce(exec, s, n_parts);
}

/* ------------------------------------------------------------------------ */
/* Selection read-back                                                       */
/* ------------------------------------------------------------------------ */

fasa_status fasa__cl_read_selection(fasa_kv_cache *c, const fasa_step *s, int32_t *selected,
                                    uint32_t selected_stride, float *scores, uint32_t scores_stride)
{
    cl_ctx *cc = ctx_of(c);
    cl_cache *cl = c->impl;
    cl_int err = CL_SUCCESS;
    size_t zero[3] = {0, 0, 0};
    if (selected) {
        size_t region[3] = {(size_t)s->n_fac * 4, s->n_rows, 1};
        err = clEnqueueReadBufferRect(cc->queue, cl->sel, CL_TRUE, zero, zero, region,
                                      (size_t)c->max_n_fac * 4, 0, (size_t)selected_stride * 4, 0,
                                      selected, 0, NULL, NULL);
        if (err != CL_SUCCESS) return fasa__cl_fail(c->ctx, err, "clEnqueueReadBufferRect (selection)");
    }
    for (uint32_t b = 0; scores && b < cl->n_sblocks; b++) {
        const cl_sblock *sb = &cl->sblocks[b];
        size_t region[3] = {(size_t)s->L * 4, block_rows(s, sb), 1};
        err = clEnqueueReadBufferRect(cc->queue, sb->scores, CL_TRUE, zero, zero, region,
                                      (size_t)c->capacity * 4, 0, (size_t)scores_stride * 4, 0,
                                      scores + (size_t)block_row0(s, sb) * scores_stride, 0, NULL, NULL);
        if (err != CL_SUCCESS) return fasa__cl_fail(c->ctx, err, "clEnqueueReadBufferRect (scores)");
    }
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* A step's kernels                                                          */
/* ------------------------------------------------------------------------ */

/* fasa__step_record without the table upload (record_batch uploads the
 * tables of every step of a cache at once). */
fasa_status fasa__cl_step_kernels(fasa_exec *exec, const fasa_step *s)
{
    if (s->path == FASA_PATH_DENSE) return s->prefetch ? FASA_OK : fasa__cl_dense(exec, s);
    fasa_status st = fasa__cl_tip(exec, s);
    if (st == FASA_OK) st = fasa__cl_topk(exec, s);
    if (st == FASA_OK) st = fasa__cl_fac(exec, s);
    return st;
}
