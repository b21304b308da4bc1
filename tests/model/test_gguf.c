/*
 * GGUF reader tests: a small synthetic valid file (built with gguf_writer),
 * exact block decoding, and a matrix of corrupted files that must each give
 * a clear error (status + message naming the field) and never crash.  With
 * FASA_MODEL set, also checks the real SmolLM2 file's tensor census.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "model.h"
#include "synth_model.h"

static int n_pass, n_fail;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            n_pass++;                                                      \
        } else {                                                           \
            n_fail++;                                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)

/* ------------------------------------------------------------------------ */
/* The synthetic valid file                                                  */
/* ------------------------------------------------------------------------ */

enum { T_F32, T_F16, T_Q8, T_Q40, T_Q41, N_T };

static float values[N_T][128];
static const uint64_t shapes[N_T][2] = { { 8, 1 }, { 4, 2 }, { 32, 2 }, { 64, 1 }, { 32, 3 } };
static const uint32_t types[N_T] = { 0, 1, 8, 2, 3 };
static const uint32_t dims[N_T] = { 1, 2, 2, 1, 2 };
static const char *const names[N_T] = { "t.f32", "t.f16", "t.q8_0", "t.q4_0", "t.q4_1" };

static void add_common_kvs(gguf_writer *w)
{
    static const char *const langs[] = { "en", "fr" };
    static const int32_t ints[] = { -3, 0, 7 };
    gw_str(w, "general.architecture", "llama");
    gw_u32(w, "general.alignment", 32);
    gw_u32(w, "test.u32", 42);
    gw_f32(w, "test.f32", 1.5f);
    gw_bool(w, "test.bool", 1);
    gw_str_array(w, "test.langs", langs, 2);
    gw_i32_array(w, "test.ints", ints, 3);
    /* array of 2 arrays of u8: [[1, 2], [3]] */
    uint8_t nested[] = { 9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
                         0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2,
                         0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3 };
    gw_raw(w, "test.nested", 9, nested, sizeof nested);
}

static uint8_t *make_valid(gguf_writer *w, size_t *size)
{
    gw_init(w, 32);
    add_common_kvs(w);
    for (int t = 0; t < N_T; t++) {
        size_t n = shapes[t][0] * shapes[t][1];
        for (size_t i = 0; i < n; i++)
            values[t][i] = (float)sin(1.0 + 0.37 * (double)i + t) * (t == T_F16 ? 4.0f : 1.0f);
        gw_tensor_f32(w, names[t], types[t], dims[t], shapes[t], values[t]);
    }
    return gw_finish(w, size);
}

static fm_status open_copy(const uint8_t *data, size_t size, gguf_file **f, fm_error *e)
{
    /* An exactly sized heap copy, so a sanitizer sees any over-read. */
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    fm_status st = gguf_open_memory(copy, size, f, e);
    if (st == FM_OK) {
        gguf_close(*f);
        *f = NULL;
    }
    free(copy);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Valid file                                                                */
/* ------------------------------------------------------------------------ */

static void test_valid_getters(gguf_file *f)
{
    fm_error e = { 0 };
    uint32_t u;
    float x;
    bool b;
    gguf_str s, *strs;
    int32_t *ints;
    uint64_t n;
    CHECK(gguf_version(f) == 3 && gguf_n_kv(f) == 8 && gguf_n_tensors(f) == N_T, "header counts");
    CHECK(gguf_get_u32(f, "test.u32", &u, &e) == FM_OK && u == 42, "u32");
    CHECK(gguf_get_f32(f, "test.f32", &x, &e) == FM_OK && x == 1.5f, "f32");
    CHECK(gguf_get_bool(f, "test.bool", &b, &e) == FM_OK && b, "bool");
    CHECK(gguf_get_str(f, "general.architecture", &s, &e) == FM_OK && s.len == 5 &&
              !memcmp(s.ptr, "llama", 5), "string");
    CHECK(gguf_get_str_array(f, "test.langs", &strs, &n, &e) == FM_OK && n == 2 &&
              strs[1].len == 2 && !memcmp(strs[1].ptr, "fr", 2), "string array");
    free(strs);
    CHECK(gguf_get_i32_array(f, "test.ints", &ints, &n, &e) == FM_OK && n == 3 && ints[0] == -3 &&
              ints[2] == 7, "int array");
    free(ints);
    const gguf_kv *kv = gguf_find_kv(f, "test.nested");
    CHECK(kv && kv->type == GGUF_VT_ARRAY && kv->elem_type == GGUF_VT_ARRAY && kv->count == 2,
          "nested array header");
    CHECK(gguf_get_u32(f, "missing.key", &u, &e) == FM_ERR_MISSING && strstr(e.msg, "missing.key"),
          "missing key names it: %s", e.msg);
    CHECK(gguf_get_u32(f, "test.f32", &u, &e) == FM_ERR_MISMATCH && strstr(e.msg, "test.f32"),
          "wrong type names key: %s", e.msg);
    CHECK(gguf_get_str(f, "test.u32", &s, &e) == FM_ERR_MISMATCH, "u32 is not a string");
    CHECK(gguf_get_i32_array(f, "test.langs", &ints, &n, &e) == FM_ERR_MISMATCH,
          "string array is not an int array");
}

static void test_valid_tensors(gguf_file *f)
{
    fm_error e = { 0 };
    float out[128];
    const gguf_tensor *t;
    /* Tolerances: exact for F32, half rounding for F16, about half a step
     * of each block's scale for the quantised types. */
    const float tol[N_T] = { 0.0f, 4.0f / 1024, 1.0f / 127, 1.0f / 8, 2.0f / 15 };
    for (int i = 0; i < N_T; i++) {
        t = gguf_find_tensor(f, names[i]);
        CHECK(t && t->type == types[i] && t->ne[0] == shapes[i][0], "tensor %s found", names[i]);
        if (!t)
            continue;
        CHECK(t->offset % 32 == 0, "tensor %s aligned", names[i]);
        CHECK(gguf_dequantize(t, out, &e) == FM_OK, "dequantise %s: %s", names[i], e.msg);
        float worst = 0;
        for (uint64_t j = 0; j < t->n_elements; j++)
            worst = fmaxf(worst, fabsf(out[j] - values[i][j]));
        CHECK(worst <= tol[i], "%s round trip error %g > %g", names[i], (double)worst,
              (double)tol[i]);
    }
    uint64_t want[2] = { 32, 3 }, wrong[2] = { 3, 32 };
    CHECK(gguf_find_tensor_shaped(f, "t.q4_1", 2, want, &t, &e) == FM_OK, "shape ok");
    CHECK(gguf_find_tensor_shaped(f, "t.q4_1", 2, wrong, &t, &e) == FM_ERR_MISMATCH &&
              strstr(e.msg, "t.q4_1") && strstr(e.msg, "(32, 3)") && strstr(e.msg, "(3, 32)"),
          "shape mismatch names tensor and both shapes: %s", e.msg);
    CHECK(gguf_find_tensor_shaped(f, "nope", 1, want, &t, &e) == FM_ERR_MISSING &&
              strstr(e.msg, "nope"), "missing tensor: %s", e.msg);
    t = gguf_find_tensor(f, "t.q8_0");
    CHECK(gguf_dequantize_rows(t, 1, 1, out, &e) == FM_OK && out[0] != 0.0f, "row slice");
    CHECK(gguf_dequantize_rows(t, 2, 1, out, &e) == FM_ERR_ARG, "row slice out of range");
}

/* Hand-made blocks: checks the nibble order and the d/m fields exactly. */
static void test_block_layouts(void)
{
    gguf_tensor t = { .name = "blk", .n_dims = 1, .ne = { 32, 1, 1, 1 }, .n_elements = 32 };
    uint8_t q41[20], q40[18], q80[34];
    float out[32];
    uint16_t half_d = gw_float_to_half(0.5f), half_m = gw_float_to_half(-1.0f);
    memcpy(q41, &half_d, 2);
    memcpy(q41 + 2, &half_m, 2);
    memcpy(q40, &half_d, 2);
    memcpy(q80, &half_d, 2);
    for (int j = 0; j < 16; j++)
        q41[4 + j] = q40[2 + j] = (uint8_t)((j & 15) | ((15 - j) << 4));
    for (int j = 0; j < 32; j++)
        q80[2 + j] = (uint8_t)(int8_t)(j - 16);
    bool ok41 = true, ok40 = true, ok80 = true;
    t.type = GGUF_T_Q4_1, t.n_bytes = 20, t.data = q41;
    gguf_dequantize(&t, out, NULL);
    for (int j = 0; j < 16; j++)
        ok41 &= out[j] == j * 0.5f - 1.0f && out[j + 16] == (15 - j) * 0.5f - 1.0f;
    t.type = GGUF_T_Q4_0, t.n_bytes = 18, t.data = q40;
    gguf_dequantize(&t, out, NULL);
    for (int j = 0; j < 16; j++)
        ok40 &= out[j] == (j - 8) * 0.5f && out[j + 16] == (7 - j) * 0.5f;
    t.type = GGUF_T_Q8_0, t.n_bytes = 34, t.data = q80;
    gguf_dequantize(&t, out, NULL);
    for (int j = 0; j < 32; j++)
        ok80 &= out[j] == (j - 16) * 0.5f;
    CHECK(ok41, "Q4_1 block: low nibbles are 0..15, high 16..31, x = q*d + m");
    CHECK(ok40, "Q4_0 block: x = (q - 8) * d");
    CHECK(ok80, "Q8_0 block: x = q * d");
    CHECK(fm_half_to_float(0x0001) == 0x1p-24f && fm_half_to_float(0x3c00) == 1.0f &&
              isinf(fm_half_to_float(0x7c00)) && isnan(fm_half_to_float(0x7e00)) &&
              signbit(fm_half_to_float(0x8000)) && fm_half_to_float(0x03ff) == 0x3ffp-24f,
          "f16 subnormal/inf/nan/-0");
}

/* ------------------------------------------------------------------------ */
/* Corrupted files                                                           */
/* ------------------------------------------------------------------------ */

static void patch_u32(uint8_t *p, size_t at, uint32_t v) { memcpy(p + at, &v, 4); }
static void patch_u64(uint8_t *p, size_t at, uint64_t v) { memcpy(p + at, &v, 8); }

/* Opens a patched copy and expects `want` with `needle` in the message. */
static void expect(const uint8_t *data, size_t size, fm_status want, const char *needle,
                   const char *what)
{
    gguf_file *f = NULL;
    fm_error e = { 0 };
    fm_status st = open_copy(data, size, &f, &e);
    CHECK(st == want && (!needle || strstr(e.msg, needle)), "%s: got %s '%s', want %s '%s'", what,
          fm_status_name(st), e.msg, fm_status_name(want), needle ? needle : "");
}

typedef void (*patch_fn)(uint8_t *p, const gguf_writer *w);

static void p_magic(uint8_t *p, const gguf_writer *w) { (void)w; p[0] = 'X'; }
static void p_v1(uint8_t *p, const gguf_writer *w) { (void)w; patch_u32(p, 4, 1); }
static void p_v4(uint8_t *p, const gguf_writer *w) { (void)w; patch_u32(p, 4, 4); }
static void p_vbe(uint8_t *p, const gguf_writer *w) { (void)w; patch_u32(p, 4, 0x03000000u); }
static void p_ntens(uint8_t *p, const gguf_writer *w) { (void)w; patch_u64(p, 8, 1ull << 40); }
static void p_nkv(uint8_t *p, const gguf_writer *w) { (void)w; patch_u64(p, 16, 1ull << 40); }
static void p_keylen(uint8_t *p, const gguf_writer *w) { patch_u64(p, w->kv_start, 1ull << 62); }
static void p_ttype(uint8_t *p, const gguf_writer *w) { patch_u32(p, w->pos[T_F32].type_at, 99); }
static void p_ndims0(uint8_t *p, const gguf_writer *w) { patch_u32(p, w->pos[T_F32].n_dims_at, 0); }
static void p_ndims5(uint8_t *p, const gguf_writer *w) { patch_u32(p, w->pos[T_F32].n_dims_at, 5); }
static void p_ne0(uint8_t *p, const gguf_writer *w) { patch_u64(p, w->pos[T_F32].ne_at, 0); }
static void p_nebig(uint8_t *p, const gguf_writer *w)
{
    patch_u64(p, w->pos[T_Q8].ne_at, 1ull << 40);
    patch_u64(p, w->pos[T_Q8].ne_at + 8, 1ull << 40);
}
static void p_neblock(uint8_t *p, const gguf_writer *w) { patch_u64(p, w->pos[T_Q8].ne_at, 33); }
static void p_misalign(uint8_t *p, const gguf_writer *w)
{
    uint64_t off;
    memcpy(&off, p + w->pos[T_F16].offset_at, 8);
    patch_u64(p, w->pos[T_F16].offset_at, off + 4);
}
static void p_offbig(uint8_t *p, const gguf_writer *w) { patch_u64(p, w->pos[T_Q41].offset_at, 1ull << 50); }
static void p_overlap(uint8_t *p, const gguf_writer *w) { patch_u64(p, w->pos[T_F16].offset_at, 0); }
static void p_namelen(uint8_t *p, const gguf_writer *w) { patch_u64(p, w->pos[T_F32].name_len_at, 1ull << 60); }
static void p_dupname(uint8_t *p, const gguf_writer *w) { memcpy(p + w->pos[T_F16].name_len_at + 8, "t.f32", 5); }
static void p_nulname(uint8_t *p, const gguf_writer *w) { p[w->pos[T_F32].name_len_at + 9] = 0; }

static void test_patched_matrix(const uint8_t *valid, size_t size, const gguf_writer *w)
{
    static const struct { patch_fn fn; fm_status st; const char *needle, *what; } cases[] = {
        { p_magic, FM_ERR_PARSE, "magic", "bad magic" },
        { p_v1, FM_ERR_UNSUPPORTED, "version 1", "version 1" },
        { p_v4, FM_ERR_UNSUPPORTED, "version 4", "version 4" },
        { p_vbe, FM_ERR_UNSUPPORTED, "big-endian", "byte-swapped version" },
        { p_ntens, FM_ERR_PARSE, "tensor count", "absurd tensor count" },
        { p_nkv, FM_ERR_PARSE, "KV count", "absurd KV count" },
        { p_keylen, FM_ERR_PARSE, "length", "absurd key length" },
        { p_ttype, FM_ERR_UNSUPPORTED, "unknown tensor type id 99", "unknown tensor type" },
        { p_ndims0, FM_ERR_PARSE, "n_dims 0", "zero dims" },
        { p_ndims5, FM_ERR_PARSE, "n_dims 5", "five dims" },
        { p_ne0, FM_ERR_PARSE, "dimension 0", "zero extent" },
        { p_nebig, FM_ERR_PARSE, "t.q8_0", "element count overflow" },
        { p_neblock, FM_ERR_PARSE, "not a multiple", "ne[0] not a block multiple" },
        { p_misalign, FM_ERR_PARSE, "alignment", "misaligned tensor offset" },
        { p_offbig, FM_ERR_PARSE, "runs past", "offset past the end" },
        { p_overlap, FM_ERR_PARSE, "overlap", "overlapping tensors" },
        { p_namelen, FM_ERR_PARSE, "length", "absurd tensor name length" },
        { p_dupname, FM_ERR_PARSE, "twice", "duplicate tensor name" },
        { p_nulname, FM_ERR_PARSE, "NUL", "NUL in tensor name" },
    };
    uint8_t *copy = malloc(size);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(copy, valid, size);
        cases[i].fn(copy, w);
        expect(copy, size, cases[i].st, cases[i].needle, cases[i].what);
    }
    memcpy(copy, valid, size);
    patch_u32(copy, 4, 2);
    expect(copy, size, FM_OK, NULL, "version 2 accepted");
    free(copy);
}

static void test_truncations(const uint8_t *valid, size_t size)
{
    int bad = 0;
    for (size_t n = 0; n < size; n++) {
        gguf_file *f = NULL;
        fm_error e = { 0 };
        if (open_copy(valid, n, &f, &e) == FM_OK || e.msg[0] == '\0')
            bad++;
    }
    CHECK(bad == 0, "%d of %zu truncated prefixes were accepted or gave no message", bad, size);
}

/* A file built around one odd KV (raw value bytes after the type word). */
static void expect_kv(uint32_t type, const void *raw, size_t n, fm_status st, const char *needle,
                      const char *what)
{
    gguf_writer w;
    size_t size;
    gw_init(&w, 32);
    gw_str(&w, "general.architecture", "llama");
    gw_raw(&w, "bad.key", type, raw, n);
    uint8_t *buf = gw_finish(&w, &size);
    expect(buf, size, st, needle, what);
    free(buf);
    gw_free(&w);
}

static void test_bad_kvs(void)
{
    uint64_t huge = 1ull << 60;
    uint8_t arr_huge[12] = { 4, 0, 0, 0 };
    memcpy(arr_huge + 4, &huge, 8);
    uint8_t arr_badelem[12] = { 13, 0, 0, 0, 1 };
    uint8_t two = 2, deep[12 * 12];
    for (int i = 0; i < 12; i++) {  /* 12 nested single-element arrays */
        uint8_t level[12] = { 9, 0, 0, 0, 1 };
        memcpy(deep + 12 * i, level, 12);
    }
    expect_kv(8, &huge, 8, FM_ERR_PARSE, "bad.key", "absurd string length");
    expect_kv(9, arr_huge, 12, FM_ERR_PARSE, "bad.key", "absurd array count");
    expect_kv(9, arr_badelem, 12, FM_ERR_PARSE, "element type", "bad array element type");
    expect_kv(13, &two, 1, FM_ERR_PARSE, "unknown value type", "unknown KV type");
    expect_kv(7, &two, 1, FM_ERR_PARSE, "bool", "bool value 2");
    expect_kv(9, deep, sizeof deep, FM_ERR_PARSE, "nested", "arrays nested too deep");

    gguf_writer w;
    size_t size;
    gw_init(&w, 32);
    gw_u32(&w, "dup", 1);
    gw_u32(&w, "dup", 2);
    uint8_t *buf = gw_finish(&w, &size);
    expect(buf, size, FM_ERR_PARSE, "twice", "duplicate key");
    free(buf);
    gw_free(&w);

    gw_init(&w, 32);
    gw_u32(&w, "general.alignment", 24);
    buf = gw_finish(&w, &size);
    expect(buf, size, FM_ERR_PARSE, "power of two", "alignment 24");
    free(buf);
    gw_free(&w);

    gw_init(&w, 32);
    gw_str(&w, "general.alignment", "32");
    buf = gw_finish(&w, &size);
    expect(buf, size, FM_ERR_MISMATCH, "general.alignment", "alignment as a string");
    free(buf);
    gw_free(&w);
}

static void test_unsupported_type(void)
{
    gguf_writer w;
    size_t size;
    uint8_t q5[22] = { 0 };
    uint64_t ne[1] = { 32 };
    gw_init(&w, 64);
    gw_u32(&w, "general.alignment", 64);
    gw_tensor(&w, "blk.0.odd", GGUF_T_Q5_0, 1, ne, q5, sizeof q5);
    uint8_t *buf = gw_finish(&w, &size);
    gguf_file *f = NULL;
    fm_error e = { 0 };
    float out[32];
    CHECK(gguf_open_memory(buf, size, &f, &e) == FM_OK, "Q5_0 file opens: %s", e.msg);
    if (f) {
        const gguf_tensor *t = gguf_find_tensor(f, "blk.0.odd");
        CHECK(t && t->offset % 64 == 0, "alignment 64 honoured");
        CHECK(gguf_dequantize(t, out, &e) == FM_ERR_UNSUPPORTED && strstr(e.msg, "blk.0.odd") &&
                  strstr(e.msg, "Q5_0"), "Q5_0 dequantise error names tensor and type: %s", e.msg);
        gguf_close(f);
    }
    free(buf);
    gw_free(&w);
}

/* Deterministic byte-flip fuzzing: any outcome but a crash is fine, and an
 * accepted file must dequantise its supported tensors without faults. */
static void test_mutations(const uint8_t *valid, size_t size)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    uint8_t *copy = malloc(size);
    float *out = malloc(1 << 20);
    int opened = 0, rejected_silently = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(copy, valid, size);
        for (int k = 0; k < 1 + iter % 4; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            copy[(rng >> 33) % size] ^= (uint8_t)(1u << ((rng >> 20) & 7));
        }
        gguf_file *f = NULL;
        fm_error e = { 0 };
        if (gguf_open_memory(copy, size, &f, &e) != FM_OK) {
            rejected_silently += e.msg[0] == '\0';
            continue;
        }
        opened++;
        for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
            const gguf_tensor *t = gguf_tensor_at(f, i);
            if (gguf_can_dequantize(t->type) && t->n_elements * 4 <= (1 << 20))
                gguf_dequantize(t, out, &e);
        }
        gguf_close(f);
    }
    CHECK(rejected_silently == 0, "%d mutated files rejected without a message", rejected_silently);
    printf("mutation fuzz: %d of 3000 mutated files still valid\n", opened);
    free(copy);
    free(out);
}

/* A parseable model file whose hyper-parameters are absurd must not load:
 * the error names the key (or tensor) and the value. */
typedef struct hparam_case {
    const char *what;
    synth_options opt;
    const char *needle1, *needle2;
} hparam_case;

static void test_absurd_hparams(void)
{
    const double nan = (double)NAN, inf = (double)INFINITY;
    const hparam_case cases[] = {
        { "tiny rope base", { .set_key = "llama.rope.freq_base", .set_type = 6, .set_value = 1e-30 },
          "llama.rope.freq_base", "1e-30" },
        { "huge rope base", { .set_key = "llama.rope.freq_base", .set_type = 6, .set_value = 3e38 },
          "llama.rope.freq_base", "3e+38" },
        { "rope base 1", { .set_key = "llama.rope.freq_base", .set_type = 6, .set_value = 1.0 },
          "llama.rope.freq_base", "outside" },
        { "NaN rope base", { .set_key = "llama.rope.freq_base", .set_type = 6, .set_value = nan },
          "llama.rope.freq_base", "finite" },
        { "f64 rope base overflowing f32", { .set_key = "llama.rope.freq_base", .set_type = 12, .set_value = 1e300 },
          "llama.rope.freq_base", "finite" },
        { "huge rms eps", { .set_key = "llama.attention.layer_norm_rms_epsilon", .set_type = 6, .set_value = 3e38 },
          "layer_norm_rms_epsilon", "3e+38" },
        { "zero rms eps", { .set_key = "llama.attention.layer_norm_rms_epsilon", .set_type = 6, .set_value = 0 },
          "layer_norm_rms_epsilon", "outside" },
        { "infinite rms eps", { .set_key = "llama.attention.layer_norm_rms_epsilon", .set_type = 6, .set_value = inf },
          "layer_norm_rms_epsilon", "finite" },
        { "negative rms eps", { .set_key = "llama.attention.layer_norm_rms_epsilon", .set_type = 6, .set_value = -1e-5 },
          "layer_norm_rms_epsilon", "outside" },
        { "token type 99", { .set_token_type = true, .token_type_at = 5, .token_type = 99 },
          "token_type[5]", "99" },
        { "token type -5", { .set_token_type = true, .token_type_at = 7, .token_type = -5 },
          "token_type[7]", "-5" },
        { "zero heads", { .set_key = "llama.attention.head_count", .set_type = 4, .set_value = 0 },
          "llama.attention.head_count", "is 0" },
        { "huge head count", { .set_key = "llama.attention.head_count", .set_type = 4, .set_value = 1e6 },
          "llama.attention.head_count", "1000000" },
        { "zero KV heads", { .set_key = "llama.attention.head_count_kv", .set_type = 4, .set_value = 0 },
          "head_count_kv", "is 0" },
        { "heads not a multiple of KV heads", { .set_key = "llama.attention.head_count_kv", .set_type = 4, .set_value = 3 },
          "head_count_kv' = 3", "not a multiple" },
        { "more KV heads than heads", { .set_key = "llama.attention.head_count_kv", .set_type = 4, .set_value = 8 },
          "head_count_kv' = 8", "not a multiple" },
        { "odd head dim", { .set_key = "llama.attention.head_count", .set_type = 4, .set_value = 64 },
          "head dim 1", "even" },
        { "embedding not a multiple of heads", { .set_key = "llama.attention.head_count", .set_type = 4, .set_value = 5 },
          "llama.embedding_length", "not a multiple" },
        { "context length 0", { .set_key = "llama.context_length", .set_type = 4, .set_value = 0 },
          "llama.context_length", "is 0" },
        { "negative context length", { .set_key = "llama.context_length", .set_type = 5, .set_value = -5 },
          "llama.context_length", "-5" },
        { "huge context length", { .set_key = "llama.context_length", .set_type = 4, .set_value = 4e9 },
          "llama.context_length", "4000000000" },
        { "zero layers", { .set_key = "llama.block_count", .set_type = 4, .set_value = 0 },
          "llama.block_count", "is 0" },
        { "rope base as an integer", { .set_key = "llama.rope.freq_base", .set_type = 5, .set_value = 10000 },
          "llama.rope.freq_base", "expected f32" },
        { "vocab_size vs the embedding rows", { .set_key = "llama.vocab_size", .set_type = 4, .set_value = 300 },
          "llama.vocab_size", "300" },
        { "tokenizer vs the embedding rows", { .extra_vocab_token = true }, "266 tokens", "265 rows" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t size = 0;
        uint8_t *data = synth_model(&cases[i].opt, &size);
        gguf_file *f = NULL;
        fm_model *m = NULL;
        fm_error e = { 0 };
        fm_model_desc md = { .n_threads = 1 };
        fm_status st = gguf_open_memory(data, size, &f, &e);
        if (st == FM_OK)
            st = fm_model_load_gguf(f, &md, &m, &e);
        CHECK(st != FM_OK && strstr(e.msg, cases[i].needle1) && strstr(e.msg, cases[i].needle2),
              "%s: got %s '%s', want an error naming '%s' and '%s'", cases[i].what, fm_status_name(st), e.msg,
              cases[i].needle1, cases[i].needle2);
        fm_model_free(m);
        gguf_close(f);
        free(data);
    }
    /* the edges of the ranges and other encodings still load */
    const synth_options fine[] = {
        { .seed = 1 },
        { .set_key = "llama.rope.freq_base", .set_type = 12, .set_value = 1e6 },
        { .set_key = "llama.rope.freq_base", .set_type = 6, .set_value = FM_ROPE_BASE_MAX },
        { .set_key = "llama.attention.layer_norm_rms_epsilon", .set_type = 6, .set_value = 1e-6 },
        { .set_key = "llama.vocab_size", .set_type = 4, .set_value = SYNTH_N_VOCAB },
        { .set_token_type = true, .token_type_at = 9, .token_type = 6 },
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        size_t size = 0;
        uint8_t *data = synth_model(&fine[i], &size);
        gguf_file *f = NULL;
        fm_model *m = NULL;
        fm_error e = { 0 };
        fm_model_desc md = { .n_threads = 1 };
        fm_status st = gguf_open_memory(data, size, &f, &e);
        if (st == FM_OK)
            st = fm_model_load_gguf(f, &md, &m, &e);
        CHECK(st == FM_OK, "valid variant %zu (%s) loads: %s", i, fine[i].set_key ? fine[i].set_key : "-", e.msg);
        fm_model_free(m);
        gguf_close(f);
        free(data);
    }
}

static void test_files(void)
{
    gguf_file *f = NULL;
    fm_error e = { 0 };
    CHECK(gguf_open("/nonexistent/x.gguf", &f, &e) == FM_ERR_IO && strstr(e.msg, "x.gguf"),
          "missing file: %s", e.msg);
    CHECK(gguf_open("/", &f, &e) == FM_ERR_IO && strstr(e.msg, "directory"), "directory: %s", e.msg);
    CHECK(gguf_open("/dev/zero", &f, &e) == FM_ERR_IO && strstr(e.msg, "character device"), "/dev/zero: %s",
          e.msg);
    /* A FIFO without a writer: the open must not block, and it is refused
     * as not a regular file.  (The alarm turns a hang into a failure.) */
    char dir[] = "/tmp/fm_gguf_fifo_XXXXXX", path[64];
    if (mkdtemp(dir)) {
        snprintf(path, sizeof path, "%s/model.gguf", dir);
        if (mkfifo(path, 0600) == 0) {
            alarm(20);
            fm_status st = gguf_open(path, &f, &e);
            alarm(0);
            CHECK(st == FM_ERR_IO && strstr(e.msg, "FIFO") && strstr(e.msg, "model.gguf"), "FIFO: %s", e.msg);
            unlink(path);
        }
        rmdir(dir);
    }
}

/* The real file's census (MODEL_NOTES section 3): 272 tensors, 61 F32,
 * 1 Q8_0, 210 Q4_1. */
static void test_real_model(const char *path)
{
    gguf_file *f = NULL;
    fm_error e = { 0 };
    if (gguf_open(path, &f, &e) != FM_OK) {
        CHECK(0, "open %s: %s", path, e.msg);
        return;
    }
    int census[64] = { 0 };
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        census[gguf_tensor_at(f, i)->type % 64]++;
    CHECK(gguf_n_tensors(f) == 272 && census[GGUF_T_F32] == 61 && census[GGUF_T_Q8_0] == 1 &&
              census[GGUF_T_Q4_1] == 210, "real model census: %llu tensors, %d F32, %d Q8_0, %d Q4_1",
          (unsigned long long)gguf_n_tensors(f), census[0], census[8], census[3]);
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    CHECK(emb && emb->type == GGUF_T_Q8_0 && emb->ne[0] == 576 && emb->ne[1] == 49152,
          "token_embd.weight is Q8_0 (576, 49152)");
    gguf_close(f);
}

int main(void)
{
    gguf_writer w;
    size_t size;
    uint8_t *valid = make_valid(&w, &size);
    gguf_file *f = NULL;
    fm_error e = { 0 };
    CHECK(gguf_open_memory(valid, size, &f, &e) == FM_OK, "valid synthetic file: %s", e.msg);
    if (f) {
        test_valid_getters(f);
        test_valid_tensors(f);
        gguf_close(f);
    }
    test_block_layouts();
    test_patched_matrix(valid, size, &w);
    test_truncations(valid, size);
    test_bad_kvs();
    test_unsupported_type();
    test_mutations(valid, size);
    test_absurd_hparams();
    test_files();
    const char *model = getenv("FASA_MODEL");
    if (model && *model)
        test_real_model(model);
    else
        printf("note: FASA_MODEL not set, real-model census skipped\n");
    free(valid);
    gw_free(&w);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
