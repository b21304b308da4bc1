#include "hashmap.h"

#include <stdlib.h>
#include <string.h>

uint64_t fm_hash_bytes(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Finalizer (from the murmur3 family of mixers) so that keys differing only
 * in high bits still spread over the low bits used for the index. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Smallest power of two >= 2 * expected (load factor <= 0.5), or 0 on overflow. */
static size_t table_size(size_t expected)
{
    size_t cap = 16;
    while (cap / 2 < expected) {
        if (cap > SIZE_MAX / 4)
            return 0;
        cap *= 2;
    }
    return cap;
}

bool fm_strmap_init(fm_strmap *m, size_t expected)
{
    m->count = 0;
    m->cap = table_size(expected);
    m->slots = m->cap ? calloc(m->cap, sizeof *m->slots) : NULL;
    return m->slots != NULL;
}

void fm_strmap_free(fm_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->count = 0;
}

static bool strmap_grow(fm_strmap *m)
{
    fm_strmap bigger;
    if (m->cap > SIZE_MAX / 2 / sizeof *m->slots)
        return false;
    bigger.cap = m->cap * 2;
    bigger.count = m->count;
    bigger.slots = calloc(bigger.cap, sizeof *bigger.slots);
    if (!bigger.slots)
        return false;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        size_t j = m->slots[i].hash & (bigger.cap - 1);
        while (bigger.slots[j].key)
            j = (j + 1) & (bigger.cap - 1);
        bigger.slots[j] = m->slots[i];
    }
    free(m->slots);
    *m = bigger;
    return true;
}

static size_t strmap_find(const fm_strmap *m, const char *key, size_t len, uint64_t h)
{
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key) {
        const fm_strmap_slot *s = &m->slots[i];
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0)
            return i;
        i = (i + 1) & (m->cap - 1);
    }
    return i;
}

bool fm_strmap_put(fm_strmap *m, const char *key, size_t len, int32_t value, int32_t *existing)
{
    uint64_t h = mix64(fm_hash_bytes(key, len));
    if ((m->count + 1) * 2 > m->cap && !strmap_grow(m))
        return false;
    size_t i = strmap_find(m, key, len, h);
    if (m->slots[i].key) {
        if (existing)
            *existing = m->slots[i].value;
        return false;
    }
    m->slots[i] = (fm_strmap_slot){ key, len, h, value };
    m->count++;
    return true;
}

bool fm_strmap_get(const fm_strmap *m, const char *key, size_t len, int32_t *value)
{
    if (!m->slots)
        return false;
    size_t i = strmap_find(m, key, len, mix64(fm_hash_bytes(key, len)));
    if (!m->slots[i].key)
        return false;
    *value = m->slots[i].value;
    return true;
}

bool fm_u64map_init(fm_u64map *m, size_t expected)
{
    m->count = 0;
    m->cap = table_size(expected);
    m->keys = m->cap ? malloc(m->cap * sizeof *m->keys) : NULL;
    m->values = m->cap ? malloc(m->cap * sizeof *m->values) : NULL;
    m->used = m->cap ? calloc(m->cap, 1) : NULL;
    if (!m->keys || !m->values || !m->used) {
        fm_u64map_free(m);
        return false;
    }
    return true;
}

void fm_u64map_free(fm_u64map *m)
{
    free(m->keys);
    free(m->values);
    free(m->used);
    m->keys = m->values = NULL;
    m->used = NULL;
    m->cap = m->count = 0;
}

static size_t u64map_find(const fm_u64map *m, uint64_t key)
{
    size_t i = mix64(key) & (m->cap - 1);
    while (m->used[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static bool u64map_grow(fm_u64map *m)
{
    fm_u64map bigger;
    if (m->cap > SIZE_MAX / 2 / sizeof(uint64_t) || !fm_u64map_init(&bigger, m->cap))
        return false;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->used[i])
            continue;
        size_t j = u64map_find(&bigger, m->keys[i]);
        bigger.used[j] = 1;
        bigger.keys[j] = m->keys[i];
        bigger.values[j] = m->values[i];
        bigger.count++;
    }
    fm_u64map_free(m);
    *m = bigger;
    return true;
}

bool fm_u64map_put(fm_u64map *m, uint64_t key, uint64_t value)
{
    if ((m->count + 1) * 2 > m->cap && !u64map_grow(m))
        return false;
    size_t i = u64map_find(m, key);
    if (m->used[i])
        return false;
    m->used[i] = 1;
    m->keys[i] = key;
    m->values[i] = value;
    m->count++;
    return true;
}

bool fm_u64map_get(const fm_u64map *m, uint64_t key, uint64_t *value)
{
    if (!m->used)
        return false;
    size_t i = u64map_find(m, key);
    if (!m->used[i])
        return false;
    *value = m->values[i];
    return true;
}
