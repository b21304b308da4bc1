/* Calibration files: JSON read with the strict reader in json_strict.c,
 * written by hand (one line per head, so files diff well).  Format
 * (docs/CALIBRATION.md):
 *
 * { "format": "fasa-calibration", "version": 1, "model_id": "...",
 *   "layout": "NORM"|"NEOX", "fc_convention": "TRUE_PAIR"|"HF_ADJACENT",
 *   "n_layers": L, "n_q_heads": Hq, "n_kv_heads": Hkv, "head_dim": d,
 *   "n_tip": n, "k_calib": K, "source": "...", "n_samples": s, "n_steps": t,
 *   "dims": [[[2n dims] x Hq] x L],
 *   "union_sizes": [[u_g x Hkv] x L]          (optional, checked if present)
 *   "ca_mean": [[[d/2 floats] x Hq] x L] }    (optional)
 *
 * Nothing else is accepted: no other key, no key twice, integers written as
 * plain digits.  A file is read whole (fileio.c: never blocks on a FIFO or a
 * device) and written to a temporary file renamed over the old one, so a
 * failed save leaves the old file as it was.
 */
#include "internal.h"
#include "fileio.h"
#include "json_strict.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define FORMAT_NAME "fasa-calibration"
#define FORMAT_VERSION 1
#define MAX_FILE_BYTES (256u << 20)
/* the top-level object holding arrays three deep ("dims", "ca_mean") */
#define FORMAT_DEPTH 4

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

/* Every key of the format, in the order files are written. */
enum {
    K_FORMAT, K_VERSION, K_MODEL_ID, K_LAYOUT, K_FC_CONVENTION, K_N_LAYERS, K_N_Q_HEADS, K_N_KV_HEADS,
    K_HEAD_DIM, K_N_TIP, K_K_CALIB, K_SOURCE, K_N_SAMPLES, K_N_STEPS, K_UNION_SIZES, K_DIMS, K_CA_MEAN,
    N_KEYS
};
static const char *const key_names[N_KEYS] = {
    "format", "version", "model_id", "layout", "fc_convention", "n_layers", "n_q_heads", "n_kv_heads",
    "head_dim", "n_tip", "k_calib", "source", "n_samples", "n_steps", "union_sizes", "dims", "ca_mean",
};

typedef struct loader {
    fasa_context *ctx;
    const char *origin;           /* file path or "memory" */
    fasa__json doc;
    int value[N_KEYS];            /* token of each key's value, -1 when absent */
    int unknown_key;              /* token of the first key not in the format, -1 if none */
    fasa_calibration_desc desc;
    uint16_t *dims;
    float *ca;
    char *strings[N_KEYS];        /* decoded strings (each key is read once), freed with the loader */
    int n_strings;
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

static fasa_status out_of_memory(loader *ld)
{
    return fasa__error(ld->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibration %s: out of host memory", ld->origin);
}

static size_t at(const loader *ld, int tok) { return fasa__json_offset(&ld->doc, tok); }

/* Finds each key's value; a key given twice is an error (JSON leaves it
 * open which one counts, and a reader must not pick one silently). */
static fasa_status index_keys(loader *ld)
{
    const fasa__json *doc = &ld->doc;
    if (fasa__json_type_of(doc, 0) != FASA__JSON_OBJECT) return parse_error(ld, "top level is not a JSON object");
    for (int k = 0; k < N_KEYS; k++) ld->value[k] = -1;
    ld->unknown_key = -1;
    int key = 1, n = fasa__json_size(doc, 0);
    for (int i = 0; i < n; i++, key = fasa__json_next(doc, key + 1)) {
        int k = 0;
        while (k < N_KEYS && !fasa__json_string_is(doc, key, key_names[k])) k++;
        if (k == N_KEYS) {
            if (ld->unknown_key < 0) ld->unknown_key = key;
        } else if (ld->value[k] >= 0) {
            return parse_error(ld, "duplicate key '%s' at byte %zu (first at byte %zu)", key_names[k], at(ld, key),
                               at(ld, ld->value[k] - 1));
        } else {
            ld->value[k] = key + 1;
        }
    }
    return FASA_OK;
}

/* Describes a token for a message: its byte offset and source text. */
static const char *token_text(loader *ld, int tok, char *buf, size_t size)
{
    char ex[40];
    snprintf(buf, size, "%s at byte %zu", fasa__json_excerpt(&ld->doc, tok, ex, sizeof ex), at(ld, tok));
    return buf;
}

/* A string value as written in the file (escaped, so a message shows no
 * raw control characters), with its byte offset. */
static const char *source_text(loader *ld, int key, char *buf, size_t size)
{
    return token_text(ld, ld->value[key], buf, size);
}

static fasa_status get_uint(loader *ld, int key, bool required, uint64_t max, uint64_t *out)
{
    int v = ld->value[key];
    if (v < 0) return required ? parse_error(ld, "field '%s' is missing", key_names[key]) : FASA_OK;
    char buf[80];
    if (!fasa__json_get_uint(&ld->doc, v, max, out))
        return parse_error(ld, "field '%s' must be an integer in 0..%llu written as plain digits, not %s",
                           key_names[key], (unsigned long long)max, token_text(ld, v, buf, sizeof buf));
    return FASA_OK;
}

/* *out keeps its default when an optional key is absent. */
static fasa_status get_string(loader *ld, int key, bool required, const char **out)
{
    int v = ld->value[key];
    if (v < 0) return required ? parse_error(ld, "field '%s' is missing", key_names[key]) : FASA_OK;
    char buf[80];
    if (fasa__json_type_of(&ld->doc, v) != FASA__JSON_STRING)
        return parse_error(ld, "field '%s' must be a string, not %s", key_names[key], token_text(ld, v, buf, sizeof buf));
    char *s = NULL;
    if (fasa__json_get_string(&ld->doc, v, &s) != FASA_OK) return out_of_memory(ld);
    ld->strings[ld->n_strings++] = s;
    *out = s;
    return FASA_OK;
}

/* format and version come first: a file of another version may have other keys. */
static fasa_status parse_version(loader *ld)
{
    const char *format = NULL;
    uint64_t version = 0;
    char buf[80];
    fasa_status st = get_string(ld, K_FORMAT, true, &format);
    if (st != FASA_OK) return st;
    if (strcmp(format, FORMAT_NAME) != 0)
        return parse_error(ld, "field 'format' is %s, expected \"%s\"", source_text(ld, K_FORMAT, buf, sizeof buf),
                           FORMAT_NAME);
    if ((st = get_uint(ld, K_VERSION, true, 1000, &version)) != FASA_OK) return st;
    if (version != FORMAT_VERSION)
        return parse_error(ld, "field 'version' is %llu; this library reads version %d",
                           (unsigned long long)version, FORMAT_VERSION);
    if (ld->unknown_key >= 0)
        return parse_error(ld, "unknown key %s (not in format version %d)",
                           token_text(ld, ld->unknown_key, buf, sizeof buf), FORMAT_VERSION);
    return FASA_OK;
}

static fasa_status parse_enums(loader *ld)
{
    const char *layout = NULL, *conv = "TRUE_PAIR";
    char buf[80];
    fasa_status st = get_string(ld, K_LAYOUT, true, &layout);
    if (st != FASA_OK) return st;
    if (strcmp(layout, "NORM") == 0) ld->desc.shape.layout = FASA_ROPE_NORM;
    else if (strcmp(layout, "NEOX") == 0) ld->desc.shape.layout = FASA_ROPE_NEOX;
    else return parse_error(ld, "field 'layout' is %s, expected NORM or NEOX", source_text(ld, K_LAYOUT, buf, sizeof buf));
    if ((st = get_string(ld, K_FC_CONVENTION, false, &conv)) != FASA_OK) return st;
    if (strcmp(conv, "TRUE_PAIR") == 0) ld->desc.convention = FASA_FC_TRUE_PAIR;
    else if (strcmp(conv, "HF_ADJACENT") == 0) ld->desc.convention = FASA_FC_HF_ADJACENT;
    else return parse_error(ld, "field 'fc_convention' is %s, expected TRUE_PAIR or HF_ADJACENT",
                            source_text(ld, K_FC_CONVENTION, buf, sizeof buf));
    return FASA_OK;
}

static fasa_status parse_header(loader *ld)
{
    fasa_status st = parse_version(ld);
    if (st == FASA_OK) st = parse_enums(ld);
    if (st != FASA_OK) return st;
    uint64_t n_layers = 0, hq = 0, hkv = 0, d = 0, n_tip = 0, k_calib = 0;
    uint64_t samples = 0, steps = 0;
    if ((st = get_uint(ld, K_N_LAYERS, true, 4096, &n_layers)) != FASA_OK ||
        (st = get_uint(ld, K_N_Q_HEADS, true, 1024, &hq)) != FASA_OK ||
        (st = get_uint(ld, K_N_KV_HEADS, true, 1024, &hkv)) != FASA_OK ||
        (st = get_uint(ld, K_HEAD_DIM, true, FASA_MAX_HEAD_DIM, &d)) != FASA_OK ||
        (st = get_uint(ld, K_N_TIP, true, FASA_MAX_HEAD_DIM / 2, &n_tip)) != FASA_OK ||
        (st = get_uint(ld, K_K_CALIB, false, UINT32_MAX, &k_calib)) != FASA_OK ||
        (st = get_uint(ld, K_N_SAMPLES, false, UINT64_MAX >> 12, &samples)) != FASA_OK ||
        (st = get_uint(ld, K_N_STEPS, false, UINT64_MAX >> 12, &steps)) != FASA_OK)
        return st;
    ld->desc.shape.n_layers = (uint32_t)n_layers;
    ld->desc.shape.n_q_heads = (uint32_t)hq;
    ld->desc.shape.n_kv_heads = (uint32_t)hkv;
    ld->desc.shape.head_dim = (uint32_t)d;
    ld->desc.n_tip = (uint32_t)n_tip;
    ld->desc.k_calib = (uint32_t)k_calib;
    ld->desc.n_samples = samples;
    ld->desc.n_steps = steps;
    if ((st = get_string(ld, K_MODEL_ID, false, &ld->desc.model_id)) != FASA_OK) return st;
    if ((st = get_string(ld, K_SOURCE, false, &ld->desc.source)) != FASA_OK) return st;
    /* shape errors carry the field name; report them as parse errors of the file */
    fasa_status shape_st = fasa__check_shape(ld->ctx, &ld->desc.shape, "header");
    if (shape_st != FASA_OK) return parse_error(ld, "%s", ld->ctx->last_error);
    if (n_tip == 0 || n_tip > d / 2)
        return parse_error(ld, "field 'n_tip' is %llu, not in 1..head_dim/2 (%llu)",
                           (unsigned long long)n_tip, (unsigned long long)(d / 2));
    return FASA_OK;
}

/* Checks that token tok is an array of exactly n entries. */
static fasa_status expect_array(loader *ld, int tok, int n, const char *what, uint32_t layer, uint32_t head,
                                int depth)
{
    char where[96];
    if (depth == 0) snprintf(where, sizeof where, "field '%s'", what);
    else if (depth == 1) snprintf(where, sizeof where, "field '%s' layer %u", what, layer);
    else snprintf(where, sizeof where, "field '%s' layer %u head %u", what, layer, head);
    if (fasa__json_type_of(&ld->doc, tok) != FASA__JSON_ARRAY)
        return parse_error(ld, "%s must be an array (byte %zu)", where, at(ld, tok));
    int got = fasa__json_size(&ld->doc, tok);
    if (got != n) return parse_error(ld, "%s has %d entries, expected %d (byte %zu)", where, got, n, at(ld, tok));
    return FASA_OK;
}

/* Walks a [n_layers][n_heads][n_per] nested array, calling leaf() per
 * value.  Tokens come in text order, so the entries follow each other; a
 * leaf that is not a single number stops the walk before the order matters. */
typedef fasa_status (*leaf_fn)(loader *ld, int tok, uint32_t layer, uint32_t head, uint32_t i, size_t flat);

static fasa_status walk3(loader *ld, int key, uint32_t n_heads, uint32_t n_per, leaf_fn leaf)
{
    const char *name = key_names[key];
    uint32_t n_layers = ld->desc.shape.n_layers;
    int t = ld->value[key];
    fasa_status st = expect_array(ld, t++, (int)n_layers, name, 0, 0, 0);
    size_t flat = 0;
    for (uint32_t l = 0; st == FASA_OK && l < n_layers; l++) {
        st = expect_array(ld, t++, (int)n_heads, name, l, 0, 1);
        for (uint32_t h = 0; st == FASA_OK && h < n_heads; h++) {
            st = expect_array(ld, t++, (int)n_per, name, l, h, 2);
            for (uint32_t i = 0; st == FASA_OK && i < n_per; i++) st = leaf(ld, t++, l, h, i, flat++);
        }
    }
    return st;
}

static fasa_status dims_leaf(loader *ld, int tok, uint32_t l, uint32_t h, uint32_t i, size_t flat)
{
    uint64_t x = 0;
    char buf[80];
    if (!fasa__json_get_uint(&ld->doc, tok, ld->desc.shape.head_dim - 1, &x))
        return parse_error(ld, "field 'dims' layer %u head %u entry %u: not an integer in 0..%u: %s", l, h, i,
                           ld->desc.shape.head_dim - 1, token_text(ld, tok, buf, sizeof buf));
    ld->dims[flat] = (uint16_t)x;
    return FASA_OK;
}

static fasa_status ca_leaf(loader *ld, int tok, uint32_t l, uint32_t h, uint32_t i, size_t flat)
{
    double x = NAN;
    char buf[80];
    if (!fasa__json_get_double(&ld->doc, tok, &x) || !(x >= 0.0 && x <= 1.0))
        return parse_error(ld, "field 'ca_mean' layer %u head %u fc %u: not a number in [0,1]: %s", l, h, i,
                           token_text(ld, tok, buf, sizeof buf));
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
static fasa_status check_union_sizes(loader *ld, const fasa_calibration *cal)
{
    int t = ld->value[K_UNION_SIZES];
    if (t < 0) return FASA_OK;
    uint32_t n_layers = cal->shape.n_layers, hkv = cal->shape.n_kv_heads;
    fasa_status st = expect_array(ld, t++, (int)n_layers, "union_sizes", 0, 0, 0);
    for (uint32_t l = 0; st == FASA_OK && l < n_layers; l++) {
        st = expect_array(ld, t++, (int)hkv, "union_sizes", l, 0, 1);
        for (uint32_t g = 0; st == FASA_OK && g < hkv; g++, t++) {
            uint64_t v = 0;
            uint32_t u = fasa__union_dims(cal, l, g, NULL);
            char buf[80];
            if (!fasa__json_get_uint(&ld->doc, t, FASA_MAX_HEAD_DIM, &v) || v != u)
                st = parse_error(ld, "field 'union_sizes' layer %u kv head %u: file says %s, dims give %u", l, g,
                                 token_text(ld, t, buf, sizeof buf), u);
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

static fasa_status load_tables(loader *ld)
{
    const fasa_model_shape *s = &ld->desc.shape;
    size_t n_heads = (size_t)s->n_layers * s->n_q_heads;
    bool has_ca = ld->value[K_CA_MEAN] >= 0;
    if (ld->value[K_DIMS] < 0) return parse_error(ld, "field 'dims' is missing");
    ld->dims = fasa__alloc(ld->ctx, n_heads * 2 * ld->desc.n_tip * sizeof(uint16_t));
    if (has_ca) ld->ca = fasa__alloc(ld->ctx, n_heads * (s->head_dim / 2) * sizeof(float));
    if (!ld->dims || (has_ca && !ld->ca)) return out_of_memory(ld);
    fasa_status st = walk3(ld, K_DIMS, s->n_q_heads, 2 * ld->desc.n_tip, dims_leaf);
    if (st == FASA_OK && has_ca) st = walk3(ld, K_CA_MEAN, s->n_q_heads, s->head_dim / 2, ca_leaf);
    if (st == FASA_OK) st = check_dims_lists(ld);
    return st;
}

static fasa_status load_json(loader *ld, const fasa_model_shape *expect, fasa_calibration **out)
{
    fasa_status st = index_keys(ld);
    if (st == FASA_OK) st = parse_header(ld);
    if (st == FASA_OK) st = load_tables(ld);
    if (st != FASA_OK) return st;
    if (expect) {
        if ((st = fasa__check_shape(ld->ctx, expect, "expect")) != FASA_OK) return st;
        if ((st = check_expected(ld, expect)) != FASA_OK) return st;
    }
    ld->desc.dims = ld->dims;
    ld->desc.ca_mean = ld->ca;
    fasa_calibration *cal = NULL;
    if ((st = fasa__calibration_build(ld->ctx, &ld->desc, &cal)) != FASA_OK) return st;
    if ((st = check_union_sizes(ld, cal)) != FASA_OK) {
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
    char err[512];
    fasa_status st = fasa__json_parse(ctx, json, size, FORMAT_DEPTH, &ld.doc, err, sizeof err);
    if (st == FASA_ERROR_PARSE) st = parse_error(&ld, "%s", err);
    else if (st != FASA_OK) st = fasa__error(ctx, st, "calibration %s: %s", origin, err);
    else st = load_json(&ld, expect, out);
    fasa__json_free(&ld.doc);
    for (int i = 0; i < ld.n_strings; i++) fasa__free(ctx, ld.strings[i]);
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
    if (out) *out = NULL;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_load_memory: out is NULL");
    else if (!json) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_load_memory: json is NULL");
    else if (size == 0) st = fasa__error(ctx, FASA_ERROR_PARSE, "calibration memory: input is empty");
    else if (size > MAX_FILE_BYTES)
        st = fasa__error(ctx, FASA_ERROR_PARSE, "calibration memory: input is %zu bytes, more than the %u MiB limit",
                         size, MAX_FILE_BYTES >> 20);
    else st = load_text(ctx, "memory", json, size, expect, out);
    fasa__unlock(ctx);
    return st;
}

/* fasa__read_whole_file allocates through these, so the file's bytes come
 * from the context's allocator (and its fault injection). */
static void *file_alloc(void *user, size_t size) { return fasa__alloc_aligned(user, size, 8); }
static void file_free(void *user, void *ptr) { fasa__free(user, ptr); }

static fasa_status read_file(fasa_context *ctx, const char *path, char **data, size_t *size)
{
    fasa__file_alloc alloc = {.alloc = file_alloc, .free = file_free, .user = ctx};
    char err[256];
    int code = fasa__read_whole_file(path, MAX_FILE_BYTES, &alloc, data, size, err, sizeof err);
    if (code == ENOMEM) return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibration %s: %s", path, err);
    /* too large is a property of the content, as an empty file is */
    if (code == EFBIG) return fasa__error(ctx, FASA_ERROR_PARSE, "calibration %s: %s", path, err);
    if (code == EISDIR || code == EINVAL) return fasa__error(ctx, FASA_ERROR_IO, "calibration %s: %s", path, err);
    if (code) return fasa__error(ctx, FASA_ERROR_IO, "calibration %s: cannot open: %s", path, err);
    if (*size == 0) return fasa__error(ctx, FASA_ERROR_PARSE, "calibration %s: file is empty", path);
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
    if (out) *out = NULL;
    if (!out) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_load: out is NULL");
    else if (!path) st = fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_load: path is NULL");
    else {
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

static void write_header(FILE *f, const fasa_calibration *cal)
{
    const fasa_model_shape *s = &cal->shape;
    fprintf(f, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"model_id\": ", FORMAT_NAME, FORMAT_VERSION);
    fasa__json_write_string(f, cal->model_id);
    fprintf(f, ",\n  \"layout\": \"%s\",\n  \"fc_convention\": \"%s\",\n",
            s->layout == FASA_ROPE_NORM ? "NORM" : "NEOX",
            cal->convention == FASA_FC_TRUE_PAIR ? "TRUE_PAIR" : "HF_ADJACENT");
    fprintf(f, "  \"n_layers\": %u,\n  \"n_q_heads\": %u,\n  \"n_kv_heads\": %u,\n  \"head_dim\": %u,\n",
            s->n_layers, s->n_q_heads, s->n_kv_heads, s->head_dim);
    fprintf(f, "  \"n_tip\": %u,\n  \"k_calib\": %u,\n  \"source\": ", cal->n_tip, cal->k_calib);
    fasa__json_write_string(f, cal->source);
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

static void write_file(FILE *f, const fasa_calibration *cal)
{
    write_header(f, cal);
    write_union_sizes(f, cal);
    write_table(f, cal, "dims", 2 * cal->n_tip, cal->dims, NULL);
    if (cal->ca_mean) write_table(f, cal, "ca_mean", cal->shape.head_dim / 2, NULL, cal->ca_mean);
    fprintf(f, "\n}\n");
}

/* Writes into a temporary file that replaces path only once it is complete
 * and synced: on a full disk or any other failure the old file stays. */
static fasa_status save_atomic(fasa_context *ctx, const fasa_calibration *cal, const char *path)
{
    char err[256];
    fasa__atomic_file af;
    if (fasa__atomic_begin(&af, path, err, sizeof err) != 0)
        return fasa__error(ctx, FASA_ERROR_IO, "calibration %s: cannot create: %s", path, err);
    /* %.6g must write '.', whatever LC_NUMERIC the application set */
    locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!c_locale) {
        fasa__atomic_abort(&af);
        return fasa__error(ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "calibration %s: out of host memory", path);
    }
    locale_t old = uselocale(c_locale);
    errno = 0;
    write_file(af.f, cal);
    int code = ferror(af.f) ? (errno ? errno : EIO) : 0;
    uselocale(old);
    freelocale(c_locale);
    if (code) {
        fasa__atomic_abort(&af);
        return fasa__error(ctx, FASA_ERROR_IO, "calibration %s: write failed: %s (the old file is unchanged)", path,
                           strerror(code));
    }
    if (fasa__atomic_commit(&af, err, sizeof err) != 0)
        return fasa__error(ctx, FASA_ERROR_IO, "calibration %s: write failed: %s (the old file is unchanged)", path,
                           err);
    return FASA_OK;
}

fasa_status fasa_calibration_save(const fasa_calibration *cal, const char *path)
{
    if (!cal) return FASA_ERROR_INVALID_ARGUMENT;
    fasa_context *ctx = cal->ctx;
    fasa__lock(ctx);
    fasa_status st = path ? save_atomic(ctx, cal, path)
                          : fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "fasa_calibration_save: path is NULL");
    fasa__unlock(ctx);
    return st;
}
