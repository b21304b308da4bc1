/*
 * FASA-M on CUDA (needs a device; exits 77 = SKIP without one): the decode
 * sequence of tests/opencl/fasam_seq.h (drifting queries, appends between
 * steps, per-head and per-group selection, forced tokens, a truncate half
 * way) on the CPU backend and on CUDA with placement OFFLOAD and fetch
 * DIRECT, STAGED without a row cache and STAGED with a row cache of
 * 2*G*n_fac rows:
 *   - every output is bit-identical to CUDA FASA-C's (fac reads the same
 *     values in the same order, from mapped host rows or device slots);
 *   - fasa_kv_cache_transfer_stats, read half way (with reset) and at the
 *     end, equals the CPU backend's (reference bookkeeping and row-cache
 *     policy);
 *   - memory: on a discrete GPU K and V are host bytes and the device keeps
 *     K_dom, the row cache and its state.
 * The fetch kernels' bookkeeping is also replayed on the host, without a
 * device, by test_cuda_fetch_logic.
 */
#include "ct_common.h"
#include "fasam_seq.h"

#include <string.h>

static void check_config(const fm_seq *sq, const fm_config *cf, const fm_result *ref, const fm_result *g,
                         const fm_result *c)
{
    char why[512] = "";
    CT_CHECK(fm_check_config(sq, cf, ref, g, c, why, sizeof why), "%s: %s", cf->name, why);
    fm_print_stats("cuda half (reset)", &g->half);
    fm_print_stats("cpu   half (reset)", &c->half);
    fm_print_stats("cuda end", &g->end);
    fm_print_stats("cpu   end", &c->end);
}

static void run_dtype(fasa_context *cpu, fasa_context *cu, fasa_dtype dtype)
{
    fm_seq sq = fm_standard_seq(dtype);
    fasa_calibration *cal_c = ct_calibration(cpu, &sq.shape, sq.shape.head_dim / 8, false, sq.seed);
    fasa_calibration *cal_g = ct_calibration(cu, &sq.shape, sq.shape.head_dim / 8, false, sq.seed);
    printf("%s storage:\n", dtype == FASA_DTYPE_F16 ? "f16" : "f32");
    char err[512];
    fasa_status st = fm_run_configs(cu, cal_g, cpu, cal_c, &sq, check_config, err, sizeof err);
    CT_CHECK(st == FASA_OK, "fasa-c: %s", err);
    fasa_calibration_destroy(cal_c);
    fasa_calibration_destroy(cal_g);
}

/* Discrete GPU: K and V are host bytes; the device keeps K_dom, the row
 * cache (slots, token map, state).  Integrated: nothing is saved. */
static void memory_accounting(fasa_context *cu)
{
    fasa_model_shape s = {2, 8, 2, 64, FASA_ROPE_NORM};
    uint64_t kv = 2ull * s.n_layers * s.n_kv_heads * 4096 * s.head_dim * 2;
    fasa_calibration *cal = ct_calibration(cu, &s, 8, true, 3);
    fasa_memory_report m[2];
    for (int i = 0; i < 2; i++) {
        fasa_kv_cache_desc kd = {.shape = s, .capacity = 4096, .calibration = cal, .max_n_fac = 64,
                                 .placement = i ? FASA_PLACEMENT_OFFLOAD : FASA_PLACEMENT_DEVICE,
                                 .fetch = i ? FASA_FETCH_STAGED : FASA_FETCH_DIRECT, .row_cache_rows = i ? 512 : 0};
        fasa_kv_cache *c = NULL;
        CT_OK(cu, fasa_kv_cache_create(cu, &kd, &c));
        memset(&m[i], 0, sizeof m[i]);
        if (c) fasa_kv_cache_memory(c, &m[i]);
        fasa_kv_cache_destroy(c);
    }
    fasa_calibration_destroy(cal);
    fasa_device_info info;
    fasa_context_device(cu, &info);
    printf("memory (bytes): fasa-c device %llu; fasa-m device %llu host %llu (%s)\n",
           (unsigned long long)m[0].device_bytes, (unsigned long long)m[1].device_bytes,
           (unsigned long long)m[1].host_bytes, info.unified_memory ? "integrated" : "discrete");
    if (info.unified_memory)
        CT_CHECK(m[1].host_bytes == 0 && m[1].device_bytes > m[0].device_bytes, "integrated: nothing saved");
    else
        CT_CHECK(m[1].host_bytes == kv && m[1].device_bytes < m[0].device_bytes / 2, "discrete: K and V are host bytes");
}

int main(void)
{
    ct_require_cuda();
    fasa_context *cpu = ct_context(FASA_BACKEND_CPU, 0);
    fasa_context *cu = ct_context(FASA_BACKEND_CUDA, 0);
    run_dtype(cpu, cu, FASA_DTYPE_F16);
    run_dtype(cpu, cu, FASA_DTYPE_F32);
    memory_accounting(cu);
    fasa_context_destroy(cu);
    fasa_context_destroy(cpu);
    return ct_finish("test_cuda_fasam");
}
