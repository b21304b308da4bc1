/* Model loading: hyper-parameters and f32 weights from a Llama GGUF. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* ------------------------------------------------------------------------ */
/* Hyper-parameters: every key is required; nothing falls back to a default. */
/* ------------------------------------------------------------------------ */

static fm_status check_architecture(const gguf_file *f, fm_error *err)
{
    gguf_str arch;
    char shown[64];
    fm_status st = gguf_get_str(f, "general.architecture", &arch, err);
    if (st)
        return st;
    if (arch.len != 5 || memcmp(arch.ptr, "llama", 5) != 0) {
        fm_sanitize(shown, sizeof shown, arch.ptr, arch.len, 40);
        return fm_fail(err, FM_ERR_UNSUPPORTED,
                       "general.architecture = '%s': only 'llama' is supported", shown);
    }
    return FM_OK;
}

/* RoPE scaling would change every angle; refuse rather than ignore it. */
static fm_status check_no_rope_scaling(const gguf_file *f, fm_error *err)
{
    gguf_str type;
    float factor;
    if (gguf_find_kv(f, "llama.rope.scaling.type")) {
        fm_status st = gguf_get_str(f, "llama.rope.scaling.type", &type, err);
        if (st)
            return st;
        if (!(type.len == 4 && memcmp(type.ptr, "none", 4) == 0))
            return fm_fail(err, FM_ERR_UNSUPPORTED, "llama.rope.scaling.type is set: RoPE scaling "
                                                    "is not supported");
    }
    if (gguf_find_kv(f, "llama.rope.scaling.factor")) {
        fm_status st = gguf_get_f32(f, "llama.rope.scaling.factor", &factor, err);
        if (st)
            return st;
        if (factor != 0.0f && factor != 1.0f)
            return fm_fail(err, FM_ERR_UNSUPPORTED, "llama.rope.scaling.factor = %g is not supported",
                           (double)factor);
    }
    return FM_OK;
}

/* A float hyper-parameter inside its documented range (model.h); NaN and
 * the infinities are outside every range. */
static fm_status check_float_range(const char *key, float v, float lo, float hi, fm_error *err)
{
    if (!isfinite(v))
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' = %g is not a finite number", key,
                       (double)v);
    if (v < lo || v > hi)
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' = %g is outside the supported range %g..%g",
                       key, (double)v, (double)lo, (double)hi);
    return FM_OK;
}

static fm_status check_optional_dim(const gguf_file *f, const char *key, uint32_t want,
                                    fm_error *err)
{
    uint32_t v;
    if (!gguf_find_kv(f, key))
        return FM_OK;
    fm_status st = gguf_get_u32(f, key, &v, err);
    if (!st && v != want)
        st = fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' = %u, expected %u", key, v, want);
    return st;
}

static fm_status read_counts(const gguf_file *f, fm_hparams *hp, fm_error *err)
{
    struct { const char *key; uint32_t *dst; uint32_t max; } keys[] = {
        { "llama.block_count", &hp->n_layer, FM_MAX_LAYERS },
        { "llama.embedding_length", &hp->n_embd, FM_MAX_EMBD },
        { "llama.attention.head_count", &hp->n_head, FM_MAX_HEADS },
        { "llama.attention.head_count_kv", &hp->n_head_kv, FM_MAX_HEADS },
        { "llama.feed_forward_length", &hp->n_ff, FM_MAX_FF },
        { "llama.context_length", &hp->n_ctx_train, FM_MAX_CTX },
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        uint64_t v;
        fm_status st = gguf_get_uint(f, keys[i].key, keys[i].max, &v, err);
        if (st)
            return st;
        if (v == 0)
            return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' is 0, must be 1..%u", keys[i].key,
                           keys[i].max);
        *keys[i].dst = (uint32_t)v;
    }
    return FM_OK;
}

static fm_status check_heads(const gguf_file *f, fm_hparams *hp, fm_error *err)
{
    uint32_t rope_dim;
    if (hp->n_embd % hp->n_head)
        return fm_fail(err, FM_ERR_MISMATCH,
                       "GGUF key 'llama.embedding_length' = %u is not a multiple of "
                       "'llama.attention.head_count' = %u", hp->n_embd, hp->n_head);
    if (hp->n_head_kv > hp->n_head || hp->n_head % hp->n_head_kv)
        return fm_fail(err, FM_ERR_MISMATCH,
                       "GGUF key 'llama.attention.head_count' = %u is not a multiple of "
                       "'llama.attention.head_count_kv' = %u", hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->head_dim % 2 || hp->head_dim < 2 || hp->head_dim > FM_MAX_HEAD_DIM)
        return fm_fail(err, FM_ERR_UNSUPPORTED,
                       "head dim %u ('llama.embedding_length' %u / 'llama.attention.head_count' %u) "
                       "must be even and 2..%u", hp->head_dim, hp->n_embd, hp->n_head, FM_MAX_HEAD_DIM);
    fm_status st = gguf_get_u32(f, "llama.rope.dimension_count", &rope_dim, err);
    if (st)
        return st;
    if (rope_dim != hp->head_dim)
        return fm_fail(err, FM_ERR_UNSUPPORTED,
                       "llama.rope.dimension_count = %u differs from the head dim %u (partial "
                       "rotary embedding is not supported)", rope_dim, hp->head_dim);
    st = check_optional_dim(f, "llama.attention.key_length", hp->head_dim, err);
    if (!st)
        st = check_optional_dim(f, "llama.attention.value_length", hp->head_dim, err);
    return st;
}

static fm_status read_hparams(const gguf_file *f, fm_hparams *hp, fm_error *err)
{
    fm_status st = check_architecture(f, err);
    if (!st)
        st = read_counts(f, hp, err);
    if (!st)
        st = check_heads(f, hp, err);
    if (!st)
        st = gguf_get_f32(f, "llama.rope.freq_base", &hp->rope_base, err);
    if (!st)
        st = check_float_range("llama.rope.freq_base", hp->rope_base, FM_ROPE_BASE_MIN,
                               FM_ROPE_BASE_MAX, err);
    if (!st)
        st = gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &hp->rms_eps, err);
    if (!st)
        st = check_float_range("llama.attention.layer_norm_rms_epsilon", hp->rms_eps, FM_RMS_EPS_MIN,
                               FM_RMS_EPS_MAX, err);
    if (!st)
        st = check_no_rope_scaling(f, err);
    if (st)
        return st;
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb)
        return fm_fail(err, FM_ERR_MISSING, "GGUF tensor 'token_embd.weight' is missing");
    if (emb->n_dims != 2 || emb->ne[1] > INT32_MAX)
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF tensor 'token_embd.weight' is not a 2-D "
                                             "[n_vocab][n_embd] matrix");
    hp->n_vocab = (uint32_t)emb->ne[1];
    hp->tied_output = gguf_find_tensor(f, "output.weight") == NULL;
    return check_optional_dim(f, "llama.vocab_size", hp->n_vocab, err);
}

/* ------------------------------------------------------------------------ */
/* Weights                                                                   */
/* ------------------------------------------------------------------------ */

/* A slice of one tensor to dequantise; large tensors are split so that the
 * pool's threads share the work evenly. */
typedef struct deq_job {
    const gguf_tensor *t;
    uint64_t row0, n_rows;
    float *dst;
} deq_job;

typedef struct loader {
    const gguf_file *f;
    fm_model *m;
    uint8_t *used;              /* per tensor index */
    deq_job *jobs;
    uint32_t n_jobs, cap_jobs;
    fm_error *err;
} loader;

#define ROWS_PER_JOB_ELEMS (1u << 20)

static fm_status push_job(loader *L, deq_job j)
{
    if (L->n_jobs == L->cap_jobs) {
        uint32_t cap = L->cap_jobs ? L->cap_jobs * 2 : 256;
        deq_job *jobs = realloc(L->jobs, cap * sizeof *jobs);
        if (!jobs)
            return fm_fail(L->err, FM_ERR_NOMEM, "out of memory planning the weight load");
        L->jobs = jobs;
        L->cap_jobs = cap;
    }
    L->jobs[L->n_jobs++] = j;
    return FM_OK;
}

/* Finds a tensor of the given shape, allocates its f32 copy and queues the
 * dequantisation jobs.  ne1 = 0 means a 1-D tensor. */
static fm_status plan_tensor(loader *L, const char *name, uint64_t ne0, uint64_t ne1, float **out)
{
    const uint64_t ne[2] = { ne0, ne1 };
    const gguf_tensor *t;
    fm_status st = gguf_find_tensor_shaped(L->f, name, ne1 ? 2 : 1, ne, &t, L->err);
    if (st)
        return st;
    if (!gguf_can_dequantize(t->type))
        return fm_fail(L->err, FM_ERR_UNSUPPORTED,
                       "tensor '%s' has type %s (id %u); supported: F32, F16, Q4_0, Q4_1, Q8_0",
                       name, gguf_ttype_name(t->type), t->type);
    float *dst = fm_alloc(t->n_elements * sizeof(float));
    if (!dst)
        return fm_fail(L->err, FM_ERR_NOMEM, "out of memory for tensor '%s' (%llu floats)", name,
                       (unsigned long long)t->n_elements);
    L->m->owned[L->m->n_owned++] = dst;
    L->used[t - gguf_tensor_at(L->f, 0)] = 1;
    uint64_t rows = t->n_elements / t->ne[0];
    uint64_t step = ROWS_PER_JOB_ELEMS / t->ne[0] ? ROWS_PER_JOB_ELEMS / t->ne[0] : 1;
    for (uint64_t r = 0; r < rows && !st; r += step)
        st = push_job(L, (deq_job){ t, r, rows - r < step ? rows - r : step, dst + r * t->ne[0] });
    *out = dst;
    return st;
}

static fm_status plan_layer(loader *L, uint32_t i)
{
    const fm_hparams *hp = &L->m->hp;
    fm_layer_weights *w = &L->m->layers[i];
    uint64_t e = hp->n_embd, q = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    struct { const char *suffix; uint64_t ne0, ne1; float **dst; } specs[] = {
        { "attn_norm.weight", e, 0, &w->attn_norm },   { "attn_q.weight", e, q, &w->wq },
        { "attn_k.weight", e, kv, &w->wk },            { "attn_v.weight", e, kv, &w->wv },
        { "attn_output.weight", q, e, &w->wo },        { "ffn_norm.weight", e, 0, &w->ffn_norm },
        { "ffn_gate.weight", e, ff, &w->w_gate },      { "ffn_up.weight", e, ff, &w->w_up },
        { "ffn_down.weight", ff, e, &w->w_down },
    };
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++) {
        char name[96];
        snprintf(name, sizeof name, "blk.%u.%s", i, specs[s].suffix);
        fm_status st = plan_tensor(L, name, specs[s].ne0, specs[s].ne1, specs[s].dst);
        if (st)
            return st;
    }
    return FM_OK;
}

static fm_status plan_all(loader *L)
{
    fm_model *m = L->m;
    fm_hparams *hp = &m->hp;
    fm_status st = plan_tensor(L, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->tok_embd);
    if (!st)
        st = plan_tensor(L, "output_norm.weight", hp->n_embd, 0, &m->output_norm);
    if (!st && !hp->tied_output)
        st = plan_tensor(L, "output.weight", hp->n_embd, hp->n_vocab, &m->output);
    if (!st && hp->tied_output)
        m->output = m->tok_embd;
    for (uint32_t i = 0; i < hp->n_layer && !st; i++)
        st = plan_layer(L, i);
    return st;
}

/* Every tensor must be consumed: an unknown one (biases, rope factors)
 * would change the computation, so it is an error rather than ignored. */
static fm_status check_all_used(const loader *L)
{
    for (uint64_t i = 0; i < gguf_n_tensors(L->f); i++)
        if (!L->used[i])
            return fm_fail(L->err, FM_ERR_UNSUPPORTED,
                           "tensor '%s' is not used by the Llama engine (unsupported variant)",
                           gguf_tensor_at(L->f, i)->name);
    return FM_OK;
}

static void deq_task(void *ctx, uint32_t task, uint32_t thread)
{
    const deq_job *j = &((const deq_job *)ctx)[task];
    (void)thread;
    /* Types were checked in plan_tensor, so this cannot fail. */
    gguf_dequantize_rows(j->t, j->row0, j->n_rows, j->dst, NULL);
}

static fm_status run_jobs(loader *L, uint32_t n_threads)
{
    fm_pool *pool;
    fm_status st = fm_pool_create(n_threads, &pool, L->err);
    if (st)
        return st;
    fm_pool_run(pool, L->n_jobs, deq_task, L->jobs);
    fm_pool_destroy(pool);
    return FM_OK;
}

static fm_status alloc_model(fm_model *m, fm_error *err)
{
    m->layers = calloc(m->hp.n_layer, sizeof *m->layers);
    m->owned = calloc(3 + 9 * (size_t)m->hp.n_layer, sizeof *m->owned);
    if (!m->layers || !m->owned)
        return fm_fail(err, FM_ERR_NOMEM, "out of memory for %u layers", m->hp.n_layer);
    return FM_OK;
}

fm_status fm_model_load_gguf(const gguf_file *f, const fm_model_desc *desc, fm_model **out,
                             fm_error *err)
{
    static const fm_model_desc defaults = { 0 };
    if (!f || !out)
        return fm_fail(err, FM_ERR_ARG, "fm_model_load_gguf: NULL argument");
    desc = desc ? desc : &defaults;
    *out = NULL;
    fm_model *m = calloc(1, sizeof *m);
    loader L = { f, m, NULL, NULL, 0, 0, err };
    fm_status st = m ? FM_OK : fm_fail(err, FM_ERR_NOMEM, "out of memory");
    if (!st)
        st = read_hparams(f, &m->hp, err);
    if (!st)
        st = alloc_model(m, err);
    if (!st && !(L.used = calloc(gguf_n_tensors(f) + 1, 1)))
        st = fm_fail(err, FM_ERR_NOMEM, "out of memory");
    if (!st)
        st = plan_all(&L);
    if (!st)
        st = check_all_used(&L);
    if (!st)
        st = run_jobs(&L, desc->n_threads);
    if (!st && !desc->no_tokenizer) {
        st = fm_tokenizer_load(f, &m->tok, err);
        if (!st && fm_tokenizer_n_vocab(m->tok) != m->hp.n_vocab)
            st = fm_fail(err, FM_ERR_MISMATCH, "tokenizer has %u tokens, token_embd.weight %u rows",
                         fm_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
    }
    free(L.used);
    free(L.jobs);
    if (st) {
        fm_model_free(m);
        return st;
    }
    *out = m;
    return FM_OK;
}

fm_status fm_model_load(const char *path, const fm_model_desc *desc, fm_model **out, fm_error *err)
{
    gguf_file *f;
    if (!path || !out)
        return fm_fail(err, FM_ERR_ARG, "fm_model_load: NULL argument");
    fm_status st = gguf_open(path, &f, err);
    if (st)
        return st;
    st = fm_model_load_gguf(f, desc, out, err);
    gguf_close(f);
    return st ? fm_wrap(err, st, "%s", path) : FM_OK;
}

void fm_model_free(fm_model *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->n_owned; i++)
        fm_free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    fm_tokenizer_free(m->tok);
    free(m);
}

const fm_hparams *fm_model_hparams(const fm_model *m)
{
    return &m->hp;
}

const fm_tokenizer *fm_model_tokenizer(const fm_model *m)
{
    return m->tok;
}
