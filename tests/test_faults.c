/* Fault injection sweep: for every fault kind and every n, make the n-th
 * resource acquisition fail during a scenario that touches every public
 * call.  The failing call must return an out-of-memory or backend status
 * with a message, leave outputs and the cache untouched, and the context
 * must run the whole scenario correctly afterwards.  Under valgrind or ASan
 * it also shows that nothing leaks on any error path.
 * Usage: test_faults [backend]   (default cpu; exits 77 if unavailable) */
#include "check.h"
#include "fasa.h"
#include "fasa_debug.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HQ 4
#define HKV 2
#define D 64
#define NTIP 4
#define L 300

static float k_in[L * HKV * D], v_in[L * HKV * D], q_in[HQ * D];

static void make_inputs(void)
{
    for (int i = 0; i < L * HKV * D; i++) {
        k_in[i] = sinf(0.37f * (float)i) * 0.8f;
        v_in[i] = cosf(0.11f * (float)i);
    }
    for (int i = 0; i < HQ * D; i++) q_in[i] = sinf(1.3f * (float)i);
}

static bool acceptable(fasa_status st)
{
    return st == FASA_ERROR_OUT_OF_HOST_MEMORY || st == FASA_ERROR_OUT_OF_DEVICE_MEMORY ||
           st == FASA_ERROR_BACKEND || st == FASA_ERROR_DEVICE_LOST;
}

typedef struct scenario {
    fasa_context *ctx;
    fasa_calibration *cal, *loaded;
    fasa_kv_cache *cache;
    fasa_calibrator *calr;
    fasa_buffer *qb, *ob;
    float o_sparse[HQ * D], o_dense[HQ * D], o_buf[HQ * D];
    const char *failed_at;       /* the step that failed, or NULL */
    fasa_status status;
} scenario;

static void cleanup(scenario *s)
{
    fasa_buffer_destroy(s->qb);
    fasa_buffer_destroy(s->ob);
    fasa_kv_cache_destroy(s->cache);
    fasa_calibrator_destroy(s->calr);
    fasa_calibration_destroy(s->cal);
    fasa_calibration_destroy(s->loaded);
    s->qb = s->ob = NULL;
    s->cache = NULL;
    s->calr = NULL;
    s->cal = s->loaded = NULL;
}

/* Records the first failure; returns true if the step succeeded. */
static bool step(scenario *s, fasa_status st, const char *what)
{
    if (st == FASA_OK) return true;
    s->failed_at = what;
    s->status = st;
    return false;
}

static bool decode_steps(scenario *s)
{
    const float poison = -777.0f;
    for (int i = 0; i < HQ * D; i++) s->o_sparse[i] = s->o_dense[i] = poison;
    fasa_decode_desc sparse = {.n_fac = 64}, dense = {.mode = FASA_MODE_DENSE};
    fasa_status st = fasa_decode_host(s->cache, 1, &sparse, q_in, s->o_sparse, NULL);
    if (st != FASA_OK) {
        for (int i = 0; i < HQ * D; i++) CHECK(s->o_sparse[i] == poison, "failed decode wrote o[%d]", i);
        return step(s, st, "decode_host sparse");
    }
    if (!step(s, fasa_decode_host(s->cache, 1, &dense, q_in, s->o_dense, NULL), "decode_host dense")) return false;
    if (!step(s, fasa_buffer_create(s->ctx, sizeof q_in, &s->qb), "buffer_create q")) return false;
    if (!step(s, fasa_buffer_create(s->ctx, sizeof q_in, &s->ob), "buffer_create o")) return false;
    if (!step(s, fasa_buffer_write(s->qb, 0, q_in, sizeof q_in), "buffer_write")) return false;
    if (!step(s, fasa_decode(s->cache, 1, &sparse, s->qb, 0, s->ob, 0), "decode")) return false;
    return step(s, fasa_buffer_read(s->ob, 0, s->o_buf, sizeof s->o_buf), "buffer_read");
}

static bool calibration_steps(scenario *s)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/fasa-faults-%d.json", (int)getpid());
    fasa_model_shape shape = {2, HQ, HKV, D, FASA_ROPE_NORM};
    fasa_calibrator_desc cd = {.shape = shape, .n_tip = NTIP, .k_calib = 16};
    bool ok = step(s, fasa_calibrator_create(s->ctx, &cd, &s->calr), "calibrator_create") &&
              step(s, fasa_calibrator_add(s->calr, 0, q_in, k_in, 50), "calibrator_add 0") &&
              step(s, fasa_calibrator_add(s->calr, 1, q_in, k_in, 60), "calibrator_add 1") &&
              step(s, fasa_calibrator_finish(s->calr, &s->loaded), "calibrator_finish") &&
              step(s, fasa_calibration_save(s->loaded, path), "calibration_save");
    fasa_calibration_destroy(s->loaded);
    s->loaded = NULL;
    ok = ok && step(s, fasa_calibration_load(s->ctx, path, &shape, &s->loaded), "calibration_load");
    remove(path);
    return ok;
}

static bool run(scenario *s)
{
    s->failed_at = NULL;
    uint16_t dims[2 * HQ * 2 * NTIP];
    for (int h = 0; h < 2 * HQ; h++)
        for (int i = 0; i < 2 * NTIP; i++) dims[h * 2 * NTIP + i] = (uint16_t)(8 * (h % 3) + i);
    fasa_model_shape shape = {2, HQ, HKV, D, FASA_ROPE_NORM};
    fasa_calibration_desc cd = {.shape = shape, .n_tip = NTIP, .dims = dims};
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = L};
    bool ok = step(s, fasa_calibration_create(s->ctx, &cd, &s->cal), "calibration_create");
    kd.calibration = s->cal;
    ok = ok && step(s, fasa_kv_cache_create(s->ctx, &kd, &s->cache), "kv_cache_create");
    ok = ok && step(s, fasa_kv_cache_append(s->cache, 1, 200, k_in, v_in, FASA_DTYPE_F32), "append 1");
    if (ok) {
        fasa_status st = fasa_kv_cache_append(s->cache, 1, L - 200, k_in + 200 * HKV * D, v_in + 200 * HKV * D,
                                              FASA_DTYPE_F32);
        uint32_t len = 0;
        fasa_kv_cache_length(s->cache, 1, &len);
        CHECK(st == FASA_OK || len == 200, "a failed append changed the length to %u", len);
        ok = step(s, st, "append 2");
    }
    ok = ok && decode_steps(s) && calibration_steps(s);
    cleanup(s);
    return ok;
}

static void sweep(fasa_context *ctx, fasa_fault kind, const scenario *reference)
{
    static const char *names[] = {"host-alloc", "device-alloc", "map", "build", "submit"};
    uint32_t points = 0;
    for (uint32_t n = 1; n < 100000; n++) {
        scenario s = {.ctx = ctx};
        fasa_debug_fault(ctx, kind, n);
        bool ok = run(&s);
        uint32_t seen = fasa_debug_fault_count(ctx, kind);
        fasa_debug_fault(ctx, kind, 0);
        if (seen < n) { /* the fault never fired: every point is covered */
            CHECK(ok, "%s: unfaulted run failed at %s", names[kind], s.failed_at);
            break;
        }
        points++;
        CHECK(!ok && acceptable(s.status) && strlen(fasa_context_last_error(ctx)) > 0,
              "%s #%u: fault at %s gave %s", names[kind], n, s.failed_at ? s.failed_at : "(nothing failed)",
              fasa_status_string(s.status));
        /* the context must still work, with the same results */
        scenario again = {.ctx = ctx};
        bool clean = run(&again);
        CHECK(clean && memcmp(again.o_sparse, reference->o_sparse, sizeof again.o_sparse) == 0 &&
                  memcmp(again.o_dense, reference->o_dense, sizeof again.o_dense) == 0,
              "%s #%u: context unusable after the fault (%s)", names[kind], n, again.failed_at);
    }
    printf("%s: %u fault points swept\n", names[kind], points);
}

int main(int argc, char **argv)
{
    fasa_backend backend = FASA_BACKEND_CPU;
    if (argc > 1 && fasa_backend_from_name(argv[1], &backend) != FASA_OK) return 2;
    make_inputs();
    char msg[512] = "";
    fasa_context *ctx = NULL;
    fasa_context_desc cd = {.backend = backend, .n_threads = 2, .error_message = msg, .error_message_size = sizeof msg};
    if (fasa_context_create(&cd, &ctx) != FASA_OK) {
        printf("skip: backend %s unavailable: %s\n", fasa_backend_name(backend), msg);
        return 77;
    }
    scenario reference = {.ctx = ctx};
    CHECK(run(&reference), "reference run failed at %s: %s", reference.failed_at, fasa_context_last_error(ctx));
    for (int kind = 0; kind < FASA_FAULT_COUNT_; kind++) sweep(ctx, (fasa_fault)kind, &reference);
    fasa_context_destroy(ctx);
    return check_done("test_faults");
}
