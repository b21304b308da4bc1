/* CUDA backend vs the CPU backend over many shapes and steps.  Needs a
 * CUDA device: without one it prints the reason and exits 77 (SKIP).
 *
 * usage: test_cuda_compare SHAPE DTYPE DATA [L_MAX]
 *   SHAPE  0..4: (Hq,Hkv,d) = (8,8,64) (9,3,64) (32,8,128) (16,2,128) (8,2,256);
 *          odd shapes use the NEOX layout, shapes 3 and 4 group-shared dims
 *   DTYPE  f16 | f32          cache storage
 *   DATA   int | rand         int: q, k integers in [-3,3]: scores are exact
 *                             integers with many ties, so the selected sets
 *                             must equal the CPU's; rand: normal values (set
 *                             overlap >= 0.99, near-ties may swap)
 *   L_MAX  default 70000
 *
 * The cache grows through L = 1, n_fac-1, n_fac, n_fac+1 for n_fac in
 * {1, 7, 256, 1024, 2048, 8192}, 4000 and L_MAX (k/v arrive as fp32, fp16
 * and from a device buffer at an offset).  At each length both backends
 * decode the same query in modes fasa/dense/oracle, per-head and per-group
 * selection, with and without forced sink/recent tokens.  Checks: stored
 * rows bit-identical, status and path, the forced prefix, the selected
 * sets, the TIP scores, output NMSE <= 1e-7 against the CPU (against an
 * fp64 FAC over the CUDA set when random near-ties made the sets differ),
 * outputs poisoned with NaN beforehand, guard bytes around a buffer
 * output.  The seed is printed. */
#include "ct_common.h"

#include <math.h>
#include <string.h>

/* fp16 bits of a value well inside the normal range (the test's data):
 * round to nearest even; both backends receive the same bits. */
static uint16_t to_half(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs < 0x38800000u) return sign; /* below the fp16 normals: not produced here */
    uint32_t h = (abs >> 13) - (112u << 10), rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

typedef struct shape_case {
    uint32_t hq, hkv, d;
} shape_case;

static const shape_case shapes[] = {{8, 8, 64}, {9, 3, 64}, {32, 8, 128}, {16, 2, 128}, {8, 2, 256}};
static const uint32_t nfacs[] = {1, 7, 256, 1024, 2048, 8192};

#define GUARD 256u
#define MAX_N_FAC 8192u

typedef struct run {
    fasa_context *cpu, *cu;
    fasa_kv_cache *cc, *gc;      /* cpu cache, cuda cache */
    fasa_model_shape s;
    fasa_dtype dtype;
    bool int_data;
    ct_rng rng;
    float *q;
    uint32_t L, L_max, n_checks;
    fasa_buffer *qbuf, *obuf, *kvbuf;
} run;

/* ------------------------------------------------------------------------ */
/* Data                                                                      */
/* ------------------------------------------------------------------------ */

static float value(run *r, bool integer) { return integer ? (float)ct_int(&r->rng, -3, 3) : ct_normal(&r->rng); }

/* The CUDA cache takes chunk i through the host path, or (every third
 * chunk) from a device buffer at a 64-byte offset. */
static void append_both(run *r, uint32_t n, const void *k, const void *v, fasa_dtype src, uint32_t chunk)
{
    CT_OK(r->cpu, fasa_kv_cache_append(r->cc, 0, n, k, v, src));
    if (chunk % 3 != 2) {
        CT_OK(r->cu, fasa_kv_cache_append(r->gc, 0, n, k, v, src));
        return;
    }
    uint64_t bytes = (uint64_t)n * r->s.n_kv_heads * r->s.head_dim * (src == FASA_DTYPE_F32 ? 4 : 2);
    CT_OK(r->cu, fasa_buffer_write(r->kvbuf, 64, k, bytes));
    CT_OK(r->cu, fasa_buffer_write(r->kvbuf, 64 + bytes, v, bytes));
    CT_OK(r->cu, fasa_kv_cache_append_buffers(r->gc, 0, n, r->kvbuf, 64, r->kvbuf, 64 + bytes, src));
}

static void compare_rows(run *r, uint32_t n)
{
    size_t count = (size_t)n * r->s.n_kv_heads * r->s.head_dim;
    float *a = malloc(count * 4), *b = malloc(count * 4);
    for (int which = 0; which < 2; which++) {
        CT_OK(r->cpu, fasa_kv_cache_read(r->cc, 0, r->L, n, which ? NULL : a, which ? a : NULL));
        CT_OK(r->cu, fasa_kv_cache_read(r->gc, 0, r->L, n, which ? NULL : b, which ? b : NULL));
        CT_CHECK(memcmp(a, b, count * 4) == 0, "%s rows [%u, %u) differ from the CPU's", which ? "V" : "K", r->L,
                 r->L + n);
    }
    free(a), free(b);
}

static void append_to(run *r, uint32_t target)
{
    uint32_t row = r->s.n_kv_heads * r->s.head_dim;
    for (uint32_t chunk = r->L / 4096; r->L < target; chunk++) {
        uint32_t n = target - r->L < 4096 ? target - r->L : 4096;
        float *k = malloc((size_t)n * row * 4), *v = malloc((size_t)n * row * 4);
        for (size_t i = 0; i < (size_t)n * row; i++) {
            k[i] = value(r, r->int_data);
            v[i] = ct_normal(&r->rng);
        }
        bool as_half = r->dtype == FASA_DTYPE_F16 && chunk % 2 == 1; /* half the appends arrive as fp16 */
        uint16_t *kh = NULL, *vh = NULL;
        if (as_half) {
            kh = malloc((size_t)n * row * 2);
            vh = malloc((size_t)n * row * 2);
            for (size_t i = 0; i < (size_t)n * row; i++) {
                kh[i] = to_half(k[i]);
                vh[i] = to_half(v[i]);
            }
        }
        append_both(r, n, as_half ? (void *)kh : (void *)k, as_half ? (void *)vh : (void *)v,
                    as_half ? FASA_DTYPE_F16 : FASA_DTYPE_F32, chunk);
        compare_rows(r, n); /* fp16 rounding included */
        free(k), free(v), free(kh), free(vh);
        r->L += n;
    }
}

/* ------------------------------------------------------------------------ */
/* fp64 FAC over a given selection (for random near-ties)                    */
/* ------------------------------------------------------------------------ */

static void ref_fac(run *r, const int32_t *sel, uint32_t n_sel, uint32_t h, float *o)
{
    uint32_t d = r->s.head_dim, hkv = r->s.n_kv_heads, g = h / (r->s.n_q_heads / hkv);
    float *k = malloc((size_t)hkv * d * 4), *v = malloc((size_t)hkv * d * 4);
    double *s = malloc(n_sel * sizeof(double)), *acc = calloc(d, sizeof(double)), m = -1e300, l = 0;
    for (uint32_t i = 0; i < n_sel; i++) {
        fasa_kv_cache_read(r->cc, 0, (uint32_t)sel[i], 1, k, NULL);
        double dot = 0;
        for (uint32_t c = 0; c < d; c++) dot += (double)r->q[(size_t)h * d + c] * k[(size_t)g * d + c];
        s[i] = dot / sqrt((double)d);
        m = s[i] > m ? s[i] : m;
    }
    for (uint32_t i = 0; i < n_sel; i++) {
        fasa_kv_cache_read(r->cc, 0, (uint32_t)sel[i], 1, NULL, v);
        double w = exp(s[i] - m);
        l += w;
        for (uint32_t c = 0; c < d; c++) acc[c] += w * v[(size_t)g * d + c];
    }
    for (uint32_t c = 0; c < d; c++) o[(size_t)h * d + c] = (float)(acc[c] / l);
    free(k), free(v), free(s), free(acc);
}

/* ------------------------------------------------------------------------ */
/* One decode configuration                                                  */
/* ------------------------------------------------------------------------ */

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

typedef struct outputs {
    float *o, *scores;
    int32_t *sel;
    fasa_decode_outputs out;
} outputs;

static fasa_status decode(run *r, fasa_context *ctx, fasa_kv_cache *c, const fasa_decode_desc *d, outputs *x,
                          uint32_t n_fac)
{
    size_t n_o = (size_t)r->s.n_q_heads * r->s.head_dim;
    for (size_t i = 0; i < n_o; i++) x->o[i] = NAN; /* poison */
    memset(x->sel, 0xff, (size_t)r->s.n_q_heads * n_fac * 4);
    memset(&x->out, 0, sizeof x->out);
    x->out.selected = x->sel;
    x->out.selected_stride = n_fac;
    x->out.scores = x->scores;
    x->out.scores_stride = r->L;
    fasa_status st = fasa_decode_host(c, 0, d, r->q, x->o, &x->out);
    CT_OK(ctx, st);
    size_t bad = 0;
    for (size_t i = 0; st == FASA_OK && i < n_o; i++) bad += !isfinite(x->o[i]);
    CT_CHECK(bad == 0, "%s: %zu outputs not written", ctx == r->cu ? "cuda" : "cpu", bad);
    return st;
}

/* Compares the selections row by row; returns whether every set matches. */
static bool compare_selection(run *r, const char *tag, const outputs *a, const outputs *b, uint32_t n_fac,
                              uint32_t forced)
{
    bool all_equal = true;
    for (uint32_t row = 0; row < a->out.n_rows; row++) {
        int32_t *x = a->sel + (size_t)row * n_fac, *y = b->sel + (size_t)row * n_fac;
        CT_CHECK(memcmp(x, y, forced * 4) == 0, "%s row %u: forced tokens differ", tag, row);
        qsort(x, n_fac, 4, cmp_i32);
        qsort(y, n_fac, 4, cmp_i32);
        uint32_t common = 0;
        for (uint32_t i = 0, j = 0; i < n_fac && j < n_fac;) {
            if (x[i] == y[j]) common++, i++, j++;
            else if (x[i] < y[j]) i++;
            else j++;
        }
        bool bad = y[0] < 0 || (uint32_t)y[n_fac - 1] >= r->L;
        for (uint32_t i = 1; i < n_fac; i++) bad = bad || y[i] == y[i - 1];
        CT_CHECK(!bad, "%s row %u: cuda selection has duplicates or out-of-range tokens", tag, row);
        if (common != n_fac) all_equal = false;
        if (r->int_data)
            CT_CHECK(common == n_fac, "%s row %u: selected sets differ on tie data (%u of %u common)", tag, row,
                     common, n_fac);
        else
            CT_CHECK(common >= 0.99 * n_fac, "%s row %u: set overlap %u of %u < 0.99", tag, row, common, n_fac);
    }
    return all_equal;
}

static void compare_scores(run *r, const char *tag, const outputs *a, const outputs *b)
{
    for (uint32_t row = 0; row < a->out.n_rows; row++) {
        const float *x = a->scores + (size_t)row * r->L, *y = b->scores + (size_t)row * r->L;
        float mx = 1;
        for (uint32_t j = 0; j < r->L; j++) mx = fabsf(x[j]) > mx ? fabsf(x[j]) : mx;
        uint32_t bad = 0, first = 0;
        for (uint32_t j = 0; j < r->L; j++) {
            bool ok = r->int_data ? x[j] == y[j] : fabsf(x[j] - y[j]) <= 2e-5f * mx;
            if (!ok && bad++ == 0) first = j;
        }
        CT_CHECK(bad == 0, "%s row %u: %u TIP scores differ (first at %u: cpu %g cuda %g)", tag, row, bad, first,
                 (double)x[first], (double)y[first]);
    }
}

static void compare_outputs(run *r, const char *tag, const outputs *a, const outputs *b, bool same_sets,
                            const fasa_decode_desc *d, uint32_t n_fac)
{
    size_t n_o = (size_t)r->s.n_q_heads * r->s.head_dim;
    if (same_sets) {
        double e = ct_nmse(a->o, b->o, n_o);
        CT_CHECK(e <= 1e-7, "%s: output NMSE %.3g > 1e-7 vs the CPU", tag, e);
        return;
    }
    /* random near-ties: the CUDA output against fp64 FAC over its own sets */
    float *ref = malloc(n_o * 4);
    uint32_t G = r->s.n_q_heads / r->s.n_kv_heads;
    for (uint32_t h = 0; h < r->s.n_q_heads; h++) {
        uint32_t row = d->gqa_select == FASA_GQA_PER_GROUP ? h / G : h;
        ref_fac(r, b->sel + (size_t)row * n_fac, n_fac, h, ref);
    }
    double e = ct_nmse(ref, b->o, n_o);
    CT_CHECK(e <= 1e-7, "%s: output NMSE %.3g > 1e-7 vs fp64 FAC over its own selection", tag, e);
    free(ref);
}

/* Buffer path: q at an offset, o between guard bytes and poisoned first. */
static void check_guards(run *r, const char *tag, const fasa_decode_desc *d, const float *o_ref)
{
    size_t n_o = (size_t)r->s.n_q_heads * r->s.head_dim, bytes = n_o * 4;
    uint8_t *img = malloc(bytes + 2 * GUARD), *back = malloc(bytes + 2 * GUARD);
    memset(img, 0xa5, bytes + 2 * GUARD);
    memset(img + GUARD, 0xff, bytes);
    CT_OK(r->cu, fasa_buffer_write(r->obuf, 0, img, bytes + 2 * GUARD));
    CT_OK(r->cu, fasa_buffer_write(r->qbuf, 64, r->q, bytes));
    CT_OK(r->cu, fasa_decode(r->gc, 0, d, r->qbuf, 64, r->obuf, GUARD));
    CT_OK(r->cu, fasa_buffer_read(r->obuf, 0, back, bytes + 2 * GUARD));
    bool guards = memcmp(back, img, GUARD) == 0 && memcmp(back + GUARD + bytes, img + GUARD + bytes, GUARD) == 0;
    CT_CHECK(guards, "%s: guard bytes around the output were touched", tag);
    double e = ct_nmse(o_ref, (const float *)(back + GUARD), n_o);
    CT_CHECK(e <= 1e-12, "%s: buffer-path output differs from the host path (NMSE %.3g)", tag, e);
    free(img), free(back);
}

static void one_config(run *r, fasa_mode mode, fasa_gqa_select sel, uint32_t n_fac, uint32_t n_sink,
                       uint32_t n_recent, bool guards)
{
    fasa_decode_desc d = {.mode = mode, .n_fac = n_fac, .n_sink = n_sink, .n_recent = n_recent, .gqa_select = sel};
    char tag[160];
    snprintf(tag, sizeof tag, "L=%u mode=%d select=%d n_fac=%u sink=%u recent=%u", r->L, (int)mode, (int)sel, n_fac,
             n_sink, n_recent);
    size_t n_o = (size_t)r->s.n_q_heads * r->s.head_dim;
    outputs a, b;
    for (int i = 0; i < 2; i++) {
        outputs *x = i ? &b : &a;
        x->o = malloc(n_o * 4);
        x->sel = malloc((size_t)r->s.n_q_heads * n_fac * 4);
        x->scores = malloc((size_t)r->s.n_q_heads * r->L * 4);
    }
    int before = ct_failed;
    fasa_status sa = decode(r, r->cpu, r->cc, &d, &a, n_fac);
    fasa_status sb = decode(r, r->cu, r->gc, &d, &b, n_fac);
    if (sa == FASA_OK && sb == FASA_OK) {
        CT_CHECK(a.out.path == b.out.path && a.out.n_rows == b.out.n_rows && a.out.n_selected == b.out.n_selected,
                 "%s: path/rows/selected differ", tag);
        bool same = true;
        if (a.out.path == FASA_PATH_SPARSE) {
            compare_scores(r, tag, &a, &b);
            same = compare_selection(r, tag, &a, &b, n_fac, n_sink + n_recent);
        }
        compare_outputs(r, tag, &a, &b, same, &d, n_fac);
        if (guards) check_guards(r, tag, &d, b.o);
    }
    if (ct_failed > before) fprintf(stderr, "  (in %s)\n", tag);
    r->n_checks++;
    for (int i = 0; i < 2; i++) {
        outputs *x = i ? &b : &a;
        free(x->o), free(x->sel), free(x->scores);
    }
}

static void configs_at(run *r)
{
    bool big = r->L > 4000;
    one_config(r, FASA_MODE_DENSE, FASA_GQA_PER_HEAD, 256, 0, 0, true);
    for (size_t i = 0; i < sizeof nfacs / sizeof nfacs[0]; i++) {
        uint32_t n_fac = nfacs[i];
        for (int m = 0; m < 2; m++)
            for (int sel = 0; sel < 2; sel++) {
                fasa_mode mode = m ? FASA_MODE_ORACLE : FASA_MODE_FASA;
                one_config(r, mode, (fasa_gqa_select)sel, n_fac, 0, 0, sel == 0 && m == 0 && n_fac == 256);
                if (n_fac >= 7) one_config(r, mode, (fasa_gqa_select)sel, n_fac, 2, 3, false);
                if (!big && n_fac >= 2 && sel == 0) /* forced tokens fill the budget */
                    one_config(r, mode, FASA_GQA_PER_HEAD, n_fac, n_fac / 2, n_fac - n_fac / 2, false);
            }
    }
}

static fasa_kv_cache *make_cache(run *r, fasa_context *ctx, const fasa_calibration *cal)
{
    fasa_kv_cache_desc cd = {.shape = r->s, .capacity = r->L_max, .dtype = r->dtype, .calibration = cal,
                             .flags = FASA_CACHE_NO_DENSE_LAYERS, .max_n_fac = MAX_N_FAC};
    fasa_kv_cache *c = NULL;
    fasa_status st = fasa_kv_cache_create(ctx, &cd, &c);
    if (st != FASA_OK) {
        fprintf(stderr, "FAIL: cache: %s\n", fasa_context_last_error(ctx));
        exit(1);
    }
    return c;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s SHAPE(0..4) f16|f32 int|rand [L_MAX]\n", argv[0]);
        return 2;
    }
    ct_require_cuda();
    run r;
    memset(&r, 0, sizeof r);
    int si = atoi(argv[1]);
    const shape_case *sc = &shapes[si < 0 || si > 4 ? 0 : si];
    r.dtype = strcmp(argv[2], "f32") == 0 ? FASA_DTYPE_F32 : FASA_DTYPE_F16;
    r.int_data = strcmp(argv[3], "int") == 0;
    r.L_max = argc > 4 ? (uint32_t)atoi(argv[4]) : 70000;
    uint64_t seed = 0xc0da0000ull + (uint64_t)si * 16 + (r.dtype == FASA_DTYPE_F32) * 4 + r.int_data;
    r.rng.s = seed;
    r.s = (fasa_model_shape){1, sc->hq, sc->hkv, sc->d, si % 2 ? FASA_ROPE_NEOX : FASA_ROPE_NORM};
    printf("shape Hq=%u Hkv=%u d=%u %s, %s storage, %s data, L_max %u, seed 0x%llx\n", sc->hq, sc->hkv, sc->d,
           si % 2 ? "NEOX" : "NORM", argv[2], argv[3], r.L_max, (unsigned long long)seed);
    r.cpu = ct_context(FASA_BACKEND_CPU, 0);
    r.cu = ct_context(FASA_BACKEND_CUDA, 0);
    bool share = si >= 3; /* shapes 3, 4: dims shared per group (option b) */
    fasa_calibration *cal_c = ct_calibration(r.cpu, &r.s, sc->d / 8, share, seed ^ 0xca1);
    fasa_calibration *cal_g = ct_calibration(r.cu, &r.s, sc->d / 8, share, seed ^ 0xca1);
    r.cc = make_cache(&r, r.cpu, cal_c);
    r.gc = make_cache(&r, r.cu, cal_g);
    size_t n_o = (size_t)sc->hq * sc->d;
    CT_OK(r.cu, fasa_buffer_create(r.cu, n_o * 4 + 2 * GUARD, &r.obuf));
    CT_OK(r.cu, fasa_buffer_create(r.cu, n_o * 4 + 64, &r.qbuf));
    CT_OK(r.cu, fasa_buffer_create(r.cu, 64 + 2ull * 4096 * sc->hkv * sc->d * 4, &r.kvbuf));
    r.q = malloc(n_o * 4);
    const uint32_t lengths[] = {1, 6, 7, 8, 255, 256, 257, 1023, 1024, 1025, 2047, 2048, 2049, 4000, 8191, 8192, 8193};
    for (size_t i = 0; i <= sizeof lengths / sizeof lengths[0]; i++) {
        uint32_t L = i < sizeof lengths / sizeof lengths[0] ? lengths[i] : r.L_max;
        if (L > r.L_max || L <= r.L) continue;
        append_to(&r, L);
        for (size_t j = 0; j < n_o; j++) r.q[j] = value(&r, r.int_data);
        configs_at(&r);
        printf("  L=%u: %u configurations so far, %d failures\n", L, r.n_checks, ct_failed);
        fflush(stdout);
    }
    fasa_buffer_destroy(r.obuf);
    fasa_buffer_destroy(r.qbuf);
    fasa_buffer_destroy(r.kvbuf);
    fasa_kv_cache_destroy(r.cc);
    fasa_kv_cache_destroy(r.gc);
    fasa_calibration_destroy(cal_c);
    fasa_calibration_destroy(cal_g);
    fasa_context_destroy(r.cpu);
    fasa_context_destroy(r.cu);
    free(r.q);
    return ct_finish("test_cuda_compare");
}
