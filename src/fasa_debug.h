/* libfasa test hooks, internal (not installed, not exported).  They exist
 * so tests can prove that every public call fails cleanly (right status,
 * nothing leaked, context still usable) when a resource acquisition fails.
 * The functions have hidden visibility: libfasa.so does not export them
 * (tests/abi checks `nm -D`), and tests call them by linking the static
 * archive libfasa_internal (meson: fasa_internal_dep), built from the same
 * objects as libfasa.so. */
#ifndef FASA_DEBUG_H
#define FASA_DEBUG_H

#include "fasa.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fasa_fault {
    FASA_FAULT_HOST_ALLOC = 0,   /* library host allocations (any backend) */
    FASA_FAULT_DEVICE_ALLOC,     /* device memory / buffer objects */
    FASA_FAULT_MAP,              /* mapping device memory to the host */
    FASA_FAULT_BUILD,            /* kernel / pipeline / program creation */
    FASA_FAULT_SUBMIT,           /* command submission / kernel launch */
    FASA_FAULT_COUNT_
} fasa_fault;

/* Arms a fault: the n-th event of `kind` from now on fails as the real
 * failure would (n = 0 disarms).  Counting restarts at every call. */
fasa_status fasa_debug_fault(fasa_context *ctx, fasa_fault kind, uint32_t n);
/* Events of `kind` seen since the last fasa_debug_fault call for it. */
uint32_t fasa_debug_fault_count(const fasa_context *ctx, fasa_fault kind);
/* fasa_context_create with the fault armed before the backend initialises,
 * so events of context creation (device setup, OpenCL program builds, the
 * CUDA kernel image load) count too.  On success the fault stays armed as
 * if fasa_debug_fault(*out, kind, n) had been called before creation. */
fasa_status fasa_debug_context_create(const fasa_context_desc *desc, fasa_fault kind, uint32_t n,
                                      fasa_context **out);

#ifdef __cplusplus
}
#endif

#endif
