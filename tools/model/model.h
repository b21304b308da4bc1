/*
 * SmolLM2 / Llama-architecture inference in f32 (MODEL_NOTES sections 1-5).
 *
 *  fm_model  immutable weights, dequantised to f32 at load; shareable.
 *  fm_state  one sequence: KV cache, position, scratch, worker threads.
 *
 * Attention is reached through fm_attn_ops so that an external KV cache
 * (libfasa) can serve decode steps.  Data layouts, all f32:
 *   q  [Hq][d]          one token, post-RoPE
 *   k,v [n][Hkv][d]     token-major, post-RoPE keys
 *   o  [Hq][d]          attention output before the output projection
 * RoPE is NORM (pairs (2i, 2i+1)), matching the GGUF row permutation.
 *
 * Eval paths:
 *  - one token (or FM_EVAL_DECODE_EACH): per layer append_kv(1 token), then
 *    decode(q) -> o through the ops (the built-in reference by default);
 *    with fm_state_desc.prefetch, layer l also calls prefetch_fn(l + 1, q~);
 *  - several tokens: append_kv(n tokens), then the engine's own dense causal
 *    attention over the host copy of the cache.  The host copy (an f32
 *    [layer][pos][Hkv][d] cache) is always kept unless FM_STATE_NO_HOST_KV;
 *    without it a prefill that follows earlier tokens falls back to one
 *    decode step per token.
 */
#ifndef FM_MODEL_H
#define FM_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "fm_common.h"
#include "gguf.h"
#include "pool.h"
#include "tokenizer.h"

/* The hyper-parameters fm_model_load accepts; a value outside its range is
 * an error naming the key and the value (garbage in a parseable file would
 * otherwise load and produce garbage).  The float ranges hold every Llama
 * variant in use (rope.freq_base 1e4 for Llama 2, 1e5 for SmolLM2, 5e5 for
 * Llama 3, up to ~1e8 for long-context fine-tunes; rms_eps 1e-5 / 1e-6). */
#define FM_MAX_LAYERS 4096          /* llama.block_count 1..4096 */
#define FM_MAX_EMBD 65536           /* llama.embedding_length 1..65536 */
#define FM_MAX_HEADS 1024           /* head_count and head_count_kv 1..1024, head_count % head_count_kv == 0 */
#define FM_MAX_HEAD_DIM 512         /* embedding_length / head_count: even, 2..512 */
#define FM_MAX_FF (1u << 20)        /* llama.feed_forward_length 1..2^20 */
#define FM_MAX_CTX (1u << 24)       /* llama.context_length 1..2^24 */
#define FM_ROPE_BASE_MIN 10.0f      /* llama.rope.freq_base 10..1e10 */
#define FM_ROPE_BASE_MAX 1e10f
#define FM_RMS_EPS_MIN 1e-12f       /* llama.attention.layer_norm_rms_epsilon 1e-12..1e-2 */
#define FM_RMS_EPS_MAX 1e-2f
/* tokenizer.ggml.token_type entries are 0..6 (undefined, normal, unknown,
 * control, user-defined, unused, byte); the token count must equal the rows
 * of token_embd.weight (and llama.vocab_size when present). */

typedef struct fm_hparams {
    uint32_t n_layer;      /* llama.block_count */
    uint32_t n_embd;       /* llama.embedding_length */
    uint32_t n_head;       /* llama.attention.head_count (Hq) */
    uint32_t n_head_kv;    /* llama.attention.head_count_kv (Hkv) */
    uint32_t head_dim;     /* n_embd / n_head; = llama.rope.dimension_count */
    uint32_t n_ff;         /* llama.feed_forward_length */
    uint32_t n_vocab;      /* rows of token_embd.weight */
    uint32_t n_ctx_train;  /* llama.context_length */
    float rope_base;       /* llama.rope.freq_base (required, no default) */
    float rms_eps;         /* llama.attention.layer_norm_rms_epsilon */
    bool tied_output;      /* no output.weight: logits use token_embd.weight */
} fm_hparams;

typedef struct fm_model fm_model;

typedef struct fm_model_desc {
    uint32_t n_threads;    /* threads used to dequantise, 0 = online CPUs */
    bool no_tokenizer;     /* skip loading the tokenizer */
} fm_model_desc;

/* Loads hyper-parameters, weights and (unless desc->no_tokenizer) the
 * tokenizer.  A missing or inconsistent key or tensor is an error naming it;
 * a tensor the engine would not use (e.g. biases) is FM_ERR_UNSUPPORTED. */
fm_status fm_model_load(const char *path, const fm_model_desc *desc, fm_model **out,
                        fm_error *err);
/* Same from an already opened file (which may be closed afterwards). */
fm_status fm_model_load_gguf(const gguf_file *f, const fm_model_desc *desc, fm_model **out,
                             fm_error *err);
void fm_model_free(fm_model *model);
const fm_hparams *fm_model_hparams(const fm_model *model);
/* NULL when loaded with no_tokenizer. */
const fm_tokenizer *fm_model_tokenizer(const fm_model *model);

/* ------------------------------------------------------------------------ */
/* Attention interface                                                       */
/* ------------------------------------------------------------------------ */

typedef struct fm_attn_ops {
    /* Stores n_tokens new keys/values of one layer, in position order. */
    fm_status (*append_kv)(void *user, uint32_t layer, uint32_t n_tokens, const float *k,
                           const float *v, fm_error *err);
    /* Attention of one new token (whose k/v were just appended) over every
     * cached token of the layer; writes o [Hq][d]. */
    fm_status (*decode)(void *user, uint32_t layer, const float *q, float *o, fm_error *err);
    /* Drops every token at position >= n_tokens in all layers (optional). */
    fm_status (*truncate)(void *user, uint32_t n_tokens, fm_error *err);
    void *user;
} fm_attn_ops;

/* Observes each layer's post-RoPE q of every evaluated position together with
 * the layer's keys 0..pos (k_all [n_keys][Hkv][d], n_keys = pos + 1, the
 * current key included), e.g. for calibration.  Called on the calling thread. */
typedef void (*fm_qk_hook)(void *user, uint32_t layer, uint32_t pos, const float *q,
                           const float *k_all, uint32_t n_keys);

#define FM_STATE_NO_HOST_KV 0x1u   /* with external attn: keep no f32 host cache */

/* Where a single-token decode forms the speculative query of layer l+1
 * (InfiniGen-style: the residual stream changes little between layers, so
 * q~(l+1) = RoPE(W_q(l+1) RMSNorm(x; attn_norm(l+1))) approximates the real
 * q of layer l+1) and hands it to fm_state_desc.prefetch_fn. */
typedef enum fm_prefetch_point {
    FM_PREFETCH_NONE = 0,
    FM_PREFETCH_ATTN,          /* x at layer l's input: overlaps all of layer l */
    FM_PREFETCH_MLP            /* x after layer l's attention: overlaps its MLP */
} fm_prefetch_point;

/* Receives that speculative q [Hq][d] (post-RoPE, current position) of a
 * layer not yet reached, with user = attn->user, so the attention can bring
 * the layer's selected K/V close before its decode call; it must not change
 * what decode computes.  (A field of fm_state_desc rather than fm_attn_ops
 * so that positional fm_attn_ops initialisers stay complete.) */
typedef fm_status (*fm_prefetch_fn)(void *user, uint32_t layer, const float *q, fm_error *err);

typedef struct fm_state_desc {
    uint32_t n_ctx;            /* capacity in tokens, 0 = the model's n_ctx_train */
    uint32_t n_threads;        /* 0 = online CPUs */
    uint32_t max_batch;        /* tokens per forward chunk, 0 = 256 */
    const fm_attn_ops *attn;   /* NULL = built-in reference attention */
    fm_qk_hook qk_hook;        /* optional, needs the host cache */
    void *hook_user;
    uint32_t flags;            /* FM_STATE_* */
    fm_prefetch_point prefetch; /* 0 = none; else needs attn and prefetch_fn */
    fm_prefetch_fn prefetch_fn;
} fm_state_desc;

typedef struct fm_state fm_state;

fm_status fm_state_create(const fm_model *model, const fm_state_desc *desc, fm_state **out,
                          fm_error *err);
void fm_state_destroy(fm_state *state);
/* Tokens evaluated so far (the next position). */
uint32_t fm_state_pos(const fm_state *state);
uint32_t fm_state_capacity(const fm_state *state);

#define FM_EVAL_ALL_LOGITS 0x1u   /* logits is [n][n_vocab], else [n_vocab] of the last token */
#define FM_EVAL_DECODE_EACH 0x2u  /* feed the tokens one at a time through attn->decode */

/* Runs n tokens at the current position.  logits may be NULL (skips the
 * output projection).  On failure the position is unchanged, but caches may
 * hold part of the batch: truncate to fm_state_pos before continuing. */
fm_status fm_state_eval(fm_state *state, const int32_t *tokens, uint32_t n, float *logits,
                        uint32_t flags, fm_error *err);
/* Rewinds to n_tokens (<= pos); calls attn->truncate when set. */
fm_status fm_state_truncate(fm_state *state, uint32_t n_tokens, fm_error *err);
/* Copies tokens [first, first + n) of a layer from the host cache as
 * [n][Hkv][d] (either output may be NULL). */
fm_status fm_state_read_kv(const fm_state *state, uint32_t layer, uint32_t first, uint32_t n,
                           float *k, float *v, fm_error *err);

/* The built-in reference attention as an fm_attn_ops (host f32 cache, dense
 * softmax attention), usable on its own, e.g. as the "dense" side when
 * comparing against an external implementation. */
typedef struct fm_ref_attn fm_ref_attn;
/* pool (borrowed, may be NULL for single-threaded) runs the decode step. */
fm_status fm_ref_attn_create(const fm_hparams *hp, uint32_t capacity, fm_pool *pool,
                             fm_ref_attn **out, fm_error *err);
void fm_ref_attn_destroy(fm_ref_attn *ref);
fm_attn_ops fm_ref_attn_ops(fm_ref_attn *ref);
uint32_t fm_ref_attn_length(const fm_ref_attn *ref, uint32_t layer);
/* Keys/values of a layer: [length][Hkv][d], valid until the next append. */
const float *fm_ref_attn_keys(const fm_ref_attn *ref, uint32_t layer);
const float *fm_ref_attn_values(const fm_ref_attn *ref, uint32_t layer);

#endif
