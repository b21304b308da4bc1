/* SHA-256 (FIPS 180-4), written for libfasa's on-disk caches: it detects
 * accidental damage to a cache entry (a flipped bit, a torn write).  It is
 * not an authentication code: whoever can write the cache directory can
 * also write a matching hash (docs/RELIABILITY.md, cache directory trust). */
#ifndef FASA_SHA256_H
#define FASA_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define FASA_SHA256_SIZE 32

typedef struct fasa__sha256_ctx {
    uint32_t h[8];               /* chaining state */
    uint64_t total;              /* bytes hashed so far */
    uint8_t block[64];           /* partial block */
    uint32_t used;               /* bytes in block */
} fasa__sha256_ctx;

void fasa__sha256_init(fasa__sha256_ctx *s);
void fasa__sha256_update(fasa__sha256_ctx *s, const void *data, size_t n);
void fasa__sha256_final(fasa__sha256_ctx *s, uint8_t out[FASA_SHA256_SIZE]);
/* The digest of one buffer. */
void fasa__sha256(const void *data, size_t n, uint8_t out[FASA_SHA256_SIZE]);

#endif
