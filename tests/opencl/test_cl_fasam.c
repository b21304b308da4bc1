/*
 * FASA-M on OpenCL: one multi-step decode sequence (tests/opencl/fasam_seq.h:
 * drifting queries, appends between steps, per-head and per-group
 * selection, forced tokens, a truncate half way) on the CPU backend and on
 * OpenCL with placement OFFLOAD and fetch DIRECT, STAGED without a row
 * cache and STAGED with a row cache of 2*G*n_fac rows:
 *   - every output is bit-identical to OpenCL FASA-C's (fac reads the same
 *     values in the same order, from host rows or device slots);
 *   - fasa_kv_cache_transfer_stats, read half way (with reset) and at the
 *     end, equals the CPU backend's (the reference bookkeeping and the
 *     row-cache policy of src/rowcache.c).
 * Run under the default tunables, with WG_FETCH = 1, 2 and the GPU preset
 * (256), with fp16 and fp32 storage, with K/V in ALLOC_HOST_PTR and in
 * USE_HOST_PTR buffers, and with storage split into token chunks (the slot
 * indices fac sees carry the chunk).  Also: memory accounting on a
 * unified-memory device and as if it were discrete.
 */
#include "cl_test.h"
#include "fasam_seq.h"
#include "opencl/cl_internal.h"

typedef struct variant {
    const char *name;
    fasa_dtype dtype;
    int wg_fetch;                 /* 0 = the device's preset, -1 = the GPU preset */
    uint32_t offload_flags;
    uint64_t alloc_limit;         /* 0, or a lowered allocation limit (chunked storage) */
} variant;

static uint32_t wg_fetch_of(fasa_context *cl)
{
    cl_tuning t;
    fasa__cl_get_tuning(cl, &t);
    return t.wg_fetch;
}

static void tune(fasa_context *cl, const variant *v)
{
    if (v->alloc_limit) fasa__cl_set_alloc_limit(cl, v->alloc_limit);
    if (v->offload_flags) fasa__cl_set_offload_flags(cl, v->offload_flags);
    if (!v->wg_fetch) return;
    cl_tuning t;
    fasa__cl_get_tuning(cl, &t);
    if (v->wg_fetch < 0) fasa__cl_tuning_preset(&t, false, 48 * 1024, 1024, 8);
    else t.wg_fetch = (uint32_t)v->wg_fetch;
    T_STATUS(cl, fasa__cl_retune(cl, &t), FASA_OK, NULL);
}

static void check_config(const fm_seq *sq, const fm_config *cf, const fm_result *ref, const fm_result *g,
                         const fm_result *c)
{
    char why[512] = "";
    T_CHECK(fm_check_config(sq, cf, ref, g, c, why, sizeof why), "%s: %s", cf->name, why);
    fm_print_stats("opencl half (reset)", &g->half);
    fm_print_stats("cpu    half (reset)", &c->half);
    fm_print_stats("opencl end", &g->end);
    fm_print_stats("cpu    end", &c->end);
}

static void run_variant(const variant *v, int32_t dev)
{
    fm_seq sq = fm_standard_seq(v->dtype);
    fasa_context *cpu = t_context(FASA_BACKEND_CPU, 0, 0, NULL);
    fasa_context *cl = t_context(FASA_BACKEND_OPENCL, dev, 0, NULL);
    tune(cl, v);
    fasa_calibration *cal_c = t_calibration(cpu, &sq.shape, sq.shape.head_dim / 8, false, sq.seed);
    fasa_calibration *cal_g = t_calibration(cl, &sq.shape, sq.shape.head_dim / 8, false, sq.seed);
    printf("%s (%s storage, wg_fetch %u):\n", v->name, v->dtype == FASA_DTYPE_F16 ? "f16" : "f32",
           wg_fetch_of(cl));
    char err[512];
    fasa_status st = fm_run_configs(cl, cal_g, cpu, cal_c, &sq, check_config, err, sizeof err);
    T_CHECK(st == FASA_OK, "fasa-c: %s", err);
    fasa_calibration_destroy(cal_c);
    fasa_calibration_destroy(cal_g);
    fasa_context_destroy(cl);
    fasa_context_destroy(cpu);
}

/* Unified memory: FASA-M saves nothing, so K and V count as device bytes;
 * accounted as a discrete GPU, they are host bytes. */
static void memory_accounting(int32_t dev)
{
    fasa_device_info info[16];
    uint32_t nd = 16;
    fasa_list_devices(FASA_BACKEND_OPENCL, info, &nd, NULL, 0);
    bool uma = info[dev].type == FASA_DEVICE_CPU || info[dev].type == FASA_DEVICE_INTEGRATED_GPU;
    fasa_model_shape s = {2, 8, 2, 64, FASA_ROPE_NORM};
    uint64_t kv = 2ull * s.n_layers * s.n_kv_heads * 4096 * s.head_dim * 2;
    fasa_memory_report m[3];
    for (int i = 0; i < 3; i++) {
        fasa_context *cl = t_context(FASA_BACKEND_OPENCL, dev, 0, NULL);
        if (i == 2) fasa__cl_set_offload_flags(cl, FASA_CL_OFFLOAD_AS_DISCRETE);
        fasa_calibration *cal = t_calibration(cl, &s, 8, true, 3);
        fasa_kv_cache_desc kd = {.shape = s, .capacity = 4096, .calibration = cal, .max_n_fac = 64,
                                 .placement = i ? FASA_PLACEMENT_OFFLOAD : FASA_PLACEMENT_DEVICE,
                                 .fetch = i ? FASA_FETCH_STAGED : FASA_FETCH_DIRECT, .row_cache_rows = i ? 512 : 0};
        fasa_kv_cache *c = NULL;
        T_STATUS(cl, fasa_kv_cache_create(cl, &kd, &c), FASA_OK, NULL);
        if (c) fasa_kv_cache_memory(c, &m[i]);
        fasa_kv_cache_destroy(c);
        fasa_calibration_destroy(cal);
        fasa_context_destroy(cl);
    }
    printf("memory (bytes): fasa-c device %llu; fasa-m device %llu host %llu; as discrete device %llu host %llu\n",
           (unsigned long long)m[0].device_bytes, (unsigned long long)m[1].device_bytes,
           (unsigned long long)m[1].host_bytes, (unsigned long long)m[2].device_bytes,
           (unsigned long long)m[2].host_bytes);
    T_CHECK(m[0].host_bytes == 0 && m[0].device_bytes >= kv, "fasa-c accounting");
    if (uma) T_CHECK(m[1].host_bytes == 0 && m[1].device_bytes > m[0].device_bytes, "unified: nothing saved");
    T_CHECK(m[2].host_bytes == kv && m[2].device_bytes < m[0].device_bytes / 2 && m[2].device_bytes > m[0].device_bytes - kv,
            "discrete: K and V are host bytes; the row cache and K_dom stay on the device");
}

int main(void)
{
    int32_t dev = t_cl_device("test_cl_fasam");
    const variant vs[] = {
        {"default tunables", FASA_DTYPE_F16, 0, 0, 0},
        {"wg_fetch 1, USE_HOST_PTR", FASA_DTYPE_F32, 1, FASA_CL_OFFLOAD_USE_HOST_PTR, 0},
        {"wg_fetch 2, chunked storage", FASA_DTYPE_F16, 2, 0, 140000},
        {"GPU preset, chunked, USE_HOST_PTR", FASA_DTYPE_F32, -1, FASA_CL_OFFLOAD_USE_HOST_PTR, 300000},
    };
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) run_variant(&vs[i], dev);
    memory_accounting(dev);
    return t_done("test_cl_fasam");
}
