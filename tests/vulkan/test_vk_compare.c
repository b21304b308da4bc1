/* Vulkan backend vs the CPU backend over many shapes and steps.
 *
 * usage: test_vk_compare SHAPE DTYPE DATA [L_MAX]
 *   SHAPE  0..5: (Hq,Hkv,d) = (8,8,64) (9,3,64) (32,8,128) (16,2,128) (8,2,256)
 *          and (16,1,64) (G = 16: several head batches per workgroup grid)
 *   DTYPE  f16 | f32          cache storage
 *   DATA   int | rand         int: q, k integers in [-3,3] (scores are exact
 *                             integers with many ties: selected sets must equal
 *                             the CPU's); rand: normal values (set overlap >= 0.99)
 *   L_MAX  default 70000
 *
 * The cache grows through L = 1, n_fac-1, n_fac, n_fac+1 (n_fac in 1, 7,
 * 256, 1024, 2048), 4000 and L_MAX; at each length both backends decode the
 * same query for modes fasa/dense/oracle, per-head and per-group selection,
 * with and without forced sink/recent tokens.  Checks: status and path, the
 * forced prefix, the selected sets, the TIP scores, output NMSE <= 1e-7
 * against the CPU (against an fp64 FAC over the GPU's own set when a random
 * near-tie made the sets differ), outputs poisoned with NaN beforehand, and
 * guard bytes around a buffer output.  The Vulkan context runs with the
 * validation layer; any message fails the call.  Seeds are printed. */
#include "vt_common.h"

#include <math.h>
#include <string.h>

uint16_t fasa__float_to_half(float f);
void fasa__vk_test_set_narrow(fasa_context *ctx, bool narrow);

typedef struct shape_case {
    uint32_t hq, hkv, d;
} shape_case;

static const shape_case shapes[] = {{8, 8, 64}, {9, 3, 64}, {32, 8, 128}, {16, 2, 128}, {8, 2, 256}, {16, 1, 64}};
#define N_SHAPES 6
static const uint32_t nfacs[] = {1, 7, 256, 1024, 2048};

#define GUARD 256u

typedef struct run {
    fasa_context *cpu, *vk;
    fasa_kv_cache *cc, *vc;
    fasa_model_shape s;
    fasa_dtype dtype;
    bool int_data;
    vt_rng rng;
    float *q;
    uint32_t L, L_max, n_checks;
    fasa_buffer *qbuf, *obuf;
} run;

/* ------------------------------------------------------------------------ */
/* Data                                                                      */
/* ------------------------------------------------------------------------ */

static float value(run *r, bool integer)
{
    return integer ? (float)vt_int(&r->rng, -3, 3) : vt_normal(&r->rng);
}

static void append_to(run *r, uint32_t target)
{
    uint32_t row = r->s.n_kv_heads * r->s.head_dim;
    while (r->L < target) {
        uint32_t n = target - r->L < 4096 ? target - r->L : 4096;
        float *k = malloc((size_t)n * row * 4), *v = malloc((size_t)n * row * 4);
        for (size_t i = 0; i < (size_t)n * row; i++) {
            k[i] = value(r, r->int_data);
            v[i] = vt_normal(&r->rng);
        }
        bool as_half = r->dtype == FASA_DTYPE_F16 && (r->L / 4096) % 2 == 1;
        const void *ks = k, *vs = v;
        uint16_t *kh = NULL, *vh = NULL;
        if (as_half) { /* half the appends arrive as fp16 */
            kh = malloc((size_t)n * row * 2);
            vh = malloc((size_t)n * row * 2);
            for (size_t i = 0; i < (size_t)n * row; i++) {
                kh[i] = fasa__float_to_half(k[i]);
                vh[i] = fasa__float_to_half(v[i]);
            }
            ks = kh, vs = vh;
        }
        fasa_dtype src = as_half ? FASA_DTYPE_F16 : FASA_DTYPE_F32;
        VT_OK(r->cpu, fasa_kv_cache_append(r->cc, 0, n, ks, vs, src));
        VT_OK(r->vk, fasa_kv_cache_append(r->vc, 0, n, ks, vs, src));
        /* the stored rows must be bit-identical (fp16 rounding included) */
        float *a = malloc((size_t)n * row * 4), *b = malloc((size_t)n * row * 4);
        VT_OK(r->cpu, fasa_kv_cache_read(r->cc, 0, r->L, n, a, NULL));
        VT_OK(r->vk, fasa_kv_cache_read(r->vc, 0, r->L, n, b, NULL));
        VT_CHECK(memcmp(a, b, (size_t)n * row * 4) == 0, "K rows [%u, %u) differ from the CPU's", r->L, r->L + n);
        VT_OK(r->cpu, fasa_kv_cache_read(r->cc, 0, r->L, n, NULL, a));
        VT_OK(r->vk, fasa_kv_cache_read(r->vc, 0, r->L, n, NULL, b));
        VT_CHECK(memcmp(a, b, (size_t)n * row * 4) == 0, "V rows [%u, %u) differ from the CPU's", r->L, r->L + n);
        free(a), free(b), free(k), free(v), free(kh), free(vh);
        r->L += n;
    }
}

/* ------------------------------------------------------------------------ */
/* fp64 reference FAC over a given selection (for random near-ties)          */
/* ------------------------------------------------------------------------ */

static void ref_fac(run *r, const int32_t *sel, uint32_t n_sel, const uint32_t *heads, uint32_t nh, float *o)
{
    uint32_t d = r->s.head_dim, hkv = r->s.n_kv_heads, G = r->s.n_q_heads / hkv;
    float *k = malloc((size_t)hkv * d * 4), *v = malloc((size_t)hkv * d * 4);
    double *s = malloc(n_sel * sizeof(double)), *acc = malloc(d * sizeof(double));
    for (uint32_t hi = 0; hi < nh; hi++) {
        uint32_t h = heads[hi], g = h / G;
        double m = -1e300, l = 0;
        for (uint32_t i = 0; i < n_sel; i++) {
            fasa_kv_cache_read(r->cc, 0, (uint32_t)sel[i], 1, k, NULL);
            double dot = 0;
            for (uint32_t c = 0; c < d; c++) dot += (double)r->q[h * d + c] * k[g * d + c];
            s[i] = dot / sqrt((double)d);
            if (s[i] > m) m = s[i];
        }
        memset(acc, 0, d * sizeof(double));
        for (uint32_t i = 0; i < n_sel; i++) {
            fasa_kv_cache_read(r->cc, 0, (uint32_t)sel[i], 1, NULL, v);
            double w = exp(s[i] - m);
            l += w;
            for (uint32_t c = 0; c < d; c++) acc[c] += w * v[g * d + c];
        }
        for (uint32_t c = 0; c < d; c++) o[h * d + c] = (float)(acc[c] / l);
    }
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
    memset(&x->out, 0, sizeof x->out);
    x->out.selected = x->sel;
    x->out.selected_stride = n_fac;
    x->out.scores = x->scores;
    x->out.scores_stride = r->L;
    fasa_status st = fasa_decode_host(c, 0, d, r->q, x->o, &x->out);
    VT_OK(ctx, st);
    for (size_t i = 0; st == FASA_OK && i < n_o; i++)
        if (!isfinite(x->o[i])) {
            VT_CHECK(0, "%s: o[%zu] not written (still %g)", fasa_context_backend(ctx) == FASA_BACKEND_CPU ? "cpu" : "vulkan",
                     i, (double)x->o[i]);
            break;
        }
    return st;
}

/* Compares the selections row by row; returns whether every set matches. */
static bool compare_selection(run *r, const char *tag, const outputs *a, const outputs *b, uint32_t n_fac,
                              uint32_t forced)
{
    bool all_equal = true;
    for (uint32_t row = 0; row < a->out.n_rows; row++) {
        int32_t *x = a->sel + (size_t)row * n_fac, *y = b->sel + (size_t)row * n_fac;
        VT_CHECK(memcmp(x, y, forced * 4) == 0, "%s row %u: forced tokens differ", tag, row);
        qsort(x, n_fac, 4, cmp_i32);
        qsort(y, n_fac, 4, cmp_i32);
        uint32_t common = 0;
        for (uint32_t i = 0, j = 0; i < n_fac && j < n_fac;) {
            if (x[i] == y[j]) common++, i++, j++;
            else if (x[i] < y[j]) i++;
            else j++;
        }
        bool dup = false;
        for (uint32_t i = 1; i < n_fac; i++) dup = dup || y[i] == y[i - 1] || y[i] < 0 || (uint32_t)y[i] >= r->L;
        VT_CHECK(!dup, "%s row %u: vulkan selection has duplicates or out-of-range tokens", tag, row);
        if (common != n_fac) all_equal = false;
        if (r->int_data)
            VT_CHECK(common == n_fac, "%s row %u: selected sets differ on tie data (%u of %u common)", tag, row, common,
                     n_fac);
        else
            VT_CHECK(common >= 0.99 * n_fac, "%s row %u: set overlap %u of %u < 0.99", tag, row, common, n_fac);
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
        VT_CHECK(bad == 0, "%s row %u: %u TIP scores differ (first at %u: cpu %g vulkan %g)", tag, row, bad, first,
                 (double)x[first], (double)y[first]);
    }
}

static void compare_outputs(run *r, const char *tag, const outputs *a, const outputs *b, bool same_sets,
                            const fasa_decode_desc *d, uint32_t n_fac)
{
    size_t n_o = (size_t)r->s.n_q_heads * r->s.head_dim;
    double e = vt_nmse(a->o, b->o, n_o);
    if (same_sets) {
        VT_CHECK(e <= 1e-7, "%s: output NMSE %.3g > 1e-7 vs the CPU", tag, e);
        return;
    }
    /* random near-ties: check the vulkan output against fp64 FAC over its own sets */
    float *ref = malloc(n_o * 4);
    uint32_t G = r->s.n_q_heads / r->s.n_kv_heads, heads[1024];
    for (uint32_t row = 0; row < b->out.n_rows; row++) {
        uint32_t nh = d->gqa_select == FASA_GQA_PER_GROUP ? G : 1;
        for (uint32_t i = 0; i < nh; i++) heads[i] = d->gqa_select == FASA_GQA_PER_GROUP ? row * G + i : row;
        ref_fac(r, b->sel + (size_t)row * n_fac, n_fac, heads, nh, ref);
    }
    e = vt_nmse(ref, b->o, n_o);
    VT_CHECK(e <= 1e-7, "%s: output NMSE %.3g > 1e-7 vs fp64 FAC over its own selection", tag, e);
    free(ref);
}

/* Buffer path: q at an offset, o between guard bytes, o poisoned first. */
static void check_guards(run *r, const char *tag, const fasa_decode_desc *d, const float *o_ref)
{
    size_t n_o = (size_t)r->s.n_q_heads * r->s.head_dim, bytes = n_o * 4;
    uint8_t *img = malloc(bytes + 2 * GUARD), *back = malloc(bytes + 2 * GUARD);
    memset(img, 0xa5, bytes + 2 * GUARD);
    memset(img + GUARD, 0xff, bytes);
    VT_OK(r->vk, fasa_buffer_write(r->obuf, 0, img, bytes + 2 * GUARD));
    VT_OK(r->vk, fasa_buffer_write(r->qbuf, 64, r->q, bytes));
    VT_OK(r->vk, fasa_decode(r->vc, 0, d, r->qbuf, 64, r->obuf, GUARD));
    VT_OK(r->vk, fasa_buffer_read(r->obuf, 0, back, bytes + 2 * GUARD));
    bool guards = memcmp(back, img, GUARD) == 0 && memcmp(back + GUARD + bytes, img + GUARD + bytes, GUARD) == 0;
    VT_CHECK(guards, "%s: guard bytes around the output were touched", tag);
    double e = vt_nmse(o_ref, (const float *)(back + GUARD), n_o);
    VT_CHECK(e <= 1e-10, "%s: buffer-path output differs from the host path (NMSE %.3g)", tag, e);
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
    int before = vt_failures;
    fasa_status sa = decode(r, r->cpu, r->cc, &d, &a, n_fac);
    fasa_status sb = decode(r, r->vk, r->vc, &d, &b, n_fac);
    if (sa == FASA_OK && sb == FASA_OK) {
        VT_CHECK(a.out.path == b.out.path && a.out.n_rows == b.out.n_rows && a.out.n_selected == b.out.n_selected,
                 "%s: path/rows/selected differ", tag);
        bool same = true;
        if (a.out.path == FASA_PATH_SPARSE) {
            same = compare_selection(r, tag, &a, &b, n_fac, n_sink + n_recent);
            compare_scores(r, tag, &a, &b);
        }
        compare_outputs(r, tag, &a, &b, same, &d, n_fac);
        if (guards) check_guards(r, tag, &d, b.o);
    }
    if (vt_failures > before) fprintf(stderr, "  (in %s)\n", tag);
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
        if (big && (n_fac == 1 || n_fac == 1024)) continue;
        for (int m = 0; m < 2; m++)
            for (int sel = 0; sel < 2; sel++) {
                fasa_mode mode = m ? FASA_MODE_ORACLE : FASA_MODE_FASA;
                one_config(r, mode, (fasa_gqa_select)sel, n_fac, 0, 0, sel == 0 && m == 0 && n_fac == 256);
                if (n_fac >= 7) one_config(r, mode, (fasa_gqa_select)sel, n_fac, 2, 3, false);
                if (!big && n_fac >= 2 && sel == 0) one_config(r, mode, FASA_GQA_PER_HEAD, n_fac, n_fac / 2, n_fac - n_fac / 2, false);
            }
    }
}

static fasa_kv_cache *make_cache(run *r, fasa_context *ctx, const fasa_calibration *cal)
{
    fasa_kv_cache_desc cd = {0};
    cd.shape = r->s;
    cd.capacity = r->L_max;
    cd.dtype = r->dtype;
    cd.calibration = cal;
    cd.flags = FASA_CACHE_NO_DENSE_LAYERS;
    cd.max_n_fac = 2048;
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
        fprintf(stderr, "usage: %s SHAPE(0..5) f16|f32 int|rand [L_MAX]\n", argv[0]);
        return 2;
    }
    vt_require_vulkan();
    run r;
    memset(&r, 0, sizeof r);
    int si = atoi(argv[1]);
    const shape_case *sc = &shapes[si < 0 || si >= N_SHAPES ? 0 : si];
    r.dtype = strcmp(argv[2], "f32") == 0 ? FASA_DTYPE_F32 : FASA_DTYPE_F16;
    r.int_data = strcmp(argv[3], "int") == 0;
    r.L_max = argc > 4 ? (uint32_t)atoi(argv[4]) : 70000;
    uint64_t seed = 0x5eed0000ull + (uint64_t)si * 16 + (r.dtype == FASA_DTYPE_F32) * 4 + r.int_data;
    r.rng.s = seed;
    r.s = (fasa_model_shape){1, sc->hq, sc->hkv, sc->d, si % 2 ? FASA_ROPE_NEOX : FASA_ROPE_NORM};
    printf("shape Hq=%u Hkv=%u d=%u %s, %s storage, %s data, L_max %u, seed 0x%llx\n", sc->hq, sc->hkv, sc->d,
           si % 2 ? "NEOX" : "NORM", argv[2], argv[3], r.L_max, (unsigned long long)seed);
    r.cpu = vt_context(FASA_BACKEND_CPU, 0);
    r.vk = vt_context_validated();
    /* shapes 3 and 5 run the 8-heads-per-workgroup attention kernels (GPU default) */
    fasa__vk_test_set_narrow(r.vk, !(si == 3 || si == 5));
    bool share = si >= 3; /* shapes 3, 4: dims shared per group (option b) */
    fasa_calibration *cal_c = vt_calibration(r.cpu, &r.s, sc->d / 8, share, seed ^ 0xca1);
    fasa_calibration *cal_v = vt_calibration(r.vk, &r.s, sc->d / 8, share, seed ^ 0xca1);
    r.cc = make_cache(&r, r.cpu, cal_c);
    r.vc = make_cache(&r, r.vk, cal_v);
    size_t n_o = (size_t)sc->hq * sc->d;
    VT_OK(r.vk, fasa_buffer_create(r.vk, n_o * 4 + 2 * GUARD, &r.obuf));
    VT_OK(r.vk, fasa_buffer_create(r.vk, n_o * 4 + 64, &r.qbuf));
    r.q = malloc(n_o * 4);
    const uint32_t lengths[] = {1, 6, 7, 8, 255, 256, 257, 1023, 1024, 1025, 2047, 2048, 2049, 4000};
    for (size_t i = 0; i <= sizeof lengths / sizeof lengths[0]; i++) {
        uint32_t L = i < sizeof lengths / sizeof lengths[0] ? lengths[i] : r.L_max;
        if (L > r.L_max || L <= r.L) continue;
        append_to(&r, L);
        for (size_t j = 0; j < n_o; j++) r.q[j] = value(&r, r.int_data);
        configs_at(&r);
        printf("  L=%u: %u configurations so far, %d failures\n", L, r.n_checks, vt_failures);
        fflush(stdout);
    }
    fasa_buffer_destroy(r.obuf);
    fasa_buffer_destroy(r.qbuf);
    fasa_kv_cache_destroy(r.cc);
    fasa_kv_cache_destroy(r.vc);
    fasa_calibration_destroy(cal_c);
    fasa_calibration_destroy(cal_v);
    fasa_context_destroy(r.cpu);
    fasa_context_destroy(r.vk);
    free(r.q);
    return vt_finish("test_vk_compare");
}
