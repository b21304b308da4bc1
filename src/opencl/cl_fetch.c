/* OpenCL FASA-M (placement OFFLOAD): the fetch step that fac records after
 * topk, its device state, the truncate hook and the transfer counters.
 * The kernels are in opencl/fetch.cl; the policy they follow is
 * src/rowcache.c, and the counts are those of the CPU backend's
 * count_offload_rows (src/cpu/cpu_kernels.c).
 *
 * DIRECT: fac reads K and V rows in place from the host-resident storage;
 *   fetch only counts the distinct rows each KV head needs (fetch_need).
 * STAGED: fetch also gives every needed row a device slot, copies the rows
 *   not already there and remaps the selection to slots; fac then reads the
 *   slot arrays (fetch_need, fetch_slots, fetch_order with a row cache,
 *   fetch_copy).  With row_cache_rows R > 0 the slots of each (layer, KV
 *   head) persist across steps (the row cache); with R = 0 one staging area
 *   of a step's rows is shared by the layers and refilled at every step.
 *
 * Nothing is read back during decode: the counters stay on the device
 * until fasa_kv_cache_transfer_stats folds them in (transfer_stats_sync),
 * and a truncation is applied by the layer's next fetch. */
#include "cl_internal.h"

#include <stdio.h>
#include <string.h>

/* Slot arrays and token map of a row cache (one per layer) or of the
 * shared staging area. */
typedef struct cl_fm_slots {
    cl_mem k, v;                  /* [Hkv][slots][d] in the cache dtype */
    cl_mem tslot;                 /* [Hkv][capacity] int: slot of a token, -1 = none */
    cl_mem meta;                  /* row cache: [Hkv][2 * slots + 1] stok, lru, lru_n */
    cl_mem stamp;                 /* row cache: [Hkv][slots] ulong */
} cl_fm_slots;

typedef struct cl_fetch {
    fasa_fetch_plan p;            /* sizes and pending truncations (src/rowcache.c) */
    cl_mem bits;                  /* [Hkv][words], zero between steps */
    cl_mem need;                  /* [Hkv][rmax] this step's needed tokens, ascending */
    cl_mem info;                  /* [Hkv][4] uint: needed, hits, misses */
    cl_mem counts;                /* [Hkv][2] ulong: rows needed, hits (running totals) */
    cl_mem counts_pf;             /* same for the prefetch steps (FASA_DECODE_PREFETCH) */
    cl_mem work;                  /* row cache: [Hkv][rmax + slots] */
    cl_mem copy;                  /* [Hkv][rmax][2] (token, slot) of the rows to copy */
    cl_mem remap;                 /* [Hq][max_n_fac] the selection as slot indices */
    cl_fm_slots *layers;          /* [n_layers] with a row cache */
    cl_fm_slots staging;          /* without one */
    uint64_t folded[2];           /* counter totals already in cache->transfer */
    uint64_t folded_pf[2];        /* same for counts_pf */
} cl_fetch;

static cl_ctx *ctx_of(const fasa_kv_cache *c) { return c->ctx->impl; }

static cl_kernel kern(const fasa_kv_cache *c, int id)
{
    return ctx_of(c)->progs[c->dtype].kernels[id];
}

static void release(cl_mem *m)
{
    if (*m) clReleaseMemObject(*m);
    *m = NULL;
}

static void release_slots(cl_fm_slots *s)
{
    cl_mem *all[] = {&s->k, &s->v, &s->tslot, &s->meta, &s->stamp};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) release(all[i]);
}

void fasa__cl_fetch_destroy(fasa_kv_cache *cache)
{
    cl_cache *cl = cache->impl;
    cl_fetch *fm = cl ? cl->fm : NULL;
    if (!fm) return;
    for (uint32_t l = 0; fm->layers && l < cache->shape.n_layers; l++) release_slots(&fm->layers[l]);
    release_slots(&fm->staging);
    cl_mem *all[] = {&fm->bits, &fm->need, &fm->info, &fm->counts, &fm->counts_pf, &fm->work, &fm->copy, &fm->remap};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) release(all[i]);
    fasa__free(cache->ctx, fm->layers);
    fasa__free(cache->ctx, fm->p.trunc);
    fasa__free(cache->ctx, fm);
    cl->fm = NULL;
}

/* A buffer within the allocation limit; *bytes accumulates its size. */
static fasa_status fm_mem(fasa_kv_cache *c, uint64_t size, const char *what, uint32_t pattern, cl_mem *out,
                          uint64_t *bytes)
{
    uint64_t lim = fasa__cl_alloc_limit(ctx_of(c));
    if (size > lim)
        return fasa__error(c->ctx, FASA_ERROR_UNSUPPORTED,
                           "opencl: FASA-M %s needs %llu bytes, more than the allocation limit (%llu bytes); "
                           "lower desc.row_cache_rows or desc.max_n_fac", what, (unsigned long long)size,
                           (unsigned long long)lim);
    *bytes += size;
    return fasa__cl_new_mem(c, size, what, pattern, out);
}

/* Row cache of one layer: empty slots (token -1), an empty order list. */
static fasa_status init_meta(fasa_kv_cache *c, cl_mem meta, uint32_t slots)
{
    size_t per = 2 * (size_t)slots + 1, n = per * c->shape.n_kv_heads;
    int32_t *m = fasa__alloc_aligned(c->ctx, n * sizeof(int32_t), 64);
    if (!m) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    memset(m, 0xff, n * sizeof(int32_t));
    for (uint32_t g = 0; g < c->shape.n_kv_heads; g++) m[g * per + 2 * slots] = 0;
    cl_int err = clEnqueueWriteBuffer(ctx_of(c)->queue, meta, CL_TRUE, 0, n * sizeof(int32_t), m, 0, NULL, NULL);
    fasa__free(c->ctx, m);
    return err == CL_SUCCESS ? FASA_OK : fasa__cl_fail(c->ctx, err, "clEnqueueWriteBuffer (row cache)");
}

/* Slot arrays (+ token map, + row-cache state when persistent). */
static fasa_status alloc_slots(fasa_kv_cache *c, cl_fm_slots *s, uint32_t slots, bool persistent, uint64_t *dev,
                               uint64_t *scratch)
{
    uint32_t hkv = c->shape.n_kv_heads;
    uint64_t rows = (uint64_t)hkv * slots, row = (uint64_t)c->shape.head_dim * c->elem_size;
    const char *what = persistent ? "row cache" : "staging area";
    fasa_status st = fm_mem(c, rows * row, what, 0, &s->k, dev);
    if (st == FASA_OK) st = fm_mem(c, rows * row, what, 0, &s->v, dev);
    if (st == FASA_OK)
        st = fm_mem(c, (uint64_t)hkv * c->capacity * 4, "token map", 0xffffffffu, &s->tslot, persistent ? dev : scratch);
    if (st != FASA_OK || !persistent) return st;
    st = fm_mem(c, (uint64_t)hkv * (2ull * slots + 1) * 4, "row cache state", 0, &s->meta, dev);
    if (st == FASA_OK) st = fm_mem(c, rows * 8, "row cache stamps", 0, &s->stamp, dev);
    if (st == FASA_OK) st = init_meta(c, s->meta, slots);
    return st;
}

static fasa_status alloc_staged(fasa_kv_cache *c, cl_fetch *fm, uint64_t *dev, uint64_t *scratch)
{
    const fasa_model_shape *s = &c->shape;
    cl_cache *cl = c->impl;
    uint32_t eff = fm->p.slots ? fm->p.slots : fm->p.rmax;
    /* fac sees slot indices offset by token chunk (opencl/fetch.cl remap_rows) */
    if ((uint64_t)cl->n_tchunks * eff > 0x7fffffffull)
        return fasa__error(c->ctx, FASA_ERROR_UNSUPPORTED,
                           "opencl: FASA-M: %u storage chunks x %u slots do not fit 31-bit slot indices; lower "
                           "desc.row_cache_rows", cl->n_tchunks, eff);
    fasa_status st = fm_mem(c, (uint64_t)s->n_kv_heads * fm->p.rmax * 8, "fetch list", 0, &fm->copy, scratch);
    if (st == FASA_OK)
        st = fm_mem(c, (uint64_t)s->n_q_heads * c->max_n_fac * 4, "remapped selection", 0, &fm->remap, scratch);
    if (st != FASA_OK) return st;
    if (!fm->p.slots) return alloc_slots(c, &fm->staging, fm->p.rmax, false, dev, scratch);
    st = fm_mem(c, (uint64_t)s->n_kv_heads * (fm->p.rmax + (uint64_t)fm->p.slots) * 4, "row cache scratch", 0, &fm->work,
                scratch);
    fm->layers = st == FASA_OK ? fasa__alloc(c->ctx, s->n_layers * sizeof(cl_fm_slots)) : NULL;
    if (st == FASA_OK && !fm->layers) st = fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    for (uint32_t l = 0; st == FASA_OK && l < s->n_layers; l++)
        st = alloc_slots(c, &fm->layers[l], fm->p.slots, true, dev, scratch);
    return st;
}

/* What fasa__cl_fetch_create will allocate (the same sizes, summed with
 * saturation), for the check made before a cache creates anything. */
uint64_t fasa__cl_fetch_bytes(const fasa_kv_cache *c)
{
    if (c->placement != FASA_PLACEMENT_OFFLOAD) return 0;
    uint64_t hkv = c->shape.n_kv_heads, rmax = fasa__fetch_rows_max(c), slots = c->row_cache_rows;
    uint64_t words = (c->capacity + 31u) / 32u, row = (uint64_t)c->shape.head_dim * c->elem_size;
    uint64_t small = fasa__sat_mul(hkv, words * 4 + rmax * 4 + 16 + 16 + (slots ? 16 : 0));
    if (c->fetch != FASA_FETCH_STAGED) return small;
    uint64_t tmap = fasa__sat_mul(hkv, (uint64_t)c->capacity * 4);
    uint64_t fixed = fasa__sat_add(fasa__sat_mul(hkv, rmax * 8), (uint64_t)c->shape.n_q_heads * c->max_n_fac * 4);
    if (!slots) /* one staging area of rmax rows */
        return fasa__sat_add(fasa__sat_add(small, fixed), fasa__sat_add(fasa__sat_mul(2 * hkv * rmax, row), tmap));
    uint64_t per_layer = fasa__sat_add(fasa__sat_mul(2 * hkv * slots, row),
                                      fasa__sat_add(tmap, fasa__sat_mul(hkv, (2 * slots + 1) * 4 + slots * 8)));
    uint64_t work = fasa__sat_mul(hkv, (rmax + slots) * 4);
    return fasa__sat_add(fasa__sat_add(small, fixed), fasa__sat_add(work, fasa__sat_mul(c->shape.n_layers, per_layer)));
}

fasa_status fasa__cl_fetch_create(fasa_kv_cache *c)
{
    if (c->placement != FASA_PLACEMENT_OFFLOAD) return FASA_OK;
    const fasa_model_shape *s = &c->shape;
    cl_cache *cl = c->impl;
    cl_fetch *fm = fasa__alloc(c->ctx, sizeof *fm);
    if (!fm) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    cl->fm = fm;
    fasa_status pst = fasa__fetch_plan(c, &fm->p);
    if (pst != FASA_OK) return pst;
    uint64_t dev = 0, scratch = 0, hkv = s->n_kv_heads;
    fasa_status st = fm_mem(c, hkv * fm->p.words * 4, "token bitmap", 0, &fm->bits, &scratch);
    if (st == FASA_OK) st = fm_mem(c, hkv * fm->p.rmax * 4, "needed rows", 0, &fm->need, &scratch);
    if (st == FASA_OK) st = fm_mem(c, hkv * 16, "fetch state", 0, &fm->info, &scratch);
    if (st == FASA_OK) st = fm_mem(c, hkv * 16, "transfer counters", 0, &fm->counts, &scratch);
    if (st == FASA_OK && fm->p.slots)
        st = fm_mem(c, hkv * 16, "prefetch counters", 0, &fm->counts_pf, &scratch);
    if (st == FASA_OK && fm->p.staged) st = alloc_staged(c, fm, &dev, &scratch);
    if (st != FASA_OK) return st;
    c->device_bytes += dev;
    c->scratch_bytes += scratch;
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* The step                                                                  */
/* ------------------------------------------------------------------------ */

static fasa_status args_done(fasa_context *ctx, const cl_args *a, int kind)
{
    if (a->err == CL_SUCCESS) return FASA_OK;
    char what[96];
    snprintf(what, sizeof what, "clSetKernelArg(%s, arg %u)", fasa__cl_kernel_names[kind], a->i - 1);
    return fasa__cl_fail(ctx, a->err, what);
}

/* Checks the arguments set on x and launches its kernel with one
 * workgroup of wg_fetch items per KV head (need, slots, order). */
static fasa_status launch_per_head(fasa_exec *exec, const fasa_kv_cache *c, const cl_args *x, int kind)
{
    fasa_status st = args_done(c->ctx, x, kind);
    uint32_t wg = ctx_of(c)->tune.wg_fetch;
    size_t gws[1] = {(size_t)c->shape.n_kv_heads * wg}, lws[1] = {wg};
    return st == FASA_OK ? fasa__cl_launch(exec, kind, x->k, 1, gws, lws) : st;
}

static uint32_t rows_per_group(const fasa_step *s)
{
    return s->select == FASA_GQA_PER_GROUP ? 1 : s->cache->group;
}

static fasa_status need(fasa_exec *exec, const fasa_step *s, cl_fetch *fm)
{
    fasa_kv_cache *c = s->cache;
    cl_args x = {kern(c, CLK_FETCH_NEED), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, ((cl_cache *)c->impl)->sel);
    fasa__cl_arg_u32(&x, c->max_n_fac);
    fasa__cl_arg_u32(&x, rows_per_group(s));
    fasa__cl_arg_u32(&x, s->n_fac);
    fasa__cl_arg_u32(&x, s->L);
    fasa__cl_arg_mem(&x, fm->bits);
    fasa__cl_arg_u32(&x, fm->p.words);
    fasa__cl_arg_mem(&x, fm->need);
    fasa__cl_arg_u32(&x, fm->p.rmax);
    fasa__cl_arg_u32(&x, fm->p.staged);
    fasa__cl_arg_mem(&x, s->prefetch ? fm->counts_pf : fm->counts);
    fasa__cl_arg_mem(&x, fm->info);
    return launch_per_head(exec, c, &x, CLK_FETCH_NEED);
}

static const cl_fm_slots *slots_of(const cl_fetch *fm, uint32_t layer)
{
    return fm->p.slots ? &fm->layers[layer] : &fm->staging;
}

static fasa_status slots(fasa_exec *exec, const fasa_step *s, cl_fetch *fm)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_fm_slots *sl = slots_of(fm, s->layer);
    cl_args x = {kern(c, CLK_FETCH_SLOTS), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, cl->sel);
    fasa__cl_arg_u32(&x, c->max_n_fac);
    fasa__cl_arg_u32(&x, rows_per_group(s));
    fasa__cl_arg_u32(&x, s->n_fac);
    fasa__cl_arg_mem(&x, fm->need);
    fasa__cl_arg_u32(&x, fm->p.rmax);
    fasa__cl_arg_mem(&x, fm->info);
    fasa__cl_arg_mem(&x, sl->tslot);
    fasa__cl_arg_u32(&x, c->capacity);
    fasa__cl_arg_u32(&x, fm->p.slots);
    fasa__cl_arg_mem(&x, fm->p.slots ? sl->meta : cl->dummy);
    fasa__cl_arg_mem(&x, fm->p.slots ? sl->stamp : cl->dummy);
    fasa__cl_arg_u64(&x, c->step_count);
    fasa__cl_arg_u32(&x, fm->p.trunc[s->layer]);
    fasa__cl_arg_mem(&x, fm->p.slots ? fm->work : cl->dummy);
    fasa__cl_arg_mem(&x, fm->copy);
    fasa__cl_arg_u32(&x, cl->tokens_per_chunk);
    fasa__cl_arg_mem(&x, fm->remap);
    fasa__cl_arg_mem(&x, s->prefetch ? fm->counts_pf : fm->counts);
    return launch_per_head(exec, c, &x, CLK_FETCH_SLOTS);
}

static fasa_status order(fasa_exec *exec, const fasa_step *s, cl_fetch *fm)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    const cl_fm_slots *sl = slots_of(fm, s->layer);
    cl_args x = {kern(c, CLK_FETCH_ORDER), 0, CL_SUCCESS};
    fasa__cl_arg_mem(&x, cl->sel);
    fasa__cl_arg_u32(&x, c->max_n_fac);
    fasa__cl_arg_u32(&x, rows_per_group(s));
    fasa__cl_arg_u32(&x, s->n_fac);
    fasa__cl_arg_mem(&x, sl->tslot);
    fasa__cl_arg_u32(&x, c->capacity);
    fasa__cl_arg_u32(&x, fm->p.slots);
    fasa__cl_arg_mem(&x, sl->meta);
    fasa__cl_arg_mem(&x, sl->stamp);
    fasa__cl_arg_u64(&x, c->step_count);
    fasa__cl_arg_mem(&x, fm->work);
    fasa__cl_arg_u32(&x, fm->p.rmax);
    fasa__cl_arg_u32(&x, cl->tokens_per_chunk);
    fasa__cl_arg_mem(&x, fm->remap);
    return launch_per_head(exec, c, &x, CLK_FETCH_ORDER);
}

/* One copy dispatch per storage chunk holding tokens below L; a few
 * work-groups per KV head walk the head's list of rows to copy. */
static fasa_status copy_rows(fasa_exec *exec, const fasa_step *s, cl_fetch *fm)
{
    fasa_kv_cache *c = s->cache;
    cl_cache *cl = c->impl;
    cl_ctx *cc = ctx_of(c);
    const cl_fm_slots *sl = slots_of(fm, s->layer);
    uint32_t wgc = fasa__cl_wg_copy(&cc->tune), hkv = c->shape.n_kv_heads;
    uint32_t per_head = (4 * cc->compute_units + hkv - 1) / hkv;
    if (per_head > fm->p.rmax) per_head = fm->p.rmax;
    if (per_head < 1) per_head = 1;
    for (uint32_t i = 0; i < cl->n_chunks; i++) {
        const cl_chunk *ch = &cl->chunks[(size_t)s->layer * cl->n_chunks + i];
        if (ch->t0 >= s->L) continue;
        cl_args x = {kern(c, CLK_FETCH_COPY), 0, CL_SUCCESS};
        fasa__cl_arg_mem(&x, ch->k);
        fasa__cl_arg_mem(&x, ch->v);
        fasa__cl_arg_u32(&x, c->shape.head_dim * c->elem_size / 4); /* d is even */
        fasa__cl_arg_u32(&x, ch->nt);
        fasa__cl_arg_u32(&x, ch->g0);
        fasa__cl_arg_u32(&x, ch->t0);
        fasa__cl_arg_mem(&x, sl->k);
        fasa__cl_arg_mem(&x, sl->v);
        fasa__cl_arg_u32(&x, fm->p.slots ? fm->p.slots : fm->p.rmax);
        fasa__cl_arg_mem(&x, fm->copy);
        fasa__cl_arg_u32(&x, fm->p.rmax);
        fasa__cl_arg_mem(&x, fm->info);
        fasa_status st = args_done(c->ctx, &x, CLK_FETCH_COPY);
        size_t gws[2] = {(size_t)per_head * wgc, ch->ng}, lws[2] = {wgc, 1};
        if (st == FASA_OK) st = fasa__cl_launch(exec, CLK_FETCH_COPY, x.k, 2, gws, lws);
        if (st != FASA_OK) return st;
    }
    return FASA_OK;
}

fasa_status fasa__cl_fetch(fasa_exec *exec, const fasa_step *s)
{
    fasa_kv_cache *c = s->cache;
    cl_fetch *fm = ((cl_cache *)c->impl)->fm;
    fasa__fetch_step(c, s->prefetch);
    fasa_status st = need(exec, s, fm);
    bool placed = false;
    if (st == FASA_OK && fm->p.staged) {
        st = slots(exec, s, fm);
        placed = st == FASA_OK;
    }
    if (st == FASA_OK && fm->p.staged && fm->p.slots) st = order(exec, s, fm);
    if (st == FASA_OK && fm->p.staged) st = copy_rows(exec, s, fm);
    if (st == FASA_OK) fm->p.trunc[s->layer] = c->capacity; /* applied by this step */
    /* fetch_slots ran but a later kernel of the step could not be enqueued:
     * slots now name rows that were never copied (and the order list may
     * lack them), so the layer's next step forgets every row, as after a
     * truncation to 0, and fetches them again */
    else if (placed) fm->p.trunc[s->layer] = 0;
    return st;
}

void fasa__cl_fac_source(const fasa_kv_cache *c, uint32_t layer, const cl_chunk *ch, cl_fac_src *out)
{
    const cl_cache *cl = c->impl;
    const cl_fetch *fm = cl->fm;
    if (!fm || !fm->p.staged) {
        *out = (cl_fac_src){ch->k, ch->v, cl->sel, ch->nt, ch->g0, ch->t0, ch->t0 + ch->nt};
        return;
    }
    const cl_fm_slots *sl = slots_of(fm, layer);
    uint32_t eff = fm->p.slots ? fm->p.slots : fm->p.rmax;
    /* slot arrays hold every KV head; entry = token chunk * eff + slot */
    *out = (cl_fac_src){sl->k, sl->v, fm->remap, eff, 0, ch->tc * eff, ch->tc * eff + eff};
}

/* ------------------------------------------------------------------------ */
/* Hooks                                                                     */
/* ------------------------------------------------------------------------ */

void fasa__cl_cache_truncate(fasa_kv_cache *c, uint32_t length)
{
    cl_cache *cl = c->impl;
    cl_fetch *fm = cl ? cl->fm : NULL;
    for (uint32_t l = 0; fm && l < c->shape.n_layers; l++)
        if (length < fm->p.trunc[l]) fm->p.trunc[l] = length;
}

/* Totals over KV heads of one counter buffer: rows needed, hits. */
static fasa_status read_counts(fasa_kv_cache *c, cl_mem counts, uint64_t tot[2])
{
    uint32_t hkv = c->shape.n_kv_heads;
    uint64_t *v = fasa__alloc(c->ctx, (size_t)hkv * 2 * sizeof(uint64_t));
    if (!v) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    cl_int err = clEnqueueReadBuffer(ctx_of(c)->queue, counts, CL_TRUE, 0, (size_t)hkv * 16, v, 0, NULL, NULL);
    tot[0] = tot[1] = 0;
    for (uint32_t g = 0; err == CL_SUCCESS && g < hkv; g++) {
        tot[0] += v[2 * g];
        tot[1] += v[2 * g + 1];
    }
    fasa__free(c->ctx, v);
    return err == CL_SUCCESS ? FASA_OK : fasa__cl_fail(c->ctx, err, "clEnqueueReadBuffer (FASA-M counters)");
}

/* Reads the device totals (waiting for the queue) and adds what is new
 * since the last fold: bytes = (needed - hits) x a K row and a V row. */
fasa_status fasa__cl_transfer_stats_sync(fasa_kv_cache *c)
{
    cl_cache *cl = c->impl;
    cl_fetch *fm = cl ? cl->fm : NULL;
    if (!fm) return FASA_OK;
    uint64_t demand[2], prefetch[2] = {0, 0};
    fasa_status st = read_counts(c, fm->counts, demand);
    if (st == FASA_OK && fm->counts_pf) st = read_counts(c, fm->counts_pf, prefetch);
    if (st != FASA_OK) return st;
    fasa__fetch_fold(c, false, demand, fm->folded);
    fasa__fetch_fold(c, true, prefetch, fm->folded_pf);
    return FASA_OK;
}
