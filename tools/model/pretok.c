/* Pre-tokenizer: digit isolation plus the GPT-2 split (see tokenizer.h). */
#include <stdint.h>

#include "tokenizer.h"

typedef enum char_class { CC_LETTER, CC_NUMBER, CC_SPACE, CC_OTHER } char_class;

/* Decodes one UTF-8 code point at s[0..avail).  Invalid or truncated
 * sequences yield a 1-byte pseudo code point above U+10FFFF. */
static uint32_t utf8_next(const unsigned char *s, size_t avail, size_t *n)
{
    unsigned char c = s[0];
    uint32_t cp;
    size_t len;
    if (c < 0x80) {
        *n = 1;
        return c;
    }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else goto invalid;
    if (len > avail)
        goto invalid;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            goto invalid;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* overlong forms, surrogates, beyond U+10FFFF */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        goto invalid;
    *n = len;
    return cp;
invalid:
    *n = 1;
    return 0x110000u + c;
}

static bool is_unicode_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

static char_class classify_latin1(uint32_t cp)
{
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z'))
        return CC_LETTER;
    if (cp >= '0' && cp <= '9')
        return CC_NUMBER;
    if (cp < 0xA0)
        return CC_OTHER;  /* ASCII punctuation and C0/C1 controls */
    if (cp == 0xAA || cp == 0xB5 || cp == 0xBA || (cp >= 0xC0 && cp != 0xD7 && cp != 0xF7))
        return CC_LETTER;
    if (cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || (cp >= 0xBC && cp <= 0xBE))
        return CC_NUMBER;
    return CC_OTHER;
}

static char_class classify(uint32_t cp)
{
    if (is_unicode_space(cp))
        return CC_SPACE;
    if (cp < 0x100)
        return classify_latin1(cp);
    if (cp > 0x10FFFF)
        return CC_OTHER;  /* invalid byte */
    if ((cp >= 0x2010 && cp <= 0x205E) || (cp >= 0x20A0 && cp <= 0x20CF) ||
        (cp >= 0x3001 && cp <= 0x3003))
        return CC_OTHER;
    return CC_LETTER;
}

static char_class class_at(const char *t, size_t p, size_t e, size_t *n)
{
    return classify(utf8_next((const unsigned char *)t + p, e - p, n));
}

/* End of the run of class c starting at p. */
static size_t run_end(const char *t, size_t p, size_t e, char_class c)
{
    size_t n;
    while (p < e && class_at(t, p, e, &n) == c)
        p += n;
    return p;
}

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at p, or 0. */
static size_t contraction(const char *t, size_t p, size_t e)
{
    if (p + 1 >= e || t[p] != '\'')
        return 0;
    char a = t[p + 1], b = p + 2 < e ? t[p + 2] : '\0';
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* Whitespace run at p: emits `\s+(?!\S)`, i.e. the run minus its last char
 * when a non-space follows (that char then starts the next piece), else the
 * lone char via `\s+`. */
static size_t space_piece_end(const char *t, size_t p, size_t e)
{
    size_t n, last = p, q = p, count = 0;
    while (q < e && class_at(t, q, e, &n) == CC_SPACE) {
        last = q;
        q += n;
        count++;
    }
    return (q == e || count == 1) ? q : last;
}

static fm_status gpt2_split(const char *t, size_t p, size_t e, fm_piece_fn emit, void *user)
{
    while (p < e) {
        size_t n, q = p + contraction(t, p, e);
        char_class c = class_at(t, p, e, &n);
        if (q == p && t[p] == ' ' && p + 1 < e) {
            size_t n2;
            char_class c2 = class_at(t, p + 1, e, &n2);
            if (c2 != CC_SPACE)
                q = run_end(t, p + 1, e, c2);
        }
        if (q == p)
            q = c == CC_SPACE ? space_piece_end(t, p, e) : run_end(t, p, e, c);
        fm_status st = emit(user, t + p, q - p);
        if (st)
            return st;
        p = q;
    }
    return FM_OK;
}

fm_status fm_pretokenize(const char *text, size_t len, bool split_digits, fm_piece_fn emit,
                         void *user)
{
    if (!split_digits)
        return gpt2_split(text, 0, len, emit, user);
    size_t start = 0, p = 0, n;
    fm_status st = FM_OK;
    while (p < len && !st) {
        if (class_at(text, p, len, &n) != CC_NUMBER) {
            p += n;
            continue;
        }
        st = gpt2_split(text, start, p, emit, user);
        if (!st)
            st = emit(user, text + p, n);
        p += n;
        start = p;
    }
    return st ? st : gpt2_split(text, start, len, emit, user);
}
