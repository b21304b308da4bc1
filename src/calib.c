/* Model shapes, frequency-chunk dims and the calibration object. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Shapes                                                                    */
/* ------------------------------------------------------------------------ */

fasa_status fasa__check_shape(fasa_context *ctx, const fasa_model_shape *s, const char *what)
{
    if (!s) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s is NULL", what);
    if (s->n_layers == 0 || s->n_layers > 4096)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s.n_layers: %u not in 1..4096",
                           what, s->n_layers);
    if (s->n_q_heads == 0 || s->n_q_heads > 1024)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s.n_q_heads: %u not in 1..1024",
                           what, s->n_q_heads);
    if (s->n_kv_heads == 0 || s->n_kv_heads > s->n_q_heads)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s.n_kv_heads: %u not in 1..n_q_heads (%u)", what, s->n_kv_heads,
                           s->n_q_heads);
    if (s->n_q_heads % s->n_kv_heads != 0)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s.n_kv_heads: n_q_heads (%u) is not a multiple of n_kv_heads (%u)",
                           what, s->n_q_heads, s->n_kv_heads);
    if (s->head_dim < 2 || s->head_dim > FASA_MAX_HEAD_DIM || s->head_dim % 2 != 0)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                           "%s.head_dim: %u is not an even number in 2..%u", what, s->head_dim,
                           FASA_MAX_HEAD_DIM);
    if ((unsigned)s->layout > FASA_ROPE_NEOX)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s.layout: unknown value %d", what,
                           (int)s->layout);
    return FASA_OK;
}

fasa_status fasa_model_shape_check(fasa_context *ctx, const fasa_model_shape *shape)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st = fasa__check_shape(ctx, shape, "shape");
    fasa__unlock(ctx);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Frequency chunks                                                          */
/* ------------------------------------------------------------------------ */

/* Runtime dim of rotate-half (HF) dim c, in layout `layout`. */
static uint16_t neox_dim_in(fasa_rope_layout layout, uint32_t d, uint32_t c)
{
    if (layout == FASA_ROPE_NEOX) return (uint16_t)c;
    return (uint16_t)(c < d / 2 ? 2 * c : 2 * (c - d / 2) + 1);
}

void fasa__fc_dims(fasa_rope_layout layout, fasa_fc_convention conv, uint32_t d, uint32_t j,
                   uint16_t *a, uint16_t *b)
{
    if (conv == FASA_FC_HF_ADJACENT) { /* HF dims (2j, 2j+1), mapped */
        *a = neox_dim_in(layout, d, 2 * j);
        *b = neox_dim_in(layout, d, 2 * j + 1);
    } else if (layout == FASA_ROPE_NORM) {
        *a = (uint16_t)(2 * j);
        *b = (uint16_t)(2 * j + 1);
    } else {
        *a = (uint16_t)j;
        *b = (uint16_t)(j + d / 2);
    }
    if (*a > *b) { uint16_t t = *a; *a = *b; *b = t; }
}

/* FC index owning runtime dim c (inverse of fasa__fc_dims). */
static uint32_t fc_of_dim(fasa_rope_layout layout, fasa_fc_convention conv, uint32_t d, uint32_t c)
{
    for (uint32_t j = 0; j < d / 2; j++) {
        uint16_t a, b;
        fasa__fc_dims(layout, conv, d, j, &a, &b);
        if (a == c || b == c) return j;
    }
    return UINT32_MAX;
}

bool fasa__dims_valid(const uint16_t *dims, uint32_t n_tip, uint32_t d, fasa_rope_layout layout,
                      fasa_fc_convention conv, char *msg, size_t msg_size)
{
    uint32_t n = 2 * n_tip;
    for (uint32_t i = 0; i < n; i++) {
        if (dims[i] >= d) {
            snprintf(msg, msg_size, "dim %u at position %u is out of range (head_dim %u)", dims[i], i, d);
            return false;
        }
        if (i > 0 && dims[i] == dims[i - 1]) {
            snprintf(msg, msg_size, "dim %u is listed twice", dims[i]);
            return false;
        }
        if (i > 0 && dims[i] < dims[i - 1]) {
            snprintf(msg, msg_size, "dims are not ascending at position %u (%u after %u)", i,
                     dims[i], dims[i - 1]);
            return false;
        }
    }
    /* every dim's partner in its chunk must be listed too */
    for (uint32_t i = 0; i < n; i++) {
        uint16_t a, b;
        fasa__fc_dims(layout, conv, d, fc_of_dim(layout, conv, d, dims[i]), &a, &b);
        uint16_t partner = dims[i] == a ? b : a;
        bool found = false;
        for (uint32_t k = 0; k < n && !found; k++) found = dims[k] == partner;
        if (!found) {
            snprintf(msg, msg_size, "dim %u is listed without its chunk partner %u (%s layout)",
                     dims[i], partner, layout == FASA_ROPE_NORM ? "NORM" : "NEOX");
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* The calibration object                                                    */
/* ------------------------------------------------------------------------ */

static size_t n_heads_total(const fasa_model_shape *s) { return (size_t)s->n_layers * s->n_q_heads; }

void fasa_calibration_destroy(fasa_calibration *cal)
{
    if (!cal) return;
    fasa_context *ctx = cal->ctx;
    fasa__free(ctx, cal->dims);
    fasa__free(ctx, cal->ca_mean);
    fasa__free(ctx, cal->model_id);
    fasa__free(ctx, cal->source);
    fasa__free(ctx, cal);
}

/* Validates a description (message names layer and head) without locking. */
static fasa_status check_calibration_desc(fasa_context *ctx, const fasa_calibration_desc *desc)
{
    fasa_status st = fasa__check_chain(ctx, desc->next, "desc.next", "fasa_calibration_desc");
    if (st == FASA_OK) st = fasa__check_shape(ctx, &desc->shape, "desc.shape");
    if (st != FASA_OK) return st;
    uint32_t d = desc->shape.head_dim;
    if (desc->n_tip == 0 || desc->n_tip > d / 2)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.n_tip: %u not in 1..head_dim/2 (%u)",
                           desc->n_tip, d / 2);
    if ((unsigned)desc->convention > FASA_FC_HF_ADJACENT)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.convention: unknown value %d",
                           (int)desc->convention);
    if (!desc->dims) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.dims is NULL");
    uint32_t per_head = 2 * desc->n_tip;
    for (uint32_t l = 0; l < desc->shape.n_layers; l++) {
        for (uint32_t h = 0; h < desc->shape.n_q_heads; h++) {
            const uint16_t *dims = desc->dims + ((size_t)l * desc->shape.n_q_heads + h) * per_head;
            char msg[256];
            if (!fasa__dims_valid(dims, desc->n_tip, d, desc->shape.layout, desc->convention, msg,
                                  sizeof msg))
                return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "desc.dims: layer %u head %u: %s",
                                   l, h, msg);
        }
    }
    if (desc->ca_mean) {
        size_t n = n_heads_total(&desc->shape) * (d / 2);
        for (size_t i = 0; i < n; i++) {
            float v = desc->ca_mean[i];
            if (!(v >= 0.0f && v <= 1.0f))
                return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT,
                                   "desc.ca_mean: entry %zu (layer %zu head %zu fc %zu) is %g, not in [0,1]",
                                   i, i / (d / 2) / desc->shape.n_q_heads,
                                   i / (d / 2) % desc->shape.n_q_heads, i % (d / 2), (double)v);
        }
    }
    return FASA_OK;
}

/* Builds the object from a checked description (no locking). */
fasa_status fasa__calibration_build(fasa_context *ctx, const fasa_calibration_desc *desc,
                                    fasa_calibration **out)
{
    fasa_status st = check_calibration_desc(ctx, desc);
    if (st != FASA_OK) return st;
    fasa_calibration *cal = fasa__alloc(ctx, sizeof *cal);
    if (!cal) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibration: out of host memory");
    cal->ctx = ctx;
    cal->shape = desc->shape;
    cal->n_tip = desc->n_tip;
    cal->convention = desc->convention;
    cal->k_calib = desc->k_calib;
    cal->n_samples = desc->n_samples;
    cal->n_steps = desc->n_steps;
    size_t n_dims = n_heads_total(&desc->shape) * 2 * desc->n_tip;
    size_t n_ca = n_heads_total(&desc->shape) * (desc->shape.head_dim / 2);
    cal->dims = fasa__alloc(ctx, n_dims * sizeof(uint16_t));
    cal->model_id = fasa__strdup(ctx, desc->model_id);
    cal->source = fasa__strdup(ctx, desc->source);
    if (desc->ca_mean) cal->ca_mean = fasa__alloc(ctx, n_ca * sizeof(float));
    if (!cal->dims || !cal->model_id || !cal->source || (desc->ca_mean && !cal->ca_mean)) {
        fasa_calibration_destroy(cal);
        return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibration: out of host memory");
    }
    memcpy(cal->dims, desc->dims, n_dims * sizeof(uint16_t));
    if (desc->ca_mean) memcpy(cal->ca_mean, desc->ca_mean, n_ca * sizeof(float));
    *out = cal;
    return FASA_OK;
}

fasa_status fasa_calibration_create(fasa_context *ctx, const fasa_calibration_desc *desc,
                                    fasa_calibration **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_create: out is NULL");
    else if (!desc) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_create: desc is NULL");
    else {
        *out = NULL;
        st = fasa__calibration_build(ctx, desc, out);
    }
    fasa__unlock(ctx);
    return st;
}

static fasa_calibration_desc desc_of(const fasa_calibration *cal)
{
    return (fasa_calibration_desc){
        .shape = cal->shape, .n_tip = cal->n_tip, .dims = cal->dims, .ca_mean = cal->ca_mean,
        .convention = cal->convention, .k_calib = cal->k_calib, .n_samples = cal->n_samples,
        .n_steps = cal->n_steps, .model_id = cal->model_id, .source = cal->source};
}

fasa_status fasa_calibration_remap_layout(const fasa_calibration *cal, fasa_rope_layout layout,
                                          fasa_calibration **out)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cal->ctx;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_remap_layout: out is NULL");
    else if ((unsigned)layout > FASA_ROPE_NEOX)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_remap_layout: layout %d unknown", (int)layout);
    uint32_t d = cal->shape.head_dim, per_head = 2 * cal->n_tip;
    size_t n = n_heads_total(&cal->shape) * per_head;
    uint16_t *dims = st == FASA_OK ? fasa__alloc(ctx, n * sizeof *dims) : NULL;
    if (st == FASA_OK && !dims) st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "remap: out of host memory");
    if (st == FASA_OK) {
        /* map each chunk to its dims in the new layout, then re-sort per head */
        for (size_t head = 0; head < n / per_head; head++) {
            const uint16_t *src = cal->dims + head * per_head;
            uint16_t *dst = dims + head * per_head;
            uint32_t w = 0;
            for (uint32_t i = 0; i < per_head; i++) {
                uint32_t j = fc_of_dim(cal->shape.layout, cal->convention, d, src[i]);
                uint16_t a, b, a0, b0;
                fasa__fc_dims(cal->shape.layout, cal->convention, d, j, &a0, &b0);
                if (src[i] != a0) continue; /* handle each chunk once */
                fasa__fc_dims(layout, cal->convention, d, j, &a, &b);
                dst[w++] = a;
                dst[w++] = b;
            }
            for (uint32_t i = 1; i < per_head; i++) /* insertion sort: lists are short */
                for (uint32_t k = i; k > 0 && dst[k] < dst[k - 1]; k--) {
                    uint16_t t = dst[k]; dst[k] = dst[k - 1]; dst[k - 1] = t;
                }
        }
        fasa_calibration_desc desc = desc_of(cal);
        desc.shape.layout = layout;
        desc.dims = dims;
        *out = NULL;
        st = fasa__calibration_build(ctx, &desc, out);
    }
    fasa__free(ctx, dims);
    fasa__unlock(ctx);
    return st;
}

/* Top n_tip FC indices of a CA row (ties -> lower FC index), as sorted dims. */
void fasa__select_dims(const float *ca, uint32_t d, uint32_t n_tip, fasa_rope_layout layout,
                       fasa_fc_convention conv, uint16_t *dims_out)
{
    uint32_t n_fc = d / 2;
    bool taken[FASA_MAX_HEAD_DIM / 2] = {false};
    uint32_t w = 0;
    for (uint32_t pick = 0; pick < n_tip; pick++) {
        uint32_t best = UINT32_MAX;
        for (uint32_t j = 0; j < n_fc; j++)
            if (!taken[j] && (best == UINT32_MAX || ca[j] > ca[best])) best = j;
        taken[best] = true;
        fasa__fc_dims(layout, conv, d, best, &dims_out[w], &dims_out[w + 1]);
        w += 2;
    }
    for (uint32_t i = 1; i < w; i++)
        for (uint32_t k = i; k > 0 && dims_out[k] < dims_out[k - 1]; k--) {
            uint16_t t = dims_out[k]; dims_out[k] = dims_out[k - 1]; dims_out[k - 1] = t;
        }
}

fasa_status fasa_calibration_reselect(const fasa_calibration *cal, uint32_t n_tip,
                                      fasa_calibration **out)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cal->ctx;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    uint32_t d = cal->shape.head_dim;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_reselect: out is NULL");
    else if (!cal->ca_mean)
        st = fasa__error(ctx, FASA_ERROR_UNSUPPORTED, "fasa_calibration_reselect: the calibration has no ca_mean table");
    else if (n_tip == 0 || n_tip > d / 2)
        st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "n_tip: %u not in 1..head_dim/2 (%u)", n_tip, d / 2);
    size_t n_heads = n_heads_total(&cal->shape);
    uint16_t *dims = st == FASA_OK ? fasa__alloc(ctx, n_heads * 2 * n_tip * sizeof *dims) : NULL;
    if (st == FASA_OK && !dims) st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "reselect: out of host memory");
    if (st == FASA_OK) {
        for (size_t head = 0; head < n_heads; head++)
            fasa__select_dims(cal->ca_mean + head * (d / 2), d, n_tip, cal->shape.layout,
                              cal->convention, dims + head * 2 * n_tip);
        fasa_calibration_desc desc = desc_of(cal);
        desc.n_tip = n_tip;
        desc.dims = dims;
        *out = NULL;
        st = fasa__calibration_build(ctx, &desc, out);
    }
    fasa__free(ctx, dims);
    fasa__unlock(ctx);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Getters                                                                   */
/* ------------------------------------------------------------------------ */

fasa_status fasa_calibration_get_info(const fasa_calibration *cal, fasa_calibration_info *out)
{
    if (!cal || !out) return FASA_ERROR_INVALID_ARGUMENT;
    *out = (fasa_calibration_info){
        .shape = cal->shape, .n_tip = cal->n_tip, .convention = cal->convention,
        .k_calib = cal->k_calib, .n_samples = cal->n_samples, .n_steps = cal->n_steps,
        .has_ca_mean = cal->ca_mean != NULL, .model_id = cal->model_id, .source = cal->source};
    return FASA_OK;
}

static fasa_status check_head(const fasa_calibration *cal, uint32_t layer, uint32_t head,
                              uint32_t n_heads, const void *out, uint32_t capacity, uint32_t need,
                              const char *fn)
{
    fasa_context *ctx = cal->ctx;
    if (layer >= cal->shape.n_layers)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: layer %u out of range (n_layers %u)",
                           fn, layer, cal->shape.n_layers);
    if (head >= n_heads)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: head %u out of range (%u heads)", fn,
                           head, n_heads);
    if (!out) return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (capacity < need)
        return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s: capacity %u < %u needed", fn,
                           capacity, need);
    return FASA_OK;
}

fasa_status fasa_calibration_get_dims(const fasa_calibration *cal, uint32_t layer, uint32_t q_head,
                                      uint16_t *out, uint32_t capacity)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cal->ctx);
    uint32_t per_head = 2 * cal->n_tip;
    fasa_status st = check_head(cal, layer, q_head, cal->shape.n_q_heads, out, capacity, per_head,
                                "fasa_calibration_get_dims");
    if (st == FASA_OK)
        memcpy(out, cal->dims + ((size_t)layer * cal->shape.n_q_heads + q_head) * per_head,
               per_head * sizeof *out);
    fasa__unlock(cal->ctx);
    return st;
}

/* Size of the union of the group's dim lists (no locking). */
uint32_t fasa__union_dims(const fasa_calibration *cal, uint32_t layer, uint32_t kv_head,
                          uint16_t *dims_out)
{
    bool in_union[FASA_MAX_HEAD_DIM] = {false};
    uint32_t G = cal->shape.n_q_heads / cal->shape.n_kv_heads, per_head = 2 * cal->n_tip;
    for (uint32_t h = kv_head * G; h < (kv_head + 1) * G; h++) {
        const uint16_t *dims = cal->dims + ((size_t)layer * cal->shape.n_q_heads + h) * per_head;
        for (uint32_t i = 0; i < per_head; i++) in_union[dims[i]] = true;
    }
    uint32_t u = 0;
    for (uint32_t c = 0; c < cal->shape.head_dim; c++)
        if (in_union[c]) {
            if (dims_out) dims_out[u] = (uint16_t)c;
            u++;
        }
    return u;
}

fasa_status fasa_calibration_union_size(const fasa_calibration *cal, uint32_t layer,
                                        uint32_t kv_head, uint32_t *out)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cal->ctx);
    fasa_status st = check_head(cal, layer, kv_head, cal->shape.n_kv_heads, out, 1, 1,
                                "fasa_calibration_union_size");
    if (st == FASA_OK) *out = fasa__union_dims(cal, layer, kv_head, NULL);
    fasa__unlock(cal->ctx);
    return st;
}

fasa_status fasa_calibration_get_ca(const fasa_calibration *cal, uint32_t layer, uint32_t q_head,
                                    float *out, uint32_t capacity)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(cal->ctx);
    uint32_t n_fc = cal->shape.head_dim / 2;
    fasa_status st = check_head(cal, layer, q_head, cal->shape.n_q_heads, out, capacity, n_fc,
                                "fasa_calibration_get_ca");
    if (st == FASA_OK && !cal->ca_mean)
        st = fasa__error(cal->ctx, FASA_ERROR_UNSUPPORTED,
                         "fasa_calibration_get_ca: the calibration has no ca_mean table");
    if (st == FASA_OK)
        memcpy(out, cal->ca_mean + ((size_t)layer * cal->shape.n_q_heads + q_head) * n_fc,
               n_fc * sizeof *out);
    fasa__unlock(cal->ctx);
    return st;
}
