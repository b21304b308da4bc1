/* The Vulkan pipeline cache under cache_dir, in the envelope shared with the
 * OpenCL program cache (src/blobcache.h): a cold context creates the
 * directories user-only and writes one whole entry; a warm one loads it;
 * a damaged entry (flipped byte, truncated, the previous raw format, a
 * valid hash over a wrong key, a valid envelope around the header of
 * another device, an empty file, a FIFO or a directory in its place) is
 * rejected before the driver sees it, the context works and computes the
 * same output as the CPU backend, and the entry is replaced by a whole one
 * at destroy. */
#include "vt_common.h"
#include "blobcache.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_log[1 << 15];

static void logger(void *user, fasa_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    size_t n = strlen(g_log);
    if (n + strlen(msg) + 2 < sizeof g_log) {
        strcat(g_log, msg);
        strcat(g_log, "\n");
    }
}

static fasa_context *open_ctx(fasa_backend b, const char *dir)
{
    char msg[1024] = "";
    fasa_context_desc d = {0};
    d.backend = b;
    d.cache_dir = dir;
    d.n_threads = 2;
    d.error_message = msg;
    d.error_message_size = sizeof msg;
    d.logger.log = logger;
    d.logger.min_level = FASA_LOG_DEBUG;
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&d, &ctx);
    VT_CHECK(st == FASA_OK, "context with cache_dir %s: %s: %s", dir ? dir : "(none)", fasa_status_string(st), msg);
    if (!ctx) exit(1);
    return ctx;
}

/* One dense and one oracle step (every pipeline of the f32 dtype is built
 * with the first cache); o receives the oracle output. */
static void steps(fasa_context *ctx, float *o)
{
    fasa_model_shape s = {1, 4, 2, 64, FASA_ROPE_NORM};
    fasa_kv_cache_desc cd = {0};
    cd.shape = s;
    cd.capacity = 256;
    cd.dtype = FASA_DTYPE_F32;
    cd.flags = FASA_CACHE_NO_DENSE_LAYERS;
    fasa_kv_cache *c = NULL;
    VT_OK(ctx, fasa_kv_cache_create(ctx, &cd, &c));
    if (!c) return;
    vt_rng r = {5};
    uint32_t n = 200, row = s.n_kv_heads * s.head_dim;
    float *k = malloc((size_t)n * row * 4), *v = malloc((size_t)n * row * 4), q[4 * 64];
    for (size_t i = 0; i < (size_t)n * row; i++) k[i] = vt_normal(&r), v[i] = vt_normal(&r);
    for (size_t i = 0; i < 4 * 64; i++) q[i] = vt_normal(&r);
    VT_OK(ctx, fasa_kv_cache_append(c, 0, n, k, v, FASA_DTYPE_F32));
    fasa_decode_desc dense = {.mode = FASA_MODE_DENSE};
    fasa_decode_desc oracle = {.mode = FASA_MODE_ORACLE, .n_fac = 64, .n_sink = 4, .n_recent = 4};
    VT_OK(ctx, fasa_decode_host(c, 0, &dense, q, o, NULL));
    VT_OK(ctx, fasa_decode_host(c, 0, &oracle, q, o, NULL));
    fasa_kv_cache_destroy(c);
    free(k), free(v);
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

static void reseal(const char *path, const unsigned char *key, const unsigned char *payload, size_t len)
{
    unsigned char *b = malloc(FASA_BLOB_HEADER + len);
    fasa__blob_header(b, "VKPC", key, payload, len);
    memcpy(b + FASA_BLOB_HEADER, payload, len);
    spit(path, b, FASA_BLOB_HEADER + len);
    free(b);
}

/* The one entry file of dir, or false. */
static bool find_entry(const char *dir, char *out, size_t size)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -d %s/libfasa-vk-*.bin 2>/dev/null", dir);
    FILE *p = popen(cmd, "r");
    bool ok = p && fgets(out, (int)size, p) != NULL;
    if (p) pclose(p);
    if (ok) out[strcspn(out, "\n")] = '\0';
    return ok;
}

/* A regular file holding a whole envelope of kind VKPC. */
static bool entry_whole(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return false;
    size_t len = 0;
    unsigned char *b = slurp(path, &len), key[32];
    bool ok = b && len > FASA_BLOB_HEADER;
    if (ok) memcpy(key, b + 32, 32);
    free(b);
    fasa__blob blob;
    char why[256] = "";
    ok = ok && fasa__blob_load(NULL, path, "VKPC", key, 64u << 20, NULL, NULL, &blob, why, sizeof why) == FASA_BLOB_LOADED;
    if (ok) fasa__blob_free(NULL, &blob);
    else fprintf(stderr, "entry %s: %s\n", path, why);
    return ok;
}

typedef enum damage { FLIP, TRUNCATE, OLD_RAW, WRONG_KEY, OTHER_DEVICE, EMPTY, FIFO, DIRECTORY, N_DAMAGE } damage;
static const char *names[N_DAMAGE] = {"flipped payload byte", "truncated", "previous raw format",
                                      "valid hash, wrong key", "valid envelope, another device's header",
                                      "zero-length file", "a FIFO in its place", "a directory in its place"};
/* what the log must say ('|' separates alternatives: lavapipe's cache data
 * is its 32-byte header alone, shorter than our envelope's header) */
static const char *reasons[N_DAMAGE] = {"hash mismatch", "length mismatch", "bad magic|truncated header",
                                        "stale (key mismatch",
                                        "another device", "empty file", "is a FIFO", "is a directory"};

static bool log_has(const char *alternatives)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", alternatives);
    for (char *save = NULL, *t = strtok_r(buf, "|", &save); t; t = strtok_r(NULL, "|", &save))
        if (strstr(g_log, t)) return true;
    return false;
}

static void damage_entry(const char *path, damage how)
{
    size_t len = 0;
    unsigned char *b = slurp(path, &len);
    if (!b || len < FASA_BLOB_HEADER + 32) {
        free(b);
        return;
    }
    unsigned char *payload = b + FASA_BLOB_HEADER, key[32];
    size_t n = len - FASA_BLOB_HEADER;
    memcpy(key, b + 32, 32);
    switch (how) {
    case FLIP: payload[n - 1] ^= 0x10; spit(path, b, len); break;
    case TRUNCATE: spit(path, b, len - 5); break;
    case OLD_RAW: spit(path, payload, n); break; /* what the file held before the envelope */
    case WRONG_KEY: key[0] ^= 0x80; reseal(path, key, payload, n); break;
    case OTHER_DEVICE: payload[8] ^= 1; reseal(path, key, payload, n); break; /* vendorID */
    case EMPTY: spit(path, b, 0); break;
    case FIFO: unlink(path); VT_CHECK(mkfifo(path, 0600) == 0, "mkfifo"); break;
    case DIRECTORY: unlink(path); VT_CHECK(mkdir(path, 0700) == 0, "mkdir"); break;
    case N_DAMAGE: break;
    }
    free(b);
}

int main(void)
{
    vt_require_vulkan();
    char root[] = "/tmp/fasa-vk-pcache-XXXXXX", dir[256], path[1024];
    VT_CHECK(mkdtemp(root) != NULL, "mkdtemp");
    snprintf(dir, sizeof dir, "%s/a/b", root);
    float ref[4 * 64], o[4 * 64];
    fasa_context *cpu = open_ctx(FASA_BACKEND_CPU, NULL);
    steps(cpu, ref);
    fasa_context_destroy(cpu);

    /* cold: directories created user-only, one whole entry written at destroy */
    fasa_context *ctx = open_ctx(FASA_BACKEND_VULKAN, dir);
    steps(ctx, o);
    fasa_context_destroy(ctx);
    VT_CHECK(vt_nmse(ref, o, 4 * 64) < 1e-10, "cold: output differs from the cpu backend");
    for (int i = 0; i < 2; i++) {
        char d[300];
        snprintf(d, sizeof d, i ? "%s/a/b" : "%s/a", root);
        struct stat st;
        VT_CHECK(stat(d, &st) == 0 && (st.st_mode & 0777) == 0700, "%s: mode %o, want 0700", d,
                 (unsigned)(st.st_mode & 0777));
    }
    bool have = find_entry(dir, path, sizeof path);
    VT_CHECK(have && entry_whole(path), "cold: no whole pipeline cache entry under %s", dir);
    if (!have) return vt_finish("test_vk_pipeline_cache");

    /* warm: loaded */
    g_log[0] = '\0';
    ctx = open_ctx(FASA_BACKEND_VULKAN, dir);
    steps(ctx, o);
    fasa_context_destroy(ctx);
    VT_CHECK(strstr(g_log, "pipeline cache loaded from") != NULL, "warm: not loaded:\n%s", g_log);
    printf("warm: %s\n", strstr(g_log, "unchanged") ? "loaded, unchanged, not rewritten" : "loaded, rewritten");

    for (int how = 0; how < N_DAMAGE; how++) {
        damage_entry(path, (damage)how);
        g_log[0] = '\0';
        ctx = open_ctx(FASA_BACKEND_VULKAN, dir);
        memset(o, 0, sizeof o);
        steps(ctx, o);
        fasa_context_destroy(ctx);
        VT_CHECK(log_has(reasons[how]), "%s: the log should say '%s':\n%s", names[how], reasons[how], g_log);
        VT_CHECK(strstr(g_log, "pipeline cache loaded from") == NULL, "%s: the damaged cache was loaded", names[how]);
        VT_CHECK(vt_nmse(ref, o, 4 * 64) < 1e-10, "%s: output differs from the cpu backend", names[how]);
        VT_CHECK(entry_whole(path), "%s: the entry was not replaced by a whole one", names[how]);
        g_log[0] = '\0';
        ctx = open_ctx(FASA_BACKEND_VULKAN, dir);
        fasa_context_destroy(ctx);
        VT_CHECK(strstr(g_log, "pipeline cache loaded from") != NULL, "%s: the replacement does not load:\n%s",
                 names[how], g_log);
        printf("%s: rejected, rebuilt, replaced\n", names[how]);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (vt_failures == 0 && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return vt_finish("test_vk_pipeline_cache");
}
