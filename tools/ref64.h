/* An independent fp64 reference of one FASA decode step (docs/SPEC.md §2),
 * written for clarity: plain loops, a full sort for top-k, a two-pass
 * softmax.  It shares no code with the library. */
#ifndef FASA_REF64_H
#define FASA_REF64_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ref_step {
    uint32_t n_q_heads, n_kv_heads, head_dim, L;
    const double *q;          /* [Hq][d] */
    const double *k, *v;      /* [L][Hkv][d]: the values as stored (fp16/bf16-rounded if so) */
    const uint16_t *dims;     /* [Hq][2*n_tip] I_h, or NULL for the oracle (all dims) */
    uint32_t n_tip;
    bool per_group;           /* one selection per KV group from summed scores */
    uint32_t n_fac, n_sink, n_recent;
} ref_step;

/* x rounded to IEEE binary16 (nearest even, subnormals, overflow to Inf),
 * by arithmetic on the value rather than on bit patterns. */
double ref_round_half(double x);
/* The IEEE binary16 bits of ref_round_half(x), read off the rounded value
 * (exactly representable: no second rounding). */
uint16_t ref_half_bits(double x);

/* x rounded to bfloat16 (8 significant bits, fp32's exponent range with
 * subnormals down to 2^-133, nearest even, overflow to Inf from
 * 2^128 - 2^119), likewise by arithmetic on the value. */
double ref_round_bf16(double x);
/* The bfloat16 bits of ref_round_bf16(x) (the top half of its fp32, which
 * holds it exactly). */
uint16_t ref_bf16_bits(double x);

uint32_t ref_rows(const ref_step *s);               /* Hq or Hkv */
/* S[row][j]; also the magnitude bound sum |q_c k_c| per score (for tolerances). */
void ref_scores(const ref_step *s, double *scores, double *magnitude);
/* Sorted selection per row: forced tokens, then the top of the rest, ties to
 * the lower index (NaN never occurs here).  sel is [rows][n_fac]. */
void ref_select(const ref_step *s, const double *scores, int32_t *sel);
/* The k-th largest non-forced score of a row (the selection threshold). */
double ref_threshold(const ref_step *s, const double *scores, uint32_t row);
/* Attention of every query head over the tokens of its row's list
 * (idx [rows][count]) or over all L tokens when idx is NULL. */
void ref_attend(const ref_step *s, const int32_t *idx, uint32_t count, double *o);

#endif
