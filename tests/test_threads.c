/* The threading rules of docs/API.md: two contexts used from two threads at
 * once, and one context shared by several threads (calls serialised by the
 * context).  Every thread's results must equal a single-threaded run.
 * Meant to run under ThreadSanitizer as well (tools/sanitize.sh).
 * Usage: test_threads [backend] */
#include "check.h"
#include "fasa.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#define HQ 4
#define HKV 2
#define D 64
#define L 400
#define STEPS 6
#define THREADS 4

static float k_in[L * HKV * D], v_in[L * HKV * D], q_in[HQ * D];
static fasa_backend backend = FASA_BACKEND_CPU;

typedef struct job {
    fasa_context *ctx;           /* shared, or NULL: the job makes its own */
    uint32_t seed;
    float o[STEPS][HQ * D];
    bool ok;
} job;

/* Builds a cache, appends in pieces and decodes after each piece. */
static bool work(fasa_context *ctx, uint32_t seed, float o[STEPS][HQ * D])
{
    uint16_t dims[2 * HQ * 8];
    for (int h = 0; h < 2 * HQ; h++)
        for (int i = 0; i < 8; i++) dims[h * 8 + i] = (uint16_t)(16 + 8 * (h % 2) + i);
    fasa_model_shape shape = {2, HQ, HKV, D, FASA_ROPE_NORM};
    fasa_calibration_desc cd = {.shape = shape, .n_tip = 4, .dims = dims};
    fasa_calibration *cal = NULL;
    fasa_kv_cache *cache = NULL;
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = L};
    bool ok = fasa_calibration_create(ctx, &cd, &cal) == FASA_OK;
    kd.calibration = cal;
    ok = ok && fasa_kv_cache_create(ctx, &kd, &cache) == FASA_OK;
    fasa_decode_desc dd = {.n_fac = 32 + seed % 3, .gqa_select = seed % 2 ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD};
    for (uint32_t s = 0; ok && s < STEPS; s++) {
        uint32_t first = s * (L / STEPS), n = s + 1 == STEPS ? L - first : L / STEPS;
        ok = fasa_kv_cache_append(cache, 1, n, k_in + first * HKV * D, v_in + first * HKV * D, FASA_DTYPE_F32) == FASA_OK &&
             fasa_decode_host(cache, 1, &dd, q_in, o[s], NULL) == FASA_OK;
    }
    fasa_kv_cache_destroy(cache);
    fasa_calibration_destroy(cal);
    return ok;
}

static fasa_context *make_context(void)
{
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = backend, .n_threads = 2};
    return fasa_context_create(&cd, &ctx) == FASA_OK ? ctx : NULL;
}

static void *thread_main(void *arg)
{
    job *j = arg;
    fasa_context *own = j->ctx ? NULL : make_context();
    fasa_context *ctx = j->ctx ? j->ctx : own;
    j->ok = ctx && work(ctx, j->seed, j->o);
    fasa_context_destroy(own);
    return NULL;
}

static void run_threads(job *jobs, int n)
{
    pthread_t t[THREADS];
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, thread_main, &jobs[i]);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

static void compare(const job *jobs, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        job ref = {.seed = jobs[i].seed};
        fasa_context *ctx = make_context();
        ref.ok = ctx && work(ctx, ref.seed, ref.o);
        fasa_context_destroy(ctx);
        CHECK(jobs[i].ok && ref.ok && memcmp(jobs[i].o, ref.o, sizeof ref.o) == 0,
              "%s: thread %d differs from the single-threaded run", what, i);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && fasa_backend_from_name(argv[1], &backend) != FASA_OK) return 2;
    for (int i = 0; i < L * HKV * D; i++) {
        k_in[i] = sinf(0.7f * (float)i);
        v_in[i] = cosf(0.3f * (float)i);
    }
    for (int i = 0; i < HQ * D; i++) q_in[i] = cosf(2.1f * (float)i);
    fasa_context *probe = make_context();
    if (!probe) {
        printf("skip: backend %s unavailable\n", fasa_backend_name(backend));
        return 77;
    }
    fasa_context_destroy(probe);

    job separate[2] = {{.seed = 1}, {.seed = 2}};
    run_threads(separate, 2);
    compare(separate, 2, "two contexts");

    fasa_context *shared = make_context();
    job together[THREADS];
    for (int i = 0; i < THREADS; i++) together[i] = (job){.ctx = shared, .seed = (uint32_t)(10 + i)};
    run_threads(together, THREADS);
    /* a failing call from one thread while others work: still consistent */
    fasa_decode_desc bad = {.n_fac = 9999};
    float o[HQ * D];
    CHECK(fasa_decode_host(NULL, 0, &bad, q_in, o, NULL) == FASA_ERROR_INVALID_ARGUMENT, "NULL cache");
    fasa_context_destroy(shared);
    compare(together, THREADS, "one shared context");
    return check_done("test_threads");
}
