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
} synth_options;

void synth_add_tokenizer(gguf_writer *w, const char *pre);
/* Builds the whole model file; free the result with free(). */
uint8_t *synth_model(const synth_options *opt, size_t *size);

#endif
