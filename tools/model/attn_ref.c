/* Reference attention: f32 host KV cache and dense softmax attention. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "kernels.h"

#define DECODE_CHUNK 256   /* keys per split-K task in a decode step */
#define QUERY_BLOCK 16     /* query rows per task in dense prefill */

struct fm_ref_attn {
    fm_hparams hp;
    uint32_t capacity;
    uint32_t *length;        /* [n_layer] */
    float *k, *v;            /* [n_layer][capacity][Hkv][d] */
    float *partial;          /* split-K results: [task][group][d + 2] */
    float *scores;           /* [task][group][DECODE_CHUNK] */
    fm_pool *pool;
};

static uint64_t row_floats(const fm_hparams *hp)
{
    return (uint64_t)hp->n_head_kv * hp->head_dim;
}

static uint32_t max_chunks(uint32_t capacity)
{
    return (capacity + DECODE_CHUNK - 1) / DECODE_CHUNK;
}

fm_status fm_ref_attn_create(const fm_hparams *hp, uint32_t capacity, fm_pool *pool,
                             fm_ref_attn **out, fm_error *err)
{
    if (!hp || !out || capacity == 0)
        return fm_fail(err, FM_ERR_ARG, "fm_ref_attn_create: NULL argument or zero capacity");
    *out = NULL;
    fm_ref_attn *r = calloc(1, sizeof *r);
    if (!r)
        return fm_fail(err, FM_ERR_NOMEM, "reference attention: out of memory");
    r->hp = *hp;
    r->capacity = capacity;
    r->pool = pool;
    uint64_t per_layer = (uint64_t)capacity * row_floats(hp);
    uint64_t tasks = (uint64_t)hp->n_head_kv * max_chunks(capacity);
    uint32_t group = hp->n_head / hp->n_head_kv;
    r->length = calloc(hp->n_layer, sizeof *r->length);
    r->k = fm_alloc(per_layer * hp->n_layer * sizeof(float));
    r->v = fm_alloc(per_layer * hp->n_layer * sizeof(float));
    r->partial = fm_alloc(tasks * group * (hp->head_dim + 2) * sizeof(float));
    r->scores = fm_alloc(tasks * group * DECODE_CHUNK * sizeof(float));
    if (!r->length || !r->k || !r->v || !r->partial || !r->scores) {
        fm_ref_attn_destroy(r);
        return fm_fail(err, FM_ERR_NOMEM,
                       "reference attention: out of memory for a %u-token f32 KV cache (%.0f MB)",
                       capacity, 2.0 * (double)per_layer * hp->n_layer * 4 / 1e6);
    }
    *out = r;
    return FM_OK;
}

void fm_ref_attn_destroy(fm_ref_attn *r)
{
    if (!r)
        return;
    free(r->length);
    fm_free(r->k);
    fm_free(r->v);
    fm_free(r->partial);
    fm_free(r->scores);
    free(r);
}

uint32_t fm_ref_attn_length(const fm_ref_attn *r, uint32_t layer)
{
    return layer < r->hp.n_layer ? r->length[layer] : 0;
}

const float *fm_ref_attn_keys(const fm_ref_attn *r, uint32_t layer)
{
    return r->k + (uint64_t)layer * r->capacity * row_floats(&r->hp);
}

const float *fm_ref_attn_values(const fm_ref_attn *r, uint32_t layer)
{
    return r->v + (uint64_t)layer * r->capacity * row_floats(&r->hp);
}

static fm_status ref_append(void *user, uint32_t layer, uint32_t n, const float *k, const float *v,
                            fm_error *err)
{
    fm_ref_attn *r = user;
    if (layer >= r->hp.n_layer)
        return fm_fail(err, FM_ERR_ARG, "append_kv: layer %u >= %u", layer, r->hp.n_layer);
    if (n > r->capacity - r->length[layer])
        return fm_fail(err, FM_ERR_CAPACITY, "append_kv: layer %u holds %u of %u tokens, cannot add %u",
                       layer, r->length[layer], r->capacity, n);
    uint64_t row = row_floats(&r->hp), at = (uint64_t)r->length[layer] * row;
    memcpy((float *)fm_ref_attn_keys(r, layer) + at, k, n * row * sizeof(float));
    memcpy((float *)fm_ref_attn_values(r, layer) + at, v, n * row * sizeof(float));
    r->length[layer] += n;
    return FM_OK;
}

static fm_status ref_truncate(void *user, uint32_t n, fm_error *err)
{
    fm_ref_attn *r = user;
    (void)err;
    for (uint32_t l = 0; l < r->hp.n_layer; l++)
        if (r->length[l] > n)
            r->length[l] = n;
    return FM_OK;
}

/* ------------------------------------------------------------------------ */
/* Decode: split-K over (KV head, chunk of keys), merged with the usual      */
/* running-max rescaling so the result equals one softmax over all keys.     */
/* ------------------------------------------------------------------------ */

typedef struct decode_job {
    const fm_ref_attn *r;
    const float *q, *k, *v;
    uint32_t n_keys, n_chunks;
} decode_job;

/* partial layout per (task, head in group): [m, l, acc[d]] */
static void decode_task(void *ctx, uint32_t task, uint32_t thread)
{
    const decode_job *j = ctx;
    const fm_hparams *hp = &j->r->hp;
    uint32_t d = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    uint32_t g = task / j->n_chunks, c = task % j->n_chunks;
    uint32_t k0 = c * DECODE_CHUNK, k1 = k0 + DECODE_CHUNK < j->n_keys ? k0 + DECODE_CHUNK : j->n_keys;
    uint64_t row = row_floats(hp);
    float scale = 1.0f / sqrtf((float)d);
    (void)thread;
    float *s = j->r->scores + (uint64_t)task * group * DECODE_CHUNK;
    /* All query heads of the KV group against this chunk of keys at once. */
    fm_scores(j->q + (uint64_t)g * group * d, d, group, j->k + k0 * row + (uint64_t)g * d, row,
              k1 - k0, d, scale, s, DECODE_CHUNK);
    for (uint32_t h = 0; h < group; h++, s += DECODE_CHUNK) {
        float *p = j->r->partial + ((uint64_t)task * group + h) * (d + 2);
        float m = -INFINITY;
        for (uint32_t t = 0; t < k1 - k0; t++)
            m = s[t] > m ? s[t] : m;
        float l = fm_softmax_exp(s, k1 - k0, m);
        fm_weighted_sum(s, j->v + k0 * row + (uint64_t)g * d, row, k1 - k0, d, p + 2);
        p[0] = m;
        p[1] = l;
    }
}

static void merge_partials(const decode_job *j, float *o)
{
    const fm_hparams *hp = &j->r->hp;
    uint32_t d = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    for (uint32_t head = 0; head < hp->n_head; head++) {
        uint32_t g = head / group, h = head % group;
        float m = -INFINITY, l = 0.0f, *out = o + (uint64_t)head * d;
        for (uint32_t c = 0; c < j->n_chunks; c++) {
            const float *p = j->r->partial + ((uint64_t)(g * j->n_chunks + c) * group + h) * (d + 2);
            m = p[0] > m ? p[0] : m;
        }
        memset(out, 0, d * sizeof(float));
        for (uint32_t c = 0; c < j->n_chunks; c++) {
            const float *p = j->r->partial + ((uint64_t)(g * j->n_chunks + c) * group + h) * (d + 2);
            float w = expf(p[0] - m);
            l += p[1] * w;
            fm_axpy(out, w, p + 2, d);
        }
        for (uint32_t i = 0; i < d; i++)
            out[i] /= l;
    }
}

static fm_status ref_decode(void *user, uint32_t layer, const float *q, float *o, fm_error *err)
{
    fm_ref_attn *r = user;
    if (layer >= r->hp.n_layer)
        return fm_fail(err, FM_ERR_ARG, "decode: layer %u >= %u", layer, r->hp.n_layer);
    if (r->length[layer] == 0)
        return fm_fail(err, FM_ERR_ARG, "decode: layer %u has no cached tokens", layer);
    decode_job j = { r, q, fm_ref_attn_keys(r, layer), fm_ref_attn_values(r, layer),
                     r->length[layer], max_chunks(r->length[layer]) };
    uint32_t tasks = r->hp.n_head_kv * j.n_chunks;
    if (r->pool)
        fm_pool_run(r->pool, tasks, decode_task, &j);
    else
        for (uint32_t t = 0; t < tasks; t++)
            decode_task(&j, t, 0);
    merge_partials(&j, o);
    return FM_OK;
}

fm_attn_ops fm_ref_attn_ops(fm_ref_attn *r)
{
    return (fm_attn_ops){ ref_append, ref_decode, ref_truncate, r };
}

/* ------------------------------------------------------------------------ */
/* Dense causal attention for prefill                                        */
/* ------------------------------------------------------------------------ */

typedef struct dense_job {
    const fm_hparams *hp;
    const float *q, *k, *v;
    float *o, *scratch;
    uint32_t p0, n, n_blocks, capacity;
} dense_job;

static uint64_t score_stride(uint32_t capacity)
{
    return (uint64_t)capacity + 16;
}

uint64_t fm_dense_scratch_floats(uint32_t capacity)
{
    return QUERY_BLOCK * score_stride(capacity);
}

/* Softmax-weighted sum of V for one query row whose scores are in s. */
static void dense_row(const dense_job *j, uint32_t g, uint32_t n_keys, float *s, float *o)
{
    uint32_t d = j->hp->head_dim;
    float m = -INFINITY;
    for (uint32_t i = 0; i < n_keys; i++)
        m = s[i] > m ? s[i] : m;
    float l = fm_softmax_exp(s, n_keys, m);
    fm_weighted_sum(s, j->v + (uint64_t)g * d, row_floats(j->hp), n_keys, d, o);
    for (uint32_t i = 0; i < d; i++)
        o[i] /= l;
}

/* One (head, block of query rows): scores of every row against the keys the
 * last row may see (earlier rows ignore their masked tail), then each row's
 * softmax and weighted sum. */
static void dense_task(void *ctx, uint32_t task, uint32_t thread)
{
    const dense_job *j = ctx;
    const fm_hparams *hp = j->hp;
    /* Blocks are numbered last-first so the long causal rows start early
     * and the dynamic scheduler fills in with short ones. */
    uint32_t head = task % hp->n_head, block = j->n_blocks - 1 - task / hp->n_head;
    uint32_t d = hp->head_dim, g = head / (hp->n_head / hp->n_head_kv);
    uint32_t t0 = block * QUERY_BLOCK, t1 = t0 + QUERY_BLOCK < j->n ? t0 + QUERY_BLOCK : j->n;
    uint64_t qrow = (uint64_t)hp->n_head * d, stride = score_stride(j->capacity);
    float *s = j->scratch + (uint64_t)thread * fm_dense_scratch_floats(j->capacity);
    const float *q = j->q + t0 * qrow + (uint64_t)head * d;
    fm_scores(q, qrow, t1 - t0, j->k + (uint64_t)g * d, row_floats(hp), j->p0 + t1, d,
              1.0f / sqrtf((float)d), s, stride);
    for (uint32_t t = t0; t < t1; t++)
        dense_row(j, g, j->p0 + t + 1, s + (t - t0) * stride, j->o + t * qrow + (uint64_t)head * d);
}

void fm_dense_causal(fm_pool *pool, const fm_hparams *hp, const float *q, const float *k,
                     const float *v, uint32_t p0, uint32_t n, float *o, float *scratch,
                     uint32_t capacity)
{
    dense_job j = { hp, q, k, v, o, scratch, p0, n, (n + QUERY_BLOCK - 1) / QUERY_BLOCK, capacity };
    uint32_t tasks = j.n_blocks * hp->n_head;
    if (pool)
        fm_pool_run(pool, tasks, dense_task, &j);
    else
        for (uint32_t t = 0; t < tasks; t++)
            dense_task(&j, t, 0);
}
