/* Synthetic decode data for tests, conformance, benchmarks and calibration
 * demos.  Keys and queries are RoPE-rotated; in "planted" data a known set
 * of low-frequency chunks per KV group (or per query head) carries the
 * query-key similarity, so TIP on those chunks recovers the true top-k and
 * calibration can be checked against the planted set. */
#ifndef FASA_SYNTH_H
#define FASA_SYNTH_H

#include "fasa.h"

typedef enum synth_kind {
    SYNTH_PLANTED = 0,   /* planted dominant chunks (default) */
    SYNTH_GAUSSIAN,      /* i.i.d. N(0,1) q, K, V: no structure */
    SYNTH_INTEGER        /* small integers: many exact score ties */
} synth_kind;

typedef struct synth_desc {
    uint32_t n_q_heads, n_kv_heads, head_dim;
    fasa_rope_layout layout;
    uint32_t n_tip;          /* planted chunks per group/head, 0 = d/8 */
    bool per_head_dims;      /* plant a different chunk set per query head */
    synth_kind kind;
    float rope_base;         /* 0 = 10000 */
    uint32_t n_targets;      /* tokens a query is built from, 0 = 16 */
    uint64_t seed;
} synth_desc;

/* A deterministic 64-bit generator (splitmix64) and helpers. */
typedef struct synth_rng { uint64_t state; } synth_rng;
uint64_t synth_next(synth_rng *r);
float synth_uniform(synth_rng *r);        /* [0, 1) */
float synth_normal(synth_rng *r);

/* The planted chunk dims: [Hq][2*n_tip] ascending, in the runtime layout. */
void synth_planted_dims(const synth_desc *d, uint16_t *dims);
/* Keys and values of tokens [first, first+n): k, v are [n][Hkv][d], RoPE
 * applied to k.  Every token is generated on its own, so ranges compose. */
void synth_keys(const synth_desc *d, uint32_t first, uint32_t n, float *k, float *v);
/* The query at position pos for decode step `step`: [Hq][d].  Planted data
 * puts in each head's planted chunks the sum of some earlier keys'
 * (already rotated) chunks, so those chunks decide the attention. */
void synth_query(const synth_desc *d, uint32_t pos, uint64_t step, float *q);

#endif
