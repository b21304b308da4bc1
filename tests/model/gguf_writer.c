#include "gguf_writer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "gguf_writer: out of memory\n");
        abort();
    }
    return q;
}

static void put(gw_buf *b, const void *src, size_t n)
{
    if (n == 0)
        return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_u32(gw_buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(gw_buf *b, uint64_t v) { put(b, &v, 8); }

static void put_str(gw_buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

void gw_init(gguf_writer *w, uint32_t alignment)
{
    memset(w, 0, sizeof *w);
    w->version = 3;
    w->alignment = alignment ? alignment : 32;
}

void gw_free(gguf_writer *w)
{
    free(w->kv.p);
    free(w->info.p);
    free(w->data.p);
    memset(w, 0, sizeof *w);
}

static void key_head(gguf_writer *w, const char *key, uint32_t type)
{
    put_str(&w->kv, key);
    put_u32(&w->kv, type);
    w->n_kv++;
}

void gw_u32(gguf_writer *w, const char *key, uint32_t v) { key_head(w, key, 4); put_u32(&w->kv, v); }
void gw_f32(gguf_writer *w, const char *key, float v) { key_head(w, key, 6); put(&w->kv, &v, 4); }

void gw_bool(gguf_writer *w, const char *key, int v)
{
    uint8_t b = v ? 1 : 0;
    key_head(w, key, 7);
    put(&w->kv, &b, 1);
}

void gw_str(gguf_writer *w, const char *key, const char *v)
{
    key_head(w, key, 8);
    put_str(&w->kv, v);
}

void gw_str_array(gguf_writer *w, const char *key, const char *const *items, size_t n)
{
    key_head(w, key, 9);
    put_u32(&w->kv, 8);
    put_u64(&w->kv, n);
    for (size_t i = 0; i < n; i++)
        put_str(&w->kv, items[i]);
}

void gw_i32_array(gguf_writer *w, const char *key, const int32_t *items, size_t n)
{
    key_head(w, key, 9);
    put_u32(&w->kv, 5);
    put_u64(&w->kv, n);
    put(&w->kv, items, n * 4);
}

void gw_raw(gguf_writer *w, const char *key, uint32_t type, const void *bytes, size_t n)
{
    key_head(w, key, type);
    put(&w->kv, bytes, n);
}

void gw_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
               const uint64_t *ne, const void *data, size_t n_bytes)
{
    static const uint8_t zeros[256];
    if (w->n_tensors >= GW_MAX_TENSORS)
        abort();
    while (w->data.n % w->alignment)
        put(&w->data, zeros, 1);
    w->info_start[w->n_tensors] = w->info.n;
    put_str(&w->info, name);
    put_u32(&w->info, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        put_u64(&w->info, ne[d]);
    put_u32(&w->info, type);
    w->info_offset_field[w->n_tensors] = w->info.n;
    put_u64(&w->info, w->data.n);
    put(&w->data, data, n_bytes);
    w->n_tensors++;
}

uint16_t gw_float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xffu, man = x & 0x7fffffu;
    if (exp == 0xff)
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {  /* subnormal half: round man * 2^(e-1) to an integer */
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e), half = 1u << (shift - 1);
        uint32_t r = man >> shift, rem = man & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1)))
        r++;  /* may carry into the exponent, which is still correct */
    return (uint16_t)(sign | r);
}

static void put_half(uint8_t *p, float f)
{
    uint16_t h = gw_float_to_half(f);
    memcpy(p, &h, 2);
}

size_t gw_encoded_size(uint32_t type, size_t n)
{
    switch (type) {
    case 0: return n * 4;
    case 1: return n * 2;
    case 2: return n / 32 * 18;
    case 3: return n / 32 * 20;
    case 8: return n / 32 * 34;
    default: return 0;
    }
}

static void encode_q8_0(const float *x, uint8_t *o)
{
    float amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
    put_half(o, d);
    for (int j = 0; j < 32; j++)
        o[2 + j] = (uint8_t)(int8_t)lrintf(x[j] * id);
}

static void encode_q4_0(const float *x, uint8_t *o)
{
    float max = 0;  /* signed value of largest magnitude maps to -8 */
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > fabsf(max))
            max = x[j];
    float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
    put_half(o, d);
    for (int j = 0; j < 16; j++) {
        int a = (int)lrintf(x[j] * id) + 8, b = (int)lrintf(x[j + 16] * id) + 8;
        a = a < 0 ? 0 : a > 15 ? 15 : a;
        b = b < 0 ? 0 : b > 15 ? 15 : b;
        o[2 + j] = (uint8_t)(a | (b << 4));
    }
}

static void encode_q4_1(const float *x, uint8_t *o)
{
    float lo = x[0], hi = x[0];
    for (int j = 1; j < 32; j++) {
        lo = fminf(lo, x[j]);
        hi = fmaxf(hi, x[j]);
    }
    float d = (hi - lo) / 15.0f, id = d ? 1.0f / d : 0.0f;
    put_half(o, d);
    put_half(o + 2, lo);
    for (int j = 0; j < 16; j++) {
        int a = (int)lrintf((x[j] - lo) * id), b = (int)lrintf((x[j + 16] - lo) * id);
        a = a < 0 ? 0 : a > 15 ? 15 : a;
        b = b < 0 ? 0 : b > 15 ? 15 : b;
        o[4 + j] = (uint8_t)(a | (b << 4));
    }
}

size_t gw_encode(uint32_t type, const float *x, size_t n, uint8_t *out)
{
    size_t bs = type == 2 ? 18 : type == 3 ? 20 : 34;
    switch (type) {
    case 0: memcpy(out, x, n * 4); break;
    case 1: for (size_t i = 0; i < n; i++) put_half(out + 2 * i, x[i]); break;
    case 2: for (size_t b = 0; b < n / 32; b++) encode_q4_0(x + 32 * b, out + bs * b); break;
    case 3: for (size_t b = 0; b < n / 32; b++) encode_q4_1(x + 32 * b, out + bs * b); break;
    case 8: for (size_t b = 0; b < n / 32; b++) encode_q8_0(x + 32 * b, out + bs * b); break;
    default: return 0;
    }
    return gw_encoded_size(type, n);
}

void gw_tensor_f32(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                   const uint64_t *ne, const float *values)
{
    size_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++)
        n *= ne[d];
    uint8_t *buf = xrealloc(NULL, gw_encoded_size(type, n));
    size_t bytes = gw_encode(type, values, n, buf);
    gw_tensor(w, name, type, n_dims, ne, buf, bytes);
    free(buf);
}

uint8_t *gw_finish(gguf_writer *w, size_t *size)
{
    gw_buf out = { 0 };
    static const uint8_t zeros[256];
    put_u32(&out, 0x46554747u);
    put_u32(&out, w->version);
    put_u64(&out, w->n_tensors);
    put_u64(&out, w->n_kv);
    w->kv_start = out.n;
    put(&out, w->kv.p, w->kv.n);
    size_t info_base = out.n;
    put(&out, w->info.p, w->info.n);
    while (out.n % w->alignment)
        put(&out, zeros, 1);
    put(&out, w->data.p, w->data.n);
    for (uint32_t i = 0; i < w->n_tensors; i++) {
        gw_tensor_pos *p = &w->pos[i];
        uint64_t name_len;
        uint32_t n_dims;
        p->name_len_at = info_base + w->info_start[i];
        memcpy(&name_len, out.p + p->name_len_at, 8);
        p->n_dims_at = p->name_len_at + 8 + name_len;
        memcpy(&n_dims, out.p + p->n_dims_at, 4);
        p->ne_at = p->n_dims_at + 4;
        p->type_at = p->ne_at + 8 * n_dims;
        p->offset_at = info_base + w->info_offset_field[i];
    }
    *size = out.n;
    return out.p;
}
