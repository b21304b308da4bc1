/* docs/SPEC.md §9 invariants on the CPU backend, through the public API. */
#include "check.h"
#include "fasa.h"
#include "ref64.h"
#include "synth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct setup {
    fasa_context *ctx;
    fasa_model_shape shape;
    uint32_t L, n_tip;
    synth_desc sd;
    float *q, *k, *v;
    uint16_t *dims;              /* [n_layers][Hq][2 n_tip] */
} setup;

static void setup_init(setup *s, fasa_context *ctx, uint32_t hq, uint32_t hkv, uint32_t d, uint32_t L,
                       uint32_t n_tip, synth_kind kind, fasa_rope_layout layout, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->ctx = ctx;
    s->shape = (fasa_model_shape){2, hq, hkv, d, layout};
    s->L = L;
    s->n_tip = n_tip;
    s->sd = (synth_desc){.n_q_heads = hq, .n_kv_heads = hkv, .head_dim = d, .layout = layout, .n_tip = n_tip,
                         .kind = kind, .seed = seed};
    size_t row = (size_t)hkv * d, per = (size_t)hq * 2 * n_tip;
    s->q = malloc((size_t)hq * d * sizeof(float));
    s->k = malloc(L * row * sizeof(float));
    s->v = malloc(L * row * sizeof(float));
    s->dims = malloc(2 * per * sizeof(uint16_t));
    synth_keys(&s->sd, 0, L, s->k, s->v);
    synth_query(&s->sd, L - 1, 0, s->q);
    synth_planted_dims(&s->sd, s->dims);
    memcpy(s->dims + per, s->dims, per * sizeof(uint16_t));
}

static void setup_free(setup *s)
{
    free(s->q); free(s->k); free(s->v); free(s->dims);
}

/* A cache holding layer 0 and layer 1 with the same tokens. */
static fasa_kv_cache *build(const setup *s, fasa_dtype dtype, uint32_t flags, fasa_calibration **cal)
{
    fasa_calibration_desc cd = {.shape = s->shape, .n_tip = s->n_tip, .dims = s->dims};
    fasa_kv_cache *c = NULL;
    if (fasa_calibration_create(s->ctx, &cd, cal) != FASA_OK) return NULL;
    fasa_kv_cache_desc kd = {.shape = s->shape, .capacity = s->L + 8, .dtype = dtype, .calibration = *cal,
                             .flags = flags, .max_n_fac = 4096};
    if (fasa_kv_cache_create(s->ctx, &kd, &c) != FASA_OK) return NULL;
    for (uint32_t l = 0; l < 2; l++)
        if (fasa_kv_cache_append(c, l, s->L, s->k, s->v, FASA_DTYPE_F32) != FASA_OK) return NULL;
    return c;
}

/* fp16 bits of x, built from the reference's arithmetic rounding. */
static uint16_t half_bits(float x)
{
    double r = ref_round_half(x), a = fabs(r);
    uint16_t sign = signbit(r) ? 0x8000 : 0;
    if (a < ldexp(1.0, -14)) return sign | (uint16_t)(a * ldexp(1.0, 24)); /* subnormal or zero */
    int e;
    double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1): half exponent e - 1 */
    return sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)((m * 2 - 1) * 1024);
}

static double nmse(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? num / den : num;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Decodes layer `layer` and returns the output and the sorted selection. */
static fasa_status run(fasa_kv_cache *c, uint32_t layer, const fasa_decode_desc *d, const float *q, float *o,
                       int32_t *sel, uint32_t rows)
{
    fasa_decode_outputs out = {.selected = sel, .selected_stride = d->n_fac ? d->n_fac : 256};
    fasa_status st = fasa_decode_host(c, layer, d, q, o, sel ? &out : NULL);
    for (uint32_t r = 0; sel && st == FASA_OK && r < rows; r++)
        qsort(sel + (size_t)r * out.selected_stride, out.selected_stride, sizeof *sel, cmp_i32);
    return st;
}

static void test_all_dims_is_oracle(fasa_context *ctx)
{
    setup s;
    setup_init(&s, ctx, 8, 2, 64, 3000, 32, SYNTH_GAUSSIAN, FASA_ROPE_NORM, 11);
    fasa_calibration *cal = NULL;
    fasa_kv_cache *c = build(&s, FASA_DTYPE_F16, 0, &cal);
    float o1[8 * 64], o2[8 * 64];
    int32_t s1[8 * 128], s2[8 * 128];
    fasa_decode_desc fasa = {.n_fac = 128}, oracle = {.n_fac = 128, .mode = FASA_MODE_ORACLE};
    CHECK(c && run(c, 1, &fasa, s.q, o1, s1, 8) == FASA_OK && run(c, 1, &oracle, s.q, o2, s2, 8) == FASA_OK,
          "decode: %s", fasa_context_last_error(ctx));
    /* TIP and the oracle sum the same products in different orders, so
     * equal sets (no near-ties in Gaussian data) and equal outputs up to
     * the order of FAC's sums */
    CHECK(memcmp(s1, s2, sizeof s1) == 0 && nmse(o1, o2, 8 * 64) < 1e-12, "N_tip = d/2 must equal the oracle");
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    setup_free(&s);
}

static void test_budget_and_dense_layer(fasa_context *ctx)
{
    setup s;
    setup_init(&s, ctx, 8, 2, 128, 700, 16, SYNTH_PLANTED, FASA_ROPE_NORM, 12);
    fasa_calibration *cal = NULL;
    fasa_kv_cache *c = build(&s, FASA_DTYPE_F16, 0, &cal);
    float dense[8 * 128], o[8 * 128];
    fasa_decode_desc dd = {.mode = FASA_MODE_DENSE}, big = {.n_fac = 700}, small = {.n_fac = 64};
    CHECK(c && run(c, 1, &dd, s.q, dense, NULL, 0) == FASA_OK, "dense");
    CHECK(run(c, 1, &big, s.q, o, NULL, 0) == FASA_OK && memcmp(o, dense, sizeof o) == 0,
          "N_fac >= L must equal dense exactly");
    float dense0[8 * 128];
    CHECK(run(c, 0, &dd, s.q, dense0, NULL, 0) == FASA_OK && run(c, 0, &small, s.q, o, NULL, 0) == FASA_OK &&
              memcmp(o, dense0, sizeof o) == 0, "layer 0 (dense by default) must equal the dense path bit for bit");
    fasa_decode_outputs out = {0};
    CHECK(fasa_decode_host(c, 0, &small, s.q, o, &out) == FASA_OK && out.path == FASA_PATH_DENSE, "layer 0 path");
    CHECK(fasa_decode_host(c, 1, &small, s.q, o, &out) == FASA_OK && out.path == FASA_PATH_SPARSE && out.n_rows == 8 &&
              out.n_selected == 64, "layer 1 path");
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    /* with FASA_CACHE_NO_DENSE_LAYERS layer 0 is sparse */
    c = build(&s, FASA_DTYPE_F16, FASA_CACHE_NO_DENSE_LAYERS, &cal);
    CHECK(c && fasa_decode_host(c, 0, &small, s.q, o, &out) == FASA_OK && out.path == FASA_PATH_SPARSE, "no dense layers");
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    setup_free(&s);
}

/* FAC over a set equals dense attention over a cache holding only that set. */
static void test_fac_is_dense_on_subset(fasa_context *ctx)
{
    setup s;
    setup_init(&s, ctx, 4, 1, 64, 2000, 8, SYNTH_PLANTED, FASA_ROPE_NORM, 13);
    fasa_calibration *cal = NULL;
    fasa_kv_cache *c = build(&s, FASA_DTYPE_F32, 0, &cal);
    fasa_decode_desc group = {.n_fac = 100, .gqa_select = FASA_GQA_PER_GROUP};
    float o[4 * 64], o_sub[4 * 64];
    int32_t sel[100];
    CHECK(c && run(c, 1, &group, s.q, o, sel, 1) == FASA_OK, "group decode");
    float *ks = malloc(100 * 64 * sizeof(float)), *vs = malloc(100 * 64 * sizeof(float));
    for (int i = 0; i < 100; i++) {
        memcpy(ks + i * 64, s.k + (size_t)sel[i] * 64, 64 * sizeof(float));
        memcpy(vs + i * 64, s.v + (size_t)sel[i] * 64, 64 * sizeof(float));
    }
    fasa_kv_cache *sub = NULL;
    fasa_kv_cache_desc kd = {.shape = s.shape, .capacity = 100, .dtype = FASA_DTYPE_F32};
    fasa_decode_desc dd = {.mode = FASA_MODE_DENSE};
    CHECK(fasa_kv_cache_create(ctx, &kd, &sub) == FASA_OK && fasa_kv_cache_append(sub, 1, 100, ks, vs, FASA_DTYPE_F32) == FASA_OK &&
              run(sub, 1, &dd, s.q, o_sub, NULL, 0) == FASA_OK, "subset cache");
    CHECK(nmse(o, o_sub, 4 * 64) < 1e-12, "FAC over T vs dense over T: nmse %g", nmse(o, o_sub, 4 * 64));
    free(ks);
    free(vs);
    fasa_kv_cache_destroy(sub);
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    setup_free(&s);
}

/* Same FCs in NORM and NEOX layout select the same tokens (integer data:
 * exact scores, so even ties resolve identically). */
static void test_layouts_agree(fasa_context *ctx)
{
    uint32_t hq = 8, hkv = 2, d = 64, L = 1500;
    setup a;
    setup_init(&a, ctx, hq, hkv, d, L, 8, SYNTH_INTEGER, FASA_ROPE_NORM, 14);
    /* the NEOX copy: interleaved dim 2i+s moves to i + s*d/2 */
    setup b = a;
    b.shape.layout = FASA_ROPE_NEOX;
    size_t nk = (size_t)L * hkv * d;
    b.q = malloc((size_t)hq * d * sizeof(float));
    b.k = malloc(nk * sizeof(float));
    b.v = a.v;
    for (size_t r = 0; r < nk / d; r++)
        for (uint32_t c = 0; c < d; c++) b.k[r * d + c / 2 + (c % 2) * d / 2] = a.k[r * d + c];
    for (size_t r = 0; r < hq; r++)
        for (uint32_t c = 0; c < d; c++) b.q[r * d + c / 2 + (c % 2) * d / 2] = a.q[r * d + c];
    fasa_calibration *ca = NULL, *cb = NULL, *back = NULL;
    fasa_kv_cache *kc_a = build(&a, FASA_DTYPE_F32, 0, &ca);
    CHECK(fasa_calibration_remap_layout(ca, FASA_ROPE_NEOX, &cb) == FASA_OK, "remap");
    fasa_calibration_info info;
    fasa_calibration_get_info(cb, &info);
    b.dims = malloc((size_t)2 * hq * 16 * sizeof(uint16_t));
    for (uint32_t l = 0; l < 2; l++)
        for (uint32_t h = 0; h < hq; h++) fasa_calibration_get_dims(cb, l, h, b.dims + ((size_t)l * hq + h) * 16, 16);
    fasa_calibration *cal_b = NULL;
    fasa_kv_cache *kc_b = build(&b, FASA_DTYPE_F32, 0, &cal_b);
    fasa_decode_desc dd = {.n_fac = 90};
    int32_t sa[8 * 90], sb[8 * 90];
    float oa[8 * 64], ob[8 * 64];
    CHECK(kc_a && kc_b && run(kc_a, 1, &dd, a.q, oa, sa, hq) == FASA_OK && run(kc_b, 1, &dd, b.q, ob, sb, hq) == FASA_OK,
          "decodes: %s", fasa_context_last_error(ctx));
    CHECK(memcmp(sa, sb, sizeof sa) == 0, "NORM and NEOX layouts select different tokens");
    /* o lives in V's dim space, which is not permuted */
    CHECK(nmse(ob, oa, 8 * 64) < 1e-12, "outputs differ: %g", nmse(ob, oa, 8 * 64));
    CHECK(fasa_calibration_remap_layout(cb, FASA_ROPE_NORM, &back) == FASA_OK, "remap back");
    uint16_t d1[16], d2[16];
    bool same = true;
    for (uint32_t h = 0; h < hq; h++) {
        fasa_calibration_get_dims(ca, 1, h, d1, 16);
        fasa_calibration_get_dims(back, 1, h, d2, 16);
        same &= memcmp(d1, d2, sizeof d1) == 0;
    }
    CHECK(same, "NORM -> NEOX -> NORM is not the identity");
    fasa_kv_cache_destroy(kc_a);
    fasa_kv_cache_destroy(kc_b);
    fasa_calibration_destroy(ca);
    fasa_calibration_destroy(cb);
    fasa_calibration_destroy(cal_b);
    fasa_calibration_destroy(back);
    free(b.q);
    free(b.k);
    free(b.dims);
    setup_free(&a);
}

static void test_scaling_and_ties(fasa_context *ctx)
{
    setup s;
    setup_init(&s, ctx, 8, 2, 64, 1200, 8, SYNTH_INTEGER, FASA_ROPE_NORM, 15);
    fasa_calibration *cal = NULL;
    fasa_kv_cache *c = build(&s, FASA_DTYPE_F16, 0, &cal);
    fasa_decode_desc dd = {.n_fac = 77};
    int32_t s1[8 * 77], s2[8 * 77];
    float o[8 * 64], *q3 = malloc(8 * 64 * sizeof(float));
    for (int i = 0; i < 8 * 64; i++) q3[i] = s.q[i] * 3.0f; /* exact on small integers */
    CHECK(c && run(c, 1, &dd, s.q, o, s1, 8) == FASA_OK && run(c, 1, &dd, q3, o, s2, 8) == FASA_OK &&
              memcmp(s1, s2, sizeof s1) == 0, "scaling q by 3 changed the selection");
    free(q3);
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    /* identical keys: every score ties, the lowest indices win */
    for (size_t t = 1; t < s.L; t++) memcpy(s.k + t * 2 * 64, s.k, 2 * 64 * sizeof(float));
    c = build(&s, FASA_DTYPE_F16, 0, &cal);
    bool lowest = c && run(c, 1, &dd, s.q, o, s1, 8) == FASA_OK;
    for (int r = 0; lowest && r < 8; r++)
        for (int i = 0; i < 77; i++) lowest &= s1[r * 77 + i] == i;
    CHECK(lowest, "all-tied scores must select tokens 0..76");
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    setup_free(&s);
}

static void test_gqa_and_forced(fasa_context *ctx)
{
    setup s;
    setup_init(&s, ctx, 4, 4, 64, 900, 8, SYNTH_PLANTED, FASA_ROPE_NEOX, 16);
    fasa_calibration *cal = NULL;
    fasa_kv_cache *c = build(&s, FASA_DTYPE_F16, 0, &cal);
    fasa_decode_desc head = {.n_fac = 50}, group = {.n_fac = 50, .gqa_select = FASA_GQA_PER_GROUP};
    int32_t s1[4 * 50], s2[4 * 50];
    float o1[4 * 64], o2[4 * 64];
    CHECK(c && run(c, 1, &head, s.q, o1, s1, 4) == FASA_OK && run(c, 1, &group, s.q, o2, s2, 4) == FASA_OK &&
              memcmp(s1, s2, sizeof s1) == 0 && memcmp(o1, o2, sizeof o1) == 0,
          "G = 1: per-head and per-group selection must coincide");
    fasa_decode_desc forced = {.n_fac = 50, .n_sink = 4, .n_recent = 3};
    fasa_decode_outputs out = {.selected = s1, .selected_stride = 50};
    bool ok = fasa_decode_host(c, 1, &forced, s.q, o1, &out) == FASA_OK;
    for (int r = 0; ok && r < 4; r++) {
        const int32_t *row = s1 + r * 50;
        ok &= row[0] == 0 && row[3] == 3 && row[4] == 897 && row[6] == 899;
        for (int i = 8; i < 50; i++) ok &= row[i] > row[i - 1] && row[i] >= 4 && row[i] < 897;
    }
    CHECK(ok, "forced sink/recent tokens come first, then ascending others from the window");
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    setup_free(&s);
}

/* Chunked appends, f16 sources, truncation and thread counts give the
 * same results bit for bit. */
static void test_append_paths(fasa_context *ctx)
{
    setup s;
    setup_init(&s, ctx, 8, 2, 64, 1000, 8, SYNTH_PLANTED, FASA_ROPE_NORM, 17);
    fasa_calibration *cal = NULL;
    fasa_kv_cache *a = build(&s, FASA_DTYPE_F16, 0, &cal), *b = NULL;
    fasa_kv_cache_desc kd = {.shape = s.shape, .capacity = 1008, .calibration = cal};
    size_t row = 2 * 64;
    uint16_t *kh = malloc(s.L * row * 2), *vh = malloc(s.L * row * 2);
    for (size_t i = 0; i < s.L * row; i++) {
        kh[i] = half_bits(s.k[i]);
        vh[i] = half_bits(s.v[i]);
    }
    bool ok = fasa_kv_cache_create(ctx, &kd, &b) == FASA_OK;
    /* junk first, truncated away, then the real tokens in uneven f16 chunks */
    ok = ok && fasa_kv_cache_append(b, 1, 5, s.v, s.k, FASA_DTYPE_F32) == FASA_OK && fasa_kv_cache_truncate(b, 0) == FASA_OK;
    for (uint32_t t = 0; ok && t < s.L; t += 333) {
        uint32_t n = s.L - t < 333 ? s.L - t : 333;
        ok = fasa_kv_cache_append(b, 1, n, kh + t * row, vh + t * row, FASA_DTYPE_F16) == FASA_OK;
    }
    fasa_decode_desc dd = {.n_fac = 64};
    float oa[8 * 64], ob[8 * 64];
    int32_t sa[8 * 64], sb[8 * 64];
    CHECK(ok && a && run(a, 1, &dd, s.q, oa, sa, 8) == FASA_OK && run(b, 1, &dd, s.q, ob, sb, 8) == FASA_OK &&
              memcmp(oa, ob, sizeof oa) == 0 && memcmp(sa, sb, sizeof sa) == 0,
          "chunked f16 appends after a truncate differ from one f32 append");
    float kr[2 * 64];
    CHECK(fasa_kv_cache_read(b, 1, 999, 1, kr, NULL) == FASA_OK && kr[5] == (float)ref_round_half(s.k[999 * row + 5]),
          "read back the stored fp16 value");
    /* one worker thread: the sparse path is bit-identical */
    fasa_context *one = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 1};
    fasa_calibration *cal1 = NULL;
    fasa_kv_cache *c1 = NULL;
    if (fasa_context_create(&cd, &one) == FASA_OK) {
        s.ctx = one;
        c1 = build(&s, FASA_DTYPE_F16, 0, &cal1);
        CHECK(c1 && run(c1, 1, &dd, s.q, ob, sb, 8) == FASA_OK && memcmp(oa, ob, sizeof oa) == 0,
              "1 thread vs 2 threads differ on the sparse path");
    }
    fasa_kv_cache_destroy(c1);
    fasa_calibration_destroy(cal1);
    fasa_context_destroy(one);
    free(kh);
    free(vh);
    fasa_kv_cache_destroy(a);
    fasa_kv_cache_destroy(b);
    fasa_calibration_destroy(cal);
    setup_free(&s);
}

/* The logger sees errors; the user allocator serves every allocation. */
typedef struct counting { int allocs, frees, logs; } counting;
static void *count_alloc(void *user, size_t size, size_t align)
{
    ((counting *)user)->allocs++;
    void *p = NULL;
    return posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size) == 0 ? p : NULL;
}
static void count_free(void *user, void *p)
{
    ((counting *)user)->frees++;
    free(p);
}
static void count_log(void *user, fasa_log_level level, const char *msg)
{
    (void)msg;
    if (level >= FASA_LOG_ERROR) ((counting *)user)->logs++;
}

static void test_callbacks(void)
{
    counting n = {0};
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 2,
                            .allocator = {count_alloc, count_free, &n}, .logger = {count_log, &n, FASA_LOG_DEBUG}};
    fasa_context *ctx = NULL;
    CHECK(fasa_context_create(&cd, &ctx) == FASA_OK, "context with callbacks");
    setup s;
    setup_init(&s, ctx, 4, 2, 64, 300, 8, SYNTH_PLANTED, FASA_ROPE_NORM, 18);
    fasa_calibration *cal = NULL;
    fasa_kv_cache *c = build(&s, FASA_DTYPE_F16, 0, &cal);
    float o[4 * 64];
    fasa_decode_desc bad = {.n_fac = 9999};
    CHECK(c && fasa_decode_host(c, 1, &bad, s.q, o, NULL) != FASA_OK && n.logs == 1, "logger saw %d errors", n.logs);
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
    setup_free(&s);
    CHECK(n.allocs > 0 && n.allocs == n.frees, "allocator: %d allocs, %d frees", n.allocs, n.frees);
}

int main(void)
{
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 2};
    if (fasa_context_create(&cd, &ctx) != FASA_OK) return 1;
    test_all_dims_is_oracle(ctx);
    test_budget_and_dense_layer(ctx);
    test_fac_is_dense_on_subset(ctx);
    test_layouts_agree(ctx);
    test_scaling_and_ties(ctx);
    test_gqa_and_forced(ctx);
    test_append_paths(ctx);
    fasa_context_destroy(ctx);
    test_callbacks();
    return check_done("test_invariants");
}
