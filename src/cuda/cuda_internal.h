/* CUDA backend internals shared by the files of src/cuda.  The kernels and
 * their C-callable launch layer are in cuda_ref/. */
#ifndef FASA_CUDA_INTERNAL_H
#define FASA_CUDA_INTERNAL_H

#include "backend.h"
#include "fasa_cuda.h"

#include <cuda_runtime_api.h>

#include "fasa_cuda_launch.h"

/* An exec is the context's stream.  The CUDA runtime keeps a current
 * device per host thread; an exec makes the context's device current and
 * puts the caller's back at its end, so an embedding host's choice
 * survives every libfasa call. */
struct fasa_exec {
    fasa_context *ctx;
    cudaStream_t stream;
    int prev_device;             /* -1: nothing to restore */
    bool profile;                /* events recorded around the step */
};

typedef struct cuda_ctx {
    int device;
    cudaStream_t stream;         /* the library's own stream, or the host's */
    bool embedded;               /* stream belongs to the host: never created, destroyed
                                    or waited for by exec_end */
    bool events;                 /* ev_start/ev_stop exist (FASA_CONTEXT_PROFILE) */
    cudaEvent_t ev_start, ev_stop;
    uint32_t sm_count;
    bool logged_unified;         /* the "FASA-M saves nothing here" note was logged */
    bool lost;                   /* a sticky error was reported: every later call
                                    fails with FASA_ERROR_DEVICE_LOST */
    struct fasa_exec exec;       /* calls are serialised by the context lock */
} cuda_ctx;

/* A buffer's device memory is its impl pointer: cudaMalloc'd (owned) or
 * the caller's (wrapped). */

/* One layer: K and V as [Hkv][capacity][d], K_dom as [Hkv][capacity][u_pad],
 * all in the cache dtype, each one cudaMalloc allocation (CUDA has no
 * per-allocation or per-binding limit below the device memory, so layers
 * are not chunked; a failed allocation is OUT_OF_DEVICE_MEMORY). */
typedef struct cuda_layer {
    void *k, *v, *kdom;          /* device addresses (FASA-M K/V: of mapped host memory;
                                    an external cache's K/V: the engine's, not freed) */
    void *k_host, *v_host;       /* FASA-M: the cudaHostAlloc pointers, to free */
} cuda_layer;

typedef struct cuda_cache {
    cuda_layer *layers;          /* [n_layers] */
    uint16_t *udims;             /* device copies of the dims tables of every layer */
    uint32_t *usize;
    int16_t *tip_map;
    float *scores;               /* [Hq][capacity] TIP scores (rows 0..n_rows) */
    int32_t *sel;                /* [Hq][max_n_fac] */
    uint32_t *tk_state;          /* [Hq][FASA_TK_WORDS] */
    uint32_t *tk_hist;           /* [Hq][256] */
    uint32_t *tk_tiles;          /* [Hq][FASA_TK_MAX_TILES] */
    float *part;                 /* [Hq][pmax][d + 2] */
    float *qf;                   /* [Hq][d]: q widened from a 16-bit io type */
    uint32_t pmax;
    struct cuda_fetch *fm;       /* FASA-M state (placement OFFLOAD), else NULL */
} cuda_cache;

/* --- cuda_backend.c ------------------------------------------------------ */
/* Maps a CUDA error to a status and sets the context's message:
 * "cuda: <what> failed: <cudaGetErrorString> (<name>)".  Clears the
 * runtime's (non-sticky) last error. */
fasa_status fasa__cuda_fail(fasa_context *ctx, cudaError_t err, const char *what);
fasa_status fasa__cuda_status_of(cudaError_t err);
/* Makes the context's device current; *prev receives the device to put
 * back with fasa__cuda_leave (-1 when nothing changes).  Fails with
 * FASA_ERROR_DEVICE_LOST once the context is lost; fasa__cuda_enter_any
 * (for releasing memory and streams) does not. */
fasa_status fasa__cuda_enter(fasa_context *ctx, int *prev);
fasa_status fasa__cuda_enter_any(fasa_context *ctx, int *prev);
void fasa__cuda_leave(int prev);

/* Allocations, the FASA-M host mapping and kernel launches go through the
 * test hook of fasa_debug.h: a hit returns the runtime's own error without
 * calling it (cudaErrorMemoryAllocation; for a launch cudaErrorLaunchFailure,
 * a sticky error, so the context is lost from then on as after a kernel
 * that faults). */
cudaError_t fasa__cuda_malloc(fasa_context *ctx, void **p, size_t size);
cudaError_t fasa__cuda_host_alloc(fasa_context *ctx, void **p, size_t size, unsigned int flags);
cudaError_t fasa__cuda_host_map(fasa_context *ctx, void **dev, void *host);
#define FASA_CUDA_LAUNCH(ctx, call) (fasa__fault((ctx), FASA_FAULT_SUBMIT) ? cudaErrorLaunchFailure : (call))

/* --- cuda_cache.c --------------------------------------------------------- */
fasa_status fasa__cuda_cache_create(fasa_kv_cache *cache);
void fasa__cuda_cache_destroy(fasa_kv_cache *cache);
fasa_status fasa__cuda_cache_read(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n,
                                  float *k, float *v);
fasa_status fasa__cuda_read_selection(fasa_kv_cache *cache, const fasa_step *step, int32_t *selected,
                                      uint32_t selected_stride, float *scores, uint32_t scores_stride);

/* --- cuda_kernels.c ------------------------------------------------------- */
fasa_status fasa__cuda_append(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                              uint32_t n, fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                              uint64_t v_offset, fasa_dtype src_dtype);
fasa_status fasa__cuda_sync(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n);
/* Paged caches: n block-table entries from host memory into cache->tables
 * at entry `first` (cudaMemcpyAsync on the exec's stream). */
fasa_status fasa__cuda_upload_table(fasa_exec *exec, fasa_kv_cache *cache, uint32_t first, uint32_t n,
                                    const uint32_t *src);
fasa_status fasa__cuda_tip(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cuda_topk(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cuda_fac(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cuda_dense(fasa_exec *exec, const fasa_step *step);

/* --- cuda_fetch.c (FASA-M) ------------------------------------------------- */
/* The fetch state of an offloaded cache (device current, after storage). */
fasa_status fasa__cuda_fetch_create(fasa_kv_cache *cache);
void fasa__cuda_fetch_free(fasa_kv_cache *cache); /* device current, stream idle */
/* Records fetch after topk (fac calls it); with STAGED, *k, *v, *cap and
 * *sel become the slot arrays and the remapped selection fac reads. */
fasa_status fasa__cuda_fetch(fasa_exec *exec, const fasa_step *step, const void **k, const void **v,
                             uint32_t *cap, const int32_t **sel);
void fasa__cuda_cache_truncate(fasa_kv_cache *cache, uint32_t length);
fasa_status fasa__cuda_transfer_stats_sync(fasa_kv_cache *cache);

#endif
