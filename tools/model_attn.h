/* The model engine's attention served by libfasa: an fm_attn_ops whose
 * appends go into a fasa_kv_cache and whose decode steps are
 * fasa_decode_host calls in the chosen mode.  Optionally measures, per
 * sparse step, the recall of the oracle top-n_fac and the softmax mass the
 * selection captures (MODEL_NOTES §8.1). */
#ifndef FASA_MODEL_ATTN_H
#define FASA_MODEL_ATTN_H

#include "fasa.h"
#include "model.h"

typedef struct model_attn_stats {
    uint64_t dense_steps, sparse_steps;  /* (layer, token) decode calls */
    double attended_sum;                 /* sum of attended fraction per call */
    uint64_t measured;                   /* sparse rows measured */
    double recall_sum, mass_sum, oracle_mass_sum;
} model_attn_stats;

typedef struct model_attn {
    fasa_context *ctx;
    fasa_kv_cache *cache;                /* NULL: appends are dropped (prefill only) */
    fasa_decode_desc desc;
    const fm_state *state;               /* for reading keys when measuring */
    bool measure;
    uint32_t n_layers, hq, hkv, d, capacity, max_n_fac;
    model_attn_stats stats;
    /* optional: sees each decode step's q before it runs (e.g. to dump cases) */
    void (*on_decode)(void *user, uint32_t layer, const float *q);
    void *on_decode_user;
    /* scratch */
    int32_t *sel, *sel_oracle;
    float *o_tmp, *keys, *probs;
} model_attn;

/* Sizes the scratch for a model and a largest n_fac (1..FASA_MAX_N_FAC;
 * every desc.n_fac used later must be set explicitly and at most this);
 * false on no memory or a max_n_fac outside that range. */
bool model_attn_init(model_attn *a, fasa_context *ctx, const fm_hparams *hp, uint32_t capacity,
                     uint32_t max_n_fac);
void model_attn_free(model_attn *a);
fm_attn_ops model_attn_ops(model_attn *a);
/* The fm_state_desc.prefetch_fn for these ops (user = the model_attn): a
 * FASA_DECODE_PREFETCH step with a->desc, o = NULL.  Pass it only when a
 * prefetch point is wanted; the cache must be OFFLOAD, STAGED, with a row
 * cache. */
fm_prefetch_fn model_attn_prefetch_fn(void);
/* Fraction of cached tokens attended per decode call, averaged. */
double model_attn_attended(const model_attn *a);

/* Storage and FASA-M options of model_attn_make_cache ({0}: f16, DEVICE). */
typedef struct model_attn_cache_opts {
    fasa_dtype dtype;
    fasa_placement placement;
    fasa_fetch fetch;                    /* OFFLOAD only */
    uint32_t row_cache_rows;             /* STAGED only; 0 = no row cache */
    uint32_t max_n_fac;                  /* the largest n_fac decoded with the cache, 1..FASA_MAX_N_FAC
                                            (0 = libfasa's default, 2048) */
} model_attn_cache_opts;

/* A cache for this model with the given calibration (may be NULL for dense
 * only), holding a copy of the first n_prefix tokens of the state's host
 * cache. */
fasa_status model_attn_make_cache(fasa_context *ctx, const fm_state *state, const fm_hparams *hp,
                                  const fasa_calibration *cal, uint32_t capacity, uint32_t n_prefix,
                                  const model_attn_cache_opts *opts, fasa_kv_cache **out);

#endif
