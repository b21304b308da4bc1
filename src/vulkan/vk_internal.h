/* Vulkan backend internals shared by the files of src/vulkan. */
#ifndef FASA_VK_INTERNAL_H
#define FASA_VK_INTERNAL_H

#include "vk_loader.h"

#include "backend.h"
#include "fasa_vulkan.h"

/* ---- kernels and their tunables ---------------------------------------- */

typedef enum vk_kernel {
    VK_K_APPEND = 0,
    VK_K_TIP,
    VK_K_TOPK_SCAN,
    VK_K_TOPK_PASS,
    VK_K_FAC,      /* 4 heads per workgroup */
    VK_K_FAC8,     /* 8 heads per workgroup */
    VK_K_DENSE,
    VK_K_DENSE8,
    VK_K_REDUCE,
    VK_K_FETCH,    /* FASA-M: needed rows, row-cache policy, staged copy */
    /* External K/V caches (fasa_kv_cache_desc.external): built with the
     * context's first such cache.  sync fills K_dom from the engine's K; the
     * _X kernels are tip (oracle), fac and dense with the specialization
     * constant EXT_KV, which addresses K and V by the engine's strides. */
    VK_K_SYNC,
    VK_K_TIP_X,
    VK_K_FAC_X,
    VK_K_FAC8_X,
    VK_K_DENSE_X,
    VK_K_DENSE8_X,
    VK_K_CONVERT,  /* q and o of a step in a 16-bit io type (fasa_decode_desc.q_type / o_type) */
    /* Batch variants (shaders/params.glsl, vk_batch.c): the kernel above of
     * the same name, one dispatch for a batch's items (grid z), parameters
     * from a list.  Built with a context's first batch of their dtype. */
    VK_K_TIP_B,
    VK_K_TIP_XB,
    VK_K_TOPK_SCAN_B,
    VK_K_TOPK_PASS_B,
    VK_K_FAC_B,
    VK_K_FAC8_B,
    VK_K_DENSE_B,
    VK_K_DENSE8_B,
    VK_K_FAC_XB,
    VK_K_FAC8_XB,
    VK_K_DENSE_XB,
    VK_K_DENSE8_XB,
    VK_K_REDUCE_B,
    VK_K_CONVERT_B,
    VK_K_COUNT
} vk_kernel;

/* Storage-type variants of a kernel (the index of vk_context.pipes). */
#define VK_DT_F16 0
#define VK_DT_F32 1
#define VK_DT_BF16 2
#define VK_DT_COUNT 3

#define VK_WG_APPEND 64u
#define VK_WG_TIP 256u
#define VK_TIP_TOKENS (4u * VK_WG_TIP) /* tokens per TIP workgroup (tip.comp TPT = 4) */
#define VK_WG_TOPK 256u
#define VK_TOPK_EPT 16u
#define VK_TOPK_TILE (VK_WG_TOPK * VK_TOPK_EPT) /* scores per top-k workgroup */
_Static_assert(VK_TOPK_TILE % VK_TIP_TOKENS == 0, "a TIP workgroup's scores must lie in one score chunk");
#define VK_WG_ATTEND 256u  /* attend.glsl: a multiple of 16, >= head_dim / 2 words */
#define VK_ATTEND_S 512u   /* tokens per attention chunk with 4 heads (256 with 8) */
#define VK_WG_REDUCE 128u
#define VK_WG_FETCH 256u   /* fetch.comp: a multiple of 32 */
#define VK_WG_CONVERT 64u
#define VK_FETCH_RPW 16u   /* fetch.comp RPW: rows per copy workgroup */
#define VK_MAX_SPLITS 256u /* split-K partials per head */
#define VK_PUSH_MAX 128u
#define VK_NO_TRUNC 0xffffffffu  /* FASA-M: no truncation pending (vk_fetch.c) */

typedef struct vk_tunables {
    uint32_t qmax;           /* floats of masked q in tip's shared memory */
    bool narrow;             /* attend 4 heads per workgroup even for larger groups
                                (CPU devices: llvmpipe slows down with 8) */
} vk_tunables;

/* ---- memory ------------------------------------------------------------ */

/* One device-memory allocation: libfasa's own vkAllocateMemory, the host's
 * allocator (fasa_vk_embed.memory_allocator), or an import of application
 * host memory.  Made and freed only by vk_memory.c (fasa__vk_mem_*). */
typedef struct vk_mem {
    VkDeviceMemory memory;       /* VK_NULL_HANDLE: none */
    VkDeviceSize offset;         /* where the allocation starts in memory */
    VkDeviceSize counted;        /* bytes counted in ctx->device_memory_used */
    uint8_t *map;                /* host address of offset (coherent memory), or NULL */
    uint32_t type;               /* memory type index */
    void *allocation;            /* the host allocator's handle, or NULL */
    bool from_host;              /* made by the host allocator: freed through it */
} vk_mem;

/* A VkBuffer with its device address and (when host-visible) mapping. */
typedef struct vk_buf {
    VkBuffer buffer;
    vk_mem mem;                  /* owned memory; mem.memory VK_NULL_HANDLE for arena/wrapped */
    VkDeviceSize offset;         /* byte offset of the data inside buffer (wraps) */
    VkDeviceSize size;
    VkDeviceAddress addr;        /* 0 for wrapped buffers */
    uint8_t *map;                /* host pointer to the data, or NULL */
    bool coherent;
    bool wrapped;
} vk_buf;

/* A large array as a table of chunks: row r lives in chunk r >> shift at
 * word (r & (2^shift - 1)) * row_words (shaders/common.glsl). */
typedef struct vk_array {
    uint64_t n_rows;
    uint32_t row_words;
    uint32_t shift;
    uint32_t n_chunks;
    vk_buf *chunks;
    VkDeviceAddress table;       /* address of the chunk table (uvec2 per chunk) */
    uint64_t table_at;           /* byte offset of the table in the tables buffer */
    bool host_import;            /* chunks will be bound to imported host memory */
} vk_array;

/* Device memory blocks backing the chunks of one cache. */
typedef struct vk_arena {
    vk_mem *blocks;
    uint32_t n_blocks;
    uint32_t type;               /* the memory type of the blocks */
} vk_arena;

/* ---- context ----------------------------------------------------------- */

typedef struct vk_context vk_context;

/* A command stream: the context's own command buffer or a caller's. */
struct fasa_exec {
    vk_context *vk;
    fasa_context *ctx;
    VkCommandBuffer cmd;
    bool embedded;
    bool is_step;                /* a decode step was recorded (timestamps) */
    bool failed;                 /* recording failed: do not submit */
    uint32_t *applies_trunc;     /* FASA-M: the pending truncation this stream applies;
                                    marked done only once the stream is submitted */
    bool *applies_init;          /* the cache initialisation this stream records, marked
                                    done once submitted (vk_cache.c) */
};


struct vk_context {
    vk_fns fn;
    fasa_context *ctx;
    VkInstance instance;
    VkPhysicalDevice phys;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    uint32_t api_version;
    bool owns_device;            /* standalone: instance and device are ours */
    bool bda_khr;
    VkDebugUtilsMessengerEXT messenger;
    const VkAllocationCallbacks *vk_alloc;
    fasa_vk_memory_allocator host_alloc; /* allocate NULL: libfasa's own vkAllocateMemory */
    bool record_init;            /* FASA_VK_EMBED_RECORD_CACHE_INIT: creation never submits */
    bool has_memory_budget;      /* VK_EXT_memory_budget offered (messages only) */
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties mem;
    uint32_t subgroup_size;
    vk_tunables tun;
    VkPipelineCache pcache;
    bool owns_pcache;
    uint8_t pcache_loaded[32];   /* SHA-256 of the pipeline cache data read from disk */
    bool has_pcache_loaded;      /* (an unchanged cache is not written back) */
    VkPipelineLayout layout;
    VkPipeline pipes[VK_K_COUNT][VK_DT_COUNT];
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
    VkQueryPool qpool;           /* 2 timestamps, with FASA_CONTEXT_PROFILE */
    uint64_t ts_mask;
    vk_buf staging;              /* host-visible bounce buffer */
    uint64_t chunk_limit;        /* bytes per chunk of a large array */
    bool force_staging;          /* tests: never map device memory */
    bool test_fetch_fallbacks;   /* tests: FASA-M 32-bit token maps and 4-byte copies */
    bool test_invalid;           /* tests: record one invalid command in the next stream */
    bool lost;
    bool logged_unified;         /* the FASA-M "saves nothing here" note was logged */
    /* VK_EXT_external_memory_host (FASA-M caches in application host memory) */
    PFN_vkGetMemoryHostPointerPropertiesEXT host_ptr_props; /* NULL: not enabled */
    uint64_t import_align;       /* minImportedHostPointerAlignment */
    char vmsg[FASA_ERROR_MAX - 64]; /* first validation message since the last check */
    uint32_t n_vmsg;
    struct fasa_exec own_exec;   /* the exec of standalone calls */
};

/* ---- cache ------------------------------------------------------------- */

typedef struct vk_layer {
    vk_array k, v, kd;           /* k and v stay empty on an external cache */
    VkDeviceAddress k_ext, v_ext; /* external cache: where the engine's K and V start */
} vk_layer;

/* FASA-M device state (vk_fetch.c); absent for FASA-C caches. */
typedef enum vk_fetch_mode {
    VK_FETCH_COUNT = 0,          /* DIRECT: fac reads rows in place; fetch counts them */
    VK_FETCH_STAGING,            /* STAGED, no row cache: one staging area of a step's rows */
    VK_FETCH_ROWCACHE            /* STAGED with R slots per (layer, KV head) */
} vk_fetch_mode;

typedef struct vk_fetch {
    vk_fetch_mode mode;
    uint32_t slots;              /* R with a row cache, else 0 */
    uint32_t rmax;               /* distinct rows one step may need per KV head */
    uint32_t zeroed_words;       /* bitmap + slot flags, cleared at every sparse step */
    uint32_t work_words;         /* per-head lists, after the cleared part */
    uint32_t fs_off, remap_off;  /* scratch word offsets: fetch area, remapped selection */
    uint32_t n_slot_arrays;      /* layers (row cache), 1 (staging) or 0 */
    vk_array *k_slots, *v_slots; /* [n_slot_arrays], rows [Hkv][R or rmax] */
    vk_array state;              /* row cache: one row per layer (fetch.comp layout) */
    vk_buf counters;             /* host-visible: 2 blocks (demand, prefetch steps) of [Hkv][4] + steps, see fetch.comp */
    uint32_t *trunc;             /* [n_layers] truncation the layer's next fetch applies */
    uint64_t folded[3];          /* counter totals already in cache->transfer */
    uint64_t folded_pf[3];       /* same for the prefetch steps' counter block */
    bool quad;                   /* rows and chunks allow 16-byte copies */
    bool map16;                  /* 16-bit token -> slot map (R < 65535) */
} vk_fetch;

/* Where fac reads K and V rows from, and which index list. */
typedef struct vk_fac_source {
    VkDeviceAddress k_tab, v_tab;
    uint32_t kv_stride, kv_shift, sel_off;
} vk_fac_source;

/* Batches (vk_batch.c): the per-item scratch regions and the parameter
 * lists, grown on demand; buffers outgrown while a host's command buffer
 * recorded earlier may still use them are kept until cache destroy. */
typedef struct vk_batch {
    vk_buf scratch, params;
    vk_buf *retired;
    uint32_t n_retired;
    bool used;                   /* by a run of the batch being recorded */
} vk_batch;

typedef struct vk_cache {
    vk_layer *layers;
    vk_array scores, cand;       /* [rows][sc_stride] fp32 / uint32 */
    vk_arena arena_dev, arena_host;
    vk_buf scratch;              /* per-step data, offsets below in words */
    vk_buf tables;               /* chunk tables, tip_map, union dims */
    uint32_t kv_stride;          /* tokens per KV head in K, V, K_dom */
    uint32_t ext_ts, ext_hs;     /* external cache: the engine's K/V strides in words */
    uint32_t sc_stride;          /* scores per row, a multiple of VK_TOPK_TILE */
    uint32_t n_tiles;            /* sc_stride / VK_TOPK_TILE */
    uint32_t stage_tokens;
    uint32_t q_off, o_off, sel_off, hist_off, state_off, tcnt_off, ttie_off, part_off;
    uint32_t stage_off, stage_half;
    uint32_t zero_off, zero_words; /* cleared at the start of every step */
    uint8_t *init_tables;        /* the tables' bytes until recorded into an init (tables
                                    not host-mapped), else NULL */
    bool init_pending;           /* init commands (tables, row-cache state) not yet done */
    uint64_t map_at, dims_at;    /* byte offsets in tables: tip_map, union dims */
    vk_fetch *fm;                /* FASA-M state, or NULL */
    vk_batch batch;              /* empty until the cache's first batch */
} vk_cache;

/* ---- functions --------------------------------------------------------- */

/* vk_device.c */
fasa_status fasa__vk_list_devices(fasa_device_info *devices, uint32_t *count, char *msg,
                                  size_t msg_size);
fasa_status fasa__vk_context_init(fasa_context *ctx, uint32_t device_index, const void *embed);
void fasa__vk_context_destroy(fasa_context *ctx);
void fasa__vk_describe(vk_context *vk, const VkPhysicalDeviceProperties *props,
                       fasa_device_info *info);
/* "; VK_EXT_memory_budget: heap h ..." for messages, or "" without the extension. */
void fasa__vk_heap_note(vk_context *vk, uint32_t heap, char *out, size_t size);
/* Maps a VkResult to a status with a message naming `what`. */
fasa_status fasa__vk_result(vk_context *vk, VkResult r, const char *what);
/* Turns pending validation messages into FASA_ERROR_BACKEND. */
fasa_status fasa__vk_check(vk_context *vk, fasa_status st);

/* vk_memory.c */
int fasa__vk_memory_type(const vk_context *vk, uint32_t type_bits, VkMemoryPropertyFlags want,
                         VkMemoryPropertyFlags avoid);
/* The one allocation path: the budget, then the host's allocator or
 * vkAllocateMemory (+ vkMapMemory); messages name r->what. */
fasa_status fasa__vk_mem_alloc(vk_context *vk, const fasa_vk_memory_request *r, vk_mem *out);
void fasa__vk_mem_free(vk_context *vk, vk_mem *m);
/* A buffer with its own memory; host: mapped host-visible coherent memory.
 * what names it in messages and in the host allocator's requests. */
fasa_status fasa__vk_buf_create(vk_context *vk, VkDeviceSize size, bool host, const char *what, vk_buf *out);
void fasa__vk_buf_destroy(vk_context *vk, vk_buf *b);
fasa_status fasa__vk_upload(vk_context *vk, const vk_buf *b, VkDeviceSize offset, const void *src,
                            VkDeviceSize size);
fasa_status fasa__vk_download(vk_context *vk, const vk_buf *b, VkDeviceSize offset, void *dst,
                              VkDeviceSize size);
/* Plans the chunks of an array: row_words words per row, n_rows rows. */
void fasa__vk_array_plan(const vk_context *vk, vk_array *a, uint64_t n_rows, uint32_t row_words);
fasa_status fasa__vk_array_create(vk_context *vk, vk_array *a, const char *what);
void fasa__vk_array_destroy(vk_context *vk, vk_array *a);
/* Places the chunks of arrays in blocks of memory (host: host-visible). */
fasa_status fasa__vk_arena_bind(vk_context *vk, vk_arena *arena, vk_array **arrays, uint32_t n,
                                bool host, const char *what);
/* Application host memory (VK_EXT_external_memory_host) for arrays created
 * with host_import: the bytes their chunks take in the import layout, and
 * the binding of every chunk to its imported part of base. */
uint64_t fasa__vk_import_size(const vk_context *vk, const vk_array *a);
fasa_status fasa__vk_arena_import(vk_context *vk, vk_arena *arena, vk_array **arrays, uint32_t n_arrays,
                                  uint8_t *base, const char *what);
void fasa__vk_arena_free(vk_context *vk, vk_arena *arena);
/* Reads rows [row0, row0 + n) of an array into dst (row_words words each). */
fasa_status fasa__vk_array_read(vk_context *vk, const vk_array *a, uint64_t row0, uint64_t n,
                                void *dst);

/* vk_pipelines.c */
fasa_status fasa__vk_pipelines_init(vk_context *vk);
/* The pipelines of a storage dtype; with ext also those of external caches.
 * batch: the batch variants instead (vk_batch.c, built on first use). */
fasa_status fasa__vk_pipelines_ensure(vk_context *vk, int dtype, bool ext, bool batch);
/* The batch variant of a decode kernel (vk_batch.c). */
vk_kernel fasa__vk_batch_kernel(vk_kernel k);
void fasa__vk_pipelines_destroy(vk_context *vk);
/* Creates one pipeline; required_subgroup_size 0 = the driver's choice. */
VkResult fasa__vk_pipeline_create(vk_context *vk, vk_kernel k, int dtype,
                                  uint32_t required_subgroup_size, VkPipelineCreateFlags flags,
                                  VkPipeline *out);
const char *fasa__vk_kernel_name(vk_kernel k, int dtype);
bool fasa__vk_kernel_has_dtype(vk_kernel k);

/* vk_backend.c: command streams */
fasa_status fasa__vk_exec_begin(fasa_context *ctx, fasa_exec **exec);
fasa_status fasa__vk_exec_end(fasa_context *ctx, fasa_exec *exec, bool wait);
/* Records, submits and waits on the context's command buffer. */
fasa_status fasa__vk_submit_wait(vk_context *vk);
void fasa__vk_barrier(fasa_exec *e);       /* compute -> compute */
void fasa__vk_barrier_all(fasa_exec *e);   /* compute|transfer -> compute|transfer */
void fasa__vk_dispatch(fasa_exec *e, vk_kernel k, int dtype, const void *push, uint32_t push_size,
                       uint32_t gx, uint32_t gy);
/* The same with a z dimension (batches: one item per z). */
void fasa__vk_dispatch3(fasa_exec *e, vk_kernel k, int dtype, const void *push, uint32_t push_size,
                        uint32_t gx, uint32_t gy, uint32_t gz);
/* Host data into b at offset, in the command stream: vkCmdUpdateBuffer
 * copies it into the command buffer at record time, so src may be reused at
 * once (pieces of at most 64 KiB; offset and size multiples of 4). */
void fasa__vk_update(fasa_exec *e, const vk_buf *b, VkDeviceSize offset, const void *src, VkDeviceSize size);

/* vk_cache.c */
/* Records a cache's pending initialisation (tables, row-cache state) and a
 * barrier into e; nothing when none is pending. */
void fasa__vk_cache_init_record(fasa_exec *e, fasa_kv_cache *cache);
fasa_status fasa__vk_host_memory_requirements(fasa_context *ctx, const fasa_kv_cache_desc *d, uint64_t *size,
                                              uint64_t *alignment);
fasa_status fasa__vk_cache_create(fasa_kv_cache *cache);
void fasa__vk_cache_destroy(fasa_kv_cache *cache);
fasa_status fasa__vk_cache_read(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n,
                                float *k, float *v);
fasa_status fasa__vk_read_selection(fasa_kv_cache *cache, const fasa_step *step, int32_t *selected,
                                    uint32_t selected_stride, float *scores, uint32_t scores_stride);

/* vk_fetch.c: FASA-M.  plan sizes the state and its arrays (before the
 * scratch and tables are laid out), init fills it once storage exists. */
fasa_status fasa__vk_fetch_plan(fasa_kv_cache *cache, vk_context *vk, vk_cache *vc);
/* The fetch arrays that need memory and chunk tables (out may be NULL). */
uint32_t fasa__vk_fetch_arrays(vk_fetch *fm, vk_array **out);
fasa_status fasa__vk_fetch_create_arrays(vk_context *vk, vk_fetch *fm);
fasa_status fasa__vk_fetch_init(fasa_kv_cache *cache, vk_context *vk, vk_cache *vc);
/* Whether the cache's fetch state needs init commands, and recording them. */
bool fasa__vk_fetch_needs_init(const vk_cache *vc);
void fasa__vk_fetch_init_record(fasa_exec *e, fasa_kv_cache *cache);
void fasa__vk_fetch_destroy(fasa_kv_cache *cache, vk_context *vk, vk_cache *vc);
uint64_t fasa__vk_fetch_device_bytes(const vk_fetch *fm);
/* Records fetch after the top-k of a sparse step; returns what fac reads. */
vk_fac_source fasa__vk_fetch_record(fasa_exec *e, const fasa_step *step);
void fasa__vk_cache_truncate(fasa_kv_cache *cache, uint32_t length);
fasa_status fasa__vk_transfer_stats_sync(fasa_kv_cache *cache);

/* vk_kernels.c, vk_topk.c */
fasa_status fasa__vk_append(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                            uint32_t n, fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                            uint64_t v_offset, fasa_dtype src_dtype);
fasa_status fasa__vk_sync(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n);
fasa_status fasa__vk_upload_table(fasa_exec *exec, fasa_kv_cache *cache, uint32_t first, uint32_t n,
                                  const uint32_t *src);
fasa_status fasa__vk_tip(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__vk_topk(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__vk_fac(fasa_exec *exec, const fasa_step *step);
fasa_status fasa__vk_dense(fasa_exec *exec, const fasa_step *step);

/* vk_batch.c: the record_batch op, and freeing a cache's batch buffers. */
fasa_status fasa__vk_record_batch(fasa_exec *exec, const fasa_step *steps, uint32_t n);
void fasa__vk_batch_free(vk_context *vk, vk_batch *b);

static inline vk_context *fasa__vk(const fasa_context *ctx) { return (vk_context *)ctx->impl; }
static inline int fasa__vk_dtype(const fasa_kv_cache *c)
{
    return c->dtype == FASA_DTYPE_F16 ? VK_DT_F16 : c->dtype == FASA_DTYPE_BF16 ? VK_DT_BF16 : VK_DT_F32;
}

/* Test hooks (internal, used by tests/vulkan through the static library). */
void fasa__vk_test_set_chunk_limit(fasa_context *ctx, uint64_t bytes);
void fasa__vk_test_force_staging(fasa_context *ctx, bool on);
/* Attention with 4 heads per workgroup (narrow) or up to 8 (wide). */
void fasa__vk_test_set_narrow(fasa_context *ctx, bool narrow);
/* FASA-M row cache: the token of each slot of (layer, KV head g), -1 = free. */
fasa_status fasa__vk_test_read_slots(fasa_kv_cache *cache, uint32_t layer, uint32_t g, int32_t *out);
/* FASA-M caches created afterwards use 32-bit token maps (the path of
 * R >= 65535) and 4-byte row copies (rows of d/2 f16 words not a multiple
 * of 4, or unaligned chunks). */
void fasa__vk_test_fetch_fallbacks(fasa_context *ctx, bool on);
/* Records an invalid command (a misaligned fill) into the next command
 * stream, to check that validation messages fail the call. */
void fasa__vk_test_inject_invalid(fasa_context *ctx);

#endif
