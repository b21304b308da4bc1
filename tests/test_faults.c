/* Fault injection sweep (fasa_debug.h): for every fault kind and every n,
 * make the n-th event of that kind fail during a scenario that touches the
 * public calls (FASA-C and FASA-M caches, appends from host and buffers,
 * decodes with outputs, reads, truncation, calibration).
 *
 * A failing call must return an out-of-memory, backend or device-lost
 * status and log an error; the outputs it was given stay untouched (o of a
 * decode, the destination of a read, the length after an append, NULL for
 * a create).  The call is then made again on the same objects and must
 * succeed, and the scenario must end with the results of an unfaulted run:
 * a failed call leaves no half-written state behind.  A call that fails
 * with FASA_ERROR_DEVICE_LOST ends the scenario instead; the context must
 * then report the loss on later calls (the documented state), its objects
 * must still be destroyable, and the sweep goes on with a new context.
 *
 * Events of context creation (and pipeline builds, which the Vulkan backend
 * makes at the first cache of a dtype) happen once per context: they are
 * swept with a new context per point (fasa_debug_context_create).  All
 * other events are swept on one long-lived context.  Kinds with more than
 * MAX_POINTS events per scenario are swept with a stride: every
 * ceil(events / MAX_POINTS)-th event, starting at the first (deterministic).
 * Under valgrind or ASan the sweep also shows that no error path leaks.
 *
 * Usage: test_faults [backend [kind...]]   (default: cpu, every kind; exits
 * 77 if the backend is unavailable).  Kinds: host-alloc device-alloc map
 * build submit.  FASA_TEST_NO_VALIDATION=1 leaves the Vulkan validation
 * layer off (it is slow under valgrind). */
#include "check.h"
#include "fasa.h"
#include "fasa_debug.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HQ 4
#define HKV 2
#define D 64
#define NTIP 4
#define L 300
#define NFAC 64
#define NAPP 16      /* tokens appended to layer 0 from buffers */
#define RC_ROWS 160  /* FASA-M row cache rows (>= G * NFAC) */
#define TRUNC 250    /* FASA-M: truncated to this, then refilled with other data */
#ifndef MAX_POINTS
#define MAX_POINTS 400u
#endif

static float k_in[L * HKV * D], v_in[L * HKV * D], q_in[HQ * D], q2[HQ * D];
static float k_alt[(L - TRUNC) * HKV * D], v_alt[(L - TRUNC) * HKV * D];
static const float poison = -777.0f;
static const char *names[] = {"host-alloc", "device-alloc", "map", "build", "submit"};

static void make_inputs(void)
{
    for (int i = 0; i < L * HKV * D; i++) {
        k_in[i] = sinf(0.37f * (float)i) * 0.8f;
        v_in[i] = cosf(0.11f * (float)i);
    }
    for (int i = 0; i < (L - TRUNC) * HKV * D; i++) {
        k_alt[i] = cosf(0.53f * (float)i) * 0.9f;
        v_alt[i] = sinf(0.29f * (float)i) + 0.5f;
    }
    for (int i = 0; i < HQ * D; i++) {
        q_in[i] = sinf(1.3f * (float)i);
        q2[i] = cosf(0.7f * (float)i);
    }
}

static bool acceptable(fasa_status st)
{
    return st == FASA_ERROR_OUT_OF_HOST_MEMORY || st == FASA_ERROR_OUT_OF_DEVICE_MEMORY ||
           st == FASA_ERROR_BACKEND || st == FASA_ERROR_DEVICE_LOST;
}

/* Errors the library logged: a failing call must log one.  Validation
 * messages (Vulkan) are counted apart: one raised on an error path is
 * dropped from the failing call's status, so only the log shows it. */
static unsigned n_errors, n_validation;
static void count_errors(void *user, fasa_log_level level, const char *msg)
{
    (void)user;
    if (level >= FASA_LOG_ERROR) n_errors++;
    if (strstr(msg, "vulkan validation")) {
        n_validation++;
        fprintf(stderr, "%s\n", msg);
    }
}

static fasa_backend backend = FASA_BACKEND_CPU;
static uint32_t ctx_flags;
static float tolerance; /* GPU backends may sum in another order (docs: bitwise reproducibility) */

static fasa_context_desc context_desc(char *msg, size_t msg_size)
{
    fasa_context_desc cd = {.backend = backend, .n_threads = 2, .flags = ctx_flags, .error_message = msg,
                            .error_message_size = msg_size};
    cd.logger = (fasa_logger){count_errors, NULL, FASA_LOG_WARN};
    return cd;
}

/* ------------------------------------------------------------------------ */
/* The scenario                                                              */
/* ------------------------------------------------------------------------ */

typedef struct results {
    float o_sparse[HQ * D], o_dense[HQ * D], o_buf[HQ * D], o_l0[HQ * D];
    int32_t sel[HQ * NFAC];
    float k_read[NAPP * HKV * D];
    float o_m[3][HQ * D];
    float o_imp[HQ * D];         /* FASA-M in application host memory (Vulkan) */
    float o_x[HQ * D];           /* external K/V (the engine's buffer) */
    uint16_t o_bf16[HQ * D];     /* the buffer decode again, o in bf16 (desc.o_type) */
} results;

typedef struct scenario {
    fasa_context *ctx;
    fasa_calibration *cal, *loaded;
    fasa_kv_cache *cache, *mcache, *icache, *xcache;
    fasa_calibrator *calr;
    fasa_buffer *qb, *ob, *kvb, *xb;
    results r;
    const char *failed_at;       /* the call that failed first, or NULL */
    fasa_status status;
    const char *failed_again;    /* a second failure (its retry or a later call) */
    bool lost;                   /* the failure was DEVICE_LOST: the scenario stopped */
    unsigned errors_before;
} scenario;

static void cleanup(scenario *s)
{
    fasa_buffer_destroy(s->qb);
    fasa_buffer_destroy(s->ob);
    fasa_buffer_destroy(s->kvb);
    fasa_kv_cache_destroy(s->cache);
    fasa_kv_cache_destroy(s->mcache);
    fasa_kv_cache_destroy(s->icache);
    fasa_kv_cache_destroy(s->xcache);
    fasa_buffer_destroy(s->xb); /* after the cache that reads it */
    fasa_calibrator_destroy(s->calr);
    fasa_calibration_destroy(s->cal);
    fasa_calibration_destroy(s->loaded);
    s->qb = s->ob = s->kvb = s->xb = NULL;
    s->cache = s->mcache = s->icache = s->xcache = NULL;
    s->calr = NULL;
    s->cal = s->loaded = NULL;
}

static bool mark(scenario *s)
{
    s->errors_before = n_errors;
    return true;
}

/* The first result of a call: true if it succeeded.  A failure must be
 * the scenario's only one (the armed fault), with an acceptable status and
 * a logged error; after DEVICE_LOST the scenario stops. */
static bool first(scenario *s, const char *what, fasa_status st)
{
    if (st == FASA_OK) return true;
    if (s->failed_at) {
        s->failed_again = what;
        CHECK(false, "%s failed with %s after the fault had fired at %s: %s", what, fasa_status_string(st),
              s->failed_at, fasa_context_last_error(s->ctx));
        return false;
    }
    s->failed_at = what;
    s->status = st;
    CHECK(acceptable(st), "%s failed with %s: %s", what, fasa_status_string(st), fasa_context_last_error(s->ctx));
    CHECK(n_errors > s->errors_before, "%s failed with %s but logged no error", what, fasa_status_string(st));
    s->lost = st == FASA_ERROR_DEVICE_LOST;
    return false;
}

/* The retry of a failed call, made unless the context is lost (or the
 * retry already failed): it must succeed. */
static bool can_retry(const scenario *s) { return !s->lost && !s->failed_again; }

static bool retried(scenario *s, const char *what, fasa_status st)
{
    if (st == FASA_OK) return true;
    s->failed_again = what;
    CHECK(false, "%s failed again (%s) after a %s: %s", what, fasa_status_string(st),
          fasa_status_string(s->status), fasa_context_last_error(s->ctx));
    return false;
}

#define AGAIN(s, what, call) (can_retry(s) && retried((s), (what), (call)))

/* Runs a call; if it fails (and the context is not lost), once more. */
#define TRY(s, what, call) (mark(s) && (first((s), (what), (call)) || AGAIN((s), (what), (call))))

static void fill(float *x, size_t n, float v)
{
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static bool untouched(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (x[i] != poison) return false;
    return true;
}

/* A host decode whose o must stay untouched when it fails. */
static bool decode_host(scenario *s, fasa_kv_cache *c, uint32_t layer, const fasa_decode_desc *d, const float *q,
                        float *o, fasa_decode_outputs *out, const char *what)
{
    if (o) fill(o, HQ * D, poison); /* o NULL: a prefetch */
    mark(s);
    if (first(s, what, fasa_decode_host(c, layer, d, q, o, out))) return true;
    CHECK(!o || untouched(o, HQ * D), "%s: the failed decode wrote o", what);
    return AGAIN(s, what, fasa_decode_host(c, layer, d, q, o, out));
}

/* A host append whose length must not change when it fails. */
static bool append(scenario *s, fasa_kv_cache *c, uint32_t layer, uint32_t n, const float *k, const float *v,
                   const char *what)
{
    uint32_t before = 0, after = 0;
    fasa_kv_cache_length(c, layer, &before);
    mark(s);
    if (first(s, what, fasa_kv_cache_append(c, layer, n, k, v, FASA_DTYPE_F32))) return true;
    fasa_kv_cache_length(c, layer, &after);
    CHECK(after == before, "%s: the failed append changed the length from %u to %u", what, before, after);
    return AGAIN(s, what, fasa_kv_cache_append(c, layer, n, k, v, FASA_DTYPE_F32));
}

static bool no_object(const char *what, bool is_null)
{
    CHECK(is_null, "%s: the failed call returned an object", what);
    return true;
}

/* A create call: after a failure *out must be NULL; then it is retried. */
#define CREATE(s, what, call, out)                                                                                 \
    (mark(s) && (first((s), (what), (call)) || (no_object((what), (out) == NULL) && AGAIN((s), (what), (call)))))

static bool buffer_steps(scenario *s, const fasa_decode_desc *sparse)
{
    size_t kv_bytes = (size_t)NAPP * HKV * D * 4;
    if (!CREATE(s, "buffer_create q", fasa_buffer_create(s->ctx, sizeof q_in, &s->qb), s->qb) ||
        !CREATE(s, "buffer_create o", fasa_buffer_create(s->ctx, sizeof q_in, &s->ob), s->ob) ||
        !CREATE(s, "buffer_create kv", fasa_buffer_create(s->ctx, 2 * kv_bytes, &s->kvb), s->kvb) ||
        !TRY(s, "buffer_write q", fasa_buffer_write(s->qb, 0, q_in, sizeof q_in)))
        return false;
    float o[HQ * D];
    fill(o, HQ * D, poison);
    if (!TRY(s, "buffer_write o", fasa_buffer_write(s->ob, 0, o, sizeof o))) return false;
    mark(s);
    if (!first(s, "decode", fasa_decode(s->cache, 1, sparse, s->qb, 0, s->ob, 0))) {
        if (s->lost) return false;
        CHECK(fasa_buffer_read(s->ob, 0, o, sizeof o) == FASA_OK && untouched(o, HQ * D),
              "decode: the failed decode wrote o");
        if (!AGAIN(s, "decode", fasa_decode(s->cache, 1, sparse, s->qb, 0, s->ob, 0))) return false;
    }
    fill(s->r.o_buf, HQ * D, poison);
    mark(s);
    if (!first(s, "buffer_read", fasa_buffer_read(s->ob, 0, s->r.o_buf, sizeof s->r.o_buf))) {
        CHECK(untouched(s->r.o_buf, HQ * D), "buffer_read: the failed read wrote its destination");
        if (!AGAIN(s, "buffer_read", fasa_buffer_read(s->ob, 0, s->r.o_buf, sizeof s->r.o_buf))) return false;
    }
    /* the same step with o rounded to bf16 (the o conversion of each backend) */
    fasa_decode_desc io = *sparse;
    io.o_type = FASA_IO_BF16;
    if (!TRY(s, "decode o bf16", fasa_decode(s->cache, 1, &io, s->qb, 0, s->ob, 0)) ||
        !TRY(s, "buffer_read o bf16", fasa_buffer_read(s->ob, 0, s->r.o_bf16, sizeof s->r.o_bf16)))
        return false;
    /* layer 0 from buffers, then read back */
    if (!TRY(s, "buffer_write k", fasa_buffer_write(s->kvb, 0, k_in, kv_bytes)) ||
        !TRY(s, "buffer_write v", fasa_buffer_write(s->kvb, kv_bytes, v_in, kv_bytes)))
        return false;
    mark(s);
    if (!first(s, "append_buffers",
               fasa_kv_cache_append_buffers(s->cache, 0, NAPP, s->kvb, 0, s->kvb, kv_bytes, FASA_DTYPE_F32))) {
        uint32_t len = 1;
        fasa_kv_cache_length(s->cache, 0, &len);
        CHECK(len == 0, "append_buffers: the failed append changed the length to %u", len);
        if (!AGAIN(s, "append_buffers",
                   fasa_kv_cache_append_buffers(s->cache, 0, NAPP, s->kvb, 0, s->kvb, kv_bytes, FASA_DTYPE_F32)))
            return false;
    }
    if (!decode_host(s, s->cache, 0, NULL, q_in, s->r.o_l0, NULL, "decode_host layer 0")) return false;
    fill(s->r.k_read, NAPP * HKV * D, poison);
    mark(s);
    if (!first(s, "kv_cache_read", fasa_kv_cache_read(s->cache, 0, 0, NAPP, s->r.k_read, NULL))) {
        CHECK(untouched(s->r.k_read, NAPP * HKV * D), "kv_cache_read: the failed read wrote its destination");
        if (!AGAIN(s, "kv_cache_read", fasa_kv_cache_read(s->cache, 0, 0, NAPP, s->r.k_read, NULL))) return false;
    }
    return TRY(s, "context_finish", fasa_context_finish(s->ctx));
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static bool decode_steps(scenario *s)
{
    fasa_decode_desc sparse = {.n_fac = NFAC}, dense = {.mode = FASA_MODE_DENSE};
    fasa_decode_outputs out = {.selected = s->r.sel, .selected_stride = NFAC};
    if (!decode_host(s, s->cache, 1, &sparse, q_in, s->r.o_sparse, &out, "decode_host sparse")) return false;
    for (int h = 0; h < HQ; h++) qsort(s->r.sel + h * NFAC, NFAC, sizeof(int32_t), cmp_i32); /* a set */
    if (!decode_host(s, s->cache, 1, &dense, q_in, s->r.o_dense, NULL, "decode_host dense")) return false;
    return buffer_steps(s, &sparse);
}

/* FASA-M: offloaded K/V with staged fetches into a row cache.  The forced
 * recent tokens are resident when the cache is truncated and refilled with
 * other data: the third decode sees stale rows unless the truncation took. */
static bool fasam_steps(scenario *s, const fasa_model_shape *shape)
{
    fasa_kv_cache_desc kd = {.shape = *shape, .capacity = L, .calibration = s->cal,
                             .placement = FASA_PLACEMENT_OFFLOAD, .fetch = FASA_FETCH_STAGED,
                             .row_cache_rows = RC_ROWS};
    fasa_decode_desc d = {.n_fac = NFAC, .n_recent = 8}, pd = d;
    pd.flags = FASA_DECODE_PREFETCH;
    fasa_transfer_stats stats;
    return CREATE(s, "kv_cache_create FASA-M", fasa_kv_cache_create(s->ctx, &kd, &s->mcache), s->mcache) &&
           append(s, s->mcache, 1, L, k_in, v_in, "FASA-M append") &&
           decode_host(s, s->mcache, 1, &d, q_in, s->r.o_m[0], NULL, "FASA-M decode 1") &&
           decode_host(s, s->mcache, 1, &pd, q2, NULL, NULL, "FASA-M prefetch 2") &&
           decode_host(s, s->mcache, 1, &d, q2, s->r.o_m[1], NULL, "FASA-M decode 2") &&
           TRY(s, "FASA-M truncate", fasa_kv_cache_truncate(s->mcache, TRUNC)) &&
           append(s, s->mcache, 1, L - TRUNC, k_alt, v_alt, "FASA-M append after truncate") &&
           decode_host(s, s->mcache, 1, &pd, q_in, NULL, NULL, "FASA-M prefetch 3") &&
           decode_host(s, s->mcache, 1, &d, q_in, s->r.o_m[2], NULL, "FASA-M decode 3") &&
           TRY(s, "FASA-M transfer_stats", fasa_kv_cache_transfer_stats(s->mcache, &stats, false));
}

/* Application host memory for the imported FASA-M cache (allocated once). */
static uint8_t *host_mem;

/* FASA-M with K and V in application host memory, where the backend can
 * import it (Vulkan with VK_EXT_external_memory_host): the first FASA-M
 * decode again, which must give the same output. */
static bool imported_steps(scenario *s, const fasa_model_shape *shape)
{
    fasa_kv_cache_desc kd = {.shape = *shape, .capacity = L, .calibration = s->cal,
                             .placement = FASA_PLACEMENT_OFFLOAD, .fetch = FASA_FETCH_STAGED,
                             .row_cache_rows = RC_ROWS};
    fasa_decode_desc d = {.n_fac = NFAC, .n_recent = 8};
    uint64_t size = 0, align = 0;
    fasa_status st = fasa_kv_cache_host_memory_requirements(s->ctx, &kd, &size, &align);
    if (st == FASA_ERROR_UNSUPPORTED) return true; /* not on this backend */
    if (!TRY(s, "host_memory_requirements", st)) return false;
    if (!host_mem && !(host_mem = aligned_alloc(align, (size + align - 1) / align * align))) return false;
    kd.host_memory = host_mem;
    kd.host_memory_size = size;
    bool ok = CREATE(s, "kv_cache_create imported", fasa_kv_cache_create(s->ctx, &kd, &s->icache), s->icache) &&
              append(s, s->icache, 1, L, k_in, v_in, "imported append") &&
              decode_host(s, s->icache, 1, &d, q_in, s->r.o_imp, NULL, "imported decode");
    CHECK(!ok || memcmp(s->r.o_imp, s->r.o_m[0], sizeof s->r.o_imp) == 0,
          "the imported cache's output differs from the FASA-M cache's");
    return ok;
}

/* A sync whose length must not change when it fails. */
static bool sync_tokens(scenario *s, fasa_kv_cache *c, uint32_t t0, uint32_t n, const char *what)
{
    uint32_t before = 0, after = 0;
    fasa_kv_cache_length(c, 1, &before);
    mark(s);
    if (first(s, what, fasa_kv_cache_sync(c, 1, t0, n))) return true;
    fasa_kv_cache_length(c, 1, &after);
    CHECK(after == before, "%s: the failed sync changed the length from %u to %u", what, before, after);
    return AGAIN(s, what, fasa_kv_cache_sync(c, 1, t0, n));
}

/* bf16 bits of x, nearest even (x is finite here). */
static uint16_t to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* External K/V: the engine's buffer holds K then V token-major in bf16 (so
 * the bf16 kernels, and the OpenCL bf16 program built with this first bf16
 * cache, are swept too); the cache is synced in two pieces, then decoded. */
static bool external_steps(scenario *s, const fasa_model_shape *shape)
{
    static uint16_t kv16[2 * L * HKV * D];
    uint64_t n = (uint64_t)L * HKV * D, bytes = n * 2, offs[2] = {bytes, bytes};
    for (uint64_t i = 0; i < n; i++) kv16[i] = to_bf16(k_in[i]), kv16[n + i] = to_bf16(v_in[i]);
    if (!CREATE(s, "buffer_create external", fasa_buffer_create(s->ctx, 2 * bytes, &s->xb), s->xb) ||
        !TRY(s, "buffer_write external k and v", fasa_buffer_write(s->xb, 0, kv16, 2 * bytes)))
        return false;
    fasa_buffer *bufs[2] = {s->xb, s->xb};
    fasa_kv_external x = {.token_stride = HKV * D, .head_stride = D, .k = bufs, .v = bufs, .v_offset = offs};
    fasa_kv_cache_desc kd = {.shape = *shape, .capacity = L, .dtype = FASA_DTYPE_BF16, .calibration = s->cal,
                             .external = &x};
    fasa_decode_desc d = {.n_fac = NFAC};
    return CREATE(s, "kv_cache_create external", fasa_kv_cache_create(s->ctx, &kd, &s->xcache), s->xcache) &&
           sync_tokens(s, s->xcache, 0, 200, "sync 1") && sync_tokens(s, s->xcache, 200, L - 200, "sync 2") &&
           decode_host(s, s->xcache, 1, &d, q_in, s->r.o_x, NULL, "external decode");
}

static bool calibration_steps(scenario *s)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/fasa-faults-%d.json", (int)getpid());
    fasa_model_shape shape = {2, HQ, HKV, D, FASA_ROPE_NORM};
    fasa_calibrator_desc cd = {.shape = shape, .n_tip = NTIP, .k_calib = 16};
    bool ok = CREATE(s, "calibrator_create", fasa_calibrator_create(s->ctx, &cd, &s->calr), s->calr) &&
              TRY(s, "calibrator_add 0", fasa_calibrator_add(s->calr, 0, q_in, k_in, 50)) &&
              TRY(s, "calibrator_add 1", fasa_calibrator_add(s->calr, 1, q_in, k_in, 60)) &&
              CREATE(s, "calibrator_finish", fasa_calibrator_finish(s->calr, &s->loaded), s->loaded) &&
              TRY(s, "calibration_save", fasa_calibration_save(s->loaded, path));
    fasa_calibration_destroy(s->loaded);
    s->loaded = NULL;
    ok = ok && CREATE(s, "calibration_load", fasa_calibration_load(s->ctx, path, &shape, &s->loaded), s->loaded);
    remove(path);
    return ok;
}

static bool run(scenario *s)
{
    s->failed_at = s->failed_again = NULL;
    s->lost = false;
    uint16_t dims[2 * HQ * 2 * NTIP];
    for (int h = 0; h < 2 * HQ; h++)
        for (int i = 0; i < 2 * NTIP; i++) dims[h * 2 * NTIP + i] = (uint16_t)(8 * (h % 3) + i);
    fasa_model_shape shape = {2, HQ, HKV, D, FASA_ROPE_NORM};
    fasa_calibration_desc cd = {.shape = shape, .n_tip = NTIP, .dims = dims};
    fasa_kv_cache_desc kd = {.shape = shape, .capacity = L};
    bool ok = CREATE(s, "calibration_create", fasa_calibration_create(s->ctx, &cd, &s->cal), s->cal);
    kd.calibration = s->cal;
    ok = ok && CREATE(s, "kv_cache_create", fasa_kv_cache_create(s->ctx, &kd, &s->cache), s->cache);
    ok = ok && append(s, s->cache, 1, 200, k_in, v_in, "append 1");
    ok = ok && append(s, s->cache, 1, L - 200, k_in + 200 * HKV * D, v_in + 200 * HKV * D, "append 2");
    ok = ok && decode_steps(s) && fasam_steps(s, &shape) && imported_steps(s, &shape) && external_steps(s, &shape) &&
         calibration_steps(s);
    cleanup(s);
    return ok && !s->failed_again;
}

static bool close_to(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(a[i] - b[i]) <= tolerance * fmaxf(1.0f, fabsf(b[i])))) return false;
    return true;
}

/* bf16 outputs: equal, or (GPU backends, whose fp32 sums may differ by
 * the tolerance) one bf16 step apart. */
static bool close_bf16(const uint16_t *a, const uint16_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int d = (int)a[i] - (int)b[i];
        if (d != 0 && (tolerance == 0.0f || d > 1 || d < -1 || (a[i] ^ b[i]) >> 15)) return false;
    }
    return true;
}

static bool same_results(const results *a, const results *b)
{
    return close_to(a->o_sparse, b->o_sparse, HQ * D) && close_to(a->o_dense, b->o_dense, HQ * D) &&
           close_to(a->o_buf, b->o_buf, HQ * D) && close_to(a->o_l0, b->o_l0, HQ * D) &&
           close_to(&a->o_m[0][0], &b->o_m[0][0], 3 * HQ * D) && close_to(a->o_imp, b->o_imp, HQ * D) &&
           close_to(a->o_x, b->o_x, HQ * D) && memcmp(a->sel, b->sel, sizeof a->sel) == 0 &&
           close_bf16(a->o_bf16, b->o_bf16, HQ * D) &&
           memcmp(a->k_read, b->k_read, sizeof a->k_read) == 0;
}

/* ------------------------------------------------------------------------ */
/* Sweeps                                                                    */
/* ------------------------------------------------------------------------ */

/* The documented state of a lost context: later calls report the loss. */
static void check_lost(fasa_context *ctx, const char *label)
{
    fasa_buffer *b = NULL;
    fasa_status st = fasa_context_finish(ctx);
    CHECK(st == FASA_ERROR_DEVICE_LOST, "%s: fasa_context_finish on a lost context gave %s", label,
          fasa_status_string(st));
    st = fasa_buffer_create(ctx, 64, &b);
    CHECK(st == FASA_ERROR_DEVICE_LOST && !b, "%s: fasa_buffer_create on a lost context gave %s", label,
          fasa_status_string(st));
    fasa_buffer_destroy(b);
}

/* Checks one faulted run of the scenario on ctx, the fault at event n.
 * Returns false if the fault did not fire (n is past the last event). */
static bool check_run(scenario *s, bool ok, fasa_fault kind, uint32_t n, const results *ref, uint32_t *lost)
{
    uint32_t seen = fasa_debug_fault_count(s->ctx, kind);
    if (seen < n) {
        CHECK(ok && !s->failed_at && same_results(&s->r, ref), "%s: unfaulted run failed at %s or differs",
              names[kind], s->failed_at ? s->failed_at : "(nothing)");
        return false;
    }
    CHECK(s->failed_at != NULL, "%s #%u: the fault fired but no call failed", names[kind], n);
    if (s->lost) {
        char label[96];
        snprintf(label, sizeof label, "%s #%u (at %s)", names[kind], n, s->failed_at);
        check_lost(s->ctx, label);
        (*lost)++;
        return true;
    }
    CHECK(ok && same_results(&s->r, ref), "%s #%u: after the fault at %s (%s) the scenario %s", names[kind], n,
          s->failed_at ? s->failed_at : "(nothing)", fasa_status_string(s->status),
          ok ? "gave other results" : "failed");
    return true;
}

static fasa_context *new_context(const results *ref)
{
    char msg[512] = "";
    fasa_context_desc cd = context_desc(msg, sizeof msg);
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&cd, &ctx);
    CHECK(st == FASA_OK, "context creation failed: %s", msg);
    if (st != FASA_OK) exit(check_done("test_faults"));
    if (ref) { /* a clean run: what happens once per context (builds) is done */
        scenario s = {.ctx = ctx};
        CHECK(run(&s) && same_results(&s.r, ref), "warm-up run failed at %s", s.failed_at);
    }
    return ctx;
}

/* Events of kind in one unfaulted scenario on a warm context. */
static uint32_t count_events(fasa_context *ctx, fasa_fault kind)
{
    fasa_debug_fault(ctx, kind, 0);
    scenario s = {.ctx = ctx};
    CHECK(run(&s), "counting run failed at %s", s.failed_at);
    return fasa_debug_fault_count(ctx, kind);
}

/* Every n-th event (stride) of one long-lived context. */
static void sweep(fasa_fault kind, const results *ref)
{
    fasa_context *ctx = new_context(ref);
    uint32_t events = count_events(ctx, kind), points = 0, lost = 0;
    uint32_t stride = events > MAX_POINTS ? (events + MAX_POINTS - 1) / MAX_POINTS : 1;
    for (uint32_t n = 1; n < 1000000; n += stride) {
        scenario s = {.ctx = ctx};
        fasa_debug_fault(ctx, kind, n);
        bool ok = run(&s);
        bool fired = check_run(&s, ok, kind, n, ref, &lost);
        fasa_debug_fault(ctx, kind, 0);
        if (!fired) break;
        points++;
        if (s.lost) { /* the documented way on: a new context */
            fasa_context_destroy(ctx);
            ctx = new_context(ref);
        }
    }
    fasa_context_destroy(ctx);
    printf("%s: %u fault points swept (", names[kind], points);
    if (stride == 1) printf("every one of %u events per scenario)", events);
    else printf("every %u-th of %u events per scenario)", stride, events);
    if (lost) printf(", %u lost the context", lost);
    printf("\n");
}

/* Events of context creation, and builds (made lazily by the Vulkan
 * backend), with a new context armed from the start for every point. */
static void sweep_creation(fasa_fault kind, const results *ref)
{
    uint32_t at_creation = 0, absorbed = 0, later = 0, lost = 0, n = 1;
    for (; n <= 1000; n++) {
        char msg[512] = "";
        fasa_context_desc cd = context_desc(msg, sizeof msg);
        fasa_context *ctx = NULL;
        unsigned before = n_errors;
        fasa_status st = fasa_debug_context_create(&cd, kind, n, &ctx);
        if (st != FASA_OK) {
            at_creation++;
            CHECK(acceptable(st) && msg[0] && n_errors > before && !ctx, "%s #%u: context creation gave %s: '%s'",
                  names[kind], n, fasa_status_string(st), msg);
            continue;
        }
        scenario s = {.ctx = ctx};
        if (fasa_debug_fault_count(ctx, kind) >= n) { /* fired, and creation took its fallback */
            absorbed++;
            CHECK(run(&s) && same_results(&s.r, ref), "%s #%u: the context whose creation absorbed the fault "
                  "fails at %s", names[kind], n, s.failed_at);
            fasa_context_destroy(ctx);
            continue;
        }
        bool more = kind == FASA_FAULT_BUILD; /* builds may come later, at the first cache */
        if (more) {
            bool ok = run(&s);
            more = check_run(&s, ok, kind, n, ref, &lost);
            later += more;
        }
        fasa_context_destroy(ctx);
        if (!more) break;
    }
    CHECK(n <= 1000, "%s: context creation still fails with the fault at event 1000", names[kind]);
    printf("%s: %u fault points at context creation", names[kind], at_creation);
    if (absorbed) printf(", %u absorbed by a fallback", absorbed);
    if (kind == FASA_FAULT_BUILD) printf(", %u at the first cache", later);
    if (lost) printf(", %u lost the context", lost);
    printf("\n");
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc > 1 && fasa_backend_from_name(argv[1], &backend) != FASA_OK) return 2;
    bool chosen[FASA_FAULT_COUNT_] = {false};
    for (int i = 2; i < argc; i++) {
        int k = 0;
        while (k < FASA_FAULT_COUNT_ && strcmp(argv[i], names[k]) != 0) k++;
        if (k == FASA_FAULT_COUNT_) {
            fprintf(stderr, "unknown fault kind '%s'\n", argv[i]);
            return 2;
        }
        chosen[k] = true;
    }
    make_inputs();
    double t0 = now();
    char msg[512] = "";
    fasa_context_desc cd = context_desc(msg, sizeof msg);
    fasa_context *ctx = NULL;
    const char *no_validation = getenv("FASA_TEST_NO_VALIDATION");
    if (backend == FASA_BACKEND_VULKAN && !(no_validation && no_validation[0] == '1')) {
        /* the validation layer checks the error paths too, where installed */
        cd.flags = FASA_CONTEXT_ENABLE_VALIDATION;
        if (fasa_context_create(&cd, &ctx) == FASA_OK) ctx_flags = cd.flags;
        else printf("note: running without the Vulkan validation layer: %s\n", msg);
        cd.flags = ctx_flags;
    }
    if (!ctx && fasa_context_create(&cd, &ctx) != FASA_OK) {
        printf("skip: backend %s unavailable: %s\n", fasa_backend_name(backend), msg);
        return 77;
    }
    tolerance = backend == FASA_BACKEND_CPU ? 0.0f : 1e-5f;
    scenario reference = {.ctx = ctx};
    CHECK(run(&reference), "reference run failed at %s: %s", reference.failed_at, fasa_context_last_error(ctx));
    fasa_context_destroy(ctx);
    for (int kind = 0; kind < FASA_FAULT_COUNT_; kind++) {
        if (argc > 2 && !chosen[kind]) continue;
        sweep_creation((fasa_fault)kind, &reference.r);
        sweep((fasa_fault)kind, &reference.r);
    }
    CHECK(n_validation == 0, "%u validation messages", n_validation);
    free(host_mem);
    printf("%s: swept in %.1f s\n", fasa_backend_name(backend), now() - t0);
    return check_done("test_faults");
}
