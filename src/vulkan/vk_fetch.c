/* Vulkan FASA-M (placement OFFLOAD): the device state of the fetch kernel
 * (shaders/fetch.comp), its recording after the top-k, the truncate hook
 * and the transfer counters.
 *
 *   DIRECT   fac reads K and V rows in place from host-visible memory; fetch
 *            only counts the distinct rows each KV head needs.
 *   STAGED   fetch gives every needed row a device slot, copies the rows not
 *            already there and remaps the selection to slots; fac reads the
 *            slot arrays.  With row_cache_rows R > 0 the slots of each
 *            (layer, KV head) persist across steps (the row cache of
 *            src/rowcache.c); with R = 0 one staging area of a step's rows is
 *            shared by the layers.
 *
 * Nothing is read back during decode: the counters stay on the device (in
 * host-visible memory) until fasa_kv_cache_transfer_stats folds them in, so
 * steps recorded into a host's command buffers are counted like standalone
 * ones.  A truncation is applied by the layer's next fetch (recording order
 * is execution order, see fasa_vulkan.h), so it needs no submission; a
 * standalone step marks it done only once submitted, so that a failed
 * submission leaves it pending for the next step. */
#include "vk_internal.h"

#include <string.h>

typedef struct push_fetch {
    uint64_t scratch, state, counters, src_k, src_v, dst_k, dst_v;
    uint32_t sel_off, remap_off, fs_off, max_n_fac;
    uint32_t rpg, n_fac, L, capacity;
    uint32_t rmax, slots, trunc, mode;
    uint32_t phase, kv_stride, kv_shift, dst_shift;
    uint32_t W, flags; /* 1 = 16-byte copies, 2 = 16-bit token map */
} push_fetch;

_Static_assert(sizeof(push_fetch) <= VK_PUSH_MAX, "push_fetch");

static uint32_t words_per_row(const fasa_kv_cache *c)
{
    return c->shape.head_dim / (4 / c->elem_size);
}

/* Words of the token map of one KV head (16 bits per token when every slot
 * index and the "absent" mark fit: fetch.comp map16), and of one layer's
 * row-cache state (fetch.comp st_* layout). */
static uint64_t map_words(const fasa_kv_cache *c, const vk_fetch *fm)
{
    return fm->map16 ? (c->capacity + 1ull) / 2 : c->capacity;
}

static uint64_t state_words(const fasa_kv_cache *c, const vk_fetch *fm)
{
    return (uint64_t)c->shape.n_kv_heads * (4ull + map_words(c, fm) + 3ull * fm->slots);
}

/* ------------------------------------------------------------------------ */
/* Planning and creation                                                     */
/* ------------------------------------------------------------------------ */

static fasa_status plan_sizes(fasa_kv_cache *c, const vk_context *vk, vk_fetch *fm)
{
    const fasa_model_shape *s = &c->shape;
    fm->rmax = fasa__fetch_rows_max(c);
    fm->slots = fm->mode == VK_FETCH_ROWCACHE ? c->row_cache_rows : 0;
    fm->map16 = fm->slots < 0xffffu && !vk->test_fetch_fallbacks;
    uint64_t words = (c->capacity + 31ull) / 32;
    uint64_t zeroed = (uint64_t)s->n_kv_heads * (words + fm->slots);
    uint64_t work = (uint64_t)s->n_kv_heads * (3ull * fm->rmax + fm->slots + 4) + (uint64_t)s->n_q_heads * c->max_n_fac;
    if (zeroed + work >= (1ull << 30) || (fm->slots && state_words(c, fm) >= (1ull << 32)))
        return fasa__error(c->ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.row_cache_rows / desc.capacity: the FASA-M fetch state of %u slots over %u tokens "
                           "exceeds the 32-bit word offsets of the vulkan backend", fm->slots, c->capacity);
    fm->zeroed_words = (uint32_t)zeroed;
    fm->work_words = (uint32_t)work;
    return FASA_OK;
}

fasa_status fasa__vk_fetch_plan(fasa_kv_cache *c, vk_context *vk, vk_cache *vc)
{
    if (c->placement != FASA_PLACEMENT_OFFLOAD) return FASA_OK;
    vk_fetch *fm = fasa__alloc(c->ctx, sizeof *fm);
    if (!fm) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    vc->fm = fm;
    fm->mode = c->fetch != FASA_FETCH_STAGED ? VK_FETCH_COUNT
               : c->row_cache_rows ? VK_FETCH_ROWCACHE : VK_FETCH_STAGING;
    fasa_status st = plan_sizes(c, vk, fm);
    if (st != FASA_OK) return st;
    fm->trunc = fasa__alloc(c->ctx, c->shape.n_layers * sizeof(uint32_t));
    if (!fm->trunc) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    for (uint32_t l = 0; l < c->shape.n_layers; l++) fm->trunc[l] = VK_NO_TRUNC;
    if (fm->mode == VK_FETCH_COUNT) return FASA_OK;
    fm->n_slot_arrays = fm->mode == VK_FETCH_ROWCACHE ? c->shape.n_layers : 1;
    fm->k_slots = fasa__alloc(c->ctx, fm->n_slot_arrays * sizeof(vk_array));
    fm->v_slots = fasa__alloc(c->ctx, fm->n_slot_arrays * sizeof(vk_array));
    if (!fm->k_slots || !fm->v_slots) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    uint64_t rows = (uint64_t)c->shape.n_kv_heads * (fm->slots ? fm->slots : fm->rmax);
    for (uint32_t i = 0; i < fm->n_slot_arrays; i++) {
        fasa__vk_array_plan(vk, &fm->k_slots[i], rows, words_per_row(c));
        fasa__vk_array_plan(vk, &fm->v_slots[i], rows, words_per_row(c));
    }
    if (fm->mode == VK_FETCH_ROWCACHE) {
        fasa__vk_array_plan(vk, &fm->state, c->shape.n_layers, 1);
        /* one row per layer: the whole state of a layer is one address range */
        uint64_t w = state_words(c, fm);
        fm->state.row_words = (uint32_t)w;
        fm->state.shift = 0;
        fm->state.n_chunks = c->shape.n_layers;
    }
    return FASA_OK;
}

uint32_t fasa__vk_fetch_arrays(vk_fetch *fm, vk_array **out)
{
    uint32_t n = 0;
    for (uint32_t i = 0; fm && i < fm->n_slot_arrays; i++) {
        if (out) out[n] = &fm->k_slots[i], out[n + 1] = &fm->v_slots[i];
        n += 2;
    }
    if (fm && fm->mode == VK_FETCH_ROWCACHE) {
        if (out) out[n] = &fm->state;
        n++;
    }
    return n;
}

fasa_status fasa__vk_fetch_create_arrays(vk_context *vk, vk_fetch *fm)
{
    fasa_status st = FASA_OK;
    for (uint32_t i = 0; fm && st == FASA_OK && i < fm->n_slot_arrays; i++) {
        st = fasa__vk_array_create(vk, &fm->k_slots[i], "the FASA-M K slots");
        if (st == FASA_OK) st = fasa__vk_array_create(vk, &fm->v_slots[i], "the FASA-M V slots");
    }
    if (st == FASA_OK && fm && fm->mode == VK_FETCH_ROWCACHE)
        st = fasa__vk_array_create(vk, &fm->state, "the FASA-M row-cache state");
    return st;
}

uint64_t fasa__vk_fetch_device_bytes(const vk_fetch *fm)
{
    uint64_t b = 0;
    for (uint32_t i = 0; fm && i < fm->n_slot_arrays; i++)
        b += (fm->k_slots[i].n_rows * fm->k_slots[i].row_words + fm->v_slots[i].n_rows * fm->v_slots[i].row_words) * 4;
    if (fm && fm->mode == VK_FETCH_ROWCACHE) b += fm->state.n_rows * fm->state.row_words * 4ull;
    return b;
}

bool fasa__vk_fetch_needs_init(const vk_cache *vc) { return vc->fm && vc->fm->mode == VK_FETCH_ROWCACHE; }

/* Row-cache state of every layer: empty lists (0), no resident token and
 * free slots (-1); part of the cache's init commands (vk_cache.c), which
 * end with the barrier. */
void fasa__vk_fetch_init_record(fasa_exec *e, fasa_kv_cache *c)
{
    vk_cache *vc = c->impl;
    vk_fetch *fm = vc->fm;
    if (!fasa__vk_fetch_needs_init(vc)) return;
    uint64_t hkv = c->shape.n_kv_heads;
    for (uint32_t l = 0; l < c->shape.n_layers; l++) {
        const vk_buf *b = &fm->state.chunks[l];
        e->vk->fn.vkCmdFillBuffer(e->cmd, b->buffer, b->offset, hkv * 16, 0);
        e->vk->fn.vkCmdFillBuffer(e->cmd, b->buffer, b->offset + hkv * 16,
                                  hkv * (map_words(c, fm) + fm->slots) * 4, 0xffffffffu);
    }
}

static bool aligned16(const vk_array *a)
{
    for (uint32_t i = 0; i < a->n_chunks; i++)
        if (a->chunks[i].addr % 16) return false;
    return true;
}

/* 16-byte copies need rows of whole uvec4s and 16-byte aligned chunks. */
static bool can_copy_quads(const fasa_kv_cache *c, const vk_cache *vc, const vk_fetch *fm)
{
    if (words_per_row(c) % 4) return false;
    for (uint32_t l = 0; l < c->shape.n_layers; l++)
        if (!aligned16(&vc->layers[l].k) || !aligned16(&vc->layers[l].v)) return false;
    for (uint32_t i = 0; i < fm->n_slot_arrays; i++)
        if (!aligned16(&fm->k_slots[i]) || !aligned16(&fm->v_slots[i])) return false;
    return true;
}

/* One block of counters: [Hkv] (needed lo/hi, hits lo/hi), steps lo/hi. */
static uint64_t counter_block_bytes(const fasa_kv_cache *c) { return (4ull * c->shape.n_kv_heads + 2) * 4; }

fasa_status fasa__vk_fetch_init(fasa_kv_cache *c, vk_context *vk, vk_cache *vc)
{
    vk_fetch *fm = vc->fm;
    if (!fm) return FASA_OK;
    fm->quad = can_copy_quads(c, vc, fm) && !vk->test_fetch_fallbacks;
    /* two blocks: demand steps, then prefetch steps (FASA_DECODE_PREFETCH) */
    fasa_status st = fasa__vk_buf_create(vk, 2 * counter_block_bytes(c), true, "the FASA-M counters", &fm->counters);
    if (st != FASA_OK) return st;
    memset(fm->counters.map, 0, fm->counters.size);
    return FASA_OK; /* a row cache's state: fasa__vk_fetch_init_record */
}

void fasa__vk_fetch_destroy(fasa_kv_cache *c, vk_context *vk, vk_cache *vc)
{
    vk_fetch *fm = vc->fm;
    if (!fm) return;
    for (uint32_t i = 0; i < fm->n_slot_arrays; i++) {
        if (fm->k_slots) fasa__vk_array_destroy(vk, &fm->k_slots[i]);
        if (fm->v_slots) fasa__vk_array_destroy(vk, &fm->v_slots[i]);
    }
    fasa__vk_array_destroy(vk, &fm->state);
    fasa__vk_buf_destroy(vk, &fm->counters);
    fasa__free(c->ctx, fm->k_slots);
    fasa__free(c->ctx, fm->v_slots);
    fasa__free(c->ctx, fm->trunc);
    fasa__free(c->ctx, fm);
    vc->fm = NULL;
}

/* ------------------------------------------------------------------------ */
/* Recording                                                                 */
/* ------------------------------------------------------------------------ */

static push_fetch fetch_push(const fasa_step *step, const vk_cache *vc, const vk_fetch *fm)
{
    const fasa_kv_cache *c = step->cache;
    const vk_layer *lay = &vc->layers[step->layer];
    push_fetch p;
    memset(&p, 0, sizeof p);
    p.scratch = vc->scratch.addr;
    p.counters = fm->counters.addr + (step->prefetch ? counter_block_bytes(c) : 0);
    p.src_k = lay->k.table;
    p.src_v = lay->v.table;
    p.sel_off = vc->sel_off;
    p.remap_off = fm->remap_off;
    p.fs_off = fm->fs_off;
    p.max_n_fac = c->max_n_fac;
    p.rpg = step->select == FASA_GQA_PER_GROUP ? 1 : c->group;
    p.n_fac = step->n_fac;
    p.L = step->L;
    p.capacity = c->capacity;
    p.rmax = fm->rmax;
    p.slots = fm->slots;
    p.trunc = VK_NO_TRUNC;
    p.mode = (uint32_t)fm->mode;
    p.kv_stride = vc->kv_stride;
    p.kv_shift = lay->k.shift;
    p.W = words_per_row(c);
    p.flags = (fm->quad ? 1u : 0u) | (fm->map16 ? 2u : 0u);
    if (fm->n_slot_arrays) {
        uint32_t i = fm->mode == VK_FETCH_ROWCACHE ? step->layer : 0;
        p.dst_k = fm->k_slots[i].table;
        p.dst_v = fm->v_slots[i].table;
        p.dst_shift = fm->k_slots[i].shift;
    }
    if (fm->mode == VK_FETCH_ROWCACHE) {
        const vk_buf *b = &fm->state.chunks[step->layer];
        p.state = b->addr;
        p.trunc = fm->trunc[step->layer];
    }
    return p;
}

/* The counters are read by the host through their mapping once the host
 * has waited for the work (standalone streams end with such a barrier). */
static void counters_to_host(fasa_exec *e)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    e->vk->fn.vkCmdPipelineBarrier(e->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
                                   &mb, 0, NULL, 0, NULL);
}

vk_fac_source fasa__vk_fetch_record(fasa_exec *e, const fasa_step *step)
{
    fasa_kv_cache *c = step->cache;
    vk_cache *vc = c->impl;
    vk_fetch *fm = vc->fm;
    const vk_layer *lay = &vc->layers[step->layer];
    vk_fac_source in_place = {lay->k.table, lay->v.table, vc->kv_stride, lay->k.shift, vc->sel_off};
    push_fetch p = fetch_push(step, vc, fm);
    /* this fetch applies the truncation: done now for a host's command
     * buffer (recording order is execution order), else once the stream
     * is submitted; a failed submission leaves it pending */
    if (e->embedded) fm->trunc[step->layer] = VK_NO_TRUNC;
    else e->applies_trunc = &fm->trunc[step->layer];
    fasa__vk_dispatch(e, VK_K_FETCH, 0, &p, sizeof p, c->shape.n_kv_heads, 1);
    if (e->embedded) counters_to_host(e);
    if (fm->mode == VK_FETCH_COUNT) return in_place;
    /* the misses of a head: at most its selection entries, at most rmax */
    uint64_t bound = (uint64_t)p.rpg * step->n_fac;
    if (bound > fm->rmax) bound = fm->rmax;
    fasa__vk_barrier(e);
    p.phase = 1;
    fasa__vk_dispatch(e, VK_K_FETCH, 0, &p, sizeof p, (uint32_t)((bound + VK_FETCH_RPW - 1) / VK_FETCH_RPW),
                      c->shape.n_kv_heads);
    vk_fac_source staged = {p.dst_k, p.dst_v, fm->slots ? fm->slots : fm->rmax, p.dst_shift, fm->remap_off};
    return staged;
}

/* ------------------------------------------------------------------------ */
/* Truncation and counters                                                   */
/* ------------------------------------------------------------------------ */

void fasa__vk_cache_truncate(fasa_kv_cache *c, uint32_t length)
{
    vk_cache *vc = c->impl;
    if (!vc || !vc->fm || vc->fm->mode != VK_FETCH_ROWCACHE) return;
    for (uint32_t l = 0; l < c->shape.n_layers; l++)
        if (length < vc->fm->trunc[l]) vc->fm->trunc[l] = length;
}

static uint64_t word64(const uint32_t *w) { return (uint64_t)w[0] | (uint64_t)w[1] << 32; }

/* Totals of one counter block: rows needed, hits (over KV heads), steps. */
static void read_counter_block(const fasa_kv_cache *c, const void *map, uint64_t total[3])
{
    const uint32_t *w = map;
    total[0] = total[1] = 0;
    total[2] = word64(w + 4 * c->shape.n_kv_heads);
    for (uint32_t g = 0; g < c->shape.n_kv_heads; g++) {
        total[0] += word64(w + 4 * g);
        total[1] += word64(w + 4 * g + 2);
    }
}

/* Folds what the counters gained since the last call into cache->transfer.
 * Embedded contexts: valid once the host has waited for its recorded steps. */
fasa_status fasa__vk_transfer_stats_sync(fasa_kv_cache *c)
{
    vk_cache *vc = c->impl;
    vk_fetch *fm = vc ? vc->fm : NULL;
    if (!fm) return FASA_OK;
    uint64_t demand[3], prefetch[3];
    read_counter_block(c, fm->counters.map, demand);
    read_counter_block(c, (const char *)fm->counters.map + counter_block_bytes(c), prefetch);
    c->transfer.steps += demand[2] - fm->folded[2]; /* counted on the device: recorded steps too */
    fm->folded[2] = demand[2];
    fasa__fetch_fold(c, false, demand, fm->folded);
    c->transfer.prefetch_steps += prefetch[2] - fm->folded_pf[2];
    fm->folded_pf[2] = prefetch[2];
    fasa__fetch_fold(c, true, prefetch, fm->folded_pf);
    return FASA_OK;
}

void fasa__vk_test_fetch_fallbacks(fasa_context *ctx, bool on)
{
    if (!ctx || ctx->backend != FASA_BACKEND_VULKAN || !ctx->impl) return;
    fasa__vk(ctx)->test_fetch_fallbacks = on;
}

/* Test hook: the token held by each row-cache slot of (layer, KV head g),
 * -1 = free (as the layer's last fetch left it), for comparison with the
 * reference policy of src/rowcache.c. */
fasa_status fasa__vk_test_read_slots(fasa_kv_cache *c, uint32_t layer, uint32_t g, int32_t *out)
{
    vk_cache *vc = c && c->ctx->backend == FASA_BACKEND_VULKAN ? c->impl : NULL;
    if (!vc || !vc->fm || vc->fm->mode != VK_FETCH_ROWCACHE || layer >= c->shape.n_layers || g >= c->shape.n_kv_heads)
        return FASA_ERROR_INVALID_ARGUMENT;
    uint64_t hkv = c->shape.n_kv_heads, at = hkv * (4ull + map_words(c, vc->fm)) + (uint64_t)g * vc->fm->slots;
    vk_context *vk = fasa__vk(c->ctx);
    return fasa__vk_download(vk, &vc->fm->state.chunks[layer], at * 4, out, vc->fm->slots * 4ull);
}
