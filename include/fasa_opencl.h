/*
 * libfasa OpenCL embedding API (see docs/API.md and docs/OPENCL.md).
 *
 * A host engine that owns an OpenCL context can let libfasa run inside it:
 *
 *   fasa_cl_embed emb = {host_context, host_device, host_queue};
 *   fasa_context_desc desc = {.backend = FASA_BACKEND_OPENCL, .embed = &emb};
 *   fasa_context_create(&desc, &ctx);
 *
 * Queue requirements
 *  - The queue must belong to `context` and `device` and be in-order (no
 *    CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE): libfasa's kernels of one call
 *    depend on each other and are ordered only by the queue.  Work the host
 *    enqueued earlier on the same queue (for example the kernel writing q)
 *    is seen by libfasa's kernels, and libfasa's results are seen by work
 *    enqueued after them.
 *  - CL_QUEUE_PROFILING_ENABLE is optional.  Without it,
 *    fasa_context_last_step_ns() reports FASA_ERROR_UNSUPPORTED; with it
 *    (and FASA_CONTEXT_PROFILE) the blocking calls record event timings.
 *  - libfasa retains the context and queue for its own lifetime and
 *    releases them in fasa_context_destroy().
 *
 * Blocking and enqueue-only calls
 *  - fasa_cl_enqueue_decode() and fasa_cl_enqueue_append() only enqueue:
 *    no flush, no finish, no host synchronisation and no allocation.  The
 *    caller flushes/finishes (or waits on its own later work).  On a
 *    standalone OpenCL context they enqueue on the library's queue and
 *    flush it; fasa_context_finish() waits for them.
 *  - Every other call (fasa_decode, fasa_decode_host, fasa_kv_cache_append,
 *    fasa_buffer_read/write, ...) is blocking on the context's queue, also
 *    in embedding mode: it finishes the queue before returning.
 *  - fasa_cl_enqueue_append() advances the layer's length on the host at
 *    once; the rows are written when the queue reaches the append.
 *
 * Buffers
 *  - fasa_cl_buffer_wrap() wraps a caller-owned cl_mem (created in the
 *    context's cl_context) as a fasa_buffer covering [offset, offset+size).
 *    libfasa retains the cl_mem while the wrapper lives;
 *    fasa_buffer_destroy() releases that reference only.
 *  - Offsets are in bytes and must be multiples of 4.
 *
 * What each enqueued step reads and writes: q (read), o (written:
 * [Hq][d], each in the decode desc's q_type / o_type, fp32 by default),
 * the cache's storage (read) and its scratch (scores,
 * selection, partials: written).  fasa_cl_enqueue_append reads k and v and
 * writes the layer's K, V and K_dom rows of the new tokens.
 */
#ifndef FASA_OPENCL_H
#define FASA_OPENCL_H

#include "fasa.h"

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#ifdef __APPLE__
#include <OpenCL/cl.h>
#else
#include <CL/cl.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Passed as fasa_context_desc.embed with backend FASA_BACKEND_OPENCL. */
typedef struct fasa_cl_embed {
    cl_context context;           /* the host's context */
    cl_device_id device;          /* a device of that context */
    cl_command_queue queue;       /* in-order queue of context and device */
    const void *next;             /* extension chain (fasa_struct_header), NULL */
} fasa_cl_embed;

/* Wraps bytes [offset, offset + size) of a caller-owned cl_mem. */
FASA_API fasa_status fasa_cl_buffer_wrap(fasa_context *ctx, cl_mem mem, uint64_t offset,
                                         uint64_t size, fasa_buffer **out);
/* The cl_mem behind a buffer of an OpenCL context and (offset may be NULL)
 * the byte offset at which the fasa_buffer starts in it (0 for buffers the
 * library created).  The cl_mem stays owned by the fasa_buffer. */
FASA_API fasa_status fasa_cl_buffer_handle(const fasa_buffer *buf, cl_mem *mem,
                                           uint64_t *offset);

/* fasa_decode, enqueue only: the step's kernels are enqueued on the
 * context's queue and the call returns.  Arguments as for fasa_decode. */
FASA_API fasa_status fasa_cl_enqueue_decode(fasa_kv_cache *cache, uint32_t layer,
                                            const fasa_decode_desc *desc, fasa_buffer *q,
                                            uint64_t q_offset, fasa_buffer *o,
                                            uint64_t o_offset);
/* fasa_decode_batch, enqueue only: every item's kernels are enqueued on
 * the context's queue in item order (a paged cache's block tables are
 * written with blocking clEnqueueWriteBuffer calls first, so the host
 * arrays may be reused when the call returns).  Arguments as for
 * fasa_decode_batch. */
FASA_API fasa_status fasa_cl_enqueue_decode_batch(fasa_context *ctx, uint32_t layer,
                                                  const fasa_decode_desc *desc, uint32_t n,
                                                  const fasa_decode_item *items);
/* fasa_kv_cache_append_buffers, enqueue only (not scanned for NaN/Inf). */
FASA_API fasa_status fasa_cl_enqueue_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n,
                                            fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                                            uint64_t v_offset, fasa_dtype src_dtype);

/* fasa_kv_cache_sync, enqueue only: the kernel that recomputes the K_dom
 * rows of tokens [first, first + n) of an external cache's layer from the
 * engine's K is enqueued on the context's queue (in order after the
 * engine's writes of K when the engine uses that queue; otherwise order
 * them with an event or clFinish first) and the layer's length becomes
 * max(length, first + n) at once. */
FASA_API fasa_status fasa_cl_enqueue_kv_cache_sync(fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                                                   uint32_t n);

#ifdef __cplusplus
}
#endif

#endif /* FASA_OPENCL_H */
