/* Vulkan backend: KV cache storage (chunked K, V, K_dom per layer), the
 * per-step scratch (scores and candidates as chunked arrays; q, o, selection,
 * histograms, partials and the append stage in one buffer), the tables
 * (chunk addresses, tip_map, union dims), and host read-backs. */
#include "vk_internal.h"

#include <stdlib.h>
#include <string.h>

#define STAGE_MAX_TOKENS 1024u
#define STAGE_MAX_BYTES (32u << 20)

static uint32_t round_up(uint32_t x, uint32_t m) { return (x + m - 1) / m * m; }

/* ------------------------------------------------------------------------ */
/* Geometry                                                                  */
/* ------------------------------------------------------------------------ */

static fasa_status check_geometry(fasa_kv_cache *c, vk_context *vk)
{
    const fasa_model_shape *s = &c->shape;
    uint64_t sc_stride = ((uint64_t)c->capacity + VK_TOPK_TILE - 1) / VK_TOPK_TILE * VK_TOPK_TILE;
    uint32_t max_groups = vk->props.limits.maxComputeWorkGroupCount[0];
    if ((uint64_t)s->n_kv_heads * c->capacity >= (1ull << 32) || (uint64_t)s->n_q_heads * sc_stride >= (1ull << 32))
        return fasa__error(c->ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.capacity: %u tokens x %u heads exceed the 2^32 rows the vulkan backend indexes",
                           c->capacity, s->n_q_heads);
    if ((c->capacity + VK_TIP_TOKENS - 1) / VK_TIP_TOKENS > max_groups)
        return fasa__error(c->ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.capacity: %u tokens need more than the %u workgroups per dispatch this device allows "
                           "(at most %llu tokens)", c->capacity, max_groups,
                           (unsigned long long)max_groups * VK_TIP_TOKENS);
    return FASA_OK;
}

static void plan_arrays(fasa_kv_cache *c, vk_context *vk, vk_cache *vc)
{
    const fasa_model_shape *s = &c->shape;
    uint32_t epw = 4 / c->elem_size; /* elements per word */
    uint64_t rows = (uint64_t)s->n_kv_heads * c->capacity;
    vc->kv_stride = c->capacity;
    vc->sc_stride = round_up(c->capacity, VK_TOPK_TILE);
    vc->n_tiles = vc->sc_stride / VK_TOPK_TILE;
    for (uint32_t l = 0; l < s->n_layers; l++) {
        if (!c->ext) { /* an external cache's K and V are the engine's: no arrays */
            fasa__vk_array_plan(vk, &vc->layers[l].k, rows, s->head_dim / epw);
            fasa__vk_array_plan(vk, &vc->layers[l].v, rows, s->head_dim / epw);
        }
        if (c->has_dims) fasa__vk_array_plan(vk, &vc->layers[l].kd, rows, c->u_pad / epw);
    }
    fasa__vk_array_plan(vk, &vc->scores, (uint64_t)s->n_q_heads * vc->sc_stride, 1);
    fasa__vk_array_plan(vk, &vc->cand, (uint64_t)s->n_q_heads * vc->sc_stride, 1);
}

/* Scratch words: q, o, selection, partials, append stage, then the region
 * cleared at every step (histograms [4][Hq][256], row states [Hq][8], the
 * FASA-M token bitmap and slot flags), the FASA-M per-head lists and
 * remapped selection, then the per-tile counters. */
static uint64_t plan_scratch(fasa_kv_cache *c, vk_cache *vc)
{
    const fasa_model_shape *s = &c->shape;
    uint64_t hq = s->n_q_heads, d = s->head_dim;
    uint64_t row_words = (uint64_t)s->n_kv_heads * d;
    uint64_t stage = STAGE_MAX_BYTES / (row_words * 8);
    if (stage > STAGE_MAX_TOKENS) stage = STAGE_MAX_TOKENS;
    if (stage > c->capacity) stage = c->capacity;
    if (stage < 1) stage = 1;
    vc->stage_tokens = (uint32_t)stage;
    uint64_t at = 0;
    vc->q_off = (uint32_t)at, at += hq * d;
    vc->o_off = (uint32_t)at, at += hq * d;
    vc->sel_off = (uint32_t)at, at += hq * c->max_n_fac;
    vc->part_off = (uint32_t)at, at += hq * VK_MAX_SPLITS * (d + 2);
    vc->stage_half = (uint32_t)(stage * row_words);
    vc->stage_off = (uint32_t)at, at += 2ull * vc->stage_half;
    vc->zero_off = (uint32_t)at;
    vc->hist_off = (uint32_t)at, at += 4 * hq * 256;
    vc->state_off = (uint32_t)at, at += hq * 8;
    vk_fetch *fm = vc->fm;
    if (fm) fm->fs_off = (uint32_t)at, at += fm->zeroed_words; /* FASA-M bitmap and slot flags */
    vc->zero_words = (uint32_t)(at - vc->zero_off);
    if (fm) at += fm->work_words - hq * c->max_n_fac; /* per-head lists, right after (fetch.comp) */
    if (fm) fm->remap_off = (uint32_t)at, at += hq * c->max_n_fac;
    vc->tcnt_off = (uint32_t)at, at += hq * vc->n_tiles;
    vc->ttie_off = (uint32_t)at, at += hq * vc->n_tiles;
    return at * 4;
}

/* ------------------------------------------------------------------------ */
/* Tables: chunk addresses, tip_map, union dims                              */
/* ------------------------------------------------------------------------ */

/* Arrays with a chunk table: K, V, K_dom per layer, scores, candidates,
 * then the FASA-M slot arrays and state. */
static uint32_t n_table_arrays(fasa_kv_cache *c, vk_cache *vc)
{
    return c->shape.n_layers * 3 + 2 + fasa__vk_fetch_arrays(vc->fm, NULL);
}

static vk_array *table_array(vk_cache *vc, fasa_kv_cache *c, uint32_t i)
{
    uint32_t per_layer = 3, n_layer_arrays = c->shape.n_layers * per_layer;
    if (i < n_layer_arrays) {
        vk_layer *lay = &vc->layers[i / per_layer];
        return i % per_layer == 0 ? &lay->k : i % per_layer == 1 ? &lay->v : &lay->kd;
    }
    if (i < n_layer_arrays + 2) return i == n_layer_arrays ? &vc->scores : &vc->cand;
    uint32_t j = i - n_layer_arrays - 2; /* the order of fasa__vk_fetch_arrays */
    if (j == 2 * vc->fm->n_slot_arrays) return &vc->fm->state;
    return j % 2 ? &vc->fm->v_slots[j / 2] : &vc->fm->k_slots[j / 2];
}

static uint64_t plan_tables(fasa_kv_cache *c, vk_cache *vc, uint32_t n_arrays)
{
    uint64_t at = 0;
    for (uint32_t i = 0; i < n_arrays; i++) {
        vk_array *a = table_array(vc, c, i);
        a->table_at = at;
        at += (uint64_t)a->n_chunks * 8;
    }
    at = (at + 15) & ~15ull;
    vc->map_at = at;
    if (c->has_dims) at += (uint64_t)c->shape.n_layers * c->shape.n_q_heads * c->u_pad * 4;
    vc->dims_at = at;
    if (c->has_dims) at += (uint64_t)c->shape.n_layers * c->shape.n_kv_heads * c->u_pad * 4;
    return at < 16 ? 16 : at;
}

static void fill_tables(fasa_kv_cache *c, vk_cache *vc, uint32_t n_arrays, uint8_t *host)
{
    for (uint32_t i = 0; i < n_arrays; i++) {
        vk_array *a = table_array(vc, c, i);
        uint64_t *t = (uint64_t *)(host + a->table_at);
        for (uint32_t k = 0; k < a->n_chunks; k++) t[k] = a->chunks[k].addr;
        a->table = vc->tables.addr + a->table_at;
    }
    if (!c->has_dims) return;
    const fasa_model_shape *s = &c->shape;
    int32_t *map = (int32_t *)(host + vc->map_at);
    size_t n_map = (size_t)s->n_layers * s->n_q_heads * c->u_pad;
    for (size_t i = 0; i < n_map; i++) map[i] = c->tip_map[i];
    uint32_t *dims = (uint32_t *)(host + vc->dims_at);
    for (uint32_t l = 0; l < s->n_layers; l++)
        for (uint32_t g = 0; g < s->n_kv_heads; g++) {
            size_t gi = (size_t)l * s->n_kv_heads + g;
            for (uint32_t slot = 0; slot < c->u_pad; slot++)
                dims[gi * c->u_pad + slot] = slot < c->union_size[gi] ? c->union_dims[gi * c->u_pad + slot] : 0xffffffffu;
        }
}

/* Written through the mapping, or kept for the cache's init commands
 * (vkCmdUpdateBuffer) when the tables' memory is not host-mapped. */
static fasa_status create_tables(fasa_kv_cache *c, vk_context *vk, vk_cache *vc)
{
    uint32_t n_arrays = n_table_arrays(c, vc);
    uint64_t bytes = plan_tables(c, vc, n_arrays);
    fasa_status st = fasa__vk_buf_create(vk, bytes, false, "the cache's tables", &vc->tables);
    if (st != FASA_OK) return st;
    uint8_t *host = fasa__alloc(c->ctx, bytes);
    if (!host) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    fill_tables(c, vc, n_arrays, host);
    if (!vc->tables.map) {
        vc->init_tables = host;
        return FASA_OK;
    }
    memcpy(vc->tables.map, host, bytes);
    fasa__free(c->ctx, host);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Initialisation commands                                                   */
/* ------------------------------------------------------------------------ */

/* Recorded once: done at record time in a host's command buffer (its data
 * is copied into it), once submitted in a standalone stream. */
void fasa__vk_cache_init_record(fasa_exec *e, fasa_kv_cache *c)
{
    vk_cache *vc = c->impl;
    if (!vc->init_pending) return;
    if (vc->init_tables) fasa__vk_update(e, &vc->tables, 0, vc->init_tables, vc->tables.size);
    fasa__vk_fetch_init_record(e, c);
    fasa__vk_barrier_all(e);
    if (!e->embedded) {
        e->applies_init = &vc->init_pending;
        return;
    }
    vc->init_pending = false;
    fasa__free(c->ctx, vc->init_tables);
    vc->init_tables = NULL;
}

/* Tables that are not host-mapped and a row cache's state need commands:
 * recorded and submitted now, or left to the first recorded call with
 * FASA_VK_EMBED_RECORD_CACHE_INIT (fasa_vulkan.h, "Queue submissions"). */
static fasa_status init_cache(fasa_kv_cache *c, vk_context *vk, vk_cache *vc)
{
    vc->init_pending = vc->init_tables || fasa__vk_fetch_needs_init(vc);
    if (!vc->init_pending || vk->record_init) return FASA_OK;
    fasa_exec *e = NULL;
    fasa_status st = fasa__vk_exec_begin(c->ctx, &e);
    if (st != FASA_OK) return st;
    fasa__vk_cache_init_record(e, c);
    st = fasa__vk_exec_end(c->ctx, e, true);
    if (st == FASA_OK && !vc->init_pending) {
        fasa__free(c->ctx, vc->init_tables);
        vc->init_tables = NULL;
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Creation and destruction                                                  */
/* ------------------------------------------------------------------------ */

static uint64_t array_bytes(const vk_array *a) { return a->n_rows * a->row_words * 4; }

/* Application host memory for an offloaded cache of d: K and V of every
 * layer in the import layout (fasa__vk_import_size). */
fasa_status fasa__vk_host_memory_requirements(fasa_context *ctx, const fasa_kv_cache_desc *d, uint64_t *size,
                                              uint64_t *alignment)
{
    vk_context *vk = fasa__vk(ctx);
    if (!vk->host_ptr_props)
        return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                           "desc.host_memory: VK_EXT_external_memory_host is not enabled on %s (%s)",
                           vk->props.deviceName, vk->owns_device ? "the device does not offer it"
                                                                 : "fasa_vk_embed.external_memory_host_enabled is false");
    uint32_t epw = 4 / fasa__dtype_size(d->dtype);
    vk_array kv;
    fasa__vk_array_plan(vk, &kv, (uint64_t)d->shape.n_kv_heads * d->capacity, d->shape.head_dim / epw);
    *size = 2ull * d->shape.n_layers * fasa__vk_import_size(vk, &kv); /* K and V of every layer */
    *alignment = vk->import_align;
    return FASA_OK;
}

static fasa_status create_storage(fasa_kv_cache *c, vk_context *vk, vk_cache *vc)
{
    uint32_t nl = c->shape.n_layers;
    fasa_status st = FASA_OK;
    bool import = c->host_memory != NULL; /* K and V in the application's memory */
    for (uint32_t l = 0; st == FASA_OK && l < nl; l++) {
        vc->layers[l].k.host_import = vc->layers[l].v.host_import = import;
        if (!c->ext) st = fasa__vk_array_create(vk, &vc->layers[l].k, "K");
        if (st == FASA_OK && !c->ext) st = fasa__vk_array_create(vk, &vc->layers[l].v, "V");
        if (st == FASA_OK && c->has_dims) st = fasa__vk_array_create(vk, &vc->layers[l].kd, "K_dom");
    }
    if (st == FASA_OK) st = fasa__vk_array_create(vk, &vc->scores, "scores");
    if (st == FASA_OK) st = fasa__vk_array_create(vk, &vc->cand, "top-k candidates");
    if (st == FASA_OK) st = fasa__vk_fetch_create_arrays(vk, vc->fm);
    if (st != FASA_OK) return st;
    bool offload = c->placement == FASA_PLACEMENT_OFFLOAD;
    uint32_t n_fetch = fasa__vk_fetch_arrays(vc->fm, NULL);
    vk_array **dev = fasa__alloc(c->ctx, (3 * nl + 2 + n_fetch) * sizeof(vk_array *));
    vk_array **host = fasa__alloc(c->ctx, (2 * nl + 1) * sizeof(vk_array *));
    if (!dev || !host) st = fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    uint32_t nd = 0, nh = 0;
    for (uint32_t l = 0; st == FASA_OK && l < nl; l++) {
        vk_array **kv = offload ? host : dev;
        uint32_t *n = offload ? &nh : &nd;
        if (!c->ext) kv[(*n)++] = &vc->layers[l].k;
        if (!c->ext) kv[(*n)++] = &vc->layers[l].v;
        if (c->has_dims) dev[nd++] = &vc->layers[l].kd;
    }
    if (st == FASA_OK) {
        dev[nd++] = &vc->scores;
        dev[nd++] = &vc->cand;
        nd += fasa__vk_fetch_arrays(vc->fm, dev + nd); /* slots and row-cache state: device-local */
        st = fasa__vk_arena_bind(vk, &vc->arena_dev, dev, nd, false, "the KV cache (device memory)");
    }
    if (st == FASA_OK && nh && import)
        st = fasa__vk_arena_import(vk, &vc->arena_host, host, nh, c->host_memory, "the offloaded K and V");
    else if (st == FASA_OK && nh) st = fasa__vk_arena_bind(vk, &vc->arena_host, host, nh, true, "the offloaded K and V");
    fasa__free(c->ctx, dev);
    fasa__free(c->ctx, host);
    return st;
}

/* Where K or V of layer l of an external cache starts: the device address
 * of the engine's VkBuffer plus the wrap's and the layer's offsets.  A
 * buffer created without SHADER_DEVICE_ADDRESS usage has none (0 here; the
 * validation layer reports it too). */
static fasa_status external_address(fasa_kv_cache *c, vk_context *vk, int which, uint32_t l, VkDeviceAddress *out)
{
    const fasa_buffer *buf = which ? c->ext->v[l] : c->ext->k[l];
    const vk_buf *b = buf->impl;
    VkBufferDeviceAddressInfo ai = {.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
    ai.buffer = b->buffer;
    VkDeviceAddress base = b->addr ? b->addr : vk->fn.vkGetBufferDeviceAddress(vk->device, &ai);
    if (!base)
        return fasa__error(c->ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "desc.external->%s[%u]: the VkBuffer has no device address (create it with "
                           "VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT and bind memory allocated with "
                           "VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT)", which ? "v" : "k", l);
    *out = base + b->offset + (which ? c->ext->v_offset[l] : c->ext->k_offset[l]);
    return FASA_OK;
}

/* The engine's K and V of every layer, for the _X kernels and sync. */
static fasa_status resolve_external(fasa_kv_cache *c, vk_context *vk, vk_cache *vc)
{
    uint32_t epw = 4 / c->elem_size; /* strides are even: whole words */
    vc->ext_ts = (uint32_t)(c->ext->token_stride / epw);
    vc->ext_hs = (uint32_t)(c->ext->head_stride / epw);
    fasa_status st = FASA_OK;
    for (uint32_t l = 0; st == FASA_OK && l < c->shape.n_layers; l++) {
        st = external_address(c, vk, 0, l, &vc->layers[l].k_ext);
        if (st == FASA_OK) st = external_address(c, vk, 1, l, &vc->layers[l].v_ext);
    }
    return st;
}

/* K and V of an offloaded cache save device memory only where they sit in
 * memory that is not device-local (discrete GPUs); unified-memory devices
 * (lavapipe, integrated GPUs) have one pool: report it all as device. */
static bool offload_saves(const fasa_kv_cache *c, const vk_context *vk, const vk_cache *vc)
{
    if (c->placement != FASA_PLACEMENT_OFFLOAD || !vc->arena_host.n_blocks) return false;
    return !(vk->mem.memoryTypes[vc->arena_host.type].propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
}

static void account(fasa_kv_cache *c, vk_context *vk, vk_cache *vc)
{
    uint64_t kv = 0, kd = 0;
    for (uint32_t l = 0; l < c->shape.n_layers; l++) {
        kv += array_bytes(&vc->layers[l].k) + array_bytes(&vc->layers[l].v);
        if (c->has_dims) kd += array_bytes(&vc->layers[l].kd);
    }
    bool saves = offload_saves(c, vk, vc);
    c->device_bytes = kd + fasa__vk_fetch_device_bytes(vc->fm) + (saves ? 0 : kv);
    c->host_bytes = saves ? kv : 0;
    c->scratch_bytes = array_bytes(&vc->scores) + array_bytes(&vc->cand) + vc->scratch.size + vc->tables.size;
    if (c->placement != FASA_PLACEMENT_OFFLOAD || saves || vk->logged_unified) return;
    vk->logged_unified = true;
    fasa__log(c->ctx, FASA_LOG_INFO,
              "vulkan: %s has no host-visible memory outside device memory (unified memory): FASA-M keeps K and V "
              "in the one memory and saves no device memory here", vk->props.deviceName);
}

void fasa__vk_cache_destroy(fasa_kv_cache *c)
{
    vk_cache *vc = c->impl;
    if (!vc) return;
    vk_context *vk = fasa__vk(c->ctx);
    for (uint32_t l = 0; vc->layers && l < c->shape.n_layers; l++) {
        fasa__vk_array_destroy(vk, &vc->layers[l].k);
        fasa__vk_array_destroy(vk, &vc->layers[l].v);
        fasa__vk_array_destroy(vk, &vc->layers[l].kd);
    }
    fasa__vk_array_destroy(vk, &vc->scores);
    fasa__vk_array_destroy(vk, &vc->cand);
    fasa__vk_fetch_destroy(c, vk, vc);
    fasa__vk_arena_free(vk, &vc->arena_dev);
    fasa__vk_arena_free(vk, &vc->arena_host);
    fasa__vk_buf_destroy(vk, &vc->scratch);
    fasa__vk_buf_destroy(vk, &vc->tables);
    fasa__vk_batch_free(vk, &vc->batch);
    fasa__free(c->ctx, vc->init_tables);
    fasa__free(c->ctx, vc->layers);
    fasa__free(c->ctx, vc);
    c->impl = NULL;
}

fasa_status fasa__vk_cache_create(fasa_kv_cache *c)
{
    vk_context *vk = fasa__vk(c->ctx);
    if (vk->lost) return fasa__error(c->ctx, FASA_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    fasa_status st = check_geometry(c, vk);
    if (st == FASA_OK) st = fasa__vk_pipelines_ensure(vk, fasa__vk_dtype(c), c->ext != NULL, false);
    if (st != FASA_OK) return st;
    vk_cache *vc = fasa__alloc(c->ctx, sizeof *vc);
    if (!vc) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    c->impl = vc;
    vc->layers = fasa__alloc(c->ctx, c->shape.n_layers * sizeof(vk_layer));
    if (!vc->layers) st = fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    if (st == FASA_OK) {
        plan_arrays(c, vk, vc);
        st = fasa__vk_fetch_plan(c, vk, vc);
    }
    if (st == FASA_OK) st = create_storage(c, vk, vc);
    if (st == FASA_OK) st = fasa__vk_buf_create(vk, plan_scratch(c, vc), false, "the step scratch", &vc->scratch);
    if (st == FASA_OK) st = create_tables(c, vk, vc);
    if (st == FASA_OK) st = fasa__vk_fetch_init(c, vk, vc);
    if (st == FASA_OK && c->ext) st = resolve_external(c, vk, vc);
    if (st == FASA_OK) st = init_cache(c, vk, vc);
    st = fasa__vk_check(vk, st);
    if (st != FASA_OK) {
        fasa__vk_cache_destroy(c);
        return st;
    }
    account(c, vk, vc);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Host read-backs                                                           */
/* ------------------------------------------------------------------------ */

#define READ_PIECE 1024u

static fasa_status read_rows(fasa_kv_cache *c, const vk_array *a, uint32_t first, uint32_t n, float *out,
                             uint32_t *tmp)
{
    vk_context *vk = fasa__vk(c->ctx);
    uint32_t d = c->shape.head_dim, hkv = c->shape.n_kv_heads;
    for (uint32_t g = 0; g < hkv; g++)
        for (uint32_t t0 = 0; t0 < n; t0 += READ_PIECE) {
            uint32_t m = n - t0 < READ_PIECE ? n - t0 : READ_PIECE;
            fasa_status st = fasa__vk_array_read(vk, a, (uint64_t)g * c->capacity + first + t0, m, tmp);
            if (st != FASA_OK) return st;
            for (uint32_t t = 0; t < m; t++) {
                float *dst = out + ((size_t)(t0 + t) * hkv + g) * d;
                fasa__dtype_to_float_n(c->dtype, (const char *)tmp + (size_t)t * d * c->elem_size, dst, d);
            }
        }
    return FASA_OK;
}

/* Rows of an external cache, from the engine's buffer through its layout:
 * one download per run of rows that are adjacent in memory (a head's tokens
 * when token_stride = d), else per row. */
static fasa_status read_ext_rows(fasa_kv_cache *c, int which, uint32_t layer, uint32_t first, uint32_t n,
                                 float *out, uint32_t *tmp)
{
    vk_context *vk = fasa__vk(c->ctx);
    const fasa_kv_ext *x = c->ext;
    const vk_buf *b = (which ? x->v[layer] : x->k[layer])->impl;
    uint64_t off = which ? x->v_offset[layer] : x->k_offset[layer];
    uint32_t d = c->shape.head_dim, hkv = c->shape.n_kv_heads, es = c->elem_size;
    uint32_t run = x->token_stride == d ? READ_PIECE : 1;
    for (uint32_t g = 0; g < hkv; g++)
        for (uint32_t t0 = 0; t0 < n; t0 += run) {
            uint32_t m = n - t0 < run ? n - t0 : run;
            uint64_t at = off + ((first + t0) * x->token_stride + g * x->head_stride) * es;
            fasa_status st = fasa__vk_download(vk, b, at, tmp, (uint64_t)m * d * es);
            if (st != FASA_OK) return st;
            for (uint32_t t = 0; t < m; t++) {
                float *dst = out + ((size_t)(t0 + t) * hkv + g) * d;
                fasa__dtype_to_float_n(c->dtype, (const char *)tmp + (size_t)t * d * c->elem_size, dst, d);
            }
        }
    return FASA_OK;
}

fasa_status fasa__vk_cache_read(fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n, float *k,
                                float *v)
{
    vk_cache *vc = c->impl;
    vk_context *vk = fasa__vk(c->ctx);
    uint32_t *tmp = fasa__alloc_aligned(c->ctx, (size_t)READ_PIECE * c->shape.head_dim * 4, 64);
    if (!tmp) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    fasa_status st = FASA_OK;
    if (c->ext) {
        if (k) st = read_ext_rows(c, 0, layer, first, n, k, tmp);
        if (st == FASA_OK && v) st = read_ext_rows(c, 1, layer, first, n, v, tmp);
        fasa__free(c->ctx, tmp);
        return fasa__vk_check(vk, st);
    }
    if (k) st = read_rows(c, &vc->layers[layer].k, first, n, k, tmp);
    if (st == FASA_OK && v) st = read_rows(c, &vc->layers[layer].v, first, n, v, tmp);
    fasa__free(c->ctx, tmp);
    return fasa__vk_check(vk, st);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

fasa_status fasa__vk_read_selection(fasa_kv_cache *c, const fasa_step *step, int32_t *selected,
                                    uint32_t selected_stride, float *scores, uint32_t scores_stride)
{
    vk_cache *vc = c->impl;
    vk_context *vk = fasa__vk(c->ctx);
    uint32_t forced = step->n_sink + step->n_recent;
    fasa_status st = FASA_OK;
    for (uint32_t r = 0; st == FASA_OK && r < step->n_rows; r++) {
        if (selected) {
            int32_t *row = selected + (size_t)r * selected_stride;
            st = fasa__vk_download(vk, &vc->scratch, ((uint64_t)vc->sel_off + (uint64_t)r * c->max_n_fac) * 4, row,
                                   (uint64_t)step->n_fac * 4);
            /* the GPU emits the top-k in any order; give it the CPU's (ascending) */
            if (st == FASA_OK) qsort(row + forced, step->n_fac - forced, sizeof(int32_t), cmp_i32);
        }
        if (st == FASA_OK && scores)
            st = fasa__vk_array_read(vk, &vc->scores, (uint64_t)r * vc->sc_stride, step->L,
                                     scores + (size_t)r * scores_stride);
    }
    return fasa__vk_check(vk, st);
}
