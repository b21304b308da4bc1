/* CPU backend internals shared by cpu_backend.c and cpu_kernels.c. */
#ifndef FASA_CPU_H
#define FASA_CPU_H

#include "backend.h"
#include "cpu_simd.h"

#include <unistd.h>

#define FASA_CPU_MAX_SPLITS 64   /* token splits of one dense step */

/* The CPU runs kernels at once: an exec only carries the profiling clock. */
struct fasa_exec {
    fasa_context *ctx;
    uint64_t t0;
};

typedef struct cpu_context {
    const fasa_cpu_simd *simd;
    struct fasa_exec exec;       /* calls are serialised by the context lock */
} cpu_context;

/* One layer: K and V with element c of (KV head g, token t) at
 * (t * ts + g * hs) + c (cpu_cache strides): libfasa's own arrays are
 * [Hkv][capacity][d] (ts = d, hs = capacity * d: each head's rows in token
 * order, what FAC gathers), an external cache's are the engine's memory in
 * place.  K_dom in tiles of 16 tokens as [Hkv][capacity/16][u_pad][16]
 * (what TIP streams: inside a tile each union dim holds 16 consecutive
 * tokens, so TIP is vertical multiply-adds over memory read in order), all
 * in the cache dtype. */
typedef struct cpu_layer {
    void *k, *v, *kdom;
} cpu_layer;

typedef struct cpu_cache {
    cpu_layer *layers;
    size_t ts, hs;               /* K/V element strides of a token and of a KV head */
    size_t n_tiles;              /* 16-token K_dom tiles per KV head */
    float *scores;               /* [Hq][capacity] TIP scores (rows 0..n_rows) */
    int32_t *selected;           /* [Hq][max_n_fac] */
    float *partials;             /* [Hq][FASA_CPU_MAX_SPLITS][d + 2]: m, l, acc[d] */
    float *qm;                   /* [Hq][max(d, u_pad)] masked queries */
    float *qf, *of;              /* [Hq][d] q widened from / o before rounding to a 16-bit io type */
    uint32_t n_workers;
    uint32_t **topk_scratch;     /* [worker][3 * capacity] */
    uint8_t *seen;               /* [capacity], FASA-M row counting (offloaded caches only) */
    int32_t *needed;             /* [Hq * max_n_fac], FASA-M: one group's distinct tokens */
} cpu_cache;

fasa_status fasa__cpu_append(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                             uint32_t n, fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                             uint64_t v_offset, fasa_dtype src_dtype);
fasa_status fasa__cpu_sync(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n);
fasa_status fasa__cpu_upload_table(fasa_exec *exec, fasa_kv_cache *cache, uint32_t first, uint32_t n,
                                   const uint32_t *src);
fasa_status fasa__cpu_tip(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cpu_topk(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cpu_fac(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cpu_dense(fasa_exec *exec, const fasa_step *step);

#endif
