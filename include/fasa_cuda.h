/*
 * libfasa CUDA embedding API (see docs/API.md and docs/CUDA.md).
 *
 * This header needs no CUDA header: streams are passed as void * (a
 * cudaStream_t is a pointer), so C code without the CUDA toolkit can
 * include it.  In a build without the CUDA backend the functions exist and
 * return FASA_ERROR_UNSUPPORTED for the (necessarily non-CUDA) context.
 *
 * A host engine that owns a CUDA stream can let libfasa run on it:
 *
 *   fasa_cuda_embed emb = {.device = 0, .stream = (void *)host_stream};
 *   fasa_context_desc desc = {.backend = FASA_BACKEND_CUDA, .embed = &emb};
 *   fasa_context_create(&desc, &ctx);
 *
 * Stream rules
 *  - libfasa enqueues all of its work on the context's stream: its own
 *    (created with cudaStreamNonBlocking) in standalone mode, the host's
 *    when embedded.  Work the host enqueued earlier on that stream (for
 *    example the kernel writing q) is seen by libfasa's kernels, and
 *    libfasa's results are seen by work enqueued after them.
 *  - stream NULL means the legacy default stream; cudaStreamPerThread is
 *    accepted too.  The stream must belong to `device`; libfasa never
 *    creates or destroys the host's stream.
 *  - libfasa never calls cudaDeviceSynchronize.  Every call restores the
 *    calling thread's current device before it returns.
 *
 * Blocking and enqueue-only calls
 *  - fasa_cuda_enqueue_decode() and fasa_cuda_enqueue_append() only
 *    enqueue kernels: no synchronisation, no allocation, no host copies.
 *    They may be captured into a CUDA graph by the host.  Exception: a
 *    step of a paged or shared cache (fasa_kv_external.block_size > 0)
 *    copies the sequence's block table from host memory to the device with
 *    cudaMemcpyAsync on the stream first (pageable memory, so the copy is
 *    staged before the call returns and the host array may be reused).
 *  - fasa_cuda_enqueue_decode_batch() enqueues every item's step in item
 *    order, likewise.
 *  - fasa_decode() and fasa_kv_cache_append_buffers() wait for their
 *    kernels on a standalone context; on an embedded context they are
 *    stream-ordered and return without waiting (with FASA_CONTEXT_PROFILE
 *    they wait for their own end event, to read the step time).
 *  - Calls that hand host memory in or out wait for the stream, also when
 *    embedded: fasa_buffer_write/read, fasa_decode_host,
 *    fasa_kv_cache_append (host arrays), fasa_kv_cache_read,
 *    fasa_kv_cache_create, buffer and cache destruction, and
 *    fasa_context_finish.
 *  - fasa_cuda_enqueue_append() advances the layer's length on the host at
 *    once; the rows are written when the stream reaches the append.
 *
 * Buffers
 *  - fasa_cuda_buffer_wrap() wraps caller-owned device memory (cudaMalloc,
 *    cudaMallocAsync or managed memory of the context's device) of at
 *    least `size` bytes; it must stay valid while the wrapper lives.
 *    fasa_buffer_destroy() frees only the wrapper.  The pointer must be
 *    4-byte aligned; offsets passed to the decode and append calls must be
 *    multiples of 4.
 *  - fasa_cuda_buffer_pointer() returns the device pointer of any buffer of
 *    a CUDA context (library-created buffers included).
 *
 * What each enqueued step reads and writes: q (read), o (written: [Hq][d],
 * each in the decode desc's q_type / o_type, fp32 by default), the cache's
 * storage (read) and its scratch (scores, selection,
 * top-k state, partials: written).  fasa_cuda_enqueue_append reads k and v
 * and writes the layer's K, V and K_dom rows of the new tokens.  Two
 * contexts never share scratch; steps of one cache must not overlap in
 * time, which the single stream guarantees.
 */
#ifndef FASA_CUDA_H
#define FASA_CUDA_H

#include "fasa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Passed as fasa_context_desc.embed with backend FASA_BACKEND_CUDA. */
typedef struct fasa_cuda_embed {
    int device;                   /* CUDA device ordinal the stream belongs to */
    void *stream;                 /* the host's cudaStream_t; NULL = legacy default stream */
    const void *next;             /* extension chain (fasa_struct_header), NULL */
} fasa_cuda_embed;

/* Wraps `size` bytes of caller-owned device memory at device_ptr. */
FASA_API fasa_status fasa_cuda_buffer_wrap(fasa_context *ctx, void *device_ptr, uint64_t size,
                                           fasa_buffer **out);
/* The device pointer behind a buffer of a CUDA context. */
FASA_API fasa_status fasa_cuda_buffer_pointer(const fasa_buffer *buf, void **device_ptr);
/* The stream the context enqueues on (its own, or the host's), as a
 * cudaStream_t. */
FASA_API fasa_status fasa_cuda_context_stream(const fasa_context *ctx, void **stream);

/* fasa_decode, enqueue only: the step's kernels are enqueued on the
 * context's stream and the call returns.  Arguments as for fasa_decode. */
FASA_API fasa_status fasa_cuda_enqueue_decode(fasa_kv_cache *cache, uint32_t layer,
                                              const fasa_decode_desc *desc, fasa_buffer *q,
                                              uint64_t q_offset, fasa_buffer *o,
                                              uint64_t o_offset);
/* fasa_decode_batch, enqueue only (see above).  Arguments as for
 * fasa_decode_batch. */
FASA_API fasa_status fasa_cuda_enqueue_decode_batch(fasa_context *ctx, uint32_t layer,
                                                    const fasa_decode_desc *desc, uint32_t n,
                                                    const fasa_decode_item *items);

/* fasa_kv_cache_append_buffers, enqueue only (not scanned for NaN/Inf). */
FASA_API fasa_status fasa_cuda_enqueue_append(fasa_kv_cache *cache, uint32_t layer, uint32_t n,
                                              fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                                              uint64_t v_offset, fasa_dtype src_dtype);

/* fasa_kv_cache_sync, enqueue only: the kernel that recomputes the K_dom
 * rows of tokens [first, first + n) of an external cache's layer from the
 * engine's K is enqueued on the context's stream (after the engine's
 * writes of K when the engine uses that stream; otherwise order them with
 * an event) and the layer's length becomes max(length, first + n) at once.
 * External K and V: fasa_cuda_buffer_wrap of the engine's device memory;
 * each layer's start (pointer + offset) a multiple of two elements. */
FASA_API fasa_status fasa_cuda_enqueue_kv_cache_sync(fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                                                     uint32_t n);

#ifdef __cplusplus
}
#endif

#endif /* FASA_CUDA_H */
