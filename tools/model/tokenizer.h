/*
 * GPT-2 byte-level BPE tokenizer built from a GGUF's tokenizer.ggml.* keys
 * (SmolLM2: tokenizer.ggml.pre = "smollm").  MODEL_NOTES section 6.
 *
 * Pre-tokenizer.  "smollm" (also "starcoder") first isolates every numeric
 * character, then applies the GPT-2 split
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * to each remaining span; "gpt2" skips the digit step.  Character classes are
 * exact for ASCII and Latin-1 (U+0000..U+00FF, e.g. '£' is a symbol, 'é' a
 * letter, U+00A0 a space, '²' and '½' numbers).  Above U+00FF a short table
 * covers the Unicode White_Space characters, General Punctuation
 * (U+2010..U+205E), currency signs (U+20A0..U+20CF) and CJK punctuation
 * (U+3001..U+3003) as symbols; every other code point counts as a letter, so
 * e.g. non-Latin digits and math symbols split differently from HF.  Invalid
 * UTF-8 bytes are single-byte symbols.
 *
 * Special tokens (token_type 3 control or 4 user-defined) are only matched by
 * fm_tokenize_special and the chat helpers, never by fm_tokenize.
 */
#ifndef FM_TOKENIZER_H
#define FM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_common.h"
#include "gguf.h"

#define FM_CHAT_DEFAULT_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

typedef struct fm_tokenizer fm_tokenizer;

/* Growable token id list; zero-initialise, free with fm_tokens_free. */
typedef struct fm_tokens {
    int32_t *ids;
    size_t n, cap;
} fm_tokens;

fm_status fm_tokens_push(fm_tokens *t, int32_t id, fm_error *err);
void fm_tokens_free(fm_tokens *t);

typedef struct fm_special_ids {
    int32_t bos, eos, pad, unk;   /* -1 when the key is absent */
    int32_t im_start, im_end;     /* chat markers, -1 when not in the vocab */
    bool add_bos;                 /* tokenizer.ggml.add_bos_token (false if absent) */
} fm_special_ids;

/* Builds the tokenizer; it keeps no reference to f afterwards. */
fm_status fm_tokenizer_load(const gguf_file *f, fm_tokenizer **out, fm_error *err);
void fm_tokenizer_free(fm_tokenizer *tok);

uint32_t fm_tokenizer_n_vocab(const fm_tokenizer *tok);
const fm_special_ids *fm_tokenizer_special(const fm_tokenizer *tok);
bool fm_tokenizer_is_control(const fm_tokenizer *tok, int32_t id);
/* False for the bytes the vocab has no one-byte token for (fm_tokenize drops
 * them, as HF does; SmolLM2 lacks 0xC0, 0xC1, 0xF5..0xFF and a few C0 controls). */
bool fm_tokenizer_byte_has_token(const fm_tokenizer *tok, uint8_t byte);
/* The bytes a token stands for (NULL for an out-of-range id). */
const char *fm_token_bytes(const fm_tokenizer *tok, int32_t id, size_t *len);

/* Appends the ids of plain text (special-token text is ordinary text here). */
fm_status fm_tokenize(const fm_tokenizer *tok, const char *text, size_t len, fm_tokens *out,
                      fm_error *err);
/* Same, but the literal text of special tokens becomes those tokens. */
fm_status fm_tokenize_special(const fm_tokenizer *tok, const char *text, size_t len,
                              fm_tokens *out, fm_error *err);

/* Concatenates token bytes into a malloc'ed, NUL-terminated buffer.  Control
 * tokens are written as their text when render_control, else skipped. */
fm_status fm_detokenize(const fm_tokenizer *tok, const int32_t *ids, size_t n, bool render_control,
                        char **out, size_t *out_len, fm_error *err);

typedef struct fm_chat_message {
    const char *role;
    const char *content;
    size_t content_len;   /* bytes of content (which may then hold NULs); 0 = strlen(content) */
} fm_chat_message;

/* SmolLM2 chat format: <|im_start|>{role}\n{content}<|im_end|>\n per message,
 * a default system message (FM_CHAT_DEFAULT_SYSTEM) first when messages[0] is
 * not "system", and <|im_start|>assistant\n when add_generation_prompt.
 * Message text is encoded as plain text (no special-token matching). */
fm_status fm_chat_tokenize(const fm_tokenizer *tok, const fm_chat_message *messages, size_t n,
                           bool add_generation_prompt, fm_tokens *out, fm_error *err);

/* The pre-tokenizer on its own (for tests): emit is called once per piece. */
typedef fm_status (*fm_piece_fn)(void *user, const char *piece, size_t len);
fm_status fm_pretokenize(const char *text, size_t len, bool split_digits, fm_piece_fn emit,
                         void *user);

#endif
