/* Internals shared by model.c, forward.c and attn_ref.c (not a public API). */
#ifndef FM_ENGINE_INTERNAL_H
#define FM_ENGINE_INTERNAL_H

#include "model.h"

typedef struct fm_layer_weights {
    float *attn_norm, *ffn_norm;          /* [n_embd] */
    float *wq, *wk, *wv, *wo;             /* [out][in] */
    float *w_gate, *w_up, *w_down;
} fm_layer_weights;

struct fm_model {
    fm_hparams hp;
    float *tok_embd;                      /* [n_vocab][n_embd] */
    float *output_norm;                   /* [n_embd] */
    float *output;                        /* == tok_embd when tied */
    fm_layer_weights *layers;
    float **owned;                        /* every allocation, for freeing */
    uint32_t n_owned;
    fm_tokenizer *tok;
};

/* Dense causal attention of n queries at positions p0..p0+n-1 over keys and
 * values 0..p0+n-1 ([pos][Hkv][d] with row stride Hkv*d).  q and o are
 * [n][Hq][d].  scratch holds fm_dense_scratch_floats() floats per thread. */
void fm_dense_causal(fm_pool *pool, const fm_hparams *hp, const float *q, const float *k,
                     const float *v, uint32_t p0, uint32_t n, float *o, float *scratch,
                     uint32_t capacity);
uint64_t fm_dense_scratch_floats(uint32_t capacity);

#endif
