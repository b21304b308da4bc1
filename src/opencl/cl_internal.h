/* OpenCL backend internals shared by the files of src/opencl. */
#ifndef FASA_CL_INTERNAL_H
#define FASA_CL_INTERNAL_H

#include "backend.h"
#include "fasa_opencl.h"
#include "cl_loader.h" /* cl* calls go through the run-time loaded table */

/* Kernels of one program (one program per storage dtype). */
enum {
    CLK_APPEND,
    CLK_TIP_PREP,
    CLK_TIP,
    CLK_TOPK_INIT,
    CLK_TOPK_PASS,
    CLK_TOPK_SCAN,
    CLK_TOPK_COUNT,
    CLK_TOPK_EMIT,
    CLK_DENSE,
    CLK_FAC,
    CLK_REDUCE,
    CLK_FETCH_NEED,               /* fetch (FASA-M): see opencl/fetch.cl */
    CLK_FETCH_SLOTS,
    CLK_FETCH_ORDER,
    CLK_FETCH_COPY,
    CLK_SYNC,                     /* external K/V: K_dom rows from the engine's K (opencl/append.cl) */
    CLK_WIDEN,                    /* q of a step in a 16-bit io type, widened to fp32 (opencl/tip.cl) */
    /* batched decode (cl_batch.c): the kernels above for every item of a
     * batch in one launch, the item in dim 2 of the grid */
    CLK_WIDEN_B,
    CLK_TIP_PREP_B,
    CLK_TOPK_INIT_B,
    CLK_TIP_B,
    CLK_TOPK_PASS_B,
    CLK_TOPK_SCAN_B,
    CLK_TOPK_COUNT_B,
    CLK_TOPK_EMIT_B,
    CLK_FAC_B,
    CLK_REDUCE_B,
    CLK_COUNT
};

/* The programs: one per storage dtype, indexed by the fasa_dtype value
 * (fp16 and fp32 built at context creation, bf16 at the first bf16 cache). */
#define CL_N_PROGS 3

extern const char *const fasa__cl_kernel_names[CLK_COUNT];

/* Build-time tunables of the kernels (the -D macros of common.cl). */
typedef struct cl_tuning {
    uint32_t wg_append, wg_tip, tip_tpt, tip_hb, wg_topk, topk_tile;
    uint32_t wg_attn, att_ql, att_hb, wg_red, red_pmax;
    uint32_t half_load;           /* FASA_HALF_LOAD: 0 vload_half, 1 uint4 + manual */
    uint32_t dyn_loops;           /* FASA_DYN_LOOPS: head loops to the actual count (CPUs) */
    uint32_t target_groups;       /* work-groups a split-K dispatch aims for */
    uint32_t fuse_hist;           /* 1: tip builds the first radix histogram; 0: a
                                     separate top-k pass does (host side only) */
    uint32_t wg_fetch;            /* WG_FETCH: work-items of the FASA-M bookkeeping
                                     groups (a power of two) */
} cl_tuning;

/* Work-items of a fetch copy group (the kernels' WG_COPY). */
static inline uint32_t fasa__cl_wg_copy(const cl_tuning *t) { return t->wg_fetch < 64 ? t->wg_fetch : 64; }

/* The fp16 load path compiled into the kernels by default.  Override at
 * library build time with -Dc_args=-DFASA_CL_HALF_LOAD_DEFAULT=1. */
#ifndef FASA_CL_HALF_LOAD_DEFAULT
#define FASA_CL_HALF_LOAD_DEFAULT 0
#endif

#define FASA_CL_MAX_EVENTS 96

/* An exec is the context's in-order queue; with profiling it keeps the
 * events of the kernels it enqueued. */
struct fasa_exec {
    fasa_context *ctx;
    cl_command_queue queue;
    bool profile;
    uint32_t n_events;
    cl_event events[FASA_CL_MAX_EVENTS];
    uint8_t kinds[FASA_CL_MAX_EVENTS];
    cl_event last;                /* the last kernel's event when events[] is full */
};

typedef struct fasa_cl_stats {
    uint32_t cache_hits;          /* programs loaded from the binary cache */
    uint32_t cache_misses;        /* no usable entry: built from source */
    uint32_t cache_rejects;       /* entries found corrupt, stale or unloadable */
    uint32_t cache_writes;        /* entries written */
    uint64_t kernel_ns[CLK_COUNT];/* device time per kernel in the last profiled exec */
    uint32_t kernel_launches[CLK_COUNT];
} fasa_cl_stats;

typedef struct cl_program_set {
    cl_program program;
    cl_kernel kernels[CLK_COUNT];
} cl_program_set;

typedef struct cl_ctx {
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    bool embedded;
    bool queue_profiling;
    bool is_cpu;
    char platform_name[128], platform_version[128];
    char device_name[256], device_version[128], driver_version[128];
    uint64_t max_alloc;           /* CL_DEVICE_MAX_MEM_ALLOC_SIZE */
    uint64_t global_mem;          /* CL_DEVICE_GLOBAL_MEM_SIZE */
    uint64_t host_mem;            /* the host's physical memory, 0 = unknown */
    uint64_t alloc_limit;         /* test override of max_alloc, 0 = none */
    bool unified;                 /* CL_DEVICE_HOST_UNIFIED_MEMORY: FASA-M saves nothing */
    bool nvidia;                  /* platform "NVIDIA CUDA" (GPU_NOTES §2: ALLOC_HOST_PTR stays in VRAM) */
    uint32_t offload_flags;       /* FASA_CL_OFFLOAD_* test/bench overrides */
    bool logged_unified;          /* the "FASA-M saves nothing here" note was logged */
    uint64_t local_mem;
    uint32_t compute_units;
    size_t max_wg;
    cl_tuning tune;
    cl_program_set progs[CL_N_PROGS]; /* [fasa_dtype]: [0] fp16, [1] fp32, [2] bf16 storage */
    bool want_bf16;               /* a bf16 cache was created: rebuilds (retune) include progs[2] */
    struct fasa_exec exec;        /* calls are serialised by the context lock */
    fasa_cl_stats stats;
} cl_ctx;

/* A buffer: a cl_mem and the byte offset of the fasa_buffer in it. */
typedef struct cl_buf {
    cl_mem mem;
    uint64_t offset;
} cl_buf;

/* One storage chunk of a layer: KV heads [g0, g0 + ng) and tokens
 * [t0, t0 + nt); each array is [ng][nt][width] in the cache dtype (an
 * external cache has no k and v: it reads the engine's). */
typedef struct cl_chunk {
    uint32_t g0, ng, t0, nt;
    uint32_t tc;                  /* token-chunk index (t0 / tokens per chunk) */
    cl_mem k, v, kdom;
    void *k_host, *v_host;        /* FASA-M with USE_HOST_PTR: our page-aligned memory */
} cl_chunk;

/* One block of per-step selection scratch: KV heads [g0, g0 + ng), i.e.
 * rows [g0*G, (g0+ng)*G) per head or [g0, g0+ng) per group. */
typedef struct cl_sblock {
    uint32_t g0, ng;
    cl_mem scores;                /* [ng*G][capacity] fp32 */
    cl_mem hist;                  /* [ng*G][256] */
    cl_mem state;                 /* [ng*G][16] */
    cl_mem lists;                 /* [ng*G][2][list_cap] */
    cl_mem tiles;                 /* [ng*G][max_tiles][2] */
} cl_sblock;

typedef struct cl_cache {
    uint32_t n_chunks;            /* per layer */
    uint32_t n_tchunks;           /* token chunks per head */
    uint32_t tokens_per_chunk;
    cl_chunk *chunks;             /* [n_layers][n_chunks], ordered by token chunk */
    uint32_t n_sblocks;
    cl_sblock *sblocks;
    uint32_t list_cap, max_tiles, pmax;
    cl_mem usize, udims, tip_map; /* dims tables of every layer */
    cl_mem qm;                    /* [Hq][max(d, u_pad)] fp32 */
    cl_mem qf;                    /* [Hq][d] fp32: q widened from a 16-bit io type */
    cl_mem sel;                   /* [Hq][max_n_fac] int32 */
    cl_mem part;                  /* [Hq][pmax][d + 2] fp32 */
    cl_mem dummy;                 /* bound where an array is absent */
    cl_mem bscratch, bparams;     /* batched decode (cl_batch.c): per-item scratch and
                                     parameters, grown on demand (a released cl_mem lives
                                     on until the commands using it finish) */
    uint64_t bscratch_size, bparams_size;
    struct cl_fetch *fm;          /* FASA-M state (placement OFFLOAD), else NULL */
} cl_cache;

/* FASA-M offload memory overrides (fasa__cl_set_offload_flags). */
#define FASA_CL_OFFLOAD_USE_HOST_PTR 0x1u  /* K/V: CL_MEM_USE_HOST_PTR over page-aligned
                                              memory of ours, not ALLOC_HOST_PTR */
#define FASA_CL_OFFLOAD_AS_DISCRETE 0x2u   /* account K/V as host bytes even where the device
                                              has one memory or keeps them in VRAM (NVIDIA) */

/* --- cl_backend.c ---------------------------------------------------------- */
/* What one creation (a cache, a buffer) will allocate, summed before
 * anything is created.  The sums saturate at UINT64_MAX (fasa__sat_add,
 * fasa__sat_mul), so size arithmetic never wraps into a small request. */
typedef struct cl_request {
    uint64_t largest;             /* the largest single cl_mem */
    uint64_t device;              /* bytes in device memory */
    uint64_t host;                /* bytes in host memory, not the device's (FASA-M K and V) */
} cl_request;
/* Adds total bytes made of allocations of at most `largest` bytes. */
void fasa__cl_request_add(cl_request *r, uint64_t total, uint64_t largest, bool host);
/* OUT_OF_DEVICE_MEMORY naming the request, the limit and its value when a
 * request passes CL_DEVICE_MAX_MEM_ALLOC_SIZE, CL_DEVICE_GLOBAL_MEM_SIZE
 * or the host's physical memory (all of it on CPU devices, FASA-M K and V
 * elsewhere); what names the caller in the message. */
fasa_status fasa__cl_check_request(fasa_context *ctx, const cl_request *r, const char *what);
/* The tunables for a device class: cpu_style for CPU runtimes (PoCL), else
 * the GPU preset; local_mem and max_wg clamp them. */
void fasa__cl_tuning_preset(cl_tuning *out, bool cpu_style, uint64_t local_mem, size_t max_wg,
                            uint32_t compute_units);
fasa_status fasa__cl_fail(fasa_context *ctx, cl_int err, const char *what);
/* The status an OpenCL error maps to (the one fasa__cl_fail reports). */
fasa_status fasa__cl_status(cl_int err);
/* clCreateBuffer, through the DEVICE_ALLOC test hook of fasa_debug.h (a hit
 * fails as the driver does: NULL, CL_MEM_OBJECT_ALLOCATION_FAILURE). */
cl_mem fasa__cl_create_buffer(fasa_context *ctx, cl_mem_flags flags, size_t size, void *host, cl_int *err);
const char *fasa__cl_error_name(cl_int err);
/* Enqueues a kernel into exec, keeping its event when profiling. */
fasa_status fasa__cl_launch(fasa_exec *exec, int kind, cl_kernel k, cl_uint dims,
                            const size_t *gws, const size_t *lws);

/* Sequential kernel-argument setter: the first error sticks. */
typedef struct cl_args {
    cl_kernel k;
    cl_uint i;
    cl_int err;
} cl_args;
void fasa__cl_arg(cl_args *a, size_t size, const void *value);
void fasa__cl_arg_mem(cl_args *a, cl_mem m);
void fasa__cl_arg_u32(cl_args *a, uint32_t v);
void fasa__cl_arg_u64(cl_args *a, uint64_t v);
void fasa__cl_arg_f32(cl_args *a, float v);

/* --- cl_program.c ----------------------------------------------------------- */
/* Builds (or loads from ctx->cache_dir) the programs of the fp16 and fp32
 * storage dtypes (and of bf16 once cc->want_bf16) and creates their kernels. */
fasa_status fasa__cl_build_programs(fasa_context *ctx, cl_ctx *cc);
/* The program of one storage dtype, built now if it is not yet (bf16 at the
 * first bf16 cache); a failure leaves it unbuilt. */
fasa_status fasa__cl_program_ensure(fasa_context *ctx, cl_ctx *cc, fasa_dtype dtype);
void fasa__cl_release_programs(cl_ctx *cc);
/* The build options used for a storage dtype (for tests and the bench). */
void fasa__cl_build_options(const cl_ctx *cc, fasa_dtype dtype, uint32_t half_load, char *out,
                            size_t size);

/* Binary cache entries: the envelope of src/blobcache.h, this kind, the
 * program binary as payload (at most FASA_CL_BLOB_MAX bytes). */
#define FASA_CL_BLOB_KIND "OCLB"
#define FASA_CL_BLOB_MAX (256u << 20)
/* Whether a program binary looks whole where its format is known (PoCL's,
 * ELF, LLVM bitcode, SPIR-V; on PoCL only PoCL's own): NULL, or the reason
 * it must not reach the driver. */
const char *fasa__cl_check_binary(const cl_ctx *cc, const unsigned char *bin, size_t n);

/* --- cl_cache.c ------------------------------------------------------------- */
/* The largest single allocation caches use: min(CL_DEVICE_MAX_MEM_ALLOC_SIZE,
 * 1 GiB, the test override). */
uint64_t fasa__cl_alloc_limit(const cl_ctx *cc);
/* A device buffer filled with a 32-bit pattern (0, or 0xffffffff for -1). */
fasa_status fasa__cl_new_mem(fasa_kv_cache *c, uint64_t size, const char *what, uint32_t pattern, cl_mem *out);
fasa_status fasa__cl_cache_create(fasa_kv_cache *cache);
void fasa__cl_cache_destroy(fasa_kv_cache *cache);
fasa_status fasa__cl_cache_read(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n,
                                float *k, float *v);

/* --- cl_kernels.c ------------------------------------------------------------ */
/* Where the kernels find K/V (or K_dom) rows: the row of (KV head g,
 * token j) starts at element base + j * ts + g * hs of the cl_mem (the
 * kv_view of opencl/attn.cl).  vec8: 16-byte row loads are aligned. */
typedef struct cl_view {
    cl_mem k, v;
    int64_t k_base, v_base;
    uint32_t ts, hs, vec8;
} cl_view;
/* Kernel id of the program of c's storage dtype. */
cl_kernel fasa__cl_kern(const fasa_kv_cache *c, int id);
/* TIP's rows for storage chunk i (and the chunk, or the whole engine's K). */
cl_view fasa__cl_tip_view(const fasa_step *step, uint32_t i, cl_chunk *ch);
/* fac's K/V for storage chunk ch: the view, selection and token range. */
cl_view fasa__cl_fac_view(const fasa_kv_cache *c, uint32_t layer, const cl_chunk *ch, cl_mem *sel, uint32_t *t0,
                          uint32_t *t_end);
/* Query heads one attention work-group serves. */
uint32_t fasa__cl_heads_per_group(const fasa_kv_cache *c);
/* The top-k output tile (count and emit) of a sparse step. */
uint32_t fasa__cl_topk_te(const fasa_step *step, uint32_t max_tiles);
fasa_status fasa__cl_append(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                            uint32_t n, fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                            uint64_t v_offset, fasa_dtype src_dtype);
fasa_status fasa__cl_sync(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n);
/* Paged caches: n block-table entries from src into cache->tables at entry
 * `first` (a blocking write on the exec's in-order queue). */
fasa_status fasa__cl_upload_table(fasa_exec *exec, fasa_kv_cache *cache, uint32_t first, uint32_t n,
                                  const uint32_t *src);
fasa_status fasa__cl_tip(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cl_topk(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cl_fac(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cl_dense(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__cl_read_selection(fasa_kv_cache *cache, const fasa_step *step, int32_t *selected,
                                    uint32_t selected_stride, float *scores,
                                    uint32_t scores_stride);
/* The fac split of a sparse step (every chunk's dispatch uses it). */
void fasa__cl_fac_split(const fasa_step *step, uint32_t *splits, uint32_t *split_len);
/* Records a step's kernels, its block table already uploaded. */
fasa_status fasa__cl_step_kernels(fasa_exec *exec, const fasa_step *step);

/* --- cl_batch.c -------------------------------------------------------------- */
/* The record_batch op: runs of sparse steps of one cache in one launch per
 * kernel (docs/OPENCL.md, "Batched decode"); the others one by one. */
fasa_status fasa__cl_record_batch(fasa_exec *exec, const fasa_step *steps, uint32_t n);

/* --- cl_fetch.c (FASA-M) ------------------------------------------------------ */
/* Creates the fetch state of an offloaded cache (after its storage). */
fasa_status fasa__cl_fetch_create(fasa_kv_cache *cache);
/* The bytes fasa__cl_fetch_create will allocate on the device (saturating). */
uint64_t fasa__cl_fetch_bytes(const fasa_kv_cache *cache);
void fasa__cl_fetch_destroy(fasa_kv_cache *cache);
/* Records the fetch kernels of a sparse step (called by fac, after topk). */
fasa_status fasa__cl_fetch(fasa_exec *exec, const fasa_step *step);
/* Where fac reads the rows of storage chunk ch: the host chunk (DIRECT) or
 * the device slot arrays with the remapped selection (STAGED). */
typedef struct cl_fac_src {
    cl_mem k, v, sel;
    uint32_t tpb, gk0, t0, t_end;
} cl_fac_src;
void fasa__cl_fac_source(const fasa_kv_cache *cache, uint32_t layer, const cl_chunk *ch, cl_fac_src *out);
void fasa__cl_cache_truncate(fasa_kv_cache *cache, uint32_t length);
fasa_status fasa__cl_transfer_stats_sync(fasa_kv_cache *cache);

/* --- test hooks (internal; used by tests/opencl through fasa_internal) ----- */
/* Lowers the per-allocation limit used to lay out caches created later on
 * this context (0 restores CL_DEVICE_MAX_MEM_ALLOC_SIZE), so tests can force
 * chunked storage on small shapes. */
fasa_status fasa__cl_set_alloc_limit(fasa_context *ctx, uint64_t bytes);
/* Rebuilds the context's programs with other tunables (work-group sizes,
 * the fp16 load path, ...; red_pmax stays), so the bench can compare
 * variants in one run.  No enqueued work may still use the programs. */
fasa_status fasa__cl_retune(fasa_context *ctx, const cl_tuning *tune);
fasa_status fasa__cl_get_tuning(fasa_context *ctx, cl_tuning *out);
/* Pretends the device has global_mem bytes and the host host_mem bytes of
 * physical memory (0 restores the real value), so tests reach every limit
 * of fasa__cl_check_request without allocating that much. */
fasa_status fasa__cl_set_mem_limits(fasa_context *ctx, uint64_t global_mem, uint64_t host_mem);
/* FASA_CL_OFFLOAD_* flags for caches created later on this context (0 =
 * defaults), so tests and the bench can run both host-memory kinds and the
 * discrete-GPU accounting on a unified-memory device. */
fasa_status fasa__cl_set_offload_flags(fasa_context *ctx, uint32_t flags);
/* Binary-cache counters and the per-kernel times of the last profiled exec. */
fasa_status fasa__cl_get_stats(fasa_context *ctx, fasa_cl_stats *out);
/* The embedded kernel source (generated from the opencl/ kernel files). */
extern const char fasa__cl_source[];
extern const size_t fasa__cl_source_len;

#endif
