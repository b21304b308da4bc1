/* Strict JSON (RFC 8259) on top of the jsmn tokenizer.
 *
 * jsmn (even with JSMN_STRICT) only finds where tokens start and end: it
 * accepts missing or doubled commas and colons, trailing commas, any
 * primitive that starts with a digit, '-', 't', 'f' or 'n' ("nan", "01",
 * "1e"), raw control characters and any bytes inside strings, stops
 * silently at a NUL byte, and closing a bracket costs time proportional to
 * the nesting depth.  So this file adds, in this order:
 *
 *   1. a bracket pass over the raw bytes: nesting depth limit (before jsmn
 *      runs, so deep nesting cannot make it slow), matching brackets, no
 *      control bytes (NUL included), and only whitespace after the first
 *      top-level value (trailing garbage, a second object);
 *   2. jsmn, with JSMN_PARENT_LINKS (without them, closing a bracket scans
 *      back over every earlier token: quadratic on "[[0],[0],...]");
 *   3. a walk over the tokens that checks the bytes between them (exactly
 *      one ',' between entries, one ':' after a key, nothing else but
 *      whitespace), that keys are strings, the number and literal grammar,
 *      and every string: escapes, \u0000, surrogate pairs, UTF-8.
 */
#include "json_strict.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static const jsmntok_t *tok_at(const fasa__json *doc, int t)
{
    return doc && doc->tokens && t >= 0 && t < doc->n_tokens ? (const jsmntok_t *)doc->tokens + t : NULL;
}

/* Source extent of a token: jsmn's string tokens exclude the quotes. */
static size_t tok_begin(const jsmntok_t *t) { return (size_t)t->start - (t->type == JSMN_STRING); }
static size_t tok_end(const jsmntok_t *t) { return (size_t)t->end + (t->type == JSMN_STRING); }

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct json_err {
    const fasa__json *doc;
    char *buf;
    size_t size;
    int key;                     /* the top-level key being read, -1 outside one */
} json_err;

static fasa_status fail_at(const json_err *e, size_t offset, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static fasa_status fail_at(const json_err *e, size_t offset, const char *fmt, ...)
{
    char what[256], key[64] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (e->key >= 0) {
        char ex[48];
        snprintf(key, sizeof key, " (under key %s)", fasa__json_excerpt(e->doc, e->key, ex, sizeof ex));
    }
    snprintf(e->buf, e->size, "%s at byte %zu%s", what, offset, key);
    return FASA_ERROR_PARSE;
}

/* ------------------------------------------------------------------------ */
/* Strings                                                                   */
/* ------------------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at p (Unicode table 3-7), or 0
 * with *why saying what is wrong with it. */
static size_t utf8_sequence(const unsigned char *p, size_t n, const char **why)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else {
        *why = c < 0xC0 ? "invalid UTF-8 (a continuation byte without a lead byte)"
             : c < 0xC2 ? "invalid UTF-8 (overlong encoding)" : "invalid UTF-8 (byte 0xF5..0xFF)";
        return 0;
    }
    if (n < 2 || p[1] < lo || p[1] > hi) {
        if (n >= 2 && p[1] >= 0x80 && p[1] <= 0xBF)
            *why = c == 0xED ? "invalid UTF-8 (an encoded UTF-16 surrogate)"
                 : c == 0xF4 ? "invalid UTF-8 (a code point above U+10FFFF)" : "invalid UTF-8 (overlong encoding)";
        else *why = "invalid UTF-8 (truncated sequence)";
        return 0;
    }
    for (size_t k = 2; k < len; k++)
        if (k >= n || p[k] < 0x80 || p[k] > 0xBF) {
            *why = "invalid UTF-8 (truncated sequence)";
            return 0;
        }
    return len;
}

static bool hex4(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = is_digit(c) ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return false;
        v = v * 16 + (uint32_t)d;
    }
    *out = v;
    return true;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) b[0] = (unsigned char)cp, n = 1;
    else if (cp < 0x800) b[0] = (unsigned char)(0xC0 | cp >> 6), b[1] = (unsigned char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        b[0] = (unsigned char)(0xE0 | cp >> 12), b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)),
        b[2] = (unsigned char)(0x80 | (cp & 0x3F)), n = 3;
    else
        b[0] = (unsigned char)(0xF0 | cp >> 18), b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F)),
        b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)), b[3] = (unsigned char)(0x80 | (cp & 0x3F)), n = 4;
    if (out) memcpy(out, b, n);
    return n;
}

/* Reads the escape at s[0] == '\\' (s[0..n) is the rest of the string body):
 * its code point and its length in the source, or 0 with *why. */
static size_t read_escape(const char *s, size_t n, uint32_t *cp, const char **why)
{
    static const char plain[] = "\"\\/bfnrt", value[] = "\"\\/\b\f\n\r\t";
    const char *p = n >= 2 && s[1] ? strchr(plain, s[1]) : NULL;
    if (p) {
        *cp = (unsigned char)value[p - plain];
        return 2;
    }
    if (n < 2 || s[1] != 'u') return *why = "invalid escape sequence", 0;
    if (n < 6 || !hex4(s + 2, cp)) return *why = "\\u is not followed by 4 hex digits", 0;
    if (*cp == 0) return *why = "\\u0000 (a NUL character) is not allowed", 0;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF) return *why = "lone low surrogate escape", 0;
    if (*cp < 0xD800 || *cp > 0xDBFF) return 6;
    /* a high surrogate must be followed by a low one: together one code point */
    uint32_t low;
    if (n < 12 || s[6] != '\\' || s[7] != 'u' || !hex4(s + 8, &low) || low < 0xDC00 || low > 0xDFFF)
        return *why = "lone high surrogate escape", 0;
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (low - 0xDC00);
    return 12;
}

/* Decodes the string body s[0..n) into out (NULL: only check it) and
 * returns the decoded length; on bad input SIZE_MAX, with the offset of the
 * problem in *bad and the reason in *why.  The result never exceeds n. */
static size_t decode_string(const char *s, size_t n, char *out, size_t *bad, const char **why)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = 1;
        if (c == '\\') {
            uint32_t cp = 0;
            if (!(len = read_escape(s + i, n - i, &cp, why))) return *bad = i, SIZE_MAX;
            o += put_utf8(out ? out + o : NULL, cp);
        } else if (c < 0x20) {
            *why = "a control character must be escaped";
            return *bad = i, SIZE_MAX;
        } else {
            if (c >= 0x80 && !(len = utf8_sequence((const unsigned char *)s + i, n - i, why))) return *bad = i, SIZE_MAX;
            if (out) memcpy(out + o, s + i, len);
            o += len;
        }
        i += len;
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* 1. The bracket pass                                                       */
/* ------------------------------------------------------------------------ */

/* Checks nesting, bracket pairs and control bytes up to the end of the
 * first top-level value, and that only whitespace follows it.  *value_end
 * is where that value ends (size when no container closes: a scalar or a
 * truncated document, which jsmn then reports). */
static fasa_status bracket_pass(const json_err *e, const char *s, size_t size, int max_depth, size_t *value_end)
{
    char open[FASA__JSON_MAX_DEPTH];
    size_t open_at[FASA__JSON_MAX_DEPTH];
    int depth = 0;
    bool in_string = false;
    *value_end = size;
    for (size_t i = 0; i < size && *value_end == size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (in_string) {
            if (c == '\\') i++; /* the escaped character cannot end the string */
            else if (c == '"') in_string = false;
            else if (c < 0x20) return fail_at(e, i, "control character 0x%02x inside a string (must be escaped)", c);
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (depth == max_depth)
                return fail_at(e, i, "nesting deeper than %d levels (more than the format needs)", max_depth);
            open[depth] = (char)c;
            open_at[depth++] = i;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return fail_at(e, i, "'%c' closes nothing", c);
            if (open[depth - 1] != (c == '}' ? '{' : '['))
                return fail_at(e, i, "'%c' does not close the '%c' at byte %zu", c, open[depth - 1], open_at[depth - 1]);
            if (--depth == 0) *value_end = i + 1;
        } else if (c < 0x20 && !is_ws((char)c)) {
            return fail_at(e, i, "control byte 0x%02x", c);
        }
    }
    for (size_t i = *value_end; i < size; i++)
        if (!is_ws(s[i]))
            return fail_at(e, i, s[i] == '{' || s[i] == '[' ? "a second JSON value after the top-level one"
                                                            : "trailing data after the top-level value");
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* 2. jsmn                                                                   */
/* ------------------------------------------------------------------------ */

static fasa_status jsmn_failure(const json_err *e, const char *s, size_t len, const jsmn_parser *p, int r)
{
    size_t at = p->pos < len ? p->pos : len, first = 0;
    while (first < len && is_ws(s[first])) first++;
    /* jsmn wants a delimiter after a primitive, so "5" alone ends up here */
    if (r == JSMN_ERROR_PART && at == first && at < len && s[at] != '"')
        return fail_at(e, at, "top level is not a JSON object or array");
    if (r == JSMN_ERROR_PART || at == len) return fail_at(e, at, "not valid JSON: the input ends inside a value (truncated?)");
    if (r == JSMN_ERROR_INVAL && s[at] == '"') return fail_at(e, at, "not valid JSON: bad escape in the string");
    if (r == JSMN_ERROR_INVAL) {
        unsigned char c = (unsigned char)s[at];
        if (c == 'N' || c == 'I') return fail_at(e, at, "not valid JSON: unexpected character '%c' (NaN and Infinity are not JSON)", c);
        return c >= 0x20 && c < 0x7F ? fail_at(e, at, "not valid JSON: unexpected character '%c'", c)
                                     : fail_at(e, at, "not valid JSON: unexpected byte 0x%02x", c);
    }
    return fail_at(e, at, "not valid JSON (tokenizer error %d)", r);
}

static fasa_status tokenize(fasa__json *doc, const json_err *e, size_t len)
{
    jsmn_parser p;
    jsmn_init(&p);
    int count = jsmn_parse(&p, doc->text, len, NULL, 0); /* a first pass only counts */
    if (count < 0) return jsmn_failure(e, doc->text, len, &p, count);
    if (count == 0) return fail_at(e, len, "not valid JSON: no value");
    if ((size_t)count > SIZE_MAX / sizeof(jsmntok_t)) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    doc->tokens = fasa__alloc_aligned(doc->ctx, (size_t)count * sizeof(jsmntok_t), 8);
    if (!doc->tokens) {
        snprintf(e->buf, e->size, "out of host memory for %d JSON tokens", count);
        return FASA_ERROR_OUT_OF_HOST_MEMORY;
    }
    jsmn_init(&p);
    int r = jsmn_parse(&p, doc->text, len, doc->tokens, (unsigned)count);
    if (r < 0) return jsmn_failure(e, doc->text, len, &p, r);
    doc->n_tokens = r;
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* 3. The token walk                                                         */
/* ------------------------------------------------------------------------ */

static bool valid_number(const char *s, size_t n)
{
    size_t i = s[0] == '-';
    if (i < n && s[i] == '0') i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9') while (i < n && is_digit(s[i])) i++;
    else return false;
    if (i < n && s[i] == '.') {
        size_t first = ++i;
        while (i < n && is_digit(s[i])) i++;
        if (i == first) return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i += i + 1 < n && (s[i + 1] == '+' || s[i + 1] == '-') ? 2 : 1;
        size_t first = i;
        while (i < n && is_digit(s[i])) i++;
        if (i == first) return false;
    }
    return i == n;
}

static bool is_literal(const char *s, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(s, word, n) == 0;
}

static fasa_status check_scalar(const json_err *e, const jsmntok_t *t)
{
    const char *s = e->doc->text + tok_begin(t);
    size_t n = tok_end(t) - tok_begin(t);
    if (t->type == JSMN_STRING) {
        size_t bad = 0;
        const char *why = "";
        if (decode_string(s + 1, n - 2, NULL, &bad, &why) == SIZE_MAX) return fail_at(e, tok_begin(t) + 1 + bad, "%s", why);
        return FASA_OK;
    }
    if (valid_number(s, n) || is_literal(s, n, "true") || is_literal(s, n, "false") || is_literal(s, n, "null"))
        return FASA_OK;
    return fail_at(e, tok_begin(t), "'%.*s' is not a JSON number or literal (NaN and Infinity are not JSON)",
                   (int)(n < 24 ? n : 24), s);
}

/* Checks that s[from..to) is whitespace around exactly one sep (sep 0: none). */
static fasa_status check_gap(const json_err *e, size_t from, size_t to, char sep, const char *expected)
{
    const char *s = e->doc->text;
    size_t i = from;
    while (i < to && is_ws(s[i])) i++;
    if (sep) {
        if (i == to || s[i] != sep) return fail_at(e, i, "expected %s", expected);
        for (i++; i < to && is_ws(s[i]); i++) {}
    }
    if (i < to) return fail_at(e, i, "unexpected '%c' (expected %s)", s[i], expected);
    return FASA_OK;
}

typedef struct frame {
    int tok;                     /* the open container */
    int entries;                 /* entries (arrays) or keys (objects) seen */
    bool want_value;             /* an object's key was read, its value comes next */
} frame;

/* Closes the innermost container: only whitespace may remain before its bracket. */
static fasa_status close_frame(json_err *e, const frame *f, size_t *pos)
{
    const jsmntok_t *c = tok_at(e->doc, f->tok);
    size_t bracket = (size_t)c->end - 1, i = *pos;
    if (f->want_value) return fail_at(e, bracket, "a key has no value");
    while (i < bracket && is_ws(e->doc->text[i])) i++;
    if (i < bracket && e->doc->text[i] == ',') return fail_at(e, i, "trailing comma before '%c'", e->doc->text[bracket]);
    if (i < bracket) return fail_at(e, i, "unexpected '%c' (expected '%c')", e->doc->text[i], e->doc->text[bracket]);
    *pos = bracket + 1;
    return FASA_OK;
}

/* Places token i in its container: checks the separator before it. */
static fasa_status place(json_err *e, frame *f, int depth, int i, size_t pos)
{
    const jsmntok_t *t = tok_at(e->doc, i);
    bool object = tok_at(e->doc, f->tok)->type == JSMN_OBJECT;
    fasa_status st;
    if (object && f->want_value) {
        st = check_gap(e, pos, tok_begin(t), ':', "':' after the key");
        f->want_value = false;
        return st;
    }
    if (object && depth == 1) e->key = -1; /* a message about this key must not name the one before */
    st = f->entries ? check_gap(e, pos, tok_begin(t), ',', "',' between entries")
                    : check_gap(e, pos, tok_begin(t), 0, object ? "a key" : "a value");
    if (st != FASA_OK) return st;
    f->entries++;
    if (!object) return FASA_OK;
    if (t->type != JSMN_STRING) return fail_at(e, tok_begin(t), "an object key must be a string");
    f->want_value = true;
    return FASA_OK;
}

static fasa_status walk(json_err *e, int max_depth, size_t len)
{
    const fasa__json *doc = e->doc;
    frame stack[FASA__JSON_MAX_DEPTH];
    int depth = 0;
    size_t pos = 0;              /* end of what has been checked */
    fasa_status st = FASA_OK;
    for (int i = 0; st == FASA_OK && i < doc->n_tokens; i++) {
        const jsmntok_t *t = tok_at(doc, i);
        while (st == FASA_OK && depth > 0 && (size_t)tok_at(doc, stack[depth - 1].tok)->end <= tok_begin(t))
            st = close_frame(e, &stack[--depth], &pos);
        if (st != FASA_OK) break;
        if (depth == 0 && i > 0) return fail_at(e, tok_begin(t), "a second JSON value after the top-level one");
        st = depth ? place(e, &stack[depth - 1], depth, i, pos) : check_gap(e, pos, tok_begin(t), 0, "a value");
        if (st != FASA_OK) break;
        if (t->type == JSMN_OBJECT || t->type == JSMN_ARRAY) {
            if (depth == max_depth) return fail_at(e, tok_begin(t), "nesting deeper than %d levels", max_depth);
            stack[depth++] = (frame){.tok = i};
            pos = tok_begin(t) + 1;
            continue;
        }
        st = check_scalar(e, t);
        pos = tok_end(t);
        if (st == FASA_OK && depth == 1 && stack[0].want_value) e->key = i; /* a valid top-level key */
    }
    while (st == FASA_OK && depth > 0) st = close_frame(e, &stack[--depth], &pos);
    e->key = -1;
    return st == FASA_OK ? check_gap(e, pos, len, 0, "the end of the input") : st;
}

/* ------------------------------------------------------------------------ */
/* The document                                                              */
/* ------------------------------------------------------------------------ */

fasa_status fasa__json_parse(fasa_context *ctx, const char *text, size_t size, int max_depth, fasa__json *doc,
                             char *err, size_t err_size)
{
    *doc = (fasa__json){.ctx = ctx, .text = text, .size = size};
    json_err e = {.doc = doc, .buf = err, .size = err_size, .key = -1};
    snprintf(err, err_size, "not valid JSON");
    if (max_depth < 1 || max_depth > FASA__JSON_MAX_DEPTH) max_depth = FASA__JSON_MAX_DEPTH;
    /* jsmn keeps offsets in int */
    if (size > (size_t)INT32_MAX) return fail_at(&e, 0, "input of %zu bytes is too large", size);
    size_t len = 0;
    fasa_status st = bracket_pass(&e, text, size, max_depth, &len);
    if (st == FASA_OK) st = tokenize(doc, &e, len);
    if (st == FASA_OK) st = walk(&e, max_depth, len);
    if (st == FASA_OK && !(doc->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0))) {
        snprintf(err, err_size, "out of host memory for the C locale");
        st = FASA_ERROR_OUT_OF_HOST_MEMORY;
    }
    return st;
}

void fasa__json_free(fasa__json *doc)
{
    if (!doc) return;
    fasa__free(doc->ctx, doc->tokens);
    if (doc->c_locale) freelocale(doc->c_locale);
    doc->tokens = NULL;
    doc->c_locale = (locale_t)0;
    doc->n_tokens = 0;
}

/* ------------------------------------------------------------------------ */
/* Reading tokens                                                            */
/* ------------------------------------------------------------------------ */

fasa__json_type fasa__json_type_of(const fasa__json *doc, int tok)
{
    const jsmntok_t *t = tok_at(doc, tok);
    if (!t) return FASA__JSON_NONE;
    switch (t->type) {
    case JSMN_OBJECT: return FASA__JSON_OBJECT;
    case JSMN_ARRAY: return FASA__JSON_ARRAY;
    case JSMN_STRING: return FASA__JSON_STRING;
    case JSMN_PRIMITIVE: {
        char c = doc->text[t->start];
        return c == '-' || is_digit(c) ? FASA__JSON_NUMBER : FASA__JSON_LITERAL;
    }
    default: return FASA__JSON_NONE;
    }
}

size_t fasa__json_offset(const fasa__json *doc, int tok)
{
    const jsmntok_t *t = tok_at(doc, tok);
    return t ? tok_begin(t) : doc->size;
}

int fasa__json_size(const fasa__json *doc, int tok)
{
    const jsmntok_t *t = tok_at(doc, tok);
    return t && (t->type == JSMN_OBJECT || t->type == JSMN_ARRAY) ? t->size : 0;
}

int fasa__json_next(const fasa__json *doc, int tok)
{
    const jsmntok_t *t = tok_at(doc, tok);
    if (!t) return doc->n_tokens;
    int next = tok + 1;
    while (next < doc->n_tokens && tok_begin(tok_at(doc, next)) < tok_end(t)) next++;
    return next;
}

bool fasa__json_get_uint(const fasa__json *doc, int tok, uint64_t max, uint64_t *out)
{
    if (fasa__json_type_of(doc, tok) != FASA__JSON_NUMBER) return false;
    const jsmntok_t *t = tok_at(doc, tok);
    uint64_t v = 0;
    for (int i = t->start; i < t->end; i++) {
        char c = doc->text[i];
        uint64_t digit = (uint64_t)(c - '0');
        if (!is_digit(c) || digit > max || v > (max - digit) / 10) return false; /* v * 10 + digit > max */
        v = v * 10 + (uint64_t)(c - '0');
    }
    *out = v;
    return true;
}

bool fasa__json_get_double(const fasa__json *doc, int tok, double *out)
{
    if (fasa__json_type_of(doc, tok) != FASA__JSON_NUMBER || !doc->c_locale) return false;
    const jsmntok_t *t = tok_at(doc, tok);
    /* The walk checked the grammar, and a number inside the (object) document
     * is always followed by a delimiter, so strtod stops at the token's end. */
    char *end = NULL;
    double v = strtod_l(doc->text + t->start, &end, doc->c_locale);
    if (end != doc->text + t->end) return false;
    *out = v;
    return true;
}

fasa_status fasa__json_get_string(const fasa__json *doc, int tok, char **out)
{
    const jsmntok_t *t = tok_at(doc, tok);
    if (!t || t->type != JSMN_STRING) return FASA_ERROR_INVALID_ARGUMENT;
    size_t n = (size_t)(t->end - t->start), bad = 0;
    const char *why = "";
    char *s = fasa__alloc_aligned(doc->ctx, n + 1, 8);
    if (!s) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    size_t len = decode_string(doc->text + t->start, n, s, &bad, &why);
    if (len == SIZE_MAX) { /* the walk checked every string: cannot happen */
        fasa__free(doc->ctx, s);
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    s[len] = '\0';
    *out = s;
    return FASA_OK;
}

bool fasa__json_string_is(const fasa__json *doc, int tok, const char *key)
{
    const jsmntok_t *t = tok_at(doc, tok);
    char buf[128];
    size_t n = t ? (size_t)(t->end - t->start) : 0, bad = 0;
    const char *why = "";
    if (!t || t->type != JSMN_STRING) return false;
    const char *raw = doc->text + t->start;
    if (!memchr(raw, '\\', n)) return n == strlen(key) && memcmp(raw, key, n) == 0; /* nothing to decode */
    /* decoding never lengthens a string, so a longer source cannot fit buf */
    if (n >= sizeof buf) return false;
    size_t len = decode_string(raw, n, buf, &bad, &why);
    return len != SIZE_MAX && len == strlen(key) && memcmp(buf, key, len) == 0;
}

const char *fasa__json_excerpt(const fasa__json *doc, int tok, char *buf, size_t buf_size)
{
    const jsmntok_t *t = tok_at(doc, tok);
    if (!t || buf_size < 8) return "?";
    /* a container's source may span lines: name its kind instead */
    if (t->type == JSMN_OBJECT || t->type == JSMN_ARRAY) return t->type == JSMN_OBJECT ? "{...}" : "[...]";
    size_t from = tok_begin(t), n = tok_end(t) - from;
    if (n < buf_size) {
        snprintf(buf, buf_size, "%.*s", (int)n, doc->text + from);
        return buf;
    }
    /* cut before a UTF-8 continuation byte so the excerpt stays valid text */
    size_t keep = buf_size - 4;
    while (keep > 0 && ((unsigned char)doc->text[from + keep] & 0xC0) == 0x80) keep--;
    snprintf(buf, buf_size, "%.*s...", (int)keep, doc->text + from);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */
/* ------------------------------------------------------------------------ */

void fasa__json_write_string(FILE *f, const char *s)
{
    const char *why = "";
    fputc('"', f);
    for (size_t i = 0, n = strlen(s); i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : utf8_sequence((const unsigned char *)s + i, n - i, &why);
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else if (len == 0) fputs("\xef\xbf\xbd", f); /* U+FFFD for the stray byte */
        else fwrite(s + i, 1, len, f);
        i += len ? len : 1;
    }
    fputc('"', f);
}
