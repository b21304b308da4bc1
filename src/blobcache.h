/* The envelope of libfasa's on-disk caches: OpenCL program binaries
 * (src/opencl/cl_program.c) and the Vulkan pipeline cache
 * (src/vulkan/vk_pipelines.c) follow one rule.
 *
 * A cache only saves time, so an entry is used only when everything that
 * can be checked holds, and is rebuilt on any doubt.  Entry file, 96-byte
 * header (integers little-endian), then the payload:
 *    0  magic "FASABLOB"        8  u32 envelope version (1)  12  u32 header size (96)
 *   16  kind, 4 characters     20  u32 reserved (0)          24  u64 payload size
 *   32  key: SHA-256 of what the payload was made from (device, driver,
 *       build options, kernel source; see fasa__blob_key_*)
 *   64  SHA-256 of header bytes 0..63 followed by the payload
 * Loading checks, in order: a regular file (never a FIFO or a device, which
 * could block or never end), within a size cap, magic, version, kind,
 * non-empty payload whose size matches the file, the hash, the key, then
 * the backend's own check of the payload's format.  Entries are written to
 * a temporary file and renamed into place (src/fileio.h), so a reader sees
 * the old entry or the new one, never a mix.
 *
 * The hash catches accidental damage only: anyone who can write the cache
 * directory can write a matching hash, so the directory must be as trusted
 * as the library itself (docs/RELIABILITY.md, "Cache directory trust"). */
#ifndef FASA_BLOBCACHE_H
#define FASA_BLOBCACHE_H

#include "internal.h"
#include "sha256.h"

#define FASA_BLOB_MAGIC "FASABLOB"
#define FASA_BLOB_VERSION 1u
#define FASA_BLOB_HEADER 96u

/* The key: SHA-256 over the kind and each field as (u64 length, bytes), so
 * fields cannot run into each other. */
typedef struct fasa__blob_key {
    fasa__sha256_ctx s;
} fasa__blob_key;
void fasa__blob_key_begin(fasa__blob_key *k, const char kind[4]);
void fasa__blob_key_add(fasa__blob_key *k, const void *data, size_t n);
void fasa__blob_key_str(fasa__blob_key *k, const char *s);
void fasa__blob_key_end(fasa__blob_key *k, uint8_t key[FASA_SHA256_SIZE]);
/* The first 16 bytes of a key in hex (32 characters and a NUL), for file names. */
void fasa__blob_key_hex(const uint8_t key[FASA_SHA256_SIZE], char out[33]);

/* A backend's check of a payload's own format: NULL when it looks whole,
 * else the reason. */
typedef const char *(*fasa__blob_check_fn)(void *user, const unsigned char *payload, size_t size);

typedef enum fasa__blob_result {
    FASA_BLOB_LOADED,            /* *out holds the payload */
    FASA_BLOB_MISSING,           /* no entry: nothing to report */
    FASA_BLOB_REJECTED,          /* unusable: why says what is wrong; rebuild and store */
} fasa__blob_result;

typedef struct fasa__blob {
    unsigned char *file;         /* the whole entry (the context's allocator) */
    const unsigned char *payload;/* inside file, 32-byte aligned */
    size_t size;
} fasa__blob;

/* Reads and checks the entry at path (see above); max_payload caps the
 * payload size.  check may be NULL. */
fasa__blob_result fasa__blob_load(fasa_context *ctx, const char *path, const char kind[4],
                                  const uint8_t key[FASA_SHA256_SIZE], size_t max_payload,
                                  fasa__blob_check_fn check, void *user, fasa__blob *out, char *why,
                                  size_t why_size);
void fasa__blob_free(fasa_context *ctx, fasa__blob *b);

/* Writes the entry atomically, creating dir (and its missing parents)
 * with user-only permissions first.  Whatever is in the way and is not a
 * regular file (a FIFO, a socket, a link to one, an empty directory) is
 * removed so the entry can take its place.  Returns 0 or an errno value
 * with the reason in why. */
int fasa__blob_store(const char *dir, const char *path, const char kind[4], const uint8_t key[FASA_SHA256_SIZE],
                     const void *payload, size_t size, char *why, size_t why_size);

/* The header of an entry (also used by the tests to forge entries). */
void fasa__blob_header(unsigned char out[FASA_BLOB_HEADER], const char kind[4], const uint8_t key[FASA_SHA256_SIZE],
                       const void *payload, size_t size);

#endif
