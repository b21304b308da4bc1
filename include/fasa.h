/*
 * libfasa — Frequency-Aware Sparse Attention for long-context LLM decoding.
 *
 * One backend-agnostic C API over a plain-C CPU backend and GPU backends
 * (Vulkan, OpenCL, CUDA).  The semantics of every call follow
 * docs/SPEC.md (the specification) and docs/API.md.
 *
 * Conventions
 *  - Opaque handles with create/destroy pairs.  destroy(NULL) is a no-op.
 *  - Description structs are zero-initialised by the caller; a field left 0
 *    takes the documented default (or is an error where no default exists).
 *    Each ends with `next`, a chain of extension structs (NULL today), so
 *    that later versions can add fields without an ABI break (see "Struct
 *    growth" below and docs/API.md, "Loading and ABI").
 *  - Every fallible call returns a fasa_status.  On failure nothing observable
 *    was written (outputs and caches keep their previous contents) and
 *    fasa_context_last_error() names the bad field.  The library never aborts,
 *    exits, or prints; messages go to the optional logger.
 *  - No global state (but the OpenCL loader handle below) and no environment
 *    variables are read by the library.  The GPU runtimes are opened at run time, not linked: a standalone Vulkan
 *    context (and a Vulkan device listing) opens libvulkan.so.1 and closes
 *    it again; the OpenCL ICD loader (libOpenCL.so.1) is opened once per
 *    process, under a lock, on first use of the OpenCL backend and kept (the
 *    one process-wide object of the library); the CUDA backend's static
 *    runtime opens the driver (libcuda.so.1) itself.  Where one is missing
 *    the backend reports FASA_ERROR_BACKEND_UNAVAILABLE naming the library.
 *
 * Threading
 *  - Distinct contexts are fully independent and may be used concurrently.
 *  - A context serialises all calls on itself and on objects created from it
 *    with an internal mutex, so one context may be shared between threads.
 *    fasa_context_last_error() returns the message of the most recent failing
 *    call on the context, whichever thread made it: when threads share a
 *    context, copy the message right after the failing call or pass a
 *    per-call error buffer where the call takes one.
 *  - The logger and allocator callbacks may be called from library worker
 *    threads and must be thread-safe.
 *
 * NaN / Inf
 *  - Host-pointer inputs (q in fasa_decode_host, k/v in fasa_kv_cache_append)
 *    are scanned; a non-finite value is rejected with FASA_ERROR_NON_FINITE
 *    naming the field and element, and nothing is written.  k/v count as
 *    stored: a finite value that overflows the cache dtype (|x| >= 65520 in
 *    an fp16 cache, an fp32 |x| >= 0x1.fep127 in a bf16 cache) is rejected
 *    too.
 *  - Device-buffer inputs are not scanned (that would cost a pass over them).
 *    With non-finite device inputs: a TIP score depends only on the head's
 *    own dims (NaN/Inf in dims only other heads use do not touch it); a NaN
 *    TIP score ranks below every number, +Inf above and -Inf below every
 *    finite score; a selected row holding NaN/Inf in any dim makes that query
 *    head's output NaN/Inf; other heads are unaffected and no memory outside
 *    the documented buffers is touched.
 *  - Finite inputs whose products overflow fp32 behave like the non-finite case.
 */
#ifndef FASA_H
#define FASA_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FASA_VERSION_MAJOR 0
#define FASA_VERSION_MINOR 1
#define FASA_VERSION_PATCH 0

/* A version as one number (10 bits major, 10 bits minor, 12 bits patch);
 * FASA_VERSION is the version of these headers, fasa_version() that of the
 * library loaded at run time. */
#define FASA_MAKE_VERSION(major, minor, patch)                                                     \
    ((((uint32_t)(major)) << 22) | (((uint32_t)(minor)) << 12) | ((uint32_t)(patch)))
#define FASA_VERSION FASA_MAKE_VERSION(FASA_VERSION_MAJOR, FASA_VERSION_MINOR, FASA_VERSION_PATCH)
#define FASA_VERSION_GET_MAJOR(v) (((uint32_t)(v)) >> 22)
#define FASA_VERSION_GET_MINOR(v) ((((uint32_t)(v)) >> 12) & 0x3ffu)
#define FASA_VERSION_GET_PATCH(v) (((uint32_t)(v)) & 0xfffu)

#if defined(_WIN32) && defined(FASA_BUILD_SHARED)
#define FASA_API __declspec(dllexport)
#elif defined(__GNUC__)
#define FASA_API __attribute__((visibility("default")))
#else
#define FASA_API
#endif

/* ------------------------------------------------------------------------ */
/* Status                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum fasa_status {
    FASA_OK = 0,
    FASA_ERROR_INVALID_ARGUMENT,     /* a field or argument is out of range    */
    FASA_ERROR_NON_FINITE,           /* NaN or Inf in a scanned host input     */
    FASA_ERROR_CAPACITY,             /* appending past the cache capacity      */
    FASA_ERROR_OUT_OF_HOST_MEMORY,
    FASA_ERROR_OUT_OF_DEVICE_MEMORY,
    FASA_ERROR_UNSUPPORTED,          /* valid request this backend/device lacks */
    FASA_ERROR_BACKEND_UNAVAILABLE,  /* backend not compiled in or no device   */
    FASA_ERROR_DEVICE_LOST,          /* GPU reset or driver failure            */
    FASA_ERROR_BACKEND,              /* other driver/runtime error             */
    FASA_ERROR_IO,                   /* file could not be read or written      */
    FASA_ERROR_PARSE,                /* malformed or inconsistent file content */
    FASA_ERROR_MISMATCH,             /* objects with incompatible shapes       */
    FASA_STATUS_COUNT_
} fasa_status;

/* Static string for a status ("FASA_ERROR_PARSE: malformed file"), never NULL. */
FASA_API const char *fasa_status_string(fasa_status status);

/* ------------------------------------------------------------------------ */
/* Version and struct growth                                                 */
/* ------------------------------------------------------------------------ */

/* The version of the library loaded at run time, FASA_MAKE_VERSION(major,
 * minor, patch).  An application built against headers of version H runs
 * with a library of version L when L's major equals H's and L >= H (before
 * 1.0: when major and minor are equal and L >= H). */
FASA_API uint32_t fasa_version(void);
/* The same as text, "0.1.0"; static, never NULL. */
FASA_API const char *fasa_version_string(void);

/* Struct growth.  Every description struct (fasa_context_desc,
 * fasa_kv_cache_desc, fasa_kv_external, fasa_decode_desc,
 * fasa_decode_outputs, fasa_calibration_desc, fasa_calibrator_desc and the
 * embed structs of the backend headers) ends with `next`: a chain of
 * extension structs, each beginning with a fasa_struct_header.  Later
 * versions add fields as new extension struct types, so the structs
 * themselves keep their size and layout (until the first stable release,
 * 1.0, fields may still be appended just before `next`, with a new minor
 * version).  This version defines no extension struct: `next` must be NULL,
 * and a chain entry of a type the library does not know is
 * FASA_ERROR_INVALID_ARGUMENT naming the struct and the type.  A
 * zero-initialised struct (next = NULL) always means "no extensions". */
typedef enum fasa_struct_type {
    FASA_STRUCT_TYPE_NONE = 0,    /* never valid in a chain */
    FASA_STRUCT_TYPE_MAX_ENUM_ = 0x7fffffff
} fasa_struct_type;

typedef struct fasa_struct_header {
    fasa_struct_type type;
    const void *next;             /* the following extension struct, or NULL */
} fasa_struct_header;

/* ------------------------------------------------------------------------ */
/* Enumerations                                                              */
/* ------------------------------------------------------------------------ */

typedef enum fasa_backend {
    FASA_BACKEND_AUTO = 0,  /* discrete GPU, then integrated GPU, then CPU */
    FASA_BACKEND_CPU,
    FASA_BACKEND_VULKAN,
    FASA_BACKEND_OPENCL,
    FASA_BACKEND_CUDA,
    FASA_BACKEND_COUNT_
} fasa_backend;

typedef enum fasa_device_type {
    FASA_DEVICE_OTHER = 0,
    FASA_DEVICE_DISCRETE_GPU,
    FASA_DEVICE_INTEGRATED_GPU,
    FASA_DEVICE_VIRTUAL_GPU,
    FASA_DEVICE_CPU          /* a CPU: the CPU backend, lavapipe, PoCL */
} fasa_device_type;

/* Element types of K and V: the storage of a cache (K, V and K_dom), the
 * source of an append and the engine's K/V of an external cache.  All
 * arithmetic is fp32 whatever the storage.  Conversions (an append from
 * one type into another) round to nearest even; NaN stays NaN (quiet);
 * fp32 -> fp16 overflows to Inf from 65520, fp32 -> bf16 only within the
 * last half ulp below FLT_MAX (|x| >= 0x1.fep127, about 3.3961e38); every
 * fp16 and bf16 value widens to fp32 exactly. */
typedef enum fasa_dtype {
    FASA_DTYPE_F16 = 0,      /* IEEE binary16 storage, fp32 arithmetic (default) */
    FASA_DTYPE_F32,
    FASA_DTYPE_BF16          /* bfloat16: the top 16 bits of an fp32 (8-bit exponent,
                                7-bit fraction), fp32 arithmetic */
} fasa_dtype;

/* Element types of the query and output rows of a decode step
 * (fasa_decode_desc.q_type / o_type).  A type of its own because q and o
 * were always fp32: 0 keeps meaning fp32 here, while fasa_dtype's 0 is
 * fp16.  q is widened to fp32 exactly before any arithmetic, o is rounded
 * to nearest even from the fp32 result as the last operation. */
typedef enum fasa_io_type {
    FASA_IO_F32 = 0,         /* float (default) */
    FASA_IO_F16,             /* IEEE binary16 bits (uint16_t) */
    FASA_IO_BF16             /* bfloat16 bits (uint16_t) */
} fasa_io_type;

/* Which dims of a head form a RoPE rotation pair (docs/SPEC.md §3). */
typedef enum fasa_rope_layout {
    FASA_ROPE_NORM = 0,      /* interleaved: frequency i uses dims (2i, 2i+1) */
    FASA_ROPE_NEOX           /* rotate-half: frequency i uses dims (i, i+d/2) */
} fasa_rope_layout;

/* What a calibration file calls a frequency chunk (docs/SPEC.md §3). */
typedef enum fasa_fc_convention {
    FASA_FC_TRUE_PAIR = 0,   /* FC = a true rotation pair (default)           */
    FASA_FC_HF_ADJACENT      /* FC = HF rotate-half dims (2j,2j+1), remapped   */
} fasa_fc_convention;

typedef enum fasa_mode {
    FASA_MODE_FASA = 0,      /* TIP -> exact top-k -> focused attention     */
    FASA_MODE_DENSE,         /* exact attention over all cached tokens       */
    FASA_MODE_ORACLE         /* top-k by the true full scores, then FAC      */
} fasa_mode;

typedef enum fasa_gqa_select {
    FASA_GQA_PER_HEAD = 0,   /* every query head selects its own tokens      */
    FASA_GQA_PER_GROUP       /* one selection per KV group (summed scores)   */
} fasa_gqa_select;

typedef enum fasa_placement {
    FASA_PLACEMENT_DEVICE = 0, /* FASA-C: whole cache in device memory        */
    FASA_PLACEMENT_OFFLOAD     /* FASA-M: dominant key dims on the device,
                                  the rest of K and all of V host-visible     */
} fasa_placement;

/* FASA-M: how FAC reaches the selected rows that live in host memory. */
typedef enum fasa_fetch {
    FASA_FETCH_DIRECT = 0,       /* FAC reads the rows in place (host-visible memory) */
    FASA_FETCH_STAGED            /* the selected rows are gathered into device memory first */
} fasa_fetch;

typedef enum fasa_log_level {
    FASA_LOG_DEBUG = 0,
    FASA_LOG_INFO,
    FASA_LOG_WARN,
    FASA_LOG_ERROR
} fasa_log_level;

/* ------------------------------------------------------------------------ */
/* Callbacks                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct fasa_logger {
    void (*log)(void *user, fasa_log_level level, const char *message);
    void *user;
    fasa_log_level min_level;    /* 0 = DEBUG: everything */
} fasa_logger;

/* Host memory callbacks.  Either both are set or neither (then malloc/free).
 * alloc must return memory aligned to `align` (a power of two <= 4096). */
typedef struct fasa_allocator {
    void *(*alloc)(void *user, size_t size, size_t align);
    void (*free)(void *user, void *ptr);
    void *user;
} fasa_allocator;

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */
/* ------------------------------------------------------------------------ */

#define FASA_MAX_HEAPS 8

typedef struct fasa_memory_heap {
    uint64_t size;            /* bytes */
    bool device_local;
    bool host_visible;        /* some memory type of the heap is host-visible */
} fasa_memory_heap;

typedef struct fasa_device_info {
    fasa_backend backend;
    uint32_t index;               /* index within the backend's device list */
    fasa_device_type type;
    char name[256];
    char driver[128];             /* driver name and version, free text */
    uint32_t vendor_id;           /* PCI vendor id, 0 when unknown */
    uint32_t device_id;
    uint32_t subgroup_size;       /* 0 when the backend has no subgroups */
    uint32_t compute_units;
    uint64_t max_shared_memory;   /* bytes per workgroup */
    uint64_t max_buffer_size;     /* largest single allocation, bytes */
    uint32_t heap_count;
    fasa_memory_heap heaps[FASA_MAX_HEAPS];
    bool unified_memory;          /* device memory is host memory (UMA) */
} fasa_device_info;

/* True when the backend was compiled into this build. */
FASA_API bool fasa_backend_compiled(fasa_backend backend);
/* "cpu", "vulkan", "opencl", "cuda", "auto"; "unknown" otherwise. */
FASA_API const char *fasa_backend_name(fasa_backend backend);
/* Parses a backend name; returns FASA_ERROR_INVALID_ARGUMENT if unknown. */
FASA_API fasa_status fasa_backend_from_name(const char *name, fasa_backend *out);

/* Lists the devices of one backend (not AUTO).  On input *count is the
 * capacity of `devices` (which may be NULL when *count is 0); on output it
 * is the number of devices found (may exceed the capacity; only the first
 * capacity entries are written).  error_message (optional) receives the
 * reason on failure.  A backend compiled in but without devices returns
 * FASA_ERROR_BACKEND_UNAVAILABLE with a message saying why. */
FASA_API fasa_status fasa_list_devices(fasa_backend backend, fasa_device_info *devices,
                                       uint32_t *count, char *error_message,
                                       size_t error_message_size);

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct fasa_context fasa_context;
typedef struct fasa_buffer fasa_buffer;
typedef struct fasa_kv_cache fasa_kv_cache;
typedef struct fasa_calibration fasa_calibration;
typedef struct fasa_calibrator fasa_calibrator;

/* Backend-specific embedding data (see fasa_vulkan.h, fasa_opencl.h,
 * fasa_cuda.h).  Leave NULL for standalone mode. */
typedef struct fasa_context_desc {
    fasa_backend backend;         /* 0 = AUTO */
    int32_t device_index;         /* index within the backend; -1 or 0 with
                                     AUTO = choose by the auto rule.  For an
                                     explicit backend 0 is its first device. */
    uint32_t n_threads;           /* host worker threads, 0 = all cores */
    fasa_logger logger;
    fasa_allocator allocator;
    const void *embed;            /* fasa_vk_embed / fasa_cl_embed / fasa_cuda_embed */
    uint32_t flags;               /* FASA_CONTEXT_* */
    const char *cache_dir;        /* directory for compiled kernel/pipeline caches;
                                     NULL = no on-disk cache (the library reads no
                                     environment variables; the fasa tool passes
                                     $XDG_CACHE_HOME/libfasa or ~/.cache/libfasa).
                                     Drivers load the code in it, so it must be as
                                     trusted as the library itself, like a shader
                                     cache: writable by nobody but the user.
                                     Entries are checked (sizes, SHA-256, key,
                                     format headers) and rebuilt on any doubt, but
                                     a hash does not stop a writer.  libfasa
                                     creates missing directories user-only (0700). */
    char *error_message;          /* optional: receives the reason when creation fails */
    size_t error_message_size;
    uint64_t device_memory_budget;/* bytes of device memory the context may allocate
                                     (buffers, caches, scratch, staging), 0 = no limit;
                                     an allocation past it fails with
                                     FASA_ERROR_OUT_OF_DEVICE_MEMORY.  Enforced by the
                                     Vulkan backend; other backends refuse a value
                                     other than 0 (FASA_ERROR_UNSUPPORTED). */
    const void *next;             /* extension chain (fasa_struct_header), NULL */
} fasa_context_desc;

#define FASA_CONTEXT_ENABLE_VALIDATION   0x1u  /* Vulkan: enable the Khronos layer; any message fails the call */
#define FASA_CONTEXT_NO_SOFTWARE_DEVICES 0x2u  /* AUTO: never pick lavapipe/PoCL-class devices */
#define FASA_CONTEXT_PROFILE             0x4u  /* keep per-step device timings (fasa_context_last_step_ns) */

FASA_API fasa_status fasa_context_create(const fasa_context_desc *desc, fasa_context **out);
FASA_API void fasa_context_destroy(fasa_context *ctx);
/* Message of the most recent failure on this context ("" if none). */
FASA_API const char *fasa_context_last_error(const fasa_context *ctx);
FASA_API fasa_status fasa_context_device(const fasa_context *ctx, fasa_device_info *out);
FASA_API fasa_backend fasa_context_backend(const fasa_context *ctx);
/* Waits for all work the context submitted itself (not work recorded into
 * caller-owned command buffers). */
FASA_API fasa_status fasa_context_finish(fasa_context *ctx);
/* Device time of the most recent decode step in nanoseconds, measured with
 * timestamps on GPU backends and wall clock on the CPU backend.  Needs
 * FASA_CONTEXT_PROFILE; returns FASA_ERROR_UNSUPPORTED otherwise. */
FASA_API fasa_status fasa_context_last_step_ns(const fasa_context *ctx, uint64_t *ns);
/* Device memory the context holds now (every allocation libfasa made, or
 * made through an embedding host's allocator, that is not yet freed) and
 * its desc.device_memory_budget (0 = none).  Vulkan only; other backends
 * return FASA_ERROR_UNSUPPORTED. */
FASA_API fasa_status fasa_context_device_memory(const fasa_context *ctx, uint64_t *used, uint64_t *budget);

/* ------------------------------------------------------------------------ */
/* Buffers: memory the backend's kernels can read and write                  */
/* ------------------------------------------------------------------------ */

/* Device memory owned by the library (host memory for the CPU backend). */
FASA_API fasa_status fasa_buffer_create(fasa_context *ctx, uint64_t size, fasa_buffer **out);
/* Wraps caller-owned host memory; CPU backend only (GPU backends wrap their
 * native handles through fasa_vulkan.h / fasa_opencl.h / fasa_cuda.h). */
FASA_API fasa_status fasa_buffer_wrap_host(fasa_context *ctx, void *ptr, uint64_t size,
                                           fasa_buffer **out);
FASA_API void fasa_buffer_destroy(fasa_buffer *buf);
FASA_API uint64_t fasa_buffer_size(const fasa_buffer *buf);
/* Blocking copies between host memory and a buffer. */
FASA_API fasa_status fasa_buffer_write(fasa_buffer *buf, uint64_t offset, const void *src,
                                       uint64_t size);
FASA_API fasa_status fasa_buffer_read(fasa_buffer *buf, uint64_t offset, void *dst,
                                      uint64_t size);

/* ------------------------------------------------------------------------ */
/* Model attention shape                                                     */
/* ------------------------------------------------------------------------ */

typedef struct fasa_model_shape {
    uint32_t n_layers;            /* > 0 */
    uint32_t n_q_heads;           /* Hq > 0 */
    uint32_t n_kv_heads;          /* Hkv > 0, Hq % Hkv == 0 */
    uint32_t head_dim;            /* d: even, 2..512 (64/128/256 are tested) */
    fasa_rope_layout layout;
} fasa_model_shape;

#define FASA_MAX_HEAD_DIM 512
#define FASA_MAX_N_FAC 8192

/* Validates a shape; the message names the bad field. */
FASA_API fasa_status fasa_model_shape_check(fasa_context *ctx, const fasa_model_shape *shape);

/* ------------------------------------------------------------------------ */
/* Calibration: per (layer, query head) the dominant dims, as sorted dim      */
/* index lists in the runtime layout (2*n_tip entries each)                  */
/* ------------------------------------------------------------------------ */

typedef struct fasa_calibration_desc {
    fasa_model_shape shape;
    uint32_t n_tip;               /* FCs per head, 1 .. d/2 */
    const uint16_t *dims;         /* [n_layers][Hq][2*n_tip] runtime dims */
    const float *ca_mean;         /* optional [n_layers][Hq][d/2] mean CA per FC index */
    fasa_fc_convention convention;
    uint32_t k_calib;             /* K used for CA, 0 = unknown */
    uint64_t n_samples, n_steps;  /* informational */
    const char *model_id;         /* optional, copied */
    const char *source;           /* optional: "synthetic", "teacher_forced", "generated" */
    const void *next;             /* extension chain (fasa_struct_header), NULL */
} fasa_calibration_desc;

FASA_API fasa_status fasa_calibration_create(fasa_context *ctx, const fasa_calibration_desc *desc,
                                             fasa_calibration **out);
/* Loads a calibration JSON file.  expect (optional) is the model shape the
 * file must match (layout included); a mismatch is FASA_ERROR_MISMATCH naming
 * the field.  Any malformed content is FASA_ERROR_PARSE naming the field,
 * layer and head, or the byte offset: strict JSON only (no trailing data, no
 * duplicate or unknown keys, valid UTF-8 without U+0000 in strings; see
 * docs/CALIBRATION.md).  path must be a regular file (a FIFO, directory or
 * device is FASA_ERROR_IO at once, never a blocking open); at most 256 MiB. */
FASA_API fasa_status fasa_calibration_load(fasa_context *ctx, const char *path,
                                           const fasa_model_shape *expect,
                                           fasa_calibration **out);
FASA_API fasa_status fasa_calibration_load_memory(fasa_context *ctx, const char *json,
                                                  size_t size, const fasa_model_shape *expect,
                                                  fasa_calibration **out);
/* Writes the calibration as JSON.  The file is replaced atomically (written
 * to a temporary file in the same directory, fsynced, renamed): on any
 * failure the previous file at path is left as it was.  A path naming an
 * existing directory, FIFO or device is refused (FASA_ERROR_IO). */
FASA_API fasa_status fasa_calibration_save(const fasa_calibration *cal, const char *path);
/* Re-expresses the dims in another RoPE layout (same FCs, mapped dims). */
FASA_API fasa_status fasa_calibration_remap_layout(const fasa_calibration *cal,
                                                   fasa_rope_layout layout,
                                                   fasa_calibration **out);
/* Re-selects n_tip FCs per head from the stored mean CA table. */
FASA_API fasa_status fasa_calibration_reselect(const fasa_calibration *cal, uint32_t n_tip,
                                               fasa_calibration **out);
FASA_API void fasa_calibration_destroy(fasa_calibration *cal);

typedef struct fasa_calibration_info {
    fasa_model_shape shape;
    uint32_t n_tip;
    fasa_fc_convention convention;
    uint32_t k_calib;
    uint64_t n_samples, n_steps;
    bool has_ca_mean;
    const char *model_id;         /* "" if unset; valid while cal lives */
    const char *source;
} fasa_calibration_info;

FASA_API fasa_status fasa_calibration_get_info(const fasa_calibration *cal,
                                               fasa_calibration_info *out);
/* Copies the 2*n_tip dims of (layer, q_head) into out. */
FASA_API fasa_status fasa_calibration_get_dims(const fasa_calibration *cal, uint32_t layer,
                                               uint32_t q_head, uint16_t *out, uint32_t capacity);
/* Size of the union of the group's dims for (layer, kv_head). */
FASA_API fasa_status fasa_calibration_union_size(const fasa_calibration *cal, uint32_t layer,
                                                 uint32_t kv_head, uint32_t *out);
/* Copies the mean CA table row of (layer, q_head): d/2 floats. */
FASA_API fasa_status fasa_calibration_get_ca(const fasa_calibration *cal, uint32_t layer,
                                             uint32_t q_head, float *out, uint32_t capacity);

/* Offline calibration by Contextual Agreement (docs/SPEC.md §4). */
typedef struct fasa_calibrator_desc {
    fasa_model_shape shape;
    uint32_t n_tip;               /* 0 = d/8 */
    uint32_t k_calib;             /* K for CA, 0 = 256 */
    fasa_fc_convention convention;/* 0 = TRUE_PAIR */
    bool share_group_dims;        /* GQA option (b): one dim set per KV group,
                                     the top n_tip of the CA summed over the group */
    const char *model_id;         /* optional */
    const char *source;           /* optional, default "teacher_forced" */
    const void *next;             /* extension chain (fasa_struct_header), NULL */
} fasa_calibrator_desc;

FASA_API fasa_status fasa_calibrator_create(fasa_context *ctx, const fasa_calibrator_desc *desc,
                                            fasa_calibrator **out);
/* Scores one decode step of one layer: q [Hq][d] (post-RoPE) against the
 * keys k [n_keys][Hkv][d] (post-RoPE, the current key included), fp32,
 * token-major with rows of Hkv*d floats. */
FASA_API fasa_status fasa_calibrator_add(fasa_calibrator *cal, uint32_t layer, const float *q,
                                         const float *k, uint32_t n_keys);
/* Marks the start of a new sample (text window); only counted. */
FASA_API fasa_status fasa_calibrator_next_sample(fasa_calibrator *cal);
/* Produces the calibration (mean CA table included).  Every layer must have
 * at least one step. */
FASA_API fasa_status fasa_calibrator_finish(fasa_calibrator *cal, fasa_calibration **out);
FASA_API void fasa_calibrator_destroy(fasa_calibrator *cal);

/* ------------------------------------------------------------------------ */
/* KV cache                                                                  */
/* ------------------------------------------------------------------------ */

/* External K and V (fasa_kv_cache_desc.external): a cache over K and V
 * memory the engine owns and writes itself, read in place by every kernel;
 * libfasa then owns only the dominant-dims side buffer K_dom and the step
 * scratch (docs/API.md, "External KV").
 *
 * Element c of KV head g, token t of layer l's K is at byte
 *     k_offset[l] + (t * token_stride + g * head_stride + c) * element size
 * of k[l] (likewise V), in the cache dtype (fasa_kv_cache_desc.dtype: F16,
 * BF16 or F32).  Token-major [token][kv_head][d] (llama.cpp, vLLM):
 * token_stride = n_kv_heads * d, head_stride = d; head-major
 * [kv_head][token][d]: token_stride = d, head_stride = capacity * d; padded
 * strides are fine.  Rules (each failure names the field):
 *  - the rows of one layer must not overlap: either the heads of a token
 *    lie inside one token stride (token_stride >= (n_kv_heads - 1) *
 *    head_stride + d, head_stride >= d) or the tokens of a head inside one
 *    head stride (head_stride >= (capacity - 1) * token_stride + d,
 *    token_stride >= d); a stride that is never used (token_stride with
 *    capacity 1, head_stride with one KV head) is not checked;
 *  - both strides are even and below 2^32 elements, and every offset is a
 *    multiple of two elements (4 bytes for F16/BF16, 8 for F32): the kernels
 *    read elements in pairs;
 *  - every buffer holds all capacity tokens of its layer under the strides,
 *    belongs to the cache's context and stays alive, unchanged in size,
 *    until fasa_kv_cache_destroy.  Buffers: fasa_buffer_wrap_host (CPU
 *    backend, read in place), fasa_vk_buffer_wrap of a VkBuffer created with
 *    VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT (and TRANSFER_SRC for
 *    fasa_kv_cache_read), fasa_cl_buffer_wrap, fasa_cuda_buffer_wrap, or
 *    fasa_buffer_create.  Layers may share buffers; K and V may share one
 *    (libfasa only reads them).
 * The engine writes K and V and then calls fasa_kv_cache_sync (or a record
 * variant of the backend headers) for the tokens it wrote; the values are
 * not scanned for NaN/Inf (like fasa_kv_cache_append_buffers).  Only
 * placement DEVICE: FASA-M keeps K and V in libfasa's own host memory. */
typedef struct fasa_kv_external {
    uint64_t token_stride;        /* elements from token t to t + 1 of one KV head */
    uint64_t head_stride;         /* elements from KV head g to g + 1 of one token */
    fasa_buffer *const *k;        /* [n_layers] the engine's K of each layer */
    fasa_buffer *const *v;        /* [n_layers] the engine's V, same layout */
    const uint64_t *k_offset;     /* [n_layers] byte offsets into k[l]; NULL = all 0 */
    const uint64_t *v_offset;     /* [n_layers] likewise for v[l]; NULL = all 0 */
    uint32_t block_size;          /* 0 = one sequence, token t at row t.  A power of
                                     two >= 1: the capacity rows are a pool shared
                                     by sequences (paged, vLLM style; 1 = a cell
                                     array, llama.cpp's unified cache): every decode
                                     names its sequence with a fasa_sequence, and
                                     token t of it is row table[t / block_size] *
                                     block_size + t % block_size.  capacity must be
                                     a multiple of block_size. */
    /* (new fields before 1.0 go here, above next) */
    const void *next;             /* extension chain (fasa_struct_header), NULL */
} fasa_kv_external;

/* One sequence of a paged or shared cache (fasa_kv_external.block_size >
 * 0): its length and its block table, a host array of block indices in
 * token order (for block_size 1 the sequence's cells).  Only the rows the
 * table names for tokens [0, length) are ever read or selected: a row of
 * another sequence or an empty row is never touched.  Every entry used
 * must be below capacity / block_size (checked); entries past
 * ceil(length / block_size) are ignored.  Blocks may be shared between
 * sequences (a common prefix).  The rows must have been synced
 * (fasa_kv_cache_sync) for K_dom to hold their dominant dims; an unsynced
 * row scores from stale K_dom (never out-of-bounds memory). */
typedef struct fasa_sequence {
    uint32_t length;              /* tokens of the sequence, >= 1 */
    uint32_t n_blocks;            /* entries at block_table, >= ceil(length / block_size) */
    const uint32_t *block_table;  /* [n_blocks] block indices (copied by the call) */
} fasa_sequence;

typedef struct fasa_kv_cache_desc {
    fasa_model_shape shape;
    uint32_t capacity;            /* tokens per layer, > 0 */
    fasa_dtype dtype;             /* storage, 0 = F16 (docs/SPEC.md default; half the
                                     bytes of F32, outputs differ from an F32
                                     cache by fp16 rounding of K and V); BF16
                                     the same size with fp32's range */
    const fasa_calibration *calibration; /* needed for FASA_MODE_FASA; copied */
    const uint32_t *dense_layers; /* layers always decoded densely; with
                                     n_dense_layers = 0 the default is {0} */
    uint32_t n_dense_layers;
    uint32_t flags;               /* FASA_CACHE_* */
    uint32_t max_n_fac;           /* largest n_fac used with this cache, 0 = 2048 */
    fasa_placement placement;     /* 0 = DEVICE (FASA-C) */
    /* FASA-M only (placement OFFLOAD): */
    fasa_fetch fetch;             /* 0 = DIRECT */
    uint32_t row_cache_rows;      /* STAGED: device-resident rows kept per (layer, KV
                                     head) across steps, so rows selected again
                                     need no transfer; 0 = no row cache */
    void *host_memory;            /* optional: application-owned host memory for
                                     the offloaded K and V, used in place of an
                                     allocation of libfasa's (Vulkan with
                                     VK_EXT_external_memory_host imports it; no
                                     copy).  Size and alignment: see
                                     fasa_kv_cache_host_memory_requirements.  It
                                     must stay valid, and untouched by the
                                     application, until fasa_kv_cache_destroy.
                                     NULL = libfasa allocates. */
    uint64_t host_memory_size;    /* bytes at host_memory */
    const fasa_kv_external *external; /* optional: K and V in the engine's memory,
                                     read in place (see fasa_kv_external; dtype
                                     is then the engine's element type); NULL =
                                     libfasa owns K and V.  Copied at create. */
    /* (new fields before 1.0 go here, above next) */
    const void *next;             /* extension chain (fasa_struct_header), NULL */
} fasa_kv_cache_desc;

#define FASA_CACHE_NO_DENSE_LAYERS 0x1u /* no layer is forced dense */

FASA_API fasa_status fasa_kv_cache_create(fasa_context *ctx, const fasa_kv_cache_desc *desc,
                                          fasa_kv_cache **out);
FASA_API void fasa_kv_cache_destroy(fasa_kv_cache *cache);
/* Bytes and alignment that desc.host_memory must have for an offloaded
 * cache described by desc on ctx (desc's own host_memory fields are
 * ignored).  FASA_ERROR_UNSUPPORTED where the backend or the device cannot
 * use application host memory: today the Vulkan backend on a device with
 * VK_EXT_external_memory_host (enabled by libfasa on its own devices; an
 * embedding host says so in fasa_vk_embed). */
FASA_API fasa_status fasa_kv_cache_host_memory_requirements(fasa_context *ctx, const fasa_kv_cache_desc *desc,
                                                            uint64_t *size, uint64_t *alignment);
/* The context a cache was created from (for fasa_context_last_error). */
FASA_API fasa_context *fasa_kv_cache_context(const fasa_kv_cache *cache);

/* Appends n tokens to one layer.  k and v are [n][Hkv][d] host arrays in
 * src_dtype (F32 floats, or F16 / BF16 bits as uint16_t), converted to the
 * cache dtype (round to nearest even; equal types copy the bits).  Rejects
 * values that are not finite once stored in the cache dtype (NaN, Inf,
 * |x| >= 65520 for an F16 cache, |x| >= 0x1.fep127 from fp32 into a BF16
 * cache) and appending past capacity without writing anything.  Each call is
 * atomic for its layer only: an engine appending layer by layer that fails
 * at layer l rewinds layers 0..l-1 with fasa_kv_cache_truncate.  External
 * caches (desc.external) take no appends (INVALID_ARGUMENT): the engine
 * writes K and V and calls fasa_kv_cache_sync. */
FASA_API fasa_status fasa_kv_cache_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n,
                                          const void *k, const void *v, fasa_dtype src_dtype);
/* Same, with k and v in backend buffers (not scanned for NaN/Inf). */
FASA_API fasa_status fasa_kv_cache_append_buffers(fasa_kv_cache *cache, uint32_t layer,
                                                  uint32_t n, fasa_buffer *k, uint64_t k_offset,
                                                  fasa_buffer *v, uint64_t v_offset,
                                                  fasa_dtype src_dtype);
/* External caches (desc.external): tokens [first, first + n) of `layer`
 * were written by the engine.  Their K_dom rows are recomputed on the
 * device from the engine's K (no host round trip) and the layer's length
 * becomes max(length, first + n).  first <= length (no gap); first + n
 * past capacity is FASA_ERROR_CAPACITY.  Rewriting tokens below the length
 * (first < length) is fine; to rewind (speculative decoding, a cleared
 * conversation) call fasa_kv_cache_truncate, write the new tokens and sync
 * them.  Calls on a cache that owns its K and V are rejected (use append).
 * Waits for the device; the record/enqueue variants are in the backend
 * headers.  The engine's values are not scanned for NaN/Inf. */
FASA_API fasa_status fasa_kv_cache_sync(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n);
/* Tokens currently held by a layer. */
FASA_API fasa_status fasa_kv_cache_length(const fasa_kv_cache *cache, uint32_t layer,
                                          uint32_t *out);
/* Shrinks every layer to at most `length` tokens (0 clears the cache). */
FASA_API fasa_status fasa_kv_cache_truncate(fasa_kv_cache *cache, uint32_t length);
/* Reads tokens [first, first+n) of a layer back as fp32 [n][Hkv][d]
 * (either output may be NULL).  An external cache reads the engine's
 * memory through its layout. */
FASA_API fasa_status fasa_kv_cache_read(fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                                        uint32_t n, float *k, float *v);

typedef struct fasa_memory_report {
    uint64_t device_bytes;        /* resident in device-local memory (an external
                                     cache: K_dom only, the engine's K and V are
                                     not counted) */
    uint64_t host_bytes;          /* resident in host(-visible) memory */
    uint64_t scratch_bytes;       /* per-step scratch (scores, indices, partials) */
    uint64_t dense_equivalent;    /* bytes a plain dense K+V cache would take (the
                                     size of the engine's K+V for an external one) */
    uint32_t max_union_dims;      /* largest u_g over layers and KV heads */
} fasa_memory_report;

FASA_API fasa_status fasa_kv_cache_memory(const fasa_kv_cache *cache, fasa_memory_report *out);

/* FASA-M traffic, summed over the sparse decode steps since the cache was
 * created or the counters were last reset. */
typedef struct fasa_transfer_stats {
    uint64_t steps;               /* sparse decode steps of an offloaded cache */
    uint64_t rows_needed;         /* distinct (KV head, token) rows FAC needed */
    uint64_t rows_cached;         /* of those, already device-resident (row cache hits) */
    uint64_t bytes;               /* host -> device bytes (read in place or copied) */
    /* FASA_DECODE_PREFETCH steps (sparse path only), the rows they copied
     * into the row cache and their bytes (not included in `bytes`): */
    uint64_t prefetch_steps;
    uint64_t prefetch_rows;
    uint64_t prefetch_bytes;
} fasa_transfer_stats;

/* Copies the counters and, if reset, zeroes them.  Backends with one memory
 * (the CPU backend, lavapipe, PoCL's CPU device) count rows but move 0 bytes. */
FASA_API fasa_status fasa_kv_cache_transfer_stats(fasa_kv_cache *cache, fasa_transfer_stats *out, bool reset);

/* ------------------------------------------------------------------------ */
/* Decode step: one query row per head, one layer                            */
/* ------------------------------------------------------------------------ */

typedef struct fasa_decode_desc {
    fasa_mode mode;               /* 0 = FASA */
    uint32_t n_fac;               /* token budget, 0 = 256 */
    uint32_t n_sink;              /* first tokens always kept (inside the budget) */
    uint32_t n_recent;            /* last tokens always kept (inside the budget) */
    fasa_gqa_select gqa_select;   /* 0 = per query head */
    uint32_t flags;               /* FASA_DECODE_* */
    fasa_io_type q_type;          /* element type of q, 0 = fp32 (fasa_decode and the
                                     record/enqueue variants; fasa_decode_host takes
                                     fp32 only) */
    fasa_io_type o_type;          /* element type of o, 0 = fp32 (likewise) */
    const fasa_sequence *sequence;/* paged/shared caches (fasa_kv_external.block_size
                                     > 0): the sequence decoded, required there; NULL
                                     for every other cache.  fasa_decode_batch takes
                                     it per item instead (must be NULL here). */
    /* (new fields before 1.0 go here, above next) */
    const void *next;             /* extension chain (fasa_struct_header), NULL */
} fasa_decode_desc;

/* FASA-M prefetch: the step scores and selects the tokens for q as usual and
 * brings the selected K and V rows into the layer's row cache, but computes
 * no attention (o is not written and may be NULL).  Meant for a speculative
 * query of a layer not yet reached (e.g. the next layer's q projected from
 * the current hidden state): issued early, its transfer overlaps the
 * engine's other work, and the real step then finds the rows resident.
 * Counted in fasa_transfer_stats.prefetch_*, not in the demand counters.
 * Needs a cache with placement OFFLOAD, fetch STAGED and row_cache_rows > 0;
 * on a step that takes the dense path it does nothing.  On Vulkan the step
 * ends without a trailing barrier, so a host's next commands may run
 * alongside it (libfasa's next step begins with a full barrier). */
#define FASA_DECODE_PREFETCH 0x1u

/* Which path a step took. */
typedef enum fasa_path {
    FASA_PATH_DENSE = 0,          /* dense kernel (mode, dense layer or L <= n_fac) */
    FASA_PATH_SPARSE              /* TIP/oracle scores -> top-k -> FAC */
} fasa_path;

/* Optional host outputs of fasa_decode_host (all pointers may be NULL). */
typedef struct fasa_decode_outputs {
    int32_t *selected;            /* [n_rows][selected_stride] token indices; forced
                                     tokens first, then the top-k in ascending
                                     order on the CPU backend, any order elsewhere */
    uint32_t selected_stride;     /* >= n_fac */
    float *scores;                /* [n_rows][scores_stride] TIP (or oracle) scores */
    uint32_t scores_stride;       /* >= L */
    /* written by the call: */
    fasa_path path;
    uint32_t n_rows;              /* Hq per head, Hkv per group; 0 on the dense path */
    uint32_t n_selected;          /* tokens per row (= n_fac on the sparse path) */
    void *next;                   /* extension chain (fasa_struct_header) of further
                                     outputs, NULL; not written by the call */
} fasa_decode_outputs;

/* Enqueues one decode step of `layer` on the context's queue.  q is
 * [Hq][d] at q_offset in a buffer, o is written as [Hq][d], each in the
 * element type desc->q_type / o_type (fp32 by default; offsets are
 * multiples of 4 bytes; a FASA_DECODE_PREFETCH step writes no o; o may
 * then be NULL).
 * On standalone GPU contexts the step is submitted and waited for; engines
 * that record into their own command buffers use the backend headers. */
FASA_API fasa_status fasa_decode(fasa_kv_cache *cache, uint32_t layer,
                                 const fasa_decode_desc *desc, fasa_buffer *q,
                                 uint64_t q_offset, fasa_buffer *o, uint64_t o_offset);
/* Host-pointer convenience: q and o are host arrays [Hq][d] fp32 (desc's
 * q_type and o_type must be FASA_IO_F32; 16-bit q and o go through
 * fasa_decode); q is scanned for NaN/Inf.  outputs (optional) receives the
 * selection.  o may be NULL with FASA_DECODE_PREFETCH. */
FASA_API fasa_status fasa_decode_host(fasa_kv_cache *cache, uint32_t layer,
                                      const fasa_decode_desc *desc, const float *q, float *o,
                                      fasa_decode_outputs *outputs);

/* Batched decode: one decode step of `layer` for each of n items, recorded
 * as one command stream and submitted once (docs/API.md, "Batched
 * decode").  Each item names its cache (several items may share a paged
 * cache, each with its own sequence, or name caches of their own; all of
 * one context), its sequence (paged caches) and its q and o; desc's
 * settings (mode, n_fac, n_sink, n_recent, gqa_select, q/o types, flags)
 * apply to every item and desc->sequence must be NULL.  Every item is
 * validated before anything runs (a failure names items[i] and the field);
 * each item's o is bit for bit what fasa_decode of that item alone writes
 * (on a GPU, with L above one top-k tile, the order in which a row's tokens
 * are summed may vary from run to run, batched or not: docs/API.md).
 * Items writing overlapping o ranges are rejected. */
typedef struct fasa_decode_item {
    fasa_kv_cache *cache;
    const fasa_sequence *sequence;/* paged/shared caches only, else NULL */
    fasa_buffer *q;               /* [Hq][d] in desc->q_type at q_offset */
    uint64_t q_offset;
    fasa_buffer *o;               /* [Hq][d] in desc->o_type at o_offset (NULL with
                                     FASA_DECODE_PREFETCH) */
    uint64_t o_offset;
} fasa_decode_item;

FASA_API fasa_status fasa_decode_batch(fasa_context *ctx, uint32_t layer, const fasa_decode_desc *desc,
                                       uint32_t n, const fasa_decode_item *items);

#ifdef __cplusplus
}
#endif

#endif /* FASA_H */
