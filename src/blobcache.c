/* The on-disk cache envelope (see blobcache.h). */
#include "blobcache.h"
#include "fileio.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
/* Keys and headers                                                          */
/* ------------------------------------------------------------------------ */

void fasa__blob_key_begin(fasa__blob_key *k, const char kind[4])
{
    fasa__sha256_init(&k->s);
    fasa__blob_key_add(k, FASA_BLOB_MAGIC, 8);
    fasa__blob_key_add(k, kind, 4);
}

void fasa__blob_key_add(fasa__blob_key *k, const void *data, size_t n)
{
    unsigned char len[8];
    put_u64(len, n);
    fasa__sha256_update(&k->s, len, sizeof len);
    fasa__sha256_update(&k->s, data, n);
}

void fasa__blob_key_str(fasa__blob_key *k, const char *s) { fasa__blob_key_add(k, s ? s : "", s ? strlen(s) : 0); }

void fasa__blob_key_end(fasa__blob_key *k, uint8_t key[FASA_SHA256_SIZE]) { fasa__sha256_final(&k->s, key); }

void fasa__blob_key_hex(const uint8_t key[FASA_SHA256_SIZE], char out[33])
{
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", key[i]);
}

/* The hash covers the header's first 64 bytes (magic, version, kind, size,
 * key) and the payload: the whole entry except the hash itself. */
static void entry_hash(const unsigned char *header, const void *payload, size_t size, uint8_t out[FASA_SHA256_SIZE])
{
    fasa__sha256_ctx s;
    fasa__sha256_init(&s);
    fasa__sha256_update(&s, header, 64);
    fasa__sha256_update(&s, payload, size);
    fasa__sha256_final(&s, out);
}

void fasa__blob_header(unsigned char out[FASA_BLOB_HEADER], const char kind[4], const uint8_t key[FASA_SHA256_SIZE],
                       const void *payload, size_t size)
{
    memset(out, 0, FASA_BLOB_HEADER);
    memcpy(out, FASA_BLOB_MAGIC, 8);
    put_u32(out + 8, FASA_BLOB_VERSION);
    put_u32(out + 12, FASA_BLOB_HEADER);
    memcpy(out + 16, kind, 4);
    put_u64(out + 24, size);
    memcpy(out + 32, key, FASA_SHA256_SIZE);
    entry_hash(out, payload, size, out + 64);
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

static void *file_alloc(void *user, size_t size) { return fasa__alloc_aligned(user, size, 64); }
static void file_free(void *user, void *ptr) { fasa__free(user, ptr); }

/* The envelope checks of blobcache.h, on a file of n bytes; NULL = whole. */
static const char *check_envelope(const unsigned char *f, size_t n, const char kind[4],
                                  const uint8_t key[FASA_SHA256_SIZE], char *buf, size_t buf_size)
{
    if (n == 0) return "empty file";
    if (n < FASA_BLOB_HEADER) {
        snprintf(buf, buf_size, "truncated header (%zu of %u bytes)", n, FASA_BLOB_HEADER);
        return buf;
    }
    if (memcmp(f, FASA_BLOB_MAGIC, 8) != 0) return "bad magic (not a libfasa cache entry, or an older format)";
    if (get_u32(f + 8) != FASA_BLOB_VERSION || get_u32(f + 12) != FASA_BLOB_HEADER) return "unknown envelope version";
    if (memcmp(f + 16, kind, 4) != 0) return "an entry of another kind";
    uint64_t size = get_u64(f + 24);
    if (size == 0) return "empty payload";
    if (size != n - FASA_BLOB_HEADER) {
        snprintf(buf, buf_size, "length mismatch (the header records %llu payload bytes, the file holds %zu: "
                 "truncated or extended)", (unsigned long long)size, n - FASA_BLOB_HEADER);
        return buf;
    }
    uint8_t h[FASA_SHA256_SIZE];
    entry_hash(f, f + FASA_BLOB_HEADER, (size_t)size, h);
    if (memcmp(h, f + 64, sizeof h) != 0) return "hash mismatch (damaged entry)";
    if (memcmp(f + 32, key, FASA_SHA256_SIZE) != 0)
        return "stale (key mismatch: made for another device, driver, source or build options)";
    return NULL;
}

fasa__blob_result fasa__blob_load(fasa_context *ctx, const char *path, const char kind[4],
                                  const uint8_t key[FASA_SHA256_SIZE], size_t max_payload,
                                  fasa__blob_check_fn check, void *user, fasa__blob *out, char *why,
                                  size_t why_size)
{
    memset(out, 0, sizeof *out);
    fasa__file_alloc fa = {file_alloc, file_free, ctx};
    char *data = NULL, err[160] = "";
    size_t n = 0;
    int code = fasa__read_whole_file(path, FASA_BLOB_HEADER + max_payload, &fa, &data, &n, err, sizeof err);
    if (code == ENOENT) return FASA_BLOB_MISSING;
    const unsigned char *f = (const unsigned char *)data;
    char buf[200];
    const char *bad = code ? err : check_envelope(f, n, kind, key, buf, sizeof buf);
    if (!bad && check) bad = check(user, f + FASA_BLOB_HEADER, n - FASA_BLOB_HEADER);
    if (bad) {
        snprintf(why, why_size, "%s", bad);
        fasa__free(ctx, data);
        return FASA_BLOB_REJECTED;
    }
    out->file = (unsigned char *)data;
    out->payload = out->file + FASA_BLOB_HEADER;
    out->size = n - FASA_BLOB_HEADER;
    return FASA_BLOB_LOADED;
}

void fasa__blob_free(fasa_context *ctx, fasa__blob *b)
{
    fasa__free(ctx, b->file);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------------ */
/* Storing                                                                   */
/* ------------------------------------------------------------------------ */

/* Creates dir and its missing parents, user-only: the directory holds code
 * the library will load, so nobody else may write (or read) it.  Existing
 * directories keep their permissions; failures show up at the write. */
static void make_dirs(const char *dir)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        mkdir(p, 0700);
        *s = '/';
    }
    mkdir(p, 0700);
}

/* Removes what is in the way of the entry if it is not a regular file:
 * a rename cannot replace a directory, and fasa__atomic_begin refuses
 * FIFOs and devices.  Only our own entry name is touched. */
static int clear_non_file(const char *path)
{
    struct stat st, lst;
    if (lstat(path, &lst) != 0) return 0;           /* nothing there */
    if (S_ISLNK(lst.st_mode)) {
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) return 0; /* replaced through the link */
        return unlink(path) == 0 ? 0 : errno;       /* a link to a non-file: drop the link */
    }
    if (S_ISREG(lst.st_mode)) return 0;
    if (S_ISDIR(lst.st_mode)) return rmdir(path) == 0 ? 0 : errno; /* only an empty one */
    return unlink(path) == 0 ? 0 : errno;           /* FIFO, socket, device node */
}

int fasa__blob_store(const char *dir, const char *path, const char kind[4], const uint8_t key[FASA_SHA256_SIZE],
                     const void *payload, size_t size, char *why, size_t why_size)
{
    make_dirs(dir);
    int code = clear_non_file(path);
    if (code) {
        snprintf(why, why_size, "cannot remove what is in its place: %s", strerror(code));
        return code;
    }
    unsigned char h[FASA_BLOB_HEADER];
    fasa__blob_header(h, kind, key, payload, size);
    fasa__atomic_file af;
    code = fasa__atomic_begin(&af, path, why, why_size);
    if (code) return code;
    if (fwrite(h, 1, sizeof h, af.f) != sizeof h || fwrite(payload, 1, size, af.f) != size) {
        code = errno ? errno : EIO;
        fasa__atomic_abort(&af);
        snprintf(why, why_size, "%s", strerror(code));
        return code;
    }
    return fasa__atomic_commit(&af, why, why_size);
}
