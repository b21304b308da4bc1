/* Batched decode on OpenCL (the record_batch op; docs/OPENCL.md, "Batched
 * decode").  fasa_decode_batch hands over n resolved steps of one layer.
 * Sparse steps of one cache that read q from one cl_mem and write o to one
 * cl_mem form a group, recorded as ONE launch per kernel stage (widen,
 * tip_prep, topk_init, tip, the top-k passes, fac, reduce) with the item
 * in dim 2 of the grid.  What differs per item (its length, q/o offsets,
 * block table offset, scratch regions) is read from a parameter buffer
 * (BP_* words, the same enum as opencl/common.cl) instead of kernel
 * arguments; the *_b kernels run the single kernels' bodies with those
 * values, so every o is bit for bit that of the step alone.
 *
 * Every other step (dense, prefetch, FASA-M offload, caches split into
 * several storage chunks or scratch blocks, a group of one) is recorded
 * as a single step.  Per-item scratch is sized by the item's L, not by the
 * cache's capacity, in one buffer per cache (bscratch) grown on demand; a
 * group whose scratch would pass the allocation limit is cut in two. */
#include "cl_internal.h"

#include <stdio.h>
#include <string.h>

enum {
    BP_L, BP_NCAND, BP_TE, BP_NTILES, BP_LCAP,
    BP_QS, BP_QR = BP_QS + 2, BP_O = BP_QR + 2, BP_TAB = BP_O + 2,
    BP_SCORES = BP_TAB + 2, BP_HIST, BP_STATE, BP_LISTS, BP_TILES, BP_SEL, BP_PART, BP_QM, BP_QF,
    BP_WORDS
};
_Static_assert(BP_WORDS == 22, "BP_WORDS must match opencl/common.cl");

#define REGION_ALIGN 16u /* words: every scratch region starts on a 64-byte line */

static cl_ctx *ctx_of(const fasa_kv_cache *c) { return c->ctx->impl; }
static cl_mem mem_of(const fasa_buffer *b) { return ((const cl_buf *)b->impl)->mem; }
static uint64_t elems(const fasa_buffer *b, uint64_t off, uint32_t size)
{
    return (((const cl_buf *)b->impl)->offset + off) / size;
}
static uint32_t ceil_div(uint32_t a, uint32_t b) { return (a + b - 1) / b; }
static uint64_t align_w(uint64_t w) { return (w + REGION_ALIGN - 1) / REGION_ALIGN * REGION_ALIGN; }
static uint32_t topk_k(const fasa_step *s) { return s->n_fac - s->n_sink - s->n_recent; }

/* Whether a step can run in a group: the sparse path over one storage
 * chunk and one scratch block, no FASA-M (its fetch is per step). */
static bool fusable(const fasa_step *s)
{
    const cl_cache *cl = s->cache->impl;
    return s->path == FASA_PATH_SPARSE && !s->prefetch && s->cache->placement != FASA_PLACEMENT_OFFLOAD &&
           cl->n_chunks == 1 && cl->n_sblocks == 1;
}

static bool same_group(const fasa_step *a, const fasa_step *b)
{
    return a->cache == b->cache && mem_of(a->q) == mem_of(b->q) && mem_of(a->o) == mem_of(b->o);
}

/* ------------------------------------------------------------------------ */
/* Per-item parameters and scratch                                           */
/* ------------------------------------------------------------------------ */

/* One item's BP_* words; its scratch regions start at word *at, which
 * advances past them.  Returns the item's scratch words. */
static uint64_t item_params(const fasa_step *s, uint32_t splits, uint64_t at, uint32_t *p)
{
    const fasa_kv_cache *c = s->cache;
    const cl_cache *cl = c->impl;
    uint32_t rows = s->n_rows, hq = c->shape.n_q_heads, d = c->shape.head_dim, L = s->L;
    uint32_t width = s->oracle ? d : c->u_pad, n_cand = L - s->n_sink - s->n_recent;
    uint32_t te = fasa__cl_topk_te(s, cl->max_tiles);
    /* the candidate list as cl_cache.c plans it, for L tokens (it only holds keys of the window) */
    uint32_t lcap = L < 4096u ? L : ((L + 3) / 4 > 4096u ? (L + 3) / 4 : 4096u);
    memset(p, 0, BP_WORDS * sizeof *p);
    p[BP_L] = L;
    p[BP_NCAND] = n_cand;
    p[BP_TE] = te;
    p[BP_NTILES] = ceil_div(n_cand, te);
    p[BP_LCAP] = lcap;
    uint64_t words[9] = {(uint64_t)rows * L, rows * 256ull, rows * 16ull, rows * 2ull * lcap,
                         rows * 2ull * p[BP_NTILES], (uint64_t)rows * c->max_n_fac, (uint64_t)hq * splits * (d + 2),
                         (uint64_t)hq * width, s->q_type == FASA_IO_F32 ? 0 : (uint64_t)hq * d};
    uint64_t start = at;
    for (int i = 0; i < 9; i++) {
        p[BP_SCORES + i] = (uint32_t)at;
        at += align_w(words[i]);
    }
    uint64_t qs = elems(s->q, s->q_offset, s->q_type == FASA_IO_F32 ? 4 : 2);
    uint64_t qr = s->q_type == FASA_IO_F32 ? qs : p[BP_QF];
    uint64_t o = elems(s->o, s->o_offset, fasa__io_size(s->o_type));
    uint64_t tab = 0;
    if (s->paged) tab = ((const cl_buf *)c->tables->impl)->offset / 4 + s->table_offset;
    uint64_t wide[4][2] = {{BP_QS, qs}, {BP_QR, qr}, {BP_O, o}, {BP_TAB, tab}};
    for (int i = 0; i < 4; i++) {
        p[wide[i][0]] = (uint32_t)wide[i][1];
        p[wide[i][0] + 1] = (uint32_t)(wide[i][1] >> 32);
    }
    return at - start;
}

/* Grows *m to hold at least need bytes (contents undefined: every region
 * is written before it is read).  The old buffer is released: OpenCL keeps
 * it alive until the commands already enqueued with it have finished. */
static bool ensure_mem(fasa_kv_cache *c, cl_mem *m, uint64_t *size, uint64_t need)
{
    if (*m && *size >= need) return true;
    uint64_t want = need + need / 4;
    uint64_t lim = fasa__cl_alloc_limit(ctx_of(c));
    if (want > lim) want = need;
    cl_int err = CL_SUCCESS;
    cl_mem fresh = fasa__cl_create_buffer(c->ctx, CL_MEM_READ_WRITE, (size_t)want, NULL, &err);
    if (!fresh) return false;
    if (*m) clReleaseMemObject(*m);
    *m = fresh;
    *size = want;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Launches                                                                  */
/* ------------------------------------------------------------------------ */

/* What every launch of a group shares: the batch arguments (bs, prm,
 * item0) come last in every *_b kernel. */
typedef struct bgroup {
    fasa_exec *exec;
    const fasa_step *s;           /* the first item: the shared parameters */
    cl_mem bs, prm;
    uint32_t item0, n;            /* items [item0, item0 + n) of prm */
    uint32_t max_L, max_cand, max_tiles; /* the grid covers the longest item */
    uint32_t splits, split_len;
} bgroup;

static fasa_status launch(const bgroup *g, cl_args *x, int kind, size_t gx, size_t gy, size_t lx)
{
    fasa__cl_arg_mem(x, g->bs);
    fasa__cl_arg_mem(x, g->prm);
    fasa__cl_arg_u32(x, g->item0);
    if (x->err != CL_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "clSetKernelArg(%s, arg %u)", fasa__cl_kernel_names[kind], x->i - 1);
        return fasa__cl_fail(g->s->cache->ctx, x->err, what);
    }
    size_t gws[3] = {gx, gy, g->n}, lws[3] = {lx, 1, 1};
    return fasa__cl_launch(g->exec, kind, x->k, 3, gws, lws);
}

static cl_args args_of(const bgroup *g, int kind) { return (cl_args){fasa__cl_kern(g->s->cache, kind), 0, CL_SUCCESS}; }

/* The block table of a paged group (its offset is per item), else the
 * placeholder: tab, shift, paged. */
static void table_args(cl_args *x, const fasa_step *s)
{
    const cl_cache *cl = s->cache->impl;
    fasa__cl_arg_mem(x, s->paged ? ((const cl_buf *)s->cache->tables->impl)->mem : cl->dummy);
    fasa__cl_arg_u32(x, s->paged ? s->block_shift : 0);
    fasa__cl_arg_u32(x, s->paged);
}

/* Where the fp32 q is read: the caller's buffer, or the widened copies. */
static cl_mem q_mem(const bgroup *g) { return g->s->q_type == FASA_IO_F32 ? mem_of(g->s->q) : g->bs; }

static fasa_status widen_tip_prep(const bgroup *g)
{
    const fasa_step *s = g->s;
    const fasa_kv_cache *c = s->cache;
    const cl_cache *cl = c->impl;
    uint32_t d = c->shape.head_dim, hq = c->shape.n_q_heads, width = s->oracle ? d : c->u_pad;
    fasa_status st = FASA_OK;
    if (s->q_type != FASA_IO_F32) {
        cl_args x = args_of(g, CLK_WIDEN_B);
        fasa__cl_arg_mem(&x, mem_of(s->q));
        fasa__cl_arg_u32(&x, hq * d);
        fasa__cl_arg_u32(&x, (uint32_t)fasa__io_dtype(s->q_type));
        st = launch(g, &x, CLK_WIDEN_B, (size_t)ceil_div(hq * d, 64) * 64, 1, 64);
    }
    if (st != FASA_OK) return st;
    cl_args x = args_of(g, CLK_TIP_PREP_B);
    fasa__cl_arg_mem(&x, q_mem(g));
    fasa__cl_arg_u32(&x, d);
    fasa__cl_arg_u32(&x, width);
    fasa__cl_arg_u32(&x, s->oracle);
    fasa__cl_arg_mem(&x, c->has_dims ? cl->tip_map : cl->dummy);
    fasa__cl_arg_u64(&x, (uint64_t)s->layer * hq * c->u_pad);
    fasa__cl_arg_u32(&x, c->u_pad);
    return launch(g, &x, CLK_TIP_PREP_B, (size_t)ceil_div(width, 64) * 64, hq, 64);
}

static fasa_status tip(const bgroup *g)
{
    const fasa_step *s = g->s;
    const fasa_kv_cache *c = s->cache;
    const cl_cache *cl = c->impl;
    const cl_tuning *t = &ctx_of(c)->tune;
    cl_args x = args_of(g, CLK_TOPK_INIT_B);
    fasa__cl_arg_u32(&x, c->max_n_fac);
    fasa__cl_arg_u32(&x, topk_k(s));
    fasa__cl_arg_u32(&x, s->n_sink);
    fasa__cl_arg_u32(&x, s->n_recent);
    fasa_status st = launch(g, &x, CLK_TOPK_INIT_B, (size_t)s->n_rows * t->wg_topk, 1, t->wg_topk);
    if (st != FASA_OK) return st;
    cl_chunk ch;
    cl_view rows = fasa__cl_tip_view(s, 0, &ch);
    bool per_group = s->select == FASA_GQA_PER_GROUP;
    uint32_t nhb = per_group ? 1 : ceil_div(c->group, t->tip_hb), per_wg = t->wg_tip * t->tip_tpt;
    x = args_of(g, CLK_TIP_B);
    fasa__cl_arg_mem(&x, rows.k);
    fasa__cl_arg_u32(&x, s->oracle ? c->shape.head_dim : c->u_pad);
    fasa__cl_arg_u64(&x, (uint64_t)rows.k_base);
    fasa__cl_arg_u32(&x, rows.ts);
    fasa__cl_arg_u32(&x, rows.hs);
    fasa__cl_arg_u32(&x, rows.vec8);
    fasa__cl_arg_u32(&x, ch.g0);
    fasa__cl_arg_u32(&x, nhb);
    fasa__cl_arg_u32(&x, c->group);
    fasa__cl_arg_u32(&x, per_group);
    fasa__cl_arg_u32(&x, topk_k(s) > 0 && t->fuse_hist);
    fasa__cl_arg_u32(&x, s->n_sink);
    fasa__cl_arg_u32(&x, s->n_recent);
    fasa__cl_arg_mem(&x, s->oracle || !c->has_dims ? cl->dummy : cl->tip_map);
    fasa__cl_arg_u64(&x, s->oracle ? 0 : (uint64_t)s->layer * c->shape.n_q_heads * c->u_pad);
    fasa__cl_arg_u32(&x, !s->oracle);
    table_args(&x, s);
    fasa__cl_arg_u32(&x, ch.t0);
    fasa__cl_arg_u32(&x, ch.t0 + ch.nt);
    return launch(g, &x, CLK_TIP_B, (size_t)ceil_div(g->max_L, per_wg) * t->wg_tip, (size_t)ch.ng * nhb, t->wg_tip);
}

static fasa_status topk_pass_scan(const bgroup *g, uint32_t shift, bool pass)
{
    const fasa_step *s = g->s;
    const cl_tuning *t = &ctx_of(s->cache)->tune;
    fasa_status st = FASA_OK;
    if (pass) {
        cl_args x = args_of(g, CLK_TOPK_PASS_B);
        fasa__cl_arg_u32(&x, s->n_sink);
        fasa__cl_arg_u32(&x, shift);
        st = launch(g, &x, CLK_TOPK_PASS_B, (size_t)ceil_div(g->max_cand, t->topk_tile) * t->wg_topk, s->n_rows,
                    t->wg_topk);
    }
    if (st != FASA_OK) return st;
    cl_args x = args_of(g, CLK_TOPK_SCAN_B);
    fasa__cl_arg_u32(&x, shift);
    return launch(g, &x, CLK_TOPK_SCAN_B, (size_t)s->n_rows * t->wg_topk, 1, t->wg_topk);
}

static fasa_status topk(const bgroup *g)
{
    const fasa_step *s = g->s;
    const cl_tuning *t = &ctx_of(s->cache)->tune;
    if (topk_k(s) == 0) return FASA_OK; /* the forced tokens fill the budget */
    fasa_status st = topk_pass_scan(g, 24, !t->fuse_hist);
    for (int shift = 16; st == FASA_OK && shift >= 0; shift -= 8) st = topk_pass_scan(g, (uint32_t)shift, true);
    size_t gx = (size_t)g->max_tiles * t->wg_topk;
    if (st == FASA_OK) {
        cl_args x = args_of(g, CLK_TOPK_COUNT_B);
        fasa__cl_arg_u32(&x, s->n_sink);
        st = launch(g, &x, CLK_TOPK_COUNT_B, gx, s->n_rows, t->wg_topk);
    }
    if (st != FASA_OK) return st;
    cl_args x = args_of(g, CLK_TOPK_EMIT_B);
    fasa__cl_arg_u32(&x, s->n_sink);
    fasa__cl_arg_u32(&x, s->cache->max_n_fac);
    fasa__cl_arg_u32(&x, s->n_sink + s->n_recent);
    return launch(g, &x, CLK_TOPK_EMIT_B, gx, s->n_rows, t->wg_topk);
}

static fasa_status fac_reduce(const bgroup *g)
{
    const fasa_step *s = g->s;
    const fasa_kv_cache *c = s->cache;
    const cl_tuning *t = &ctx_of(c)->tune;
    bool per_group = s->select == FASA_GQA_PER_GROUP;
    uint32_t hb = fasa__cl_heads_per_group(c), nhb = per_group ? ceil_div(c->group, hb) : 1;
    const cl_cache *cl = c->impl; /* one storage chunk per layer (fusable) */
    cl_chunk ch = c->ext ? (cl_chunk){.g0 = 0, .ng = c->shape.n_kv_heads, .t0 = 0, .nt = c->capacity}
                         : cl->chunks[(size_t)s->layer * cl->n_chunks];
    cl_mem sel;
    uint32_t t0, t_end;
    cl_view w = fasa__cl_fac_view(c, s->layer, &ch, &sel, &t0, &t_end);
    cl_args x = args_of(g, CLK_FAC_B);
    fasa__cl_arg_mem(&x, w.k);
    fasa__cl_arg_mem(&x, w.v);
    fasa__cl_arg_u32(&x, c->shape.head_dim);
    fasa__cl_arg_u64(&x, (uint64_t)w.k_base);
    fasa__cl_arg_u64(&x, (uint64_t)w.v_base);
    fasa__cl_arg_u32(&x, w.ts);
    fasa__cl_arg_u32(&x, w.hs);
    fasa__cl_arg_u32(&x, w.vec8);
    table_args(&x, s);
    fasa__cl_arg_u32(&x, t0);
    fasa__cl_arg_u32(&x, t_end);
    fasa__cl_arg_u32(&x, ch.g0);
    fasa__cl_arg_u32(&x, nhb);
    fasa__cl_arg_u32(&x, hb);
    fasa__cl_arg_mem(&x, q_mem(g));
    fasa__cl_arg_u32(&x, c->group);
    fasa__cl_arg_u32(&x, per_group);
    fasa__cl_arg_u32(&x, c->max_n_fac);
    fasa__cl_arg_u32(&x, s->n_fac);
    fasa__cl_arg_u32(&x, g->split_len);
    fasa__cl_arg_u32(&x, g->splits);
    fasa__cl_arg_f32(&x, s->scale);
    fasa_status st = launch(g, &x, CLK_FAC_B, (size_t)g->splits * t->wg_attn,
                            (size_t)ch.ng * (per_group ? nhb : c->group), t->wg_attn);
    if (st != FASA_OK) return st;
    x = args_of(g, CLK_REDUCE_B);
    fasa__cl_arg_u32(&x, g->splits);
    fasa__cl_arg_u32(&x, g->splits);
    fasa__cl_arg_u32(&x, c->shape.head_dim);
    fasa__cl_arg_mem(&x, mem_of(s->o));
    fasa__cl_arg_u32(&x, (uint32_t)s->o_type);
    return launch(g, &x, CLK_REDUCE_B, (size_t)c->shape.n_q_heads * t->wg_red, 1, t->wg_red);
}

/* ------------------------------------------------------------------------ */
/* Groups                                                                    */
/* ------------------------------------------------------------------------ */

/* Uploads the parameters of the group's n items (idx into steps), grows
 * the scratch and records the stages.  *fused = false when the buffers
 * cannot grow: the caller then records the items one by one. */
static fasa_status record_group(fasa_exec *exec, const fasa_step *steps, const uint32_t *idx, uint32_t n,
                                uint32_t *prm_host, bool *fused)
{
    const fasa_step *s = &steps[idx[0]];
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    bgroup g = {.exec = exec, .s = s, .n = n};
    fasa__cl_fac_split(s, &g.splits, &g.split_len);
    uint64_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        const fasa_step *si = &steps[idx[i]];
        uint32_t *p = prm_host + (size_t)i * BP_WORDS;
        at += item_params(si, g.splits, at, p);
        if (p[BP_L] > g.max_L) g.max_L = p[BP_L];
        if (p[BP_NCAND] > g.max_cand) g.max_cand = p[BP_NCAND];
        if (p[BP_NTILES] > g.max_tiles) g.max_tiles = p[BP_NTILES];
    }
    *fused = ensure_mem(c, &cl->bscratch, &cl->bscratch_size, at * 4) &&
             ensure_mem(c, &cl->bparams, &cl->bparams_size, (uint64_t)n * BP_WORDS * 4);
    if (!*fused) return FASA_OK;
    g.bs = cl->bscratch;
    g.prm = cl->bparams;
    /* blocking, like the block tables: the in-order queue runs it after the
     * kernels that read the previous parameters, and the host array may be
     * reused at once */
    cl_int err = clEnqueueWriteBuffer(exec->queue, cl->bparams, CL_TRUE, 0, (size_t)n * BP_WORDS * 4, prm_host, 0,
                                      NULL, NULL);
    if (err != CL_SUCCESS) return fasa__cl_fail(c->ctx, err, "clEnqueueWriteBuffer (batch parameters)");
    fasa_status st = widen_tip_prep(&g);
    if (st == FASA_OK) st = tip(&g);
    if (st == FASA_OK) st = topk(&g);
    if (st == FASA_OK) st = fac_reduce(&g);
    return st;
}

/* The scratch words one item needs (item_params without the parameters). */
static uint64_t item_words(const fasa_step *s, uint32_t splits)
{
    uint32_t p[BP_WORDS];
    return item_params(s, splits, 0, p);
}

/* Collects into idx the unrecorded steps from i on that join step i's
 * group, while their scratch fits the allocation limit; marks them done. */
static uint32_t collect(const fasa_step *steps, uint32_t n, uint32_t i, bool *done, uint32_t *idx)
{
    const fasa_step *s = &steps[i];
    uint64_t lim = fasa__cl_alloc_limit(ctx_of(s->cache)) / 4, used = 0;
    uint32_t splits, split_len, k = 0;
    fasa__cl_fac_split(s, &splits, &split_len);
    for (uint32_t j = i; j < n; j++) {
        if (done[j] || !fusable(&steps[j]) || !same_group(s, &steps[j])) continue;
        uint64_t w = item_words(&steps[j], splits);
        if (used + w > lim) {
            if (k == 0) break; /* too large for a batch scratch: alone */
            continue;
        }
        used += w;
        done[j] = true;
        idx[k++] = j;
    }
    return k;
}

/* Uploads the block tables of every paged step of the batch: one write per
 * cache (the core reserved each cache's entries of this batch one after
 * another, so they form one range), not one per step. */
static fasa_status upload_tables(fasa_exec *exec, const fasa_step *steps, uint32_t n, uint32_t *tmp, size_t words,
                                 bool *done)
{
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; i < n && st == FASA_OK; i++) {
        if (done[i] || !steps[i].paged) continue;
        fasa_kv_cache *c = steps[i].cache;
        uint32_t lo = UINT32_MAX, hi = 0;
        for (uint32_t j = i; j < n; j++)
            if (steps[j].cache == c && steps[j].paged) {
                if (steps[j].table_offset < lo) lo = steps[j].table_offset;
                if (steps[j].table_offset + steps[j].table_n > hi) hi = steps[j].table_offset + steps[j].table_n;
            }
        bool one = hi - lo <= words; /* else (never with the core's reservations) step by step */
        if (one) memset(tmp, 0, (size_t)(hi - lo) * sizeof *tmp);
        for (uint32_t j = i; j < n && st == FASA_OK; j++)
            if (steps[j].cache == c && steps[j].paged) {
                if (one)
                    memcpy(tmp + (steps[j].table_offset - lo), steps[j].table_host, (size_t)steps[j].table_n * 4);
                else
                    st = fasa__cl_upload_table(exec, c, steps[j].table_offset, steps[j].table_n, steps[j].table_host);
                done[j] = true;
            }
        if (one && st == FASA_OK) st = fasa__cl_upload_table(exec, c, lo, hi - lo, tmp);
    }
    return st;
}

/* Host scratch: n item indices, n done flags, the parameters of n items
 * and the block tables of every step (whichever is larger). */
static void *host_scratch(fasa_context *ctx, const fasa_step *steps, uint32_t n, size_t *words)
{
    uint64_t tab = 0;
    for (uint32_t i = 0; i < n; i++) tab += steps[i].table_n;
    uint64_t prm = (uint64_t)n * BP_WORDS;
    *words = (size_t)(tab > prm ? tab : prm);
    return fasa__alloc(ctx, ((size_t)n * 2 + *words) * sizeof(uint32_t));
}

fasa_status fasa__cl_record_batch(fasa_exec *exec, const fasa_step *steps, uint32_t n)
{
    fasa_context *ctx = steps[0].cache->ctx;
    size_t words = 0;
    uint32_t *idx = host_scratch(ctx, steps, n, &words);
    if (!idx) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory (batch)");
    bool *done = (bool *)(idx + n); /* n bools fit in n words */
    uint32_t *buf = idx + 2 * (size_t)n;
    memset(done, 0, n * sizeof *done);
    fasa_status st = upload_tables(exec, steps, n, buf, words, done);
    memset(done, 0, n * sizeof *done);
    for (uint32_t i = 0; i < n && st == FASA_OK; i++) {
        if (done[i]) continue;
        uint32_t k = fusable(&steps[i]) ? collect(steps, n, i, done, idx) : 0;
        bool fused = false;
        if (k > 1) st = record_group(exec, steps, idx, k, buf, &fused);
        if (st != FASA_OK) break;
        if (fused) continue;
        if (k == 0) idx[k++] = i; /* a step of its own */
        for (uint32_t j = 0; j < k && st == FASA_OK; j++) {
            done[idx[j]] = true;
            st = fasa__cl_step_kernels(exec, &steps[idx[j]]);
        }
    }
    fasa__free(ctx, idx);
    return st;
}
