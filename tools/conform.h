/* Conformance: seeded decode cases run through the public API of a backend
 * and compared with the fp64 reference (tools/ref64.c). */
#ifndef FASA_CONFORM_H
#define FASA_CONFORM_H

#include "fasa.h"
#include "synth.h"

typedef struct conform_case {
    char name[160];
    uint32_t hq, hkv, d;
    fasa_rope_layout layout;
    fasa_dtype dtype;
    fasa_gqa_select gqa;
    fasa_mode mode;
    synth_kind data;
    uint32_t L, n_fac, n_tip, n_sink, n_recent;
    bool per_head_dims;          /* different planted dims per query head */
    bool on_dense_layer;         /* decode layer 0, which is dense by default */
    uint32_t n_appends;          /* append the tokens in this many calls */
    fasa_placement placement;    /* FASA-M cases: OFFLOAD */
    fasa_fetch fetch;
    uint32_t row_cache_rows;
    bool prefetch;               /* a FASA_DECODE_PREFETCH step (another query) before the decode */
    uint32_t external;           /* 0: libfasa's own K/V; else the CONFORM_EXT_* layout of the
                                    engine's K/V the cache reads in place (conform_ext.c) */
    fasa_io_type q_type, o_type; /* not both F32: q rounded to q_type, and after the checked
                                    fp32 decode a second one through fasa_decode with q and o
                                    in these types, whose o must be the first one's o rounded */
    uint32_t pool;               /* CONFORM_POOL_*: a paged or shared pool of sequences, or a batch
                                    (conform_paged.c); 0 = one cache, one sequence */
    uint32_t block_size;         /* pool cases: fasa_kv_external.block_size */
    uint32_t n_items;            /* cells: sequences (2); batch: items B */
    uint32_t L2;                 /* cells: the second sequence's length */
    uint32_t n_empty;            /* cells: empty (poisoned) cells */
    uint64_t seed;
} conform_case;

/* Pool cases (conform_paged.c): external K/V (c->external: token- or
 * head-major) holding the case's sequence(s) in blocks scattered over a
 * pool whose other rows are poison (K +-3e4, V NaN, synced). */
enum {
    CONFORM_POOL_NONE = 0,
    CONFORM_POOL_PAGED,          /* one sequence, blocks of block_size shuffled over the pool */
    CONFORM_POOL_CELLS,          /* block_size 1: two sequences in interleaved cells, empty cells */
    CONFORM_POOL_BATCH,          /* n_items sequences of one pool, decoded by fasa_decode_batch */
    CONFORM_POOL_BATCH_OWN       /* n_items caches of their own (not paged), fasa_decode_batch */
};

/* Layouts of the external-KV cases: token-major [token][kv_head][d] and
 * head-major [kv_head][token][d], tight, or with padded strides, offsets of
 * two elements and (head-pad-shared) K and V in one buffer. */
enum {
    CONFORM_EXT_NONE = 0,
    CONFORM_EXT_TOKEN,
    CONFORM_EXT_HEAD,
    CONFORM_EXT_TOKEN_PAD,
    CONFORM_EXT_HEAD_PAD,
    CONFORM_EXT_COUNT
};

typedef struct conform_result {
    bool pass;
    char why[256];               /* first failure */
    fasa_path path;
    double nmse, max_abs_err;    /* output vs fp64 over the backend's selection */
    double io_nmse;              /* q/o cases: the io decode's o (16-bit or fp32) vs fp64 */
    double score_err;            /* max |S - S_ref| / (sum |q_c k_c|) */
    uint32_t near_ties;          /* selection swaps inside the near-tie band */
    double seconds;
} conform_result;

/* Thresholds (docs/CONFORMANCE.md).  The reference uses the values as
 * stored (fp16- or bf16-rounded when the cache is), so only fp32 arithmetic
 * error remains and one threshold serves every dtype.  It is 100x stricter
 * than ggml's 1e-7 because that one hides e.g. a 1e-4 error in the softmax
 * scale (NMSE 7e-8, found by mutation); the CPU backend measures ~2e-12. */
#define CONFORM_NMSE_MAX 1e-9
#define CONFORM_SCORE_REL 1e-5    /* docs/SPEC.md §9 invariant 9 */
#define CONFORM_TIE_REL 2e-5      /* near-tie band for selection swaps */
/* A 16-bit o (q/o cases) against fp64: rounding to nearest even adds at most
 * half an ulp, 2^-p of the value (p = 8 significant bits in bf16, 11 in
 * fp16), on top of the fp32 error: NMSE <= (2^-p + sqrt(1e-9))^2. */
#define CONFORM_NMSE_BF16_OUT 1.56e-5 /* (2^-8 + 3.2e-5)^2 = 1.551e-5 */
#define CONFORM_NMSE_F16_OUT 2.71e-7  /* (2^-11 + 3.2e-5)^2 = 2.703e-7 */

/* Decode inputs given instead of synthesised (real-model cases). */
typedef struct conform_data {
    float *q;                    /* [Hq][d] */
    float *k, *v;                /* [L][Hkv][d] */
    uint16_t *dims;              /* [Hq][2 n_tip] */
} conform_data;

/* Fills up to max cases of the variants named in `variants` (a list of
 * dense, fasa, fasa-m, external, paged: dense-mode cases, FASA-C sparse
 * cases, FASA-M copies of the sparse ones, copies of the dense and FASA-C
 * cases up to L 4107 over external K/V in the four layouts in turn, and
 * the paged / shared-cell / batch cases of conform_paged.c); returns the
 * count.  quick drops the largest L. */
uint32_t conform_cases(conform_case *cases, uint32_t max, bool quick, const char *variants);
/* A case's outputs as one backend produced them, kept to compare two
 * backends directly (conform_cross_compare); mag holds the fp64 Σ|q_c k_c|
 * of every score, the scale of the score tolerance. */
typedef struct conform_capture {
    bool valid;                  /* the backend ran the case and it passed */
    fasa_path path;
    size_t n_o, n_sel, n_scores;
    float *o, *scores;
    int32_t *sel;
    double *mag;
} conform_capture;

/* One backend against another on the same case. */
typedef struct conform_cross {
    bool pass;
    char why[256];
    double nmse, max_abs_err;    /* output vs the other backend's (equal selections only) */
    double score_err;            /* max |S_a - S_b| / (sum |q_c k_c|) */
    uint32_t swaps;              /* tokens in one selection and not the other */
} conform_cross;

/* Bounds implied by both backends passing the fp64 checks: output NMSE
 * (sqrt(1e-9) + sqrt(1e-9))^2 when the selections agree, twice the score
 * tolerance; selections may differ only by near-tie swaps, never on
 * integer (exactly representable) data. */
#define CONFORM_CROSS_NMSE_MAX (4 * CONFORM_NMSE_MAX)
#define CONFORM_CROSS_SCORE_REL (2 * CONFORM_SCORE_REL)

/* Runs one case on ctx (data NULL: synthesised from the case's seed);
 * false only if the harness itself failed.  cap (may be NULL) receives the
 * outputs; free it with conform_capture_free. */
bool conform_run(fasa_context *ctx, const conform_case *c, const conform_data *data, conform_result *r,
                 conform_capture *cap);
void conform_capture_free(conform_capture *cap);
/* Compares got with ref, both captured from passing runs of case c. */
void conform_cross_compare(const conform_case *c, const conform_capture *ref, const conform_capture *got,
                           conform_cross *x);

/* Real decode cases on disk ("FASACASE 1" + a JSON header line + binary
 * q, k, v, dims), written by 'fasa eval --dump', replayed by
 * 'fasa conform --replay'.  The write replaces path atomically (temporary
 * file, fsync, rename: an existing file stays whole on any failure; a
 * directory, FIFO or device at path is refused); on failure it prints
 * the reason to stderr and returns false. */
bool conform_write_case_file(const char *path, uint32_t hq, uint32_t hkv, uint32_t d, uint32_t L,
                             uint32_t n_tip, const float *q, const float *k, const float *v,
                             const uint16_t *dims, const char *origin);
/* Reads a case file into c (shape, L, n_tip, name) and data (malloc'ed).
 * Only a regular file of at most 2 GiB whose size matches its header is
 * read (a FIFO or a directory is refused without blocking); false with
 * the reason in err otherwise. */
bool conform_read_case_file(const char *path, conform_case *c, conform_data *data, char *err, size_t err_size);
void conform_free_data(conform_data *data);
const char *conform_path_name(fasa_path p);

/* The engine side of an external case (conform_ext.c): its K/V buffers in
 * the case's layout, set as kd->external by create; fill writes the tokens
 * and syncs them, with a wrong continuation rewound (truncate) and
 * rewritten on the way. */
typedef struct conform_engine conform_engine;
fasa_status conform_ext_create(fasa_context *ctx, const conform_case *c, fasa_kv_cache_desc *kd,
                               conform_engine **out);
fasa_status conform_ext_fill(conform_engine *e, fasa_kv_cache *cache, uint32_t layer, const conform_case *c,
                             const float *k, const float *v);
void conform_ext_destroy(conform_engine *e);
const char *conform_ext_name(uint32_t layout);

/* Pool and batch cases (conform_paged.c): adds them to the list (names
 * "paged-*", "cells-*", "batch-*"; quick leaves out the largest) and runs
 * one; conform_run hands pool cases to conform_pool_run. */
uint32_t conform_pool_cases(conform_case *cases, uint32_t n, uint32_t max, bool quick);
bool conform_pool_run(fasa_context *ctx, const conform_case *c, conform_result *r, conform_capture *cap);

#endif
