/* Conformance of external K/V caches (fasa_kv_cache_desc.external): the
 * harness plays the engine.  It owns K and V in one of four layouts, writes
 * the tokens itself and tells the cache which ones changed, the way an
 * engine with speculative decoding would: first a wrong continuation that
 * is synced in pieces, then a rewind (fasa_kv_cache_truncate) and the right
 * tokens written over it and synced again.  The decode that follows must
 * pass the same fp64 checks as every other case. */
#include "conform.h"
#include "ref64.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct conform_engine {
    fasa_context *ctx;
    bool on_cpu;                 /* CPU backend: the buffers wrap our memory, written in place */
    fasa_dtype dtype;
    uint32_t elem, hkv, d, cap;
    fasa_kv_external ext;
    fasa_buffer *buf[2];         /* K's buffer and V's (the same one when shared) */
    void *mem[2];                /* the host image of each buffer */
    uint64_t size[2];
    fasa_buffer *k_of[2], *v_of[2]; /* per layer (conform caches have two) */
    uint64_t k_off[2], v_off[2];
};

const char *conform_ext_name(uint32_t layout)
{
    static const char *names[] = {"", "ext-token", "ext-head", "ext-token-pad", "ext-head-pad-shared"};
    return layout < CONFORM_EXT_COUNT ? names[layout] : "ext-?";
}

/* Strides and where K and V start, per layout (offsets of two elements
 * where the layout is "padded"). */
static void plan_layout(conform_engine *e, uint32_t layout)
{
    uint64_t d = e->d, hkv = e->hkv, cap = e->cap;
    fasa_kv_external *x = &e->ext;
    uint64_t off = layout >= CONFORM_EXT_TOKEN_PAD ? 2ull * e->elem : 0;
    switch (layout) {
    case CONFORM_EXT_TOKEN: x->head_stride = d, x->token_stride = hkv * d; break;
    case CONFORM_EXT_HEAD: x->token_stride = d, x->head_stride = cap * d; break;
    case CONFORM_EXT_TOKEN_PAD: x->head_stride = d + 2, x->token_stride = hkv * (d + 2) + 4; break;
    default: x->token_stride = d + 6, x->head_stride = cap * (d + 6) + 2; break;
    }
    uint64_t span = ((cap - 1) * x->token_stride + (hkv - 1) * x->head_stride + d) * e->elem;
    bool shared = layout == CONFORM_EXT_HEAD_PAD; /* V right after K in K's buffer */
    e->size[0] = off + span + (shared ? off + span : 0);
    e->size[1] = shared ? 0 : off + span;
    for (int l = 0; l < 2; l++) {
        e->k_off[l] = off;
        e->v_off[l] = shared ? 2 * off + span : off;
    }
}

static fasa_status make_buffer(conform_engine *e, int i)
{
    e->mem[i] = calloc(1, e->size[i]);
    if (!e->mem[i]) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    if (e->on_cpu) return fasa_buffer_wrap_host(e->ctx, e->mem[i], e->size[i], &e->buf[i]);
    fasa_status st = fasa_buffer_create(e->ctx, e->size[i], &e->buf[i]);
    return st == FASA_OK ? fasa_buffer_write(e->buf[i], 0, e->mem[i], e->size[i]) : st;
}

void conform_ext_destroy(conform_engine *e)
{
    if (!e) return;
    for (int i = 0; i < 2; i++) {
        fasa_buffer_destroy(e->buf[i]);
        free(e->mem[i]);
    }
    free(e);
}

fasa_status conform_ext_create(fasa_context *ctx, const conform_case *c, fasa_kv_cache_desc *kd,
                               conform_engine **out)
{
    conform_engine *e = calloc(1, sizeof *e);
    if (!e) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    fasa_device_info info;
    fasa_context_device(ctx, &info);
    *e = (conform_engine){.ctx = ctx, .on_cpu = info.backend == FASA_BACKEND_CPU, .dtype = c->dtype,
                          .elem = c->dtype == FASA_DTYPE_F32 ? 4 : 2, .hkv = c->hkv, .d = c->d, .cap = c->L};
    plan_layout(e, c->external);
    fasa_status st = make_buffer(e, 0);
    if (st == FASA_OK && e->size[1]) st = make_buffer(e, 1);
    if (st != FASA_OK) {
        conform_ext_destroy(e);
        return st;
    }
    fasa_buffer *vb = e->size[1] ? e->buf[1] : e->buf[0];
    for (int l = 0; l < 2; l++) e->k_of[l] = e->buf[0], e->v_of[l] = vb; /* both layers view the same memory */
    e->ext.k = e->k_of;
    e->ext.v = e->v_of;
    e->ext.k_offset = e->k_off;
    e->ext.v_offset = e->v_off;
    kd->external = &e->ext;
    *out = e;
    return FASA_OK;
}

/* Writes tokens [t0, t1) of k/v ([L][Hkv][d] fp32) into the engine's
 * memory in the cache dtype; sign -1 writes the negated values (a wrong
 * continuation that scores and attends differently). */
static void write_tokens(conform_engine *e, const float *k, const float *v, uint32_t t0, uint32_t t1, float sign)
{
    const float *src[2] = {k, v};
    for (int which = 0; which < 2; which++) {
        char *base = (char *)(which && e->size[1] ? e->mem[1] : e->mem[0]) + (which ? e->v_off[0] : e->k_off[0]);
        for (uint32_t t = t0; t < t1; t++)
            for (uint32_t g = 0; g < e->hkv; g++) {
                const float *row = src[which] + ((size_t)t * e->hkv + g) * e->d;
                char *dst = base + (t * e->ext.token_stride + g * e->ext.head_stride) * e->elem;
                for (uint32_t i = 0; i < e->d; i++) {
                    float x = sign * row[i];
                    if (e->dtype == FASA_DTYPE_F32) memcpy(dst + 4 * i, &x, 4);
                    else if (e->dtype == FASA_DTYPE_BF16) ((uint16_t *)dst)[i] = ref_bf16_bits(x);
                    else ((uint16_t *)dst)[i] = ref_half_bits(x);
                }
            }
    }
}

/* GPU backends: the engine's writes reach its buffers (the CPU backend
 * reads the written memory itself). */
static fasa_status publish(conform_engine *e)
{
    fasa_status st = FASA_OK;
    for (int i = 0; !e->on_cpu && st == FASA_OK && i < 2; i++)
        if (e->size[i]) st = fasa_buffer_write(e->buf[i], 0, e->mem[i], e->size[i]);
    return st;
}

/* Syncs [t0, t1) in `pieces` calls. */
static fasa_status sync_pieces(fasa_kv_cache *cache, uint32_t layer, uint32_t t0, uint32_t t1, uint32_t pieces)
{
    fasa_status st = FASA_OK;
    for (uint32_t p = 0, at = t0; st == FASA_OK && at < t1; p++) {
        uint32_t n = p + 1 >= pieces ? t1 - at : (t1 - t0) / pieces;
        if (n == 0) n = t1 - at;
        st = fasa_kv_cache_sync(cache, layer, at, n);
        at += n;
    }
    return st;
}

fasa_status conform_ext_fill(conform_engine *e, fasa_kv_cache *cache, uint32_t layer, const conform_case *c,
                             const float *k, const float *v)
{
    uint32_t L = c->L, keep = L / 2; /* tokens before the rewind point stay */
    write_tokens(e, k, v, 0, keep, 1.0f);
    write_tokens(e, k, v, keep, L, -1.0f); /* the wrong continuation */
    fasa_status st = publish(e);
    if (st == FASA_OK) st = sync_pieces(cache, layer, 0, L, c->n_appends);
    if (st == FASA_OK && keep) st = fasa_kv_cache_sync(cache, layer, 0, keep < 3 ? keep : 3); /* rewritten in place */
    if (st == FASA_OK) st = fasa_kv_cache_truncate(cache, keep);
    if (st != FASA_OK) return st;
    write_tokens(e, k, v, keep, L, 1.0f);
    st = publish(e);
    if (st == FASA_OK) st = sync_pieces(cache, layer, keep, L, L - keep > 1 ? 2 : 1);
    return st;
}
