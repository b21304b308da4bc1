/* Offline calibration by Contextual Agreement (docs/SPEC.md §4):
 *
 *   CA_K(l,h,i) = |TopK(alpha, K') ∩ TopK(alpha_i, K')| / K',  K' = min(K, n_keys)
 *
 * alpha are the full raw scores q.k_j, alpha_i the scores of FC i alone.
 * The mean over all scored steps of a layer picks the n_tip best FCs. */
#include "internal.h"

#include <math.h>
#include <string.h>

struct fasa_calibrator {
    fasa_context *ctx;
    fasa_calibrator_desc desc;
    char *model_id, *source;
    double *ca_sum;              /* [n_layers][Hq][d/2] */
    uint64_t *steps;             /* [n_layers] scored steps */
    uint64_t n_samples;
    /* per-worker scratch, grown on demand */
    uint32_t scratch_keys;       /* capacity in keys */
    float **scores;              /* [workers] n_keys */
    uint32_t **keys;             /* [workers] 3 * n_keys top-k scratch */
    int32_t **sel_full, **sel_fc;
    uint8_t **in_full;
};

static void free_scratch(fasa_calibrator *cal)
{
    uint32_t workers = fasa__pool_size(cal->ctx->pool);
    void **arrays[] = {(void **)cal->scores, (void **)cal->keys,
                       (void **)cal->sel_full, (void **)cal->sel_fc, (void **)cal->in_full};
    for (size_t a = 0; a < sizeof arrays / sizeof arrays[0]; a++) {
        if (!arrays[a]) continue;
        for (uint32_t w = 0; w < workers; w++) {
            fasa__free(cal->ctx, arrays[a][w]);
            arrays[a][w] = NULL; /* grow_scratch may fail half way and free again */
        }
    }
    cal->scratch_keys = 0;
}

static fasa_status grow_scratch(fasa_calibrator *cal, uint32_t n_keys)
{
    if (n_keys <= cal->scratch_keys) return FASA_OK;
    free_scratch(cal);
    uint32_t workers = fasa__pool_size(cal->ctx->pool);
    for (uint32_t w = 0; w < workers; w++) {
        cal->scores[w] = fasa__alloc(cal->ctx, n_keys * sizeof(float));
        cal->keys[w] = fasa__alloc(cal->ctx, 3 * (size_t)n_keys * sizeof(uint32_t));
        cal->sel_full[w] = fasa__alloc(cal->ctx, n_keys * sizeof(int32_t));
        cal->sel_fc[w] = fasa__alloc(cal->ctx, n_keys * sizeof(int32_t));
        cal->in_full[w] = fasa__alloc(cal->ctx, n_keys);
        if (!cal->scores[w] || !cal->keys[w] || !cal->sel_full[w] ||
            !cal->sel_fc[w] || !cal->in_full[w]) {
            cal->scratch_keys = n_keys; /* so free_scratch walks every worker */
            free_scratch(cal);
            return fasa__error(cal->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibrator: out of host memory");
        }
    }
    cal->scratch_keys = n_keys;
    return FASA_OK;
}

void fasa_calibrator_destroy(fasa_calibrator *cal)
{
    if (!cal) return;
    fasa_context *ctx = cal->ctx;
    free_scratch(cal);
    fasa__free(ctx, cal->scores);
    fasa__free(ctx, cal->keys);
    fasa__free(ctx, cal->sel_full);
    fasa__free(ctx, cal->sel_fc);
    fasa__free(ctx, cal->in_full);
    fasa__free(ctx, cal->ca_sum);
    fasa__free(ctx, cal->steps);
    fasa__free(ctx, cal->model_id);
    fasa__free(ctx, cal->source);
    fasa__free(ctx, cal);
}

static fasa_status check_desc(fasa_context *ctx, fasa_calibrator_desc *d)
{
    fasa_status st = fasa__check_chain(ctx, d->next, "desc.next", "fasa_calibrator_desc");
    if (st == FASA_OK) st = fasa__check_shape(ctx, &d->shape, "desc.shape");
    if (st != FASA_OK) return st;
    uint32_t hd = d->shape.head_dim;
    if (d->n_tip == 0) d->n_tip = hd / 8 ? hd / 8 : 1;
    if (d->k_calib == 0) d->k_calib = 256;
    if (d->n_tip > hd / 2)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.n_tip: %u not in 1..head_dim/2 (%u)",
                           d->n_tip, hd / 2);
    if ((unsigned)d->convention > FASA_FC_HF_ADJACENT)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.convention: unknown value %d",
                           (int)d->convention);
    return FASA_OK;
}

fasa_status fasa_calibrator_create(fasa_context *ctx, const fasa_calibrator_desc *desc,
                                   fasa_calibrator **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    fasa_calibrator_desc d = {0};
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibrator_create: out is NULL");
    else if (!desc) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibrator_create: desc is NULL");
    else {
        *out = NULL;
        d = *desc;
        st = check_desc(ctx, &d);
    }
    fasa_calibrator *cal = NULL;
    if (st == FASA_OK) {
        cal = fasa__alloc(ctx, sizeof *cal);
        if (!cal) st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibrator: out of host memory");
    }
    if (st == FASA_OK) {
        uint32_t workers = fasa__pool_size(ctx->pool);
        size_t n_ca = (size_t)d.shape.n_layers * d.shape.n_q_heads * (d.shape.head_dim / 2);
        cal->ctx = ctx;
        cal->desc = d;
        cal->desc.model_id = cal->desc.source = NULL; /* owned copies below */
        cal->desc.next = NULL;                         /* the caller's chain is not kept */
        cal->model_id = fasa__strdup(ctx, d.model_id);
        cal->source = fasa__strdup(ctx, d.source ? d.source : "teacher_forced");
        cal->ca_sum = fasa__alloc(ctx, n_ca * sizeof(double));
        cal->steps = fasa__alloc(ctx, d.shape.n_layers * sizeof(uint64_t));
        cal->scores = fasa__alloc(ctx, workers * sizeof(float *));
        cal->keys = fasa__alloc(ctx, workers * sizeof(uint32_t *));
        cal->sel_full = fasa__alloc(ctx, workers * sizeof(int32_t *));
        cal->sel_fc = fasa__alloc(ctx, workers * sizeof(int32_t *));
        cal->in_full = fasa__alloc(ctx, workers * sizeof(uint8_t *));
        if (!cal->model_id || !cal->source || !cal->ca_sum || !cal->steps || !cal->scores ||
            !cal->keys || !cal->sel_full || !cal->sel_fc || !cal->in_full) {
            fasa_calibrator_destroy(cal);
            cal = NULL;
            st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibrator: out of host memory");
        }
    }
    if (st == FASA_OK) *out = cal;
    fasa__unlock(ctx);
    return st;
}

typedef struct ca_job {
    fasa_calibrator *cal;
    uint32_t layer, n_keys, k;
    const float *q, *keys;
} ca_job;

/* Scores one query head: the full top-K' set, then each FC's overlap with it. */
static void ca_head(void *arg, uint32_t h, uint32_t worker)
{
    ca_job *job = arg;
    fasa_calibrator *cal = job->cal;
    const fasa_model_shape *s = &cal->desc.shape;
    uint32_t d = s->head_dim, G = s->n_q_heads / s->n_kv_heads, g = h / G;
    size_t row = (size_t)s->n_kv_heads * d;
    const float *q = job->q + (size_t)h * d;
    const float *k0 = job->keys + (size_t)g * d;
    float *scores = cal->scores[worker];
    uint8_t *in_full = cal->in_full[worker];
    int32_t *sel = cal->sel_full[worker];

    for (uint32_t j = 0; j < job->n_keys; j++) {
        const float *k = k0 + j * row;
        float acc = 0.0f;
        for (uint32_t c = 0; c < d; c++) acc += q[c] * k[c];
        scores[j] = acc;
    }
    memset(in_full, 0, job->n_keys);
    uint32_t n_sel = fasa__select_topk(scores, job->n_keys, job->k, cal->keys[worker], sel);
    for (uint32_t i = 0; i < n_sel; i++) in_full[sel[i]] = 1;

    double *ca = cal->ca_sum + ((size_t)job->layer * s->n_q_heads + h) * (d / 2);
    for (uint32_t fc = 0; fc < d / 2; fc++) {
        uint16_t a, b;
        fasa__fc_dims(s->layout, cal->desc.convention, d, fc, &a, &b);
        for (uint32_t j = 0; j < job->n_keys; j++) {
            const float *k = k0 + j * row;
            scores[j] = q[a] * k[a] + q[b] * k[b];
        }
        uint32_t n_fc = fasa__select_topk(scores, job->n_keys, job->k, cal->keys[worker],
                                          cal->sel_fc[worker]);
        uint32_t overlap = 0;
        for (uint32_t i = 0; i < n_fc; i++) overlap += in_full[cal->sel_fc[worker][i]];
        ca[fc] += (double)overlap / (double)n_sel;
    }
}

static fasa_status scan_finite(fasa_context *ctx, const float *x, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return fasa__error(ctx, FASA_ERROR_NON_FINITE, "fasa_calibrator_add: %s[%zu] is %g", what,
                               i, (double)x[i]);
    return FASA_OK;
}

fasa_status fasa_calibrator_add(fasa_calibrator *cal, uint32_t layer, const float *q,
                                const float *k, uint32_t n_keys)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cal->ctx;
    const fasa_model_shape *s = &cal->desc.shape;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    if (layer >= s->n_layers)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibrator_add: layer %u out of range (n_layers %u)",
                         layer, s->n_layers);
    else if (!q) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibrator_add: q is NULL");
    else if (!k) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibrator_add: k is NULL");
    else if (n_keys == 0) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibrator_add: n_keys is 0");
    if (st == FASA_OK) st = scan_finite(ctx, q, (size_t)s->n_q_heads * s->head_dim, "q");
    if (st == FASA_OK) st = scan_finite(ctx, k, (size_t)n_keys * s->n_kv_heads * s->head_dim, "k");
    if (st == FASA_OK) st = grow_scratch(cal, n_keys);
    if (st == FASA_OK) {
        ca_job job = {cal, layer, n_keys, n_keys < cal->desc.k_calib ? n_keys : cal->desc.k_calib, q, k};
        fasa__pool_run(ctx->pool, s->n_q_heads, ca_head, &job);
        cal->steps[layer]++;
    }
    fasa__unlock(ctx);
    return st;
}

fasa_status fasa_calibrator_next_sample(fasa_calibrator *cal)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cal->ctx);
    cal->n_samples++;
    fasa__unlock(cal->ctx);
    return FASA_OK;
}

/* Mean CA per (layer, head, FC) and the dims it selects. */
static void finish_tables(const fasa_calibrator *cal, float *ca_mean, uint16_t *dims)
{
    const fasa_model_shape *s = &cal->desc.shape;
    uint32_t d = s->head_dim, n_fc = d / 2, G = s->n_q_heads / s->n_kv_heads;
    uint32_t per_head = 2 * cal->desc.n_tip;
    for (uint32_t l = 0; l < s->n_layers; l++)
        for (uint32_t h = 0; h < s->n_q_heads; h++) {
            size_t base = ((size_t)l * s->n_q_heads + h) * n_fc;
            for (uint32_t i = 0; i < n_fc; i++)
                ca_mean[base + i] = (float)(cal->ca_sum[base + i] / (double)cal->steps[l]);
        }
    for (uint32_t l = 0; l < s->n_layers; l++)
        for (uint32_t h = 0; h < s->n_q_heads; h++) {
            float summed[FASA_MAX_HEAD_DIM / 2];
            const float *row = ca_mean + ((size_t)l * s->n_q_heads + h) * n_fc;
            if (cal->desc.share_group_dims) { /* GQA option (b): CA summed over the group */
                uint32_t first = h / G * G;
                for (uint32_t i = 0; i < n_fc; i++) {
                    double acc = 0;
                    for (uint32_t m = first; m < first + G; m++)
                        acc += ca_mean[((size_t)l * s->n_q_heads + m) * n_fc + i];
                    summed[i] = (float)acc;
                }
                row = summed;
            }
            fasa__select_dims(row, d, cal->desc.n_tip, s->layout, cal->desc.convention,
                              dims + ((size_t)l * s->n_q_heads + h) * per_head);
        }
}

fasa_status fasa_calibrator_finish(fasa_calibrator *cal, fasa_calibration **out)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cal->ctx;
    const fasa_model_shape *s = &cal->desc.shape;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    uint64_t total_steps = 0;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibrator_finish: out is NULL");
    for (uint32_t l = 0; st == FASA_OK && l < s->n_layers; l++) {
        if (cal->steps[l] == 0)
            st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                             "fasa_calibrator_finish: layer %u has no scored steps", l);
        total_steps += cal->steps[l];
    }
    size_t n_heads = (size_t)s->n_layers * s->n_q_heads;
    float *ca_mean = st == FASA_OK ? fasa__alloc(ctx, n_heads * (s->head_dim / 2) * sizeof(float)) : NULL;
    uint16_t *dims = st == FASA_OK ? fasa__alloc(ctx, n_heads * 2 * cal->desc.n_tip * sizeof(uint16_t)) : NULL;
    if (st == FASA_OK && (!ca_mean || !dims))
        st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibrator: out of host memory");
    if (st == FASA_OK) {
        finish_tables(cal, ca_mean, dims);
        fasa_calibration_desc desc = {
            .shape = *s, .n_tip = cal->desc.n_tip, .dims = dims, .ca_mean = ca_mean,
            .convention = cal->desc.convention, .k_calib = cal->desc.k_calib,
            .n_samples = cal->n_samples ? cal->n_samples : 1, .n_steps = total_steps / s->n_layers,
            .model_id = cal->model_id, .source = cal->source};
        *out = NULL;
        st = fasa__calibration_build(ctx, &desc, out);
    }
    fasa__free(ctx, ca_mean);
    fasa__free(ctx, dims);
    fasa__unlock(ctx);
    return st;
}
