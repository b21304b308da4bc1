/* A CPU-only application of libfasa: links libfasa.so and nothing else of
 * the project, creates a CPU context, appends and decodes, and checks the
 * result against a plain dense reference.  It also shows that the CPU path
 * never loads a GPU runtime: after the work, neither libvulkan nor libOpenCL
 * is mapped into the process.
 *
 * usage: cpu_consumer [hidden]
 *   hidden: the GPU loaders are made unavailable by the caller
 *   (tests/abi/test_no_loaders.sh: an LD_PRELOAD shim or bind mounts); then
 *   fasa_list_devices(VULKAN / OPENCL) must report BACKEND_UNAVAILABLE with a
 *   message naming libvulkan.so.1 / libOpenCL.so.1, and the auto context
 *   must still work. */
#include "fasa.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define HQ 4
#define HKV 2
#define D 32
#define L 24

static int failed;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failed = 1;                                                                            \
            fprintf(stderr, "cpu_consumer: FAIL %s: ", #cond);                                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

/* Is a library whose file name starts with `prefix` mapped? */
static int mapped(const char *prefix)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        const char *slash = strrchr(line, '/');
        if (slash && strncmp(slash + 1, prefix, strlen(prefix)) == 0) found = 1;
    }
    fclose(f);
    return found;
}

static void decode_on_cpu(void)
{
    char msg[512] = "";
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = FASA_BACKEND_CPU, .n_threads = 2, .error_message = msg,
                            .error_message_size = sizeof msg};
    fasa_status st = fasa_context_create(&cd, &ctx);
    EXPECT(st == FASA_OK, "CPU context: %s (%s)", fasa_status_string(st), msg);
    if (st != FASA_OK) return;
    fasa_model_shape shape = {.n_layers = 1, .n_q_heads = HQ, .n_kv_heads = HKV, .head_dim = D};
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = 64, .dtype = FASA_DTYPE_F32};
    fasa_kv_cache *cache = NULL;
    st = fasa_kv_cache_create(ctx, &kd, &cache);
    EXPECT(st == FASA_OK, "cache: %s (%s)", fasa_status_string(st), fasa_context_last_error(ctx));
    static float k[L][HKV][D], v[L][HKV][D], q[HQ][D], o[HQ][D];
    for (int t = 0; t < L; t++)
        for (int g = 0; g < HKV; g++)
            for (int c = 0; c < D; c++) {
                k[t][g][c] = sinf(0.37f * (float)(t * 7 + g * 3 + c));
                v[t][g][c] = cosf(0.11f * (float)(t * 5 + g + 2 * c));
            }
    for (int h = 0; h < HQ; h++)
        for (int c = 0; c < D; c++) q[h][c] = sinf(0.23f * (float)(h * 13 + c));
    if (cache) st = fasa_kv_cache_append(cache, 0, L, k, v, FASA_DTYPE_F32);
    EXPECT(cache && st == FASA_OK, "append: %s (%s)", fasa_status_string(st), fasa_context_last_error(ctx));
    fasa_decode_desc dd = {.mode = FASA_MODE_DENSE};
    if (cache) st = fasa_decode_host(cache, 0, &dd, &q[0][0], &o[0][0], NULL);
    EXPECT(cache && st == FASA_OK, "decode: %s (%s)", fasa_status_string(st), fasa_context_last_error(ctx));
    /* the dense reference: softmax(q k^T / sqrt(d)) v per query head */
    double worst = 0;
    for (int h = 0; h < HQ; h++) {
        int g = h / (HQ / HKV);
        double s[L], m = -INFINITY, z = 0;
        for (int t = 0; t < L; t++) {
            s[t] = 0;
            for (int c = 0; c < D; c++) s[t] += (double)q[h][c] * k[t][g][c];
            s[t] /= sqrt((double)D);
            if (s[t] > m) m = s[t];
        }
        for (int t = 0; t < L; t++) z += exp(s[t] - m);
        for (int c = 0; c < D; c++) {
            double ref = 0;
            for (int t = 0; t < L; t++) ref += exp(s[t] - m) / z * v[t][g][c];
            double e = fabs(ref - o[h][c]);
            if (!(e <= worst)) worst = e;
        }
    }
    EXPECT(worst < 1e-4, "dense output differs from the reference by %g", worst);
    fasa_kv_cache_destroy(cache);
    fasa_context_destroy(ctx);
    printf("cpu_consumer: libfasa %s (0x%x), CPU decode matches the dense reference (max error %.2g)\n",
           fasa_version_string(), fasa_version(), worst);
}

int main(int argc, char **argv)
{
    int hidden = argc > 1 && strcmp(argv[1], "hidden") == 0;
    EXPECT(fasa_version() == FASA_VERSION, "library 0x%x, headers 0x%x", fasa_version(), (unsigned)FASA_VERSION);
    decode_on_cpu();
    /* the CPU backend opened no GPU runtime */
    EXPECT(!mapped("libvulkan.so"), "libvulkan is mapped after CPU-only work");
    EXPECT(!mapped("libOpenCL.so"), "libOpenCL is mapped after CPU-only work");
    EXPECT(!mapped("libcuda.so"), "libcuda is mapped after CPU-only work");

    if (hidden) {
        const struct { fasa_backend b; const char *lib; } gpu[] = {{FASA_BACKEND_VULKAN, "libvulkan.so.1"},
                                                                   {FASA_BACKEND_OPENCL, "libOpenCL.so.1"}};
        for (int i = 0; i < 2; i++) {
            char msg[512] = "";
            uint32_t n = 0;
            fasa_status st = fasa_list_devices(gpu[i].b, NULL, &n, msg, sizeof msg);
            if (!fasa_backend_compiled(gpu[i].b)) {
                printf("cpu_consumer: %s not compiled in (%s)\n", fasa_backend_name(gpu[i].b), msg);
                continue;
            }
            EXPECT(st == FASA_ERROR_BACKEND_UNAVAILABLE && strstr(msg, gpu[i].lib), "%s listing: %s (%s)",
                   fasa_backend_name(gpu[i].b), fasa_status_string(st), msg);
            printf("cpu_consumer: %s: %s: %s\n", fasa_backend_name(gpu[i].b), fasa_status_string(st), msg);
            /* an explicit context says the same */
            char cmsg[512] = "";
            fasa_context *ctx = NULL;
            fasa_context_desc cd = {.backend = gpu[i].b, .error_message = cmsg, .error_message_size = sizeof cmsg};
            st = fasa_context_create(&cd, &ctx);
            EXPECT(st == FASA_ERROR_BACKEND_UNAVAILABLE && !ctx && strstr(cmsg, gpu[i].lib), "%s context: %s (%s)",
                   fasa_backend_name(gpu[i].b), fasa_status_string(st), cmsg);
            fasa_context_destroy(ctx);
        }
        /* auto still finds a device (the CPU, where nothing else is left) */
        char msg[512] = "";
        fasa_context *ctx = NULL;
        fasa_context_desc cd = {.error_message = msg, .error_message_size = sizeof msg};
        fasa_status st = fasa_context_create(&cd, &ctx);
        EXPECT(st == FASA_OK, "auto context: %s (%s)", fasa_status_string(st), msg);
        if (ctx) printf("cpu_consumer: auto picks %s\n", fasa_backend_name(fasa_context_backend(ctx)));
        fasa_context_destroy(ctx);
        EXPECT(!mapped("libvulkan.so") && !mapped("libOpenCL.so"), "a hidden loader got mapped");
    }
    printf("cpu_consumer: %s\n", failed ? "FAILED" : "ok");
    return failed;
}
