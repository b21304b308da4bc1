/* Vulkan backend: batched decode (the record_batch op of src/backend.h).
 *
 * A batch's steps are grouped by cache and path.  A run of m > 1 steps of
 * one cache and path (one desc: one kind of grid) is recorded as ONE
 * dispatch per kernel stage with the item in grid z, by the batch variants
 * of the shaders (shaders/params.glsl).  The push constants hold a template
 * (the parameters of the run's longest item, built by the functions that
 * build a single step's, vk_push.h) and the strides between items; what
 * depends on an item's length (L, its dense splits, where its block table
 * is) comes from its 16-byte record.  Every item has a region of the
 * cache's batch scratch with the same layout (q, o, selection, partials,
 * top-k counters, histograms and row states, scores and candidates), sized
 * by the run's longest item, not by the pool's capacity; its score and
 * candidate arrays are one chunk each, with chunk tables in the batch's
 * table buffer; the run's block tables are uploaded again, packed from entry
 * 0 of cache->tables.  Each item computes with exactly the values of its
 * single step and writes the same o, bit for bit.  Grids are the longest
 * item's; workgroups past an item's own tokens, tiles or splits return.
 *
 * Steps are sorted by length, so a run holds items of similar lengths; a
 * run holds at most RUN_MAX_BYTES of scratch.  FASA-M caches (fetch state
 * per step), prefetch steps, a step alone on its cache and path, and one
 * whose region alone exceeds RUN_MAX_BYTES are recorded as single steps.
 *
 * One run in the command stream (sparse path):
 *   barrier(all) | block tables, chunk tables and records
 *   (vkCmdUpdateBuffer), clear each item's histograms and states, copy each
 *   q (one vkCmdCopyBuffer per source buffer) | barrier(all) | [convert q] |
 *   tip | top-k (9 dispatches) | fac | reduce | [convert o] | barrier(all) |
 *   copy each o
 * with a barrier between dependent dispatches, as in a single step; dense
 * runs: dense | reduce. */
#include "vk_push.h"

#include <stdlib.h>
#include <string.h>

#define RUN_MAX_BYTES (256ull << 20) /* batch scratch of one run, at most */
#define SC_SHIFT 31u                 /* one-chunk score arrays: row & (2^31 - 1) */

static const vk_buf *vkbuf(const fasa_buffer *b) { return b->impl; }

/* A run: m steps of one cache and path, ascending lengths. */
typedef struct run {
    fasa_kv_cache *c;
    bool dense;
    uint32_t m;
    const fasa_step **steps;
    fasa_step s0;                /* the template: the longest item, its block table at entry 0 */
    vk_attend_plan plan;         /* the template's (the largest grid) */
    vk_area a;                   /* item 0's region; item z's: z * item_words later */
    uint32_t item_words;
    uint32_t zero_words;         /* histograms and states at the start of each region */
    uint32_t sc_at, cand_at;     /* words into a region: scores, candidates */
} run;

/* ------------------------------------------------------------------------ */
/* Layout                                                                    */
/* ------------------------------------------------------------------------ */

static uint32_t tiles_of(uint32_t L) { return (L + VK_TOPK_TILE - 1) / VK_TOPK_TILE; }

/* The region of one item: sparse [hist | states | q | o | sel | partials |
 * tile counts | tile ties | scores | candidates], dense [q | o | partials];
 * the first zero_words are cleared at every run.  Returns its words (0
 * when it exceeds RUN_MAX_BYTES: the item is then recorded alone). */
static uint64_t layout_item(run *r)
{
    const fasa_kv_cache *c = r->c;
    uint64_t hq = c->shape.n_q_heads, d = c->shape.head_dim, at = 0;
    vk_area *a = &r->a;
    memset(a, 0, sizeof *a);
    a->maxs = r->plan.n_splits;
    if (!r->dense) {
        a->hist_off = (uint32_t)at, at += 4 * hq * 256;
        a->state_off = (uint32_t)at, at += hq * 8;
    }
    r->zero_words = (uint32_t)at;
    a->q_off = (uint32_t)at, at += hq * d;
    a->o_off = (uint32_t)at, at += hq * d;
    a->part_off = (uint32_t)at, at += hq * a->maxs * (d + 2);
    if (!r->dense) {
        uint32_t nt = tiles_of(r->s0.L);
        a->sel_off = (uint32_t)at, at += hq * c->max_n_fac;
        a->tcnt_off = (uint32_t)at, at += hq * nt;
        a->ttie_off = (uint32_t)at, at += hq * nt;
        a->n_tiles = nt;
        a->sc_stride = nt * VK_TOPK_TILE;
        a->sc_shift = SC_SHIFT;
        r->sc_at = (uint32_t)at, at += hq * a->sc_stride;
        r->cand_at = (uint32_t)at, at += hq * a->sc_stride;
    }
    at = (at + 3) & ~3ull; /* 16-byte regions */
    return at * 4 > RUN_MAX_BYTES ? 0 : at;
}

/* A run of steps[0..m), the longest last: its template and layout.
 * Returns its scratch bytes, or 0 when it does not fit RUN_MAX_BYTES. */
static uint64_t plan_run(fasa_exec *e, fasa_kv_cache *c, const fasa_step **steps, uint32_t m, bool dense, run *r)
{
    memset(r, 0, sizeof *r);
    r->c = c, r->dense = dense, r->m = m, r->steps = steps;
    r->s0 = *steps[m - 1];
    r->s0.table_offset = 0; /* the run's tables are packed from entry 0 */
    vk_area none = {0};
    fasa__vk_attend_push(e, &r->s0, &none, dense, &r->plan);
    uint64_t words = layout_item(r);
    r->item_words = (uint32_t)words;
    return words && words * 4 <= RUN_MAX_BYTES / m ? words * 4 * m : 0;
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

/* Keeps an outgrown buffer until cache destroy: a host's command buffer
 * recorded earlier may still read it. */
static fasa_status retire(fasa_context *ctx, vk_batch *b, vk_buf *old)
{
    vk_buf *r = fasa__alloc(ctx, (b->n_retired + 1) * sizeof *r);
    if (!r) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    if (b->n_retired) memcpy(r, b->retired, b->n_retired * sizeof *r);
    r[b->n_retired++] = *old;
    fasa__free(ctx, b->retired);
    b->retired = r;
    return FASA_OK;
}

/* Grows buf to hold need bytes (doubling, up to cap).  The old buffer goes
 * at once unless a run recorded earlier may still read it: one of this
 * batch (b->used), or any in an embedding host's command buffers (a
 * standalone stream waits for every earlier one). */
static fasa_status ensure(fasa_exec *e, fasa_kv_cache *c, vk_buf *buf, uint64_t need, uint64_t cap, const char *what)
{
    if (buf->buffer && buf->size >= need) return FASA_OK;
    vk_batch *b = &((vk_cache *)c->impl)->batch;
    uint64_t size = buf->size * 2 > need ? buf->size * 2 : need;
    if (size > cap) size = need > cap ? need : cap;
    vk_buf nb;
    fasa_status st = fasa__vk_buf_create(e->vk, size, false, what, &nb);
    if (st != FASA_OK) return st;
    if (buf->buffer && (e->embedded || b->used)) {
        st = retire(c->ctx, b, buf);
        if (st != FASA_OK) {
            fasa__vk_buf_destroy(e->vk, &nb);
            return st;
        }
    } else if (buf->buffer) {
        c->scratch_bytes -= buf->size;
        fasa__vk_buf_destroy(e->vk, buf);
    }
    *buf = nb;
    c->scratch_bytes += size;
    return FASA_OK;
}

void fasa__vk_batch_free(vk_context *vk, vk_batch *b)
{
    for (uint32_t i = 0; i < b->n_retired; i++) fasa__vk_buf_destroy(vk, &b->retired[i]);
    fasa__free(vk->ctx, b->retired);
    fasa__vk_buf_destroy(vk, &b->scratch);
    fasa__vk_buf_destroy(vk, &b->params);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------------ */
/* Recording                                                                 */
/* ------------------------------------------------------------------------ */

/* Byte offset in the batch scratch of word `off` of item z's region. */
static uint64_t item_at(const run *r, const vk_batch *b, uint32_t z, uint32_t off)
{
    return b->scratch.offset + ((uint64_t)z * r->item_words + off) * 4;
}

/* Each item's q into its region (in) or its o out of it: one
 * vkCmdCopyBuffer per distinct q (o) buffer, its items as the regions. */
static fasa_status copy_io(fasa_exec *e, const run *r, const vk_batch *b, bool in)
{
    fasa_context *ctx = r->c->ctx;
    uint64_t n = (uint64_t)r->c->shape.n_q_heads * r->c->shape.head_dim;
    fasa_io_type t = in ? r->s0.q_type : r->s0.o_type;
    /* 16-bit q arrives in the o area, o leaves from the q area (fasa__vk_convert_push) */
    uint32_t mine = (in == (t != FASA_IO_F32)) ? r->a.o_off : r->a.q_off;
    VkBufferCopy *reg = fasa__alloc(ctx, r->m * sizeof *reg);
    uint8_t *done = fasa__alloc(ctx, r->m);
    if (!reg || !done) {
        fasa__free(ctx, reg);
        fasa__free(ctx, done);
        return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    }
    for (uint32_t i = 0; i < r->m; i++) {
        if (done[i]) continue;
        const vk_buf *user = vkbuf(in ? r->steps[i]->q : r->steps[i]->o);
        uint32_t k = 0;
        for (uint32_t z = i; z < r->m; z++) {
            const fasa_step *s = r->steps[z];
            const vk_buf *u = vkbuf(in ? s->q : s->o);
            if (done[z] || u->buffer != user->buffer) continue;
            done[z] = 1;
            uint64_t theirs = u->offset + (in ? s->q_offset : s->o_offset), at = item_at(r, b, z, mine);
            uint64_t bytes = n * fasa__io_size(t);
            reg[k++] = in ? (VkBufferCopy){theirs, at, bytes} : (VkBufferCopy){at, theirs, bytes};
        }
        if (in) e->vk->fn.vkCmdCopyBuffer(e->cmd, user->buffer, b->scratch.buffer, k, reg);
        else e->vk->fn.vkCmdCopyBuffer(e->cmd, b->scratch.buffer, user->buffer, k, reg);
    }
    fasa__free(ctx, reg);
    fasa__free(ctx, done);
    return FASA_OK;
}

/* The score and candidate chunk tables (entry z: item z's array), then the
 * items' records {L, splits, chunks per split, block table entry}. */
static fasa_status upload_lists(fasa_exec *e, const run *r, const vk_batch *b)
{
    uint64_t *t = fasa__alloc(r->c->ctx, 32ull * r->m);
    if (!t) return fasa__error(r->c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    uint32_t *rec = (uint32_t *)(t + 2 * r->m), table = 0;
    for (uint32_t z = 0; z < r->m; z++) {
        const fasa_step *s = r->steps[z];
        t[z] = b->scratch.addr + ((uint64_t)z * r->item_words + r->sc_at) * 4;
        t[r->m + z] = b->scratch.addr + ((uint64_t)z * r->item_words + r->cand_at) * 4;
        vk_area none = {0};
        vk_attend_plan plan;
        push_attend p = fasa__vk_attend_push(e, s, &none, r->dense, &plan);
        rec[4 * z] = s->L, rec[4 * z + 1] = plan.n_splits, rec[4 * z + 2] = p.cps, rec[4 * z + 3] = table;
        table += s->table_n;
    }
    fasa__vk_update(e, &b->params, 0, t, 32ull * r->m);
    fasa__free(r->c->ctx, t);
    return FASA_OK;
}

/* Block tables (packed at entry 0), chunk tables, cleared counters and each
 * q, all in the command stream after the full barrier, which also orders
 * them after the earlier work that read these buffers (earlier runs and
 * steps read entries of cache->tables too), then the barrier to the kernels. */
static fasa_status record_inputs(fasa_exec *e, const run *r, const vk_batch *b)
{
    fasa__vk_cache_init_record(e, r->c);
    fasa__vk_barrier_all(e);
    uint64_t table = 0; /* as the records say (upload_lists) */
    for (uint32_t z = 0; r->s0.paged && z < r->m; table += r->steps[z++]->table_n)
        fasa__vk_update(e, vkbuf(r->c->tables), table * 4, r->steps[z]->table_host,
                        (VkDeviceSize)r->steps[z]->table_n * 4);
    fasa_status st = upload_lists(e, r, b);
    for (uint32_t z = 0; z < r->m && r->zero_words; z++)
        e->vk->fn.vkCmdFillBuffer(e->cmd, b->scratch.buffer, item_at(r, b, z, 0), (uint64_t)r->zero_words * 4, 0);
    if (st == FASA_OK) st = copy_io(e, r, b, true);
    fasa__vk_barrier_all(e);
    return st;
}

/* One dispatch for the run: item 0's parameters t, then the strides. */
static void dispatch(fasa_exec *e, const run *r, vk_kernel single, const void *t, uint32_t size, uint32_t gx,
                     uint32_t gy)
{
    uint8_t push[VK_PUSH_MAX];
    struct { uint32_t item_words, pad; uint64_t items; } batch = {r->item_words, 0, r->a.sc_tab + 16ull * r->m};
    memcpy(push, t, size);
    memcpy(push + size, &batch, sizeof batch); /* size is a multiple of 8 (vk_push.h) */
    fasa__vk_dispatch3(e, fasa__vk_batch_kernel(single), fasa__vk_dtype(r->c), push, size + sizeof batch, gx, gy,
                       r->m);
}

static void record_topk(fasa_exec *e, const run *r)
{
    const vk_topk_op *ops;
    uint32_t n = fasa__vk_topk_ops(&r->s0, &ops);
    fasa__vk_barrier(e); /* scores and histogram 0 from tip */
    for (uint32_t k = 0; k < n; k++) {
        if (ops[k].pass) {
            uint32_t tiles;
            push_pass p = fasa__vk_pass_push(&r->s0, &r->a, ops[k].mode, ops[k].cmp_shift, &tiles);
            dispatch(e, r, VK_K_TOPK_PASS, &p, sizeof p, tiles, r->s0.n_rows);
        } else {
            push_scan p = fasa__vk_scan_push(&r->s0, &r->a, ops[k].digit);
            dispatch(e, r, VK_K_TOPK_SCAN, &p, sizeof p, r->s0.n_rows, 1);
        }
        fasa__vk_barrier(e);
    }
}

/* The kernels of a single step (vk_kernels.c) with the run's grids. */
static void record_kernels(fasa_exec *e, const run *r)
{
    const fasa_step *s0 = &r->s0;
    const fasa_kv_cache *c = r->c;
    uint32_t conv_gx = (c->shape.n_q_heads * c->shape.head_dim / 2 + VK_WG_CONVERT - 1) / VK_WG_CONVERT;
    if (s0->q_type != FASA_IO_F32) {
        push_convert p = fasa__vk_convert_push(s0, &r->a, true);
        dispatch(e, r, VK_K_CONVERT, &p, sizeof p, conv_gx, 1);
        fasa__vk_barrier(e);
    }
    vk_attend_plan plan;
    push_attend pa = fasa__vk_attend_push(e, s0, &r->a, r->dense, &plan);
    if (!r->dense) {
        push_tip p = fasa__vk_tip_push(s0, &r->a);
        dispatch(e, r, fasa__vk_tip_kernel(s0), &p, sizeof p, (s0->L + VK_TIP_TOKENS - 1) / VK_TIP_TOKENS,
                 c->shape.n_kv_heads * p.n_batches);
        record_topk(e, r);
        fasa__vk_barrier(e); /* top-k -> fac */
    }
    dispatch(e, r, plan.kernel, &pa, sizeof pa, plan.n_splits, plan.gy);
    fasa__vk_barrier(e);
    push_reduce pr = fasa__vk_reduce_push(s0, &r->a, plan.n_splits);
    dispatch(e, r, VK_K_REDUCE, &pr, sizeof pr, c->shape.n_q_heads, 1);
    if (s0->o_type != FASA_IO_F32) {
        fasa__vk_barrier(e);
        push_convert p = fasa__vk_convert_push(s0, &r->a, false);
        dispatch(e, r, VK_K_CONVERT, &p, sizeof p, conv_gx, 1);
    }
    fasa__vk_barrier_all(e);
}

static fasa_status record_run(fasa_exec *e, run *r, vk_batch *b)
{
    r->a.scratch = b->scratch.addr;
    r->a.sc_tab = b->params.addr;
    r->a.cand_tab = b->params.addr + 8ull * r->m;
    b->used = true;
    fasa_status st = record_inputs(e, r, b);
    if (st != FASA_OK) return st;
    e->is_step = true;
    record_kernels(e, r);
    return copy_io(e, r, b, false);
}

/* ------------------------------------------------------------------------ */
/* Grouping                                                                  */
/* ------------------------------------------------------------------------ */

static fasa_status record_singly(fasa_exec *e, const fasa_step **steps, uint32_t m);

/* Cuts steps[0..m) (ascending lengths) into runs as long as RUN_MAX_BYTES
 * allows: starts[k] is run k's first step; *bytes and *max_m: the largest
 * run's scratch and items, for the buffers. */
static uint32_t cut_runs(fasa_exec *e, fasa_kv_cache *c, const fasa_step **steps, uint32_t m, bool dense,
                         uint32_t *starts, uint64_t *bytes, uint32_t *max_m)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < m;) {
        uint32_t j = i + 1;
        run r;
        uint64_t fit = 0, next;
        while (j < m && (next = plan_run(e, c, steps + i, j + 1 - i, dense, &r)) != 0) fit = next, j++;
        starts[n++] = i;
        if (j - i > 1 && fit > *bytes) *bytes = fit;
        if (j - i > 1 && j - i > *max_m) *max_m = j - i;
        i = j;
    }
    starts[n] = m;
    return n;
}

/* The steps of one cache and path, ascending lengths: runs of one dispatch
 * per stage, a run of one step as a single step. */
static fasa_status record_path(fasa_exec *e, fasa_kv_cache *c, const fasa_step **steps, uint32_t m, bool dense)
{
    fasa_context *ctx = c->ctx;
    uint32_t *starts = fasa__alloc(ctx, (m + 1) * sizeof *starts);
    if (!starts) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    uint64_t bytes = 0;
    uint32_t max_m = 0, n_runs = cut_runs(e, c, steps, m, dense, starts, &bytes, &max_m);
    vk_cache *vc = c->impl;
    fasa_status st = FASA_OK;
    if (max_m > 1) st = fasa__vk_pipelines_ensure(e->vk, fasa__vk_dtype(c), c->ext != NULL, true);
    if (max_m > 1 && st == FASA_OK) st = ensure(e, c, &vc->batch.scratch, bytes, RUN_MAX_BYTES, "the batch scratch");
    if (max_m > 1 && st == FASA_OK) st = ensure(e, c, &vc->batch.params, 32ull * max_m, UINT64_MAX, "the batch lists");
    bool fused = st == FASA_OK; /* else (out of memory, budget) the steps one by one: they need no more */
    if (!fused) fasa__log(ctx, FASA_LOG_WARN, "vulkan: batch buffers unavailable (%s); recording %u steps singly",
                          ctx->last_error, m);
    st = FASA_OK;
    for (uint32_t k = 0; k < n_runs && st == FASA_OK; k++) {
        uint32_t n = starts[k + 1] - starts[k];
        run r;
        if (fused && n > 1 && plan_run(e, c, steps + starts[k], n, dense, &r)) st = record_run(e, &r, &vc->batch);
        else st = record_singly(e, steps + starts[k], n);
    }
    fasa__free(ctx, starts);
    return st;
}

static int cmp_L(const void *a, const void *b)
{
    const fasa_step *x = *(const fasa_step *const *)a, *y = *(const fasa_step *const *)b;
    if (x->L != y->L) return x->L < y->L ? -1 : 1;
    return x < y ? -1 : x > y; /* item order within one length */
}

static fasa_status record_singly(fasa_exec *e, const fasa_step **steps, uint32_t m)
{
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; i < m && st == FASA_OK; i++) st = fasa__step_record(e, steps[i]);
    return st;
}

/* The steps of one cache, sorted by length (the dense ones, L <= n_fac,
 * come first), by path; FASA-M caches and prefetch steps one by one. */
static fasa_status record_cache(fasa_exec *e, fasa_kv_cache *c, const fasa_step **list, uint32_t m)
{
    vk_cache *vc = c->impl;
    if (vc->fm || list[0]->prefetch) return record_singly(e, list, m);
    vc->batch.used = false; /* its steps are all recorded here, earlier batches are done (or embedded) */
    qsort(list, m, sizeof *list, cmp_L);
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; i < m && st == FASA_OK;) {
        uint32_t j = i + 1;
        while (j < m && list[j]->path == list[i]->path) j++;
        st = record_path(e, c, list + i, j - i, list[i]->path == FASA_PATH_DENSE);
        i = j;
    }
    return st;
}

/* Items may be recorded out of order: a batch's o never overlaps another
 * item's q or o (src/decode.c), so no item sees another's results. */
fasa_status fasa__vk_record_batch(fasa_exec *e, const fasa_step *steps, uint32_t n)
{
    fasa_context *ctx = steps[0].cache->ctx;
    const fasa_step **list = fasa__alloc(ctx, n * sizeof *list);
    uint8_t *done = fasa__alloc(ctx, n);
    fasa_status st = list && done ? FASA_OK : fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    for (uint32_t i = 0; i < n && st == FASA_OK; i++) {
        if (done[i]) continue;
        uint32_t m = 0;
        for (uint32_t j = i; j < n; j++)
            if (!done[j] && steps[j].cache == steps[i].cache) list[m++] = &steps[j], done[j] = 1;
        st = record_cache(e, steps[i].cache, list, m);
    }
    fasa__free(ctx, list);
    fasa__free(ctx, done);
    return st;
}
