/* OpenCL program build and the on-disk program binary cache.
 *
 * One program per storage dtype, built at context init from the embedded
 * source (the opencl/ kernel files, via opencl/embed_cl.py).  Build options keep IEEE
 * Inf/NaN semantics: no -cl-finite-math-only, no -cl-fast-relaxed-math.
 *
 * Cache entry (only when ctx->cache_dir is set): <cache_dir>/fasa-cl-<key>.bin,
 * key = 128-bit hash of (format version, source, build options, device
 * name, device version, driver version, platform name and version).
 * Header, 64 bytes, little-endian:
 *    0  magic "FASACLB1"          8  u32 version, u32 header size (64)
 *   16  u64 key low, u64 key high
 *   32  u64 payload length       40  u64 payload checksum
 *   48  u64 header checksum (bytes 0..47)            56  u64 reserved (0)
 * then the payload (the program binary from CL_PROGRAM_BINARIES).  An entry
 * is used only if every field checks out and the driver builds the binary;
 * otherwise it is rebuilt from source and replaced.  Entries are written to
 * a temporary file and renamed into place, so readers never see a partial
 * entry.  Any file-system failure only costs the cache, never the call.
 */
#include "cl_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const fasa__cl_kernel_names[CLK_COUNT] = {
    [CLK_APPEND] = "fasa_append",       [CLK_TIP_PREP] = "fasa_tip_prep",
    [CLK_TIP] = "fasa_tip",             [CLK_TOPK_INIT] = "fasa_topk_init",
    [CLK_TOPK_PASS] = "fasa_topk_pass", [CLK_TOPK_SCAN] = "fasa_topk_scan",
    [CLK_TOPK_COUNT] = "fasa_topk_count", [CLK_TOPK_EMIT] = "fasa_topk_emit",
    [CLK_DENSE] = "fasa_dense",         [CLK_FAC] = "fasa_fac",
    [CLK_REDUCE] = "fasa_attn_reduce", [CLK_FETCH_NEED] = "fasa_fetch_need",
    [CLK_FETCH_SLOTS] = "fasa_fetch_slots", [CLK_FETCH_ORDER] = "fasa_fetch_order",
    [CLK_FETCH_COPY] = "fasa_fetch_copy",
};

/* Work-group size each kernel was compiled for (0: none required). */
static uint32_t required_wg(const cl_tuning *t, int k)
{
    switch (k) {
    case CLK_APPEND: return t->wg_append;
    case CLK_TIP: return t->wg_tip;
    case CLK_TOPK_INIT: case CLK_TOPK_PASS: case CLK_TOPK_SCAN: case CLK_TOPK_COUNT:
    case CLK_TOPK_EMIT: return t->wg_topk;
    case CLK_DENSE: case CLK_FAC: return t->wg_attn;
    case CLK_REDUCE: return t->wg_red;
    case CLK_FETCH_NEED: case CLK_FETCH_SLOTS: case CLK_FETCH_ORDER: return t->wg_fetch;
    case CLK_FETCH_COPY: return fasa__cl_wg_copy(t);
    default: return 0;
    }
}

/* ------------------------------------------------------------------------ */
/* Hashing                                                                   */
/* ------------------------------------------------------------------------ */

uint64_t fasa__cl_hash64(const void *data, size_t n, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull ^ (seed * 0x9e3779b97f4a7c15ull);
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    h ^= (uint64_t)n;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

typedef struct key128 {
    uint64_t lo, hi;
} key128;

static void key_add(key128 *k, const void *data, size_t n)
{
    uint64_t len = n;
    k->lo = fasa__cl_hash64(&len, sizeof len, k->lo);
    k->hi = fasa__cl_hash64(&len, sizeof len, k->hi);
    k->lo = fasa__cl_hash64(data, n, k->lo);
    k->hi = fasa__cl_hash64(data, n, k->hi ^ 0x5bd1e995u);
}

static key128 cache_key(const cl_ctx *cc, const char *options)
{
    key128 k = {1, 2};
    uint32_t version = FASA_CL_CACHE_VERSION;
    key_add(&k, &version, sizeof version);
    key_add(&k, fasa__cl_source, fasa__cl_source_len);
    const char *fields[] = {options, cc->device_name, cc->device_version, cc->driver_version,
                            cc->platform_name, cc->platform_version};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) key_add(&k, fields[i], strlen(fields[i]));
    return k;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------------ */
/* Cache files                                                               */
/* ------------------------------------------------------------------------ */

static void entry_path(const fasa_context *ctx, key128 k, char *out, size_t size)
{
    snprintf(out, size, "%s/fasa-cl-%016llx%016llx.bin", ctx->cache_dir, (unsigned long long)k.hi,
             (unsigned long long)k.lo);
}

/* Reads and verifies an entry; returns the payload (caller frees) or NULL
 * with *why set ("" when there is simply no entry). */
static unsigned char *load_entry(fasa_context *ctx, const char *path, key128 key, size_t *len,
                                 const char **why)
{
    *why = "";
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char h[FASA_CL_CACHE_HEADER];
    unsigned char *payload = NULL;
    long size = -1;
    if (fread(h, 1, sizeof h, f) != sizeof h) *why = "truncated header";
    else if (memcmp(h, FASA_CL_CACHE_MAGIC, 8) != 0) *why = "bad magic";
    else if (get_u32(h + 8) != FASA_CL_CACHE_VERSION || get_u32(h + 12) != FASA_CL_CACHE_HEADER)
        *why = "unknown format version";
    else if (get_u64(h + 48) != fasa__cl_hash64(h, 48, 4)) *why = "header checksum mismatch";
    else if (get_u64(h + 16) != key.lo || get_u64(h + 24) != key.hi) *why = "stale (key mismatch)";
    else if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0) *why = "unreadable";
    else if ((uint64_t)size != FASA_CL_CACHE_HEADER + get_u64(h + 32) || get_u64(h + 32) == 0)
        *why = "length mismatch (truncated or extended)";
    else if (fseek(f, FASA_CL_CACHE_HEADER, SEEK_SET) != 0) *why = "unreadable";
    else {
        *len = (size_t)get_u64(h + 32);
        payload = fasa__alloc_aligned(ctx, *len, 64);
        if (!payload) *why = "out of host memory";
        else if (fread(payload, 1, *len, f) != *len) *why = "short read";
        else if (fasa__cl_hash64(payload, *len, 3) != get_u64(h + 40)) *why = "payload checksum mismatch";
        if (**why) {
            fasa__free(ctx, payload);
            payload = NULL;
        }
    }
    fclose(f);
    return payload;
}

static void make_dirs(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        mkdir(p, 0755);
        *s = '/';
    }
    mkdir(p, 0755);
}

/* Writes an entry atomically: a temporary file in the same directory,
 * flushed, then renamed over the final name. */
static bool store_entry(fasa_context *ctx, const char *path, key128 key, const unsigned char *bin,
                        size_t len, const char **why)
{
    make_dirs(ctx->cache_dir);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%llx", path, (long)getpid(),
             (unsigned long long)(uintptr_t)ctx);
    unsigned char h[FASA_CL_CACHE_HEADER] = {0};
    memcpy(h, FASA_CL_CACHE_MAGIC, 8);
    put_u32(h + 8, FASA_CL_CACHE_VERSION);
    put_u32(h + 12, FASA_CL_CACHE_HEADER);
    put_u64(h + 16, key.lo);
    put_u64(h + 24, key.hi);
    put_u64(h + 32, len);
    put_u64(h + 40, fasa__cl_hash64(bin, len, 3));
    put_u64(h + 48, fasa__cl_hash64(h, 48, 4));
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        *why = strerror(errno);
        return false;
    }
    bool ok = fwrite(h, 1, sizeof h, f) == sizeof h && fwrite(bin, 1, len, f) == len && fflush(f) == 0;
    if (ok) fsync(fileno(f));
    if (!ok) *why = strerror(errno);
    if (fclose(f) != 0 && ok) {
        ok = false;
        *why = strerror(errno);
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        *why = strerror(errno);
    }
    if (!ok) unlink(tmp);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Building                                                                  */
/* ------------------------------------------------------------------------ */

void fasa__cl_build_options(const cl_ctx *cc, bool f16, uint32_t half_load, char *out, size_t size)
{
    const cl_tuning *t = &cc->tune;
    snprintf(out, size,
             "-cl-std=CL1.2 -DFASA_F16=%d -DFASA_HALF_LOAD=%u -DWG_APPEND=%u -DWG_TIP=%u "
             "-DTIP_TPT=%u -DTIP_HB=%u -DWG_TOPK=%u -DTOPK_TILE=%u -DWG_ATTN=%u -DATT_QL=%u "
             "-DATT_HB=%u -DWG_RED=%u -DRED_PMAX=%u -DFASA_DYN_LOOPS=%u -DWG_FETCH=%u",
             f16 ? 1 : 0, half_load, t->wg_append, t->wg_tip, t->tip_tpt, t->tip_hb, t->wg_topk,
             t->topk_tile, t->wg_attn, t->att_ql, t->att_hb, t->wg_red, t->red_pmax, t->dyn_loops,
             t->wg_fetch);
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
    for (int i = 0; i < 2; i++) release_set(&cc->progs[i]);
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
static cl_program program_from_entry(fasa_context *ctx, cl_ctx *cc, const char *path, key128 key,
                                     const char *options)
{
    size_t len = 0;
    const char *why = "";
    unsigned char *bin = load_entry(ctx, path, key, &len, &why);
    if (!bin) {
        if (why[0]) {
            cc->stats.cache_rejects++;
            fasa__log(ctx, FASA_LOG_WARN, "opencl: program cache entry %s rejected: %s; rebuilding", path, why);
        }
        return NULL;
    }
    cl_int err = CL_SUCCESS, bin_status = CL_SUCCESS;
    const unsigned char *bins[1] = {bin};
    cl_program prog = clCreateProgramWithBinary(cc->context, 1, &cc->device, &len, bins, &bin_status, &err);
    fasa__free(ctx, bin);
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

static void save_entry(fasa_context *ctx, cl_ctx *cc, cl_program prog, const char *path, key128 key)
{
    size_t len = 0;
    cl_int err = clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof len, &len, NULL);
    if (err != CL_SUCCESS || len == 0) {
        fasa__log(ctx, FASA_LOG_INFO, "opencl: the driver returns no program binary; nothing cached");
        return;
    }
    unsigned char *bin = fasa__alloc_aligned(ctx, len, 64);
    if (!bin) return;
    unsigned char *bins[1] = {bin};
    err = clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL);
    const char *why = "";
    if (err != CL_SUCCESS)
        fasa__log(ctx, FASA_LOG_INFO, "opencl: clGetProgramInfo(CL_PROGRAM_BINARIES) failed: %s; nothing cached",
                  fasa__cl_error_name(err));
    else if (store_entry(ctx, path, key, bin, len, &why)) {
        cc->stats.cache_writes++;
        fasa__log(ctx, FASA_LOG_INFO, "opencl: wrote program cache entry %s (%zu bytes)", path, len);
    } else {
        fasa__log(ctx, FASA_LOG_INFO, "opencl: could not write program cache entry %s: %s (continuing without)",
                  path, why);
    }
    fasa__free(ctx, bin);
}

static fasa_status build_one(fasa_context *ctx, cl_ctx *cc, bool f16, cl_program_set *ps)
{
    char options[512], path[4096] = "";
    fasa__cl_build_options(cc, f16, cc->tune.half_load, options, sizeof options);
    key128 key = cache_key(cc, options);
    if (ctx->cache_dir) {
        entry_path(ctx, key, path, sizeof path);
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
        return build_failed(ctx, cc, ps->program, err, f16 ? "the fp16 kernels" : "the fp32 kernels");
    fasa_status st = make_kernels(ctx, cc, ps);
    if (st == FASA_OK && ctx->cache_dir) save_entry(ctx, cc, ps->program, path, key);
    return st;
}

fasa_status fasa__cl_build_programs(fasa_context *ctx, cl_ctx *cc)
{
    fasa_status st = build_one(ctx, cc, true, &cc->progs[0]);
    if (st == FASA_OK) st = build_one(ctx, cc, false, &cc->progs[1]);
    return st;
}
