#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_POPULATE-free mmap, fstat */
#endif
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hashmap.h"

struct gguf_file {
    const uint8_t *data;
    uint64_t size;
    bool mapped;              /* data came from mmap and must be unmapped */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start;      /* absolute offset of the tensor data blob */
    uint64_t n_kv, n_tensors;
    gguf_kv *kvs;
    gguf_tensor *tensors;
    fm_strmap kv_index, tensor_index;
};

/* ------------------------------------------------------------------------ */
/* Type tables                                                               */
/* ------------------------------------------------------------------------ */

static const char *const vtype_names[GGUF_VT_COUNT_] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};
/* Byte size of fixed-size value types; 0 for string and array. */
static const uint8_t vtype_size[GGUF_VT_COUNT_] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

typedef struct ttype_info {
    const char *name;
    uint32_t block;       /* elements per block; 0 = id unknown to this reader */
    uint32_t bytes;       /* bytes per block */
} ttype_info;

/* Block sizes from ggml's ggml-common.h.  Ids missing here (e.g. the IQ
 * types) are rejected at open time, since their data size is unknown. */
static const ttype_info ttypes[] = {
    [GGUF_T_F32] = { "F32", 1, 4 },      [GGUF_T_F16] = { "F16", 1, 2 },
    [GGUF_T_Q4_0] = { "Q4_0", 32, 18 },  [GGUF_T_Q4_1] = { "Q4_1", 32, 20 },
    [GGUF_T_Q5_0] = { "Q5_0", 32, 22 },  [GGUF_T_Q5_1] = { "Q5_1", 32, 24 },
    [GGUF_T_Q8_0] = { "Q8_0", 32, 34 },  [GGUF_T_Q8_1] = { "Q8_1", 32, 36 },
    [GGUF_T_Q2_K] = { "Q2_K", 256, 84 }, [GGUF_T_Q3_K] = { "Q3_K", 256, 110 },
    [GGUF_T_Q4_K] = { "Q4_K", 256, 144 }, [GGUF_T_Q5_K] = { "Q5_K", 256, 176 },
    [GGUF_T_Q6_K] = { "Q6_K", 256, 210 }, [GGUF_T_Q8_K] = { "Q8_K", 256, 292 },
    [GGUF_T_I8] = { "I8", 1, 1 },        [GGUF_T_I16] = { "I16", 1, 2 },
    [GGUF_T_I32] = { "I32", 1, 4 },      [GGUF_T_I64] = { "I64", 1, 8 },
    [GGUF_T_F64] = { "F64", 1, 8 },      [GGUF_T_BF16] = { "BF16", 1, 2 },
};
#define N_TTYPES (sizeof ttypes / sizeof ttypes[0])

static const ttype_info *ttype_lookup(uint32_t type)
{
    return (type < N_TTYPES && ttypes[type].block) ? &ttypes[type] : NULL;
}

const char *gguf_vtype_name(uint32_t type)
{
    return type < GGUF_VT_COUNT_ ? vtype_names[type] : "unknown";
}

bool gguf_type_block(uint32_t type, uint32_t *block, uint32_t *bytes)
{
    const ttype_info *t = ttype_lookup(type);
    if (t) {
        *block = t->block;
        *bytes = t->bytes;
    }
    return t != NULL;
}

const char *gguf_ttype_name(uint32_t type)
{
    const ttype_info *t = ttype_lookup(type);
    return t ? t->name : "unknown";
}

/* ------------------------------------------------------------------------ */
/* Bounds-checked cursor over the file                                       */
/* ------------------------------------------------------------------------ */

typedef struct cursor {
    const uint8_t *base;
    uint64_t pos, size;
    fm_error *err;
} cursor;

static uint64_t remaining(const cursor *c)
{
    return c->size - c->pos;
}

static fm_status need(cursor *c, uint64_t n, const char *what)
{
    if (n > remaining(c))
        return fm_fail(c->err, FM_ERR_PARSE,
                       "GGUF truncated: %s needs %llu bytes at offset %llu, file size %llu", what,
                       (unsigned long long)n, (unsigned long long)c->pos,
                       (unsigned long long)c->size);
    return FM_OK;
}

static uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static fm_status read_u32(cursor *c, uint32_t *v, const char *what)
{
    fm_status st = need(c, 4, what);
    if (st)
        return st;
    *v = load_u32(c->base + c->pos);
    c->pos += 4;
    return FM_OK;
}

static fm_status read_u64(cursor *c, uint64_t *v, const char *what)
{
    fm_status st = need(c, 8, what);
    if (st)
        return st;
    *v = load_u64(c->base + c->pos);
    c->pos += 8;
    return FM_OK;
}

/* Reads a GGUF string (u64 length + bytes) as a view into the file. */
static fm_status read_str(cursor *c, gguf_str *s, const char *what)
{
    uint64_t len;
    fm_status st = read_u64(c, &len, what);
    if (st)
        return st;
    if (len > remaining(c))
        return fm_fail(c->err, FM_ERR_PARSE,
                       "GGUF: %s has length %llu but only %llu bytes remain at offset %llu", what,
                       (unsigned long long)len, (unsigned long long)remaining(c),
                       (unsigned long long)c->pos);
    s->ptr = (const char *)c->base + c->pos;
    s->len = len;
    c->pos += len;
    return FM_OK;
}

/* NUL-terminated heap copy of a key or name; rejects embedded NULs. */
static fm_status copy_name(cursor *c, gguf_str s, const char *what, char **out)
{
    char shown[96];
    if (memchr(s.ptr, '\0', s.len)) {
        fm_sanitize(shown, sizeof shown, s.ptr, s.len, 64);
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF: %s '%s' contains a NUL byte", what, shown);
    }
    *out = malloc(s.len + 1);
    if (!*out)
        return fm_fail(c->err, FM_ERR_NOMEM, "GGUF: out of memory copying a %s", what);
    memcpy(*out, s.ptr, s.len);
    (*out)[s.len] = '\0';
    return FM_OK;
}

/* ------------------------------------------------------------------------ */
/* Key-value section                                                         */
/* ------------------------------------------------------------------------ */

static fm_status skip_value(cursor *c, uint32_t type, unsigned depth, const char *key);

static fm_status skip_array(cursor *c, unsigned depth, const char *key, uint32_t *elem,
                            uint64_t *count)
{
    fm_status st = read_u32(c, elem, "array element type");
    if (!st)
        st = read_u64(c, count, "array count");
    if (st)
        return fm_wrap(c->err, st, "GGUF key '%s'", key);
    if (*elem >= GGUF_VT_COUNT_)
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF key '%s': unknown array element type %u", key,
                       *elem);
    if (*elem == GGUF_VT_ARRAY && depth + 1 >= GGUF_MAX_ARRAY_DEPTH)
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF key '%s': arrays nested deeper than %d", key,
                       GGUF_MAX_ARRAY_DEPTH);
    /* Every element takes at least this many bytes, which caps absurd counts
     * before any loop runs. */
    uint64_t min_bytes = vtype_size[*elem] ? vtype_size[*elem] : (*elem == GGUF_VT_STRING ? 8 : 12);
    if (*count > remaining(c) / min_bytes)
        return fm_fail(c->err, FM_ERR_PARSE,
                       "GGUF key '%s': array of %llu %s elements does not fit in the %llu bytes left",
                       key, (unsigned long long)*count, gguf_vtype_name(*elem),
                       (unsigned long long)remaining(c));
    if (vtype_size[*elem] && *elem != GGUF_VT_BOOL) {
        c->pos += *count * vtype_size[*elem];
        return FM_OK;
    }
    for (uint64_t i = 0; i < *count; i++) {
        st = skip_value(c, *elem, depth + 1, key);
        if (st)
            return st;
    }
    return FM_OK;
}

static fm_status skip_value(cursor *c, uint32_t type, unsigned depth, const char *key)
{
    fm_status st;
    if (type == GGUF_VT_STRING) {
        gguf_str s;
        st = read_str(c, &s, "string value");
        return st ? fm_wrap(c->err, st, "GGUF key '%s'", key) : FM_OK;
    }
    if (type == GGUF_VT_ARRAY) {
        uint32_t elem;
        uint64_t count;
        return skip_array(c, depth, key, &elem, &count);
    }
    st = need(c, vtype_size[type], "value");
    if (st)
        return fm_wrap(c->err, st, "GGUF key '%s'", key);
    if (type == GGUF_VT_BOOL && c->base[c->pos] > 1)
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF key '%s': bool value %u is neither 0 nor 1",
                       key, c->base[c->pos]);
    c->pos += vtype_size[type];
    return FM_OK;
}

static fm_status parse_kv(cursor *c, gguf_file *f, uint64_t i)
{
    gguf_kv *kv = &f->kvs[i];
    gguf_str key;
    uint32_t type;
    char *name;
    fm_status st = read_str(c, &key, "key");
    if (st)
        return fm_wrap(c->err, st, "GGUF KV #%llu", (unsigned long long)i);
    st = copy_name(c, key, "key", &name);
    if (st)
        return st;
    kv->key = name;
    if (key.len == 0)
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF KV #%llu has an empty key",
                       (unsigned long long)i);
    st = read_u32(c, &type, "value type");
    if (st)
        return fm_wrap(c->err, st, "GGUF key '%s'", name);
    if (type >= GGUF_VT_COUNT_)
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF key '%s': unknown value type %u", name, type);
    kv->type = type;
    if (type == GGUF_VT_ARRAY) {
        uint32_t elem;
        uint64_t count;
        uint64_t header = c->pos + 12;
        st = skip_array(c, 0, name, &elem, &count);
        kv->elem_type = elem;
        kv->count = count;
        kv->value = c->base + header;
    } else {
        kv->value = c->base + c->pos;
        st = skip_value(c, type, 0, name);
    }
    if (st)
        return st;
    int32_t previous;
    if (fm_strmap_get(&f->kv_index, name, key.len, &previous))
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF key '%s' appears twice", name);
    if (!fm_strmap_put(&f->kv_index, name, key.len, (int32_t)i, NULL))
        return fm_fail(c->err, FM_ERR_NOMEM, "GGUF: out of memory indexing keys");
    return FM_OK;
}

/* general.alignment: u32, a power of two; default 32 when absent. */
static fm_status read_alignment(gguf_file *f, fm_error *err)
{
    const gguf_kv *kv = gguf_find_kv(f, "general.alignment");
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!kv)
        return FM_OK;
    if (kv->type != GGUF_VT_UINT32)
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF key 'general.alignment' has type %s, expected u32",
                       gguf_vtype_name(kv->type));
    uint32_t a = load_u32(kv->value);
    if (a == 0 || (a & (a - 1)) != 0)
        return fm_fail(err, FM_ERR_PARSE,
                       "GGUF key 'general.alignment' = %u is not a power of two", a);
    f->alignment = a;
    return FM_OK;
}

/* ------------------------------------------------------------------------ */
/* Tensor infos                                                              */
/* ------------------------------------------------------------------------ */

static fm_status tensor_shape(cursor *c, gguf_tensor *t)
{
    fm_status st = read_u32(c, &t->n_dims, "tensor n_dims");
    if (st)
        return fm_wrap(c->err, st, "GGUF tensor '%s'", t->name);
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF tensor '%s': n_dims %u is outside 1..%d",
                       t->name, t->n_dims, GGUF_MAX_DIMS);
    t->n_elements = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        st = read_u64(c, &t->ne[d], "tensor dimension");
        if (st)
            return fm_wrap(c->err, st, "GGUF tensor '%s'", t->name);
        /* 2^62 bounds the element count so byte sizes cannot overflow. */
        if (t->ne[d] == 0 || t->ne[d] > (UINT64_C(1) << 62) / t->n_elements)
            return fm_fail(c->err, FM_ERR_PARSE, "GGUF tensor '%s': dimension %u = %llu is invalid",
                           t->name, d, (unsigned long long)t->ne[d]);
        t->n_elements *= t->ne[d];
    }
    return FM_OK;
}

static fm_status tensor_type(cursor *c, gguf_tensor *t, uint64_t *rel_offset)
{
    fm_status st = read_u32(c, &t->type, "tensor type");
    if (!st)
        st = read_u64(c, rel_offset, "tensor offset");
    if (st)
        return fm_wrap(c->err, st, "GGUF tensor '%s'", t->name);
    const ttype_info *ti = ttype_lookup(t->type);
    if (!ti)
        return fm_fail(c->err, FM_ERR_UNSUPPORTED, "GGUF tensor '%s': unknown tensor type id %u",
                       t->name, t->type);
    if (t->ne[0] % ti->block)
        return fm_fail(c->err, FM_ERR_PARSE,
                       "GGUF tensor '%s': ne[0] = %llu is not a multiple of the %s block size %u",
                       t->name, (unsigned long long)t->ne[0], ti->name, ti->block);
    t->n_bytes = t->n_elements / ti->block * ti->bytes;
    return FM_OK;
}

static fm_status parse_tensor_info(cursor *c, gguf_file *f, uint64_t i, uint64_t *rel_offset)
{
    gguf_tensor *t = &f->tensors[i];
    gguf_str name;
    char *copy;
    fm_status st = read_str(c, &name, "tensor name");
    if (st)
        return fm_wrap(c->err, st, "GGUF tensor info #%llu", (unsigned long long)i);
    if (name.len == 0 || name.len > GGUF_MAX_NAME)
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF tensor info #%llu: name length %llu is outside 1..%d",
                       (unsigned long long)i, (unsigned long long)name.len, GGUF_MAX_NAME);
    st = copy_name(c, name, "tensor name", &copy);
    if (st)
        return st;
    t->name = copy;
    st = tensor_shape(c, t);
    if (!st)
        st = tensor_type(c, t, rel_offset);
    if (st)
        return st;
    int32_t previous;
    if (fm_strmap_get(&f->tensor_index, copy, name.len, &previous))
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF tensor '%s' appears twice", copy);
    if (!fm_strmap_put(&f->tensor_index, copy, name.len, (int32_t)i, NULL))
        return fm_fail(c->err, FM_ERR_NOMEM, "GGUF: out of memory indexing tensors");
    return FM_OK;
}

/* Places every tensor inside the data blob, aligned and without overlaps. */
static int cmp_by_offset(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static fm_status place_tensors(gguf_file *f, const uint64_t *rel, fm_error *err)
{
    uint64_t blob = f->size - f->data_start;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (rel[i] % f->alignment)
            return fm_fail(err, FM_ERR_PARSE,
                           "GGUF tensor '%s': offset %llu is not a multiple of the alignment %u",
                           t->name, (unsigned long long)rel[i], f->alignment);
        if (rel[i] > blob || t->n_bytes > blob - rel[i])
            return fm_fail(err, FM_ERR_PARSE,
                           "GGUF tensor '%s': data [%llu, +%llu) runs past the %llu-byte data section",
                           t->name, (unsigned long long)rel[i], (unsigned long long)t->n_bytes,
                           (unsigned long long)blob);
        t->offset = f->data_start + rel[i];
        t->data = f->data + t->offset;
    }
    if (f->n_tensors < 2)
        return FM_OK;
    const gguf_tensor **order = malloc(f->n_tensors * sizeof *order);
    if (!order)
        return fm_fail(err, FM_ERR_NOMEM, "GGUF: out of memory checking tensor overlap");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        order[i] = &f->tensors[i];
    qsort(order, f->n_tensors, sizeof *order, cmp_by_offset);
    fm_status st = FM_OK;
    for (uint64_t i = 1; i < f->n_tensors && !st; i++)
        if (order[i - 1]->offset + order[i - 1]->n_bytes > order[i]->offset)
            st = fm_fail(err, FM_ERR_PARSE, "GGUF tensors '%s' and '%s' overlap",
                         order[i - 1]->name, order[i]->name);
    free(order);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Open / close                                                              */
/* ------------------------------------------------------------------------ */

static fm_status parse_header(cursor *c, gguf_file *f)
{
    uint32_t magic;
    fm_status st = read_u32(c, &magic, "magic");
    if (st)
        return st;
    if (magic != GGUF_MAGIC)
        return fm_fail(c->err, FM_ERR_PARSE, "not a GGUF file: magic is 0x%08x, expected 0x%08x",
                       magic, GGUF_MAGIC);
    st = read_u32(c, &f->version, "version");
    if (st)
        return st;
    if (f->version == 1)
        return fm_fail(c->err, FM_ERR_UNSUPPORTED,
                       "GGUF version 1 (32-bit counts) is not supported; convert to version 3");
    if (f->version != 2 && f->version != 3) {
        uint32_t swapped = __builtin_bswap32(f->version);
        return fm_fail(c->err, FM_ERR_UNSUPPORTED, "GGUF version %u is not supported%s", f->version,
                       (swapped == 2 || swapped == 3) ? " (big-endian file?)" : " (want 2 or 3)");
    }
    st = read_u64(c, &f->n_tensors, "tensor count");
    if (!st)
        st = read_u64(c, &f->n_kv, "KV count");
    if (st)
        return st;
    /* A KV takes >= 13 bytes (key length, type, 1-byte value) and a tensor
     * info >= 32 (name length, n_dims, one dim, type, offset). */
    if (f->n_kv > remaining(c) / 13)
        return fm_fail(c->err, FM_ERR_PARSE, "GGUF: KV count %llu is impossible for a %llu-byte file",
                       (unsigned long long)f->n_kv, (unsigned long long)c->size);
    if (f->n_tensors > remaining(c) / 32)
        return fm_fail(c->err, FM_ERR_PARSE,
                       "GGUF: tensor count %llu is impossible for a %llu-byte file",
                       (unsigned long long)f->n_tensors, (unsigned long long)c->size);
    return FM_OK;
}

static fm_status alloc_tables(gguf_file *f, fm_error *err)
{
    f->kvs = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kvs);
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->kvs || !f->tensors || !fm_strmap_init(&f->kv_index, f->n_kv) ||
        !fm_strmap_init(&f->tensor_index, f->n_tensors))
        return fm_fail(err, FM_ERR_NOMEM, "GGUF: out of memory for %llu keys and %llu tensors",
                       (unsigned long long)f->n_kv, (unsigned long long)f->n_tensors);
    return FM_OK;
}

static fm_status parse_file(gguf_file *f, fm_error *err)
{
    cursor c = { f->data, 0, f->size, err };
    uint64_t *rel = NULL;
    fm_status st = parse_header(&c, f);
    if (!st)
        st = alloc_tables(f, err);
    for (uint64_t i = 0; !st && i < f->n_kv; i++)
        st = parse_kv(&c, f, i);
    if (!st)
        st = read_alignment(f, err);
    if (!st && !(rel = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *rel)))
        st = fm_fail(err, FM_ERR_NOMEM, "GGUF: out of memory for tensor offsets");
    for (uint64_t i = 0; !st && i < f->n_tensors; i++)
        st = parse_tensor_info(&c, f, i, &rel[i]);
    if (!st) {
        f->data_start = c.pos + (f->alignment - c.pos % f->alignment) % f->alignment;
        if (f->data_start > f->size && f->n_tensors)
            st = fm_fail(err, FM_ERR_PARSE, "GGUF: data section starts at %llu, past the end (%llu)",
                         (unsigned long long)f->data_start, (unsigned long long)f->size);
        else if (f->data_start > f->size)
            f->data_start = f->size;
    }
    if (!st)
        st = place_tensors(f, rel, err);
    free(rel);
    return st;
}

static bool host_is_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static fm_status open_common(gguf_file *f, gguf_file **out, fm_error *err)
{
    fm_status st = host_is_little_endian()
                       ? parse_file(f, err)
                       : fm_fail(err, FM_ERR_UNSUPPORTED, "GGUF reader needs a little-endian host");
    if (st) {
        gguf_close(f);
        return st;
    }
    *out = f;
    return FM_OK;
}

fm_status gguf_open_memory(const void *data, uint64_t size, gguf_file **out, fm_error *err)
{
    if (!out || (!data && size))
        return fm_fail(err, FM_ERR_ARG, "gguf_open_memory: NULL argument");
    *out = NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f)
        return fm_fail(err, FM_ERR_NOMEM, "GGUF: out of memory");
    f->data = data;
    f->size = size;
    return open_common(f, out, err);
}

/* What a path is when it is not a regular file, for messages. */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "a special file";
}

fm_status gguf_open(const char *path, gguf_file **out, fm_error *err)
{
    struct stat sb;
    if (!path || !out)
        return fm_fail(err, FM_ERR_ARG, "gguf_open: NULL argument");
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO without a writer would otherwise wait
     * forever; anything but a regular file is refused before mapping. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return fm_fail(err, FM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0) {
        int saved = errno;
        close(fd);
        return fm_fail(err, FM_ERR_IO, "cannot stat '%s': %s", path, strerror(saved));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fm_fail(err, FM_ERR_IO, "'%s' is %s, not a regular file", path, file_kind(sb.st_mode));
    }
    if (sb.st_size < 24) {
        close(fd);
        return fm_fail(err, FM_ERR_PARSE, "'%s' is %lld bytes, too small for a GGUF header", path,
                       (long long)sb.st_size);
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int saved = errno;
    close(fd);
    if (map == MAP_FAILED)
        return fm_fail(err, FM_ERR_IO, "cannot mmap '%s': %s", path, strerror(saved));
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        munmap(map, (size_t)sb.st_size);
        return fm_fail(err, FM_ERR_NOMEM, "GGUF: out of memory");
    }
    f->data = map;
    f->size = (uint64_t)sb.st_size;
    f->mapped = true;
    fm_status st = open_common(f, out, err);
    return st ? fm_wrap(err, st, "%s", path) : FM_OK;
}

void gguf_close(gguf_file *f)
{
    if (!f)
        return;
    for (uint64_t i = 0; f->kvs && i < f->n_kv; i++)
        free((char *)f->kvs[i].key);
    for (uint64_t i = 0; f->tensors && i < f->n_tensors; i++)
        free((char *)f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    fm_strmap_free(&f->kv_index);
    fm_strmap_free(&f->tensor_index);
    if (f->mapped)
        munmap((void *)f->data, f->size);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                 */
/* ------------------------------------------------------------------------ */

uint32_t gguf_version(const gguf_file *f) { return f->version; }
uint32_t gguf_alignment(const gguf_file *f) { return f->alignment; }
uint64_t gguf_n_kv(const gguf_file *f) { return f->n_kv; }
uint64_t gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }

const gguf_kv *gguf_kv_at(const gguf_file *f, uint64_t i)
{
    return i < f->n_kv ? &f->kvs[i] : NULL;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key)
{
    int32_t i;
    return fm_strmap_get(&f->kv_index, key, strlen(key), &i) ? &f->kvs[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    int32_t i;
    return fm_strmap_get(&f->tensor_index, name, strlen(name), &i) ? &f->tensors[i] : NULL;
}

static fm_status find_typed(const gguf_file *f, const char *key, const gguf_kv **kv, fm_error *err)
{
    *kv = gguf_find_kv(f, key);
    if (!*kv)
        return fm_fail(err, FM_ERR_MISSING, "GGUF key '%s' is missing", key);
    return FM_OK;
}

/* Reads an integer of any width as int64 sign/magnitude; false if not integer. */
static bool load_int(gguf_vtype type, const uint8_t *p, bool *negative, uint64_t *mag)
{
    int64_t s = 0;
    uint64_t u = 0;
    bool is_signed = true;
    switch (type) {
    case GGUF_VT_UINT8: u = p[0]; is_signed = false; break;
    case GGUF_VT_UINT16: { uint16_t v; memcpy(&v, p, 2); u = v; is_signed = false; break; }
    case GGUF_VT_UINT32: u = load_u32(p); is_signed = false; break;
    case GGUF_VT_UINT64: u = load_u64(p); is_signed = false; break;
    case GGUF_VT_INT8: s = (int8_t)p[0]; break;
    case GGUF_VT_INT16: { int16_t v; memcpy(&v, p, 2); s = v; break; }
    case GGUF_VT_INT32: { int32_t v; memcpy(&v, p, 4); s = v; break; }
    case GGUF_VT_INT64: { int64_t v; memcpy(&v, p, 8); s = v; break; }
    default: return false;
    }
    *negative = is_signed && s < 0;
    *mag = is_signed ? (s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s) : u;
    return true;
}

fm_status gguf_get_uint(const gguf_file *f, const char *key, uint64_t max, uint64_t *out,
                        fm_error *err)
{
    const gguf_kv *kv;
    bool neg;
    uint64_t v;
    fm_status st = find_typed(f, key, &kv, err);
    if (st)
        return st;
    if (!load_int(kv->type, kv->value, &neg, &v))
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' has type %s, expected an integer", key,
                       gguf_vtype_name(kv->type));
    if (neg || v > max)
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' = %s%llu is outside 0..%llu", key,
                       neg ? "-" : "", (unsigned long long)v, (unsigned long long)max);
    *out = v;
    return FM_OK;
}

fm_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, fm_error *err)
{
    uint64_t v;
    fm_status st = gguf_get_uint(f, key, UINT32_MAX, &v, err);
    if (!st)
        *out = (uint32_t)v;
    return st;
}

fm_status gguf_get_f32(const gguf_file *f, const char *key, float *out, fm_error *err)
{
    const gguf_kv *kv;
    fm_status st = find_typed(f, key, &kv, err);
    if (st)
        return st;
    if (kv->type == GGUF_VT_FLOAT32) {
        memcpy(out, kv->value, 4);
    } else if (kv->type == GGUF_VT_FLOAT64) {
        double d;
        memcpy(&d, kv->value, 8);
        *out = (float)d;
    } else {
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' has type %s, expected f32", key,
                       gguf_vtype_name(kv->type));
    }
    return FM_OK;
}

fm_status gguf_get_bool(const gguf_file *f, const char *key, bool *out, fm_error *err)
{
    const gguf_kv *kv;
    fm_status st = find_typed(f, key, &kv, err);
    if (st)
        return st;
    if (kv->type != GGUF_VT_BOOL)
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' has type %s, expected bool", key,
                       gguf_vtype_name(kv->type));
    *out = kv->value[0] != 0;
    return FM_OK;
}

fm_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, fm_error *err)
{
    const gguf_kv *kv;
    fm_status st = find_typed(f, key, &kv, err);
    if (st)
        return st;
    if (kv->type != GGUF_VT_STRING)
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' has type %s, expected string", key,
                       gguf_vtype_name(kv->type));
    /* Lengths were bounds-checked while parsing. */
    out->len = load_u64(kv->value);
    out->ptr = (const char *)kv->value + 8;
    return FM_OK;
}

static fm_status find_array(const gguf_file *f, const char *key, gguf_vtype elem,
                            const gguf_kv **kv, fm_error *err)
{
    fm_status st = find_typed(f, key, kv, err);
    if (st)
        return st;
    bool int_ok = elem == GGUF_VT_INT32 && (*kv)->elem_type != GGUF_VT_STRING &&
                  (*kv)->elem_type != GGUF_VT_ARRAY && vtype_size[(*kv)->elem_type];
    if ((*kv)->type != GGUF_VT_ARRAY || ((*kv)->elem_type != elem && !int_ok))
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s' has type %s[%s], expected %s[%s]", key,
                       gguf_vtype_name((*kv)->type),
                       (*kv)->type == GGUF_VT_ARRAY ? gguf_vtype_name((*kv)->elem_type) : "",
                       gguf_vtype_name(GGUF_VT_ARRAY), gguf_vtype_name(elem));
    return FM_OK;
}

fm_status gguf_get_str_array(const gguf_file *f, const char *key, gguf_str **out, uint64_t *n,
                             fm_error *err)
{
    const gguf_kv *kv;
    fm_status st = find_array(f, key, GGUF_VT_STRING, &kv, err);
    if (st)
        return st;
    gguf_str *items = malloc((kv->count ? kv->count : 1) * sizeof *items);
    if (!items)
        return fm_fail(err, FM_ERR_NOMEM, "GGUF key '%s': out of memory for %llu strings", key,
                       (unsigned long long)kv->count);
    const uint8_t *p = kv->value;
    for (uint64_t i = 0; i < kv->count; i++) {
        items[i].len = load_u64(p);
        items[i].ptr = (const char *)p + 8;
        p += 8 + items[i].len;
    }
    *out = items;
    *n = kv->count;
    return FM_OK;
}

fm_status gguf_get_i32_array(const gguf_file *f, const char *key, int32_t **out, uint64_t *n,
                             fm_error *err)
{
    const gguf_kv *kv;
    fm_status st = find_array(f, key, GGUF_VT_INT32, &kv, err);
    if (st)
        return st;
    int32_t *items = malloc((kv->count ? kv->count : 1) * sizeof *items);
    if (!items)
        return fm_fail(err, FM_ERR_NOMEM, "GGUF key '%s': out of memory", key);
    for (uint64_t i = 0; i < kv->count; i++) {
        bool neg;
        uint64_t mag;
        const uint8_t *p = kv->value + i * vtype_size[kv->elem_type];
        if (!load_int(kv->elem_type, p, &neg, &mag) || mag > (neg ? 0x80000000u : 0x7fffffffu)) {
            free(items);
            return fm_fail(err, FM_ERR_MISMATCH, "GGUF key '%s': element %llu is not an int32",
                           key, (unsigned long long)i);
        }
        items[i] = neg ? (int32_t)(0 - (int64_t)mag) : (int32_t)mag;
    }
    *out = items;
    *n = kv->count;
    return FM_OK;
}

static void format_shape(char *buf, size_t size, uint32_t n_dims, const uint64_t *ne)
{
    size_t o = 0;
    o += (size_t)snprintf(buf, size, "(");
    for (uint32_t d = 0; d < n_dims && o < size; d++)
        o += (size_t)snprintf(buf + o, size - o, "%s%llu", d ? ", " : "", (unsigned long long)ne[d]);
    if (o < size)
        snprintf(buf + o, size - o, ")");
}

fm_status gguf_find_tensor_shaped(const gguf_file *f, const char *name, uint32_t n_dims,
                                  const uint64_t *ne, const gguf_tensor **out, fm_error *err)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    char want[128], got[128];
    if (!t)
        return fm_fail(err, FM_ERR_MISSING, "GGUF tensor '%s' is missing", name);
    bool same = t->n_dims == n_dims;
    for (uint32_t d = 0; same && d < n_dims; d++)
        same = t->ne[d] == ne[d];
    if (!same) {
        format_shape(want, sizeof want, n_dims, ne);
        format_shape(got, sizeof got, t->n_dims, t->ne);
        return fm_fail(err, FM_ERR_MISMATCH, "GGUF tensor '%s' has shape %s, expected %s", name,
                       got, want);
    }
    *out = t;
    return FM_OK;
}
