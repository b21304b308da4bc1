/*
 * The backend interface.  Each backend (cpu, vulkan, opencl, cuda) fills one
 * fasa_backend_ops table in its own file(s) and implements the same six
 * kernels under the same names, so they can be read side by side:
 *
 *   append  write k/v rows of new tokens, plus the dominant-dims row (K_dom)
 *   sync    external K/V (fasa_kv_cache_desc.external): the K_dom rows of
 *           tokens the engine wrote, cut from the engine's K in place
 *   tip     TIP scores S[row][j] over K_dom (or full q.k for the oracle)
 *   topk    exact top-(n_fac - forced) per row, lowest index wins ties,
 *           forced sink/recent tokens first
 *   fac     exact softmax attention over the selected rows (scale 1/sqrt(d))
 *   dense   exact softmax attention over all L tokens
 *
 * An external cache's K and V are the engine's buffers (cache->ext): the
 * backend allocates only K_dom and scratch, and tip (oracle), fac, dense
 * and cache_read address K and V through its strides.
 *
 * The common code (decode.c) validates arguments, chooses the path and calls
 * tip -> topk -> fac or dense inside one exec (a command stream: nothing on
 * the CPU, a command buffer on Vulkan, a queue on OpenCL, a stream on CUDA).
 * Kernels only record work; step_end submits (standalone contexts) and, when
 * asked, waits.  A kernel never allocates: everything it needs is created by
 * cache_create (storage + scratch) or context_init (pipelines).
 *
 * Error reporting: a backend function that fails returns
 * fasa__error(ctx, status, "...") so the context's message names the cause.
 */
#ifndef FASA_BACKEND_H
#define FASA_BACKEND_H

#include "internal.h"

struct fasa_backend_ops {
    fasa_backend id;
    const char *name;

    /* Devices of this backend (no context).  Same contract as
     * fasa_list_devices; msg receives the reason on failure. */
    fasa_status (*list_devices)(fasa_device_info *devices, uint32_t *count, char *msg,
                                size_t msg_size);

    /* ctx->device, ->alloc, ->logger, ->flags, ->pool are set before init.
     * embed is the backend's embedding struct or NULL (standalone). */
    fasa_status (*context_init)(fasa_context *ctx, uint32_t device_index, const void *embed);
    void (*context_destroy)(fasa_context *ctx);
    fasa_status (*finish)(fasa_context *ctx);

    /* buf->ctx and buf->size are set; allocate device memory. */
    fasa_status (*buffer_create)(fasa_context *ctx, fasa_buffer *buf);
    void (*buffer_destroy)(fasa_context *ctx, fasa_buffer *buf);
    fasa_status (*buffer_write)(fasa_context *ctx, fasa_buffer *buf, uint64_t offset,
                                const void *src, uint64_t size);
    fasa_status (*buffer_read)(fasa_context *ctx, fasa_buffer *buf, uint64_t offset, void *dst,
                               uint64_t size);

    /* Storage for every layer (K, V, K_dom; only K_dom with cache->ext)
     * plus per-step scratch sized for capacity, Hq and max_n_fac; uploads
     * the dims tables.  Sets cache->device_bytes, host_bytes and
     * scratch_bytes.  Checks what the backend needs of external buffers. */
    fasa_status (*cache_create)(fasa_kv_cache *cache);
    /* Optional (NULL = unsupported): size and alignment of the application
     * host memory an offloaded cache of desc would use (cache->host_memory). */
    fasa_status (*host_memory_requirements)(fasa_context *ctx, const fasa_kv_cache_desc *desc, uint64_t *size,
                                            uint64_t *alignment);
    void (*cache_destroy)(fasa_kv_cache *cache);
    /* Optional: told that every layer now holds at most `length` tokens
     * (e.g. to forget FASA-M rows of dropped tokens).  May be NULL. */
    void (*cache_truncate)(fasa_kv_cache *cache, uint32_t length);
    /* Optional: folds device-side FASA-M counters into cache->transfer
     * (called by fasa_kv_cache_transfer_stats; may wait for the device).
     * May be NULL when the backend updates cache->transfer itself. */
    fasa_status (*transfer_stats_sync)(fasa_kv_cache *cache);
    /* Reads tokens [first, first+n) of a layer as fp32 [n][Hkv][d]. */
    fasa_status (*cache_read)(fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n,
                              float *k, float *v);

    /* Command streams.  exec_begin starts recording on the context's own
     * queue; exec_end submits it and, if wait, blocks until done (recording
     * the step time when profiling). */
    fasa_status (*exec_begin)(fasa_context *ctx, fasa_exec **exec);
    fasa_status (*exec_end)(fasa_context *ctx, fasa_exec *exec, bool wait);

    /* --- kernels ------------------------------------------------------- */
    /* Writes tokens [first, first+n) of `layer` from k/v [n][Hkv][d]. */
    fasa_status (*append)(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                          uint32_t n, fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                          uint64_t v_offset, fasa_dtype src_dtype);
    /* External caches with a calibration: recomputes the K_dom rows of
     * tokens [first, first+n) of `layer` from the engine's K. */
    fasa_status (*sync)(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n);
    /* Paged caches: writes n block-table entries from host memory to
     * cache->tables at entry `first`, in the command stream, so the
     * kernels recorded after it read them (a barrier after the write).
     * The host array may be reused once the call returns. */
    fasa_status (*upload_table)(fasa_exec *exec, fasa_kv_cache *cache, uint32_t first, uint32_t n,
                                const uint32_t *src);
    /* Optional: records the n resolved steps of a batch (all of one layer,
     * in item order; each step's cache, sequence, path, q and o may differ)
     * with fewer dispatches than n single steps, e.g. one dispatch per
     * kernel for every run of steps that share a cache and a path.  Every
     * step's o must be bit for bit what fasa__step_record of it alone
     * writes.  NULL: the core records the steps one after another. */
    fasa_status (*record_batch)(fasa_exec *exec, const fasa_step *steps, uint32_t n);
    fasa_status (*tip)(fasa_exec *exec, const fasa_step *step);
    fasa_status (*topk)(fasa_exec *exec, const fasa_step *step);
    fasa_status (*fac)(fasa_exec *exec, const fasa_step *step);
    fasa_status (*dense)(fasa_exec *exec, const fasa_step *step);

    /* After a completed sparse step: copies the scratch selection
     * [n_rows][n_fac] and/or scores [n_rows][L] to host memory. */
    fasa_status (*read_selection)(fasa_kv_cache *cache, const fasa_step *step, int32_t *selected,
                                  uint32_t selected_stride, float *scores,
                                  uint32_t scores_stride);
};

extern const fasa_backend_ops fasa__cpu_ops;
#ifdef FASA_HAVE_VULKAN
extern const fasa_backend_ops fasa__vulkan_ops;
#endif
#ifdef FASA_HAVE_OPENCL
extern const fasa_backend_ops fasa__opencl_ops;
#endif
#ifdef FASA_HAVE_CUDA
extern const fasa_backend_ops fasa__cuda_ops;
#endif

#endif
