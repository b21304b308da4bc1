/*
 * Test helper: builds GGUF files in memory (our own writer, per ggml
 * docs/gguf.md) plus reference quantisers, so tests can make small valid
 * files and then corrupt chosen fields.  Aborts on out-of-memory (tests only).
 */
#ifndef FM_TEST_GGUF_WRITER_H
#define FM_TEST_GGUF_WRITER_H

#include <stddef.h>
#include <stdint.h>

typedef struct gw_tensor_pos {
    size_t name_len_at, n_dims_at, ne_at, type_at, offset_at;  /* file offsets of fields */
} gw_tensor_pos;

typedef struct gw_buf {
    uint8_t *p;
    size_t n, cap;
} gw_buf;

#define GW_MAX_TENSORS 512

typedef struct gguf_writer {
    uint32_t version, alignment;
    uint32_t n_kv, n_tensors;
    gw_buf kv, info, data;
    size_t info_offset_field[GW_MAX_TENSORS]; /* offset of each tensor's offset field in info */
    size_t info_start[GW_MAX_TENSORS];
    gw_tensor_pos pos[GW_MAX_TENSORS];        /* filled by gw_finish */
    size_t kv_start;                           /* filled by gw_finish: first KV */
} gguf_writer;

void gw_init(gguf_writer *w, uint32_t alignment);
void gw_free(gguf_writer *w);
void gw_u32(gguf_writer *w, const char *key, uint32_t v);
void gw_f32(gguf_writer *w, const char *key, float v);
void gw_bool(gguf_writer *w, const char *key, int v);
void gw_str(gguf_writer *w, const char *key, const char *v);
void gw_str_array(gguf_writer *w, const char *key, const char *const *items, size_t n);
void gw_i32_array(gguf_writer *w, const char *key, const int32_t *items, size_t n);
/* A key with raw value bytes after the type word (for odd values). */
void gw_raw(gguf_writer *w, const char *key, uint32_t type, const void *bytes, size_t n);
/* Adds a tensor; data must be n_bytes of already encoded blocks. */
void gw_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
               const uint64_t *ne, const void *data, size_t n_bytes);
/* Adds an f32 tensor after encoding it as type (F32, F16, Q8_0, Q4_0, Q4_1). */
void gw_tensor_f32(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                   const uint64_t *ne, const float *values);
/* Serialises; returns a malloc'ed buffer and fills w->pos / w->kv_start. */
uint8_t *gw_finish(gguf_writer *w, size_t *size);

/* Encoders (round to nearest); return bytes written for n values. */
uint16_t gw_float_to_half(float f);
size_t gw_encode(uint32_t type, const float *x, size_t n, uint8_t *out);
size_t gw_encoded_size(uint32_t type, size_t n);

#endif
