/* fm_attn_ops over libfasa (see model_attn.h). */
#include "model_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bool model_attn_init(model_attn *a, fasa_context *ctx, const fm_hparams *hp, uint32_t capacity,
                     uint32_t max_n_fac)
{
    memset(a, 0, sizeof *a);
    a->ctx = ctx;
    a->n_layers = hp->n_layer;
    a->hq = hp->n_head;
    a->hkv = hp->n_head_kv;
    a->d = hp->head_dim;
    a->capacity = capacity;
    a->max_n_fac = max_n_fac;
    if (max_n_fac == 0 || max_n_fac > FASA_MAX_N_FAC) return false;
    a->sel = malloc((size_t)a->hq * max_n_fac * sizeof(int32_t));
    a->sel_oracle = malloc((size_t)a->hq * max_n_fac * sizeof(int32_t));
    a->o_tmp = malloc((size_t)a->hq * a->d * sizeof(float));
    a->keys = malloc((size_t)capacity * a->hkv * a->d * sizeof(float));
    a->probs = malloc((size_t)capacity * sizeof(float));
    return a->sel && a->sel_oracle && a->o_tmp && a->keys && a->probs;
}

void model_attn_free(model_attn *a)
{
    free(a->sel);
    free(a->sel_oracle);
    free(a->o_tmp);
    free(a->keys);
    free(a->probs);
    memset(a, 0, sizeof *a);
}

static fm_status fail(fm_error *err, fasa_context *ctx, fasa_status st, const char *what)
{
    return fm_fail(err, FM_ERR_CALLBACK, "libfasa %s: %s: %s", what, fasa_status_string(st),
                   fasa_context_last_error(ctx));
}

static fm_status cb_append(void *user, uint32_t layer, uint32_t n, const float *k, const float *v,
                           fm_error *err)
{
    model_attn *a = user;
    if (!a->cache) return FM_OK;
    fasa_status st = fasa_kv_cache_append(a->cache, layer, n, k, v, FASA_DTYPE_F32);
    return st == FASA_OK ? FM_OK : fail(err, a->ctx, st, "append");
}

static fm_status cb_truncate(void *user, uint32_t n, fm_error *err)
{
    model_attn *a = user;
    if (!a->cache) return FM_OK;
    fasa_status st = fasa_kv_cache_truncate(a->cache, n);
    return st == FASA_OK ? FM_OK : fail(err, a->ctx, st, "truncate");
}

/* Softmax over all L tokens of head h; returns the mass on the row's set. */
static double set_mass(model_attn *a, const float *q, uint32_t h, uint32_t L, const int32_t *set, uint32_t n)
{
    uint32_t g = h / (a->hq / a->hkv);
    float scale = 1.0f / sqrtf((float)a->d), mx = -INFINITY;
    for (uint32_t j = 0; j < L; j++) {
        const float *k = a->keys + ((size_t)j * a->hkv + g) * a->d;
        float s = 0;
        for (uint32_t c = 0; c < a->d; c++) s += q[(size_t)h * a->d + c] * k[c];
        a->probs[j] = s * scale;
        mx = a->probs[j] > mx ? a->probs[j] : mx;
    }
    double sum = 0, in_set = 0;
    for (uint32_t j = 0; j < L; j++) sum += (a->probs[j] = expf(a->probs[j] - mx));
    for (uint32_t i = 0; i < n; i++) in_set += a->probs[set[i]];
    return in_set / sum;
}

/* Recall of the oracle set and softmax mass of both sets, per query head. */
static fm_status measure(model_attn *a, uint32_t layer, const float *q, const fasa_decode_outputs *out,
                         fm_error *err)
{
    fasa_decode_desc od = a->desc;
    od.mode = FASA_MODE_ORACLE;
    od.n_sink = od.n_recent = 0;
    uint32_t k = out->n_selected, L = 0;
    fasa_decode_outputs oo = {.selected = a->sel_oracle, .selected_stride = k};
    fasa_status st = fasa_decode_host(a->cache, layer, &od, q, a->o_tmp, &oo);
    if (st == FASA_OK) st = fasa_kv_cache_length(a->cache, layer, &L);
    if (st != FASA_OK) return fail(err, a->ctx, st, "oracle decode");
    /* the keys as the cache stores them, the current token included */
    st = fasa_kv_cache_read(a->cache, layer, 0, L, a->keys, NULL);
    if (st != FASA_OK) return fail(err, a->ctx, st, "read keys");
    uint32_t G = a->hq / a->hkv;
    for (uint32_t h = 0; h < a->hq; h++) {
        uint32_t row = out->n_rows == a->hq ? h : h / G;
        const int32_t *mine = a->sel + (size_t)row * k, *best = a->sel_oracle + (size_t)row * k;
        uint32_t hits = 0;
        for (uint32_t i = 0; i < k; i++)
            for (uint32_t j = 0; j < k; j++) hits += mine[i] == best[j];
        a->stats.recall_sum += (double)hits / k;
        a->stats.mass_sum += set_mass(a, q, h, L, mine, k);
        a->stats.oracle_mass_sum += set_mass(a, q, h, L, best, k);
        a->stats.measured++;
    }
    return FM_OK;
}

static fm_status cb_decode(void *user, uint32_t layer, const float *q, float *o, fm_error *err)
{
    model_attn *a = user;
    if (!a->cache) return fm_fail(err, FM_ERR_CALLBACK, "libfasa decode: no cache attached");
    if (a->on_decode) a->on_decode(a->on_decode_user, layer, q);
    /* the selection buffers hold max_n_fac entries per row; n_fac 0 would be
     * libfasa's default 256, so it must be set explicitly */
    uint32_t n_fac = a->desc.n_fac;
    if (a->measure && (n_fac == 0 || n_fac > a->max_n_fac))
        return fm_fail(err, FM_ERR_CALLBACK, "libfasa decode: n_fac %u is outside 1..%u (the scratch size)", n_fac,
                       a->max_n_fac);
    fasa_decode_outputs out = {.selected = a->measure ? a->sel : NULL, .selected_stride = n_fac};
    fasa_status st = fasa_decode_host(a->cache, layer, &a->desc, q, o, &out);
    if (st != FASA_OK) return fail(err, a->ctx, st, "decode");
    uint32_t L = 0;
    fasa_kv_cache_length(a->cache, layer, &L);
    if (out.path == FASA_PATH_DENSE) {
        a->stats.dense_steps++;
        a->stats.attended_sum += 1.0;
        return FM_OK;
    }
    a->stats.sparse_steps++;
    a->stats.attended_sum += (double)out.n_selected / L;
    return a->measure ? measure(a, layer, q, &out, err) : FM_OK;
}

fm_attn_ops model_attn_ops(model_attn *a)
{
    return (fm_attn_ops){.append_kv = cb_append, .decode = cb_decode, .truncate = cb_truncate, .user = a};
}

/* The same selection as a real step of this layer would make for q, but only
 * the row-cache fill: no attention output, no statistics of our own (libfasa
 * counts it under prefetch_*), no on_decode (it is not a real step). */
static fm_status cb_prefetch(void *user, uint32_t layer, const float *q, fm_error *err)
{
    model_attn *a = user;
    if (!a->cache) return fm_fail(err, FM_ERR_CALLBACK, "libfasa prefetch: no cache attached");
    fasa_decode_desc d = a->desc;
    d.flags |= FASA_DECODE_PREFETCH;
    fasa_status st = fasa_decode_host(a->cache, layer, &d, q, NULL, NULL);
    return st == FASA_OK ? FM_OK : fail(err, a->ctx, st, "prefetch");
}

fm_prefetch_fn model_attn_prefetch_fn(void)
{
    return cb_prefetch;
}

double model_attn_attended(const model_attn *a)
{
    uint64_t n = a->stats.dense_steps + a->stats.sparse_steps;
    return n ? a->stats.attended_sum / (double)n : 0;
}

fasa_status model_attn_make_cache(fasa_context *ctx, const fm_state *state, const fm_hparams *hp,
                                  const fasa_calibration *cal, uint32_t capacity, uint32_t n_prefix,
                                  const model_attn_cache_opts *opts, fasa_kv_cache **out)
{
    static const model_attn_cache_opts defaults = {0};
    opts = opts ? opts : &defaults;
    fasa_model_shape shape = {hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, FASA_ROPE_NORM};
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = capacity, .dtype = opts->dtype, .calibration = cal,
                             .placement = opts->placement, .fetch = opts->fetch,
                             .row_cache_rows = opts->row_cache_rows, .max_n_fac = opts->max_n_fac};
    fasa_status st = fasa_kv_cache_create(ctx, &kd, out);
    if (st != FASA_OK || n_prefix == 0) return st;
    size_t row = (size_t)hp->n_head_kv * hp->head_dim;
    float *k = malloc(n_prefix * row * sizeof(float)), *v = malloc(n_prefix * row * sizeof(float));
    fm_error err;
    for (uint32_t l = 0; st == FASA_OK && l < hp->n_layer; l++) {
        if (!k || !v || fm_state_read_kv(state, l, 0, n_prefix, k, v, &err) != FM_OK) st = FASA_ERROR_OUT_OF_HOST_MEMORY;
        else st = fasa_kv_cache_append(*out, l, n_prefix, k, v, FASA_DTYPE_F32);
    }
    free(k);
    free(v);
    if (st != FASA_OK) {
        fasa_kv_cache_destroy(*out);
        *out = NULL;
    }
    return st;
}
