/* Calibration: recovery of planted chunks, TIP recall with the recovered
 * dims versus random ones, JSON round trip, and the corrupt-file matrix. */
#include "check.h"
#include "fasa.h"
#include "synth.h"

#include <stdlib.h>
#include <string.h>

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
        expect_reject(ctx, text, cut, NULL, FASA_ERROR_PARSE, "calibration memory", "truncated");
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

int main(void)
{
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 2};
    if (fasa_context_create(&cd, &ctx) != FASA_OK) return 1;
    test_recovery(ctx, false);
    test_recovery(ctx, true);
    test_share_group(ctx);
    test_recall(ctx);
    test_files(ctx);
    fasa_context_destroy(ctx);
    return check_done("test_calib");
}
