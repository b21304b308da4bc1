/* Sequence state and the Llama forward pass. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "kernels.h"

#define DEFAULT_MAX_BATCH 256

struct fm_state {
    const fm_model *m;
    fm_hparams hp;
    uint32_t capacity, max_batch, pos, flags;
    fm_pool *pool;
    fm_ref_attn *host;          /* host f32 cache; NULL with FM_STATE_NO_HOST_KV */
    fm_attn_ops ext;            /* external attention, ext.decode == NULL if none */
    fm_attn_ops decode_ops;     /* ext when set, else the host cache's ops */
    fm_qk_hook hook;
    void *hook_user;
    fm_prefetch_point prefetch;
    fm_prefetch_fn prefetch_fn; /* called with ext.user */
    float *rope_cos, *rope_sin; /* [capacity][d/2] */
    float *x, *xn, *q, *k, *v, *att, *gate, *up;  /* [max_batch][...] */
    float *dense_scratch;       /* per thread */
    float *pf_xn, *pf_q;        /* one token's speculative next-layer xn / q */
};

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */
/* ------------------------------------------------------------------------ */

/* cos/sin of pos * base^(-2i/d), computed in double for every position. */
static void fill_rope_tables(fm_state *s)
{
    uint32_t half = s->hp.head_dim / 2;
    for (uint32_t i = 0; i < half; i++) {
        double theta = pow((double)s->hp.rope_base, -2.0 * i / s->hp.head_dim);
        for (uint32_t p = 0; p < s->capacity; p++) {
            s->rope_cos[(uint64_t)p * half + i] = (float)cos(p * theta);
            s->rope_sin[(uint64_t)p * half + i] = (float)sin(p * theta);
        }
    }
}

static fm_status alloc_scratch(fm_state *s, fm_error *err)
{
    const fm_hparams *hp = &s->hp;
    uint64_t b = s->max_batch, e = hp->n_embd, qd = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t kvd = (uint64_t)hp->n_head_kv * hp->head_dim;
    uint64_t rope = (uint64_t)s->capacity * (hp->head_dim / 2);
    struct { float **dst; uint64_t n; } bufs[] = {
        { &s->x, b * e },      { &s->xn, b * (e > qd ? e : qd) }, { &s->q, b * qd },
        { &s->k, b * kvd },    { &s->v, b * kvd },      { &s->att, b * qd },
        { &s->gate, b * hp->n_ff }, { &s->up, b * hp->n_ff },
        { &s->rope_cos, rope }, { &s->rope_sin, rope },
        { &s->dense_scratch, fm_pool_threads(s->pool) * fm_dense_scratch_floats(s->capacity) },
        { &s->pf_xn, e },      { &s->pf_q, qd },
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!(*bufs[i].dst = fm_alloc(bufs[i].n * sizeof(float))))
            return fm_fail(err, FM_ERR_NOMEM, "state: out of memory for scratch buffers");
    fill_rope_tables(s);
    return FM_OK;
}

static fm_status check_desc(const fm_model *m, const fm_state_desc *d, fm_error *err)
{
    if (d->attn && (!d->attn->append_kv || !d->attn->decode))
        return fm_fail(err, FM_ERR_ARG, "state: attn ops need append_kv and decode");
    if ((d->flags & FM_STATE_NO_HOST_KV) && !d->attn)
        return fm_fail(err, FM_ERR_ARG, "state: FM_STATE_NO_HOST_KV needs external attn ops");
    if ((d->flags & FM_STATE_NO_HOST_KV) && d->qk_hook)
        return fm_fail(err, FM_ERR_ARG, "state: qk_hook needs the host KV cache");
    if ((unsigned)d->prefetch > FM_PREFETCH_MLP)
        return fm_fail(err, FM_ERR_ARG, "state: unknown prefetch point %d", (int)d->prefetch);
    if (d->prefetch && (!d->attn || !d->prefetch_fn))
        return fm_fail(err, FM_ERR_ARG, "state: a prefetch point needs attn ops and prefetch_fn");
    if (d->n_ctx > m->hp.n_ctx_train)
        return fm_fail(err, FM_ERR_ARG, "state: n_ctx %u exceeds the model's context length %u",
                       d->n_ctx, m->hp.n_ctx_train);
    return FM_OK;
}

fm_status fm_state_create(const fm_model *m, const fm_state_desc *desc, fm_state **out,
                          fm_error *err)
{
    static const fm_state_desc defaults = { 0 };
    if (!m || !out)
        return fm_fail(err, FM_ERR_ARG, "fm_state_create: NULL argument");
    desc = desc ? desc : &defaults;
    *out = NULL;
    fm_status st = check_desc(m, desc, err);
    if (st)
        return st;
    fm_state *s = calloc(1, sizeof *s);
    if (!s)
        return fm_fail(err, FM_ERR_NOMEM, "state: out of memory");
    s->m = m;
    s->hp = m->hp;
    s->capacity = desc->n_ctx ? desc->n_ctx : m->hp.n_ctx_train;
    s->max_batch = desc->max_batch ? desc->max_batch : DEFAULT_MAX_BATCH;
    s->flags = desc->flags;
    s->hook = desc->qk_hook;
    s->hook_user = desc->hook_user;
    s->prefetch = desc->prefetch;
    s->prefetch_fn = desc->prefetch_fn;
    st = fm_pool_create(desc->n_threads, &s->pool, err);
    if (!st)
        st = alloc_scratch(s, err);
    if (!st && !(desc->flags & FM_STATE_NO_HOST_KV))
        st = fm_ref_attn_create(&s->hp, s->capacity, s->pool, &s->host, err);
    if (st) {
        fm_state_destroy(s);
        return st;
    }
    if (desc->attn)
        s->ext = *desc->attn;
    s->decode_ops = desc->attn ? s->ext : fm_ref_attn_ops(s->host);
    *out = s;
    return FM_OK;
}

void fm_state_destroy(fm_state *s)
{
    if (!s)
        return;
    float *bufs[] = { s->x, s->xn, s->q, s->k, s->v, s->att, s->gate, s->up,
                      s->rope_cos, s->rope_sin, s->dense_scratch, s->pf_xn, s->pf_q };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        fm_free(bufs[i]);
    fm_ref_attn_destroy(s->host);
    fm_pool_destroy(s->pool);
    free(s);
}

uint32_t fm_state_pos(const fm_state *s) { return s->pos; }
uint32_t fm_state_capacity(const fm_state *s) { return s->capacity; }

/* ------------------------------------------------------------------------ */
/* Forward pass over one chunk of tokens                                     */
/* ------------------------------------------------------------------------ */

static void rope_rows(fm_state *s, float *x, uint32_t n, uint32_t n_heads)
{
    uint32_t half = s->hp.head_dim / 2;
    uint64_t stride = (uint64_t)n_heads * s->hp.head_dim;
    for (uint32_t t = 0; t < n; t++) {
        uint64_t p = (uint64_t)(s->pos + t) * half;
        fm_rope_norm(x + t * stride, n_heads, s->hp.head_dim, s->rope_cos + p, s->rope_sin + p);
    }
}

static fm_status append_kv(fm_state *s, uint32_t layer, uint32_t n, fm_error *err)
{
    fm_status st = FM_OK;
    if (s->host) {
        fm_attn_ops ops = fm_ref_attn_ops(s->host);
        st = ops.append_kv(ops.user, layer, n, s->k, s->v, err);
    }
    if (!st && s->ext.append_kv) {
        st = s->ext.append_kv(s->ext.user, layer, n, s->k, s->v, err);
        if (st)
            st = fm_wrap(err, FM_ERR_CALLBACK, "append_kv(layer %u, %u tokens)", layer, n);
    }
    return st;
}

static void call_hook(fm_state *s, uint32_t layer, uint32_t n)
{
    const float *keys = fm_ref_attn_keys(s->host, layer);
    uint64_t qrow = (uint64_t)s->hp.n_head * s->hp.head_dim;
    for (uint32_t t = 0; t < n; t++)
        s->hook(s->hook_user, layer, s->pos + t, s->q + t * qrow, keys, s->pos + t + 1);
}

/* q, k, v -> att for one layer.  decode: through the ops (n == 1); else
 * dense causal over the host cache or, at position 0 without one, over the
 * chunk's own k/v. */
static fm_status attention(fm_state *s, uint32_t layer, uint32_t n, bool decode, fm_error *err)
{
    fm_status st = append_kv(s, layer, n, err);
    if (st)
        return st;
    if (decode) {
        st = s->decode_ops.decode(s->decode_ops.user, layer, s->q, s->att, err);
        if (st && s->ext.decode)
            return fm_wrap(err, FM_ERR_CALLBACK, "decode(layer %u, position %u)", layer, s->pos);
        if (st)
            return st;
    } else {
        const float *k = s->host ? fm_ref_attn_keys(s->host, layer) : s->k;
        const float *v = s->host ? fm_ref_attn_values(s->host, layer) : s->v;
        fm_dense_causal(s->pool, &s->hp, s->q, k, v, s->pos, n, s->att, s->dense_scratch,
                        s->capacity);
    }
    if (s->hook)
        call_hook(s, layer, n);
    return FM_OK;
}

static void add_rows(float *x, const float *y, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++)
        x[i] += y[i];
}

static void norm_rows(const fm_state *s, float *dst, const float *src, const float *w, uint32_t n)
{
    uint32_t e = s->hp.n_embd;
    for (uint32_t t = 0; t < n; t++)
        fm_rmsnorm(dst + (uint64_t)t * e, src + (uint64_t)t * e, w, e, s->hp.rms_eps);
}

/* InfiniGen-style speculation for a single-token decode: the residual
 * stream x changes little from layer to layer, so layer l+1's query formed
 * from the current x selects nearly the tokens the real one will, and the
 * attention can start bringing their K/V rows close while layer l's
 * remaining work runs.  Does nothing unless `point` is the configured one
 * and layer l+1 exists.  Own scratch: layer l's q/xn/att stay intact. */
static fm_status prefetch_next(fm_state *s, uint32_t l, uint32_t n, bool decode,
                               fm_prefetch_point point, fm_error *err)
{
    if (!decode || n != 1 || s->prefetch != point || l + 1 >= s->hp.n_layer)
        return FM_OK;
    const fm_layer_weights *w = &s->m->layers[l + 1];
    uint32_t e = s->hp.n_embd, qd = s->hp.n_head * s->hp.head_dim;
    norm_rows(s, s->pf_xn, s->x, w->attn_norm, 1);
    fm_matmul(s->pool, w->wq, qd, e, s->pf_xn, 1, s->pf_q, qd);
    rope_rows(s, s->pf_q, 1, s->hp.n_head);   /* same position as the real q */
    fm_status st = s->prefetch_fn(s->ext.user, l + 1, s->pf_q, err);
    if (st)
        return fm_wrap(err, FM_ERR_CALLBACK, "prefetch(layer %u, position %u)", l + 1, s->pos);
    return FM_OK;
}

static fm_status layer_forward(fm_state *s, uint32_t l, uint32_t n, bool decode, fm_error *err)
{
    const fm_hparams *hp = &s->hp;
    const fm_layer_weights *w = &s->m->layers[l];
    uint32_t e = hp->n_embd, qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
    fm_status st = prefetch_next(s, l, n, decode, FM_PREFETCH_ATTN, err);
    if (st)
        return st;
    norm_rows(s, s->xn, s->x, w->attn_norm, n);
    fm_matmul(s->pool, w->wq, qd, e, s->xn, n, s->q, qd);
    fm_matmul(s->pool, w->wk, kvd, e, s->xn, n, s->k, kvd);
    fm_matmul(s->pool, w->wv, kvd, e, s->xn, n, s->v, kvd);
    rope_rows(s, s->q, n, hp->n_head);
    rope_rows(s, s->k, n, hp->n_head_kv);
    st = attention(s, l, n, decode, err);
    if (st)
        return st;
    fm_matmul(s->pool, w->wo, e, qd, s->att, n, s->xn, e);
    add_rows(s->x, s->xn, (uint64_t)n * e);
    st = prefetch_next(s, l, n, decode, FM_PREFETCH_MLP, err);
    if (st)
        return st;
    norm_rows(s, s->xn, s->x, w->ffn_norm, n);
    fm_matmul(s->pool, w->w_gate, hp->n_ff, e, s->xn, n, s->gate, hp->n_ff);
    fm_matmul(s->pool, w->w_up, hp->n_ff, e, s->xn, n, s->up, hp->n_ff);
    fm_swiglu(s->gate, s->up, n * hp->n_ff);
    fm_matmul(s->pool, w->w_down, e, hp->n_ff, s->gate, n, s->xn, e);
    add_rows(s->x, s->xn, (uint64_t)n * e);
    return FM_OK;
}

/* Final norm and output projection of rows [first, first + count). */
static void compute_logits(fm_state *s, uint32_t first, uint32_t count, float *logits)
{
    uint64_t e = s->hp.n_embd;
    norm_rows(s, s->xn, s->x + first * e, s->m->output_norm, count);
    fm_matmul(s->pool, s->m->output, s->hp.n_vocab, s->hp.n_embd, s->xn, count, logits,
              s->hp.n_vocab);
}

static fm_status forward_chunk(fm_state *s, const int32_t *tokens, uint32_t n, bool decode,
                               float *logits, bool all_logits, fm_error *err)
{
    uint64_t e = s->hp.n_embd;
    for (uint32_t t = 0; t < n; t++)
        memcpy(s->x + t * e, s->m->tok_embd + (uint64_t)tokens[t] * e, e * sizeof(float));
    for (uint32_t l = 0; l < s->hp.n_layer; l++) {
        fm_status st = layer_forward(s, l, n, decode, err);
        if (st)
            return st;
    }
    if (logits && all_logits)
        compute_logits(s, 0, n, logits);
    else if (logits)
        compute_logits(s, n - 1, 1, logits);
    s->pos += n;
    return FM_OK;
}

/* ------------------------------------------------------------------------ */
/* Public entry points                                                       */
/* ------------------------------------------------------------------------ */

static fm_status check_tokens(const fm_state *s, const int32_t *tokens, uint32_t n, fm_error *err)
{
    if (n == 0 || !tokens)
        return fm_fail(err, FM_ERR_ARG, "eval: no tokens");
    if (n > s->capacity - s->pos)
        return fm_fail(err, FM_ERR_CAPACITY, "eval: %u tokens at position %u exceed the capacity %u",
                       n, s->pos, s->capacity);
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= s->hp.n_vocab)
            return fm_fail(err, FM_ERR_ARG, "eval: token %u has id %d outside 0..%u", i, tokens[i],
                           s->hp.n_vocab - 1);
    return FM_OK;
}

/* Undo a partly evaluated call so every cache matches s->pos again. */
static void roll_back(fm_state *s)
{
    if (s->host) {
        fm_attn_ops ops = fm_ref_attn_ops(s->host);
        ops.truncate(ops.user, s->pos, NULL);
    }
    if (s->ext.truncate)
        s->ext.truncate(s->ext.user, s->pos, NULL);
}

fm_status fm_state_eval(fm_state *s, const int32_t *tokens, uint32_t n, float *logits,
                        uint32_t flags, fm_error *err)
{
    if (!s)
        return fm_fail(err, FM_ERR_ARG, "fm_state_eval: NULL state");
    fm_status st = check_tokens(s, tokens, n, err);
    if (st)
        return st;
    uint32_t start = s->pos, done = 0;
    bool all = flags & FM_EVAL_ALL_LOGITS;
    while (done < n && !st) {
        /* Dense prefill needs every earlier key on the host. */
        bool dense = !(flags & FM_EVAL_DECODE_EACH) && n - done > 1 && (s->host || s->pos == 0);
        uint32_t c = dense ? (n - done < s->max_batch ? n - done : s->max_batch) : 1;
        bool last = done + c == n;
        float *dst = !logits ? NULL : all ? logits + (uint64_t)done * s->hp.n_vocab
                                          : last ? logits : NULL;
        st = forward_chunk(s, tokens + done, c, !dense, dst, all, err);
        done += c;
    }
    if (st) {
        s->pos = start;
        roll_back(s);
    }
    return st;
}

fm_status fm_state_truncate(fm_state *s, uint32_t n_tokens, fm_error *err)
{
    if (!s || n_tokens > s->pos)
        return fm_fail(err, FM_ERR_ARG, "truncate: %u is beyond the current position %u", n_tokens,
                       s ? s->pos : 0);
    if (s->ext.decode && !s->ext.truncate && n_tokens != s->pos)
        return fm_fail(err, FM_ERR_UNSUPPORTED, "truncate: the external attention has no truncate");
    if (s->ext.truncate) {
        fm_status st = s->ext.truncate(s->ext.user, n_tokens, err);
        if (st)
            return fm_wrap(err, FM_ERR_CALLBACK, "truncate(%u)", n_tokens);
    }
    s->pos = n_tokens;
    if (s->host) {
        fm_attn_ops ops = fm_ref_attn_ops(s->host);
        ops.truncate(ops.user, n_tokens, NULL);
    }
    return FM_OK;
}

fm_status fm_state_read_kv(const fm_state *s, uint32_t layer, uint32_t first, uint32_t n,
                           float *k, float *v, fm_error *err)
{
    if (!s || !s->host)
        return fm_fail(err, FM_ERR_ARG, "read_kv: no host KV cache");
    if (layer >= s->hp.n_layer || first > s->pos || n > s->pos - first)
        return fm_fail(err, FM_ERR_ARG, "read_kv: layer %u tokens [%u, +%u) outside [0, %u)", layer,
                       first, n, s->pos);
    uint64_t row = (uint64_t)s->hp.n_head_kv * s->hp.head_dim;
    if (k)
        memcpy(k, fm_ref_attn_keys(s->host, layer) + first * row, n * row * sizeof(float));
    if (v)
        memcpy(v, fm_ref_attn_values(s->host, layer) + first * row, n * row * sizeof(float));
    return FM_OK;
}
