/* A strict JSON reader for the calibration file: the jsmn tokenizer, plus
 * what jsmn leaves out (json_strict.c says what it rejects).  Tokens are
 * indices into the document in text order (pre-order: a container is
 * followed by its entries, an object key by its value).  The library's
 * only JSON reader; jsmn itself is used in json_strict.c alone. */
#ifndef FASA_JSON_STRICT_H
#define FASA_JSON_STRICT_H

#include "internal.h"

#include <locale.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum fasa__json_type {
    FASA__JSON_NONE,             /* no such token (index out of range) */
    FASA__JSON_OBJECT,
    FASA__JSON_ARRAY,
    FASA__JSON_STRING,
    FASA__JSON_NUMBER,
    FASA__JSON_LITERAL,          /* true, false, null */
} fasa__json_type;

typedef struct fasa__json {
    fasa_context *ctx;           /* allocator for the tokens and strings */
    const char *text;
    size_t size;
    void *tokens;                /* jsmn tokens (json_strict.c) */
    int n_tokens;
    locale_t c_locale;           /* numbers are read in the C locale, whatever the application set */
} fasa__json;

/* Parses text[0..size) as exactly one JSON value with at most max_depth
 * nested arrays/objects (at most FASA__JSON_MAX_DEPTH) and nothing but
 * whitespace after it.  Returns FASA_OK, FASA_ERROR_PARSE with the reason
 * and its byte offset in err (and, inside an object, the key it is under),
 * or FASA_ERROR_OUT_OF_HOST_MEMORY.  Free the document with
 * fasa__json_free, also after a failure. */
#define FASA__JSON_MAX_DEPTH 16
fasa_status fasa__json_parse(fasa_context *ctx, const char *text, size_t size, int max_depth, fasa__json *doc,
                             char *err, size_t err_size);
void fasa__json_free(fasa__json *doc);

fasa__json_type fasa__json_type_of(const fasa__json *doc, int tok);
/* Byte offset of the token's first character (the quote of a string). */
size_t fasa__json_offset(const fasa__json *doc, int tok);
/* Entries of an array, keys of an object, 0 for anything else. */
int fasa__json_size(const fasa__json *doc, int tok);
/* The token after tok and everything inside it (its next sibling). */
int fasa__json_next(const fasa__json *doc, int tok);

/* An integer written as plain digits (no sign, fraction or exponent) and
 * at most max; false for anything else. */
bool fasa__json_get_uint(const fasa__json *doc, int tok, uint64_t max, uint64_t *out);
/* Any number token, as strtod reads it in the C locale; false for a
 * non-number.  The value may be infinite (1e999): the caller checks the range. */
bool fasa__json_get_double(const fasa__json *doc, int tok, double *out);
/* The decoded UTF-8 text of a string token, NUL-terminated, in memory from
 * the context's allocator (fasa__free).  FASA_ERROR_INVALID_ARGUMENT for a
 * non-string, FASA_ERROR_OUT_OF_HOST_MEMORY. */
fasa_status fasa__json_get_string(const fasa__json *doc, int tok, char **out);
/* True when tok is a string whose decoded text is key ("\u0066ormat" is "format"). */
bool fasa__json_string_is(const fasa__json *doc, int tok, const char *key);
/* The token's source text for a message, cut to fit buf (with "..." then). */
const char *fasa__json_excerpt(const fasa__json *doc, int tok, char *buf, size_t buf_size);

/* Writes s as a JSON string: quotes, escapes for '"', '\\' and control
 * characters, and U+FFFD for each byte that is not part of valid UTF-8 (so
 * the file stays loadable whatever bytes a caller's string held). */
void fasa__json_write_string(FILE *f, const char *s);

#endif
