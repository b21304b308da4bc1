/*
 * OpenCL benchmark: one decode step of one layer, dense vs FASA, in the same
 * run, timed with OpenCL events (fasa_context_last_step_ns, per-kernel
 * times from the backend's profiling hook).  Shape of issue 4: Hq 32,
 * Hkv 8, d 128, fp16 storage, N_tip 16 with dims shared inside each KV
 * group (u_g = 32), N_fac 256, selection per query head.  Dense and FASA
 * steps are interleaved so a busy machine slows both alike.  Both fp16 load
 * paths of the kernels (vload_half vs uint4 + manual conversion) are
 * measured.
 *
 *   cl_bench [--L 65536,131072] [--iters N] [--check RATIO] [--probe] [--json]
 *
 * --check R exits 1 when FASA is not R times faster than dense at every L.
 * --probe adds the naive TIP probe of GPU_NOTES §2 (one work-item per
 * 64-byte row, 1M rows) in several load variants, plus a copy kernel for
 * the bandwidth ceiling: the measurement for the NVIDIA OpenCL vs Vulkan
 * gap (896 vs 3170 GB/s).
 * Device: FASA_TEST_CL_DEVICE=<name substring>, else OpenCL device 0.
 */
#include "cl_test.h"
#include "opencl/cl_internal.h"

#include <sys/resource.h>
#include <time.h>

#define HQ 32u
#define HKV 8u
#define D 128u
#define NTIP 16u
#define NFAC 256u

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t median(uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    return n ? v[n / 2] : 0;
}

static double cpu_seconds(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

typedef struct result {
    uint64_t med_ns, min_ns;
    uint64_t kernel_med[CLK_COUNT];
    double cpu_ms;
} result;

#define MAX_ITERS 64

static void measure(fasa_context *ctx, fasa_kv_cache *c, fasa_buffer *q, fasa_buffer *o, int iters,
                    result *dense, result *fasa)
{
    fasa_decode_desc dd[2] = {{.mode = FASA_MODE_DENSE}, {.mode = FASA_MODE_FASA, .n_fac = NFAC}};
    result *res[2] = {dense, fasa};
    uint64_t t[2][MAX_ITERS], kt[2][CLK_COUNT][MAX_ITERS];
    double cpu[2] = {0, 0};
    for (int w = 0; w < 2; w++)
        for (int v = 0; v < 2; v++) fasa_decode(c, 0, &dd[v], q, 0, o, 0);
    for (int i = 0; i < iters; i++)
        for (int v = 0; v < 2; v++) {
            double c0 = cpu_seconds();
            fasa_status st = fasa_decode(c, 0, &dd[v], q, 0, o, 0);
            cpu[v] += cpu_seconds() - c0;
            if (st != FASA_OK) {
                fprintf(stderr, "decode failed: %s\n", fasa_context_last_error(ctx));
                exit(1);
            }
            fasa_context_last_step_ns(ctx, &t[v][i]);
            fasa_cl_stats s;
            fasa__cl_get_stats(ctx, &s);
            for (int k = 0; k < CLK_COUNT; k++) kt[v][k][i] = s.kernel_ns[k];
        }
    for (int v = 0; v < 2; v++) {
        memset(res[v], 0, sizeof *res[v]);
        res[v]->med_ns = median(t[v], iters);
        res[v]->min_ns = t[v][0];
        for (int k = 0; k < CLK_COUNT; k++) res[v]->kernel_med[k] = median(kt[v][k], iters);
        res[v]->cpu_ms = cpu[v] * 1e3 / iters;
    }
}

static void print_kernels(const char *what, const result *r)
{
    printf("    %-6s kernels (median us):", what);
    for (int k = 0; k < CLK_COUNT; k++)
        if (r->kernel_med[k]) printf(" %s %.1f", fasa__cl_kernel_names[k] + 5, r->kernel_med[k] / 1e3);
    printf("\n");
}

/* ---- the naive TIP probe (GPU_NOTES §2) ------------------------------- */

static const char *probe_src =
    "__kernel void tip_vload_half8(__global const half *k, __global const float *q, __global float *s) {\n"
    "  uint i = get_global_id(0); __global const half *r = k + (size_t)i * 32; float a = 0.0f;\n"
    "  for (uint c = 0; c < 32; c += 8) { float8 x = vload_half8(0, r + c); float8 y = vload8(0, q + c);\n"
    "    a += dot(x.lo, y.lo) + dot(x.hi, y.hi); }\n"
    "  s[i] = a; }\n"
    "static inline float h2f(uint h) { uint e = (h >> 10) & 31u, m = h & 1023u, s = (h & 0x8000u) << 16;\n"
    "  if (e == 0u) { float v = (float)m * 0x1.0p-24f; return s ? -v : v; }\n"
    "  return as_float(e == 31u ? (s | 0x7f800000u | (m << 13)) : (s | ((e + 112u) << 23) | (m << 13))); }\n"
    "__kernel void tip_uint4_manual(__global const uint4 *k, __global const float *q, __global float *s) {\n"
    "  uint i = get_global_id(0); __global const uint4 *r = k + (size_t)i * 4; float a = 0.0f;\n"
    "  for (uint c = 0; c < 4; c++) { uint4 w = r[c]; __global const float *y = q + 8 * c;\n"
    "    a += h2f(w.x & 0xffffu) * y[0] + h2f(w.x >> 16) * y[1] + h2f(w.y & 0xffffu) * y[2] + h2f(w.y >> 16) * y[3]\n"
    "       + h2f(w.z & 0xffffu) * y[4] + h2f(w.z >> 16) * y[5] + h2f(w.w & 0xffffu) * y[6] + h2f(w.w >> 16) * y[7]; }\n"
    "  s[i] = a; }\n"
    "__kernel void tip_uint4_vload_half(__global const uint4 *k, __global const float *q, __global float *s) {\n"
    "  uint i = get_global_id(0); __global const uint4 *r = k + (size_t)i * 4; float a = 0.0f; __private uint4 w[4];\n"
    "  for (uint c = 0; c < 4; c++) w[c] = r[c];\n"
    "  for (uint c = 0; c < 32; c += 8) { float8 x = vload_half8(0, (__private const half *)w + c);\n"
    "    float8 y = vload8(0, q + c); a += dot(x.lo, y.lo) + dot(x.hi, y.hi); }\n"
    "  s[i] = a; }\n"
    "__kernel void read_uint4(__global const uint4 *k, __global const float *q, __global float *s) {\n"
    "  uint i = get_global_id(0); __global const uint4 *r = k + (size_t)i * 4; uint4 a = r[0] ^ r[1] ^ r[2] ^ r[3];\n"
    "  s[i] = (float)(a.x ^ a.y ^ a.z ^ a.w); }\n"
    "__kernel void copy_uint4(__global const uint4 *k, __global const float *q, __global uint4 *o) {\n"
    "  size_t i = get_global_id(0); o[i] = k[i]; }\n";

static void probe(cl_ctx *cc, bool json)
{
    const size_t rows = 1u << 20, bytes = rows * 64;
    cl_int err;
    cl_mem k = clCreateBuffer(cc->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    cl_mem q = clCreateBuffer(cc->context, CL_MEM_READ_WRITE, 32 * 4, NULL, &err);
    cl_mem s = clCreateBuffer(cc->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!k || !q || !s) {
        printf("probe: allocation failed\n");
        return;
    }
    unsigned short one = 0x3c00;
    float qf = 0.5f;
    clEnqueueFillBuffer(cc->queue, k, &one, 2, 0, bytes, 0, NULL, NULL);
    clEnqueueFillBuffer(cc->queue, q, &qf, 4, 0, 32 * 4, 0, NULL, NULL);
    clFinish(cc->queue);
    const char *opts[2] = {"-cl-std=CL1.2", "-cl-std=CL1.2 -cl-fast-relaxed-math"};
    const char *kernels[] = {"tip_vload_half8", "tip_uint4_manual", "tip_uint4_vload_half", "read_uint4", "copy_uint4"};
    printf("  naive TIP probe: %zu rows of 32 fp16 (64 MiB) -> fp32 scores (4 MiB); copy: 64 MiB -> 64 MiB\n", rows);
    for (int o = 0; o < 2; o++) {
        cl_program p = clCreateProgramWithSource(cc->context, 1, &probe_src, NULL, &err);
        err = clBuildProgram(p, 1, &cc->device, opts[o], NULL, NULL);
        if (err != CL_SUCCESS) {
            char log[4096] = "";
            clGetProgramBuildInfo(p, cc->device, CL_PROGRAM_BUILD_LOG, sizeof log, log, NULL);
            printf("probe build (%s) failed: %s\n%s\n", opts[o], fasa__cl_error_name(err), log);
            clReleaseProgram(p);
            continue;
        }
        for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++) {
            if (o == 1 && i > 0) break; /* the fast-math build only reproduces the noted probe */
            cl_kernel kk = clCreateKernel(p, kernels[i], &err);
            bool copy = i == 4;
            clSetKernelArg(kk, 0, sizeof k, &k);
            clSetKernelArg(kk, 1, sizeof q, &q);
            clSetKernelArg(kk, 2, sizeof s, &s);
            size_t g = copy ? bytes / 16 : rows, l = 128;
            uint64_t t[12];
            for (int it = 0; it < 12; it++) {
                cl_event ev;
                clEnqueueNDRangeKernel(cc->queue, kk, 1, NULL, &g, &l, 0, NULL, &ev);
                clWaitForEvents(1, &ev);
                cl_ulong a = 0, b = 0;
                clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof a, &a, NULL);
                clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof b, &b, NULL);
                t[it] = b - a;
                clReleaseEvent(ev);
            }
            uint64_t med = median(t + 2, 10);
            double moved = copy ? 2.0 * bytes : bytes + rows * 4.0;
            printf("    %-22s %-36s %9.1f us %8.1f GB/s\n", kernels[i], opts[o], med / 1e3, moved / med);
            if (json)
                printf("{\"probe\":\"%s\",\"options\":\"%s\",\"us\":%.2f,\"gbps\":%.1f}\n", kernels[i], opts[o],
                       med / 1e3, moved / med);
            clReleaseKernel(kk);
        }
        clReleaseProgram(p);
    }
    clReleaseMemObject(k);
    clReleaseMemObject(q);
    clReleaseMemObject(s);
}

int main(int argc, char **argv)
{
    uint32_t Ls[8] = {65536}, nL = 1;
    int iters = 7;
    double check = 0;
    bool do_probe = false, json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--L") && i + 1 < argc) {
            nL = 0;
            for (char *p = strtok(argv[++i], ","); p && nL < 8; p = strtok(NULL, ","))
                Ls[nL++] = (uint32_t)strtoul(p, NULL, 10);
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            iters = atoi(argv[++i]);
            if (iters < 1) iters = 1;
            if (iters > MAX_ITERS) iters = MAX_ITERS;
        } else if (!strcmp(argv[i], "--check") && i + 1 < argc) {
            check = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--probe")) {
            do_probe = true;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else {
            fprintf(stderr, "usage: cl_bench [--L N,N] [--iters N] [--check RATIO] [--probe] [--json]\n");
            return 2;
        }
    }
    int32_t dev = t_cl_device("cl_bench");
    fasa_context *ctx = t_context(FASA_BACKEND_OPENCL, dev, FASA_CONTEXT_PROFILE, NULL);
    fasa_device_info info;
    fasa_context_device(ctx, &info);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
    printf("cl_bench %s: %s | %s\n", date, info.name, info.driver);
    printf("shape Hq %u Hkv %u d %u, fp16, N_tip %u shared per group (u_g 32), N_fac %u, per-head selection\n",
           HQ, HKV, D, NTIP, NFAC);
    printf("variants: default = the device's tunables (vload_half loads); uint4 = 16-byte loads + manual half\n"
           "conversion; fused/unfused = the first radix histogram inside tip or as its own pass, the other way\n"
           "round from the default; att_hb4 = 4 heads per attention work-group (fewer registers)\n");
    uint32_t cap = 0;
    for (uint32_t i = 0; i < nL; i++) cap = Ls[i] > cap ? Ls[i] : cap;
    fasa_model_shape shape = {1, HQ, HKV, D, FASA_ROPE_NORM};
    fasa_calibration *cal = t_calibration(ctx, &shape, NTIP, true, 1);
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = cap, .calibration = cal, .flags = FASA_CACHE_NO_DENSE_LAYERS};
    fasa_kv_cache *c = NULL;
    if (fasa_kv_cache_create(ctx, &kd, &c) != FASA_OK) {
        fprintf(stderr, "cache: %s\n", fasa_context_last_error(ctx));
        return 1;
    }
    uint64_t seed = 2026;
    const uint32_t chunk = 4096;
    float *k = malloc((size_t)chunk * HKV * D * 4), *v = malloc((size_t)chunk * HKV * D * 4);
    for (uint32_t done = 0; done < cap; done += chunk) {
        uint32_t n = cap - done < chunk ? cap - done : chunk;
        for (size_t i = 0; i < (size_t)n * HKV * D; i++) k[i] = t_uniform(&seed), v[i] = t_uniform(&seed);
        if (fasa_kv_cache_append(c, 0, n, k, v, FASA_DTYPE_F32) != FASA_OK) {
            fprintf(stderr, "append: %s\n", fasa_context_last_error(ctx));
            return 1;
        }
    }
    free(k);
    free(v);
    float qh[HQ * D];
    for (size_t i = 0; i < HQ * D; i++) qh[i] = t_uniform(&seed);
    fasa_buffer *q = NULL, *o = NULL;
    fasa_buffer_create(ctx, sizeof qh, &q);
    fasa_buffer_create(ctx, sizeof qh, &o);
    fasa_buffer_write(q, 0, qh, sizeof qh);

    bool ok = true;
    printf("\n%8s %-9s %-6s %11s %11s %9s %11s %8s\n", "L", "variant", "step", "median_us", "min_us", "cpu_ms",
           "MB_read", "GB/s");
    /* variants of the device's tunables: the fp16 load path, the first
     * radix pass fused into tip or not, heads per attention work-group */
    struct variant {
        const char *name;
        uint32_t half_load, fuse_hist, att_hb; /* att_hb 0: the preset's */
    } variants[] = {{"default", 0, 0, 0}, {"uint4", 1, 0, 0}, {"", 0, 1, 0}, {"att_hb4", 0, 0, 4}};
    cl_tuning base;
    fasa__cl_get_tuning(ctx, &base);
    variants[2].name = base.fuse_hist ? "unfused" : "fused"; /* fuse_hist 1 there: flip it */
    for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++) {
        const struct variant *va = &variants[vi];
        cl_tuning tune = base;
        tune.half_load = va->half_load;
        if (va->fuse_hist) tune.fuse_hist = !base.fuse_hist;
        if (va->att_hb) tune.att_hb = va->att_hb;
        if (vi > 0 && tune.att_hb == base.att_hb && va->att_hb) continue; /* same as the first */
        if (fasa__cl_retune(ctx, &tune) != FASA_OK) {
            printf("variant %s: rebuild failed: %s\n", va->name, fasa_context_last_error(ctx));
            continue;
        }
        for (uint32_t li = 0; li < nL; li++) {
            uint32_t L = Ls[li];
            fasa_kv_cache_truncate(c, L);
            result dr, fr;
            measure(ctx, c, q, o, iters, &dr, &fr);
            double dense_mb = 2.0 * HKV * L * D * 2 / 1e6;
            double fasa_mb = (HKV * (double)L * 32 * 2 + HQ * (double)L * 4 + HQ * (double)NFAC * 2 * D * 2) / 1e6;
            double ratio = (double)dr.med_ns / (double)fr.med_ns;
            const char *lp = va->name;
            printf("%8u %-9s %-6s %11.1f %11.1f %9.1f %11.2f %8.1f\n", L, lp, "dense", dr.med_ns / 1e3, dr.min_ns / 1e3,
                   dr.cpu_ms, dense_mb, dense_mb * 1e6 / dr.med_ns);
            printf("%8u %-9s %-6s %11.1f %11.1f %9.1f %11.2f %8.1f   FASA %.2fx faster\n", L, lp, "fasa",
                   fr.med_ns / 1e3, fr.min_ns / 1e3, fr.cpu_ms, fasa_mb, fasa_mb * 1e6 / fr.med_ns, ratio);
            print_kernels("dense", &dr);
            print_kernels("fasa", &fr);
            if (json)
                printf("{\"date\":\"%s\",\"device\":\"%s\",\"driver\":\"%s\",\"L\":%u,\"load\":\"%s\","
                       "\"dense_us\":%.1f,\"fasa_us\":%.1f,\"ratio\":%.3f,\"tip_us\":%.1f,\"dense_kernel_us\":%.1f}\n",
                       date, info.name, info.driver, L, lp, dr.med_ns / 1e3, fr.med_ns / 1e3, ratio,
                       fr.kernel_med[CLK_TIP] / 1e3, dr.kernel_med[CLK_DENSE] / 1e3);
            if (check > 0 && vi == 0 && ratio < check) { /* the default tunables */
                printf("CHECK FAILED: L %u (%s): FASA is %.2fx faster than dense, wanted %.2fx\n", L, lp,
                       ratio, check);
                ok = false;
            }
        }
    }
    if (do_probe) probe((cl_ctx *)((struct fasa_context *)ctx)->impl, json);
    fasa_buffer_destroy(q);
    fasa_buffer_destroy(o);
    fasa_kv_cache_destroy(c);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
    return ok ? 0 : 1;
}
