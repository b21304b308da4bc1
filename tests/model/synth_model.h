/*
 * Test helper: a tiny synthetic Llama GGUF (random weights in every
 * supported tensor type) with a tiny byte-level BPE tokenizer, so engine and
 * tokenizer tests run without the real model.
 *
 * Tokenizer: ids 0..2 are <|endoftext|>, <|im_start|>, <|im_end|> (control),
 * 3..258 the 256 byte tokens in byte order, then the merges
 * "h e", "Ġ t", "Ġt he", "l l", "ll o", "a a" (ranks 0..5, ids 259..264).
 */
#ifndef FM_TEST_SYNTH_MODEL_H
#define FM_TEST_SYNTH_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf_writer.h"

#define SYNTH_N_VOCAB 265
#define SYNTH_BYTE_ID(b) (3 + (b))

typedef struct synth_options {
    const char *skip_key;       /* omit this KV (tests "missing key") */
    const char *skip_tensor;    /* omit this tensor */
    const char *extra_tensor;   /* add an unused 1-D F32 tensor of this name */
    const char *bad_shape;      /* write this tensor with swapped dims */
    const char *pre;            /* tokenizer.ggml.pre, default "smollm" */
    uint32_t seed;
    /* Writes set_key with this value instead of the usual one (or in
     * addition, for a key the model does not write, e.g. llama.vocab_size),
     * as GGUF type set_type: 4 u32, 5 i32, 6 f32, 12 f64. */
    const char *set_key;
    uint32_t set_type;
    double set_value;
    /* tokenizer.ggml.token_type[token_type_at] = token_type when set_token_type */
    bool set_token_type;
    uint32_t token_type_at;
    int32_t token_type;
    bool extra_vocab_token;     /* one token more than token_embd.weight has rows */
    bool no_c0_tokens;          /* bytes 0x01..0x08 get no one-byte token (as in SmolLM2's vocab) */
} synth_options;

/* The synthetic model's shape (SYNTH_N_VOCAB tokens). */
#define SYNTH_N_LAYER 2
#define SYNTH_N_EMBD 64
#define SYNTH_N_HEAD 4
#define SYNTH_N_HEAD_KV 2
#define SYNTH_N_CTX 128

void synth_add_tokenizer(gguf_writer *w, const char *pre);
/* The same with the token-type and vocab-size options of o (may be NULL). */
void synth_add_tokenizer_opt(gguf_writer *w, const synth_options *o);
/* Builds the whole model file; free the result with free(). */
uint8_t *synth_model(const synth_options *opt, size_t *size);

#endif
