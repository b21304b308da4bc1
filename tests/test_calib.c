/* Calibration: recovery of planted chunks, TIP recall with the recovered
 * dims versus random ones, JSON round trip (bit-exact, also for the
 * committed data file), the corrupt-file matrix, the strict JSON reader
 * (one group of inputs per class it rejects), loads that must not block
 * (FIFO, directory, /dev/zero, too large) and saves that must not destroy
 * the old file.
 * Usage: test_calib [data/smollm2-135m-instruct.calib.json] */
#include "check.h"
#include "fasa.h"
#include "synth.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HQ 8
#define HKV 2
#define D 128
#define NTIP 8
#define LAYERS 2
#define L 3000

static synth_desc layer_desc(uint32_t layer, bool per_head)
{
    return (synth_desc){.n_q_heads = HQ, .n_kv_heads = HKV, .head_dim = D, .n_tip = NTIP,
                        .per_head_dims = per_head, .kind = SYNTH_PLANTED, .seed = 100 + layer};
}

static fasa_calibration *calibrate(fasa_context *ctx, bool per_head, bool share)
{
    fasa_calibrator_desc cd = {.shape = {LAYERS, HQ, HKV, D, FASA_ROPE_NORM}, .n_tip = NTIP, .k_calib = 128,
                               .share_group_dims = share, .model_id = "planted", .source = "synthetic"};
    fasa_calibrator *c = NULL;
    fasa_calibration *cal = NULL;
    float *k = malloc((size_t)L * HKV * D * sizeof(float)), *v = malloc((size_t)L * HKV * D * sizeof(float));
    float q[HQ * D];
    bool ok = fasa_calibrator_create(ctx, &cd, &c) == FASA_OK;
    for (uint32_t l = 0; ok && l < LAYERS; l++) {
        synth_desc sd = layer_desc(l, per_head);
        synth_keys(&sd, 0, L, k, v);
        for (uint32_t s = 0; ok && s < 12; s++) {
            uint32_t pos = L / 2 + s * 100;
            synth_query(&sd, pos, s, q);
            ok = fasa_calibrator_add(c, l, q, k, pos + 1) == FASA_OK;
        }
    }
    ok = ok && fasa_calibrator_next_sample(c) == FASA_OK && fasa_calibrator_finish(c, &cal) == FASA_OK;
    CHECK(ok, "calibration run: %s", fasa_context_last_error(ctx));
    fasa_calibrator_destroy(c);
    free(k);
    free(v);
    return cal;
}

static void test_recovery(fasa_context *ctx, bool per_head)
{
    fasa_calibration *cal = calibrate(ctx, per_head, false);
    uint16_t planted[HQ * 2 * NTIP], got[2 * NTIP];
    uint32_t exact = 0;
    for (uint32_t l = 0; cal && l < LAYERS; l++) {
        synth_desc sd = layer_desc(l, per_head);
        synth_planted_dims(&sd, planted);
        for (uint32_t h = 0; h < HQ; h++) {
            fasa_calibration_get_dims(cal, l, h, got, 2 * NTIP);
            exact += memcmp(got, planted + h * 2 * NTIP, sizeof got) == 0;
        }
    }
    CHECK(exact == LAYERS * HQ, "%s dims: recovered %u of %u heads exactly", per_head ? "per-head" : "shared", exact,
          LAYERS * HQ);
    /* the planted chunks stand out in the mean CA table */
    float ca[D / 2];
    if (cal) fasa_calibration_get_ca(cal, 1, 0, ca, D / 2);
    synth_desc sd = layer_desc(1, per_head);
    synth_planted_dims(&sd, planted);
    float lo_planted = 1, hi_other = 0;
    for (uint32_t fc = 0; fc < D / 2; fc++) {
        bool is_planted = false;
        for (int i = 0; i < 2 * NTIP; i++) is_planted |= planted[i] == 2 * fc;
        if (is_planted && ca[fc] < lo_planted) lo_planted = ca[fc];
        if (!is_planted && ca[fc] > hi_other) hi_other = ca[fc];
    }
    CHECK(cal && lo_planted > hi_other, "planted CA %.3f not above the others' %.3f", lo_planted, hi_other);
    fasa_calibration_destroy(cal);
}

static void test_share_group(fasa_context *ctx)
{
    fasa_calibration *cal = calibrate(ctx, true, true);
    uint16_t a[2 * NTIP], b[2 * NTIP];
    bool same = cal != NULL;
    for (uint32_t h = 1; same && h < HQ; h++) {
        fasa_calibration_get_dims(cal, 0, h - 1, a, 2 * NTIP);
        fasa_calibration_get_dims(cal, 0, h, b, 2 * NTIP);
        if ((h - 1) / (HQ / HKV) == h / (HQ / HKV)) same &= memcmp(a, b, sizeof a) == 0;
    }
    uint32_t u = 0;
    CHECK(same && fasa_calibration_union_size(cal, 0, 0, &u) == FASA_OK && u == 2 * NTIP,
          "share_group_dims: one dim set per group (u = %u)", u);
    fasa_calibration_destroy(cal);
}

/* Fraction of the oracle top-n_fac that FASA selects, averaged over heads. */
static double recall(fasa_context *ctx, const uint16_t *dims)
{
    fasa_model_shape shape = {1, HQ, HKV, D, FASA_ROPE_NORM};
    fasa_calibration_desc cd = {.shape = shape, .n_tip = NTIP, .dims = dims};
    fasa_calibration *cal = NULL;
    fasa_kv_cache *cache = NULL;
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = L, .flags = FASA_CACHE_NO_DENSE_LAYERS};
    synth_desc sd = layer_desc(0, false);
    float *k = malloc((size_t)L * HKV * D * sizeof(float)), *v = malloc((size_t)L * HKV * D * sizeof(float));
    float q[HQ * D], o[HQ * D];
    int32_t fs[HQ * 128], os[HQ * 128];
    synth_keys(&sd, 0, L, k, v);
    synth_query(&sd, L - 1, 9, q);
    fasa_decode_desc fasa = {.n_fac = 128}, oracle = {.n_fac = 128, .mode = FASA_MODE_ORACLE};
    fasa_decode_outputs fo = {.selected = fs, .selected_stride = 128}, oo = {.selected = os, .selected_stride = 128};
    double r = -1;
    if (fasa_calibration_create(ctx, &cd, &cal) == FASA_OK && (kd.calibration = cal) &&
        fasa_kv_cache_create(ctx, &kd, &cache) == FASA_OK &&
        fasa_kv_cache_append(cache, 0, L, k, v, FASA_DTYPE_F32) == FASA_OK &&
        fasa_decode_host(cache, 0, &fasa, q, o, &fo) == FASA_OK && fasa_decode_host(cache, 0, &oracle, q, o, &oo) == FASA_OK) {
        uint32_t hits = 0;
        for (int h = 0; h < HQ; h++)
            for (int i = 0; i < 128; i++)
                for (int j = 0; j < 128; j++) hits += fs[h * 128 + i] == os[h * 128 + j];
        r = (double)hits / (HQ * 128);
    }
    fasa_kv_cache_destroy(cache);
    fasa_calibration_destroy(cal);
    free(k);
    free(v);
    return r;
}

static void test_recall(fasa_context *ctx)
{
    uint16_t planted[HQ * 2 * NTIP], random_dims[HQ * 2 * NTIP];
    synth_desc sd = layer_desc(0, false);
    synth_planted_dims(&sd, planted);
    /* random chunks: fixed pseudo-random FCs avoiding the planted ones */
    for (int h = 0; h < HQ; h++) {
        bool used[D / 2] = {false};
        for (int i = 0; i < 2 * NTIP; i++) used[planted[h * 2 * NTIP + i] / 2] = true;
        int w = 0;
        for (uint32_t fc = 5; w < 2 * NTIP; fc = (fc * 37 + 11) % (D / 2)) {
            if (used[fc]) continue;
            used[fc] = true;
            random_dims[h * 2 * NTIP + w++] = (uint16_t)(2 * fc);
            random_dims[h * 2 * NTIP + w++] = (uint16_t)(2 * fc + 1);
        }
        uint16_t *row = random_dims + h * 2 * NTIP;
        for (int i = 1; i < 2 * NTIP; i++)
            for (int j = i; j > 0 && row[j] < row[j - 1]; j--) {
                uint16_t t = row[j]; row[j] = row[j - 1]; row[j - 1] = t;
            }
    }
    double good = recall(ctx, planted), bad = recall(ctx, random_dims);
    printf("TIP recall of the oracle top-128: planted dims %.3f, random dims %.3f\n", good, bad);
    CHECK(good >= 0.8, "recall with the planted dims is %.3f", good);
    CHECK(bad >= 0 && bad <= 0.3, "recall with random dims is %.3f", bad);
}

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc(*n + 1);
    if (fread(s, 1, *n, f) != *n) *n = 0;
    s[*n] = '\0';
    fclose(f);
    return s;
}

/* Replaces the first occurrence of `from` in text by `to`. */
static char *mutate(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    if (!at) return NULL;
    size_t n = strlen(text) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    return out;
}

static void expect_reject(fasa_context *ctx, const char *text, size_t n, const fasa_model_shape *expect,
                          fasa_status want, const char *field, const char *what)
{
    fasa_calibration *cal = (fasa_calibration *)ctx;
    fasa_status st = fasa_calibration_load_memory(ctx, text, n, expect, &cal);
    const char *msg = fasa_context_last_error(ctx);
    CHECK(st == want && cal == NULL && strstr(msg, field), "%s: got %s '%s', wanted %s naming '%s'", what,
          fasa_status_string(st), msg, fasa_status_string(want), field);
    if (st == FASA_OK) fasa_calibration_destroy(cal);
}

static void test_files(fasa_context *ctx)
{
    fasa_calibration *cal = calibrate(ctx, false, false), *back = NULL;
    const char *path = "test_calib_roundtrip.json";
    CHECK(cal && fasa_calibration_save(cal, path) == FASA_OK, "save");
    fasa_model_shape shape = {LAYERS, HQ, HKV, D, FASA_ROPE_NORM};
    CHECK(fasa_calibration_load(ctx, path, &shape, &back) == FASA_OK, "load: %s", fasa_context_last_error(ctx));
    fasa_calibration_info a, b;
    fasa_calibration_get_info(cal, &a);
    fasa_calibration_get_info(back, &b);
    CHECK(back && a.n_tip == b.n_tip && a.k_calib == b.k_calib && a.n_steps == b.n_steps &&
              strcmp(b.model_id, "planted") == 0 && strcmp(b.source, "synthetic") == 0 && b.has_ca_mean,
          "metadata survives the round trip");
    bool same = back != NULL;
    for (uint32_t l = 0; same && l < LAYERS; l++)
        for (uint32_t h = 0; h < HQ; h++) {
            uint16_t d1[2 * NTIP], d2[2 * NTIP];
            float c1[D / 2], c2[D / 2];
            fasa_calibration_get_dims(cal, l, h, d1, 2 * NTIP);
            fasa_calibration_get_dims(back, l, h, d2, 2 * NTIP);
            fasa_calibration_get_ca(cal, l, h, c1, D / 2);
            fasa_calibration_get_ca(back, l, h, c2, D / 2);
            same &= memcmp(d1, d2, sizeof d1) == 0;
            for (int i = 0; i < D / 2; i++) same &= c1[i] - c2[i] < 1e-5f && c2[i] - c1[i] < 1e-5f;
        }
    CHECK(same, "dims and CA survive the round trip");
    fasa_calibration *re = NULL;
    uint16_t top[4], best[4];
    CHECK(fasa_calibration_reselect(back, 2, &re) == FASA_OK && fasa_calibration_get_dims(re, 0, 0, top, 4) == FASA_OK,
          "reselect");
    fasa_calibration_get_dims(cal, 0, 0, best, 4); /* not necessarily the top two: only a sanity range check */
    CHECK(top[0] < D && top[3] < D && top[1] == top[0] + 1, "reselected dims form pairs");
    fasa_calibration_destroy(re);

    size_t n = 0;
    char *text = read_all(path, &n);
    CHECK(text && n > 100, "read back");
    /* truncations at many points: never accepted, never a crash */
    for (size_t cut = 1; text && cut < n - 2; cut += n / 37 + 1)
        expect_reject(ctx, text, cut, NULL, FASA_ERROR_PARSE, "truncated", "truncated");
    struct { const char *from, *to, *field; } cases[] = {
        {"\"fasa-calibration\"", "\"other\"", "format"},
        {"\"version\": 1", "\"version\": 2", "version"},
        {"\"version\": 1", "\"version\": 1.5", "version"},
        {"\"NORM\"", "\"ROPE\"", "layout"},
        {"\"TRUE_PAIR\"", "\"PAIRS\"", "fc_convention"},
        {"\"n_tip\": 8", "\"n_tip\": 0", "n_tip"},
        {"\"n_tip\": 8", "\"n_tip\": 7", "dims"},
        {"\"n_tip\": 8", "\"nn_tip\": 8", "n_tip"},
        {"\"n_kv_heads\": 2", "\"n_kv_heads\": 3", "n_kv_heads"},
        {"\"head_dim\": 128", "\"head_dim\": -128", "head_dim"},
        {"\"n_layers\": 2", "\"n_layers\": 99999999999", "n_layers"},
        {"\"model_id\": \"planted\"", "\"model_id\": 5", "model_id"},
        {"\"dims\": [", "\"dims\": 5, \"dims_x\": [", "dims"},
        {"[\n      [", "[\n      [500, ", "dims"},
        {"\"ca_mean\": [\n    [\n      [0", "\"ca_mean\": [\n    [\n      [7", "ca_mean"},
        {"\"union_sizes\": [\n    [", "\"union_sizes\": [\n    [99, ", "union_sizes"},
    };
    for (size_t i = 0; text && i < sizeof cases / sizeof cases[0]; i++) {
        char *bad = mutate(text, cases[i].from, cases[i].to);
        CHECK(bad != NULL, "mutation %zu does not apply", i);
        if (bad) expect_reject(ctx, bad, strlen(bad), NULL, FASA_ERROR_PARSE, cases[i].field, cases[i].from);
        free(bad);
    }
    expect_reject(ctx, "not json at all", 15, NULL, FASA_ERROR_PARSE, "not valid JSON", "garbage");
    expect_reject(ctx, "[1, 2, 3]", 9, NULL, FASA_ERROR_PARSE, "object", "array");
    /* the dims of head 0 in layer 0: make one unpaired, one duplicated */
    if (text) {
        uint16_t d0[2 * NTIP];
        fasa_calibration_get_dims(cal, 0, 0, d0, 2 * NTIP);
        char from[32], to[32];
        snprintf(from, sizeof from, "[%u, %u,", d0[0], d0[1]);
        snprintf(to, sizeof to, "[%u, %u,", d0[0], d0[0]);
        char *bad = mutate(text, from, to);
        if (bad) expect_reject(ctx, bad, strlen(bad), NULL, FASA_ERROR_PARSE, "layer 0 head 0", "duplicate dim");
        free(bad);
    }
    fasa_model_shape other = shape;
    other.n_layers = 3;
    expect_reject(ctx, text, n, &other, FASA_ERROR_MISMATCH, "n_layers", "shape mismatch");
    other = shape;
    other.layout = FASA_ROPE_NEOX;
    expect_reject(ctx, text, n, &other, FASA_ERROR_MISMATCH, "layout", "layout mismatch");
    free(text);
    remove(path);
    fasa_calibration_destroy(back);
    fasa_calibration_destroy(cal);
}

/* ------------------------------------------------------------------------ */
/* The strict JSON reader                                                    */
/* ------------------------------------------------------------------------ */

/* The smallest file with every kind of field: 1 layer, 1 head, d = 4. */
static const char small_file[] =
    "{\"format\": \"fasa-calibration\", \"version\": 1, \"model_id\": \"m\", \"layout\": \"NORM\", "
    "\"fc_convention\": \"TRUE_PAIR\", \"n_layers\": 1, \"n_q_heads\": 1, \"n_kv_heads\": 1, \"head_dim\": 4, "
    "\"n_tip\": 1, \"k_calib\": 16, \"source\": \"s\", \"n_samples\": 1, \"n_steps\": 2, "
    "\"union_sizes\": [[2]], \"dims\": [[[0, 1]]], \"ca_mean\": [[[0.5, 0.25]]]}";

typedef struct json_case {
    const char *from, *to;       /* replace from by to in small_file (from NULL: append to) */
    const char *needle;          /* the message must contain this */
} json_case;

/* Runs each case through load_memory: PARSE, no object, the needle in the message. */
static void reject_cases(fasa_context *ctx, const char *class_name, const json_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *bad = NULL;
        if (cases[i].from) {
            bad = mutate(small_file, cases[i].from, cases[i].to);
        } else {
            size_t len = strlen(small_file) + strlen(cases[i].to) + 1;
            bad = malloc(len);
            snprintf(bad, len, "%s%s", small_file, cases[i].to);
        }
        CHECK(bad != NULL, "%s case %zu does not apply", class_name, i);
        if (!bad) continue;
        char what[160];
        snprintf(what, sizeof what, "%s case %zu (%.60s)", class_name, i, cases[i].to);
        expect_reject(ctx, bad, strlen(bad), NULL, FASA_ERROR_PARSE, cases[i].needle, what);
        free(bad);
    }
}

static fasa_calibration *load_text(fasa_context *ctx, const char *text, size_t n)
{
    fasa_calibration *cal = NULL;
    fasa_status st = fasa_calibration_load_memory(ctx, text, n, NULL, &cal);
    CHECK(st == FASA_OK, "valid input rejected: %s (%.80s)", fasa_context_last_error(ctx), text);
    return cal;
}

static void test_json_accepts(fasa_context *ctx)
{
    fasa_calibration_destroy(load_text(ctx, small_file, strlen(small_file)));
    /* every escape, a surrogate pair, raw UTF-8 and all JSON whitespace */
    char *esc = mutate(small_file, "\"model_id\": \"m\"",
                       " \t\r\n\"model_id\"\t:\r\n\"\\\" \\\\ \\/ \\b\\f\\n\\r\\t \\u00e9 \\ud83d\\ude00 \xc3\xa9 "
                       "\xf0\x9f\x98\x80 \xe2\x82\xac \\u20AC\"");
    fasa_calibration *cal = load_text(ctx, esc, strlen(esc));
    fasa_calibration_info info;
    const char *want = "\" \\ / \b\f\n\r\t \xc3\xa9 \xf0\x9f\x98\x80 \xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac \xe2\x82\xac";
    CHECK(cal && fasa_calibration_get_info(cal, &info) == FASA_OK && strcmp(info.model_id, want) == 0,
          "escapes decode to '%s'", cal ? info.model_id : "-");
    fasa_calibration_destroy(cal);
    free(esc);
    /* whitespace after the object is fine; numbers in any JSON form in ca_mean */
    char text[sizeof small_file + 8];
    snprintf(text, sizeof text, "%s \n\t\r", small_file);
    fasa_calibration_destroy(load_text(ctx, text, strlen(text)));
    char *num = mutate(small_file, "[[[0.5, 0.25]]]", "[[[5e-1, 2.5E-1]]]");
    cal = load_text(ctx, num, strlen(num));
    float ca[2] = {0, 0};
    CHECK(cal && fasa_calibration_get_ca(cal, 0, 0, ca, 2) == FASA_OK && ca[0] == 0.5f && ca[1] == 0.25f,
          "exponent forms read as %g %g", ca[0], ca[1]);
    fasa_calibration_destroy(cal);
    free(num);
}

static void test_json_trailing(fasa_context *ctx)
{
    char at[32];
    snprintf(at, sizeof at, "at byte %zu", strlen(small_file) + 1);
    const json_case cases[] = {
        {NULL, " x", "trailing data"},
        {NULL, " x", at},
        {NULL, "{}", "a second JSON value"},
        {NULL, small_file, "a second JSON value"},
        {NULL, "\n[1]", "a second JSON value"},
        {NULL, "]", "trailing data"},
        {NULL, " ,", "trailing data"},
        {NULL, "\"s\"", "trailing data"},
        {NULL, "0", "trailing data"},
    };
    reject_cases(ctx, "trailing", cases, sizeof cases / sizeof cases[0]);
    /* a NUL byte after the object (also a NUL inside it) */
    size_t n = strlen(small_file);
    char *text = malloc(n + 2);
    memcpy(text, small_file, n);
    text[n] = '\0';
    expect_reject(ctx, text, n + 1, NULL, FASA_ERROR_PARSE, "trailing data", "NUL after the object");
    text[n] = ' ';
    text[20] = '\0';
    expect_reject(ctx, text, n + 1, NULL, FASA_ERROR_PARSE, "byte 20", "NUL inside the object");
    free(text);
}

static void test_json_duplicates(fasa_context *ctx)
{
    const json_case cases[] = {
        {"\"version\": 1,", "\"version\": 1, \"version\": 1,", "duplicate key 'version'"},
        {"{\"format\"", "{\"format\": \"x\", \"format\"", "duplicate key 'format'"},
        {"\"dims\": [[[0, 1]]]", "\"dims\": [[[0, 1]]], \"dims\": [[[2, 3]]]", "duplicate key 'dims'"},
        {"\"n_tip\": 1,", "\"n_tip\": 1, \"\\u006e_tip\": 1,", "duplicate key 'n_tip'"},
        {"\"source\": \"s\",", "\"source\": \"s\", \"source\": \"t\",", "duplicate key 'source'"},
        {"\"ca_mean\"", "\"ca_mean\": [], \"ca_mean\"", "duplicate key 'ca_mean'"},
        {"\"version\": 1,", "\"version\": 1, \"version\": 1,", "first at byte 31"},
    };
    reject_cases(ctx, "duplicate", cases, sizeof cases / sizeof cases[0]);
}

static void test_json_strings(fasa_context *ctx)
{
    const json_case cases[] = {
        {"\"m\"", "\"\\u0000\"", "\\u0000"},
        {"\"m\"", "\"a\\u0000b\"", "under key \"model_id\""},
        {"\"s\"", "\"\xff\"", "invalid UTF-8"},
        {"\"s\"", "\"ab\xfe\"", "under key \"source\""},
        {"\"m\"", "\"\xc0\xaf\"", "overlong"},
        {"\"m\"", "\"\xe0\x80\xaf\"", "overlong"},
        {"\"m\"", "\"\xf0\x82\x82\xac\"", "overlong"},
        {"\"m\"", "\"\xed\xa0\x80\"", "surrogate"},
        {"\"m\"", "\"\xed\xbf\xbf\"", "surrogate"},
        {"\"m\"", "\"\xf4\x90\x80\x80\"", "above U+10FFFF"},
        {"\"m\"", "\"\x80\"", "continuation byte"},
        {"\"m\"", "\"\xe2\x82\"", "truncated"},
        {"\"m\"", "\"\xe2\x82x\"", "truncated"},
        {"\"m\"", "\"\\ud800\"", "lone high surrogate"},
        {"\"m\"", "\"\\udc00\"", "lone low surrogate"},
        {"\"m\"", "\"\\ud800\\u0041\"", "lone high surrogate"},
        {"\"m\"", "\"\\ud800x\"", "lone high surrogate"},
        {"\"m\"", "\"\\udbff\\udbff\"", "lone high surrogate"},
        {"\"m\"", "\"a\x01z\"", "control character"},
        {"\"m\"", "\"a\tb\"", "control character"},
        {"\"m\"", "\"a\nb\"", "control character"},
        {"\"m\"", "\"\\x\"", "escape"},
        {"\"m\"", "\"\\u12G4\"", "escape"},
        {"\"n_tip\"", "\"n_tip\xff\": 1, \"n_tip\"", "invalid UTF-8"},
        {"\"layout\": \"NORM\"", "\"layout\": \"NO\\u0000RM\"", "\\u0000"},
    };
    reject_cases(ctx, "string", cases, sizeof cases / sizeof cases[0]);
}

static void test_json_types(fasa_context *ctx)
{
    const json_case cases[] = {
        {"\"version\": 1", "\"version\": \"1\"", "version"},
        {"\"version\": 1", "\"version\": 1.0", "plain digits"},
        {"\"version\": 1", "\"version\": true", "version"},
        {"\"n_layers\": 1", "\"n_layers\": 1e0", "n_layers"},
        {"\"n_layers\": 1", "\"n_layers\": -0", "n_layers"},
        {"\"n_layers\": 1", "\"n_layers\": null", "n_layers"},
        {"\"n_layers\": 1", "\"n_layers\": [1]", "n_layers"},
        {"\"n_layers\": 1", "\"n_layers\": 4097", "n_layers"},
        {"\"n_steps\": 2", "\"n_steps\": 18446744073709551616", "n_steps"},
        {"\"k_calib\": 16", "\"k_calib\": 4294967296", "k_calib"},
        {"\"head_dim\": 4", "\"head_dim\": 4.0", "head_dim"},
        {"\"n_tip\": 1", "\"n_tip\": 01", "not a JSON number"},
        {"\"n_tip\": 1", "\"n_tip\": +1", "not valid JSON"},
        {"[[[0, 1]]]", "[[[0, 1.0]]]", "field 'dims' layer 0 head 0 entry 1"},
        {"[[[0, 1]]]", "[[[0, 1e0]]]", "dims"},
        {"[[[0, 1]]]", "[[[0, \"1\"]]]", "dims"},
        {"[[[0, 1]]]", "[[[0, true]]]", "dims"},
        {"[[[0, 1]]]", "[[[0, -1]]]", "dims"},
        {"[[[0, 1]]]", "[[[0, 4]]]", "dims"},
        {"[[[0.5, 0.25]]]", "[[[NaN, 0.25]]]", "not valid JSON"},
        {"[[[0.5, 0.25]]]", "[[[nan, 0.25]]]", "NaN and Infinity are not JSON"},
        {"[[[0.5, 0.25]]]", "[[[Infinity, 0.25]]]", "not valid JSON"},
        {"[[[0.5, 0.25]]]", "[[[-Infinity, 0.25]]]", "not a JSON number"},
        {"[[[0.5, 0.25]]]", "[[[0.5, inf]]]", "not valid JSON"},
        {"[[[0.5, 0.25]]]", "[[[1e999, 0.25]]]", "ca_mean"},
        {"[[[0.5, 0.25]]]", "[[[-0.5, 0.25]]]", "ca_mean"},
        {"[[[0.5, 0.25]]]", "[[[1.5, 0.25]]]", "ca_mean"},
        {"[[[0.5, 0.25]]]", "[[[\"0.5\", 0.25]]]", "ca_mean"},
        {"[[[0.5, 0.25]]]", "[[[.5, 0.25]]]", "not valid JSON"},
        {"[[[0.5, 0.25]]]", "[[[0.5.1, 0.25]]]", "not a JSON number"},
        {"[[[0.5, 0.25]]]", "[[[0x1, 0.25]]]", "not a JSON number"},
        {"[[[0.5, 0.25]]]", "[[[1., 0.25]]]", "not a JSON number"},
        {"[[[0.5, 0.25]]]", "[[[1e, 0.25]]]", "not a JSON number"},
        {"\"layout\": \"NORM\"", "\"layout\": 5", "layout"},
        {"\"model_id\": \"m\"", "\"model_id\": [\"m\"]", "model_id"},
        {"\"model_id\": \"m\"", "\"model_id\": null", "model_id"},
        {"\"source\": \"s\"", "\"source\": {}", "source"},
        {"\"union_sizes\": [[2]]", "\"union_sizes\": [[2.0]]", "union_sizes"},
        {"\"n_tip\": 1,", "\"n_tip\": 1, \"dimz\": 0,", "unknown key \"dimz\""},
        {"\"n_tip\": 1,", "\"n_tip\": 1, \"Format\": 0,", "unknown key"},
        {"\"n_tip\": 1,", "", "n_tip"},
        {"\"dims\": [[[0, 1]]], ", "", "dims"},
    };
    reject_cases(ctx, "type", cases, sizeof cases / sizeof cases[0]);
    expect_reject(ctx, "[1]", 3, NULL, FASA_ERROR_PARSE, "not a JSON object", "array at the top");
    expect_reject(ctx, "\"x\"", 3, NULL, FASA_ERROR_PARSE, "not a JSON object", "string at the top");
    expect_reject(ctx, "5", 1, NULL, FASA_ERROR_PARSE, "not a JSON object", "number at the top");
    expect_reject(ctx, "null ", 5, NULL, FASA_ERROR_PARSE, "not a JSON object", "null at the top");
    expect_reject(ctx, " \n ", 3, NULL, FASA_ERROR_PARSE, "no value", "whitespace only");
}

static void test_json_nesting(fasa_context *ctx)
{
    const json_case cases[] = {
        {"[[[0, 1]]]", "[[[[0, 1]]]]", "nesting deeper than 4"},
        {"[[[0.5, 0.25]]]", "[[[{\"a\": 1}]]]", "nesting deeper than 4"},
        {"\"m\"", "[[[[[[\"x\"]]]]]]", "nesting deeper"},
        {"\"s\"", "{\"a\": {\"b\": {\"c\": {}}}}", "nesting deeper"},
    };
    reject_cases(ctx, "nesting", cases, sizeof cases / sizeof cases[0]);
    /* very deep: refused at once, not after quadratic work */
    size_t depth = 1000000, n = strlen(small_file) + 2 * depth + 16;
    char *deep = malloc(n);
    int len = snprintf(deep, n, "{\"x\": ");
    memset(deep + len, '[', depth);
    memset(deep + len + depth, ']', depth);
    snprintf(deep + len + 2 * depth, n - (size_t)len - 2 * depth, "}");
    expect_reject(ctx, deep, strlen(deep), NULL, FASA_ERROR_PARSE, "nesting deeper", "a million levels");
    free(deep);
}

static void test_json_syntax(fasa_context *ctx)
{
    const json_case cases[] = {
        {"[[[0, 1]]]", "[[[0 1]]]", "expected ','"},
        {"[[[0, 1]]]", "[[[0, 1,]]]", "trailing comma"},
        {"[[[0, 1]]]", "[[[0,, 1]]]", "unexpected ','"},
        {"[[[0, 1]]]", "[[[, 0, 1]]]", "unexpected ','"},
        {"[[[0, 1]]]", "[[[0, 1]],]", "trailing comma"},
        {"[[[0, 1]]]", "[[[0: 1]]]", "not a JSON number"},
        {"[[[0, 1]]]", "[[[0, 1]]}", "does not close"},
        {"[[[0.5, 0.25]]]}", "[[[0.5, 0.25]]],}", "trailing comma"},
        {"\"version\": 1,", "\"version\": 1,,", "unexpected ','"},
        {"\"version\": 1,", "\"version\": 1", "expected ','"},
        {"\"model_id\": \"m\"", "\"model_id\" \"m\"", "expected ':'"},
        {"\"model_id\": \"m\"", "\"model_id\":: \"m\"", "unexpected ':'"},
        {"\"source\": \"s\",", "\"source\",", "expected ':'"},
        {"\"n_tip\": 1", "\"n_tip\" 1", "not valid JSON"},
        {"\"n_tip\": 1", "\"n_tip\": 1: 2", "not valid JSON"},
        {"\"model_id\": \"m\"", "\"model_id\": 'm'", "not valid JSON"},
        {"\"model_id\": \"m\",", "\"model_id\": \"m\", /* c */", "not valid JSON"},
        {"\"model_id\": \"m\",", "\"model_id\": \"m\", 7: 1,", "not valid JSON"},
        {"[[[0, 1]]]", "[[[0, tru]]]", "not a JSON number or literal"},
        {"{\"format\"", ",{\"format\"", "unexpected ','"},
    };
    reject_cases(ctx, "syntax", cases, sizeof cases / sizeof cases[0]);
    /* a key without a value, at the end */
    expect_reject(ctx, "{\"format\"}", 10, NULL, FASA_ERROR_PARSE, "a key has no value", "key without value");
}

/* ------------------------------------------------------------------------ */
/* Loads that must not block, saves that must not destroy                    */
/* ------------------------------------------------------------------------ */

static void expect_load_fails(fasa_context *ctx, const char *path, fasa_status want, const char *needle)
{
    fasa_calibration *cal = (fasa_calibration *)ctx;
    alarm(10); /* a load that blocks fails the test (SIGALRM) instead of hanging CI */
    fasa_status st = fasa_calibration_load(ctx, path, NULL, &cal);
    alarm(0);
    const char *msg = fasa_context_last_error(ctx);
    CHECK(st == want && cal == NULL && strstr(msg, needle) && strstr(msg, path),
          "load %s: got %s '%s', wanted %s naming '%s'", path, fasa_status_string(st), msg,
          fasa_status_string(want), needle);
}

static void expect_save_fails(fasa_context *ctx, const fasa_calibration *cal, const char *path, const char *needle)
{
    alarm(10);
    fasa_status st = fasa_calibration_save(cal, path);
    alarm(0);
    const char *msg = fasa_context_last_error(ctx);
    CHECK(st == FASA_ERROR_IO && strstr(msg, needle) && strstr(msg, path), "save %s: got %s '%s', wanted IO naming '%s'",
          path, fasa_status_string(st), msg, needle);
}

static void test_special_files(fasa_context *ctx, const fasa_calibration *cal)
{
    const char *fifo = "test_calib.fifo", *dir = "test_calib.dir", *big = "test_calib_big.json",
               *empty = "test_calib_empty.json";
    unlink(fifo);
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo: %s", strerror(errno));
    expect_load_fails(ctx, fifo, FASA_ERROR_IO, "FIFO");
    expect_save_fails(ctx, cal, fifo, "FIFO");
    struct stat st;
    CHECK(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "a refused save leaves the FIFO");
    unlink(fifo);
    rmdir(dir);
    CHECK(mkdir(dir, 0700) == 0, "mkdir: %s", strerror(errno));
    expect_load_fails(ctx, dir, FASA_ERROR_IO, "directory");
    expect_save_fails(ctx, cal, dir, "directory");
    rmdir(dir);
    expect_load_fails(ctx, "/dev/zero", FASA_ERROR_IO, "not a regular file");
    expect_save_fails(ctx, cal, "/dev/full", "not a regular file");
    expect_save_fails(ctx, cal, "test_calib_no_such_dir/x.json", "cannot create");
    /* one byte over the 256 MiB limit (a sparse file): refused before reading */
    int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    bool sized = fd >= 0 && ftruncate(fd, (256 << 20) + 1) == 0;
    if (fd >= 0) close(fd);
    CHECK(sized, "cannot make the large file: %s", strerror(errno));
    if (sized) expect_load_fails(ctx, big, FASA_ERROR_PARSE, "limit");
    unlink(big);
    fd = open(empty, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) close(fd);
    expect_load_fails(ctx, empty, FASA_ERROR_PARSE, "empty");
    unlink(empty);
    expect_load_fails(ctx, "test_calib_missing.json", FASA_ERROR_IO, "no such file");
    /* load_memory has the same limit (the buffer is never read) */
    char *huge = malloc((256u << 20) + 1);
    if (huge) expect_reject(ctx, huge, (256u << 20) + 1, NULL, FASA_ERROR_PARSE, "limit", "huge memory input");
    free(huge);
}

/* Names in dir other than keep (temporary files left behind). */
static int stray_files(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, keep)) {
            fprintf(stderr, "left behind: %s/%s\n", dir, e->d_name);
            n++;
        }
    if (d) closedir(d);
    return n;
}

/* Saves cal over path in a child whose files may not grow past limit
 * bytes (SIGXFSZ ignored, so the write fails with EFBIG): the save must
 * fail with IO.  Works for root too, unlike a read-only directory. */
static bool save_with_size_limit(fasa_context *ctx, const fasa_calibration *cal, const char *path, rlim_t limit)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {limit, limit};
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(2);
        fasa_status st = fasa_calibration_save(cal, path);
        const char *msg = fasa_context_last_error(ctx);
        if (st == FASA_ERROR_IO && strstr(msg, path) && strstr(msg, "unchanged")) _exit(0);
        fprintf(stderr, "save under a %llu-byte limit: %s '%s'\n", (unsigned long long)limit, fasa_status_string(st), msg);
        _exit(1);
    }
    int status = 0;
    return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void test_atomic_save(fasa_context *ctx, const fasa_calibration *cal)
{
    const char *dir = "test_calib_atomic", *path = "test_calib_atomic/cal.json";
    mkdir(dir, 0700);
    unlink(path);
    /* the old file: another calibration (2 of the FCs) */
    fasa_calibration *old_cal = NULL;
    CHECK(fasa_calibration_reselect(cal, 2, &old_cal) == FASA_OK && fasa_calibration_save(old_cal, path) == FASA_OK,
          "save the old file: %s", fasa_context_last_error(ctx));
    fasa_calibration_destroy(old_cal);
    size_t old_n = 0, new_n = 0;
    char *old_text = read_all(path, &old_n);
    CHECK(fasa_calibration_save(cal, "test_calib_new.json") == FASA_OK, "save");
    free(read_all("test_calib_new.json", &new_n));
    remove("test_calib_new.json");
    /* fail on the first write, mid-way, and on the last flush (at commit) */
    rlim_t limits[] = {0, (rlim_t)new_n / 3, (rlim_t)new_n - 1};
    for (size_t i = 0; old_text && i < sizeof limits / sizeof limits[0]; i++) {
        CHECK(save_with_size_limit(ctx, cal, path, limits[i]), "save under a %llu-byte limit did not fail cleanly",
              (unsigned long long)limits[i]);
        size_t n = 0;
        char *now = read_all(path, &n);
        CHECK(now && n == old_n && memcmp(now, old_text, n) == 0, "limit %llu: the old file changed (%zu -> %zu bytes)",
              (unsigned long long)limits[i], old_n, n);
        CHECK(stray_files(dir, "cal.json") == 0, "limit %llu: temporary files left", (unsigned long long)limits[i]);
        free(now);
    }
    /* and an unhindered save replaces it */
    CHECK(fasa_calibration_save(cal, path) == FASA_OK, "save: %s", fasa_context_last_error(ctx));
    size_t n = 0;
    char *now = read_all(path, &n);
    CHECK(now && n == new_n && stray_files(dir, "cal.json") == 0, "the save replaced the old file");
    free(now);
    free(old_text);
    unlink(path);
    rmdir(dir);
}

/* Writer and reader agree exactly: dims as written, ca_mean the float
 * nearest the %.6g text, and a second save gives the same bytes. */
static void test_bit_exact(fasa_context *ctx, const fasa_calibration *cal)
{
    const char *p1 = "test_calib_exact1.json", *p2 = "test_calib_exact2.json";
    fasa_calibration *back = NULL;
    fasa_calibration_info info;
    fasa_calibration_get_info(cal, &info);
    CHECK(fasa_calibration_save(cal, p1) == FASA_OK && fasa_calibration_load(ctx, p1, &info.shape, &back) == FASA_OK,
          "round trip: %s", fasa_context_last_error(ctx));
    size_t bad = 0;
    for (uint32_t l = 0; back && l < info.shape.n_layers; l++)
        for (uint32_t h = 0; h < info.shape.n_q_heads; h++) {
            uint16_t d1[FASA_MAX_HEAD_DIM], d2[FASA_MAX_HEAD_DIM];
            float c1[FASA_MAX_HEAD_DIM / 2], c2[FASA_MAX_HEAD_DIM / 2];
            fasa_calibration_get_dims(cal, l, h, d1, 2 * info.n_tip);
            fasa_calibration_get_dims(back, l, h, d2, 2 * info.n_tip);
            fasa_calibration_get_ca(cal, l, h, c1, info.shape.head_dim / 2);
            fasa_calibration_get_ca(back, l, h, c2, info.shape.head_dim / 2);
            bad += memcmp(d1, d2, 2 * info.n_tip * sizeof d1[0]) != 0;
            for (uint32_t i = 0; i < info.shape.head_dim / 2; i++) {
                char text[32];
                snprintf(text, sizeof text, "%.6g", (double)c1[i]);
                float want = (float)strtod(text, NULL);
                bad += memcmp(&want, &c2[i], sizeof want) != 0;
            }
        }
    CHECK(back && bad == 0, "%zu dims rows or CA values differ from what the file says", bad);
    size_t n1 = 0, n2 = 0;
    char *t1 = read_all(p1, &n1), *t2 = NULL;
    CHECK(back && fasa_calibration_save(back, p2) == FASA_OK && (t2 = read_all(p2, &n2)) && n1 == n2 &&
              memcmp(t1, t2, n1) == 0,
          "save -> load -> save changes the file");
    free(t1);
    free(t2);
    remove(p1);
    remove(p2);
    fasa_calibration_destroy(back);
}

/* Strings the API accepted but JSON cannot hold as they are (bytes that
 * are not UTF-8, control characters) are written so the file loads again:
 * U+FFFD per stray byte, \u00XX escapes. */
static void test_write_strings(fasa_context *ctx)
{
    uint16_t dims[2] = {0, 1};
    fasa_calibration_desc cd = {.shape = {1, 1, 1, 4, FASA_ROPE_NORM}, .n_tip = 1, .dims = dims,
                                .model_id = "caf\xe9 \xff\xc0\xaf \xe2\x82\xac", .source = "a\x01\"\\b"};
    fasa_calibration *cal = NULL, *back = NULL;
    const char *p1 = "test_calib_strings1.json", *p2 = "test_calib_strings2.json";
    fasa_calibration_info info;
    CHECK(fasa_calibration_create(ctx, &cd, &cal) == FASA_OK && fasa_calibration_save(cal, p1) == FASA_OK &&
              fasa_calibration_load(ctx, p1, NULL, &back) == FASA_OK && fasa_calibration_get_info(back, &info) == FASA_OK,
          "save/load of odd strings: %s", fasa_context_last_error(ctx));
    CHECK(back && strcmp(info.model_id, "caf\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xe2\x82\xac") == 0 &&
              strcmp(info.source, "a\x01\"\\b") == 0,
          "strings read back as '%s' / '%s'", back ? info.model_id : "-", back ? info.source : "-");
    size_t n1 = 0, n2 = 0;
    char *t1 = read_all(p1, &n1), *t2 = NULL;
    CHECK(back && fasa_calibration_save(back, p2) == FASA_OK && (t2 = read_all(p2, &n2)) && n1 == n2 &&
              memcmp(t1, t2, n1) == 0,
          "the second save differs");
    free(t1);
    free(t2);
    remove(p1);
    remove(p2);
    fasa_calibration_destroy(back);
    fasa_calibration_destroy(cal);
}

/* The committed calibration loads, and saving it again gives the same bytes. */
static void test_data_file(fasa_context *ctx, const char *path)
{
    fasa_model_shape shape = {30, 9, 3, 64, FASA_ROPE_NORM};
    fasa_calibration *cal = NULL;
    const char *copy = "test_calib_data_copy.json";
    CHECK(fasa_calibration_load(ctx, path, &shape, &cal) == FASA_OK, "load %s: %s", path, fasa_context_last_error(ctx));
    size_t n1 = 0, n2 = 0;
    char *t1 = read_all(path, &n1), *t2 = NULL;
    CHECK(cal && fasa_calibration_save(cal, copy) == FASA_OK && (t2 = read_all(copy, &n2)) && t1 && n1 == n2 &&
              memcmp(t1, t2, n1) == 0,
          "%s does not save back to the same bytes", path);
    if (cal) test_bit_exact(ctx, cal);
    free(t1);
    free(t2);
    remove(copy);
    fasa_calibration_destroy(cal);
}

/* data/smollm2-135m-instruct.calib.json from the source tree: meson runs
 * the tests in the build directory and compiles this file by a path
 * relative to it (or an absolute one). */
static const char *data_file(int argc, char **argv, char *buf, size_t size)
{
    if (argc > 1) return argv[1];
    const char *slash = strrchr(__FILE__, '/');
    snprintf(buf, size, "%.*s/../data/smollm2-135m-instruct.calib.json", slash ? (int)(slash - __FILE__) : 1,
             slash ? __FILE__ : ".");
    return buf;
}

int main(int argc, char **argv)
{
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 2};
    if (fasa_context_create(&cd, &ctx) != FASA_OK) return 1;
    test_recovery(ctx, false);
    test_recovery(ctx, true);
    test_share_group(ctx);
    test_recall(ctx);
    test_files(ctx);
    test_json_accepts(ctx);
    test_json_trailing(ctx);
    test_json_duplicates(ctx);
    test_json_strings(ctx);
    test_json_types(ctx);
    test_json_nesting(ctx);
    test_json_syntax(ctx);
    fasa_calibration *cal = calibrate(ctx, false, false);
    if (cal) {
        test_special_files(ctx, cal);
        test_atomic_save(ctx, cal);
        test_bit_exact(ctx, cal);
    }
    test_write_strings(ctx);
    fasa_calibration_destroy(cal);
    char path[4096];
    test_data_file(ctx, data_file(argc, argv, path, sizeof path));
    fasa_context_destroy(ctx);
    return check_done("test_calib");
}
