/* bf16 storage and 16-bit q/o on one backend, through the public API:
 *
 *  - bad inputs: unknown dtype / io type values fail with the field named
 *    (desc.dtype, src_dtype, desc.q_type, desc.o_type), fasa_decode_host
 *    refuses 16-bit q/o, buffer sizes and the q/o overlap check follow the
 *    io element size;
 *  - NaN/Inf "as stored": a bf16 cache keeps fp32 3e38 and rejects values
 *    that round to Inf (FLT_MAX) and NaN/Inf of any source; an fp16 cache
 *    rejects bf16 sources that overflow it; nothing of a refused call is
 *    written;
 *  - conversions: every source type into every storage type, by
 *    fasa_kv_cache_append and (not scanned, so overflow is stored as Inf)
 *    fasa_kv_cache_append_buffers, read back equal to the reference's
 *    rounding (tools/ref64.c: nearest even, by value) bit for bit;
 *  - a bf16 (and an fp16) cache filled from 16-bit data decodes like an
 *    fp32 cache holding the same values: the same selections; scores and
 *    outputs bit for bit where the kernels widen before any arithmetic
 *    (cpu, opencl, cuda), within fp32 rounding on Vulkan (whose 16-bit
 *    loops pair two elements per multiply-add);
 *  - a 16-bit q/o decode of every pairing gives the fp32 decode's o
 *    rounded, on the sparse and the dense path.
 *
 * Usage: test_bf16 [cpu|vulkan|opencl|cuda]  (77 when the backend has no
 * device).  Vulkan runs with the validation layer where installed. */
#include "api_test.h"
#include "ref64.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HQ 8
#define HKV 2
#define D 16
#define L 300
#define NFAC 32
#define NQ (HQ * D)

static const fasa_model_shape shape = {2, HQ, HKV, D, FASA_ROPE_NORM};

static float bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static fasa_calibration *make_calibration(fasa_context *ctx)
{
    uint16_t dims[2 * HQ * 4];
    for (int i = 0; i < 2 * HQ; i++) /* two chunks per head, differing inside each group */
        for (int j = 0; j < 4; j++) dims[4 * i + j] = (uint16_t)(4 * (i % 4) + j);
    fasa_calibration_desc cd = {.shape = shape, .n_tip = 2, .dims = dims};
    fasa_calibration *cal = NULL;
    CHECK_STATUS(ctx, fasa_calibration_create(ctx, &cd, &cal), FASA_OK);
    return cal;
}

static fasa_kv_cache *make_cache(fasa_context *ctx, fasa_dtype dtype, const fasa_calibration *cal)
{
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = L, .dtype = dtype, .calibration = cal};
    fasa_kv_cache *cache = NULL;
    CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_OK);
    return cache;
}

/* A status and a message naming `what`. */
static void expect_fails(fasa_context *ctx, fasa_status got, fasa_status want, const char *what)
{
    const char *msg = fasa_context_last_error(ctx);
    CHECK(got == want, "%s: got %s (%s), wanted %s", what, fasa_status_string(got), msg, fasa_status_string(want));
    CHECK(strstr(msg, what) != NULL, "message '%s' does not name '%s'", msg, what);
}

static double round_to(double x, fasa_dtype t)
{
    return t == FASA_DTYPE_F16 ? ref_round_half(x) : t == FASA_DTYPE_BF16 ? ref_round_bf16(x) : (double)(float)x;
}

/* x (exactly representable in t) into element i of an array of type t. */
static void put(void *dst, size_t i, double x, fasa_dtype t)
{
    if (t == FASA_DTYPE_F16) ((uint16_t *)dst)[i] = ref_half_bits(x);
    else if (t == FASA_DTYPE_BF16) ((uint16_t *)dst)[i] = ref_bf16_bits(x);
    else ((float *)dst)[i] = (float)x;
}

static size_t size_of(fasa_dtype t) { return t == FASA_DTYPE_F32 ? 4 : 2; }

/* ------------------------------------------------------------------------ */
/* Bad inputs                                                                */
/* ------------------------------------------------------------------------ */

static void test_bad_inputs(fasa_context *ctx, const fasa_calibration *cal)
{
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = L, .calibration = cal};
    fasa_kv_cache *cache = (fasa_kv_cache *)&kd;
    kd.dtype = (fasa_dtype)3;
    expect_fails(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_ERROR_INVALID_ARGUMENT, "desc.dtype");
    CHECK(cache == NULL, "a refused create leaves *out NULL");
    kd.dtype = (fasa_dtype)-1;
    expect_fails(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_ERROR_INVALID_ARGUMENT, "desc.dtype");
    cache = make_cache(ctx, FASA_DTYPE_BF16, cal);
    if (!cache) return;
    float k[HKV * D] = {0}, v[HKV * D] = {0};
    expect_fails(ctx, fasa_kv_cache_append(cache, 1, 1, k, v, (fasa_dtype)3), FASA_ERROR_INVALID_ARGUMENT,
                 "src_dtype");
    fasa_buffer *kb = NULL, *qb = NULL, *ob = NULL;
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, sizeof k, &kb), FASA_OK);
    expect_fails(ctx, fasa_kv_cache_append_buffers(cache, 1, 1, kb, 0, kb, 0, (fasa_dtype)7),
                 FASA_ERROR_INVALID_ARGUMENT, "src_dtype");
    uint32_t len = 7;
    CHECK(fasa_kv_cache_length(cache, 1, &len) == FASA_OK && len == 0, "refused appends write nothing");
    /* a bf16 row (half the bytes) fits a buffer an fp32 row does not */
    CHECK_STATUS(ctx, fasa_kv_cache_append_buffers(cache, 1, 2, kb, 0, kb, 0, FASA_DTYPE_BF16), FASA_OK);
    expect_fails(ctx, fasa_kv_cache_append_buffers(cache, 1, 2, kb, 0, kb, 0, FASA_DTYPE_F32),
                 FASA_ERROR_INVALID_ARGUMENT, "exceeds its buffer size");

    /* q / o types */
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, NQ * 2, &qb), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, NQ * 4, &ob), FASA_OK);
    fasa_decode_desc dd = {.n_fac = NFAC, .q_type = (fasa_io_type)3};
    expect_fails(ctx, fasa_decode(cache, 1, &dd, qb, 0, ob, 0), FASA_ERROR_INVALID_ARGUMENT, "desc.q_type");
    dd.q_type = FASA_IO_BF16;
    dd.o_type = (fasa_io_type)-2;
    expect_fails(ctx, fasa_decode(cache, 1, &dd, qb, 0, ob, 0), FASA_ERROR_INVALID_ARGUMENT, "desc.o_type");
    dd.q_type = FASA_IO_F32; /* an fp32 q needs twice the bytes of qb */
    dd.o_type = FASA_IO_F32;
    expect_fails(ctx, fasa_decode(cache, 1, &dd, qb, 0, ob, 0), FASA_ERROR_INVALID_ARGUMENT, "q needs");
    dd.q_type = FASA_IO_F16;
    dd.o_type = FASA_IO_BF16; /* o in the second half of ob: fits as 16 bits only */
    expect_fails(ctx, fasa_decode(cache, 1, &dd, qb, 0, ob, NQ * 2 + 4), FASA_ERROR_INVALID_ARGUMENT, "o needs");
    /* q and o in one buffer: 16-bit halves side by side do not overlap, fp32 ones would */
    dd.q_type = dd.o_type = FASA_IO_BF16;
    CHECK_STATUS(ctx, fasa_decode(cache, 1, &dd, ob, 0, ob, NQ * 2), FASA_OK);
    dd.q_type = FASA_IO_F32;
    expect_fails(ctx, fasa_decode(cache, 1, &dd, ob, 0, ob, NQ * 2), FASA_ERROR_INVALID_ARGUMENT, "overlap");
    /* the host call takes fp32 q and o only */
    float q[NQ] = {0}, o[NQ];
    dd.q_type = FASA_IO_BF16;
    dd.o_type = FASA_IO_F32;
    expect_fails(ctx, fasa_decode_host(cache, 1, &dd, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "desc.q_type");
    dd.q_type = FASA_IO_F32;
    dd.o_type = FASA_IO_F16;
    expect_fails(ctx, fasa_decode_host(cache, 1, &dd, q, o, NULL), FASA_ERROR_INVALID_ARGUMENT, "desc.o_type");
    fasa_buffer_destroy(kb);
    fasa_buffer_destroy(qb);
    fasa_buffer_destroy(ob);
    fasa_kv_cache_destroy(cache);
}

/* ------------------------------------------------------------------------ */
/* NaN / Inf as stored                                                       */
/* ------------------------------------------------------------------------ */

/* Appends one token whose k holds x (as src type t) at (head 1, dim 5). */
static fasa_status append_one(fasa_kv_cache *cache, double x, uint32_t raw, bool use_raw, fasa_dtype t)
{
    uint8_t k[HKV * D * 4] = {0}, v[HKV * D * 4] = {0};
    size_t at = D + 5;
    if (use_raw) {
        if (t == FASA_DTYPE_F32) memcpy(k + 4 * at, &raw, 4);
        else ((uint16_t *)k)[at] = (uint16_t)raw;
    } else {
        put(k, at, x, t);
    }
    return fasa_kv_cache_append(cache, 1, 1, k, v, t);
}

static void test_nonfinite(fasa_context *ctx, const fasa_calibration *cal)
{
    fasa_kv_cache *bf = make_cache(ctx, FASA_DTYPE_BF16, cal), *h = make_cache(ctx, FASA_DTYPE_F16, cal);
    fasa_kv_cache *f = make_cache(ctx, FASA_DTYPE_F32, cal);
    if (!bf || !h || !f) goto done;
    uint32_t len = 0;
    /* a bf16 cache: fp32 3e38 is finite there, FLT_MAX rounds to Inf */
    CHECK_STATUS(ctx, append_one(bf, 3e38, 0, false, FASA_DTYPE_F32), FASA_OK);
    expect_fails(ctx, append_one(bf, 0, 0x7f7fffffu, true, FASA_DTYPE_F32), FASA_ERROR_NON_FINITE,
                 "k[token 0][head 1][dim 5]");
    CHECK(strstr(fasa_context_last_error(ctx), "bf16 cache") != NULL, "names the bf16 cache: %s",
          fasa_context_last_error(ctx));
    expect_fails(ctx, append_one(bf, 0, 0x7f7f8000u, true, FASA_DTYPE_F32), FASA_ERROR_NON_FINITE, "not finite once stored");
    CHECK_STATUS(ctx, append_one(bf, 0, 0x7f7f7fffu, true, FASA_DTYPE_F32), FASA_OK); /* rounds down to 0x7f7f */
    expect_fails(ctx, append_one(bf, 0, 0x7fc00000u, true, FASA_DTYPE_F32), FASA_ERROR_NON_FINITE, "is not finite");
    expect_fails(ctx, append_one(bf, 0, 0x7fc0u, true, FASA_DTYPE_BF16), FASA_ERROR_NON_FINITE, "[dim 5] is not finite");
    expect_fails(ctx, append_one(bf, 0, 0xff80u, true, FASA_DTYPE_BF16), FASA_ERROR_NON_FINITE, "[dim 5] is not finite");
    expect_fails(ctx, append_one(bf, 0, 0x7c00u, true, FASA_DTYPE_F16), FASA_ERROR_NON_FINITE, "[dim 5] is not finite");
    CHECK_STATUS(ctx, append_one(bf, 0, 0x7f7fu, true, FASA_DTYPE_BF16), FASA_OK); /* the largest bf16 */
    CHECK(fasa_kv_cache_length(bf, 1, &len) == FASA_OK && len == 3, "bf16 cache holds the 3 accepted tokens (%u)", len);
    /* an fp16 cache: bf16 sources that round to >= 65520 overflow it */
    expect_fails(ctx, append_one(h, 0, 0x7f7fu, true, FASA_DTYPE_BF16), FASA_ERROR_NON_FINITE, "fp16 cache");
    expect_fails(ctx, append_one(h, 65536, 0, false, FASA_DTYPE_BF16), FASA_ERROR_NON_FINITE, "fp16 cache");
    CHECK_STATUS(ctx, append_one(h, 65280, 0, false, FASA_DTYPE_BF16), FASA_OK);
    CHECK(fasa_kv_cache_length(h, 1, &len) == FASA_OK && len == 1, "fp16 cache holds 1 token (%u)", len);
    /* an fp32 cache takes every finite value of every source */
    CHECK_STATUS(ctx, append_one(f, 0, 0x7f7fffffu, true, FASA_DTYPE_F32), FASA_OK);
    CHECK_STATUS(ctx, append_one(f, 0, 0x7f7fu, true, FASA_DTYPE_BF16), FASA_OK);
    expect_fails(ctx, append_one(f, 0, 0xff81u, true, FASA_DTYPE_BF16), FASA_ERROR_NON_FINITE, "is not finite");
done:
    fasa_kv_cache_destroy(bf);
    fasa_kv_cache_destroy(h);
    fasa_kv_cache_destroy(f);
}

/* ------------------------------------------------------------------------ */
/* Conversions on append                                                     */
/* ------------------------------------------------------------------------ */

#define NCONV (HKV * D)

/* Source values of one token: ties, subnormals of either 16-bit type,
 * values near 1 and near the fp16 limit, both signs. */
static void conversion_values(double *x)
{
    const double special[] = {1.0 + 0x1p-8, 1.0 + 3 * 0x1p-8, 1.0 + 0x1p-11, 1.0 + 3 * 0x1p-11, 0x1p-24, 0x1p-25 * 3,
                              0x1p-133, 0x1p-130 * 1.5, 65504, 65280, 1.0 / 3, -2.0 / 3, 0.1, -1e-3, 12345.678, 0};
    size_t ns = sizeof special / sizeof special[0];
    for (size_t i = 0; i < NCONV; i++) {
        double s = special[i % ns];
        x[i] = (i / ns) % 2 ? -s : s;
    }
}

/* Token 0 through fasa_kv_cache_append (values the storage holds finite),
 * token 1 through fasa_kv_cache_append_buffers with k[0] the source type's
 * largest value (FLT_MAX, the largest bf16), which overflows the narrower
 * storage types to Inf; v = -k.  Read back, every element must be the
 * source value rounded to the storage type by the reference. */
static void test_conversions(fasa_context *ctx)
{
    const fasa_dtype types[3] = {FASA_DTYPE_F16, FASA_DTYPE_F32, FASA_DTYPE_BF16};
    double x[NCONV];
    conversion_values(x);
    for (int si = 0; si < 3; si++)
        for (int di = 0; di < 3; di++) {
            fasa_dtype src = types[si], dst = types[di];
            double sk[2][NCONV];
            for (size_t i = 0; i < NCONV; i++) {
                double s = round_to(x[i], src); /* the source holds this value exactly */
                if (dst == FASA_DTYPE_F16 && fabs(s) >= 65520) s = 0; /* the append would refuse it */
                sk[0][i] = sk[1][i] = s;
            }
            if (src == FASA_DTYPE_F32) sk[1][0] = FLT_MAX;
            if (src == FASA_DTYPE_BF16) sk[1][0] = bits_f(0x7f7f0000u);
            uint8_t k[2][NCONV * 4], v[2][NCONV * 4];
            for (int t = 0; t < 2; t++)
                for (size_t i = 0; i < NCONV; i++) put(k[t], i, sk[t][i], src), put(v[t], i, -sk[t][i], src);
            fasa_kv_cache_desc kd = {.shape = shape, .capacity = 4, .dtype = dst};
            fasa_kv_cache *cache = NULL;
            fasa_buffer *b = NULL;
            CHECK_STATUS(ctx, fasa_kv_cache_create(ctx, &kd, &cache), FASA_OK);
            CHECK_STATUS(ctx, fasa_buffer_create(ctx, 2 * NCONV * 4, &b), FASA_OK);
            if (!cache || !b) {
                fasa_kv_cache_destroy(cache);
                fasa_buffer_destroy(b);
                continue;
            }
            CHECK_STATUS(ctx, fasa_kv_cache_append(cache, 1, 1, k[0], v[0], src), FASA_OK);
            CHECK_STATUS(ctx, fasa_buffer_write(b, 0, k[1], NCONV * size_of(src)), FASA_OK);
            CHECK_STATUS(ctx, fasa_buffer_write(b, NCONV * 4, v[1], NCONV * size_of(src)), FASA_OK);
            CHECK_STATUS(ctx, fasa_kv_cache_append_buffers(cache, 1, 1, b, 0, b, NCONV * 4, src), FASA_OK);
            float rk[2 * NCONV], rv[2 * NCONV];
            CHECK_STATUS(ctx, fasa_kv_cache_read(cache, 1, 0, 2, rk, rv), FASA_OK);
            uint32_t bad = 0;
            for (size_t i = 0; i < 2 * NCONV; i++) {
                double s = sk[i / NCONV][i % NCONV], want_k = round_to(s, dst), want_v = round_to(-s, dst);
                bool ok = (double)rk[i] == want_k && !signbit(rk[i]) == !signbit(want_k) && (double)rv[i] == want_v &&
                          !signbit(rv[i]) == !signbit(want_v);
                if (!ok && bad++ < 3)
                    fprintf(stderr, "src %d -> storage %d, element %zu: k %.9g (want %.9g), v %.9g (want %.9g)\n",
                            (int)src, (int)dst, i, (double)rk[i], want_k, (double)rv[i], want_v);
            }
            CHECK(bad == 0, "src dtype %d -> storage %d: %u elements stored other than rounded to nearest even",
                  (int)src, (int)dst, bad);
            fasa_buffer_destroy(b);
            fasa_kv_cache_destroy(cache);
        }
}

/* ------------------------------------------------------------------------ */
/* 16-bit storage vs fp32 storage of the same values                         */
/* ------------------------------------------------------------------------ */

typedef struct run_out {
    float o[NQ], scores[HQ * L];
    int32_t sel[HQ * NFAC];
    fasa_path path;
} run_out;

/* Planted data: head h's own dims (2 chunks) carry a clear signal on a few
 * tokens, the rest is noise; all rounded to `t` so every storage type holds
 * the same values. */
static void make_data(fasa_dtype t, double *q, double *k, double *v)
{
    uint32_t s = 12345;
    for (size_t i = 0; i < (size_t)L * HKV * D; i++) {
        s = s * 1664525u + 1013904223u;
        k[i] = round_to(((int)(s >> 20) - 2048) / 1024.0 / 3.0, t);
        s = s * 1664525u + 1013904223u;
        v[i] = round_to(((int)(s >> 20) - 2048) / 1024.0 / 7.0, t);
    }
    for (size_t i = 0; i < NQ; i++) {
        s = s * 1664525u + 1013904223u;
        q[i] = round_to(((int)(s >> 20) - 2048) / 1024.0, t);
    }
}

static bool run_decode(fasa_context *ctx, fasa_kv_cache *cache, const fasa_decode_desc *dd, const float *q, run_out *r)
{
    fasa_decode_outputs out = {.selected = r->sel, .selected_stride = NFAC, .scores = r->scores, .scores_stride = L};
    fasa_status st = fasa_decode_host(cache, 1, dd, q, r->o, &out);
    CHECK_STATUS(ctx, st, FASA_OK);
    r->path = out.path;
    uint32_t rows = out.path == FASA_PATH_SPARSE ? out.n_rows : 0;
    for (uint32_t row = 0; row < rows; row++) /* GPUs emit the top-k in any order */
        for (uint32_t i = 1; i < NFAC; i++)
            for (uint32_t j = i; j > 0 && r->sel[row * NFAC + j] < r->sel[row * NFAC + j - 1]; j--) {
                int32_t tmp = r->sel[row * NFAC + j];
                r->sel[row * NFAC + j] = r->sel[row * NFAC + j - 1];
                r->sel[row * NFAC + j - 1] = tmp;
            }
    return st == FASA_OK;
}

static void compare_runs(const char *what, const run_out *a, const run_out *b, uint32_t rows, bool bitwise)
{
    CHECK(a->path == b->path, "%s: paths differ", what);
    if (a->path == FASA_PATH_SPARSE) {
        CHECK(memcmp(a->sel, b->sel, rows * NFAC * sizeof(int32_t)) == 0, "%s: selections differ", what);
        double worst = 0;
        for (uint32_t i = 0; i < rows * L; i++) {
            double m = fabs(a->scores[i]) > 1 ? fabs(a->scores[i]) : 1;
            worst = fmax(worst, fabs((double)a->scores[i] - b->scores[i]) / m);
        }
        if (bitwise) CHECK(memcmp(a->scores, b->scores, rows * L * sizeof(float)) == 0, "%s: scores differ", what);
        else CHECK(worst <= 1e-5, "%s: scores differ by %.3g", what, worst);
    }
    double num = 0, den = 0;
    for (uint32_t i = 0; i < NQ; i++) {
        num += ((double)a->o[i] - b->o[i]) * ((double)a->o[i] - b->o[i]);
        den += (double)a->o[i] * a->o[i];
    }
    if (bitwise) CHECK(memcmp(a->o, b->o, sizeof a->o) == 0, "%s: outputs differ (NMSE %.3g)", what, num / den);
    else CHECK(num / den <= 4e-9, "%s: output NMSE %.3g", what, num / den);
}

static void test_same_as_f32(fasa_context *ctx, const fasa_calibration *cal)
{
    /* Vulkan's 16-bit loops multiply-add element pairs in another order than its fp32 loops */
    bool bitwise = api_backend != FASA_BACKEND_VULKAN;
    static double q[NQ], k[L * HKV * D], v[L * HKV * D];
    static float qf[NQ], kf[L * HKV * D], vf[L * HKV * D];
    static uint16_t k16[L * HKV * D], v16[L * HKV * D];
    const fasa_dtype types[2] = {FASA_DTYPE_BF16, FASA_DTYPE_F16};
    for (int ti = 0; ti < 2; ti++) {
        fasa_dtype t = types[ti];
        make_data(t, q, k, v);
        for (size_t i = 0; i < NQ; i++) qf[i] = (float)q[i];
        for (size_t i = 0; i < (size_t)L * HKV * D; i++) {
            kf[i] = (float)k[i], vf[i] = (float)v[i];
            put(k16, i, k[i], t), put(v16, i, v[i], t);
        }
        fasa_kv_cache *c16 = make_cache(ctx, t, cal), *c32 = make_cache(ctx, FASA_DTYPE_F32, cal);
        if (!c16 || !c32) {
            fasa_kv_cache_destroy(c16);
            fasa_kv_cache_destroy(c32);
            return;
        }
        CHECK_STATUS(ctx, fasa_kv_cache_append(c16, 1, L, k16, v16, t), FASA_OK);
        CHECK_STATUS(ctx, fasa_kv_cache_append(c32, 1, L, kf, vf, FASA_DTYPE_F32), FASA_OK);
        const struct { fasa_mode mode; fasa_gqa_select gqa; const char *name; } steps[] = {
            {FASA_MODE_FASA, FASA_GQA_PER_HEAD, "fasa per head"}, {FASA_MODE_FASA, FASA_GQA_PER_GROUP, "fasa per group"},
            {FASA_MODE_ORACLE, FASA_GQA_PER_HEAD, "oracle"}, {FASA_MODE_DENSE, FASA_GQA_PER_HEAD, "dense"}};
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            fasa_decode_desc dd = {.mode = steps[i].mode, .n_fac = NFAC, .gqa_select = steps[i].gqa, .n_sink = 2,
                                   .n_recent = 3};
            static run_out a, b;
            memset(&a, 0, sizeof a);
            memset(&b, 0, sizeof b);
            char what[96];
            snprintf(what, sizeof what, "%s cache vs fp32 cache, %s", t == FASA_DTYPE_BF16 ? "bf16" : "fp16",
                     steps[i].name);
            if (run_decode(ctx, c16, &dd, qf, &a) && run_decode(ctx, c32, &dd, qf, &b))
                compare_runs(what, &a, &b, steps[i].gqa == FASA_GQA_PER_GROUP ? HKV : HQ, bitwise);
        }
        fasa_kv_cache_destroy(c16);
        fasa_kv_cache_destroy(c32);
    }
}

/* ------------------------------------------------------------------------ */
/* 16-bit q and o                                                            */
/* ------------------------------------------------------------------------ */

static void test_io(fasa_context *ctx, const fasa_calibration *cal)
{
    static double q[NQ], k[L * HKV * D], v[L * HKV * D];
    static float qf[NQ], kf[L * HKV * D], vf[L * HKV * D];
    make_data(FASA_DTYPE_BF16, q, k, v); /* q is rounded again to each q type below */
    for (size_t i = 0; i < (size_t)L * HKV * D; i++) kf[i] = (float)k[i], vf[i] = (float)v[i];
    fasa_kv_cache *cache = make_cache(ctx, FASA_DTYPE_BF16, cal);
    if (!cache) return;
    CHECK_STATUS(ctx, fasa_kv_cache_append(cache, 1, L, kf, vf, FASA_DTYPE_F32), FASA_OK);
    fasa_buffer *qb = NULL, *ob = NULL;
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, 64 + NQ * 4, &qb), FASA_OK);
    CHECK_STATUS(ctx, fasa_buffer_create(ctx, 64 + NQ * 4, &ob), FASA_OK);
    const fasa_io_type io[3] = {FASA_IO_F32, FASA_IO_F16, FASA_IO_BF16};
    for (int mode = 0; qb && ob && mode < 2; mode++)
        for (int qi = 0; qi < 3; qi++)
            for (int oi = 0; oi < 3; oi++) {
                fasa_dtype qt = qi == 0 ? FASA_DTYPE_F32 : qi == 1 ? FASA_DTYPE_F16 : FASA_DTYPE_BF16;
                fasa_dtype ot = oi == 0 ? FASA_DTYPE_F32 : oi == 1 ? FASA_DTYPE_F16 : FASA_DTYPE_BF16;
                fasa_decode_desc dd = {.mode = mode ? FASA_MODE_DENSE : FASA_MODE_FASA, .n_fac = NFAC};
                for (size_t i = 0; i < NQ; i++) qf[i] = (float)round_to(q[i], qt);
                float want[NQ];
                CHECK_STATUS(ctx, fasa_decode_host(cache, 1, &dd, qf, want, NULL), FASA_OK);
                uint8_t qbits[NQ * 4], obits[NQ * 4];
                for (size_t i = 0; i < NQ; i++) put(qbits, i, qf[i], qt);
                dd.q_type = io[qi];
                dd.o_type = io[oi];
                CHECK_STATUS(ctx, fasa_buffer_write(qb, 64, qbits, NQ * size_of(qt)), FASA_OK);
                CHECK_STATUS(ctx, fasa_decode(cache, 1, &dd, qb, 64, ob, 64), FASA_OK);
                CHECK_STATUS(ctx, fasa_buffer_read(ob, 64, obits, NQ * size_of(ot)), FASA_OK);
                uint8_t expect[NQ * 4];
                for (size_t i = 0; i < NQ; i++) put(expect, i, round_to(want[i], ot), ot);
                CHECK(memcmp(expect, obits, NQ * size_of(ot)) == 0,
                      "%s path, q type %d, o type %d: o is not the fp32 decode's o rounded", mode ? "dense" : "sparse",
                      qi, oi);
            }
    fasa_buffer_destroy(qb);
    fasa_buffer_destroy(ob);
    fasa_kv_cache_destroy(cache);
}

int main(int argc, char **argv)
{
    fasa_context *ctx = NULL;
    int status = api_test_open(argc, argv, "test_bf16", &ctx);
    if (status) return status;
    fasa_calibration *cal = make_calibration(ctx);
    test_bad_inputs(ctx, cal);
    test_nonfinite(ctx, cal);
    test_conversions(ctx);
    test_same_as_f32(ctx, cal);
    test_io(ctx, cal);
    fasa_calibration_destroy(cal);
    return api_test_close(ctx);
}
