/* CUDA kernel dispatch: append, tip, topk, fac, dense (fetch, the FASA-M
 * step fac records first, is in cuda_fetch.c).  Fills the launch
 * layer's argument structs (cuda_ref/fasa_cuda_launch.h) from the cache
 * and the resolved step and maps launch errors to statuses.  What each
 * kernel computes is stated by the CPU backend (src/cpu/cpu_kernels.c). */
#include "cuda_internal.h"

static const cuda_cache *storage(const fasa_kv_cache *c) { return c->impl; }

static fasa_status launched(fasa_exec *exec, cudaError_t err, const char *what)
{
    return err == cudaSuccess ? FASA_OK : fasa__cuda_fail(exec->ctx, err, what);
}

/* Device address of a byte offset into a buffer. */
static void *at(const fasa_buffer *b, uint64_t offset) { return (char *)b->impl + offset; }

/* Blocks a split-K launch aims for: several per SM, so that enough loads
 * are in flight to stream K and V at memory speed. */
static uint32_t target_blocks(const fasa_exec *exec)
{
    const cuda_ctx *cc = exec->ctx->impl;
    return 8 * cc->sm_count;
}

fasa_status fasa__cuda_append(fasa_exec *exec, fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n,
                              fasa_buffer *k, uint64_t k_offset, fasa_buffer *v, uint64_t v_offset,
                              fasa_dtype src_dtype)
{
    const cuda_cache *cu = storage(c);
    const cuda_layer *lay = &cu->layers[layer];
    size_t gi = (size_t)layer * c->shape.n_kv_heads;
    fasa_cu_append_args a = {
        .k = at(k, k_offset),
        .v = at(v, v_offset),
        .src_dtype = (int)src_dtype,
        .k_dst = lay->k,
        .v_dst = lay->v,
        .kdom = c->has_dims ? lay->kdom : NULL,
        .udims = c->has_dims ? cu->udims + gi * c->u_pad : NULL,
        .usize = c->has_dims ? cu->usize + gi : NULL,
        .dst_dtype = (int)c->dtype,
        .first = first,
        .n = n,
        .n_kv_heads = c->shape.n_kv_heads,
        .head_dim = c->shape.head_dim,
        .cap = c->capacity,
        .u_pad = c->u_pad,
    };
    return launched(exec, FASA_CUDA_LAUNCH(exec->ctx, fasa_cu_append(&a, exec->stream)), "append kernel launch");
}

/* K/V strides of a layer: the engine's (external caches) or those of
 * libfasa's arrays [Hkv][capacity][d]. */
static uint64_t kv_ts(const fasa_kv_cache *c) { return c->ext ? c->ext->token_stride : c->shape.head_dim; }
static uint64_t kv_hs(const fasa_kv_cache *c)
{
    return c->ext ? c->ext->head_stride : (uint64_t)c->capacity * c->shape.head_dim;
}

fasa_status fasa__cuda_sync(fasa_exec *exec, fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n)
{
    const cuda_cache *cu = storage(c);
    const cuda_layer *lay = &cu->layers[layer];
    size_t gi = (size_t)layer * c->shape.n_kv_heads;
    fasa_cu_sync_args a = {
        .k = lay->k,
        .ts = kv_ts(c),
        .hs = kv_hs(c),
        .kdom = lay->kdom,
        .udims = cu->udims + gi * c->u_pad,
        .usize = cu->usize + gi,
        .dtype = (int)c->dtype,
        .first = first,
        .n = n,
        .n_kv_heads = c->shape.n_kv_heads,
        .cap = c->capacity,
        .u_pad = c->u_pad,
    };
    return launched(exec, FASA_CUDA_LAUNCH(exec->ctx, fasa_cu_sync(&a, exec->stream)), "sync kernel launch");
}

/* Paged caches: the step's block table in cache->tables (uploaded by
 * fasa__cuda_upload_table before its kernels), or NULL: token j is row j. */
static const uint32_t *step_table(const fasa_step *s)
{
    return s->paged ? (const uint32_t *)s->cache->tables->impl + s->table_offset : NULL;
}

/* n block-table entries from the caller's (pageable) host memory, ordered
 * on the stream before the step's kernels; cudaMemcpyAsync from pageable
 * memory returns once it has staged the entries, so src may be reused. */
fasa_status fasa__cuda_upload_table(fasa_exec *exec, fasa_kv_cache *c, uint32_t first, uint32_t n,
                                    const uint32_t *src)
{
    if (n == 0) return FASA_OK;
    uint32_t *dst = (uint32_t *)c->tables->impl + first;
    cudaError_t err = cudaMemcpyAsync(dst, src, (size_t)n * 4, cudaMemcpyHostToDevice, exec->stream);
    return launched(exec, err, "cudaMemcpyAsync (block table)");
}

/* q as fp32: the caller's buffer, or (16-bit io types) its copy widened
 * into the scratch by the first kernel of the step (widen_q in tip or dense). */
static const float *step_q(const fasa_step *s)
{
    return s->q_type == FASA_IO_F32 ? at(s->q, s->q_offset) : storage(s->cache)->qf;
}

static fasa_status widen_q(fasa_exec *exec, const fasa_step *s)
{
    if (s->q_type == FASA_IO_F32) return FASA_OK;
    const fasa_kv_cache *c = s->cache;
    uint32_t n = c->shape.n_q_heads * c->shape.head_dim;
    return launched(exec,
                    FASA_CUDA_LAUNCH(exec->ctx, fasa_cu_widen(at(s->q, s->q_offset), (int)fasa__io_dtype(s->q_type), n,
                                                              storage(c)->qf, exec->stream)),
                    "q widen kernel launch");
}

fasa_status fasa__cuda_tip(fasa_exec *exec, const fasa_step *s)
{
    const fasa_kv_cache *c = s->cache;
    fasa_status wst = widen_q(exec, s);
    if (wst != FASA_OK) return wst;
    const cuda_cache *cu = storage(c);
    const cuda_layer *lay = &cu->layers[s->layer];
    fasa_cu_tip_args a = {
        .rows = s->oracle ? lay->k : lay->kdom,
        .ts = s->oracle ? kv_ts(c) : c->u_pad,
        .hs = s->oracle ? kv_hs(c) : (uint64_t)c->capacity * c->u_pad,
        .dtype = (int)c->dtype,
        .width = s->oracle ? c->shape.head_dim : c->u_pad,
        .L = s->L,
        .n_kv_heads = c->shape.n_kv_heads,
        .group = c->group,
        .head_dim = c->shape.head_dim,
        .q = step_q(s),
        .tip_map = s->oracle ? NULL : cu->tip_map + (size_t)s->layer * c->shape.n_q_heads * c->u_pad,
        .u_pad = c->u_pad,
        .per_group = s->select == FASA_GQA_PER_GROUP,
        .scores = cu->scores,
        .score_stride = c->capacity,
        .table = step_table(s),
        .block_shift = s->block_shift,
    };
    return launched(exec, FASA_CUDA_LAUNCH(exec->ctx, fasa_cu_tip(&a, exec->stream)), "tip kernel launch");
}

fasa_status fasa__cuda_topk(fasa_exec *exec, const fasa_step *s)
{
    const fasa_kv_cache *c = s->cache;
    const cuda_cache *cu = storage(c);
    fasa_cu_topk_args a = {
        .scores = cu->scores,
        .score_stride = c->capacity,
        .n_rows = s->n_rows,
        .L = s->L,
        .n_sink = s->n_sink,
        .n_recent = s->n_recent,
        .k = s->n_fac - s->n_sink - s->n_recent, /* L > n_fac >= forced on the sparse path */
        .sel = cu->sel,
        .sel_stride = c->max_n_fac,
        .state = cu->tk_state,
        .hist = cu->tk_hist,
        .tiles = cu->tk_tiles,
    };
    return launched(exec, FASA_CUDA_LAUNCH(exec->ctx, fasa_cu_topk(&a, exec->stream)), "top-k kernel launch");
}

/* Split-K attention over n tokens per unit, then the reduce into o: K and
 * V rows (g, t) at t * ts + g * hs of k/v (the layer's storage, FASA-M
 * slots, or the engine's K and V). */
static fasa_status attend(fasa_exec *exec, const fasa_step *s, const void *k, const void *v, uint64_t ts,
                          uint64_t hs, const int32_t *sel, uint32_t n_tokens)
{
    const fasa_kv_cache *c = s->cache;
    const cuda_cache *cu = storage(c);
    int per_group = s->select == FASA_GQA_PER_GROUP;
    int per_head_rows = sel && !per_group;
    uint32_t units = fasa_cu_units(per_head_rows, c->shape.n_q_heads, c->shape.n_kv_heads, c->group);
    /* FAC lists are short: split finely; dense splits are at least a tile */
    uint32_t min_len = sel ? 32u : FASA_CU_ATT_THREADS;
    fasa_cu_attend_args a = {
        .k = k,
        .v = v,
        .ts = ts,
        .hs = hs,
        .dtype = (int)c->dtype,
        .head_dim = c->shape.head_dim,
        .group = c->group,
        .n_q_heads = c->shape.n_q_heads,
        .n_kv_heads = c->shape.n_kv_heads,
        .q = step_q(s),
        .sel = sel,
        .sel_stride = c->max_n_fac,
        .per_group = per_group,
        .n_tokens = n_tokens,
        .split = fasa_cu_plan_split(n_tokens, units, target_blocks(exec), cu->pmax, min_len),
        .scale = s->scale,
        .part = cu->part,
        .pmax = cu->pmax,
        .table = step_table(s),
        .block_shift = s->block_shift,
    };
    fasa_status st = launched(exec, FASA_CUDA_LAUNCH(exec->ctx, fasa_cu_attend(&a, exec->stream)),
                              sel ? "fac kernel launch" : "dense kernel launch");
    if (st != FASA_OK) return st;
    fasa_cu_reduce_args r = {
        .part = cu->part,
        .pmax = cu->pmax,
        .n_parts = a.split.n_splits,
        .n_q_heads = c->shape.n_q_heads,
        .head_dim = c->shape.head_dim,
        .o = at(s->o, s->o_offset),
        .o_type = (int)s->o_type,
    };
    return launched(exec, FASA_CUDA_LAUNCH(exec->ctx, fasa_cu_reduce(&r, exec->stream)), "reduce kernel launch");
}

fasa_status fasa__cuda_fac(fasa_exec *exec, const fasa_step *s)
{
    const fasa_kv_cache *c = s->cache;
    const cuda_layer *lay = &storage(c)->layers[s->layer];
    const void *k = lay->k, *v = lay->v;
    uint32_t cap = c->capacity;
    const int32_t *sel = storage(c)->sel;
    /* FASA-M: counts, and with STAGED the rows gathered into device slots */
    if (c->placement == FASA_PLACEMENT_OFFLOAD) {
        fasa_status st = fasa__cuda_fetch(exec, s, &k, &v, &cap, &sel);
        if (st != FASA_OK || s->prefetch) return st; /* a prefetch places rows, no attention */
        return attend(exec, s, k, v, c->shape.head_dim, (uint64_t)cap * c->shape.head_dim, sel, s->n_fac);
    }
    return attend(exec, s, k, v, kv_ts(c), kv_hs(c), sel, s->n_fac);
}

fasa_status fasa__cuda_dense(fasa_exec *exec, const fasa_step *s)
{
    const cuda_layer *lay = &storage(s->cache)->layers[s->layer];
    fasa_status st = widen_q(exec, s);
    if (st != FASA_OK) return st;
    return attend(exec, s, lay->k, lay->v, kv_ts(s->cache), kv_hs(s->cache), NULL, s->L);
}
