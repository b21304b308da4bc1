/* Non-finite values on one backend, through the public API
 * (docs/API.md, "NaN and Inf"):
 *
 *  - A TIP score depends only on the head's own dims I_h (docs/SPEC.md §8):
 *    a NaN or Inf in a K dim that only another head of the group uses must
 *    not change this head's score or selection, for per-head and per-group
 *    selection (a group score is the sum of its heads' own-dims scores), in
 *    FASA-C and FASA-M.  K goes in through fasa_kv_cache_append_buffers, the
 *    append that does not scan for NaN/Inf.
 *  - Finite data scores exactly as before: the documented CPU order, and on
 *    GPU backends the same kernel arithmetic as the oracle path.
 *  - fasa_kv_cache_append rejects values that are not finite once stored:
 *    in an fp16 cache 65520 and 3e38 overflow to Inf, 65504 does not; an
 *    fp32 cache keeps 3e38.  A rejected append writes nothing.
 *
 * Usage: test_nonfinite [backend]   (default cpu; exits 77 when the backend
 * has no device).  Vulkan runs with the validation layer where installed. */
#include "api_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool same_float(float a, float b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

/* ------------------------------------------------------------------------ */
/* The bug report's case: Hq 2, Hkv 1, d 4, n_tip 1                          */
/* ------------------------------------------------------------------------ */

#define R_L 4
#define R_D 4

typedef struct small_case {
    const char *name;
    float k[R_L][R_D];
    fasa_dtype dtype;
    fasa_placement placement;
    fasa_gqa_select select;
} small_case;

typedef struct small_result {
    fasa_status st;
    fasa_decode_outputs out;
    int32_t sel[2];
    float scores[2][R_L];
    float o[2][R_D];
} small_result;

/* Head 0 owns dims {0, 1}, head 1 owns {2, 3}; q[0] = e0, q[1] = e2;
 * V row t = t + 1.  One layer, not forced dense; n_fac 1 < L = 4. */
static small_result run_small(fasa_context *ctx, const small_case *sc)
{
    small_result r;
    memset(&r, 0, sizeof r);
    const fasa_model_shape shape = {1, 2, 1, R_D, FASA_ROPE_NORM};
    const uint16_t dims[2][2] = {{0, 1}, {2, 3}};
    const float q[2][R_D] = {{1, 0, 0, 0}, {0, 0, 1, 0}};
    float v[R_L][R_D];
    for (int t = 0; t < R_L; t++)
        for (int c = 0; c < R_D; c++) v[t][c] = (float)(t + 1);
    fasa_calibration *cal = NULL;
    fasa_kv_cache *cache = NULL;
    fasa_buffer *kb = NULL, *vb = NULL;
    fasa_calibration_desc cd = {.shape = shape, .n_tip = 1, .dims = &dims[0][0]};
    r.st = fasa_calibration_create(ctx, &cd, &cal);
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = 8, .dtype = sc->dtype, .calibration = cal,
                             .flags = FASA_CACHE_NO_DENSE_LAYERS, .placement = sc->placement};
    if (r.st == FASA_OK) r.st = fasa_kv_cache_create(ctx, &kd, &cache);
    if (r.st == FASA_OK) r.st = fasa_buffer_create(ctx, sizeof sc->k, &kb);
    if (r.st == FASA_OK) r.st = fasa_buffer_create(ctx, sizeof v, &vb);
    if (r.st == FASA_OK) r.st = fasa_buffer_write(kb, 0, sc->k, sizeof sc->k);
    if (r.st == FASA_OK) r.st = fasa_buffer_write(vb, 0, v, sizeof v);
    if (r.st == FASA_OK) r.st = fasa_kv_cache_append_buffers(cache, 0, R_L, kb, 0, vb, 0, FASA_DTYPE_F32);
    fasa_decode_desc dd = {.n_fac = 1, .gqa_select = sc->select};
    r.out = (fasa_decode_outputs){.selected = r.sel, .selected_stride = 1, .scores = &r.scores[0][0],
                                  .scores_stride = R_L};
    if (r.st == FASA_OK) r.st = fasa_decode_host(cache, 0, &dd, &q[0][0], &r.o[0][0], &r.out);
    CHECK(r.st == FASA_OK, "%s: %s (%s)", sc->name, fasa_status_string(r.st), fasa_context_last_error(ctx));
    fasa_buffer_destroy(kb);
    fasa_buffer_destroy(vb);
    fasa_kv_cache_destroy(cache);
    fasa_calibration_destroy(cal);
    return r;
}

static const char *dtype_str(fasa_dtype t) { return t == FASA_DTYPE_F16 ? "f16" : "f32"; }

/* Scores, selection and outputs of one small case against expectations
 * (o_want NaN: every element NaN; Inf: every element NaN or Inf). */
static void expect_small(const small_case *sc, const small_result *r, const float want_scores[][R_L],
                         const int32_t *want_sel, const float *o_want)
{
    const char *place = sc->placement == FASA_PLACEMENT_OFFLOAD ? "FASA-M" : "FASA-C";
    uint32_t rows = sc->select == FASA_GQA_PER_GROUP ? 1 : 2;
    if (r->st != FASA_OK) return;
    CHECK(r->out.path == FASA_PATH_SPARSE && r->out.n_rows == rows && r->out.n_selected == 1,
          "%s %s %s: path %d, %u rows, %u selected: layer 0 must take the sparse path", sc->name,
          dtype_str(sc->dtype), place, (int)r->out.path, r->out.n_rows, r->out.n_selected);
    for (uint32_t row = 0; row < rows; row++) {
        bool ok = true;
        for (int t = 0; t < R_L; t++) ok &= same_float(r->scores[row][t], want_scores[row][t]);
        CHECK(ok, "%s %s %s: row %u scores %g %g %g %g, wanted %g %g %g %g (own dims only)", sc->name,
              dtype_str(sc->dtype), place, row, r->scores[row][0], r->scores[row][1], r->scores[row][2],
              r->scores[row][3], want_scores[row][0], want_scores[row][1], want_scores[row][2],
              want_scores[row][3]);
        CHECK(r->sel[row] == want_sel[row], "%s %s %s: row %u selected token %d, wanted %d", sc->name,
              dtype_str(sc->dtype), place, row, r->sel[row], want_sel[row]);
    }
    for (int h = 0; h < 2; h++) {
        bool ok = true;
        for (int c = 0; c < R_D; c++)
            ok &= isnan(o_want[h])   ? isnan(r->o[h][c])
                  : isinf(o_want[h]) ? !isfinite(r->o[h][c])
                                     : fabsf(r->o[h][c] - o_want[h]) <= 1e-6f;
        CHECK(ok, "%s %s %s: head %d output %g %g %g %g, wanted %g", sc->name, dtype_str(sc->dtype), place, h,
              r->o[h][0], r->o[h][1], r->o[h][2], r->o[h][3], o_want[h]);
    }
}

static void test_own_dims_small(fasa_context *ctx)
{
    const float nan = NAN, inf = INFINITY;
    for (int variant = 0; variant < 4; variant++) {
        fasa_dtype dtype = variant & 1 ? FASA_DTYPE_F16 : FASA_DTYPE_F32;
        fasa_placement place = variant & 2 ? FASA_PLACEMENT_OFFLOAD : FASA_PLACEMENT_DEVICE;
        /* 1. the report: NaN in dim 2 (head 1's) of token 1.  Head 0 scores
         * token 1 by its own dims (4) and selects it; FAC's exact full q.k
         * then meets the NaN, so head 0's output is NaN.  Head 1's own score
         * of token 1 is NaN (ranks lowest): it selects token 3, V = 4. */
        small_case sc = {"NaN in another head's dim, per head",
                         {{0, 0, 0, 0}, {4, 0, nan, 0}, {2, 0, 0, 0}, {0, 0, 3, 0}}, dtype, place, FASA_GQA_PER_HEAD};
        small_result r = run_small(ctx, &sc);
        expect_small(&sc, &r, (const float[][R_L]){{0, 4, 2, 0}, {0, nan, 0, 3}}, (const int32_t[]){1, 3},
                     (const float[]){nan, 4});
        /* 2. +Inf there: head 0 as before, head 1's score is +Inf (ranks
         * highest); both select token 1, so FAC meets the Inf in both. */
        small_case si = {"+Inf in another head's dim, per head",
                         {{0, 0, 0, 0}, {4, 0, inf, 0}, {2, 0, 0, 0}, {0, 0, 3, 0}}, dtype, place, FASA_GQA_PER_HEAD};
        r = run_small(ctx, &si);
        expect_small(&si, &r, (const float[][R_L]){{0, 4, 2, 0}, {0, inf, 0, 3}}, (const int32_t[]){1, 1},
                     (const float[]){inf, inf});
        /* 3. per group, +Inf: the group score of token 1 is 4 + Inf = +Inf,
         * so the group selects token 1 (a NaN from head 0's 0 * Inf would
         * rank it lowest and select token 3). */
        si.name = "+Inf in another head's dim, per group";
        si.select = FASA_GQA_PER_GROUP;
        r = run_small(ctx, &si);
        expect_small(&si, &r, (const float[][R_L]){{0, inf, 2, 3}}, (const int32_t[]){1}, (const float[]){inf, inf});
        /* 4. per group, NaN: head 1's own score is NaN, so the group's is:
         * the group selects token 3 (V = 4) */
        sc.name = "NaN in another head's dim, per group";
        sc.select = FASA_GQA_PER_GROUP;
        r = run_small(ctx, &sc);
        expect_small(&sc, &r, (const float[][R_L]){{0, nan, 2, 3}}, (const int32_t[]){3}, (const float[]){4, 4});
        /* 5. a finite case: exact scores, selections and outputs */
        small_case sf = {"finite, per head", {{0, 0, 0, 0}, {4, 0, 5, 0}, {2, 0, 0, 0}, {0, 0, 3, 0}}, dtype, place,
                         FASA_GQA_PER_HEAD};
        r = run_small(ctx, &sf);
        expect_small(&sf, &r, (const float[][R_L]){{0, 4, 2, 0}, {0, 5, 0, 3}}, (const int32_t[]){1, 1},
                     (const float[]){2, 2});
        sf.name = "finite, per group";
        sf.select = FASA_GQA_PER_GROUP;
        r = run_small(ctx, &sf);
        expect_small(&sf, &r, (const float[][R_L]){{0, 9, 2, 3}}, (const int32_t[]){1}, (const float[]){2, 2});
    }
}

/* ------------------------------------------------------------------------ */
/* Larger shapes: random contamination, and finite data as before            */
/* ------------------------------------------------------------------------ */

#define B_HQ 8
#define B_HKV 2
#define B_G (B_HQ / B_HKV)
#define B_D 64
#define B_L 700
#define B_NFAC 40

static uint64_t rng_state;
static uint32_t rng_u32(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
static float rng_unit(void) { return (float)((rng_u32() >> 8) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

typedef struct big_cache {
    fasa_calibration *cal;
    fasa_kv_cache *cache;
} big_cache;

static void big_destroy(big_cache *b)
{
    fasa_kv_cache_destroy(b->cache);
    fasa_calibration_destroy(b->cal);
    b->cache = NULL;
    b->cal = NULL;
}

/* A one-layer sparse cache holding k/v ([B_L][B_HKV][B_D] fp32) through
 * fasa_kv_cache_append_buffers. */
static bool big_create(fasa_context *ctx, uint32_t n_tip, const uint16_t *dims, fasa_dtype dtype, fasa_placement place,
                       const float *k, const float *v, big_cache *out)
{
    memset(out, 0, sizeof *out);
    const fasa_model_shape shape = {1, B_HQ, B_HKV, B_D, FASA_ROPE_NORM};
    fasa_calibration_desc cd = {.shape = shape, .n_tip = n_tip, .dims = dims};
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = B_L, .dtype = dtype, .flags = FASA_CACHE_NO_DENSE_LAYERS,
                             .placement = place};
    size_t bytes = (size_t)B_L * B_HKV * B_D * sizeof(float);
    fasa_buffer *kb = NULL, *vb = NULL;
    fasa_status st = fasa_calibration_create(ctx, &cd, &out->cal);
    kd.calibration = out->cal;
    if (st == FASA_OK) st = fasa_kv_cache_create(ctx, &kd, &out->cache);
    if (st == FASA_OK) st = fasa_buffer_create(ctx, bytes, &kb);
    if (st == FASA_OK) st = fasa_buffer_create(ctx, bytes, &vb);
    if (st == FASA_OK) st = fasa_buffer_write(kb, 0, k, bytes);
    if (st == FASA_OK) st = fasa_buffer_write(vb, 0, v, bytes);
    if (st == FASA_OK) st = fasa_kv_cache_append_buffers(out->cache, 0, B_L, kb, 0, vb, 0, FASA_DTYPE_F32);
    CHECK(st == FASA_OK, "big cache: %s (%s)", fasa_status_string(st), fasa_context_last_error(ctx));
    fasa_buffer_destroy(kb);
    fasa_buffer_destroy(vb);
    if (st != FASA_OK) big_destroy(out);
    return st == FASA_OK;
}

typedef struct big_out {
    int32_t sel[B_HQ][B_NFAC];
    float scores[B_HQ][B_L];
    float o[B_HQ][B_D];
    fasa_decode_outputs info;
} big_out;

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static bool big_decode(fasa_context *ctx, fasa_kv_cache *c, fasa_mode mode, fasa_gqa_select select, const float *q,
                       big_out *out)
{
    fasa_decode_desc dd = {.mode = mode, .n_fac = B_NFAC, .gqa_select = select};
    out->info = (fasa_decode_outputs){.selected = &out->sel[0][0], .selected_stride = B_NFAC,
                                      .scores = &out->scores[0][0], .scores_stride = B_L};
    fasa_status st = fasa_decode_host(c, 0, &dd, q, &out->o[0][0], &out->info);
    CHECK(st == FASA_OK && out->info.path == FASA_PATH_SPARSE, "decode: %s (%s)", fasa_status_string(st),
          fasa_context_last_error(ctx));
    for (uint32_t r = 0; st == FASA_OK && r < out->info.n_rows; r++)
        qsort(out->sel[r], B_NFAC, sizeof(int32_t), cmp_i32); /* GPU backends return any order */
    return st == FASA_OK;
}

/* Per KV head g, heads 4g..4g+3: head m owns FCs {m, m + 4, 8 + m, ...} of
 * g's first 16 FCs, heads 0 and 1 also share FC 20 + g: unions of 14 or so
 * FCs with shared and private dims. */
static void big_dims(uint16_t *dims, uint32_t n_tip)
{
    for (uint32_t h = 0; h < B_HQ; h++) {
        uint32_t m = h % B_G, fcs[8], n = 0;
        for (uint32_t i = 0; n + 1 < n_tip && i < 4; i++) fcs[n++] = m + 4 * i;
        fcs[n++] = m < 2 ? 20 + h / B_G : 24 + m;
        for (uint32_t i = 1; i < n; i++) /* ascending */
            for (uint32_t j = i; j > 0 && fcs[j] < fcs[j - 1]; j--) {
                uint32_t t = fcs[j]; fcs[j] = fcs[j - 1]; fcs[j - 1] = t;
            }
        for (uint32_t i = 0; i < n; i++) {
            dims[h * 2 * n_tip + 2 * i] = (uint16_t)(2 * fcs[i]);
            dims[h * 2 * n_tip + 2 * i + 1] = (uint16_t)(2 * fcs[i] + 1);
        }
    }
}

static bool head_owns(const uint16_t *dims, uint32_t n_tip, uint32_t h, uint32_t dim)
{
    for (uint32_t i = 0; i < 2 * n_tip; i++)
        if (dims[h * 2 * n_tip + i] == dim) return true;
    return false;
}

/* Integer data (every score exact in any order, on every backend): NaN,
 * +Inf and -Inf planted in K at dims of KV head g that head 4g+1 owns and
 * head 4g does not.  Head 4g's scores and selection must equal those of
 * the clean cache (its output may not: FAC's full q . k meets the planted
 * values in the selected rows); head 4g+1's scores at the planted tokens
 * must be NaN or +-Inf, as its own dims say. */
static void test_own_dims_random(fasa_context *ctx, fasa_dtype dtype, fasa_placement place)
{
    const uint32_t n_tip = 4;
    uint16_t dims[B_HQ * 8];
    big_dims(dims, n_tip);
    size_t nk = (size_t)B_L * B_HKV * B_D;
    float *k = malloc(nk * sizeof(float)), *kx = malloc(nk * sizeof(float)), *v = malloc(nk * sizeof(float));
    float q[B_HQ * B_D];
    rng_state = 0x5eed0001u + dtype + 2 * place;
    for (size_t i = 0; i < nk; i++) {
        k[i] = (float)((int)(rng_u32() % 17) - 8);
        v[i] = rng_unit();
    }
    for (int i = 0; i < B_HQ * B_D; i++) q[i] = (float)((int)(rng_u32() % 9) - 4);
    memcpy(kx, k, nk * sizeof(float));
    /* head 4g+1's private dims, planted in one token of three */
    uint32_t planted = 0;
    int kind_at[B_L][B_HKV];
    for (uint32_t t = 0; t < B_L; t++)
        for (uint32_t g = 0; g < B_HKV; g++) {
            kind_at[t][g] = -1;
            if (t % 3 != 1) continue;
            uint32_t h0 = g * B_G, h1 = h0 + 1, tries = 0, dim;
            do dim = rng_u32() % B_D;
            while ((!head_owns(dims, n_tip, h1, dim) || head_owns(dims, n_tip, h0, dim)) && ++tries < 1000);
            if (tries >= 1000) continue;
            int kind = (int)(rng_u32() % 3);
            kx[((size_t)t * B_HKV + g) * B_D + dim] = kind == 0 ? NAN : kind == 1 ? INFINITY : -INFINITY;
            kind_at[t][g] = kind;
            planted++;
        }
    CHECK(planted > 300, "planted only %u values", planted);
    big_cache clean, dirty;
    bool ok = big_create(ctx, n_tip, dims, dtype, place, k, v, &clean);
    ok = big_create(ctx, n_tip, dims, dtype, place, kx, v, &dirty) && ok;
    static big_out a, b;
    for (int s = 0; ok && s < 2; s++) {
        fasa_gqa_select select = s ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD;
        if (!big_decode(ctx, clean.cache, FASA_MODE_FASA, select, q, &a) ||
            !big_decode(ctx, dirty.cache, FASA_MODE_FASA, select, q, &b))
            break;
        if (select == FASA_GQA_PER_GROUP) {
            /* group scores: the sum of own-dims scores, so +-Inf or NaN exactly
             * where head 4g+1 met the planted value (its q there is non-zero) */
            uint32_t bad = 0;
            for (uint32_t g = 0; g < B_HKV; g++)
                for (uint32_t t = 0; t < B_L; t++) {
                    float x = b.scores[g][t];
                    if (kind_at[t][g] < 0) bad += !same_float(x, a.scores[g][t]);
                    else bad += isfinite(x);
                }
            CHECK(bad == 0, "%s %s per group: %u group scores wrong", dtype_str(dtype),
                  place ? "FASA-M" : "FASA-C", bad);
            continue;
        }
        uint32_t bad_scores = 0, bad_sel = 0, finite1 = 0;
        for (uint32_t g = 0; g < B_HKV; g++) {
            uint32_t h0 = g * B_G, h1 = h0 + 1;
            for (uint32_t t = 0; t < B_L; t++) {
                bad_scores += !same_float(a.scores[h0][t], b.scores[h0][t]) || isnan(b.scores[h0][t]);
                if (kind_at[t][g] >= 0) finite1 += isfinite(b.scores[h1][t]) != 0;
            }
            bad_sel += memcmp(a.sel[h0], b.sel[h0], sizeof a.sel[h0]) != 0;
        }
        CHECK(bad_scores == 0 && bad_sel == 0, "%s %s: heads without the planted dims changed: %u scores, %u selections",
              dtype_str(dtype), place ? "FASA-M" : "FASA-C", bad_scores, bad_sel);
        CHECK(finite1 == 0, "%s %s: %u own-dims scores of the planted values are finite", dtype_str(dtype),
              place ? "FASA-M" : "FASA-C", finite1);
    }
    big_destroy(&clean);
    big_destroy(&dirty);
    free(k);
    free(kx);
    free(v);
}

/* Finite data scores bit for bit as before the own-dims rule.  CPU: the
 * documented order of its TIP (src/cpu/cpu_simd.h, tip16): over the union
 * slots in order, one fma per slot of the masked query (0 outside I_h),
 * from 0, per-group sums in head order.  GPU backends: with every dim
 * owned (n_tip = d/2) the TIP kernel does the same arithmetic as the
 * oracle path, so the two score sets must match bit for bit. */
static void test_finite_as_before(fasa_context *ctx, fasa_dtype dtype)
{
    size_t nk = (size_t)B_L * B_HKV * B_D;
    float *k = malloc(nk * sizeof(float)), *v = malloc(nk * sizeof(float)), *ks = malloc(nk * sizeof(float));
    float q[B_HQ * B_D];
    rng_state = 0xf1417e00u + dtype;
    for (size_t i = 0; i < nk; i++) {
        k[i] = rng_unit() * 3.0f;
        v[i] = rng_unit();
    }
    for (int i = 0; i < B_HQ * B_D; i++) q[i] = rng_unit();
    static big_out a, b;
    big_cache bc;
    if (api_backend == FASA_BACKEND_CPU) {
        const uint32_t n_tip = 4;
        uint16_t dims[B_HQ * 8];
        big_dims(dims, n_tip);
        if (big_create(ctx, n_tip, dims, dtype, FASA_PLACEMENT_DEVICE, k, v, &bc)) {
            CHECK(fasa_kv_cache_read(bc.cache, 0, 0, B_L, ks, NULL) == FASA_OK, "read back K");
            for (int s = 0; s < 2; s++) {
                fasa_gqa_select select = s ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD;
                if (!big_decode(ctx, bc.cache, FASA_MODE_FASA, select, q, &a)) break;
                uint32_t bad = 0;
                for (uint32_t g = 0; g < B_HKV; g++) {
                    bool in_union[B_D] = {false};
                    for (uint32_t h = g * B_G; h < (g + 1) * B_G; h++)
                        for (uint32_t c = 0; c < B_D; c++) in_union[c] |= head_owns(dims, n_tip, h, c);
                    for (uint32_t t = 0; t < B_L; t++) {
                        float sum = 0.0f;
                        for (uint32_t h = g * B_G; h < (g + 1) * B_G; h++) {
                            float acc = 0.0f;
                            for (uint32_t c = 0; c < B_D; c++) /* union slots are the union dims ascending */
                                if (in_union[c])
                                    acc = fmaf(head_owns(dims, n_tip, h, c) ? q[h * B_D + c] : 0.0f,
                                               ks[((size_t)t * B_HKV + g) * B_D + c], acc);
                            if (s) sum += acc;
                            else bad += !(a.scores[h][t] == acc);
                        }
                        if (s) bad += !(a.scores[g][t] == sum);
                    }
                }
                CHECK(bad == 0, "cpu %s %s: %u scores differ from the documented order", dtype_str(dtype),
                      s ? "per group" : "per head", bad);
            }
            big_destroy(&bc);
        }
    } else {
        const uint32_t n_tip = B_D / 2;
        uint16_t *dims = malloc((size_t)B_HQ * B_D * sizeof(uint16_t));
        for (uint32_t h = 0; h < B_HQ; h++)
            for (uint32_t c = 0; c < B_D; c++) dims[h * B_D + c] = (uint16_t)c;
        if (big_create(ctx, n_tip, dims, dtype, FASA_PLACEMENT_DEVICE, k, v, &bc)) {
            for (int s = 0; s < 2; s++) {
                fasa_gqa_select select = s ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD;
                if (!big_decode(ctx, bc.cache, FASA_MODE_FASA, select, q, &a) ||
                    !big_decode(ctx, bc.cache, FASA_MODE_ORACLE, select, q, &b))
                    break;
                uint32_t bad = 0;
                for (uint32_t r = 0; r < a.info.n_rows; r++)
                    for (uint32_t t = 0; t < B_L; t++) bad += memcmp(&a.scores[r][t], &b.scores[r][t], 4) != 0;
                CHECK(bad == 0, "%s %s %s: %u TIP scores differ from the oracle kernel's", fasa_backend_name(api_backend),
                      dtype_str(dtype), s ? "per group" : "per head", bad);
                CHECK(memcmp(a.sel, b.sel, (size_t)a.info.n_rows * sizeof a.sel[0]) == 0 &&
                          memcmp(a.o, b.o, sizeof a.o) == 0,
                      "%s %s: selections or outputs differ from the oracle's", fasa_backend_name(api_backend),
                      dtype_str(dtype));
            }
            big_destroy(&bc);
        }
        free(dims);
    }
    free(k);
    free(v);
    free(ks);
}

/* ------------------------------------------------------------------------ */
/* Appends: finite once stored                                               */
/* ------------------------------------------------------------------------ */

#define A_HKV 2
#define A_D 8
#define A_ROW (A_HKV * A_D)

static uint32_t length_of(fasa_kv_cache *c)
{
    uint32_t n = 0xffffffffu;
    fasa_kv_cache_length(c, 0, &n);
    return n;
}

/* Appends 3 tokens of 0.5 with `value` at token 2, head 1, dim 3 of k (or
 * of v) and checks the outcome: rejected naming the element and value,
 * with the cache as it was, or accepted and read back as `stored`. */
static void append_one(fasa_context *ctx, fasa_kv_cache *c, const char *what, bool in_v, float value, bool accept,
                       float stored, const char *name)
{
    float k[3 * A_ROW], v[3 * A_ROW], back[A_ROW], before[A_ROW];
    for (int i = 0; i < 3 * A_ROW; i++) k[i] = v[i] = 0.5f;
    size_t at = 2 * A_ROW + 1 * A_D + 3;
    (in_v ? v : k)[at] = value;
    uint32_t len0 = length_of(c);
    CHECK(fasa_kv_cache_read(c, 0, len0 - 1, 1, before, NULL) == FASA_OK, "read before");
    fasa_status st = fasa_kv_cache_append(c, 0, 3, k, v, FASA_DTYPE_F32);
    const char *msg = fasa_context_last_error(ctx);
    if (!accept) {
        char field[64];
        snprintf(field, sizeof field, "%s[token 2][head 1][dim 3]", in_v ? "v" : "k");
        CHECK(st == FASA_ERROR_NON_FINITE && strstr(msg, field) && strstr(msg, name) && strstr(msg, "fp16"),
              "%s: %s = %g: got %s (%s), wanted FASA_ERROR_NON_FINITE naming %s and %s", what, in_v ? "v" : "k",
              value, fasa_status_string(st), msg, field, name);
        CHECK(length_of(c) == len0, "%s: a rejected append changed the length %u -> %u", what, len0, length_of(c));
        CHECK(fasa_kv_cache_read(c, 0, len0 - 1, 1, back, NULL) == FASA_OK && memcmp(back, before, sizeof back) == 0,
              "%s: a rejected append changed the last row", what);
        return;
    }
    CHECK(st == FASA_OK && length_of(c) == len0 + 3, "%s: %s = %g rejected: %s (%s)", what, in_v ? "v" : "k", value,
          fasa_status_string(st), msg);
    float rk[A_ROW], rv[A_ROW];
    CHECK(fasa_kv_cache_read(c, 0, len0 + 2, 1, rk, rv) == FASA_OK && (in_v ? rv : rk)[A_D + 3] == stored &&
              (in_v ? rk : rv)[A_D + 3] == 0.5f,
          "%s: stored %g, wanted %g", what, (in_v ? rv : rk)[A_D + 3], stored);
}

static void test_append_overflow(fasa_context *ctx)
{
    const fasa_model_shape shape = {1, 2, A_HKV, A_D, FASA_ROPE_NORM};
    fasa_kv_cache *h = NULL, *f = NULL;
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = 64, .dtype = FASA_DTYPE_F16};
    CHECK(fasa_kv_cache_create(ctx, &kd, &h) == FASA_OK, "f16 cache: %s", fasa_context_last_error(ctx));
    kd.dtype = FASA_DTYPE_F32;
    CHECK(fasa_kv_cache_create(ctx, &kd, &f) == FASA_OK, "f32 cache: %s", fasa_context_last_error(ctx));
    if (!h || !f) goto done;
    float one[A_ROW];
    for (int i = 0; i < A_ROW; i++) one[i] = 1.0f;
    CHECK(fasa_kv_cache_append(h, 0, 1, one, one, FASA_DTYPE_F32) == FASA_OK &&
              fasa_kv_cache_append(f, 0, 1, one, one, FASA_DTYPE_F32) == FASA_OK, "first token");
    /* fp16: 65520 is halfway between 65504 and 2^16 and rounds (to even) to Inf */
    append_one(ctx, h, "f16 cache", false, 65520.0f, false, 0, "65520");
    append_one(ctx, h, "f16 cache", true, 65520.0f, false, 0, "65520");
    append_one(ctx, h, "f16 cache", false, -65520.0f, false, 0, "-65520");
    append_one(ctx, h, "f16 cache", false, 3e38f, false, 0, "3e+38");
    append_one(ctx, h, "f16 cache", true, -3e38f, false, 0, "-3e+38");
    append_one(ctx, h, "f16 cache", false, 65504.0f, true, 65504.0f, "");
    append_one(ctx, h, "f16 cache", true, -65504.0f, true, -65504.0f, "");
    append_one(ctx, h, "f16 cache", false, nextafterf(65520.0f, 0.0f), true, 65504.0f, ""); /* rounds down */
    /* still rejected as not finite from the source */
    float k[A_ROW], v[A_ROW];
    for (int i = 0; i < A_ROW; i++) k[i] = v[i] = 0.5f;
    uint32_t len = length_of(h);
    k[5] = INFINITY;
    fasa_status st = fasa_kv_cache_append(h, 0, 1, k, v, FASA_DTYPE_F32);
    CHECK(st == FASA_ERROR_NON_FINITE && strstr(fasa_context_last_error(ctx), "k[token 0][head 0][dim 5] is not finite") &&
              length_of(h) == len, "Inf: %s", fasa_context_last_error(ctx));
    /* fp16 sources are finite in either cache */
    uint16_t hk[A_ROW], hv[A_ROW];
    for (int i = 0; i < A_ROW; i++) hk[i] = hv[i] = 0x7bff; /* 65504 */
    CHECK(fasa_kv_cache_append(h, 0, 1, hk, hv, FASA_DTYPE_F16) == FASA_OK &&
              fasa_kv_cache_append(f, 0, 1, hk, hv, FASA_DTYPE_F16) == FASA_OK, "fp16 65504: %s",
          fasa_context_last_error(ctx));
    /* fp32 keeps them all */
    append_one(ctx, f, "f32 cache", false, 3e38f, true, 3e38f, "");
    append_one(ctx, f, "f32 cache", true, -3e38f, true, -3e38f, "");
    append_one(ctx, f, "f32 cache", false, 65520.0f, true, 65520.0f, "");
done:
    fasa_kv_cache_destroy(h);
    fasa_kv_cache_destroy(f);
}

int main(int argc, char **argv)
{
    fasa_context *ctx = NULL;
    int status = api_test_open(argc, argv, "test_nonfinite", &ctx);
    if (status) return status;
    test_own_dims_small(ctx);
    for (int dt = 0; dt < 2; dt++) {
        fasa_dtype dtype = dt ? FASA_DTYPE_F32 : FASA_DTYPE_F16;
        test_own_dims_random(ctx, dtype, FASA_PLACEMENT_DEVICE);
        test_own_dims_random(ctx, dtype, FASA_PLACEMENT_OFFLOAD);
        test_finite_as_before(ctx, dtype);
    }
    test_append_overflow(ctx);
    return api_test_close(ctx);
}
