/* GGUF tensor dequantisation to f32 (block layouts: MODEL_NOTES section 4,
 * ggml-common.h).  Split from gguf.c, which parses and validates. */
#include <string.h>

#include "gguf.h"

/* ------------------------------------------------------------------------ */
/* Dequantisation (block layouts: MODEL_NOTES section 4, ggml-common.h)      */
/* ------------------------------------------------------------------------ */

float fm_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    float f;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in f32 */
        f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (man << 13);     /* inf, NaN (payload kept) */
    else
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}

static float load_half(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return fm_half_to_float(h);
}

static void deq_f32(const uint8_t *src, uint64_t n, float *out)
{
    memcpy(out, src, n * sizeof(float));
}

static void deq_f16(const uint8_t *src, uint64_t n, float *out)
{
    for (uint64_t i = 0; i < n; i++)
        out[i] = load_half(src + 2 * i);
}

static void deq_q8_0(const uint8_t *src, uint64_t n, float *out)
{
    for (uint64_t b = 0; b < n / 32; b++, src += 34, out += 32) {
        float d = load_half(src);
        for (int j = 0; j < 32; j++)
            out[j] = d * (float)(int8_t)src[2 + j];
    }
}

/* Low nibbles are elements 0..15, high nibbles 16..31 (not interleaved). */
static void deq_q4_0(const uint8_t *src, uint64_t n, float *out)
{
    for (uint64_t b = 0; b < n / 32; b++, src += 18, out += 32) {
        float d = load_half(src);
        for (int j = 0; j < 16; j++) {
            out[j] = (float)((int)(src[2 + j] & 15) - 8) * d;
            out[j + 16] = (float)((int)(src[2 + j] >> 4) - 8) * d;
        }
    }
}

static void deq_q4_1(const uint8_t *src, uint64_t n, float *out)
{
    for (uint64_t b = 0; b < n / 32; b++, src += 20, out += 32) {
        float d = load_half(src), m = load_half(src + 2);
        for (int j = 0; j < 16; j++) {
            out[j] = (float)(src[4 + j] & 15) * d + m;
            out[j + 16] = (float)(src[4 + j] >> 4) * d + m;
        }
    }
}

bool gguf_can_dequantize(uint32_t type)
{
    return type == GGUF_T_F32 || type == GGUF_T_F16 || type == GGUF_T_Q8_0 ||
           type == GGUF_T_Q4_0 || type == GGUF_T_Q4_1;
}

fm_status gguf_dequantize_rows(const gguf_tensor *t, uint64_t row0, uint64_t n_rows, float *out,
                               fm_error *err)
{
    if (!t || !out)
        return fm_fail(err, FM_ERR_ARG, "gguf_dequantize_rows: NULL argument");
    if (!gguf_can_dequantize(t->type))
        return fm_fail(err, FM_ERR_UNSUPPORTED,
                       "tensor '%s' has type %s (id %u); only F32, F16, Q4_0, Q4_1 and Q8_0 can be "
                       "dequantised", t->name, gguf_ttype_name(t->type), t->type);
    uint64_t total_rows = t->n_elements / t->ne[0];
    if (row0 > total_rows || n_rows > total_rows - row0)
        return fm_fail(err, FM_ERR_ARG, "tensor '%s': rows [%llu, +%llu) exceed its %llu rows",
                       t->name, (unsigned long long)row0, (unsigned long long)n_rows,
                       (unsigned long long)total_rows);
    uint32_t block, bytes;
    gguf_type_block(t->type, &block, &bytes);
    uint64_t row_bytes = t->ne[0] / block * bytes;
    const uint8_t *src = t->data + row0 * row_bytes;
    uint64_t n = n_rows * t->ne[0];
    switch (t->type) {
    case GGUF_T_F32: deq_f32(src, n, out); break;
    case GGUF_T_F16: deq_f16(src, n, out); break;
    case GGUF_T_Q8_0: deq_q8_0(src, n, out); break;
    case GGUF_T_Q4_0: deq_q4_0(src, n, out); break;
    default: deq_q4_1(src, n, out); break;
    }
    return FM_OK;
}

fm_status gguf_dequantize(const gguf_tensor *t, float *out, fm_error *err)
{
    if (!t)
        return fm_fail(err, FM_ERR_ARG, "gguf_dequantize: NULL tensor");
    return gguf_dequantize_rows(t, 0, t->n_elements / t->ne[0], out, err);
}
