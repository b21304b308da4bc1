/* CUDA FASA-M (placement OFFLOAD): the fetch step fac records after topk,
 * its device state, the truncate hook and the transfer counters.  The
 * kernels are cuda_ref/fetch.cu (phases in cuda_ref/fasa_cuda_fetch.h);
 * the design is the OpenCL backend's (src/opencl/cl_fetch.c):
 *
 * DIRECT: fac reads the K and V rows in place from mapped pinned host
 *   memory; fetch only counts the distinct rows each KV head needs.
 * STAGED: fetch also gives every needed row a device slot, copies the rows
 *   not already there and remaps the selection; fac then reads the slot
 *   arrays.  row_cache_rows R > 0: the slots of each (layer, KV head)
 *   persist across steps under the policy of src/rowcache.c; R = 0: one
 *   staging area of a step's rows, shared by the layers.
 *
 * Nothing is read back during decode: the counters stay on the device
 * until fasa_kv_cache_transfer_stats (transfer_stats_sync), and a
 * truncation is applied by the layer's next fetch. */
#include "cuda_internal.h"

#include <stdio.h>
#include <string.h>

typedef struct cuda_fm_slots {
    void *k, *v;                  /* [Hkv][slots][d] in the cache dtype */
    int32_t *tslot;               /* [Hkv][capacity] slot of a token, -1 = none */
    int32_t *meta;                /* row cache: [Hkv][2 * slots + 1] */
    uint64_t *stamp;              /* row cache: [Hkv][slots] */
} cuda_fm_slots;

typedef struct cuda_fetch {
    fasa_fetch_plan p;            /* sizes and pending truncations (src/rowcache.c) */
    uint32_t *bits;
    int32_t *need;
    uint32_t *info;
    uint64_t *counts;             /* [2][Hkv][2]: demand, then prefetch steps: rows needed, hits */
    int32_t *work, *copy, *remap;
    cuda_fm_slots *layers;        /* [n_layers] with a row cache */
    cuda_fm_slots staging;        /* without one */
    uint64_t folded[2];           /* counter totals already in cache->transfer */
    uint64_t folded_pf[2];        /* same for the prefetch block */
} cuda_fetch;

static void dfree(void *p)
{
    if (p) cudaFree(p);
}

static void free_slots(cuda_fm_slots *s)
{
    dfree(s->k);
    dfree(s->v);
    dfree(s->tslot);
    dfree(s->meta);
    dfree(s->stamp);
    memset(s, 0, sizeof *s);
}

void fasa__cuda_fetch_free(fasa_kv_cache *cache)
{
    cuda_cache *cu = cache->impl;
    cuda_fetch *fm = cu ? cu->fm : NULL;
    if (!fm) return;
    for (uint32_t l = 0; fm->layers && l < cache->shape.n_layers; l++) free_slots(&fm->layers[l]);
    free_slots(&fm->staging);
    void *all[] = {fm->bits, fm->need, fm->info, fm->counts, fm->work, fm->copy, fm->remap};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dfree(all[i]);
    (void)cudaGetLastError();
    fasa__free(cache->ctx, fm->layers);
    fasa__free(cache->ctx, fm->p.trunc);
    fasa__free(cache->ctx, fm);
    cu->fm = NULL;
}

/* Device memory set to a byte value (0, or 0xff for -1); *bytes
 * accumulates its size. */
static fasa_status fm_alloc(fasa_kv_cache *c, size_t size, const char *what, int byte, void **out, uint64_t *bytes)
{
    cuda_ctx *cc = c->ctx->impl;
    if (size == 0) size = 8;
    cudaError_t err = fasa__cuda_malloc(c->ctx, out, size);
    if (err != cudaSuccess) {
        *out = NULL;
        char msg[160];
        snprintf(msg, sizeof msg, "cudaMalloc of the FASA-M %s (%zu bytes)", what, size);
        return fasa__cuda_fail(c->ctx, err, msg);
    }
    *bytes += size;
    err = cudaMemsetAsync(*out, byte, size, cc->stream);
    return err == cudaSuccess ? FASA_OK : fasa__cuda_fail(c->ctx, err, "cudaMemsetAsync (FASA-M)");
}

/* Empty row cache of one layer: every slot free, empty order lists. */
static fasa_status init_meta(fasa_kv_cache *c, int32_t *meta, uint32_t slots)
{
    cuda_ctx *cc = c->ctx->impl;
    size_t per = 2 * (size_t)slots + 1, n = per * c->shape.n_kv_heads;
    int32_t *m = fasa__alloc_aligned(c->ctx, n * sizeof(int32_t), 64);
    if (!m) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cuda: out of host memory");
    memset(m, 0xff, n * sizeof(int32_t));
    for (uint32_t g = 0; g < c->shape.n_kv_heads; g++) m[g * per + 2 * slots] = 0;
    cudaError_t err = cudaMemcpyAsync(meta, m, n * sizeof(int32_t), cudaMemcpyHostToDevice, cc->stream);
    if (err == cudaSuccess) err = cudaStreamSynchronize(cc->stream); /* m is freed next */
    fasa__free(c->ctx, m);
    return err == cudaSuccess ? FASA_OK : fasa__cuda_fail(c->ctx, err, "cudaMemcpyAsync (row cache)");
}

static fasa_status alloc_slots(fasa_kv_cache *c, cuda_fm_slots *s, uint32_t slots, bool persistent, uint64_t *dev,
                               uint64_t *scratch)
{
    size_t hkv = c->shape.n_kv_heads, rows = hkv * slots, row = (size_t)c->shape.head_dim * c->elem_size;
    const char *what = persistent ? "row cache" : "staging area";
    fasa_status st = fm_alloc(c, rows * row, what, 0, &s->k, dev);
    if (st == FASA_OK) st = fm_alloc(c, rows * row, what, 0, &s->v, dev);
    if (st == FASA_OK)
        st = fm_alloc(c, hkv * c->capacity * 4, "token map", 0xff, (void **)&s->tslot, persistent ? dev : scratch);
    if (st != FASA_OK || !persistent) return st;
    st = fm_alloc(c, hkv * (2 * (size_t)slots + 1) * 4, "row cache state", 0, (void **)&s->meta, dev);
    if (st == FASA_OK) st = fm_alloc(c, rows * 8, "row cache stamps", 0, (void **)&s->stamp, dev);
    if (st == FASA_OK) st = init_meta(c, s->meta, slots);
    return st;
}

static fasa_status alloc_staged(fasa_kv_cache *c, cuda_fetch *fm, uint64_t *dev, uint64_t *scratch)
{
    const fasa_model_shape *s = &c->shape;
    fasa_status st = fm_alloc(c, (size_t)s->n_kv_heads * fm->p.rmax * 8, "fetch list", 0, (void **)&fm->copy, scratch);
    if (st == FASA_OK)
        st = fm_alloc(c, (size_t)s->n_q_heads * c->max_n_fac * 4, "remapped selection", 0, (void **)&fm->remap, scratch);
    if (st != FASA_OK) return st;
    if (!fm->p.slots) return alloc_slots(c, &fm->staging, fm->p.rmax, false, dev, scratch);
    st = fm_alloc(c, (size_t)s->n_kv_heads * ((size_t)fm->p.rmax + fm->p.slots) * 4, "row cache scratch", 0,
                  (void **)&fm->work, scratch);
    fm->layers = st == FASA_OK ? fasa__alloc(c->ctx, s->n_layers * sizeof(cuda_fm_slots)) : NULL;
    if (st == FASA_OK && !fm->layers) st = fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cuda: out of host memory");
    for (uint32_t l = 0; st == FASA_OK && l < s->n_layers; l++)
        st = alloc_slots(c, &fm->layers[l], fm->p.slots, true, dev, scratch);
    return st;
}

fasa_status fasa__cuda_fetch_create(fasa_kv_cache *c)
{
    if (c->placement != FASA_PLACEMENT_OFFLOAD) return FASA_OK;
    const fasa_model_shape *s = &c->shape;
    cuda_cache *cu = c->impl;
    cuda_fetch *fm = fasa__alloc(c->ctx, sizeof *fm);
    if (!fm) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cuda: out of host memory");
    cu->fm = fm;
    fasa_status pst = fasa__fetch_plan(c, &fm->p);
    if (pst != FASA_OK) return pst;
    uint64_t dev = 0, scratch = 0;
    size_t hkv = s->n_kv_heads;
    fasa_status st = fm_alloc(c, hkv * fm->p.words * 4, "token bitmap", 0, (void **)&fm->bits, &scratch);
    if (st == FASA_OK) st = fm_alloc(c, hkv * fm->p.rmax * 4, "needed rows", 0, (void **)&fm->need, &scratch);
    if (st == FASA_OK) st = fm_alloc(c, hkv * 16, "fetch state", 0, (void **)&fm->info, &scratch);
    /* two blocks: demand steps, then prefetch steps (FASA_DECODE_PREFETCH) */
    if (st == FASA_OK) st = fm_alloc(c, hkv * 32, "transfer counters", 0, (void **)&fm->counts, &scratch);
    if (st == FASA_OK && fm->p.staged) st = alloc_staged(c, fm, &dev, &scratch);
    if (st != FASA_OK) return st;
    c->device_bytes += dev;
    c->scratch_bytes += scratch;
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* The step                                                                  */
/* ------------------------------------------------------------------------ */

static const cuda_fm_slots *slots_of(const cuda_fetch *fm, uint32_t layer)
{
    return fm->p.slots ? &fm->layers[layer] : &fm->staging;
}

/* Copy blocks per KV head: a few per SM in all, at most one per row. */
static uint32_t copy_blocks(const fasa_exec *exec, const fasa_kv_cache *c, const cuda_fetch *fm)
{
    const cuda_ctx *cc = exec->ctx->impl;
    uint32_t n = (4 * cc->sm_count + c->shape.n_kv_heads - 1) / c->shape.n_kv_heads;
    if (n > fm->p.rmax) n = fm->p.rmax;
    return n ? n : 1;
}

fasa_status fasa__cuda_fetch(fasa_exec *exec, const fasa_step *s, const void **k, const void **v, uint32_t *cap,
                             const int32_t **sel)
{
    fasa_kv_cache *c = s->cache;
    cuda_cache *cu = c->impl;
    cuda_fetch *fm = cu->fm;
    const cuda_layer *lay = &cu->layers[s->layer];
    const cuda_fm_slots *sl = slots_of(fm, s->layer);
    fasa__fetch_step(c, s->prefetch);
    fasa_cu_fetch_args a = {
        .sel = cu->sel, .sel_stride = c->max_n_fac,
        .rows_per_group = s->select == FASA_GQA_PER_GROUP ? 1 : c->group,
        .n_fac = s->n_fac, .L = s->L, .n_kv_heads = c->shape.n_kv_heads,
        .bits = fm->bits, .words = fm->p.words, .need = fm->need, .rmax = fm->p.rmax,
        .info = fm->info, .counts = fm->counts + (s->prefetch ? 2 * c->shape.n_kv_heads : 0), .staged = fm->p.staged,
        .tslot = fm->p.staged ? sl->tslot : NULL, .cap = c->capacity, .slots = fm->p.slots,
        .meta = fm->p.staged ? sl->meta : NULL, .stamp = fm->p.staged ? sl->stamp : NULL,
        .step = c->step_count, .trunc_len = fm->p.trunc[s->layer],
        .work = fm->work, .copy = fm->copy, .remap = fm->remap,
        .k_src = lay->k, .v_src = lay->v,
        .k_dst = fm->p.staged ? sl->k : NULL, .v_dst = fm->p.staged ? sl->v : NULL,
        .row_words = c->shape.head_dim * c->elem_size / 4, /* d is even */
        .copy_blocks = copy_blocks(exec, c, fm),
    };
    cudaError_t err = FASA_CUDA_LAUNCH(exec->ctx, fasa_cu_fetch(&a, exec->stream));
    if (err != cudaSuccess) {
        /* some phases may have run: slots can name rows that were never
         * copied, so the layer's next step forgets every row (a truncation
         * to 0; moot after a sticky error, which loses the context) */
        fm->p.trunc[s->layer] = 0;
        return fasa__cuda_fail(exec->ctx, err, "fetch kernel launch");
    }
    fm->p.trunc[s->layer] = c->capacity; /* applied by this step */
    if (fm->p.staged) {
        *k = sl->k;
        *v = sl->v;
        *cap = fm->p.slots ? fm->p.slots : fm->p.rmax;
        *sel = fm->remap;
    }
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Hooks                                                                     */
/* ------------------------------------------------------------------------ */

void fasa__cuda_cache_truncate(fasa_kv_cache *c, uint32_t length)
{
    cuda_cache *cu = c->impl;
    cuda_fetch *fm = cu ? cu->fm : NULL;
    for (uint32_t l = 0; fm && l < c->shape.n_layers; l++)
        if (length < fm->p.trunc[l]) fm->p.trunc[l] = length;
}

/* Reads the device totals (waiting for the stream) and adds what is new
 * since the last fold: bytes = (needed - hits) x a K row and a V row. */
fasa_status fasa__cuda_transfer_stats_sync(fasa_kv_cache *c)
{
    cuda_cache *cu = c->impl;
    cuda_fetch *fm = cu ? cu->fm : NULL;
    if (!fm) return FASA_OK;
    cuda_ctx *cc = c->ctx->impl;
    uint32_t hkv = c->shape.n_kv_heads;
    uint64_t *v = fasa__alloc(c->ctx, (size_t)hkv * 4 * sizeof(uint64_t)), tot[2] = {0, 0}, pf[2] = {0, 0};
    if (!v) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "cuda: out of host memory");
    int prev;
    fasa_status st = fasa__cuda_enter(c->ctx, &prev);
    if (st == FASA_OK) {
        cudaError_t err = cudaMemcpyAsync(v, fm->counts, (size_t)hkv * 32, cudaMemcpyDeviceToHost, cc->stream);
        if (err == cudaSuccess) err = cudaStreamSynchronize(cc->stream);
        if (err != cudaSuccess) st = fasa__cuda_fail(c->ctx, err, "cudaMemcpyAsync (FASA-M counters)");
        fasa__cuda_leave(prev);
    }
    for (uint32_t g = 0; st == FASA_OK && g < hkv; g++) {
        tot[0] += v[2 * g];
        tot[1] += v[2 * g + 1];
        pf[0] += v[2 * (hkv + g)];
        pf[1] += v[2 * (hkv + g) + 1];
    }
    fasa__free(c->ctx, v);
    if (st != FASA_OK) return st;
    fasa__fetch_fold(c, false, tot, fm->folded);
    fasa__fetch_fold(c, true, pf, fm->folded_pf);
    return FASA_OK;
}
