/* Calibration files: JSON read with cJSON, written by hand (one line per
 * head, so files diff well).  Format (docs/CALIBRATION.md):
 *
 * { "format": "fasa-calibration", "version": 1, "model_id": "...",
 *   "layout": "NORM"|"NEOX", "fc_convention": "TRUE_PAIR"|"HF_ADJACENT",
 *   "n_layers": L, "n_q_heads": Hq, "n_kv_heads": Hkv, "head_dim": d,
 *   "n_tip": n, "k_calib": K, "source": "...", "n_samples": s, "n_steps": t,
 *   "dims": [[[2n dims] x Hq] x L],
 *   "union_sizes": [[u_g x Hkv] x L]          (optional, checked if present)
 *   "ca_mean": [[[d/2 floats] x Hq] x L] }    (optional)
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define FORMAT_NAME "fasa-calibration"
#define FORMAT_VERSION 1
#define MAX_FILE_BYTES (256u << 20)

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct loader {
    fasa_context *ctx;
    const char *origin;           /* file path or "memory" */
    fasa_calibration_desc desc;
    uint16_t *dims;
    float *ca;
} loader;

static fasa_status parse_error(loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static fasa_status parse_error(loader *ld, const char *fmt, ...)
{
    char msg[FASA_ERROR_MAX - 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fasa__error(ld->ctx, FASA_ERROR_PARSE, "calibration %s: %s", ld->origin, msg);
}

static fasa_status get_uint(loader *ld, const cJSON *root, const char *key, bool required,
                            uint64_t max, uint64_t *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item) {
        if (!required) return FASA_OK;
        return parse_error(ld, "field '%s' is missing", key);
    }
    double v = cJSON_GetNumberValue(item);
    if (!cJSON_IsNumber(item) || v < 0 || v > (double)max || v != floor(v))
        return parse_error(ld, "field '%s' must be an integer in 0..%llu", key, (unsigned long long)max);
    *out = (uint64_t)v;
    return FASA_OK;
}

static fasa_status get_string(loader *ld, const cJSON *root, const char *key, bool required,
                              const char **out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item) {
        if (!required) return FASA_OK;
        return parse_error(ld, "field '%s' is missing", key);
    }
    if (!cJSON_IsString(item)) return parse_error(ld, "field '%s' must be a string", key);
    *out = item->valuestring;
    return FASA_OK;
}

static fasa_status parse_header(loader *ld, const cJSON *root)
{
    const char *format = NULL, *layout = NULL, *conv = "TRUE_PAIR";
    fasa_status st = get_string(ld, root, "format", true, &format);
    if (st != FASA_OK) return st;
    if (strcmp(format, FORMAT_NAME) != 0)
        return parse_error(ld, "field 'format' is '%s', expected '%s'", format, FORMAT_NAME);
    uint64_t version = 0;
    if ((st = get_uint(ld, root, "version", true, 1000, &version)) != FASA_OK) return st;
    if (version != FORMAT_VERSION)
        return parse_error(ld, "field 'version' is %llu; this library reads version %d",
                           (unsigned long long)version, FORMAT_VERSION);
    if ((st = get_string(ld, root, "layout", true, &layout)) != FASA_OK) return st;
    if (strcmp(layout, "NORM") == 0) ld->desc.shape.layout = FASA_ROPE_NORM;
    else if (strcmp(layout, "NEOX") == 0) ld->desc.shape.layout = FASA_ROPE_NEOX;
    else return parse_error(ld, "field 'layout' is '%s', expected NORM or NEOX", layout);
    if ((st = get_string(ld, root, "fc_convention", false, &conv)) != FASA_OK) return st;
    if (strcmp(conv, "TRUE_PAIR") == 0) ld->desc.convention = FASA_FC_TRUE_PAIR;
    else if (strcmp(conv, "HF_ADJACENT") == 0) ld->desc.convention = FASA_FC_HF_ADJACENT;
    else return parse_error(ld, "field 'fc_convention' is '%s', expected TRUE_PAIR or HF_ADJACENT", conv);

    uint64_t n_layers = 0, hq = 0, hkv = 0, d = 0, n_tip = 0, k_calib = 0;
    uint64_t samples = 0, steps = 0;
    if ((st = get_uint(ld, root, "n_layers", true, 4096, &n_layers)) != FASA_OK ||
        (st = get_uint(ld, root, "n_q_heads", true, 1024, &hq)) != FASA_OK ||
        (st = get_uint(ld, root, "n_kv_heads", true, 1024, &hkv)) != FASA_OK ||
        (st = get_uint(ld, root, "head_dim", true, FASA_MAX_HEAD_DIM, &d)) != FASA_OK ||
        (st = get_uint(ld, root, "n_tip", true, FASA_MAX_HEAD_DIM / 2, &n_tip)) != FASA_OK ||
        (st = get_uint(ld, root, "k_calib", false, UINT32_MAX, &k_calib)) != FASA_OK ||
        (st = get_uint(ld, root, "n_samples", false, UINT64_MAX >> 12, &samples)) != FASA_OK ||
        (st = get_uint(ld, root, "n_steps", false, UINT64_MAX >> 12, &steps)) != FASA_OK)
        return st;
    ld->desc.shape.n_layers = (uint32_t)n_layers;
    ld->desc.shape.n_q_heads = (uint32_t)hq;
    ld->desc.shape.n_kv_heads = (uint32_t)hkv;
    ld->desc.shape.head_dim = (uint32_t)d;
    ld->desc.n_tip = (uint32_t)n_tip;
    ld->desc.k_calib = (uint32_t)k_calib;
    ld->desc.n_samples = samples;
    ld->desc.n_steps = steps;
    if ((st = get_string(ld, root, "model_id", false, &ld->desc.model_id)) != FASA_OK) return st;
    if ((st = get_string(ld, root, "source", false, &ld->desc.source)) != FASA_OK) return st;
    /* shape errors carry the field name; report them as parse errors of the file */
    fasa_status shape_st = fasa__check_shape(ld->ctx, &ld->desc.shape, "header");
    if (shape_st != FASA_OK) return parse_error(ld, "%s", ld->ctx->last_error);
    if (n_tip == 0 || n_tip > d / 2)
        return parse_error(ld, "field 'n_tip' is %llu, not in 1..head_dim/2 (%llu)",
                           (unsigned long long)n_tip, (unsigned long long)(d / 2));
    return FASA_OK;
}

/* Checks that item is an array of exactly n entries. */
static fasa_status expect_array(loader *ld, const cJSON *item, int n, const char *what,
                                uint32_t layer, uint32_t head, int depth)
{
    char where[96];
    if (depth == 0) snprintf(where, sizeof where, "field '%s'", what);
    else if (depth == 1) snprintf(where, sizeof where, "field '%s' layer %u", what, layer);
    else snprintf(where, sizeof where, "field '%s' layer %u head %u", what, layer, head);
    if (!cJSON_IsArray(item)) return parse_error(ld, "%s must be an array", where);
    int got = cJSON_GetArraySize(item);
    if (got != n) return parse_error(ld, "%s has %d entries, expected %d", where, got, n);
    return FASA_OK;
}

/* Walks a [n_layers][n_heads][n_per] nested array, calling leaf() per value. */
typedef fasa_status (*leaf_fn)(loader *ld, const cJSON *v, uint32_t layer, uint32_t head,
                               uint32_t i, size_t flat);

static fasa_status walk3(loader *ld, const cJSON *root, const char *key, uint32_t n_heads,
                         uint32_t n_per, leaf_fn leaf)
{
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, key);
    uint32_t n_layers = ld->desc.shape.n_layers;
    fasa_status st = expect_array(ld, layers, (int)n_layers, key, 0, 0, 0);
    size_t flat = 0;
    for (uint32_t l = 0; st == FASA_OK && l < n_layers; l++) {
        const cJSON *heads = cJSON_GetArrayItem(layers, (int)l);
        st = expect_array(ld, heads, (int)n_heads, key, l, 0, 1);
        for (uint32_t h = 0; st == FASA_OK && h < n_heads; h++) {
            const cJSON *vals = cJSON_GetArrayItem(heads, (int)h);
            st = expect_array(ld, vals, (int)n_per, key, l, h, 2);
            const cJSON *v = vals ? vals->child : NULL;
            for (uint32_t i = 0; st == FASA_OK && i < n_per; i++, v = v->next)
                st = leaf(ld, v, l, h, i, flat++);
        }
    }
    return st;
}

static fasa_status dims_leaf(loader *ld, const cJSON *v, uint32_t l, uint32_t h, uint32_t i, size_t flat)
{
    double x = cJSON_GetNumberValue(v);
    if (!cJSON_IsNumber(v) || x != floor(x) || x < 0 || x >= ld->desc.shape.head_dim)
        return parse_error(ld, "field 'dims' layer %u head %u entry %u: not an integer in 0..%u", l,
                           h, i, ld->desc.shape.head_dim - 1);
    ld->dims[flat] = (uint16_t)x;
    return FASA_OK;
}

static fasa_status ca_leaf(loader *ld, const cJSON *v, uint32_t l, uint32_t h, uint32_t i, size_t flat)
{
    double x = cJSON_GetNumberValue(v);
    if (!cJSON_IsNumber(v) || !(x >= 0.0 && x <= 1.0))
        return parse_error(ld, "field 'ca_mean' layer %u head %u fc %u: not a number in [0,1]", l, h, i);
    ld->ca[flat] = (float)x;
    return FASA_OK;
}

static fasa_status check_dims_lists(loader *ld)
{
    const fasa_calibration_desc *d = &ld->desc;
    uint32_t per_head = 2 * d->n_tip;
    for (uint32_t l = 0; l < d->shape.n_layers; l++)
        for (uint32_t h = 0; h < d->shape.n_q_heads; h++) {
            char msg[256];
            const uint16_t *dims = ld->dims + ((size_t)l * d->shape.n_q_heads + h) * per_head;
            if (!fasa__dims_valid(dims, d->n_tip, d->shape.head_dim, d->shape.layout, d->convention,
                                  msg, sizeof msg))
                return parse_error(ld, "field 'dims' layer %u head %u: %s", l, h, msg);
        }
    return FASA_OK;
}

/* union_sizes is informational, but a file whose numbers disagree with its
 * dims is corrupt. */
static fasa_status check_union_sizes(loader *ld, const cJSON *root, const fasa_calibration *cal)
{
    const cJSON *us = cJSON_GetObjectItemCaseSensitive(root, "union_sizes");
    if (!us) return FASA_OK;
    uint32_t n_layers = cal->shape.n_layers, hkv = cal->shape.n_kv_heads;
    fasa_status st = expect_array(ld, us, (int)n_layers, "union_sizes", 0, 0, 0);
    for (uint32_t l = 0; st == FASA_OK && l < n_layers; l++) {
        const cJSON *row = cJSON_GetArrayItem(us, (int)l);
        st = expect_array(ld, row, (int)hkv, "union_sizes", l, 0, 1);
        for (uint32_t g = 0; st == FASA_OK && g < hkv; g++) {
            const cJSON *v = cJSON_GetArrayItem(row, (int)g);
            uint32_t u = fasa__union_dims(cal, l, g, NULL);
            if (!cJSON_IsNumber(v) || cJSON_GetNumberValue(v) != (double)u)
                st = parse_error(ld, "field 'union_sizes' layer %u kv head %u: file says %g, dims give %u",
                                 l, g, cJSON_IsNumber(v) ? cJSON_GetNumberValue(v) : -1.0, u);
        }
    }
    return st;
}

static fasa_status check_expected(loader *ld, const fasa_model_shape *e)
{
    const fasa_model_shape *s = &ld->desc.shape;
    const char *field = NULL;
    uint32_t want = 0, got = 0;
    if (s->n_layers != e->n_layers) field = "n_layers", want = e->n_layers, got = s->n_layers;
    else if (s->n_q_heads != e->n_q_heads) field = "n_q_heads", want = e->n_q_heads, got = s->n_q_heads;
    else if (s->n_kv_heads != e->n_kv_heads) field = "n_kv_heads", want = e->n_kv_heads, got = s->n_kv_heads;
    else if (s->head_dim != e->head_dim) field = "head_dim", want = e->head_dim, got = s->head_dim;
    if (field)
        return fasa__error(ld->ctx, FASA_ERROR_MISMATCH,
                           "calibration %s: field '%s' is %u but the model has %u", ld->origin,
                           field, got, want);
    if (s->layout != e->layout)
        return fasa__error(ld->ctx, FASA_ERROR_MISMATCH,
                           "calibration %s: field 'layout' is %s but the model uses %s (remap it with "
                           "fasa_calibration_remap_layout)", ld->origin,
                           s->layout == FASA_ROPE_NORM ? "NORM" : "NEOX",
                           e->layout == FASA_ROPE_NORM ? "NORM" : "NEOX");
    return FASA_OK;
}

static fasa_status load_json(loader *ld, const cJSON *root, const fasa_model_shape *expect,
                             fasa_calibration **out)
{
    if (!cJSON_IsObject(root)) return parse_error(ld, "top level is not a JSON object");
    fasa_status st = parse_header(ld, root);
    if (st != FASA_OK) return st;
    const fasa_model_shape *s = &ld->desc.shape;
    size_t n_heads = (size_t)s->n_layers * s->n_q_heads;
    ld->dims = fasa__alloc(ld->ctx, n_heads * 2 * ld->desc.n_tip * sizeof(uint16_t));
    bool has_ca = cJSON_GetObjectItemCaseSensitive(root, "ca_mean") != NULL;
    if (has_ca) ld->ca = fasa__alloc(ld->ctx, n_heads * (s->head_dim / 2) * sizeof(float));
    if (!ld->dims || (has_ca && !ld->ca))
        return fasa__error(ld->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibration: out of host memory");
    if ((st = walk3(ld, root, "dims", s->n_q_heads, 2 * ld->desc.n_tip, dims_leaf)) != FASA_OK)
        return st;
    if (has_ca && (st = walk3(ld, root, "ca_mean", s->n_q_heads, s->head_dim / 2, ca_leaf)) != FASA_OK)
        return st;
    if ((st = check_dims_lists(ld)) != FASA_OK) return st;
    if (expect) {
        if ((st = fasa__check_shape(ld->ctx, expect, "expect")) != FASA_OK) return st;
        if ((st = check_expected(ld, expect)) != FASA_OK) return st;
    }
    ld->desc.dims = ld->dims;
    ld->desc.ca_mean = ld->ca;
    fasa_calibration *cal = NULL;
    if ((st = fasa__calibration_build(ld->ctx, &ld->desc, &cal)) != FASA_OK) return st;
    if ((st = check_union_sizes(ld, root, cal)) != FASA_OK) {
        fasa_calibration_destroy(cal);
        return st;
    }
    *out = cal;
    return FASA_OK;
}

static fasa_status load_text(fasa_context *ctx, const char *origin, const char *json, size_t size,
                             const fasa_model_shape *expect, fasa_calibration **out)
{
    loader ld = {.ctx = ctx, .origin = origin};
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, size, &end, false);
    fasa_status st;
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        st = parse_error(&ld, "not valid JSON (error near byte %zu of %zu)", at, size);
    } else {
        st = load_json(&ld, root, expect, out);
    }
    cJSON_Delete(root);
    fasa__free(ctx, ld.dims);
    fasa__free(ctx, ld.ca);
    return st;
}

fasa_status fasa_calibration_load_memory(fasa_context *ctx, const char *json, size_t size,
                                         const fasa_model_shape *expect, fasa_calibration **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_load_memory: out is NULL");
    else if (!json) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_load_memory: json is NULL");
    else if (size == 0) st = fasa__error(ctx, FASA_ERROR_PARSE, "calibration memory: input is empty");
    else {
        *out = NULL;
        st = load_text(ctx, "memory", json, size, expect, out);
    }
    fasa__unlock(ctx);
    return st;
}

static fasa_status read_file(fasa_context *ctx, const char *path, char **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fasa__error(ctx, FASA_ERROR_IO, "calibration %s: cannot open: %s", path, strerror(errno));
    fasa_status st = FASA_OK;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0)
        st = fasa__error(ctx, FASA_ERROR_IO, "calibration %s: cannot determine the file size", path);
    else if (n == 0) st = fasa__error(ctx, FASA_ERROR_PARSE, "calibration %s: file is empty", path);
    else if ((unsigned long)n > MAX_FILE_BYTES)
        st = fasa__error(ctx, FASA_ERROR_PARSE, "calibration %s: %ld bytes is larger than the %u MiB limit",
                         path, n, MAX_FILE_BYTES >> 20);
    char *buf = st == FASA_OK ? fasa__alloc_aligned(ctx, (size_t)n + 1, 8) : NULL;
    if (st == FASA_OK && !buf) st = fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibration: out of host memory");
    if (st == FASA_OK && fread(buf, 1, (size_t)n, f) != (size_t)n)
        st = fasa__error(ctx, FASA_ERROR_IO, "calibration %s: short read", path);
    fclose(f);
    if (st != FASA_OK) {
        fasa__free(ctx, buf);
        return st;
    }
    buf[n] = '\0';
    *data = buf;
    *size = (size_t)n;
    return FASA_OK;
}

fasa_status fasa_calibration_load(fasa_context *ctx, const char *path, const fasa_model_shape *expect,
                                  fasa_calibration **out)
{
    if (!ctx) return FASA_ERROR_INVALID_ARGUMENT;
    fasa__lock(ctx);
    fasa_status st;
    char *data = NULL;
    size_t size = 0;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_load: out is NULL");
    else if (!path) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_load: path is NULL");
    else {
        *out = NULL;
        st = read_file(ctx, path, &data, &size);
        if (st == FASA_OK) st = load_text(ctx, path, data, size, expect, out);
    }
    fasa__free(ctx, data);
    fasa__unlock(ctx);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Saving                                                                    */
/* ------------------------------------------------------------------------ */

static void write_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void write_header(FILE *f, const fasa_calibration *cal)
{
    const fasa_model_shape *s = &cal->shape;
    fprintf(f, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"model_id\": ", FORMAT_NAME, FORMAT_VERSION);
    write_string(f, cal->model_id);
    fprintf(f, ",\n  \"layout\": \"%s\",\n  \"fc_convention\": \"%s\",\n",
            s->layout == FASA_ROPE_NORM ? "NORM" : "NEOX",
            cal->convention == FASA_FC_TRUE_PAIR ? "TRUE_PAIR" : "HF_ADJACENT");
    fprintf(f, "  \"n_layers\": %u,\n  \"n_q_heads\": %u,\n  \"n_kv_heads\": %u,\n  \"head_dim\": %u,\n",
            s->n_layers, s->n_q_heads, s->n_kv_heads, s->head_dim);
    fprintf(f, "  \"n_tip\": %u,\n  \"k_calib\": %u,\n  \"source\": ", cal->n_tip, cal->k_calib);
    write_string(f, cal->source);
    fprintf(f, ",\n  \"n_samples\": %llu,\n  \"n_steps\": %llu,\n",
            (unsigned long long)cal->n_samples, (unsigned long long)cal->n_steps);
}

static void write_union_sizes(FILE *f, const fasa_calibration *cal)
{
    fprintf(f, "  \"union_sizes\": [\n");
    for (uint32_t l = 0; l < cal->shape.n_layers; l++) {
        fprintf(f, "    [");
        for (uint32_t g = 0; g < cal->shape.n_kv_heads; g++)
            fprintf(f, "%s%u", g ? ", " : "", fasa__union_dims(cal, l, g, NULL));
        fprintf(f, "]%s\n", l + 1 < cal->shape.n_layers ? "," : "");
    }
    fprintf(f, "  ]");
}

/* Writes a [n_layers][Hq][n_per] table, one head per line. */
static void write_table(FILE *f, const fasa_calibration *cal, const char *key, uint32_t n_per,
                        const uint16_t *u16, const float *f32)
{
    fprintf(f, ",\n  \"%s\": [\n", key);
    uint32_t hq = cal->shape.n_q_heads;
    for (uint32_t l = 0; l < cal->shape.n_layers; l++) {
        fprintf(f, "    [\n");
        for (uint32_t h = 0; h < hq; h++) {
            size_t base = ((size_t)l * hq + h) * n_per;
            fprintf(f, "      [");
            for (uint32_t i = 0; i < n_per; i++) {
                if (u16) fprintf(f, "%s%u", i ? ", " : "", u16[base + i]);
                else fprintf(f, "%s%.6g", i ? ", " : "", (double)f32[base + i]);
            }
            fprintf(f, "]%s\n", h + 1 < hq ? "," : "");
        }
        fprintf(f, "    ]%s\n", l + 1 < cal->shape.n_layers ? "," : "");
    }
    fprintf(f, "  ]");
}

fasa_status fasa_calibration_save(const fasa_calibration *cal, const char *path)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cal->ctx;
    fasa__lock(ctx);
    fasa_status st = FASA_OK;
    FILE *f = NULL;
    if (!path) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_save: path is NULL");
    else if (!(f = fopen(path, "wb")))
        st = fasa__error(ctx, FASA_ERROR_IO, "calibration %s: cannot create: %s", path, strerror(errno));
    if (st == FASA_OK) {
        write_header(f, cal);
        write_union_sizes(f, cal);
        write_table(f, cal, "dims", 2 * cal->n_tip, cal->dims, NULL);
        if (cal->ca_mean) write_table(f, cal, "ca_mean", cal->shape.head_dim / 2, NULL, cal->ca_mean);
        fprintf(f, "\n}\n");
        bool bad = ferror(f) != 0;
        if (fclose(f) != 0 || bad)
            st = fasa__error(ctx, FASA_ERROR_IO, "calibration %s: write failed", path);
    }
    fasa__unlock(ctx);
    return st;
}
