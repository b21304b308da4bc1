/* Conformance cases and their runner (see conform.h). */
#include "conform.h"
#include "conform_int.h"
#include "cli.h"
#include "ref64.h"
#include "fileio.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


const char *conform_path_name(fasa_path p) { return p == FASA_PATH_DENSE ? "dense" : "sparse"; }

/* ------------------------------------------------------------------------ */
/* The case matrix                                                           */
/* ------------------------------------------------------------------------ */

typedef struct shape3 { uint32_t hq, hkv, d; } shape3;

static const char *mode_name(fasa_mode m)
{
    return m == FASA_MODE_DENSE ? "dense" : m == FASA_MODE_ORACLE ? "oracle" : "fasa";
}

static const char *data_name(synth_kind k)
{
    return k == SYNTH_GAUSSIAN ? "gauss" : k == SYNTH_INTEGER ? "ties" : "planted";
}

static const char *dtype_name(fasa_dtype t)
{
    return t == FASA_DTYPE_F16 ? "f16" : t == FASA_DTYPE_BF16 ? "bf16" : "f32";
}

static const char *io_name(fasa_io_type t) { return t == FASA_IO_F16 ? "f16" : t == FASA_IO_BF16 ? "bf16" : "f32"; }

static void name_case(conform_case *c)
{
    snprintf(c->name, sizeof c->name, "hq%u-hkv%u-d%u/%s/%s/%s/%s/%s/L%u/nfac%u/ntip%u%s%s%s",
             c->hq, c->hkv, c->d, c->layout == FASA_ROPE_NORM ? "norm" : "neox",
             dtype_name(c->dtype), c->gqa == FASA_GQA_PER_HEAD ? "head" : "group",
             mode_name(c->mode), data_name(c->data), c->L, c->n_fac, c->n_tip,
             c->n_sink || c->n_recent ? "/forced" : "", c->per_head_dims ? "/headdims" : "",
             c->on_dense_layer ? "/layer0" : "");
    if (c->n_sink || c->n_recent) {
        size_t n = strlen(c->name);
        snprintf(c->name + n, sizeof c->name - n, "-s%u-r%u", c->n_sink, c->n_recent);
    }
    if (c->q_type || c->o_type) {
        size_t n = strlen(c->name);
        snprintf(c->name + n, sizeof c->name - n, "/io-q%s-o%s", io_name(c->q_type), io_name(c->o_type));
    }
}

typedef struct case_list {
    conform_case *v;
    uint32_t n, max;
    uint64_t seed;
} case_list;

static conform_case *add(case_list *l, shape3 s, fasa_rope_layout layout, fasa_dtype dtype,
                         fasa_gqa_select gqa, fasa_mode mode, synth_kind data, uint32_t L,
                         uint32_t n_fac)
{
    static conform_case dummy;
    if (l->n >= l->max) return &dummy;
    conform_case *c = &l->v[l->n++];
    *c = (conform_case){.hq = s.hq, .hkv = s.hkv, .d = s.d, .layout = layout, .dtype = dtype,
                        .gqa = gqa, .mode = mode, .data = data, .L = L, .n_fac = n_fac,
                        .n_tip = s.d / 8, .n_appends = 1 + (L > 2 ? (uint32_t)(l->seed % 3) : 0),
                        .seed = l->seed};
    l->seed = l->seed * 6364136223846793005ull + 1442695040888963407ull;
    return c;
}

/* FASA-M copies of the sparse cases, alternating the fetch strategies. */
static void add_offload_copies(case_list *l, uint32_t n_base)
{
    uint32_t n_row_cache = 0;
    for (uint32_t i = 0; i < n_base && l->n < l->max; i++) {
        const conform_case *c = &l->v[i];
        bool sparse = c->mode != FASA_MODE_DENSE && !c->on_dense_layer && c->L > c->n_fac;
        if (!sparse) continue;
        conform_case *m = &l->v[l->n++];
        *m = *c;
        m->placement = FASA_PLACEMENT_OFFLOAD;
        m->fetch = i % 2 ? FASA_FETCH_STAGED : FASA_FETCH_DIRECT;
        /* room for two steps' rows of a KV group: n_fac per selection row */
        uint32_t rows_per_group = c->gqa == FASA_GQA_PER_GROUP ? 1 : c->hq / c->hkv;
        m->row_cache_rows = i % 4 == 1 ? 2 * rows_per_group * c->n_fac : 0;
        if (m->row_cache_rows > m->L) m->row_cache_rows = m->L;
        m->prefetch = m->row_cache_rows && n_row_cache++ % 2 == 1; /* every other row-cache case */
        size_t len = strlen(m->name);
        snprintf(m->name + len, sizeof m->name - len, "/fasa-m-%s%s%s", m->fetch == FASA_FETCH_STAGED ? "staged" : "direct",
                 m->row_cache_rows ? "-rowcache" : "", m->prefetch ? "-prefetch" : "");
    }
}

/* External-KV copies of the FASA-C and dense cases up to a few thousand
 * tokens, the four engine layouts in turn. */
static void add_external_copies(case_list *l, uint32_t n_base)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_base && l->n < l->max; i++) {
        if (l->v[i].L > 4107) continue;
        conform_case *x = &l->v[l->n++];
        *x = l->v[i];
        x->external = CONFORM_EXT_TOKEN + n++ % (CONFORM_EXT_COUNT - 1);
        size_t len = strlen(x->name);
        snprintf(x->name + len, sizeof x->name - len, "/%s", conform_ext_name(x->external));
    }
}

/* bf16 storage (every shape and selection, the layouts alternating by
 * shape: the L edge cases, oracle, dense and tie data; a large budget,
 * forced tokens and per-head dims) and 16-bit q/o over each storage type.
 * Added after the older cases, so their seeds stay as they were. */
static void add_bf16_cases(case_list *l, const shape3 *shapes, size_t n_shapes, uint32_t n_fac)
{
    const fasa_dtype bf = FASA_DTYPE_BF16;
    for (size_t si = 0; si < n_shapes; si++)
        for (int gq = 0; gq < 2; gq++) {
            fasa_rope_layout layout = (fasa_rope_layout)((si + (size_t)gq) % 2);
            fasa_gqa_select gqa = (fasa_gqa_select)gq;
            const uint32_t Ls[] = {1, n_fac - 1, n_fac, n_fac + 1, 1000};
            for (size_t i = 0; i < 5; i++) add(l, shapes[si], layout, bf, gqa, FASA_MODE_FASA, SYNTH_PLANTED, Ls[i], n_fac);
            add(l, shapes[si], layout, bf, gqa, FASA_MODE_ORACLE, SYNTH_GAUSSIAN, 1000, n_fac);
            add(l, shapes[si], layout, bf, gqa, FASA_MODE_DENSE, SYNTH_GAUSSIAN, 1000, n_fac);
            add(l, shapes[si], layout, bf, gqa, FASA_MODE_FASA, SYNTH_INTEGER, 1000, 100);
        }
    shape3 mid = {16, 4, 128};
    add(l, mid, FASA_ROPE_NORM, bf, FASA_GQA_PER_HEAD, FASA_MODE_FASA, SYNTH_PLANTED, 4096 + 11, 1024);
    add(l, mid, FASA_ROPE_NEOX, bf, FASA_GQA_PER_GROUP, FASA_MODE_FASA, SYNTH_INTEGER, 4096, 2048);
    for (int gq = 0; gq < 2; gq++) {
        conform_case *c = add(l, mid, FASA_ROPE_NORM, bf, (fasa_gqa_select)gq, FASA_MODE_FASA, SYNTH_PLANTED, 3000, 256);
        c->n_sink = 4;
        c->n_recent = 16;
        add(l, mid, FASA_ROPE_NEOX, bf, (fasa_gqa_select)gq, FASA_MODE_FASA, SYNTH_PLANTED, 2000, 128)->per_head_dims = true;
        add(l, mid, FASA_ROPE_NORM, bf, (fasa_gqa_select)gq, FASA_MODE_FASA, SYNTH_PLANTED, 2000, 128)->on_dense_layer = true;
    }
    /* q and o in 16 bits: every pairing with fp32 and each other, over each
     * storage type, a sparse step per head and a dense one per group */
    const fasa_io_type io[][2] = {{FASA_IO_BF16, FASA_IO_BF16}, {FASA_IO_F16, FASA_IO_F16}, {FASA_IO_BF16, FASA_IO_F32},
                                  {FASA_IO_F32, FASA_IO_BF16}, {FASA_IO_F16, FASA_IO_BF16}, {FASA_IO_F32, FASA_IO_F16}};
    const fasa_dtype storage[] = {FASA_DTYPE_F16, FASA_DTYPE_F32, FASA_DTYPE_BF16};
    for (size_t i = 0; i < sizeof io / sizeof io[0]; i++)
        for (size_t j = 0; j < 3; j++) {
            shape3 s = shapes[(i + j) % n_shapes];
            conform_case *c = add(l, s, (fasa_rope_layout)(j % 2), storage[j], FASA_GQA_PER_HEAD, FASA_MODE_FASA,
                                  SYNTH_PLANTED, 1000, n_fac);
            c->q_type = io[i][0], c->o_type = io[i][1];
            c = add(l, s, (fasa_rope_layout)(i % 2), storage[j], FASA_GQA_PER_GROUP, FASA_MODE_DENSE, SYNTH_GAUSSIAN,
                    300, n_fac);
            c->q_type = io[i][0], c->o_type = io[i][1];
        }
}

/* Keeps the cases of the requested variants, in order. */
static uint32_t keep_variants(conform_case *cases, uint32_t n, const char *variants)
{
    uint32_t w = 0;
    for (uint32_t i = 0; i < n; i++) {
        const conform_case *c = &cases[i];
        const char *v = c->pool ? "paged" : c->external ? "external" : c->placement == FASA_PLACEMENT_OFFLOAD ? "fasa-m"
                      : c->mode == FASA_MODE_DENSE ? "dense" : "fasa";
        if (cli_list_has(variants, v)) cases[w++] = *c;
    }
    return w;
}

uint32_t conform_cases(conform_case *cases, uint32_t max, bool quick, const char *variants)
{
    case_list l = {cases, 0, max, 20261128};
    const shape3 shapes[] = {{8, 8, 64}, {9, 3, 64}, {16, 4, 128}, {16, 2, 128}, {8, 2, 256}};
    const uint32_t n_fac = 64;
    /* every shape x layout x dtype x GQA mode: the L edge cases, then each
     * mode and data kind at a mid-size L */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int lay = 0; lay < 2; lay++)
            for (int dt = 0; dt < 2; dt++)
                for (int gq = 0; gq < 2; gq++) {
                    shape3 s = shapes[si];
                    fasa_rope_layout layout = (fasa_rope_layout)lay;
                    fasa_dtype dtype = (fasa_dtype)dt;
                    fasa_gqa_select gqa = (fasa_gqa_select)gq;
                    const uint32_t Ls[] = {1, n_fac - 1, n_fac, n_fac + 1, 1000};
                    for (size_t i = 0; i < 5; i++)
                        add(&l, s, layout, dtype, gqa, FASA_MODE_FASA, SYNTH_PLANTED, Ls[i], n_fac);
                    add(&l, s, layout, dtype, gqa, FASA_MODE_ORACLE, SYNTH_GAUSSIAN, 1000, n_fac);
                    add(&l, s, layout, dtype, gqa, FASA_MODE_DENSE, SYNTH_GAUSSIAN, 1000, n_fac);
                    add(&l, s, layout, dtype, gqa, FASA_MODE_FASA, SYNTH_INTEGER, 1000, 100);
                }
    shape3 mid = {16, 4, 128}, llama = {32, 8, 128};
    /* budgets around the top-k's interesting sizes */
    const uint32_t budgets[] = {1, 7, 100, 256, 1023, 1024, 1025, 2047, 2048};
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
        add(&l, mid, FASA_ROPE_NORM, FASA_DTYPE_F16, FASA_GQA_PER_HEAD, FASA_MODE_FASA, SYNTH_PLANTED,
            4096 + 11, budgets[i]);
        add(&l, mid, FASA_ROPE_NEOX, FASA_DTYPE_F32, FASA_GQA_PER_GROUP, FASA_MODE_FASA, SYNTH_INTEGER,
            4096, budgets[i]);
    }
    /* forced sink / recent tokens, including a budget made only of them */
    const uint32_t forced[][2] = {{4, 0}, {0, 16}, {4, 16}, {100, 156}};
    for (size_t i = 0; i < 4; i++)
        for (int gq = 0; gq < 2; gq++) {
            conform_case *c = add(&l, mid, FASA_ROPE_NORM, FASA_DTYPE_F16, (fasa_gqa_select)gq,
                                  FASA_MODE_FASA, SYNTH_PLANTED, 3000, 256);
            c->n_sink = forced[i][0];
            c->n_recent = forced[i][1];
        }
    /* per-head dims (u_g > 2 n_tip), extreme n_tip, the dense layer */
    for (int gq = 0; gq < 2; gq++) {
        add(&l, mid, FASA_ROPE_NEOX, FASA_DTYPE_F16, (fasa_gqa_select)gq, FASA_MODE_FASA, SYNTH_PLANTED,
            2000, 128)->per_head_dims = true;
        add(&l, mid, FASA_ROPE_NORM, FASA_DTYPE_F32, (fasa_gqa_select)gq, FASA_MODE_FASA, SYNTH_PLANTED,
            2000, 128)->n_tip = 1;
        add(&l, mid, FASA_ROPE_NORM, FASA_DTYPE_F16, (fasa_gqa_select)gq, FASA_MODE_FASA, SYNTH_GAUSSIAN,
            2000, 128)->n_tip = 64;
        add(&l, mid, FASA_ROPE_NORM, FASA_DTYPE_F16, (fasa_gqa_select)gq, FASA_MODE_FASA, SYNTH_PLANTED,
            2000, 128)->on_dense_layer = true;
    }
    /* long contexts in the Llama shape */
    if (!quick)
        for (int gq = 0; gq < 2; gq++)
            add(&l, llama, FASA_ROPE_NORM, FASA_DTYPE_F16, (fasa_gqa_select)gq, FASA_MODE_FASA,
                SYNTH_PLANTED, 65536, 256);
    add_bf16_cases(&l, shapes, sizeof shapes / sizeof shapes[0], n_fac);
    for (uint32_t i = 0; i < l.n; i++) name_case(&cases[i]);
    uint32_t n_base = l.n;
    add_offload_copies(&l, n_base);
    add_external_copies(&l, n_base);
    /* paged / shared pools and batched decode (conform_paged.c), last: the seeds above stay */
    l.n = conform_pool_cases(cases, l.n, max, quick);
    return keep_variants(cases, l.n, variants);
}

/* ------------------------------------------------------------------------ */
/* Running a case                                                            */
/* ------------------------------------------------------------------------ */


static void free_data(case_data *cd)
{
    free(cd->q); free(cd->k); free(cd->v);
    free(cd->qd); free(cd->kd); free(cd->vd);
    free(cd->dims); free(cd->o_buf); free(cd->score_buf); free(cd->sel_buf); free(cd->o_io);
}

static float poison_float(void)
{
    uint32_t u = POISON_BITS;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static bool is_poison(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u == POISON_BITS;
}

/* The value the cache stores. */
static double stored(float x, fasa_dtype dtype)
{
    return dtype == FASA_DTYPE_F16 ? ref_round_half(x) : dtype == FASA_DTYPE_BF16 ? ref_round_bf16(x) : (double)x;
}

/* The value a q or o element holds in an io type. */
static double io_value(double x, fasa_io_type t)
{
    return t == FASA_IO_F16 ? ref_round_half(x) : t == FASA_IO_BF16 ? ref_round_bf16(x) : (double)(float)x;
}

/* Bits of an io element holding x (exactly representable in t), into dst[i]. */
static void io_store(void *dst, size_t i, double x, fasa_io_type t)
{
    if (t == FASA_IO_F16) ((uint16_t *)dst)[i] = ref_half_bits(x);
    else if (t == FASA_IO_BF16) ((uint16_t *)dst)[i] = ref_bf16_bits(x);
    else ((float *)dst)[i] = (float)x;
}

static double io_load(const void *src, size_t i, fasa_io_type t)
{
    if (t == FASA_IO_F32) return ((const float *)src)[i];
    uint16_t b = ((const uint16_t *)src)[i];
    if (t == FASA_IO_BF16) {
        uint32_t u = (uint32_t)b << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    /* fp16 by its fields */
    int e = (b >> 10) & 0x1f, m = b & 0x3ff;
    double v = e == 0x1f ? (m ? NAN : INFINITY) : e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return b & 0x8000 ? -v : v;
}

static size_t io_size(fasa_io_type t) { return t == FASA_IO_F32 ? 4 : 2; }

static size_t rows_of(const conform_case *c) { return c->gqa == FASA_GQA_PER_GROUP ? c->hkv : c->hq; }

static synth_desc synth_of(const conform_case *c)
{
    return (synth_desc){.n_q_heads = c->hq, .n_kv_heads = c->hkv, .head_dim = c->d,
                        .layout = c->layout, .n_tip = c->n_tip, .per_head_dims = c->per_head_dims,
                        .kind = c->data, .seed = c->seed};
}

static bool make_data(const conform_case *c, const conform_data *given, case_data *cd)
{
    size_t nq = (size_t)c->hq * c->d, nkv = (size_t)c->L * c->hkv * c->d;
    size_t n_rows = rows_of(c), nd = (size_t)c->hq * 2 * c->n_tip;
    memset(cd, 0, sizeof *cd);
    cd->q = malloc(nq * sizeof(float));
    cd->k = malloc(nkv * sizeof(float));
    cd->v = malloc(nkv * sizeof(float));
    cd->qd = malloc(nq * sizeof(double));
    cd->kd = malloc(nkv * sizeof(double));
    cd->vd = malloc(nkv * sizeof(double));
    cd->dims = malloc(nd * sizeof(uint16_t));
    cd->o_buf = malloc((nq + 2 * GUARD) * sizeof(float));
    cd->score_buf = malloc((n_rows * c->L + 2 * GUARD) * sizeof(float));
    cd->sel_buf = malloc((n_rows * c->n_fac + 2 * GUARD) * sizeof(int32_t));
    if (!cd->q || !cd->k || !cd->v || !cd->qd || !cd->kd || !cd->vd || !cd->dims || !cd->o_buf ||
        !cd->score_buf || !cd->sel_buf)
        return false;
    if (given) {
        memcpy(cd->q, given->q, nq * sizeof(float));
        memcpy(cd->k, given->k, nkv * sizeof(float));
        memcpy(cd->v, given->v, nkv * sizeof(float));
        memcpy(cd->dims, given->dims, nd * sizeof(uint16_t));
    } else {
        synth_desc sd = synth_of(c);
        synth_keys(&sd, 0, c->L, cd->k, cd->v);
        synth_query(&sd, c->L - 1, 0, cd->q);
        synth_planted_dims(&sd, cd->dims);
    }
    /* q as its io type holds it (the checked fp32 decode gets the same values) */
    for (size_t i = 0; i < nq; i++) cd->q[i] = (float)(cd->qd[i] = io_value(cd->q[i], c->q_type));
    for (size_t i = 0; i < nkv; i++) {
        cd->kd[i] = stored(cd->k[i], c->dtype);
        cd->vd[i] = stored(cd->v[i], c->dtype);
    }
    float p = poison_float();
    for (size_t i = 0; i < nq + 2 * GUARD; i++) cd->o_buf[i] = p;
    for (size_t i = 0; i < n_rows * c->L + 2 * GUARD; i++) cd->score_buf[i] = p;
    for (size_t i = 0; i < n_rows * c->n_fac + 2 * GUARD; i++) cd->sel_buf[i] = POISON_INDEX;
    return true;
}

bool conform__fail(conform_result *r, const char *fmt, ...)
{
    if (r->pass) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->why, sizeof r->why, fmt, ap);
        va_end(ap);
    }
    r->pass = false;
    return true;
}

/* A prefetch with another query (the heads' rows rotated by one) before the
 * decode: it moves rows in and out of the row cache but must not change
 * what the decode computes. */
static fasa_status prefetch_other_query(fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *dd,
                                        const conform_case *c, const float *q)
{
    size_t nq = (size_t)c->hq * c->d;
    float *other = malloc(nq * sizeof(float));
    if (!other) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    for (size_t i = 0; i < nq; i++) other[i] = q[(i + c->d) % nq];
    fasa_decode_desc pd = *dd;
    pd.flags = FASA_DECODE_PREFETCH;
    fasa_status st = fasa_decode_host(cache, layer, &pd, other, NULL, NULL);
    free(other);
    return st;
}

/* q/o cases: the same step again through fasa_decode with q and o in
 * their io types, in buffers at offset IO_GUARD whose other bytes are
 * poisoned; cd->o_io receives the whole o buffer. */
static fasa_status decode_io(fasa_context *ctx, fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *dd,
                             const conform_case *c, case_data *cd)
{
    size_t n = (size_t)c->hq * c->d, qb = n * io_size(c->q_type), ob = n * io_size(c->o_type);
    size_t o_total = 2 * IO_GUARD + ob;
    uint8_t *q_img = malloc(IO_GUARD + qb);
    cd->o_io = malloc(o_total);
    if (!q_img || !cd->o_io) {
        free(q_img);
        return FASA_ERROR_OUT_OF_HOST_MEMORY;
    }
    memset(q_img, IO_POISON, IO_GUARD);
    for (size_t i = 0; i < n; i++) io_store(q_img + IO_GUARD, i, cd->qd[i], c->q_type);
    memset(cd->o_io, IO_POISON, o_total);
    fasa_buffer *q = NULL, *o = NULL;
    fasa_status st = fasa_buffer_create(ctx, IO_GUARD + qb, &q);
    if (st == FASA_OK) st = fasa_buffer_create(ctx, o_total, &o);
    if (st == FASA_OK) st = fasa_buffer_write(q, 0, q_img, IO_GUARD + qb);
    if (st == FASA_OK) st = fasa_buffer_write(o, 0, cd->o_io, o_total);
    fasa_decode_desc d = *dd;
    d.q_type = c->q_type;
    d.o_type = c->o_type;
    if (st == FASA_OK) st = fasa_decode(cache, layer, &d, q, IO_GUARD, o, IO_GUARD);
    if (st == FASA_OK) st = fasa_buffer_read(o, 0, cd->o_io, o_total);
    fasa_buffer_destroy(q);
    fasa_buffer_destroy(o);
    free(q_img);
    return st;
}

/* Builds calibration + cache, appends, decodes with outputs. */
static fasa_status run_library(fasa_context *ctx, const conform_case *c, case_data *cd,
                               fasa_decode_outputs *out, conform_result *r)
{
    fasa_model_shape shape = {2, c->hq, c->hkv, c->d, c->layout};
    uint16_t *dims2 = malloc((size_t)2 * c->hq * 2 * c->n_tip * sizeof(uint16_t));
    if (!dims2) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    memcpy(dims2, cd->dims, (size_t)c->hq * 2 * c->n_tip * sizeof(uint16_t));
    memcpy(dims2 + (size_t)c->hq * 2 * c->n_tip, cd->dims, (size_t)c->hq * 2 * c->n_tip * sizeof(uint16_t));
    fasa_calibration_desc cal_desc = {.shape = shape, .n_tip = c->n_tip, .dims = dims2};
    fasa_calibration *cal = NULL;
    fasa_kv_cache *cache = NULL;
    fasa_status st = fasa_calibration_create(ctx, &cal_desc, &cal);
    free(dims2);
    uint32_t max_n_fac = c->n_fac > 2048 ? c->n_fac : 0;
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = c->L, .dtype = c->dtype,
                             .calibration = cal, .max_n_fac = max_n_fac, .placement = c->placement,
                             .fetch = c->fetch, .row_cache_rows = c->row_cache_rows};
    conform_engine *engine = NULL; /* external cases: the engine's K/V */
    if (st == FASA_OK && c->external) st = conform_ext_create(ctx, c, &kd, &engine);
    if (st == FASA_OK) st = fasa_kv_cache_create(ctx, &kd, &cache);
    uint32_t layer = c->on_dense_layer ? 0 : 1;
    size_t row = (size_t)c->hkv * c->d;
    if (st == FASA_OK && engine) st = conform_ext_fill(engine, cache, layer, c, cd->k, cd->v);
    for (uint32_t a = 0, done = 0; st == FASA_OK && !engine && a < c->n_appends; a++) {
        uint32_t n = a + 1 == c->n_appends ? c->L - done : c->L / c->n_appends;
        if (n) st = fasa_kv_cache_append(cache, layer, n, cd->k + done * row, cd->v + done * row, FASA_DTYPE_F32);
        done += n;
    }
    fasa_decode_desc dd = {.mode = c->mode, .n_fac = c->n_fac, .n_sink = c->n_sink,
                           .n_recent = c->n_recent, .gqa_select = c->gqa};
    if (st == FASA_OK && c->prefetch) st = prefetch_other_query(cache, layer, &dd, c, cd->q);
    double t0 = cli_now();
    if (st == FASA_OK) st = fasa_decode_host(cache, layer, &dd, cd->q, cd->o_buf + GUARD, out);
    r->seconds = cli_now() - t0;
    if (st == FASA_OK && (c->q_type || c->o_type)) st = decode_io(ctx, cache, layer, &dd, c, cd);
    if (st != FASA_OK) conform__fail(r, "library call failed: %s: %s", fasa_status_string(st), fasa_context_last_error(ctx));
    fasa_kv_cache_destroy(cache);
    conform_ext_destroy(engine);
    fasa_calibration_destroy(cal);
    return st;
}

static void check_guards(const conform_case *c, const case_data *cd, conform_result *r)
{
    size_t nq = (size_t)c->hq * c->d, n_rows = rows_of(c);
    for (size_t i = 0; i < GUARD; i++) {
        if (!is_poison(cd->o_buf[i]) || !is_poison(cd->o_buf[GUARD + nq + i]))
            conform__fail(r, "output guard overwritten (element %zu of a guard)", i);
        if (!is_poison(cd->score_buf[i]) || !is_poison(cd->score_buf[GUARD + n_rows * c->L + i]))
            conform__fail(r, "scores guard overwritten");
        if (cd->sel_buf[i] != POISON_INDEX || cd->sel_buf[GUARD + n_rows * c->n_fac + i] != POISON_INDEX)
            conform__fail(r, "selection guard overwritten");
    }
    for (size_t i = 0; i < nq; i++)
        if (!isfinite(cd->o_buf[GUARD + i])) {
            conform__fail(r, "o[%zu] is not finite (never written or NaN)", i);
            break;
        }
}

static void check_scores(const ref_step *rs, const float *got, const double *want, const double *mag,
                         conform_result *r)
{
    uint32_t rows = ref_rows(rs);
    for (size_t i = 0; i < (size_t)rows * rs->L; i++) {
        double err = fabs((double)got[i] - want[i]), rel = err / (mag[i] > 1e-30 ? mag[i] : 1e-30);
        if (rel > r->score_err) r->score_err = rel;
        if (!(rel <= CONFORM_SCORE_REL)) {
            conform__fail(r, "score row %zu token %zu: got %.9g, fp64 %.9g (err %.3g of sum|qk| %.3g)",
                 i / rs->L, i % rs->L, (double)got[i], want[i], err, mag[i]);
            return;
        }
    }
}

/* The backend's set must equal the reference's except for swaps whose
 * reference scores both sit within the near-tie band of the threshold. */
static void check_selection(const ref_step *rs, const int32_t *got, const int32_t *want,
                            const double *scores, const double *mag, bool exact, conform_result *r)
{
    uint32_t L = rs->L, k = rs->n_fac;
    uint8_t *in_got = calloc(L, 1), *in_want = calloc(L, 1);
    for (uint32_t row = 0; row < ref_rows(rs) && r->pass; row++) {
        const int32_t *g = got + (size_t)row * k, *w = want + (size_t)row * k;
        memset(in_got, 0, L);
        memset(in_want, 0, L);
        for (uint32_t i = 0; i < k && r->pass; i++) {
            if (g[i] < 0 || (uint32_t)g[i] >= L) conform__fail(r, "row %u entry %u: index %d out of range", row, i, g[i]);
            else if (in_got[g[i]]++) conform__fail(r, "row %u: index %d selected twice", row, g[i]);
            in_want[w[i]] = 1;
        }
        if (!r->pass) break;
        /* the reference threshold and its magnitude */
        double tau = INFINITY, tau_mag = 0;
        for (uint32_t i = 0; i < k; i++) {
            uint32_t j = (uint32_t)w[i];
            bool forced = j < rs->n_sink || j >= L - rs->n_recent;
            if (!forced && scores[(size_t)row * L + j] < tau) {
                tau = scores[(size_t)row * L + j];
                tau_mag = mag[(size_t)row * L + j];
            }
        }
        for (uint32_t j = 0; j < L && r->pass; j++) {
            if (in_got[j] == in_want[j]) continue;
            bool forced = j < rs->n_sink || j >= L - rs->n_recent;
            double s = scores[(size_t)row * L + j];
            /* a swap is a near-tie only if fp64 tells the two apart by less than
             * fp32 rounding can; exact fp64 ties must follow the lowest-index rule */
            double band = exact ? 0.0 : CONFORM_TIE_REL * (mag[(size_t)row * L + j] + tau_mag);
            if (s == tau && !forced)
                conform__fail(r, "row %u: token %u breaks a tie at score %.9g against the lowest-index rule", row, j, s);
            else if (forced || !(fabs(s - tau) <= band))
                conform__fail(r, "row %u: token %u %s (fp64 score %.9g, threshold %.9g)", row, j,
                     in_got[j] ? "selected but not in the reference set" : "missing from the selection",
                     s, tau);
            else r->near_ties++;
        }
    }
    free(in_got);
    free(in_want);
}

/* q/o cases: o of the io decode must be the checked fp32 o rounded to its
 * type (nearest even, by the reference's rounding), element for element,
 * with the guards around it untouched; and within the 16-bit bound of the
 * fp64 output. */
static void check_io_output(const conform_case *c, const ref_step *rs, const int32_t *sel, const case_data *cd,
                            conform_result *r)
{
    size_t n = (size_t)c->hq * c->d, ob = n * io_size(c->o_type);
    for (size_t i = 0; i < IO_GUARD; i++)
        if (cd->o_io[i] != IO_POISON || cd->o_io[IO_GUARD + ob + i] != IO_POISON) {
            conform__fail(r, "io decode: a guard byte around o was overwritten");
            return;
        }
    const uint8_t *o = cd->o_io + IO_GUARD;
    for (size_t i = 0; i < n; i++) {
        float want = (float)io_value(cd->o_buf[GUARD + i], c->o_type), got = (float)io_load(o, i, c->o_type);
        if (memcmp(&want, &got, 4) != 0) {
            conform__fail(r, "io decode: o[%zu] = %.9g, but the fp32 decode's %.9g rounds to %.9g", i, (double)got,
                 (double)cd->o_buf[GUARD + i], (double)want);
            return;
        }
    }
    double *want = malloc(n * sizeof(double)), num = 0, den = 0;
    if (!want) {
        conform__fail(r, "out of host memory");
        return;
    }
    ref_attend(rs, sel, rs->n_fac, want);
    for (size_t i = 0; i < n; i++) {
        double e = io_load(o, i, c->o_type) - want[i];
        num += e * e;
        den += want[i] * want[i];
    }
    double nmse = r->io_nmse = den > 0 ? num / den : num;
    double bound = c->o_type == FASA_IO_BF16 ? CONFORM_NMSE_BF16_OUT : c->o_type == FASA_IO_F16 ? CONFORM_NMSE_F16_OUT
                                                                                             : CONFORM_NMSE_MAX;
    if (!(nmse <= bound)) conform__fail(r, "io decode: %s o NMSE %.3g above %.3g", io_name(c->o_type), nmse, bound);
    free(want);
}

static void check_output(const ref_step *rs, const int32_t *sel, const float *o, conform_result *r)
{
    size_t n = (size_t)rs->n_q_heads * rs->head_dim;
    double *want = malloc(n * sizeof(double)), num = 0, den = 0;
    ref_attend(rs, sel, rs->n_fac, want);
    for (size_t i = 0; i < n; i++) {
        double e = (double)o[i] - want[i];
        num += e * e;
        den += want[i] * want[i];
        if (fabs(e) > r->max_abs_err) r->max_abs_err = fabs(e);
    }
    r->nmse = den > 0 ? num / den : num;
    if (!(r->nmse <= CONFORM_NMSE_MAX)) conform__fail(r, "output NMSE %.3g above %.0e", r->nmse, CONFORM_NMSE_MAX);
    free(want);
}

/* Copies the outputs (and the score magnitudes, when sparse) into cap. */
static void capture(const conform_case *c, const case_data *cd, fasa_path path, const double *mag,
                    conform_capture *cap)
{
    size_t rows = c->gqa == FASA_GQA_PER_GROUP ? c->hkv : c->hq;
    bool sparse = mag != NULL;
    cap->path = path;
    cap->n_o = (size_t)c->hq * c->d;
    cap->n_sel = sparse ? rows * c->n_fac : 0;
    cap->n_scores = sparse ? rows * c->L : 0;
    cap->o = malloc(cap->n_o * sizeof(float));
    cap->sel = malloc((cap->n_sel ? cap->n_sel : 1) * sizeof(int32_t));
    cap->scores = malloc((cap->n_scores ? cap->n_scores : 1) * sizeof(float));
    cap->mag = malloc((cap->n_scores ? cap->n_scores : 1) * sizeof(double));
    if (!cap->o || !cap->sel || !cap->scores || !cap->mag) return; /* valid stays false */
    memcpy(cap->o, cd->o_buf + GUARD, cap->n_o * sizeof(float));
    if (sparse) {
        memcpy(cap->sel, cd->sel_buf + GUARD, cap->n_sel * sizeof(int32_t));
        memcpy(cap->scores, cd->score_buf + GUARD, cap->n_scores * sizeof(float));
        memcpy(cap->mag, mag, cap->n_scores * sizeof(double));
    }
    cap->valid = true;
}

static void compare(const conform_case *c, case_data *cd, const fasa_decode_outputs *out, conform_result *r,
                    conform_capture *cap)
{
    bool dense = c->mode == FASA_MODE_DENSE || c->on_dense_layer || c->L <= c->n_fac;
    r->path = out->path;
    if (out->path != (dense ? FASA_PATH_DENSE : FASA_PATH_SPARSE))
        conform__fail(r, "took the %s path, expected %s", conform_path_name(out->path), dense ? "dense" : "sparse");
    check_guards(c, cd, r);
    ref_step rs = {c->hq, c->hkv, c->d, c->L, cd->qd, cd->kd, cd->vd,
                   c->mode == FASA_MODE_ORACLE ? NULL : cd->dims, c->n_tip,
                   c->gqa == FASA_GQA_PER_GROUP, c->n_fac, c->n_sink, c->n_recent};
    if (!r->pass) return;
    if (dense) {
        /* the selection outputs must stay untouched on the dense path */
        if (cd->sel_buf[GUARD] != POISON_INDEX || !is_poison(cd->score_buf[GUARD]))
            conform__fail(r, "the dense path wrote the selection or score outputs");
        rs.n_fac = c->L;
        check_output(&rs, NULL, cd->o_buf + GUARD, r);
        if (r->pass && cd->o_io) check_io_output(c, &rs, NULL, cd, r);
        if (cap && r->pass) capture(c, cd, out->path, NULL, cap);
        return;
    }
    size_t rows = ref_rows(&rs);
    double *scores = malloc(rows * c->L * sizeof(double)), *mag = malloc(rows * c->L * sizeof(double));
    int32_t *want = malloc(rows * c->n_fac * sizeof(int32_t));
    ref_scores(&rs, scores, mag);
    ref_select(&rs, scores, want);
    check_scores(&rs, cd->score_buf + GUARD, scores, mag, r);
    /* integer data is exact in fp32 too: no swap at all is acceptable there */
    if (r->pass) check_selection(&rs, cd->sel_buf + GUARD, want, scores, mag, c->data == SYNTH_INTEGER, r);
    if (r->pass) check_output(&rs, cd->sel_buf + GUARD, cd->o_buf + GUARD, r);
    if (r->pass && cd->o_io) check_io_output(c, &rs, cd->sel_buf + GUARD, cd, r);
    if (cap && r->pass) capture(c, cd, out->path, mag, cap);
    free(scores);
    free(mag);
    free(want);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Each row's selected tokens in ascending order (GPU backends emit the
 * top-k in any order). */
static void sort_rows(int32_t *sel, size_t rows, uint32_t k)
{
    for (size_t r = 0; r < rows; r++) qsort(sel + r * k, k, sizeof *sel, cmp_i32);
}

/* An external case must compute exactly what the same backend computes
 * from a cache that owns the same K/V values: the same case run with
 * libfasa's own cache gives bit-identical o, scores and selection. */
static void check_same_as_owned(fasa_context *ctx, const conform_case *c, const conform_data *data,
                                case_data *cd, conform_result *r)
{
    conform_case owned = *c;
    owned.external = CONFORM_EXT_NONE;
    case_data od;
    conform_result orr = {.pass = true};
    bool made = make_data(&owned, data, &od);
    fasa_decode_outputs out = {.selected = od.sel_buf + GUARD, .selected_stride = c->n_fac,
                               .scores = od.score_buf + GUARD, .scores_stride = c->L};
    if (!made) conform__fail(r, "out of host memory for the owned-cache run");
    else if (run_library(ctx, &owned, &od, &out, &orr) != FASA_OK) conform__fail(r, "owned-cache run: %s", orr.why);
    size_t rows = rows_of(c), n_o = (size_t)c->hq * c->d;
    if (r->pass && memcmp(od.o_buf, cd->o_buf, (n_o + 2 * GUARD) * sizeof(float)) != 0)
        conform__fail(r, "o differs from the owned cache's (same data, same backend)");
    if (r->pass && memcmp(od.score_buf, cd->score_buf, (rows * c->L + 2 * GUARD) * sizeof(float)) != 0)
        conform__fail(r, "TIP scores differ from the owned cache's");
    if (r->pass && cd->o_io &&
        (!od.o_io || memcmp(od.o_io, cd->o_io, 2 * IO_GUARD + n_o * io_size(c->o_type)) != 0))
        conform__fail(r, "the io decode's o differs from the owned cache's");
    if (r->pass && out.path == FASA_PATH_SPARSE) {
        sort_rows(od.sel_buf + GUARD, rows, c->n_fac);
        sort_rows(cd->sel_buf + GUARD, rows, c->n_fac);
        if (memcmp(od.sel_buf + GUARD, cd->sel_buf + GUARD, rows * c->n_fac * sizeof(int32_t)) != 0)
            conform__fail(r, "selection differs from the owned cache's");
    }
    free_data(&od);
}

bool conform_run(fasa_context *ctx, const conform_case *c, const conform_data *data, conform_result *r,
                 conform_capture *cap)
{
    if (c->pool && !data) return conform_pool_run(ctx, c, r, cap);
    memset(r, 0, sizeof *r);
    if (cap) memset(cap, 0, sizeof *cap);
    r->pass = true;
    case_data cd;
    if (!make_data(c, data, &cd)) {
        free_data(&cd);
        conform__fail(r, "out of host memory for the case data");
        return false;
    }
    fasa_decode_outputs out = {.selected = cd.sel_buf + GUARD, .selected_stride = c->n_fac,
                               .scores = cd.score_buf + GUARD, .scores_stride = c->L};
    if (run_library(ctx, c, &cd, &out, r) == FASA_OK) compare(c, &cd, &out, r, cap);
    if (c->external && r->pass) check_same_as_owned(ctx, c, data, &cd, r);
    free_data(&cd);
    return true;
}

/* For conform_paged.c (conform_int.h). */
void conform__name_case(conform_case *c) { name_case(c); }
bool conform__make_data(const conform_case *c, const conform_data *given, case_data *cd)
{
    return make_data(c, given, cd);
}
void conform__free_data(case_data *cd) { free_data(cd); }
void conform__compare(const conform_case *c, case_data *cd, const fasa_decode_outputs *out, conform_result *r,
                      conform_capture *cap)
{
    compare(c, cd, out, r, cap);
}
fasa_status conform__decode_io(fasa_context *ctx, fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *dd,
                               const conform_case *c, case_data *cd)
{
    return decode_io(ctx, cache, layer, dd, c, cd);
}
size_t conform__io_size(fasa_io_type t) { return io_size(t); }
void conform__io_store(void *dst, size_t i, double x, fasa_io_type t) { io_store(dst, i, x, t); }

void conform_capture_free(conform_capture *cap)
{
    free(cap->o);
    free(cap->sel);
    free(cap->scores);
    free(cap->mag);
    memset(cap, 0, sizeof *cap);
}

static void cross_fail(conform_cross *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cross_fail(conform_cross *x, const char *fmt, ...)
{
    if (!x->pass) return;
    x->pass = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->why, sizeof x->why, fmt, ap);
    va_end(ap);
}

/* Tokens in one row's selection and not in the other's. */
static uint32_t row_swaps(const int32_t *a, const int32_t *b, uint32_t k, uint32_t L, uint8_t *mark)
{
    memset(mark, 0, L);
    for (uint32_t i = 0; i < k; i++) mark[a[i]] |= 1;
    for (uint32_t i = 0; i < k; i++) mark[b[i]] |= 2;
    uint32_t n = 0;
    for (uint32_t j = 0; j < L; j++) n += mark[j] == 2;
    return n;
}

void conform_cross_compare(const conform_case *c, const conform_capture *ref, const conform_capture *got,
                           conform_cross *x)
{
    memset(x, 0, sizeof *x);
    x->pass = true;
    if (!ref->valid || !got->valid) {
        cross_fail(x, "no outputs to compare (a run failed)");
        return;
    }
    if (ref->path != got->path) {
        cross_fail(x, "paths differ");
        return;
    }
    /* selections (indices are in range: both runs passed their checks) */
    uint32_t rows = ref->n_sel ? (uint32_t)(ref->n_sel / c->n_fac) : 0;
    uint8_t *mark = rows ? malloc(c->L) : NULL;
    if (rows && !mark) {
        cross_fail(x, "out of host memory");
        return;
    }
    for (uint32_t row = 0; row < rows; row++)
        x->swaps += row_swaps(ref->sel + (size_t)row * c->n_fac, got->sel + (size_t)row * c->n_fac, c->n_fac,
                              c->L, mark);
    free(mark);
    if (x->swaps && c->data == SYNTH_INTEGER) cross_fail(x, "%u selection differences on exact data", x->swaps);
    for (size_t i = 0; i < ref->n_scores; i++) {
        double m = ref->mag[i] > 1e-30 ? ref->mag[i] : 1e-30;
        double rel = fabs((double)got->scores[i] - (double)ref->scores[i]) / m;
        if (rel > x->score_err) x->score_err = rel;
    }
    if (!(x->score_err <= CONFORM_CROSS_SCORE_REL)) cross_fail(x, "TIP score difference %.3g", x->score_err);
    if (x->swaps) return; /* different token sets: outputs are not comparable */
    double num = 0, den = 0;
    for (size_t i = 0; i < ref->n_o; i++) {
        double e = (double)got->o[i] - (double)ref->o[i];
        num += e * e;
        den += (double)ref->o[i] * ref->o[i];
        if (fabs(e) > x->max_abs_err) x->max_abs_err = fabs(e);
    }
    x->nmse = den > 0 ? num / den : num;
    if (!(x->nmse <= CONFORM_CROSS_NMSE_MAX)) cross_fail(x, "output NMSE %.3g between the backends", x->nmse);
}

/* ------------------------------------------------------------------------ */
/* Case files                                                                */
/* ------------------------------------------------------------------------ */

#define CASE_MAGIC "FASACASE 1\n"
/* the largest case file read: 2 GiB (K and V of 200k tokens x 8 KV heads x 128 dims take 1.6 GB) */
#define CASE_MAX_BYTES ((size_t)2 << 30)

bool conform_write_case_file(const char *path, uint32_t hq, uint32_t hkv, uint32_t d, uint32_t L,
                             uint32_t n_tip, const float *q, const float *k, const float *v,
                             const uint16_t *dims, const char *origin)
{
    /* a temporary file renamed over path: an existing case file stays whole on any failure */
    fasa__atomic_file af;
    char err[256] = "";
    if (fasa__atomic_begin(&af, path, err, sizeof err) != 0) {
        fprintf(stderr, "fasa: %s: %s\n", path, err);
        return false;
    }
    FILE *f = af.f;
    fputs(CASE_MAGIC, f);
    fprintf(f, "{\"hq\": %u, \"hkv\": %u, \"d\": %u, \"L\": %u, \"n_tip\": %u, \"layout\": \"NORM\", \"origin\": \"",
            hq, hkv, d, L, n_tip);
    for (const char *p = origin; p && *p; p++) fputc(*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 ? '_' : *p, f);
    fputs("\"}\n", f);
    size_t nkv = (size_t)L * hkv * d;
    bool ok = fwrite(q, sizeof(float), (size_t)hq * d, f) == (size_t)hq * d && fwrite(k, sizeof(float), nkv, f) == nkv &&
              fwrite(v, sizeof(float), nkv, f) == nkv &&
              fwrite(dims, sizeof(uint16_t), (size_t)hq * 2 * n_tip, f) == (size_t)hq * 2 * n_tip;
    if (!ok) {
        fprintf(stderr, "fasa: %s: %s\n", path, strerror(errno ? errno : EIO));
        fasa__atomic_abort(&af);
        return false;
    }
    if (fasa__atomic_commit(&af, err, sizeof err) != 0) {
        fprintf(stderr, "fasa: %s: %s\n", path, err);
        return false;
    }
    return true;
}

void conform_free_data(conform_data *data)
{
    free(data->q);
    free(data->k);
    free(data->v);
    free(data->dims);
    memset(data, 0, sizeof *data);
}

static bool header_uint(const char *json, const char *key, uint32_t max, uint32_t *out)
{
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *at = strstr(json, pat);
    if (!at) return false;
    char *end = NULL;
    unsigned long v = strtoul(at + strlen(pat), &end, 10);
    if (end == at + strlen(pat) || v == 0 || v > max) return false;
    *out = (uint32_t)v;
    return true;
}

bool conform_read_case_file(const char *path, conform_case *c, conform_data *data, char *err, size_t err_size)
{
    memset(data, 0, sizeof *data);
    /* a regular file only (a FIFO or a directory is refused, never waited on) */
    char *buf = NULL, why[256] = "";
    size_t size = 0;
    if (fasa__read_whole_file(path, CASE_MAX_BYTES, NULL, &buf, &size, why, sizeof why) != 0)
        return snprintf(err, err_size, "%s: %s", path, why), false;
    size_t magic_len = strlen(CASE_MAGIC);
    const char *hdr = buf + magic_len, *nl = size > magic_len ? memchr(hdr, '\n', size - magic_len) : NULL;
    char header[1024] = "";
    bool ok = size > magic_len && memcmp(buf, CASE_MAGIC, magic_len) == 0 && nl && (size_t)(nl - hdr) < sizeof header &&
              !memchr(hdr, '\0', (size_t)(nl - hdr));
    if (ok) memcpy(header, hdr, (size_t)(nl - hdr));
    uint32_t hq = 0, hkv = 0, d = 0, L = 0, n_tip = 0;
    ok = ok && header_uint(header, "hq", 1024, &hq) && header_uint(header, "hkv", hq, &hkv) &&
         header_uint(header, "d", FASA_MAX_HEAD_DIM, &d) && header_uint(header, "L", 1u << 24, &L) &&
         header_uint(header, "n_tip", d / 2, &n_tip) && hq % hkv == 0 && d % 2 == 0;
    if (!ok) {
        free(buf);
        snprintf(err, err_size, "%s: not a FASACASE 1 file or a bad header", path);
        return false;
    }
    size_t nq = (size_t)hq * d, nkv = (size_t)L * hkv * d, nd = (size_t)hq * 2 * n_tip;
    const char *body = nl + 1;
    uint64_t have = (uint64_t)(size - (size_t)(body - buf));
    uint64_t want = (uint64_t)(nq + 2 * nkv) * sizeof(float) + (uint64_t)nd * sizeof(uint16_t);
    if (have != want) {
        free(buf);
        snprintf(err, err_size, "%s: %s: %llu bytes of data after the header, the header's shape needs %llu", path,
                 have < want ? "truncated" : "trailing bytes", (unsigned long long)have, (unsigned long long)want);
        return false;
    }
    data->q = malloc(nq * sizeof(float));
    data->k = malloc(nkv * sizeof(float));
    data->v = malloc(nkv * sizeof(float));
    data->dims = malloc(nd * sizeof(uint16_t));
    if (!data->q || !data->k || !data->v || !data->dims) {
        free(buf);
        conform_free_data(data);
        snprintf(err, err_size, "%s: out of host memory", path);
        return false;
    }
    memcpy(data->q, body, nq * sizeof(float));
    memcpy(data->k, body + nq * sizeof(float), nkv * sizeof(float));
    memcpy(data->v, body + (nq + nkv) * sizeof(float), nkv * sizeof(float));
    memcpy(data->dims, body + (nq + 2 * nkv) * sizeof(float), nd * sizeof(uint16_t));
    free(buf);
    *c = (conform_case){.hq = hq, .hkv = hkv, .d = d, .L = L, .n_tip = n_tip, .layout = FASA_ROPE_NORM,
                        .mode = FASA_MODE_FASA, .n_fac = 256, .n_appends = 1, .data = SYNTH_PLANTED};
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(c->name, sizeof c->name, "replay/%s", base);
    return true;
}
