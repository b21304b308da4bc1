/* OpenCL program build and the on-disk program binary cache.
 *
 * One program per storage dtype, built from the embedded source (the
 * opencl/ kernel files, via opencl/embed_cl.py): fp16 and fp32 at context
 * init, bf16 when the context's first bf16 cache is created.  Build options keep IEEE
 * Inf/NaN semantics: no -cl-finite-math-only, no -cl-fast-relaxed-math.
 *
 * Cache entry (only when ctx->cache_dir is set): <cache_dir>/fasa-cl-<key>.bin
 * in the envelope of src/blobcache.h (kind "OCLB"), key = SHA-256 of (build
 * options, device name, device version, driver version, platform name and
 * version, SHA-256 of the kernel source), payload = the program binary from
 * CL_PROGRAM_BINARIES.  A driver may crash on a damaged binary instead of
 * rejecting it (PoCL does), so before the driver sees a binary the envelope
 * must hold (size, hash, key) and the binary's own header must be sound
 * where its format is known (fasa__cl_check_binary).  Anything else costs a
 * rebuild from source and an atomic rewrite of the entry, never the call.
 */
#include "cl_internal.h"
#include "blobcache.h"

#include <stdio.h>
#include <string.h>

const char *const fasa__cl_kernel_names[CLK_COUNT] = {
    [CLK_APPEND] = "fasa_append",       [CLK_TIP_PREP] = "fasa_tip_prep",
    [CLK_TIP] = "fasa_tip",             [CLK_TOPK_INIT] = "fasa_topk_init",
    [CLK_TOPK_PASS] = "fasa_topk_pass", [CLK_TOPK_SCAN] = "fasa_topk_scan",
    [CLK_TOPK_COUNT] = "fasa_topk_count", [CLK_TOPK_EMIT] = "fasa_topk_emit",
    [CLK_DENSE] = "fasa_dense",         [CLK_FAC] = "fasa_fac",
    [CLK_REDUCE] = "fasa_attn_reduce", [CLK_FETCH_NEED] = "fasa_fetch_need",
    [CLK_FETCH_SLOTS] = "fasa_fetch_slots", [CLK_FETCH_ORDER] = "fasa_fetch_order",
    [CLK_FETCH_COPY] = "fasa_fetch_copy", [CLK_SYNC] = "fasa_sync",
    [CLK_WIDEN] = "fasa_widen",
    [CLK_WIDEN_B] = "fasa_widen_b",     [CLK_TIP_PREP_B] = "fasa_tip_prep_b",
    [CLK_TOPK_INIT_B] = "fasa_topk_init_b", [CLK_TIP_B] = "fasa_tip_b",
    [CLK_TOPK_PASS_B] = "fasa_topk_pass_b", [CLK_TOPK_SCAN_B] = "fasa_topk_scan_b",
    [CLK_TOPK_COUNT_B] = "fasa_topk_count_b", [CLK_TOPK_EMIT_B] = "fasa_topk_emit_b",
    [CLK_FAC_B] = "fasa_fac_b",         [CLK_REDUCE_B] = "fasa_attn_reduce_b",
};

/* Work-group size each kernel was compiled for (0: none required). */
static uint32_t required_wg(const cl_tuning *t, int k)
{
    switch (k) {
    case CLK_APPEND: case CLK_SYNC: return t->wg_append;
    case CLK_TIP: case CLK_TIP_B: return t->wg_tip;
    case CLK_TOPK_INIT: case CLK_TOPK_PASS: case CLK_TOPK_SCAN: case CLK_TOPK_COUNT:
    case CLK_TOPK_EMIT: case CLK_TOPK_INIT_B: case CLK_TOPK_PASS_B: case CLK_TOPK_SCAN_B:
    case CLK_TOPK_COUNT_B: case CLK_TOPK_EMIT_B: return t->wg_topk;
    case CLK_DENSE: case CLK_FAC: case CLK_FAC_B: return t->wg_attn;
    case CLK_REDUCE: case CLK_REDUCE_B: return t->wg_red;
    case CLK_FETCH_NEED: case CLK_FETCH_SLOTS: case CLK_FETCH_ORDER: return t->wg_fetch;
    case CLK_FETCH_COPY: return fasa__cl_wg_copy(t);
    default: return 0;
    }
}

/* ------------------------------------------------------------------------ */
/* Binary formats                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t get_be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = (v << 8) | p[i];
    return v;
}

/* PoCL ("poclbin\0", u64 device id, u32 format version, u32 kernel count,
 * ...): its reader trusts every length inside, so at least the header
 * must be that of a program with our kernels. */
static const char *check_pocl(const unsigned char *b, size_t n)
{
    if (n < 64) return "PoCL binary shorter than its header";
    uint64_t version = get_le(b + 16, 4), kernels = get_le(b + 20, 4);
    if (version < 6 || version > 255) return "PoCL binary of an unknown format version";
    if (kernels < CLK_COUNT || kernels > 65536) return "PoCL binary with the wrong number of kernels";
    return NULL;
}

/* ELF (AMD, Intel and others): the class, byte order and version bytes,
 * and the header and program/section header tables inside the file. */
static uint64_t elf_get(const unsigned char *b, bool be, size_t off, int bytes)
{
    return be ? get_be(b + off, bytes) : get_le(b + off, bytes);
}

static const char *check_elf(const unsigned char *b, size_t n)
{
    if (n < 52) return "ELF binary shorter than its header";
    bool is64 = b[4] == 2, be = b[5] == 2;
    if ((b[4] != 1 && !is64) || (b[5] != 1 && !be) || b[6] != 1) return "ELF binary with a bad identification";
    if (is64 && n < 64) return "ELF binary shorter than its header";
    int wide = is64 ? 8 : 4;
    size_t half = is64 ? 52 : 40; /* e_ehsize, then the 16-bit table sizes and counts */
    uint64_t phoff = elf_get(b, be, is64 ? 32 : 28, wide), shoff = elf_get(b, be, is64 ? 40 : 32, wide);
    uint64_t ehsize = elf_get(b, be, half, 2), phentsize = elf_get(b, be, half + 2, 2);
    uint64_t phnum = elf_get(b, be, half + 4, 2), shentsize = elf_get(b, be, half + 6, 2);
    uint64_t shnum = elf_get(b, be, half + 8, 2);
    /* each product is below 2^32 and each offset is compared first, so nothing overflows */
    if (ehsize > n) return "ELF header larger than the binary";
    if (phnum && (phoff > n || phentsize * phnum > n - phoff)) return "ELF program headers past the end";
    if (shnum && (shoff > n || shentsize * shnum > n - shoff)) return "ELF section headers past the end";
    return NULL;
}

/* LLVM bitcode: raw ("BC" 0xC0DE, whole 32-bit words) or in the wrapper
 * header (0x0B17C0DE, version, offset, size) that must point inside. */
static const char *check_bitcode(const unsigned char *b, size_t n)
{
    if (b[0] == 'B') return n % 4 ? "LLVM bitcode of a length that is not whole words" : NULL;
    if (n < 20) return "LLVM bitcode wrapper shorter than its header";
    uint64_t off = get_le(b + 8, 4), size = get_le(b + 12, 4);
    if (off < 20 || off > n || size > n - off || size < 4) return "LLVM bitcode wrapper pointing past the end";
    return memcmp(b + off, "BC\xc0\xde", 4) == 0 ? NULL : "LLVM bitcode wrapper around something else";
}

const char *fasa__cl_check_binary(const cl_ctx *cc, const unsigned char *b, size_t n)
{
    static const unsigned char spirv[4] = {0x03, 0x02, 0x23, 0x07}, wrapper[4] = {0xde, 0xc0, 0x17, 0x0b};
    if (n == 0) return "empty program binary";
    bool pocl = strstr(cc->platform_name, "Portable Computing Language") != NULL;
    if (n >= 8 && memcmp(b, "poclbin", 8) == 0) return check_pocl(b, n);
    if (pocl) return "not a PoCL binary (PoCL writes only its own format)";
    if (n >= 4 && memcmp(b, "\x7f" "ELF", 4) == 0) return check_elf(b, n);
    if (n >= 4 && (memcmp(b, "BC\xc0\xde", 4) == 0 || memcmp(b, wrapper, 4) == 0)) return check_bitcode(b, n);
    if (n >= 4 && memcmp(b, spirv, 4) == 0) return n % 4 || n < 20 ? "SPIR-V of a bad length" : NULL;
    return NULL; /* a format we do not know (NVIDIA's PTX text, ...): the envelope's hash is all we check */
}

/* ------------------------------------------------------------------------ */
/* Cache entries                                                             */
/* ------------------------------------------------------------------------ */

/* Everything the binary depends on: the source (by its hash), the build
 * options, and the device, driver and platform that compiled it. */
static void cache_key(const cl_ctx *cc, const char *options, uint8_t key[FASA_SHA256_SIZE])
{
    uint8_t source[FASA_SHA256_SIZE];
    fasa__sha256(fasa__cl_source, fasa__cl_source_len, source);
    fasa__blob_key k;
    fasa__blob_key_begin(&k, FASA_CL_BLOB_KIND);
    fasa__blob_key_add(&k, source, sizeof source);
    const char *fields[] = {options, cc->device_name, cc->device_version, cc->driver_version,
                            cc->platform_name, cc->platform_version};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) fasa__blob_key_str(&k, fields[i]);
    fasa__blob_key_end(&k, key);
}

static bool entry_path(const fasa_context *ctx, const uint8_t key[FASA_SHA256_SIZE], char *out, size_t size)
{
    char hex[33];
    fasa__blob_key_hex(key, hex);
    int n = snprintf(out, size, "%s/fasa-cl-%s.bin", ctx->cache_dir, hex);
    return n > 0 && (size_t)n < size;
}

static const char *check_entry(void *user, const unsigned char *payload, size_t size)
{
    return fasa__cl_check_binary(user, payload, size);
}

/* ------------------------------------------------------------------------ */
/* Building                                                                  */
/* ------------------------------------------------------------------------ */

void fasa__cl_build_options(const cl_ctx *cc, fasa_dtype dtype, uint32_t half_load, char *out, size_t size)
{
    const cl_tuning *t = &cc->tune;
    /* the fp16 and fp32 options are as before bf16 existed (their cache entries stay valid) */
    snprintf(out, size,
             "-cl-std=CL1.2 -DFASA_F16=%d -DFASA_HALF_LOAD=%u -DWG_APPEND=%u -DWG_TIP=%u "
             "-DTIP_TPT=%u -DTIP_HB=%u -DWG_TOPK=%u -DTOPK_TILE=%u -DWG_ATTN=%u -DATT_QL=%u "
             "-DATT_HB=%u -DWG_RED=%u -DRED_PMAX=%u -DFASA_DYN_LOOPS=%u -DWG_FETCH=%u%s",
             dtype == FASA_DTYPE_F16 ? 1 : 0, half_load, t->wg_append, t->wg_tip, t->tip_tpt, t->tip_hb, t->wg_topk,
             t->topk_tile, t->wg_attn, t->att_ql, t->att_hb, t->wg_red, t->red_pmax, t->dyn_loops,
             t->wg_fetch, dtype == FASA_DTYPE_BF16 ? " -DFASA_BF16=1" : "");
}

/* The build calls, each a point of the BUILD test hook (fasa_debug.h): a
 * hit fails clBuildProgram with CL_BUILD_PROGRAM_FAILURE (a binary from
 * the cache is then rebuilt from source, a source build fails the call) or
 * clCreateKernel with CL_OUT_OF_HOST_MEMORY. */
static cl_int build_program(fasa_context *ctx, cl_ctx *cc, cl_program prog, const char *options)
{
    if (fasa__fault(ctx, FASA_FAULT_BUILD)) return CL_BUILD_PROGRAM_FAILURE;
    return clBuildProgram(prog, 1, &cc->device, options, NULL, NULL);
}

static cl_kernel create_kernel(fasa_context *ctx, cl_program prog, const char *name, cl_int *err)
{
    if (fasa__fault(ctx, FASA_FAULT_BUILD)) {
        *err = CL_OUT_OF_HOST_MEMORY;
        return NULL;
    }
    return clCreateKernel(prog, name, err);
}

static void release_set(cl_program_set *ps)
{
    for (int i = 0; i < CLK_COUNT; i++)
        if (ps->kernels[i]) clReleaseKernel(ps->kernels[i]);
    if (ps->program) clReleaseProgram(ps->program);
    memset(ps, 0, sizeof *ps);
}

void fasa__cl_release_programs(cl_ctx *cc)
{
    for (int i = 0; i < CL_N_PROGS; i++) release_set(&cc->progs[i]);
}

/* Passes the build log to the logger in pieces and puts its start into
 * the context's error message. */
static fasa_status build_failed(fasa_context *ctx, cl_ctx *cc, cl_program prog, cl_int err,
                                const char *what)
{
    size_t n = 0;
    char *log = NULL;
    if (clGetProgramBuildInfo(prog, cc->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) == CL_SUCCESS && n > 0) {
        log = fasa__alloc(ctx, n + 1);
        if (log && clGetProgramBuildInfo(prog, cc->device, CL_PROGRAM_BUILD_LOG, n, log, NULL) != CL_SUCCESS)
            log[0] = '\0';
    }
    const char *text = log && log[0] ? log : "(empty)";
    size_t len = strlen(text);
    for (size_t off = 0; off < len && off < 16 * 900; off += 900)
        fasa__log(ctx, FASA_LOG_ERROR, "opencl build log [%zu..]: %.900s", off, text + off);
    fasa_status st = fasa__error(ctx, FASA_ERROR_BACKEND, "opencl: building %s for '%s' failed: %s (%d); build log: %.700s",
                                 what, cc->device_name, fasa__cl_error_name(err), (int)err, text);
    fasa__free(ctx, log);
    return st;
}

static fasa_status make_kernels(fasa_context *ctx, cl_ctx *cc, cl_program_set *ps)
{
    for (int i = 0; i < CLK_COUNT; i++) {
        cl_int err = CL_SUCCESS;
        ps->kernels[i] = create_kernel(ctx, ps->program, fasa__cl_kernel_names[i], &err);
        if (!ps->kernels[i]) {
            char what[80];
            snprintf(what, sizeof what, "clCreateKernel(%s)", fasa__cl_kernel_names[i]);
            return fasa__cl_fail(ctx, err, what);
        }
        size_t wg = 0;
        uint32_t need = required_wg(&cc->tune, i);
        err = clGetKernelWorkGroupInfo(ps->kernels[i], cc->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
        if (err == CL_SUCCESS && need && wg < need)
            return fasa__error(ctx, FASA_ERROR_UNSUPPORTED,
                               "opencl: kernel %s needs %u work-items per group but device '%s' "
                               "allows only %zu for it", fasa__cl_kernel_names[i], need,
                               cc->device_name, wg);
    }
    return FASA_OK;
}

/* Tries a cache entry: the program built from its binary, or NULL. */
static cl_program program_from_entry(fasa_context *ctx, cl_ctx *cc, const char *path,
                                     const uint8_t key[FASA_SHA256_SIZE], const char *options)
{
    char why[256] = "";
    fasa__blob entry;
    fasa__blob_result r = fasa__blob_load(ctx, path, FASA_CL_BLOB_KIND, key, FASA_CL_BLOB_MAX, check_entry, cc,
                                          &entry, why, sizeof why);
    if (r != FASA_BLOB_LOADED) {
        if (r == FASA_BLOB_REJECTED) {
            cc->stats.cache_rejects++;
            fasa__log(ctx, FASA_LOG_WARN, "opencl: program cache entry %s rejected: %s; rebuilding", path, why);
        }
        return NULL;
    }
    cl_int err = CL_SUCCESS, bin_status = CL_SUCCESS;
    const unsigned char *bins[1] = {entry.payload};
    size_t len = entry.size;
    cl_program prog = clCreateProgramWithBinary(cc->context, 1, &cc->device, &len, bins, &bin_status, &err);
    fasa__blob_free(ctx, &entry);
    if (prog && err == CL_SUCCESS && bin_status == CL_SUCCESS)
        err = build_program(ctx, cc, prog, options);
    else if (err == CL_SUCCESS)
        err = bin_status;
    if (err != CL_SUCCESS || !prog) {
        if (prog) clReleaseProgram(prog);
        cc->stats.cache_rejects++;
        fasa__log(ctx, FASA_LOG_WARN, "opencl: program cache entry %s rejected by the driver (%s); rebuilding",
                  path, fasa__cl_error_name(err));
        return NULL;
    }
    cc->stats.cache_hits++;
    fasa__log(ctx, FASA_LOG_INFO, "opencl: program loaded from cache entry %s", path);
    return prog;
}

/* Writes the program's binary as the entry (replacing a bad one); a
 * binary that would fail our own load checks is not written at all. */
static void save_entry(fasa_context *ctx, cl_ctx *cc, cl_program prog, const char *path,
                       const uint8_t key[FASA_SHA256_SIZE])
{
    size_t len = 0;
    cl_int err = clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof len, &len, NULL);
    if (err != CL_SUCCESS || len == 0 || len > FASA_CL_BLOB_MAX) {
        fasa__log(ctx, FASA_LOG_INFO, "opencl: the driver returns no program binary (or %zu bytes); nothing cached", len);
        return;
    }
    unsigned char *bin = fasa__alloc_aligned(ctx, len, 64);
    if (!bin) return;
    unsigned char *bins[1] = {bin};
    err = clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL);
    const char *bad = err == CL_SUCCESS ? fasa__cl_check_binary(cc, bin, len) : NULL;
    char why[256] = "";
    if (err != CL_SUCCESS)
        fasa__log(ctx, FASA_LOG_INFO, "opencl: clGetProgramInfo(CL_PROGRAM_BINARIES) failed: %s; nothing cached",
                  fasa__cl_error_name(err));
    else if (bad)
        fasa__log(ctx, FASA_LOG_INFO, "opencl: the driver's program binary fails our checks (%s); nothing cached", bad);
    else if (fasa__blob_store(ctx->cache_dir, path, FASA_CL_BLOB_KIND, key, bin, len, why, sizeof why) == 0) {
        cc->stats.cache_writes++;
        fasa__log(ctx, FASA_LOG_INFO, "opencl: wrote program cache entry %s (%zu bytes)", path, len);
    } else {
        fasa__log(ctx, FASA_LOG_INFO, "opencl: could not write program cache entry %s: %s (continuing without)",
                  path, why);
    }
    fasa__free(ctx, bin);
}

static fasa_status build_one(fasa_context *ctx, cl_ctx *cc, fasa_dtype dtype, cl_program_set *ps)
{
    char options[512], path[4096] = "";
    fasa__cl_build_options(cc, dtype, cc->tune.half_load, options, sizeof options);
    uint8_t key[FASA_SHA256_SIZE];
    bool cached = ctx->cache_dir && ctx->cache_dir[0];
    if (cached) {
        cache_key(cc, options, key);
        cached = entry_path(ctx, key, path, sizeof path);
    }
    if (cached) {
        ps->program = program_from_entry(ctx, cc, path, key, options);
        if (ps->program) {
            fasa_status st = make_kernels(ctx, cc, ps);
            if (st == FASA_OK) return FASA_OK;
            release_set(ps); /* an entry that builds but lacks kernels: rebuild */
            cc->stats.cache_rejects++;
        }
    }
    cc->stats.cache_misses++;
    const char *src = fasa__cl_source;
    size_t len = fasa__cl_source_len;
    cl_int err = CL_SUCCESS;
    ps->program = clCreateProgramWithSource(cc->context, 1, &src, &len, &err);
    if (!ps->program) return fasa__cl_fail(ctx, err, "clCreateProgramWithSource");
    err = build_program(ctx, cc, ps->program, options);
    if (err != CL_SUCCESS)
        return build_failed(ctx, cc, ps->program, err,
                            dtype == FASA_DTYPE_F16 ? "the fp16 kernels" : dtype == FASA_DTYPE_BF16 ? "the bf16 kernels"
                                                                                                    : "the fp32 kernels");
    fasa_status st = make_kernels(ctx, cc, ps);
    if (st == FASA_OK && cached) save_entry(ctx, cc, ps->program, path, key);
    return st;
}

fasa_status fasa__cl_program_ensure(fasa_context *ctx, cl_ctx *cc, fasa_dtype dtype)
{
    cl_program_set *ps = &cc->progs[dtype];
    if (ps->program) return FASA_OK;
    fasa_status st = build_one(ctx, cc, dtype, ps);
    if (st != FASA_OK) release_set(ps); /* nothing half-built stays */
    return st;
}

fasa_status fasa__cl_build_programs(fasa_context *ctx, cl_ctx *cc)
{
    fasa_status st = fasa__cl_program_ensure(ctx, cc, FASA_DTYPE_F16);
    if (st == FASA_OK) st = fasa__cl_program_ensure(ctx, cc, FASA_DTYPE_F32);
    if (st == FASA_OK && cc->want_bf16) st = fasa__cl_program_ensure(ctx, cc, FASA_DTYPE_BF16);
    return st;
}
