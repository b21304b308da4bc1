/* The CUDA embedding API on a device (exit 77 = SKIP without one):
 *  - a context on the caller's stream; fasa_cuda_enqueue_append and
 *    fasa_cuda_enqueue_decode (and fasa_decode on an embedded context)
 *    return while the stream is held back by a host function, so they
 *    never synchronise; results after the stream runs equal the CPU's;
 *  - the caller's current device survives every call;
 *  - the enqueued step can be captured into a CUDA graph and replayed;
 *  - wrapped device memory: the bad-input matrix that needs a device
 *    (host memory, misalignment, buffers of another context, offsets,
 *    capacity);
 *  - FASA_CONTEXT_PROFILE step times (standalone and embedded);
 *  - FASA-M placement (K/V in mapped host memory) gives the FASA-C output.
 * The test calls the CUDA runtime itself, as an embedding engine would,
 * with its own copy of the runtime. */
#include "ct_common.h"
#include "fasa_cuda.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define CU(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static const fasa_model_shape shape = {1, 32, 8, 128, FASA_ROPE_NORM};
#define CAP 8192u
#define N_TOK 6000u  /* > n_fac: the sparse path */
#define N_FAC 256u

typedef struct world {
    ct_rng rng;
    float *k, *v, *q;            /* host data [N_TOK][Hkv][d], [Hq][d]: integers in k and q */
    float *o_cpu;                /* CPU backend: FASA, per head */
    float *o_dense;              /* CPU backend: dense */
    fasa_context *cpu;
    fasa_calibration *cal_cpu;
} world;

static size_t kv_count(void) { return (size_t)N_TOK * shape.n_kv_heads * shape.head_dim; }
static size_t q_count(void) { return (size_t)shape.n_q_heads * shape.head_dim; }

static fasa_kv_cache *make_cache(fasa_context *ctx, const fasa_calibration *cal, fasa_placement where)
{
    fasa_kv_cache_desc cd = {.shape = shape, .capacity = CAP, .calibration = cal,
                             .flags = FASA_CACHE_NO_DENSE_LAYERS, .placement = where};
    fasa_kv_cache *c = NULL;
    CT_OK(ctx, fasa_kv_cache_create(ctx, &cd, &c));
    if (!c) exit(1);
    return c;
}

static void make_world(world *w)
{
    w->rng.s = 0xe3bedull;
    w->k = malloc(kv_count() * 4);
    w->v = malloc(kv_count() * 4);
    w->q = malloc(q_count() * 4);
    w->o_cpu = malloc(q_count() * 4);
    w->o_dense = malloc(q_count() * 4);
    for (size_t i = 0; i < kv_count(); i++) {
        w->k[i] = (float)ct_int(&w->rng, -3, 3);
        w->v[i] = ct_normal(&w->rng);
    }
    for (size_t i = 0; i < q_count(); i++) w->q[i] = (float)ct_int(&w->rng, -3, 3);
    w->cpu = ct_context(FASA_BACKEND_CPU, 0);
    w->cal_cpu = ct_calibration(w->cpu, &shape, 16, false, 0xca1);
    fasa_kv_cache *c = make_cache(w->cpu, w->cal_cpu, FASA_PLACEMENT_DEVICE);
    CT_OK(w->cpu, fasa_kv_cache_append(c, 0, N_TOK, w->k, w->v, FASA_DTYPE_F32));
    fasa_decode_desc fd = {.mode = FASA_MODE_FASA, .n_fac = N_FAC}, dd = {.mode = FASA_MODE_DENSE};
    CT_OK(w->cpu, fasa_decode_host(c, 0, &fd, w->q, w->o_cpu, NULL));
    CT_OK(w->cpu, fasa_decode_host(c, 0, &dd, w->q, w->o_dense, NULL));
    fasa_kv_cache_destroy(c);
}

/* ------------------------------------------------------------------------ */
/* A host function that holds the stream until the test opens it            */
/* ------------------------------------------------------------------------ */

typedef struct gate {
    atomic_int open, timed_out;
} gate;

static void CUDART_CB hold(void *p)
{
    gate *g = p;
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 10000 && !atomic_load(&g->open); i++) nanosleep(&ms, NULL);
    if (!atomic_load(&g->open)) atomic_store(&g->timed_out, 1);
}

/* ------------------------------------------------------------------------ */
/* Embedded context on the test's stream                                    */
/* ------------------------------------------------------------------------ */

typedef struct dev_io {
    float *k, *v, *q, *o;        /* cudaMalloc'd by the "engine" */
    fasa_buffer *kb, *vb, *qb, *ob;
} dev_io;

static void make_io(world *w, fasa_context *ctx, dev_io *io)
{
    CU(cudaMalloc((void **)&io->k, kv_count() * 4));
    CU(cudaMalloc((void **)&io->v, kv_count() * 4));
    CU(cudaMalloc((void **)&io->q, q_count() * 4));
    CU(cudaMalloc((void **)&io->o, q_count() * 4 + 256));
    CU(cudaMemcpy(io->k, w->k, kv_count() * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(io->v, w->v, kv_count() * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(io->q, w->q, q_count() * 4, cudaMemcpyHostToDevice));
    CT_OK(ctx, fasa_cuda_buffer_wrap(ctx, io->k, kv_count() * 4, &io->kb));
    CT_OK(ctx, fasa_cuda_buffer_wrap(ctx, io->v, kv_count() * 4, &io->vb));
    CT_OK(ctx, fasa_cuda_buffer_wrap(ctx, io->q, q_count() * 4, &io->qb));
    CT_OK(ctx, fasa_cuda_buffer_wrap(ctx, io->o, q_count() * 4 + 256, &io->ob));
    void *p = NULL;
    CT_OK(ctx, fasa_cuda_buffer_pointer(io->qb, &p));
    CT_CHECK(p == io->q, "buffer_pointer returned %p for wrapped %p", p, (void *)io->q);
}

static void free_io(dev_io *io)
{
    fasa_buffer_destroy(io->kb), fasa_buffer_destroy(io->vb), fasa_buffer_destroy(io->qb), fasa_buffer_destroy(io->ob);
    cudaFree(io->k), cudaFree(io->v), cudaFree(io->q), cudaFree(io->o);
}

static void read_o(const dev_io *io, cudaStream_t s, float *out)
{
    CU(cudaMemcpyAsync(out, io->o, q_count() * 4, cudaMemcpyDeviceToHost, s));
    CU(cudaStreamSynchronize(s));
}

/* Everything enqueued while a host function holds the stream: no call may
 * wait for it. */
static void check_no_sync(world *w, fasa_context *ctx, fasa_kv_cache *c, dev_io *io, cudaStream_t s)
{
    gate g = {0, 0};
    int dev_before = -1, dev_after = -2;
    CU(cudaGetDevice(&dev_before));
    CU(cudaLaunchHostFunc(s, hold, &g));
    uint64_t half = (uint64_t)(N_TOK / 2) * shape.n_kv_heads * shape.head_dim * 4;
    CT_OK(ctx, fasa_cuda_enqueue_append(c, 0, N_TOK / 2, io->kb, 0, io->vb, 0, FASA_DTYPE_F32));
    CT_OK(ctx, fasa_cuda_enqueue_append(c, 0, N_TOK - N_TOK / 2, io->kb, half, io->vb, half, FASA_DTYPE_F32));
    fasa_decode_desc fd = {.mode = FASA_MODE_FASA, .n_fac = N_FAC};
    CT_OK(ctx, fasa_cuda_enqueue_decode(c, 0, &fd, io->qb, 0, io->ob, 0));
    CT_CHECK(cudaStreamQuery(s) == cudaErrorNotReady && !atomic_load(&g.timed_out),
             "the enqueue calls waited for the held stream");
    uint32_t len = 0;
    CT_OK(ctx, fasa_kv_cache_length(c, 0, &len));
    CT_CHECK(len == N_TOK, "enqueue_append left the length at %u", len);
    CU(cudaGetDevice(&dev_after));
    CT_CHECK(dev_before == dev_after, "current device changed from %d to %d", dev_before, dev_after);
    atomic_store(&g.open, 1);
    CU(cudaStreamSynchronize(s));
    float *o = malloc(q_count() * 4);
    read_o(io, s, o);
    double e = ct_nmse(w->o_cpu, o, q_count());
    CT_CHECK(e <= 1e-7, "embedded FASA step: NMSE %.3g vs the CPU", e);

    /* fasa_decode on an embedded context is stream-ordered too */
    gate g2 = {0, 0};
    CU(cudaLaunchHostFunc(s, hold, &g2));
    fasa_decode_desc dd = {.mode = FASA_MODE_DENSE};
    CT_OK(ctx, fasa_decode(c, 0, &dd, io->qb, 0, io->ob, 0));
    CT_CHECK(cudaStreamQuery(s) == cudaErrorNotReady && !atomic_load(&g2.timed_out),
             "fasa_decode on an embedded context waited for the stream");
    atomic_store(&g2.open, 1);
    read_o(io, s, o);
    e = ct_nmse(w->o_dense, o, q_count());
    CT_CHECK(e <= 1e-7, "embedded dense step: NMSE %.3g vs the CPU", e);
    free(o);
}

/* bf16 by the bits (the test's own rounding: nearest even, NaN quiet). */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float from_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* An enqueued step with q and o in bf16 (desc q_type / o_type): o is the
 * fp32 step's o of the same (bf16-valued) q, rounded, bit for bit.  The
 * engine's q is restored afterwards. */
static void check_io_types(world *w, fasa_context *ctx, fasa_kv_cache *c, dev_io *io, cudaStream_t s)
{
    size_t n = q_count();
    uint16_t *qh = malloc(n * 2), *oh = malloc(n * 2);
    float *qr = malloc(n * 4), *o = malloc(n * 4);
    for (size_t i = 0; i < n; i++) qr[i] = from_bf16(qh[i] = to_bf16(w->q[i]));
    fasa_decode_desc fd = {.mode = FASA_MODE_FASA, .n_fac = N_FAC};
    CT_OK(ctx, fasa_decode_host(c, 0, &fd, qr, o, NULL));
    CU(cudaMemcpy(io->q, qh, n * 2, cudaMemcpyHostToDevice));
    fd.q_type = fd.o_type = FASA_IO_BF16;
    CT_OK(ctx, fasa_cuda_enqueue_decode(c, 0, &fd, io->qb, 0, io->ob, 0));
    CU(cudaMemcpyAsync(oh, io->o, n * 2, cudaMemcpyDeviceToHost, s));
    CU(cudaStreamSynchronize(s));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += oh[i] != to_bf16(o[i]);
    CT_CHECK(bad == 0, "enqueued bf16 q/o step: %zu elements differ from the fp32 o rounded", bad);
    CU(cudaMemcpy(io->q, w->q, n * 4, cudaMemcpyHostToDevice));
    free(qh), free(oh), free(qr), free(o);
}

/* The enqueued step captured into a graph and replayed. */
static void check_graph(world *w, fasa_context *ctx, fasa_kv_cache *c, dev_io *io, cudaStream_t s)
{
    CU(cudaMemsetAsync(io->o, 0, q_count() * 4, s));
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    CU(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    fasa_decode_desc fd = {.mode = FASA_MODE_FASA, .n_fac = N_FAC};
    fasa_status st = fasa_cuda_enqueue_decode(c, 0, &fd, io->qb, 0, io->ob, 0);
    cudaError_t err = cudaStreamEndCapture(s, &graph);
    CT_OK(ctx, st);
    CT_CHECK(err == cudaSuccess, "capturing the step: %s", cudaGetErrorString(err));
    if (err != cudaSuccess || st != FASA_OK) return;
    CU(cudaGraphInstantiate(&exec, graph, 0));
    CU(cudaGraphLaunch(exec, s));
    float *o = malloc(q_count() * 4);
    read_o(io, s, o);
    double e = ct_nmse(w->o_cpu, o, q_count());
    CT_CHECK(e <= 1e-7, "graph replay: NMSE %.3g vs the CPU", e);
    free(o);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
}

/* Bad inputs that need a device. */
static void check_bad_inputs(fasa_context *ctx, fasa_kv_cache *c, dev_io *io)
{
    fasa_buffer *b = NULL;
    float host[16];
    CT_STATUS(ctx, fasa_cuda_buffer_wrap(ctx, host, sizeof host, &b), FASA_ERROR_INVALID_ARGUMENT);
    CT_CHECK(b == NULL && strstr(fasa_context_last_error(ctx), "device_ptr"), "host memory: '%s'",
             fasa_context_last_error(ctx));
    CT_STATUS(ctx, fasa_cuda_buffer_wrap(ctx, (char *)io->q + 2, 64, &b), FASA_ERROR_INVALID_ARGUMENT);
    CT_CHECK(strstr(fasa_context_last_error(ctx), "aligned"), "misaligned: '%s'", fasa_context_last_error(ctx));
    CT_STATUS(ctx, fasa_cuda_buffer_wrap(ctx, NULL, 64, &b), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(ctx, fasa_cuda_buffer_wrap(ctx, io->q, 0, &b), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(ctx, fasa_cuda_buffer_wrap(ctx, io->q, 64, NULL), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(ctx, fasa_buffer_wrap_host(ctx, host, sizeof host, &b), FASA_ERROR_UNSUPPORTED);
    CT_STATUS(ctx, fasa_cuda_buffer_pointer(io->qb, NULL), FASA_ERROR_INVALID_ARGUMENT);
    void *stream = NULL;
    CT_STATUS(ctx, fasa_cuda_context_stream(ctx, NULL), FASA_ERROR_INVALID_ARGUMENT);
    CT_OK(ctx, fasa_cuda_context_stream(ctx, &stream));

    fasa_decode_desc fd = {.mode = FASA_MODE_FASA, .n_fac = N_FAC};
    CT_STATUS(ctx, fasa_cuda_enqueue_decode(c, 0, &fd, io->qb, 2, io->ob, 0), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(ctx, fasa_cuda_enqueue_decode(c, 0, &fd, io->qb, 0, io->qb, 0), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(ctx, fasa_cuda_enqueue_decode(c, 0, &fd, io->qb, 0, NULL, 0), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(ctx, fasa_cuda_enqueue_decode(c, 1, &fd, io->qb, 0, io->ob, 0), FASA_ERROR_INVALID_ARGUMENT);
    fasa_decode_desc big = {.mode = FASA_MODE_FASA, .n_fac = 4096}; /* > max_n_fac (2048) */
    CT_STATUS(ctx, fasa_cuda_enqueue_decode(c, 0, &big, io->qb, 0, io->ob, 0), FASA_ERROR_INVALID_ARGUMENT);
    fasa_context *other = ct_context(FASA_BACKEND_CUDA, 0);
    fasa_buffer *ob2 = NULL;
    CT_OK(other, fasa_buffer_create(other, q_count() * 4, &ob2));
    CT_STATUS(ctx, fasa_cuda_enqueue_decode(c, 0, &fd, io->qb, 0, ob2, 0), FASA_ERROR_INVALID_ARGUMENT);
    CT_CHECK(strstr(fasa_context_last_error(ctx), "another context"), "foreign buffer: '%s'",
             fasa_context_last_error(ctx));
    CT_STATUS(ctx, fasa_cuda_enqueue_append(c, 0, 1, ob2, 0, io->vb, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT);
    fasa_buffer_destroy(ob2);
    fasa_context_destroy(other);

    uint32_t before = 0, after = 0;
    CT_OK(ctx, fasa_kv_cache_length(c, 0, &before));
    CT_STATUS(ctx, fasa_cuda_enqueue_append(c, 0, CAP, io->kb, 0, io->vb, 0, FASA_DTYPE_F32), FASA_ERROR_CAPACITY);
    CT_STATUS(ctx, fasa_cuda_enqueue_append(c, 0, 1, io->kb, kv_count() * 4, io->vb, 0, FASA_DTYPE_F32),
              FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(ctx, fasa_cuda_enqueue_append(c, 0, 1, io->kb, 2, io->vb, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(ctx, fasa_cuda_enqueue_append(c, 0, 0, io->kb, 0, io->vb, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT);
    CT_STATUS(ctx, fasa_cuda_enqueue_append(c, 0, 1, io->kb, 0, io->vb, 0, (fasa_dtype)7), FASA_ERROR_INVALID_ARGUMENT);
    CT_OK(ctx, fasa_kv_cache_length(c, 0, &after));
    CT_CHECK(before == after, "rejected appends changed the length from %u to %u", before, after);
}

static void check_embedded(world *w)
{
    cudaStream_t s = NULL;
    CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    fasa_cuda_embed e = {.device = 0, .stream = (void *)s};
    char err[512] = "";
    fasa_context_desc d = {.backend = FASA_BACKEND_CUDA, .embed = &e, .error_message = err,
                           .error_message_size = sizeof err};
    fasa_context *ctx = NULL;
    CT_OK(NULL, fasa_context_create(&d, &ctx));
    if (!ctx) {
        fprintf(stderr, "FAIL: embedded context: %s\n", err);
        exit(1);
    }
    void *got = NULL;
    CT_OK(ctx, fasa_cuda_context_stream(ctx, &got));
    CT_CHECK(got == (void *)s, "context stream %p, embedded %p", got, (void *)s);
    fasa_calibration *cal = ct_calibration(ctx, &shape, 16, false, 0xca1);
    fasa_kv_cache *c = make_cache(ctx, cal, FASA_PLACEMENT_DEVICE);
    dev_io io;
    make_io(w, ctx, &io);
    check_no_sync(w, ctx, c, &io, s);
    check_io_types(w, ctx, c, &io, s);
    check_graph(w, ctx, c, &io, s);
    check_bad_inputs(ctx, c, &io);
    fasa_kv_cache_destroy(c);
    free_io(&io);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
    CU(cudaStreamDestroy(s));
}

/* ------------------------------------------------------------------------ */
/* Standalone: profiling and FASA-M placement                                */
/* ------------------------------------------------------------------------ */

static void check_profile_and_offload(world *w)
{
    fasa_context *ctx = ct_context(FASA_BACKEND_CUDA, FASA_CONTEXT_PROFILE);
    fasa_calibration *cal = ct_calibration(ctx, &shape, 16, false, 0xca1);
    fasa_kv_cache *dev = make_cache(ctx, cal, FASA_PLACEMENT_DEVICE);
    fasa_kv_cache *off = make_cache(ctx, cal, FASA_PLACEMENT_OFFLOAD);
    CT_OK(ctx, fasa_kv_cache_append(dev, 0, N_TOK, w->k, w->v, FASA_DTYPE_F32));
    CT_OK(ctx, fasa_kv_cache_append(off, 0, N_TOK, w->k, w->v, FASA_DTYPE_F32));
    float *a = malloc(q_count() * 4), *b = malloc(q_count() * 4);
    fasa_decode_desc fd = {.mode = FASA_MODE_FASA, .n_fac = N_FAC};
    CT_OK(ctx, fasa_decode_host(dev, 0, &fd, w->q, a, NULL));
    uint64_t ns = 0;
    CT_OK(ctx, fasa_context_last_step_ns(ctx, &ns));
    CT_CHECK(ns > 0 && ns < 10000000000ull, "step time %llu ns", (unsigned long long)ns);
    CT_OK(ctx, fasa_decode_host(off, 0, &fd, w->q, b, NULL));
    CT_CHECK(memcmp(a, b, q_count() * 4) == 0, "FASA-M output differs from FASA-C");
    CT_CHECK(ct_nmse(w->o_cpu, a, q_count()) <= 1e-7, "standalone FASA step differs from the CPU");
    fasa_memory_report mr;
    CT_OK(ctx, fasa_kv_cache_memory(off, &mr));
    CT_CHECK(mr.host_bytes > 0 && mr.device_bytes < mr.host_bytes, "FASA-M report: device %llu host %llu",
             (unsigned long long)mr.device_bytes, (unsigned long long)mr.host_bytes);
    fasa_kv_cache_destroy(dev);
    fasa_kv_cache_destroy(off);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
    free(a), free(b);

    /* embedded + profile: fasa_decode waits for its own end event */
    cudaStream_t s = NULL;
    CU(cudaStreamCreate(&s));
    fasa_cuda_embed e = {.device = 0, .stream = (void *)s};
    fasa_context_desc d = {.backend = FASA_BACKEND_CUDA, .embed = &e, .flags = FASA_CONTEXT_PROFILE};
    CT_OK(NULL, fasa_context_create(&d, &ctx));
    if (!ctx) return;
    cal = ct_calibration(ctx, &shape, 16, false, 0xca1);
    dev = make_cache(ctx, cal, FASA_PLACEMENT_DEVICE);
    CT_OK(ctx, fasa_kv_cache_append(dev, 0, N_TOK, w->k, w->v, FASA_DTYPE_F32));
    fasa_buffer *qb = NULL, *ob = NULL;
    CT_OK(ctx, fasa_buffer_create(ctx, q_count() * 4, &qb));
    CT_OK(ctx, fasa_buffer_create(ctx, q_count() * 4, &ob));
    CT_OK(ctx, fasa_buffer_write(qb, 0, w->q, q_count() * 4));
    CT_OK(ctx, fasa_decode(dev, 0, &fd, qb, 0, ob, 0));
    ns = 0;
    CT_OK(ctx, fasa_context_last_step_ns(ctx, &ns));
    CT_CHECK(ns > 0, "embedded step time %llu ns", (unsigned long long)ns);
    fasa_buffer_destroy(qb), fasa_buffer_destroy(ob);
    fasa_kv_cache_destroy(dev);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(ctx);
    CU(cudaStreamDestroy(s));
}

int main(void)
{
    ct_require_cuda();
    world w;
    memset(&w, 0, sizeof w);
    make_world(&w);
    check_embedded(&w);
    check_profile_and_offload(&w);
    fasa_calibration_destroy(w.cal_cpu);
    fasa_context_destroy(w.cpu);
    free(w.k), free(w.v), free(w.q), free(w.o_cpu), free(w.o_dense);
    return ct_finish("test_cuda_embed");
}
