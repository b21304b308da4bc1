/*
 * OpenCL backend vs the CPU backend, through the public API.
 *
 * Matrix: (Hq, Hkv, d) in {(8,8,64), (9,3,64), (32,8,128), (16,2,128),
 * (8,2,256)} x fp16/fp32 storage x NORM/NEOX x per-head/shared dims x
 * per-head/per-group selection x modes fasa/dense/oracle x L in {1, n_fac-1,
 * n_fac, n_fac+1, 4000, 70000} x n_fac in {1, 7, 256, 1024, 2048}, with
 * n_sink/n_recent variants (including forced tokens filling the budget).
 * Integer-valued (tie-heavy) inputs: TIP scores are exact, so the selected
 * index arrays must equal the CPU's (forced first, then ascending) and the
 * scores must be bit-identical; Gaussian inputs: overlap >= 99% per row.
 * Outputs: NMSE <= 1e-7 against the CPU.  Every few cases the step also
 * runs through fasa_decode on device buffers with q at an offset, the
 * output region poisoned with NaN and guard bytes around it.
 * One configuration forces chunked storage and split scratch (a lowered
 * allocation limit) so the multi-chunk dispatch paths are compared too.
 *
 * Seeds are fixed and printed.  Exit 77 when there is no OpenCL device.
 */
#include "cl_test.h"
#include "opencl/cl_internal.h"

#define GUARD 256u
#define GUARD_BYTE 0xA5u

typedef struct shape3 {
    uint32_t hq, hkv, d;
} shape3;

typedef struct config {
    shape3 s;
    fasa_dtype dtype;
    fasa_rope_layout layout;
    bool ints;           /* integer-valued inputs */
    bool shared_dims;    /* all heads of a group share their dims */
    uint32_t capacity;   /* 4000 or 70000 */
    uint64_t alloc_limit;/* 0, or a lowered OpenCL allocation limit */
    int preset;          /* 0 the device's tunables, 1 the GPU preset, 2 the GPU preset for 32 KiB */
    bool flip_fuse;      /* the first radix pass fused into tip or not, unlike the preset */
    uint64_t seed;
} config;

typedef struct run_state {
    const config *cf;
    fasa_context *cpu, *cl;
    fasa_kv_cache *cc, *gc;   /* CPU and OpenCL caches */
    float *q;
    fasa_buffer *qbuf, *obuf;
    uint32_t n_cases, n_device;
} run_state;

static const uint32_t N_FACS[] = {1, 7, 256, 1024, 2048};

static const char *mode_name(fasa_mode m) { return m == FASA_MODE_DENSE ? "dense" : m == FASA_MODE_ORACLE ? "oracle" : "fasa"; }

/* fasa_decode on device buffers: q at an offset, o poisoned and guarded.
 * The result must be bit-identical to the host-path result o_ref. */
static void device_path(run_state *rs, const fasa_decode_desc *dd, const float *o_ref, const char *tag)
{
    const shape3 *s = &rs->cf->s;
    size_t n = (size_t)s->hq * s->d, bytes = n * 4, total = GUARD + bytes + GUARD;
    unsigned char *img = malloc(total);
    memset(img, GUARD_BYTE, total);
    uint32_t nan = 0x7fc00000u;
    for (size_t i = 0; i < n; i++) memcpy(img + GUARD + 4 * i, &nan, 4);
    T_STATUS(rs->cl, fasa_buffer_write(rs->obuf, 0, img, total), FASA_OK, NULL);
    T_STATUS(rs->cl, fasa_decode(rs->gc, 0, dd, rs->qbuf, 64, rs->obuf, GUARD), FASA_OK, NULL);
    T_STATUS(rs->cl, fasa_buffer_read(rs->obuf, 0, img, total), FASA_OK, NULL);
    bool guards = true;
    for (size_t i = 0; i < GUARD; i++) guards &= img[i] == GUARD_BYTE && img[GUARD + bytes + i] == GUARD_BYTE;
    T_CHECK(guards, "%s: guard bytes around o were overwritten", tag);
    T_CHECK(memcmp(img + GUARD, o_ref, bytes) == 0, "%s: fasa_decode on buffers differs from fasa_decode_host", tag);
    free(img);
    rs->n_device++;
}

static void run_case(run_state *rs, uint32_t L, fasa_mode mode, uint32_t n_fac, fasa_gqa_select sel,
                     uint32_t n_sink, uint32_t n_recent)
{
    const config *cf = rs->cf;
    const shape3 *s = &cf->s;
    char tag[256];
    snprintf(tag, sizeof tag, "hq%u-hkv%u-d%u/%s/%s/%s/%s/%s/L%u/nfac%u/sink%u/recent%u%s", s->hq, s->hkv, s->d,
             cf->dtype == FASA_DTYPE_F16 ? "f16" : "f32", cf->layout == FASA_ROPE_NORM ? "norm" : "neox",
             cf->ints ? "ints" : "gauss", sel == FASA_GQA_PER_GROUP ? "group" : "head", mode_name(mode), L,
             n_fac, n_sink, n_recent, cf->alloc_limit ? "/split" : "");
    if (getenv("FASA_TEST_VERBOSE")) fprintf(stderr, "case %s\n", tag);
    fasa_decode_desc dd = {.mode = mode, .n_fac = n_fac, .n_sink = n_sink, .n_recent = n_recent, .gqa_select = sel};
    uint32_t rows = sel == FASA_GQA_PER_GROUP ? s->hkv : s->hq;
    uint32_t sstride = n_fac + 5, cstride = L + 3;
    size_t n_o = (size_t)s->hq * s->d;
    int32_t *sel_c = malloc((size_t)rows * sstride * 4), *sel_g = malloc((size_t)rows * sstride * 4);
    float *sc_c = malloc((size_t)rows * cstride * 4), *sc_g = malloc((size_t)rows * cstride * 4);
    float *o_c = malloc(n_o * 4), *o_g = malloc(n_o * 4);
    for (size_t i = 0; i < (size_t)rows * sstride; i++) sel_c[i] = sel_g[i] = -7;
    for (size_t i = 0; i < (size_t)rows * cstride; i++) sc_c[i] = sc_g[i] = -7.0f;
    fasa_decode_outputs oc = {.selected = sel_c, .selected_stride = sstride, .scores = sc_c, .scores_stride = cstride};
    fasa_decode_outputs og = {.selected = sel_g, .selected_stride = sstride, .scores = sc_g, .scores_stride = cstride};
    fasa_status a = fasa_decode_host(rs->cc, 0, &dd, rs->q, o_c, &oc);
    fasa_status b = fasa_decode_host(rs->gc, 0, &dd, rs->q, o_g, &og);
    T_CHECK(a == FASA_OK, "%s: cpu: %s", tag, fasa_context_last_error(rs->cpu));
    T_CHECK(b == FASA_OK, "%s: opencl: %s", tag, fasa_context_last_error(rs->cl));
    if (a != FASA_OK || b != FASA_OK) goto out;
    T_CHECK(oc.path == og.path && oc.n_rows == og.n_rows && oc.n_selected == og.n_selected,
            "%s: path %d/%d rows %u/%u selected %u/%u", tag, oc.path, og.path, oc.n_rows, og.n_rows,
            oc.n_selected, og.n_selected);
    double e = t_nmse(o_c, o_g, n_o);
    bool sets_equal = true;
    if (og.path == FASA_PATH_SPARSE) {
        for (uint32_t r = 0; r < rows; r++) {
            const int32_t *x = sel_c + (size_t)r * sstride, *y = sel_g + (size_t)r * sstride;
            T_CHECK(t_valid_selection(y, n_fac, L), "%s: row %u: selection has a duplicate or out-of-range index", tag, r);
            bool guard = true;
            for (uint32_t i = n_fac; i < sstride; i++) guard &= y[i] == -7;
            T_CHECK(guard, "%s: row %u: selection written past n_fac", tag, r);
            T_CHECK(sc_g[(size_t)r * cstride + L] == -7.0f, "%s: row %u: scores written past L", tag, r);
            uint32_t common = t_overlap(x, y, n_fac);
            sets_equal &= common == n_fac;
            if (cf->ints) {
                T_CHECK(memcmp(x, y, n_fac * 4) == 0, "%s: row %u: selection differs from the cpu (%u of %u shared)",
                        tag, r, common, n_fac);
                T_CHECK(memcmp(sc_c + (size_t)r * cstride, sc_g + (size_t)r * cstride, (size_t)L * 4) == 0,
                        "%s: row %u: integer TIP scores are not bit-identical", tag, r);
            } else {
                T_CHECK(common * 100 >= n_fac * 99, "%s: row %u: overlap %u of %u", tag, r, common, n_fac);
                double worst = 0, scale = 0;
                for (uint32_t j = 0; j < L; j++) {
                    double d = fabs((double)sc_c[(size_t)r * cstride + j] - sc_g[(size_t)r * cstride + j]);
                    worst = d > worst ? d : worst;
                    double m = fabs(sc_c[(size_t)r * cstride + j]);
                    scale = m > scale ? m : scale;
                }
                T_CHECK(worst <= 1e-5 * (scale + 1), "%s: row %u: score error %g (scale %g)", tag, r, worst, scale);
            }
        }
    }
    /* a differing near-tie changes the output by more than rounding */
    T_CHECK(e <= (sets_equal ? 1e-7 : 1e-4), "%s: output NMSE %g vs cpu", tag, e);
    if (rs->n_cases % 4 == 0) device_path(rs, &dd, o_g, tag);
    rs->n_cases++;
out:
    free(sel_c);
    free(sel_g);
    free(sc_c);
    free(sc_g);
    free(o_c);
    free(o_g);
}

static void fill(uint64_t *seed, bool ints, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = ints ? t_int(seed, 2) : t_uniform(seed);
}

static void run_config(const config *cf, int32_t dev)
{
    const shape3 *s = &cf->s;
    run_state rs = {.cf = cf};
    rs.cpu = t_context(FASA_BACKEND_CPU, 0, 0, NULL);
    rs.cl = t_context(FASA_BACKEND_OPENCL, dev, 0, NULL);
    if (cf->alloc_limit) fasa__cl_set_alloc_limit(rs.cl, cf->alloc_limit);
    if (cf->preset || cf->flip_fuse) { /* run the GPU work-group shapes here too */
        cl_tuning t;
        fasa__cl_get_tuning(rs.cl, &t);
        if (cf->preset) fasa__cl_tuning_preset(&t, false, cf->preset == 2 ? 32 * 1024 : 48 * 1024, 1024, 8);
        if (cf->flip_fuse) t.fuse_hist = !t.fuse_hist;
        T_STATUS(rs.cl, fasa__cl_retune(rs.cl, &t), FASA_OK, NULL);
    }
    fasa_model_shape shape = {1, s->hq, s->hkv, s->d, cf->layout};
    uint32_t n_tip = s->d / 8;
    fasa_calibration *cal_c = t_calibration(rs.cpu, &shape, n_tip, cf->shared_dims, cf->seed);
    fasa_calibration *cal_g = t_calibration(rs.cl, &shape, n_tip, cf->shared_dims, cf->seed);
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = cf->capacity, .dtype = cf->dtype,
                             .flags = FASA_CACHE_NO_DENSE_LAYERS};
    kd.calibration = cal_c;
    T_STATUS(rs.cpu, fasa_kv_cache_create(rs.cpu, &kd, &rs.cc), FASA_OK, NULL);
    kd.calibration = cal_g;
    T_STATUS(rs.cl, fasa_kv_cache_create(rs.cl, &kd, &rs.gc), FASA_OK, NULL);
    if (!rs.cc || !rs.gc) exit(1);

    /* append in uneven pieces, part of it from fp16 source rows */
    uint64_t seed = cf->seed;
    size_t row = (size_t)s->hkv * s->d;
    uint32_t pieces[] = {1, 999, 1500, cf->capacity};
    uint32_t done = 0;
    for (int p = 0; p < 4 && done < cf->capacity; p++) {
        uint32_t n = pieces[p] < cf->capacity - done ? pieces[p] : cf->capacity - done;
        float *k = malloc(n * row * 4), *v = malloc(n * row * 4);
        fill(&seed, cf->ints, k, n * row);
        fill(&seed, cf->ints, v, n * row);
        if (p == 1) { /* fp16 source */
            uint16_t *kh = malloc(n * row * 2), *vh = malloc(n * row * 2);
            fasa__float_to_half_n(k, kh, n * row);
            fasa__float_to_half_n(v, vh, n * row);
            T_STATUS(rs.cpu, fasa_kv_cache_append(rs.cc, 0, n, kh, vh, FASA_DTYPE_F16), FASA_OK, NULL);
            T_STATUS(rs.cl, fasa_kv_cache_append(rs.gc, 0, n, kh, vh, FASA_DTYPE_F16), FASA_OK, NULL);
            free(kh);
            free(vh);
        } else {
            T_STATUS(rs.cpu, fasa_kv_cache_append(rs.cc, 0, n, k, v, FASA_DTYPE_F32), FASA_OK, NULL);
            T_STATUS(rs.cl, fasa_kv_cache_append(rs.gc, 0, n, k, v, FASA_DTYPE_F32), FASA_OK, NULL);
        }
        free(k);
        free(v);
        done += n;
    }
    /* the stored rows read back identically */
    uint32_t probe = cf->capacity < 64 ? cf->capacity : 64;
    float *kc = malloc(probe * row * 4), *kg = malloc(probe * row * 4), *vc = malloc(probe * row * 4), *vg = malloc(probe * row * 4);
    T_STATUS(rs.cpu, fasa_kv_cache_read(rs.cc, 0, cf->capacity - probe, probe, kc, vc), FASA_OK, NULL);
    T_STATUS(rs.cl, fasa_kv_cache_read(rs.gc, 0, cf->capacity - probe, probe, kg, vg), FASA_OK, NULL);
    T_CHECK(memcmp(kc, kg, probe * row * 4) == 0 && memcmp(vc, vg, probe * row * 4) == 0,
            "cache rows read back differently");
    free(kc); free(kg); free(vc); free(vg);

    rs.q = malloc((size_t)s->hq * s->d * 4);
    fill(&seed, cf->ints, rs.q, (size_t)s->hq * s->d);
    T_STATUS(rs.cl, fasa_buffer_create(rs.cl, 64 + (uint64_t)s->hq * s->d * 4, &rs.qbuf), FASA_OK, NULL);
    T_STATUS(rs.cl, fasa_buffer_create(rs.cl, 2 * GUARD + (uint64_t)s->hq * s->d * 4, &rs.obuf), FASA_OK, NULL);
    T_STATUS(rs.cl, fasa_buffer_write(rs.qbuf, 64, rs.q, (uint64_t)s->hq * s->d * 4), FASA_OK, NULL);

    const uint32_t Ls[] = {70000, 4000, 2049, 2048, 2047, 1025, 1024, 1023, 257, 256, 255, 8, 7, 6, 2, 1};
    for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++) {
        uint32_t L = Ls[li];
        if (L > cf->capacity) continue;
        fasa_kv_cache_truncate(rs.cc, L);
        fasa_kv_cache_truncate(rs.gc, L);
        bool full = L == 4000 || L == 70000;
        run_case(&rs, L, FASA_MODE_DENSE, 256, FASA_GQA_PER_HEAD, 0, 0);
        for (size_t fi = 0; fi < sizeof N_FACS / sizeof N_FACS[0]; fi++) {
            uint32_t nf = N_FACS[fi];
            if (!full && (L + 1 < nf || L > nf + 1)) continue;
            for (int m = 0; m < 2; m++)
                for (int g = 0; g < 2; g++)
                    run_case(&rs, L, m ? FASA_MODE_ORACLE : FASA_MODE_FASA, nf,
                             g ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD, 0, 0);
        }
        if (!full) continue;
        const uint32_t forced[][3] = {{256, 4, 0}, {256, 0, 16}, {256, 4, 16}, {7, 3, 4}, {7, 1, 1}, {1, 0, 1}, {2048, 1000, 1048}};
        for (size_t i = 0; i < sizeof forced / sizeof forced[0]; i++)
            for (int g = 0; g < 2; g++)
                run_case(&rs, L, FASA_MODE_FASA, forced[i][0], g ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD,
                         forced[i][1], forced[i][2]);
    }
    printf("  hq%u-hkv%u-d%u %s %s %s %s cap %u%s%s%s seed %llu: %u cases (%u also on device buffers)\n", s->hq,
           s->hkv, s->d, cf->dtype == FASA_DTYPE_F16 ? "f16" : "f32", cf->layout == FASA_ROPE_NORM ? "norm" : "neox",
           cf->ints ? "ints" : "gauss", cf->shared_dims ? "shared-dims" : "head-dims", cf->capacity,
           cf->alloc_limit ? " split" : "", cf->preset == 1 ? " gpu-preset" : cf->preset == 2 ? " gpu-preset-32k" : "",
           cf->flip_fuse ? " fusion-flipped" : "",
           (unsigned long long)cf->seed, rs.n_cases, rs.n_device);
    fflush(stdout);
    free(rs.q);
    fasa_buffer_destroy(rs.qbuf);
    fasa_buffer_destroy(rs.obuf);
    fasa_kv_cache_destroy(rs.cc);
    fasa_kv_cache_destroy(rs.gc);
    fasa_calibration_destroy(cal_c);
    fasa_calibration_destroy(cal_g);
    fasa_context_destroy(rs.cpu);
    fasa_context_destroy(rs.cl);
}

int main(int argc, char **argv)
{
    int32_t dev = t_cl_device("test_cl_compare");
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    const shape3 shapes[] = {{8, 8, 64}, {9, 3, 64}, {32, 8, 128}, {16, 2, 128}, {8, 2, 256}};
    uint64_t seed = 20261128;
    for (size_t si = 0; si < 5; si++)
        for (int dt = 0; dt < 2; dt++)
            for (int ints = 1; ints >= 0; ints--) {
                config cf = {.s = shapes[si], .dtype = dt ? FASA_DTYPE_F32 : FASA_DTYPE_F16,
                             .layout = (si + dt + ints) % 2 ? FASA_ROPE_NEOX : FASA_ROPE_NORM, .ints = ints,
                             .shared_dims = (si + ints) % 2 == 0, .capacity = 4000, .seed = seed++};
                bool big = ints && !quick &&
                           ((si == 1) || (si == 2 && dt == 0));
                if (big) cf.capacity = 70000;
                if (big && si == 2) cf.alloc_limit = 8u << 20; /* 24 storage chunks, 2 scratch blocks */
                run_config(&cf, dev);
            }
    /* the GPU presets (wide groups, local atomics, barriers) on this device:
     * the work-group shapes the H200 will run are checked here already */
    for (int preset = 1; preset <= 2; preset++)
        for (size_t si = 0; si < 5; si += preset == 1 ? 1 : 2)
            for (int ints = 1; ints >= 0; ints--) {
                config cf = {.s = shapes[si], .dtype = ints ? FASA_DTYPE_F16 : FASA_DTYPE_F32,
                             .layout = (si + ints) % 2 ? FASA_ROPE_NEOX : FASA_ROPE_NORM, .ints = ints,
                             .shared_dims = ints == 0, .capacity = 4000, .preset = preset, .seed = seed++};
                if (quick && preset == 2) continue;
                run_config(&cf, dev);
            }
    /* small chunks and one KV head per scratch block */
    config split = {.s = {9, 3, 64}, .dtype = FASA_DTYPE_F16, .layout = FASA_ROPE_NEOX, .ints = true,
                    .shared_dims = false, .capacity = 4000, .alloc_limit = 100000, .seed = seed++};
    run_config(&split, dev);
    split.ints = false;
    split.dtype = FASA_DTYPE_F32;
    split.seed = seed++;
    run_config(&split, dev);
    split.preset = 1;
    split.seed = seed++;
    run_config(&split, dev);
    split.ints = true;
    split.preset = 0;
    split.flip_fuse = true;
    split.seed = seed++;
    run_config(&split, dev);
    split.preset = 1;
    split.seed = seed++;
    run_config(&split, dev);
    return t_done("test_cl_compare");
}
