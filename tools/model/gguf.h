/*
 * Read-only GGUF (v2, v3) reader: the file is mmap'ed, every count, length,
 * offset and shape is checked against the file size while parsing, and the
 * tensor data is dequantised to f32 on request.  Layout per ggml docs/gguf.md;
 * summary in shared/docs/MODEL_NOTES.md section 3.  Little-endian hosts only.
 *
 * All strings handed out (keys, tensor names) are NUL-terminated copies that
 * live as long as the gguf_file.  String *values* are (pointer, length) views
 * into the mapping and are not NUL-terminated.
 */
#ifndef FM_GGUF_H
#define FM_GGUF_H

#include <stdbool.h>
#include <stdint.h>

#include "fm_common.h"

#define GGUF_MAGIC 0x46554747u   /* "GGUF" read as a little-endian u32 */
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_NAME 255        /* longest accepted tensor name, bytes */
#define GGUF_MAX_ARRAY_DEPTH 8   /* nesting limit for arrays of arrays */
#define GGUF_DEFAULT_ALIGNMENT 32

typedef enum gguf_vtype {
    GGUF_VT_UINT8 = 0, GGUF_VT_INT8, GGUF_VT_UINT16, GGUF_VT_INT16,
    GGUF_VT_UINT32, GGUF_VT_INT32, GGUF_VT_FLOAT32, GGUF_VT_BOOL,
    GGUF_VT_STRING, GGUF_VT_ARRAY, GGUF_VT_UINT64, GGUF_VT_INT64,
    GGUF_VT_FLOAT64, GGUF_VT_COUNT_
} gguf_vtype;

/* ggml tensor type ids (the subset whose block size this reader knows). */
typedef enum gguf_ttype {
    GGUF_T_F32 = 0, GGUF_T_F16 = 1, GGUF_T_Q4_0 = 2, GGUF_T_Q4_1 = 3,
    GGUF_T_Q5_0 = 6, GGUF_T_Q5_1 = 7, GGUF_T_Q8_0 = 8, GGUF_T_Q8_1 = 9,
    GGUF_T_Q2_K = 10, GGUF_T_Q3_K = 11, GGUF_T_Q4_K = 12, GGUF_T_Q5_K = 13,
    GGUF_T_Q6_K = 14, GGUF_T_Q8_K = 15, GGUF_T_I8 = 24, GGUF_T_I16 = 25,
    GGUF_T_I32 = 26, GGUF_T_I64 = 27, GGUF_T_F64 = 28, GGUF_T_BF16 = 30
} gguf_ttype;

typedef struct gguf_str {
    const char *ptr;     /* into the mapping, not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    const char *key;
    gguf_vtype type;
    gguf_vtype elem_type;    /* arrays only */
    uint64_t count;          /* arrays only: number of elements */
    const uint8_t *value;    /* scalar bytes, string length field, or first
                                array element (after the array header) */
} gguf_kv;

typedef struct gguf_tensor {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];  /* ne[0] is contiguous; unused dims are 1 */
    uint32_t type;               /* a gguf_ttype */
    uint64_t n_elements;
    uint64_t n_bytes;
    uint64_t offset;             /* absolute file offset of the data */
    const uint8_t *data;
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Maps and validates a file. */
fm_status gguf_open(const char *path, gguf_file **out, fm_error *err);
/* Validates a caller-owned buffer, which must outlive the gguf_file. */
fm_status gguf_open_memory(const void *data, uint64_t size, gguf_file **out, fm_error *err);
void gguf_close(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
uint32_t gguf_alignment(const gguf_file *f);
uint64_t gguf_n_kv(const gguf_file *f);
uint64_t gguf_n_tensors(const gguf_file *f);
const gguf_kv *gguf_kv_at(const gguf_file *f, uint64_t i);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i);
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

const char *gguf_vtype_name(uint32_t type);
/* Elements and bytes per block of a tensor type; false for unknown ids. */
bool gguf_type_block(uint32_t type, uint32_t *block, uint32_t *bytes);
/* "Q4_1" etc.; "unknown" for ids without a known block size. */
const char *gguf_ttype_name(uint32_t type);

/* Typed getters.  A missing key is FM_ERR_MISSING, a value of another type
 * or out of range FM_ERR_MISMATCH; the message names the key. */
fm_status gguf_get_uint(const gguf_file *f, const char *key, uint64_t max, uint64_t *out,
                        fm_error *err);   /* any integer type, 0..max */
fm_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, fm_error *err);
fm_status gguf_get_f32(const gguf_file *f, const char *key, float *out, fm_error *err);
fm_status gguf_get_bool(const gguf_file *f, const char *key, bool *out, fm_error *err);
fm_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, fm_error *err);
/* Array getters allocate *out (free with free()); *n receives the count. */
fm_status gguf_get_str_array(const gguf_file *f, const char *key, gguf_str **out, uint64_t *n,
                             fm_error *err);
fm_status gguf_get_i32_array(const gguf_file *f, const char *key, int32_t **out, uint64_t *n,
                             fm_error *err);  /* any integer element type in int32 range */

/* Finds a tensor and checks its shape: n_dims dims equal to ne[] (FM_ERR_MISSING
 * or FM_ERR_MISMATCH naming the tensor and both shapes). */
fm_status gguf_find_tensor_shaped(const gguf_file *f, const char *name, uint32_t n_dims,
                                  const uint64_t *ne, const gguf_tensor **out, fm_error *err);

/* True when gguf_dequantize handles the type (F32, F16, Q4_0, Q4_1, Q8_0). */
bool gguf_can_dequantize(uint32_t type);
/* Dequantises rows [row0, row0 + n_rows) (a row = ne[0] elements) to f32.
 * FM_ERR_UNSUPPORTED names the tensor and type for other types. */
fm_status gguf_dequantize_rows(const gguf_tensor *t, uint64_t row0, uint64_t n_rows, float *out,
                               fm_error *err);
/* Whole tensor: out holds n_elements floats. */
fm_status gguf_dequantize(const gguf_tensor *t, float *out, fm_error *err);

/* IEEE binary16 -> f32, subnormals, infinities and NaN included. */
float fm_half_to_float(uint16_t h);

#endif
