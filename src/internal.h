/* Internal types shared by the common code and every backend. */
#ifndef FASA_INTERNAL_H
#define FASA_INTERNAL_H

#include "fasa.h"
#include "fasa_debug.h"
#include "abi.h"

#include <pthread.h>
#include <stdarg.h>

typedef struct fasa_backend_ops fasa_backend_ops;
typedef struct fasa_pool fasa_pool;
typedef struct fasa_rowcache fasa_rowcache;
typedef struct fasa_exec fasa_exec; /* backend-defined: a command stream being recorded */

#define FASA_ERROR_MAX 1024

struct fasa_context {
    fasa_backend backend;
    const fasa_backend_ops *ops;
    void *impl;                  /* backend state */
    fasa_device_info device;
    fasa_allocator alloc;
    fasa_logger logger;
    uint32_t flags;
    uint32_t n_threads;
    char *cache_dir;             /* copy of desc.cache_dir or NULL */
    fasa_pool *pool;             /* host worker threads (CPU kernels, calibration) */
    pthread_mutex_t lock;        /* serialises every public call on the context */
    char last_error[FASA_ERROR_MAX];
    uint64_t last_step_ns;
    bool has_step_ns;
    uint64_t device_memory_budget;          /* desc.device_memory_budget, 0 = none */
    uint64_t device_memory_used;            /* bytes the backend holds now (Vulkan) */
    uint32_t fault_at[FASA_FAULT_COUNT_];   /* test hook: fail the n-th event, 0 = off */
    uint32_t fault_seen[FASA_FAULT_COUNT_];
};

struct fasa_buffer {
    fasa_context *ctx;
    uint64_t size;
    void *host;                  /* CPU backend: the memory itself */
    void *impl;                  /* GPU backends */
    bool wrapped;                /* memory is owned by the caller */
};

struct fasa_calibration {
    fasa_context *ctx;
    fasa_model_shape shape;
    uint32_t n_tip;
    fasa_fc_convention convention;
    uint32_t k_calib;
    uint64_t n_samples, n_steps;
    char *model_id;
    char *source;
    uint16_t *dims;              /* [n_layers][Hq][2*n_tip] ascending */
    float *ca_mean;              /* [n_layers][Hq][d/2] or NULL */
};

/* External K and V (fasa_kv_cache_desc.external), copied at create.
 * Element c of KV head g, physical row r of layer l's K sits at byte
 *   k_offset[l] + (r * token_stride + g * head_stride + c) * elem_size
 * of k[l], likewise V; K_dom is indexed by the same row r.  Contiguous
 * caches (paged false): token j of the one sequence is row j.  Paged or
 * shared caches: token j of the decoded sequence is row
 *   table[j >> block_shift] << block_shift | (j & (block_size - 1))
 * with the sequence's block table uploaded to cache->tables at
 * step->table_offset (fasa__row_of).  Every backend maps a token to its
 * row in one helper before addressing K, V or K_dom (cpu_kernels.c
 * row_of, common.glsl/tip.comp/attend.glsl, common.cl, common.cuh). */
typedef struct fasa_kv_ext {
    uint64_t token_stride, head_stride;  /* elements, even, < 2^32 */
    fasa_buffer **k, **v;                /* [n_layers], owned by the engine */
    uint64_t *k_offset, *v_offset;       /* [n_layers] bytes, multiples of 2 elements */
    bool paged;                          /* block_size > 0: rows are a pool */
    uint32_t block_shift;                /* log2(block_size) when paged */
} fasa_kv_ext;

/* The physical row of token j of a sequence with block table `table`
 * (paged caches): the one definition the kernels of every backend mirror. */
static inline uint32_t fasa__row_of(const uint32_t *table, uint32_t shift, uint32_t j)
{
    return (table[j >> shift] << shift) | (j & ((1u << shift) - 1u));
}

/* Most items of one fasa_decode_batch call. */
#define FASA_MAX_BATCH 4096u

/* Everything a backend needs to lay out and run a cache. */
struct fasa_kv_cache {
    fasa_context *ctx;
    fasa_model_shape shape;
    uint32_t group;              /* G = Hq / Hkv */
    uint32_t capacity;
    fasa_dtype dtype;
    uint32_t elem_size;          /* bytes per stored element */
    fasa_placement placement;
    fasa_fetch fetch;            /* FASA-M strategy */
    uint32_t row_cache_rows;     /* FASA-M staged row cache, per (layer, KV head) */
    void *host_memory;           /* FASA-M: application memory for K and V, or NULL */
    uint64_t host_memory_size;
    fasa_transfer_stats transfer;/* FASA-M counters, updated by the backend */
    fasa_rowcache **rowcaches;   /* [n_layers][Hkv] reference row-cache state (CPU backend) or NULL */
    uint64_t step_count;         /* sparse steps so far (row-cache stamps) */
    uint32_t max_n_fac;
    uint32_t *length;            /* [n_layers] tokens held */
    uint8_t *dense_layer;        /* [n_layers] 1 = always dense */
    /* Dominant-dims side buffer (only with a calibration). */
    bool has_dims;
    uint32_t n_tip;
    uint32_t u_pad;              /* K_dom row width: max union size rounded up to 8 */
    uint32_t *union_size;        /* [n_layers][Hkv] u_g */
    uint16_t *union_dims;        /* [n_layers][Hkv][u_pad] dims of U_g, padding = 0 */
    int16_t *tip_map;            /* [n_layers][Hq][u_pad] q dim feeding union slot c,
                                    or -1 when the slot is not in I_h (or padding) */
    uint16_t *head_dims;         /* [n_layers][Hq][2*n_tip] I_h */
    void *impl;                  /* backend storage */
    fasa_buffer *q_stage;        /* [Hq][d] fp32, used by fasa_decode_host */
    fasa_buffer *o_stage;
    fasa_buffer *kv_stage;       /* host appends on GPU backends */
    uint32_t kv_stage_tokens;
    uint64_t scratch_bytes;      /* set by the backend */
    uint64_t device_bytes, host_bytes; /* resident storage, set by the backend */
    fasa_kv_ext *ext;            /* external K/V, or NULL: the backend owns K and V */
    /* Paged caches: block tables of the steps of the current call, uint32
     * entries; the call's tables are laid out one after another from 0
     * (tables_used) and uploaded in the command stream before the step
     * that reads them.  A buffer outgrown while earlier streams may still
     * read it is kept in `retired` until the cache is destroyed. */
    fasa_buffer *tables;
    uint32_t tables_cap, tables_used;   /* entries */
    fasa_buffer **retired;
    uint32_t n_retired;
};

/* A resolved decode step, as handed to the kernels. */
typedef struct fasa_step {
    fasa_kv_cache *cache;
    uint32_t layer;
    uint32_t L;                  /* tokens attended to (cache length) */
    fasa_path path;
    bool oracle;                 /* sparse path scores by the full q.k */
    bool prefetch;               /* FASA_DECODE_PREFETCH: select and fetch, no FAC */
    fasa_gqa_select select;
    uint32_t n_rows;             /* selection rows: Hq or Hkv */
    uint32_t n_fac;              /* tokens per row on the sparse path (< L) */
    uint32_t n_sink, n_recent;   /* forced ranges [0,n_sink) and [L-n_recent,L) */
    float scale;                 /* 1/sqrt(d) */
    fasa_buffer *q;
    uint64_t q_offset;
    fasa_buffer *o;
    uint64_t o_offset;
    fasa_io_type q_type, o_type; /* element types of q and o (fp32 unless the desc says) */
    /* Paged caches: token j is row fasa__row_of(tables + table_offset,
     * block_shift, j).  table_host (the caller's array, valid during the
     * call) is uploaded by fasa__step_record; table_n entries. */
    bool paged;
    uint32_t block_shift;
    uint32_t table_offset, table_n;
    const uint32_t *table_host;
} fasa_step;

/* --- errors and logging (context.c) ----------------------------------- */
fasa_status fasa__error(fasa_context *ctx, fasa_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fasa__log(fasa_context *ctx, fasa_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fasa__lock(fasa_context *ctx);
void fasa__unlock(fasa_context *ctx);

/* --- fault injection (context.c) --------------------------------------- */
/* True when the armed fault of this kind fires now: the caller then fails
 * exactly as it would on a real failure of that operation. */
bool fasa__fault(fasa_context *ctx, fasa_fault kind);

/* --- host memory (context.c) ------------------------------------------ */
/* Size arithmetic that saturates at UINT64_MAX instead of wrapping, so a
 * huge request can never look small to a memory check. */
static inline uint64_t fasa__sat_mul(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}
static inline uint64_t fasa__sat_add(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

void *fasa__alloc(fasa_context *ctx, size_t size);          /* 64-byte aligned, zeroed */
void *fasa__alloc_aligned(fasa_context *ctx, size_t size, size_t align); /* not zeroed */
void fasa__free(fasa_context *ctx, void *ptr);
char *fasa__strdup(fasa_context *ctx, const char *s);

/* --- buffers (buffer.c), with the context's lock held ------------------- */
fasa_status fasa__buffer_new(fasa_context *ctx, uint64_t size, fasa_buffer **out);
void fasa__buffer_free(fasa_buffer *buf);   /* NULL is fine */

/* --- fp16 and bf16 (half.c) ---------------------------------------------- */
float fasa__half_to_float(uint16_t h);
uint16_t fasa__float_to_half(float f);     /* round to nearest even */
void fasa__half_to_float_n(const uint16_t *src, float *dst, size_t n);
void fasa__float_to_half_n(const float *src, uint16_t *dst, size_t n);
float fasa__bf16_to_float(uint16_t b);     /* exact: b << 16 */
uint16_t fasa__float_to_bf16(float f);     /* round to nearest even, NaN stays NaN (quiet) */
void fasa__bf16_to_float_n(const uint16_t *src, float *dst, size_t n);
void fasa__float_to_bf16_n(const float *src, uint16_t *dst, size_t n);
/* Any element type: element i as fp32, n elements to / from fp32 (exact
 * widening; narrowing rounds to nearest even), and from one type into
 * another (equal types copy the bits; others go through fp32, which is
 * exact, so each element is rounded once). */
float fasa__dtype_load(fasa_dtype t, const void *src, size_t i);
void fasa__dtype_to_float_n(fasa_dtype t, const void *src, float *dst, size_t n);
void fasa__float_to_dtype_n(fasa_dtype t, const float *src, void *dst, size_t n);
void fasa__convert_n(fasa_dtype to, void *dst, fasa_dtype from, const void *src, size_t n);
/* The element type of a q/o io type (FASA_IO_F32 -> FASA_DTYPE_F32, ...). */
fasa_dtype fasa__io_dtype(fasa_io_type t);

/* --- threads (pool.c) ---------------------------------------------------- */
typedef void (*fasa_task_fn)(void *arg, uint32_t task, uint32_t worker);
fasa_status fasa__pool_create(fasa_context *ctx, uint32_t n_threads, fasa_pool **out);
void fasa__pool_destroy(fasa_context *ctx, fasa_pool *pool);
/* Runs fn(arg, t, worker) for t in [0, n_tasks); returns when all are done. */
void fasa__pool_run(fasa_pool *pool, uint32_t n_tasks, fasa_task_fn fn, void *arg);
uint32_t fasa__pool_size(const fasa_pool *pool);
uint32_t fasa__cpu_count(void);

/* --- shapes and calibration helpers (calib.c) --------------------------- */
fasa_status fasa__check_shape(fasa_context *ctx, const fasa_model_shape *s, const char *what);
/* Runtime dims (a, b) of frequency chunk j for a layout and FC convention. */
void fasa__fc_dims(fasa_rope_layout layout, fasa_fc_convention conv, uint32_t d, uint32_t j,
                   uint16_t *a, uint16_t *b);
/* Validates 2*n_tip ascending dims forming n_tip whole FCs; msg on failure. */
bool fasa__dims_valid(const uint16_t *dims, uint32_t n_tip, uint32_t d, fasa_rope_layout layout,
                      fasa_fc_convention conv, char *msg, size_t msg_size);

/* Builds a calibration from a description after validating it (no locking). */
fasa_status fasa__calibration_build(fasa_context *ctx, const fasa_calibration_desc *desc,
                                    fasa_calibration **out);
/* Top n_tip FCs of a mean-CA row (ties -> lower FC index) as ascending dims. */
void fasa__select_dims(const float *ca, uint32_t d, uint32_t n_tip, fasa_rope_layout layout,
                       fasa_fc_convention conv, uint16_t *dims_out);
/* Union of the dim lists of KV group (layer, kv_head); returns its size and
 * writes the ascending dims when dims_out is not NULL. */
uint32_t fasa__union_dims(const fasa_calibration *cal, uint32_t layer, uint32_t kv_head,
                          uint16_t *dims_out);

/* --- exact top-k on the host (select.c) ------------------------------- */
/* Order-preserving key: larger score -> larger key; NaN -> 0; -0 == +0. */
uint32_t fasa__score_key(float f);
/* Writes the indices of the k largest x[0..n) in ascending order (ties to
 * the lower index) and returns min(k, n).  scratch holds 3*n entries. */
uint32_t fasa__select_topk(const float *x, uint32_t n, uint32_t k, uint32_t *scratch, int32_t *out);

/* --- FASA-M row cache policy (rowcache.c) ------------------------------- */
fasa_rowcache *fasa__rowcache_create(fasa_context *ctx, uint32_t slots, uint32_t capacity);
void fasa__rowcache_destroy(fasa_context *ctx, fasa_rowcache *rc);
void fasa__rowcache_clear(fasa_rowcache *rc);
/* One step needing `tokens` (n distinct, ascending; n <= slots): returns
 * the hits and writes each token's slot (slot_out may be NULL). */
uint32_t fasa__rowcache_step(fasa_rowcache *rc, const int32_t *tokens, uint32_t n, uint64_t step, int32_t *slot_out);
/* Forgets rows of tokens at or past `length` (they may be overwritten). */
void fasa__rowcache_truncate(fasa_rowcache *rc, uint32_t length);

/* Host side shared by the GPU FASA-M fetch implementations (OpenCL, CUDA). */
typedef struct fasa_fetch_plan {
    bool staged;                 /* FASA_FETCH_STAGED */
    uint32_t slots;              /* row-cache slots per (layer, KV head); 0 = none */
    uint32_t rmax;               /* rows one step can need per KV head */
    uint32_t words;              /* token bitmap words per KV head */
    uint32_t *trunc;             /* [n_layers] truncation each layer's next fetch applies */
} fasa_fetch_plan;
/* Rows one step can need per KV head: G selection rows of max_n_fac
 * (per-head selection), at most the capacity. */
uint32_t fasa__fetch_rows_max(const fasa_kv_cache *c);
/* Sizes the fetch of cache c; NULL trunc = out of host memory (error set). */
fasa_status fasa__fetch_plan(fasa_kv_cache *c, fasa_fetch_plan *plan);
/* c->transfer, in the bucket of demand steps or of prefetches
 * (FASA_DECODE_PREFETCH): a step counted on the host (with its row-cache
 * stamp), the rows a step needed and how many were resident, and what the
 * device counters gained since the last fold (total: needed rows and hits,
 * summed over KV heads). */
void fasa__fetch_step(fasa_kv_cache *c, bool prefetch);
void fasa__fetch_add(fasa_kv_cache *c, bool prefetch, uint64_t needed, uint64_t hits);
void fasa__fetch_fold(fasa_kv_cache *c, bool prefetch, const uint64_t total[2], uint64_t folded[2]);

/* --- decode (decode.c): the step shared by every backend ---------------- */
/* Validates and resolves a step; does not run anything.  A paged cache's
 * block table gets its place in cache->tables (grown if needed; the
 * cursor restarts with every public call: fasa__tables_reset). */
fasa_status fasa__step_resolve(fasa_kv_cache *cache, uint32_t layer,
                               const fasa_decode_desc *desc, fasa_buffer *q, uint64_t q_offset,
                               fasa_buffer *o, uint64_t o_offset, fasa_step *step);
/* Records the kernels of a resolved step into exec (uploading its block
 * table first on paged caches). */
fasa_status fasa__step_record(fasa_exec *exec, const fasa_step *step);
/* Validates and resolves every item of a batch (item i's failures name
 * items[i]); steps has n entries. fn names the public call. */
fasa_status fasa__batch_resolve(fasa_context *ctx, uint32_t layer, const fasa_decode_desc *desc, uint32_t n,
                                const fasa_decode_item *items, fasa_step *steps, const char *fn);
/* Records the steps of a resolved batch, in item order, into exec. */
fasa_status fasa__batch_record(fasa_exec *exec, const fasa_step *steps, uint32_t n);
/* The enqueue-only batch of the OpenCL and CUDA embedding APIs. */
fasa_status fasa__enqueue_decode_batch(fasa_backend backend, const char *fn, fasa_context *ctx, uint32_t layer,
                                       const fasa_decode_desc *desc, uint32_t n, const fasa_decode_item *items);
/* Validates an append of n tokens from buffers; fn names the public call
 * in messages. */
fasa_status fasa__append_check(fasa_kv_cache *cache, uint32_t layer, uint32_t n,
                               fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                               uint64_t v_offset, fasa_dtype src_dtype, const char *fn);
/* The enqueue-only decode and append of the OpenCL and CUDA embedding APIs
 * (fasa_cl_enqueue_*, fasa_cuda_enqueue_*): the context must be of
 * `backend` (fn names the call); the work goes to the context's queue or
 * stream and is not waited for. */
fasa_status fasa__enqueue_decode(fasa_backend backend, const char *fn, fasa_kv_cache *cache, uint32_t layer,
                                 const fasa_decode_desc *desc, fasa_buffer *q, uint64_t q_offset,
                                 fasa_buffer *o, uint64_t o_offset);
fasa_status fasa__enqueue_append(fasa_backend backend, const char *fn, fasa_kv_cache *cache, uint32_t layer,
                                 uint32_t n, fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                                 uint64_t v_offset, fasa_dtype src_dtype);

/* Bytes per element of a storage dtype (F16 and BF16 2, F32 4). */
static inline uint32_t fasa__dtype_size(fasa_dtype t) { return t == FASA_DTYPE_F32 ? 4 : 2; }
/* Whether a value names a fasa_dtype / fasa_io_type (checked at every entry point). */
static inline bool fasa__dtype_valid(fasa_dtype t) { return (unsigned)t <= FASA_DTYPE_BF16; }
static inline bool fasa__io_type_valid(fasa_io_type t) { return (unsigned)t <= FASA_IO_BF16; }
/* Bytes per element of a q/o io type. */
static inline uint32_t fasa__io_size(fasa_io_type t) { return t == FASA_IO_F32 ? 4 : 2; }

/* --- external K/V (external.c) ------------------------------------------ */
/* Validates desc->external against the rest of desc (no backend call). */
fasa_status fasa__external_check(fasa_context *ctx, const fasa_kv_cache_desc *desc);
/* Copies desc->external into c->ext (out of host memory: error set). */
fasa_status fasa__external_copy(fasa_kv_cache *c, const fasa_kv_cache_desc *desc);
void fasa__external_free(fasa_kv_cache *c);   /* also frees the block-table buffers */
/* Starts a public call's block tables at entry 0 of cache->tables. */
static inline void fasa__tables_reset(fasa_kv_cache *c) { c->tables_used = 0; }
/* Makes room for n more table entries (a larger buffer, the old one
 * retired) and returns their first entry in *first. */
fasa_status fasa__tables_reserve(fasa_kv_cache *c, uint32_t n, uint32_t *first);
/* Validates a sync of tokens [first, first + n) of layer; fn names the
 * public call in messages. */
fasa_status fasa__sync_check(fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n, const char *fn);
/* The enqueue-only sync of the OpenCL and CUDA embedding APIs (like
 * fasa__enqueue_append). */
fasa_status fasa__enqueue_sync(fasa_backend backend, const char *fn, fasa_kv_cache *cache, uint32_t layer,
                               uint32_t first, uint32_t n);
/* The length after a successful sync of [first, first + n). */
static inline uint32_t fasa__synced_length(const fasa_kv_cache *c, uint32_t layer, uint32_t first, uint32_t n)
{
    return first + n > c->length[layer] ? first + n : c->length[layer];
}

/* --- backend registry (context.c) --------------------------------------- */
const fasa_backend_ops *fasa__backend_ops(fasa_backend backend);
/* UNSUPPORTED, naming fn, unless the context runs on `backend`. */
fasa_status fasa__need_backend(fasa_context *ctx, fasa_backend backend, const char *fn);

#endif
