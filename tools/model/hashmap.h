/*
 * Two small open-addressing hash maps (linear probing, power-of-two tables):
 *  - fm_strmap: byte string -> int32, keys borrowed (must outlive the map);
 *  - fm_u64map: uint64 -> uint64.
 * Used for GGUF key/tensor lookup and the tokenizer's vocab and merges, where
 * tens of thousands of lookups per novel make linear search too slow.
 */
#ifndef FM_HASHMAP_H
#define FM_HASHMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fm_strmap_slot {
    const char *key;      /* NULL = empty slot */
    size_t len;
    uint64_t hash;
    int32_t value;
} fm_strmap_slot;

typedef struct fm_strmap {
    fm_strmap_slot *slots;
    size_t cap, count;    /* cap is a power of two */
} fm_strmap;

/* Sizes the table for `expected` keys; false when out of memory. */
bool fm_strmap_init(fm_strmap *m, size_t expected);
void fm_strmap_free(fm_strmap *m);
/* Inserts key -> value.  Returns false when out of memory or when the key is
 * already present (then *existing, if non-NULL, receives its value). */
bool fm_strmap_put(fm_strmap *m, const char *key, size_t len, int32_t value, int32_t *existing);
/* Looks a key up; false when absent. */
bool fm_strmap_get(const fm_strmap *m, const char *key, size_t len, int32_t *value);

typedef struct fm_u64map {
    uint64_t *keys;
    uint64_t *values;
    uint8_t *used;
    size_t cap, count;
} fm_u64map;

bool fm_u64map_init(fm_u64map *m, size_t expected);
void fm_u64map_free(fm_u64map *m);
/* Inserts or keeps: returns false on out-of-memory or a duplicate key. */
bool fm_u64map_put(fm_u64map *m, uint64_t key, uint64_t value);
bool fm_u64map_get(const fm_u64map *m, uint64_t key, uint64_t *value);

/* 64-bit FNV-1a over bytes. */
uint64_t fm_hash_bytes(const void *data, size_t len);

#endif
