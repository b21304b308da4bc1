/* The decode step shared by every backend: validation, path choice
 * (docs/SPEC.md §2) and the order of the kernels. */
#include "backend.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_N_FAC 256u

/* Bytes of a q or o row block [Hq][d] of element type t. */
static uint64_t io_bytes(const fasa_kv_cache *c, fasa_io_type t)
{
    return (uint64_t)c->shape.n_q_heads * c->shape.head_dim * fasa__io_size(t);
}

static fasa_status check_io(fasa_kv_cache *c, fasa_buffer *buf, uint64_t off, fasa_io_type type, const char *name)
{
    fasa_context *ctx = c->ctx;
    uint64_t bytes = io_bytes(c, type);
    if (!buf) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_decode: %s is NULL", name);
    if (buf->ctx != ctx)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_decode: %s belongs to another context", name);
    if (off % 4 != 0)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_decode: %s_offset %llu is not a multiple of 4",
                           name, (unsigned long long)off);
    if (off > buf->size || bytes > buf->size - off)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "fasa_decode: %s needs %llu bytes at offset %llu but its buffer has %llu",
                           name, (unsigned long long)bytes, (unsigned long long)off,
                           (unsigned long long)buf->size);
    return FASA_OK;
}

static fasa_status check_desc(fasa_kv_cache *c, const fasa_decode_desc *d, uint32_t n_fac)
{
    fasa_context *ctx = c->ctx;
    fasa_status st = fasa__check_chain(ctx, d->next, "desc.next", "fasa_decode_desc");
    if (st != FASA_OK) return st;
    if ((unsigned)d->mode > FASA_MODE_ORACLE)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.mode: unknown value %d", (int)d->mode);
    if ((unsigned)d->gqa_select > FASA_GQA_PER_GROUP)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.gqa_select: unknown value %d",
                           (int)d->gqa_select);
    if (!fasa__io_type_valid(d->q_type))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.q_type: unknown value %d (FASA_IO_F32, _F16 or _BF16)", (int)d->q_type);
    if (!fasa__io_type_valid(d->o_type))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.o_type: unknown value %d (FASA_IO_F32, _F16 or _BF16)", (int)d->o_type);
    if (n_fac > c->max_n_fac)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.n_fac: %u is more than the cache's max_n_fac (%u)", n_fac, c->max_n_fac);
    if ((uint64_t)d->n_sink + d->n_recent > n_fac)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.n_sink + desc.n_recent (%u + %u) exceeds desc.n_fac (%u): forced "
                           "tokens must fit in the budget", d->n_sink, d->n_recent, n_fac);
    if (d->flags & ~FASA_DECODE_PREFETCH)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.flags: unknown bits 0x%x",
                           d->flags & ~FASA_DECODE_PREFETCH);
    if ((d->flags & FASA_DECODE_PREFETCH) &&
        (c->placement != FASA_PLACEMENT_OFFLOAD || c->fetch != FASA_FETCH_STAGED || !c->row_cache_rows))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.flags: FASA_DECODE_PREFETCH needs a cache with a row cache (placement "
                           "OFFLOAD, fetch STAGED, row_cache_rows > 0)");
    if (d->mode == FASA_MODE_FASA && !c->has_dims)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.mode: FASA needs a cache created with a calibration "
                           "(fasa_kv_cache_desc.calibration)");
    return FASA_OK;
}

static bool ranges_overlap(uint64_t a, uint64_t na, uint64_t b, uint64_t nb) { return a < b + nb && b < a + na; }

/* The sequence of a paged cache: present exactly when the cache is paged,
 * a length, a table long enough and every used entry inside the pool.
 * name is "desc.sequence" or "items[i].sequence". */
static fasa_status check_sequence(fasa_kv_cache *c, const fasa_sequence *seq, const char *name)
{
    fasa_context *ctx = c->ctx;
    bool paged = c->ext && c->ext->paged;
    if (!paged && seq)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s: only caches over a paged or shared external pool (fasa_kv_external.block_size > 0) "
                           "take a sequence; this cache holds one sequence", name);
    if (!paged) return FASA_OK;
    if (!seq)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s is NULL: a paged or shared cache (block_size %u) needs the sequence's length and "
                           "block table", name, 1u << c->ext->block_shift);
    uint32_t shift = c->ext->block_shift, n_pool = c->capacity >> shift;
    if (seq->length == 0) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s->length is 0", name);
    if (seq->length > c->capacity) /* possible with repeated blocks; the scratch holds capacity tokens */
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s->length: %u tokens exceed the cache's capacity (%u)",
                           name, seq->length, c->capacity);
    uint32_t used = (uint32_t)(((uint64_t)seq->length + (1u << shift) - 1) >> shift);
    if (seq->n_blocks < used)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s->n_blocks: %u entries cannot hold %u tokens in blocks of %u (%u needed)", name,
                           seq->n_blocks, seq->length, 1u << shift, used);
    if (!seq->block_table) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s->block_table is NULL", name);
    for (uint32_t i = 0; i < used; i++)
        if (seq->block_table[i] >= n_pool)
            return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                               "%s->block_table[%u]: block %u is outside the pool (%u blocks of %u rows)", name, i,
                               seq->block_table[i], n_pool, 1u << shift);
    return FASA_OK;
}

/* Resolves one step for the sequence seq (paged caches) or the cache's own
 * tokens; desc.sequence is ignored here (the callers pass it as seq). */
static fasa_status resolve(fasa_kv_cache *c, uint32_t layer, const fasa_decode_desc *desc,
                           const fasa_sequence *seq, const char *seq_name, fasa_buffer *q, uint64_t q_off,
                           fasa_buffer *o, uint64_t o_off, fasa_step *step)
{
    fasa_context *ctx = c->ctx;
    fasa_decode_desc d = {0};
    if (desc) d = *desc;
    uint32_t n_fac = d.n_fac ? d.n_fac : DEFAULT_N_FAC;
    if (layer >= c->shape.n_layers)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_decode: layer %u out of range (n_layers %u)",
                           layer, c->shape.n_layers);
    fasa_status st = check_desc(c, &d, n_fac);
    bool prefetch = (d.flags & FASA_DECODE_PREFETCH) != 0;
    if (st == FASA_OK) st = check_sequence(c, seq, seq_name);
    if (st == FASA_OK) st = check_io(c, q, q_off, d.q_type, "q");
    if (st == FASA_OK && !prefetch) st = check_io(c, o, o_off, d.o_type, "o");
    if (st != FASA_OK) return st;
    if (!prefetch && q == o && ranges_overlap(q_off, io_bytes(c, d.q_type), o_off, io_bytes(c, d.o_type)))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_decode: q and o overlap");
    uint32_t L = seq ? seq->length : c->length[layer];
    if (L == 0)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "fasa_decode: layer %u holds no tokens (append the current k/v first)", layer);
    uint32_t table_first = 0, table_n = 0;
    if (seq) {
        table_n = (uint32_t)(((uint64_t)L + (1u << c->ext->block_shift) - 1) >> c->ext->block_shift);
        st = fasa__tables_reserve(c, table_n, &table_first);
        if (st != FASA_OK) return st;
    }

    memset(step, 0, sizeof *step);
    step->paged = seq != NULL;
    step->block_shift = seq ? c->ext->block_shift : 0;
    step->table_offset = table_first;
    step->table_n = table_n;
    step->table_host = seq ? seq->block_table : NULL;
    step->cache = c;
    step->layer = layer;
    step->L = L;
    step->scale = 1.0f / sqrtf((float)c->shape.head_dim);
    step->q = q;
    step->q_offset = q_off;
    step->o = o;
    step->o_offset = o_off;
    step->q_type = d.q_type;
    step->o_type = d.o_type;
    step->select = d.gqa_select;
    step->n_rows = d.gqa_select == FASA_GQA_PER_GROUP ? c->shape.n_kv_heads : c->shape.n_q_heads;
    bool dense = d.mode == FASA_MODE_DENSE || c->dense_layer[layer] || L <= n_fac;
    uint64_t rows_per_group = (uint64_t)(d.gqa_select == FASA_GQA_PER_GROUP ? 1 : c->group) * n_fac;
    if (!dense && c->row_cache_rows && c->row_cache_rows < rows_per_group && c->row_cache_rows < L)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "fasa_decode: the cache's row_cache_rows (%u) cannot hold the %llu rows one step may "
                           "need per KV head (n_fac %u x %u selection rows)", c->row_cache_rows,
                           (unsigned long long)rows_per_group, n_fac,
                           d.gqa_select == FASA_GQA_PER_GROUP ? 1u : c->group);
    step->path = dense ? FASA_PATH_DENSE : FASA_PATH_SPARSE;
    step->oracle = d.mode == FASA_MODE_ORACLE;
    step->prefetch = prefetch;
    if (prefetch) step->o = NULL; /* never written */
    step->n_fac = n_fac;
    step->n_sink = d.n_sink;
    step->n_recent = d.n_recent; /* L > n_fac >= n_sink + n_recent on the sparse path */
    return FASA_OK;
}

fasa_status fasa__step_resolve(fasa_kv_cache *c, uint32_t layer, const fasa_decode_desc *desc,
                               fasa_buffer *q, uint64_t q_off, fasa_buffer *o, uint64_t o_off,
                               fasa_step *step)
{
    fasa__tables_reset(c);
    return resolve(c, layer, desc, desc ? desc->sequence : NULL, "desc.sequence", q, q_off, o, o_off, step);
}

fasa_status fasa__step_record(fasa_exec *exec, const fasa_step *step)
{
    const fasa_backend_ops *ops = step->cache->ctx->ops;
    fasa_status st = FASA_OK;
    if (step->paged && !(step->path == FASA_PATH_DENSE && step->prefetch))
        st = ops->upload_table(exec, step->cache, step->table_offset, step->table_n, step->table_host);
    if (st != FASA_OK) return st;
    if (step->path == FASA_PATH_DENSE) return step->prefetch ? FASA_OK : ops->dense(exec, step);
    /* a prefetch step: fac fetches the rows and returns before attending */
    st = ops->tip(exec, step);
    if (st == FASA_OK) st = ops->topk(exec, step);
    if (st == FASA_OK) st = ops->fac(exec, step);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Batched decode                                                            */
/* ------------------------------------------------------------------------ */

/* Item i's o must not overlap another item's q or o: the items run one
 * after another, so such an overlap would make the results depend on the
 * order (single calls could not reproduce them). */
static fasa_status check_batch_overlaps(fasa_context *ctx, const fasa_step *steps, uint32_t n, const char *fn)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!steps[i].o) continue;
        uint64_t ob = io_bytes(steps[i].cache, steps[i].o_type);
        for (uint32_t j = 0; j < n; j++) {
            if (j == i) continue;
            const fasa_step *s = &steps[j];
            if (s->q == steps[i].o && ranges_overlap(steps[i].o_offset, ob, s->q_offset, io_bytes(s->cache, s->q_type)))
                return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: items[%u].o overlaps items[%u].q", fn, i, j);
            if (j > i && s->o == steps[i].o && ranges_overlap(steps[i].o_offset, ob, s->o_offset, io_bytes(s->cache, s->o_type)))
                return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: items[%u].o overlaps items[%u].o", fn, i, j);
        }
    }
    return FASA_OK;
}

fasa_status fasa__batch_resolve(fasa_context *ctx, uint32_t layer, const fasa_decode_desc *desc, uint32_t n,
                                const fasa_decode_item *items, fasa_step *steps, const char *fn)
{
    if (desc && desc->sequence)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.sequence: %s takes each item's sequence in items[i].sequence; desc.sequence must be "
                           "NULL", fn);
    for (uint32_t i = 0; i < n; i++) {
        fasa_kv_cache *c = items[i].cache;
        if (!c) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: items[%u].cache is NULL", fn, i);
        if (c->ctx != ctx)
            return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: items[%u].cache belongs to another context", fn,
                               i);
        fasa__tables_reset(c);
    }
    for (uint32_t i = 0; i < n; i++) {
        const fasa_decode_item *it = &items[i];
        char seq_name[48];
        snprintf(seq_name, sizeof seq_name, "items[%u].sequence", i);
        fasa_status st = resolve(it->cache, layer, desc, it->sequence, seq_name, it->q, it->q_offset, it->o,
                                 it->o_offset, &steps[i]);
        if (st != FASA_OK) {
            /* prefix the item to the message resolve set */
            char msg[FASA_ERROR_MAX];
            snprintf(msg, sizeof msg, "%s", ctx->last_error);
            if (strncmp(msg, "items[", 6) == 0) return st;
            return fasa__error(ctx, st, "%s: items[%u]: %s", fn, i, msg);
        }
    }
    return check_batch_overlaps(ctx, steps, n, fn);
}

fasa_status fasa__batch_record(fasa_exec *exec, const fasa_step *steps, uint32_t n)
{
    const fasa_backend_ops *ops = steps[0].cache->ctx->ops;
    if (ops->record_batch && n > 1) return ops->record_batch(exec, steps, n);
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; i < n && st == FASA_OK; i++) st = fasa__step_record(exec, &steps[i]);
    return st;
}

static fasa_status check_batch_args(fasa_context *ctx, uint32_t n, const fasa_decode_item *items, const char *fn)
{
    if (n == 0) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: n is 0", fn);
    if (n > FASA_MAX_BATCH)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: n (%u) is more than %u items", fn, n,
                           FASA_MAX_BATCH);
    if (!items) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: items is NULL", fn);
    return FASA_OK;
}

/* Validates, resolves and records a whole batch on the context's exec;
 * `wait` as in run_step. */
static fasa_status run_batch(fasa_context *ctx, uint32_t layer, const fasa_decode_desc *desc, uint32_t n,
                             const fasa_decode_item *items, bool wait, const char *fn)
{
    fasa_status st = check_batch_args(ctx, n, items, fn);
    if (st != FASA_OK) return st;
    fasa_step *steps = fasa__alloc(ctx, (size_t)n * sizeof *steps);
    if (!steps) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    st = fasa__batch_resolve(ctx, layer, desc, n, items, steps, fn);
    fasa_exec *exec = NULL;
    if (st == FASA_OK) st = ctx->ops->exec_begin(ctx, &exec);
    if (st == FASA_OK) {
        st = fasa__batch_record(exec, steps, n);
        fasa_status end = ctx->ops->exec_end(ctx, exec, wait);
        if (st == FASA_OK) st = end;
    }
    fasa__free(ctx, steps);
    return st;
}

fasa_status fasa_decode_batch(fasa_context *ctx, uint32_t layer, const fasa_decode_desc *desc, uint32_t n,
                              const fasa_decode_item *items)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st = run_batch(ctx, layer, desc, n, items, true, "fasa_decode_batch");
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa__enqueue_decode_batch(fasa_backend backend, const char *fn, fasa_context *ctx, uint32_t layer,
                                       const fasa_decode_desc *desc, uint32_t n, const fasa_decode_item *items)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st = fasa__need_backend(ctx, backend, fn);
    if (st == FASA_OK) st = run_batch(ctx, layer, desc, n, items, false, fn);
    fasa__unlock(ctx);
    return st;
}

/* Records a resolved step on the context's exec; `wait`: finish it before
 * returning (every call but the enqueue-only ones). */
static fasa_status run_step(const fasa_step *step, bool wait)
{
    fasa_context *ctx = step->cache->ctx;
    fasa_exec *exec = NULL;
    fasa_status st = ctx->ops->exec_begin(ctx, &exec);
    if (st != FASA_OK) return st;
    st = fasa__step_record(exec, step);
    fasa_status end = ctx->ops->exec_end(ctx, exec, wait);
    return st != FASA_OK ? st : end;
}

fasa_status fasa_decode(fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *desc,
                        fasa_buffer *q, uint64_t q_offset, fasa_buffer *o, uint64_t o_offset)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    fasa_step step;
    fasa_status st = fasa__step_resolve(cache, layer, desc, q, q_offset, o, o_offset, &step);
    if (st == FASA_OK) st = run_step(&step, true);
    fasa__unlock(cache->ctx);
    return st;
}

fasa_status fasa__enqueue_decode(fasa_backend backend, const char *fn, fasa_kv_cache *cache, uint32_t layer,
                                 const fasa_decode_desc *desc, fasa_buffer *q, uint64_t q_offset,
                                 fasa_buffer *o, uint64_t o_offset)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    fasa_step step;
    fasa_status st = fasa__need_backend(cache->ctx, backend, fn);
    if (st == FASA_OK) st = fasa__step_resolve(cache, layer, desc, q, q_offset, o, o_offset, &step);
    if (st == FASA_OK) st = run_step(&step, false);
    fasa__unlock(cache->ctx);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Host-pointer convenience                                                  */
/* ------------------------------------------------------------------------ */

static fasa_status check_host_args(fasa_kv_cache *c, uint32_t layer, const float *q, float *o,
                                   const fasa_decode_outputs *out, const fasa_decode_desc *desc)
{
    fasa_context *ctx = c->ctx;
    if (!q) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_decode_host: q is NULL");
    bool prefetch = desc && (desc->flags & FASA_DECODE_PREFETCH);
    if (!o && !prefetch) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_decode_host: o is NULL");
    if (desc && (desc->q_type != FASA_IO_F32 || desc->o_type != FASA_IO_F32))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.%s: fasa_decode_host takes fp32 q and o (float arrays); 16-bit q and o go through "
                           "fasa_decode with buffers", desc->q_type != FASA_IO_F32 ? "q_type" : "o_type");
    size_t n = (size_t)c->shape.n_q_heads * c->shape.head_dim;
    if (o && (q == o || ((const float *)o < q + n && q < (const float *)o + n)))
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_decode_host: q and o overlap");
    for (size_t i = 0; i < n; i++)
        if (!isfinite(q[i]))
            return fasa__error(ctx, FASA_ERROR_NON_FINITE, "fasa_decode_host: q[head %zu][dim %zu] is %g",
                               i / c->shape.head_dim, i % c->shape.head_dim, (double)q[i]);
    if (!out || layer >= c->shape.n_layers) return FASA_OK;
    fasa_status st = fasa__check_chain(ctx, out->next, "outputs.next", "fasa_decode_outputs");
    if (st != FASA_OK) return st;
    uint32_t n_fac = desc && desc->n_fac ? desc->n_fac : DEFAULT_N_FAC;
    if (out->selected && out->selected_stride < n_fac)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "outputs.selected_stride: %u is less than n_fac (%u)", out->selected_stride, n_fac);
    uint32_t L = desc && desc->sequence ? desc->sequence->length : c->length[layer];
    if (out->scores && out->scores_stride < L)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "outputs.scores_stride: %u is less than the %u tokens of layer %u's %s", out->scores_stride,
                           L, layer, desc && desc->sequence ? "sequence" : "cache");
    return FASA_OK;
}

static fasa_status host_step(fasa_kv_cache *c, uint32_t layer, const fasa_decode_desc *desc,
                             const float *q, float *o, fasa_decode_outputs *out)
{
    fasa_context *ctx = c->ctx;
    fasa_step step;
    uint64_t bytes = (uint64_t)c->shape.n_q_heads * c->shape.head_dim * 4;
    fasa_status st = fasa__step_resolve(c, layer, desc, c->q_stage, 0, c->o_stage, 0, &step);
    if (st == FASA_OK) st = ctx->ops->buffer_write(ctx, c->q_stage, 0, q, bytes);
    if (st == FASA_OK) st = run_step(&step, true);
    /* selection first, so o stays untouched if reading it back fails */
    bool sparse = step.path == FASA_PATH_SPARSE;
    if (st == FASA_OK && out && sparse && (out->selected || out->scores))
        st = ctx->ops->read_selection(c, &step, out->selected, out->selected_stride, out->scores,
                                      out->scores_stride);
    if (st == FASA_OK && !step.prefetch) st = ctx->ops->buffer_read(ctx, c->o_stage, 0, o, bytes);
    if (st == FASA_OK && out) {
        out->path = step.path;
        out->n_rows = sparse ? step.n_rows : 0;
        out->n_selected = sparse ? step.n_fac : step.L;
    }
    return st;
}

fasa_status fasa_decode_host(fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *desc,
                             const float *q, float *o, fasa_decode_outputs *outputs)
{
    if (!cache) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cache->ctx);
    fasa_status st = check_host_args(cache, layer, q, o, outputs, desc);
    if (st == FASA_OK) st = host_step(cache, layer, desc, q, o, outputs);
    fasa__unlock(cache->ctx);
    return st;
}
