/*
 * The OpenCL program binary cache (ctx->cache_dir): a cold build writes one
 * entry per program into directories it creates user-only; a warm context
 * loads them; damaged entries (a flipped byte, also in the previous format
 * with its weak checksums recomputed, which used to crash PoCL; truncated,
 * extended, empty, garbage or stale under a valid hash; a FIFO or a
 * directory in its place) are rejected before the driver sees them,
 * rebuilt and replaced by a whole entry; a missing directory is created;
 * an unusable one (under a regular file, or in /proc) costs only the
 * cache, never an error; no temporary files are left behind; contexts
 * racing on a cold directory leave valid entries.  The binary format checks
 * run on forged ELF, bitcode and SPIR-V headers too.  Every context also
 * runs one decode step checked against the CPU backend.
 */
#include "cl_test.h"
#include "opencl/cl_internal.h"
#include "blobcache.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int32_t g_dev;
static char g_log[1 << 16];
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;

static void logger(void *user, fasa_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    pthread_mutex_lock(&g_log_lock);
    size_t n = strlen(g_log);
    if (n + strlen(msg) + 2 < sizeof g_log) {
        strcat(g_log, msg);
        strcat(g_log, "\n");
    }
    pthread_mutex_unlock(&g_log_lock);
}

static fasa_context *open_ctx(const char *dir, fasa_cl_stats *stats)
{
    char msg[1024] = "";
    fasa_context_desc d = {.backend = FASA_BACKEND_OPENCL, .device_index = g_dev, .cache_dir = dir,
                           .error_message = msg, .error_message_size = sizeof msg};
    d.logger.log = logger;
    d.logger.min_level = FASA_LOG_INFO;
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&d, &ctx);
    T_CHECK(st == FASA_OK, "context with cache_dir '%s': %s", dir ? dir : "(null)", msg);
    if (!ctx) exit(1);
    fasa__cl_get_stats(ctx, stats);
    return ctx;
}

/* One small sparse step against the CPU backend. */
static void sanity_step(fasa_context *ctx, fasa_context *cpu)
{
    fasa_model_shape s = {1, 4, 2, 32, FASA_ROPE_NORM};
    fasa_context *cs[2] = {cpu, ctx};
    float o[2][4 * 32];
    uint64_t seed = 77;
    float k[600 * 2 * 32], v[600 * 2 * 32], q[4 * 32];
    for (size_t i = 0; i < sizeof k / 4; i++) k[i] = t_uniform(&seed), v[i] = t_uniform(&seed);
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = t_uniform(&seed);
    for (int b = 0; b < 2; b++) {
        fasa_calibration *cal = t_calibration(cs[b], &s, 4, false, 3);
        fasa_kv_cache_desc kd = {.shape = s, .capacity = 600, .calibration = cal, .flags = FASA_CACHE_NO_DENSE_LAYERS};
        fasa_kv_cache *c = NULL;
        T_STATUS(cs[b], fasa_kv_cache_create(cs[b], &kd, &c), FASA_OK, NULL);
        T_STATUS(cs[b], fasa_kv_cache_append(c, 0, 600, k, v, FASA_DTYPE_F32), FASA_OK, NULL);
        fasa_decode_desc dd = {.n_fac = 40};
        T_STATUS(cs[b], fasa_decode_host(c, 0, &dd, q, o[b], NULL), FASA_OK, NULL);
        fasa_kv_cache_destroy(c);
        fasa_calibration_destroy(cal);
    }
    T_CHECK(t_nmse(o[0], o[1], 4 * 32) <= 1e-7, "decode after loading programs differs from the cpu");
}

/* Names of the fasa-cl-*.bin entries in dir (up to 8); counts other files. */
static int list_entries(const char *dir, char names[8][512], int *others)
{
    int n = 0;
    *others = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "fasa-cl-", 8) == 0 && len > 4 && strcmp(e->d_name + len - 4, ".bin") == 0) {
            if (n < 8) snprintf(names[n], 512, "%s/%s", dir, e->d_name);
            n++;
        } else {
            (*others)++;
        }
    }
    closedir(d);
    return n;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(b, 1, len, f);
    fclose(f);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* The checksum of the previous entry format ("FASACLB1", 64-bit FNV-1a with
 * a final mix), which a damaged binary could satisfy by being rewritten:
 * PoCL then crashed on the binary. */
static uint64_t old_hash64(const void *data, size_t n, uint64_t seed)
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

/* Writes payload in a fresh envelope (valid hash) under the given key. */
static void reseal(const char *path, const unsigned char *key, const unsigned char *payload, size_t len)
{
    unsigned char *b = malloc(FASA_BLOB_HEADER + len + 1);
    fasa__blob_header(b, FASA_CL_BLOB_KIND, key, payload, len);
    memcpy(b + FASA_BLOB_HEADER, payload, len);
    spit(path, b, FASA_BLOB_HEADER + len);
    free(b);
}

/* Damages entry `path` in one of several ways, then checks that the next
 * context rejects it, rebuilds and leaves a valid entry again. */
typedef enum damage {
    FLIP_PAYLOAD, FLIP_OLD_FORMAT, TRUNCATE, TRUNCATE_RESEALED, TRUNCATE_HEADER, EXTEND, BAD_MAGIC, STALE_KEY,
    GARBAGE_VALID_HASH, WRONG_KERNEL_COUNT, EMPTY, FIFO, DIRECTORY, N_DAMAGE
} damage;
static const char *damage_name[N_DAMAGE] = {
    "flipped payload byte", "flipped byte, old format with its checksums recomputed", "truncated payload",
    "truncated payload, hash recomputed", "truncated header", "trailing bytes", "bad magic",
    "valid hash, wrong key", "garbage binary, valid hash and key", "PoCL header with a wrong kernel count",
    "zero-length file", "a FIFO in place of the entry", "a directory in place of the entry"};
/* what the log must say (either of two texts, '|'-separated) */
static const char *damage_reason[N_DAMAGE] = {
    "hash mismatch", "bad magic", "length mismatch", "shorter than its header|rejected by the driver",
    "truncated header", "length mismatch", "bad magic", "stale (key mismatch",
    "not a PoCL binary|rejected by the driver", "wrong number of kernels", "empty file", "is a FIFO",
    "is a directory"};

static bool log_has(const char *alternatives)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", alternatives);
    for (char *save = NULL, *t = strtok_r(buf, "|", &save); t; t = strtok_r(NULL, "|", &save))
        if (strstr(g_log, t)) return true;
    return false;
}

static bool is_pocl_binary(const char *path)
{
    size_t len = 0;
    unsigned char *b = slurp(path, &len);
    bool yes = b && len > FASA_BLOB_HEADER + 8 && memcmp(b + FASA_BLOB_HEADER, "poclbin", 8) == 0;
    free(b);
    return yes;
}

/* Returns false when the damage does not apply to this driver's binaries. */
static bool damage_entry(const char *path, damage how)
{
    size_t len = 0;
    unsigned char *b = slurp(path, &len);
    if (!b || len <= FASA_BLOB_HEADER + 64) {
        free(b);
        return false;
    }
    unsigned char *payload = b + FASA_BLOB_HEADER, *key = b + 32;
    size_t n = len - FASA_BLOB_HEADER;
    bool applies = true;
    switch (how) {
    case FLIP_PAYLOAD: payload[n / 2] ^= 0x40; spit(path, b, len); break;
    case FLIP_OLD_FORMAT: { /* exactly what used to pass the checks */
        unsigned char *o = calloc(64 + n, 1);
        memcpy(o, "FASACLB1", 8);
        put32(o + 8, 1);
        put32(o + 12, 64);
        memcpy(o + 16, key, 16);
        put64(o + 32, n);
        memcpy(o + 64, payload, n);
        o[64 + n / 2] ^= 0x40;
        put64(o + 40, old_hash64(o + 64, n, 3));
        put64(o + 48, old_hash64(o, 48, 4));
        spit(path, o, 64 + n);
        free(o);
        break;
    }
    case TRUNCATE: spit(path, b, FASA_BLOB_HEADER + n / 2); break;
    case TRUNCATE_RESEALED: reseal(path, key, payload, 40); break;
    case TRUNCATE_HEADER: spit(path, b, 10); break;
    case EXTEND: {
        unsigned char *c = calloc(len + 7, 1);
        memcpy(c, b, len);
        spit(path, c, len + 7);
        free(c);
        break;
    }
    case BAD_MAGIC: b[0] = 'X'; spit(path, b, len); break;
    case STALE_KEY: { /* another key, hash recomputed */
        unsigned char other[32];
        memcpy(other, key, 32);
        other[5] ^= 1;
        reseal(path, other, payload, n);
        break;
    }
    case GARBAGE_VALID_HASH: {
        uint64_t s = 12345;
        for (size_t i = 0; i < n; i++) payload[i] = (unsigned char)t_rand(&s);
        reseal(path, key, payload, n);
        break;
    }
    case WRONG_KERNEL_COUNT:
        applies = memcmp(payload, "poclbin", 8) == 0;
        if (applies) {
            put32(payload + 20, 1);
            reseal(path, key, payload, n);
        }
        break;
    case EMPTY: spit(path, b, 0); break;
    case FIFO: unlink(path); applies = mkfifo(path, 0600) == 0; break;
    case DIRECTORY: unlink(path); applies = mkdir(path, 0700) == 0; break;
    case N_DAMAGE: break;
    }
    free(b);
    return applies;
}

/* The entry is a regular file in a whole envelope of this kind. */
static bool entry_whole(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return false;
    size_t len = 0;
    unsigned char *b = slurp(path, &len);
    unsigned char key[32];
    bool ok = b && len > FASA_BLOB_HEADER;
    if (ok) memcpy(key, b + 32, 32);
    free(b);
    if (!ok) return false;
    fasa__blob blob;
    char why[256] = "";
    ok = fasa__blob_load(NULL, path, FASA_CL_BLOB_KIND, key, FASA_CL_BLOB_MAX, NULL, NULL, &blob, why, sizeof why) ==
         FASA_BLOB_LOADED;
    if (!ok) fprintf(stderr, "entry %s: %s\n", path, why);
    fasa__blob_free(NULL, &blob);
    return ok;
}

/* fasa__cl_check_binary on forged headers of the formats it knows, as a
 * non-PoCL platform would produce them. */
static void check_formats(void)
{
    cl_ctx cc;
    memset(&cc, 0, sizeof cc);
    snprintf(cc.platform_name, sizeof cc.platform_name, "Some GPU platform");
    unsigned char b[256];
    memset(b, 0, sizeof b);
    memcpy(b, "\x7f" "ELF", 4);
    b[4] = 2, b[5] = 1, b[6] = 1;           /* ELF64, little-endian */
    put64(b + 40, 128);                      /* e_shoff */
    b[52] = 64, b[58] = 64, b[60] = 2;       /* e_ehsize 64, e_shentsize 64, e_shnum 2 */
    T_CHECK(fasa__cl_check_binary(&cc, b, 256) == NULL, "a whole ELF64 header is refused");
    T_CHECK(fasa__cl_check_binary(&cc, b, 200) != NULL, "ELF section headers past the end pass");
    b[60] = 0;
    put64(b + 32, 0xffffffffffffff00ull), b[56] = 1, b[54] = 56; /* e_phoff far out, 1 entry */
    T_CHECK(fasa__cl_check_binary(&cc, b, 256) != NULL, "an ELF program header table far out passes");
    b[4] = 7;
    T_CHECK(fasa__cl_check_binary(&cc, b, 256) != NULL, "a bad ELF class passes");
    memset(b, 0, sizeof b);
    memcpy(b, "\xde\xc0\x17\x0b", 4);        /* bitcode wrapper: offset 20, size 8 */
    put32(b + 8, 20), put32(b + 12, 8);
    memcpy(b + 20, "BC\xc0\xde", 4);
    T_CHECK(fasa__cl_check_binary(&cc, b, 28) == NULL, "a whole bitcode wrapper is refused");
    T_CHECK(fasa__cl_check_binary(&cc, b, 27) != NULL, "a bitcode wrapper past the end passes");
    T_CHECK(fasa__cl_check_binary(&cc, (const unsigned char *)"BC\xc0\xde\x01\x02", 6) != NULL,
            "bitcode of a broken word passes");
    memcpy(b, "\x03\x02\x23\x07", 4);
    T_CHECK(fasa__cl_check_binary(&cc, b, 24) == NULL && fasa__cl_check_binary(&cc, b, 22) != NULL,
            "SPIR-V length checks");
    T_CHECK(fasa__cl_check_binary(&cc, b, 0) != NULL, "an empty binary passes");
    T_CHECK(fasa__cl_check_binary(&cc, (const unsigned char *)"// PTX text", 11) == NULL,
            "an unknown format is left to the driver");
    snprintf(cc.platform_name, sizeof cc.platform_name, "Portable Computing Language");
    T_CHECK(fasa__cl_check_binary(&cc, (const unsigned char *)"// PTX text", 11) != NULL,
            "PoCL accepts only PoCL binaries");
}

typedef struct race_arg {
    const char *dir;
    fasa_status st;
} race_arg;

static void *race(void *p)
{
    race_arg *a = p;
    fasa_context_desc d = {.backend = FASA_BACKEND_OPENCL, .device_index = g_dev, .cache_dir = a->dir};
    fasa_context *ctx = NULL;
    a->st = fasa_context_create(&d, &ctx);
    fasa_context_destroy(ctx);
    return NULL;
}

int main(void)
{
    g_dev = t_cl_device("test_cl_program_cache");
    check_formats();
    const char *tmp = getenv("FASA_TEST_TMP");
    char root[512];
    snprintf(root, sizeof root, "%s/cl-cache-%ld", tmp && tmp[0] ? tmp : "/tmp", (long)getpid());
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) return 1;
    fasa_context *cpu = t_context(FASA_BACKEND_CPU, 0, 0, NULL);
    char dir[600], names[8][512];
    int others = 0;
    fasa_cl_stats st;

    /* a missing directory (two levels) is created; the cold build writes */
    snprintf(dir, sizeof dir, "%s/a/b", root);
    fasa_context *ctx = open_ctx(dir, &st);
    T_CHECK(st.cache_misses == 2 && st.cache_writes == 2 && st.cache_hits == 0,
            "cold: misses %u writes %u hits %u", st.cache_misses, st.cache_writes, st.cache_hits);
    int n = list_entries(dir, names, &others);
    T_CHECK(n == 2 && others == 0, "cold: %d entries, %d other files", n, others);
    for (int i = 0; i < 2; i++) { /* the directories libfasa created are the user's alone */
        char d[700];
        snprintf(d, sizeof d, i ? "%s/a/b" : "%s/a", root);
        struct stat ds;
        T_CHECK(stat(d, &ds) == 0 && (ds.st_mode & 0777) == 0700, "%s: mode %o, want 0700", d,
                (unsigned)(ds.st_mode & 0777));
    }
    for (int i = 0; i < n && i < 2; i++) T_CHECK(entry_whole(names[i]), "cold: entry %s is not whole", names[i]);
    sanity_step(ctx, cpu);
    fasa_context_destroy(ctx);

    /* warm: both programs come from the cache */
    ctx = open_ctx(dir, &st);
    T_CHECK(st.cache_hits == 2 && st.cache_misses == 0 && st.cache_writes == 0,
            "warm: hits %u misses %u writes %u", st.cache_hits, st.cache_misses, st.cache_writes);
    sanity_step(ctx, cpu);
    fasa_context_destroy(ctx);

    /* every kind of damage is detected before the driver sees the binary,
     * rebuilt and replaced by a whole entry */
    for (int how = 0; how < N_DAMAGE; how++) {
        n = list_entries(dir, names, &others);
        if (n < 1) break;
        const char *victim = names[how % n];
        if (how == WRONG_KERNEL_COUNT && !is_pocl_binary(victim)) continue;
        if (!damage_entry(victim, (damage)how)) {
            printf("  %s: does not apply here, skipped\n", damage_name[how]);
            continue;
        }
        g_log[0] = '\0';
        ctx = open_ctx(dir, &st);
        T_CHECK(st.cache_rejects == 1 && st.cache_hits == 1 && st.cache_misses == 1 && st.cache_writes == 1,
                "%s: rejects %u hits %u misses %u writes %u", damage_name[how], st.cache_rejects,
                st.cache_hits, st.cache_misses, st.cache_writes);
        T_CHECK(log_has(damage_reason[how]), "%s: the log should say '%s':\n%s", damage_name[how],
                damage_reason[how], g_log);
        sanity_step(ctx, cpu);
        fasa_context_destroy(ctx);
        T_CHECK(entry_whole(victim), "%s: the entry was not replaced by a whole one", damage_name[how]);
        ctx = open_ctx(dir, &st); /* the replacement is good */
        T_CHECK(st.cache_hits == 2 && st.cache_rejects == 0, "%s: after the rebuild hits %u rejects %u",
                damage_name[how], st.cache_hits, st.cache_rejects);
        fasa_context_destroy(ctx);
        printf("  %s: rejected, rebuilt, replaced\n", damage_name[how]);
    }
    n = list_entries(dir, names, &others);
    T_CHECK(n == 2 && others == 0, "after the damage rounds: %d entries, %d other files", n, others);

    /* unusable directories: no error, no cache */
    snprintf(dir, sizeof dir, "%s/a/b/%s", root, "plain-file");
    spit(dir, (const unsigned char *)"x", 1);
    char under_file[700];
    snprintf(under_file, sizeof under_file, "%s/sub", dir);
    const char *unusable[] = {under_file, "/proc/fasa-no-such-dir/cache"};
    for (int i = 0; i < 2; i++) {
        g_log[0] = '\0';
        ctx = open_ctx(unusable[i], &st);
        T_CHECK(st.cache_writes == 0 && st.cache_misses == 2, "%s: writes %u misses %u", unusable[i],
                st.cache_writes, st.cache_misses);
        T_CHECK(strstr(g_log, "could not write") != NULL, "%s: the log should explain:\n%s", unusable[i], g_log);
        sanity_step(ctx, cpu);
        fasa_context_destroy(ctx);
    }
    /* no cache_dir: nothing is read or written */
    ctx = open_ctx(NULL, &st);
    T_CHECK(st.cache_writes == 0 && st.cache_hits == 0 && st.cache_rejects == 0, "no cache_dir: writes %u hits %u",
            st.cache_writes, st.cache_hits);
    fasa_context_destroy(ctx);

    /* a kernel that fails to compile: the message carries the build log,
     * and the context stays usable with its previous programs */
    ctx = open_ctx(NULL, &st);
    cl_tuning tune;
    fasa__cl_get_tuning(ctx, &tune);
    cl_tuning broken = tune;
    broken.wg_tip = 0; /* reqd_work_group_size(0, 1, 1) does not compile */
    g_log[0] = '\0';
    fasa_status bst = fasa__cl_retune(ctx, &broken);
    const char *bmsg = fasa_context_last_error(ctx);
    T_CHECK(bst == FASA_ERROR_BACKEND && strstr(bmsg, "build log:") && strstr(bmsg, "CL_BUILD_PROGRAM_FAILURE"),
            "a failing build: %s: %s", fasa_status_string(bst), bmsg);
    T_CHECK(strstr(g_log, "opencl build log") != NULL, "the full build log goes to the logger:\n%s", g_log);
    printf("  build failure message: %.200s...\n", bmsg);
    sanity_step(ctx, cpu);
    fasa_context_destroy(ctx);

    /* contexts racing on a cold directory */
    snprintf(dir, sizeof dir, "%s/race", root);
    race_arg ra[3] = {{dir, FASA_ERROR_BACKEND}, {dir, FASA_ERROR_BACKEND}, {dir, FASA_ERROR_BACKEND}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, race, &ra[i]);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 3; i++) T_CHECK(ra[i].st == FASA_OK, "racing context %d: %s", i, fasa_status_string(ra[i].st));
    n = list_entries(dir, names, &others);
    T_CHECK(n == 2 && others == 0, "race: %d entries, %d other files (temporaries left?)", n, others);
    ctx = open_ctx(dir, &st);
    T_CHECK(st.cache_hits == 2 && st.cache_rejects == 0, "race: a later context hits %u rejects %u", st.cache_hits,
            st.cache_rejects);
    fasa_context_destroy(ctx);

    fasa_context_destroy(cpu);
    if (t_failed == 0 && system(cmd) != 0) return 1;
    return t_done("test_cl_program_cache");
}
