/* GPT-2 byte-level BPE: vocabulary, merges, encoder, decoder, chat format. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "hashmap.h"

#define TOKEN_TYPE_CONTROL 3
#define TOKEN_TYPE_USER_DEFINED 4
#define TOKEN_TYPE_MAX 6   /* 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte */

typedef struct special_text {
    int32_t id;
    const char *text;    /* into tok->bytes */
    size_t len;
} special_text;

struct fm_tokenizer {
    uint32_t n_vocab;
    char *bytes;             /* decoded bytes of all tokens, back to back */
    uint64_t *bytes_off;     /* [n_vocab + 1] offsets into bytes */
    uint8_t *is_control;     /* [n_vocab] */
    int32_t byte_token[256]; /* id of the one-byte token for each byte */
    fm_u64map merges;        /* (left id << 32 | right id) -> (rank << 32 | result id) */
    special_text *specials;  /* longest first */
    size_t n_specials;
    bool split_digits;
    fm_special_ids ids;
};

/* ------------------------------------------------------------------------ */
/* Token id lists                                                            */
/* ------------------------------------------------------------------------ */

fm_status fm_tokens_push(fm_tokens *t, int32_t id, fm_error *err)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        int32_t *ids = realloc(t->ids, cap * sizeof *ids);
        if (!ids)
            return fm_fail(err, FM_ERR_NOMEM, "out of memory for %zu token ids", cap);
        t->ids = ids;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return FM_OK;
}

void fm_tokens_free(fm_tokens *t)
{
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

/* ------------------------------------------------------------------------ */
/* The GPT-2 byte <-> code point alphabet                                    */
/* ------------------------------------------------------------------------ */

static bool byte_is_direct(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
}

/* byte -> code point: printable bytes map to themselves, the other 68 to
 * U+0100.. in increasing byte order. */
static void build_alphabet(uint32_t byte_to_cp[256], int16_t cp_to_byte[324])
{
    uint32_t next = 256;
    for (int i = 0; i < 324; i++)
        cp_to_byte[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        byte_to_cp[b] = byte_is_direct(b) ? b : next++;
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;   /* the alphabet stays below U+0800 */
}

/* Decodes a token string of the alphabet into bytes (written to out, which
 * has room for s.len bytes: decoding never grows a string).  A code point
 * outside the alphabet is kept as its UTF-8 bytes. */
static size_t alphabet_to_bytes(gguf_str s, const int16_t cp_to_byte[324], char *out)
{
    const unsigned char *p = (const unsigned char *)s.ptr;
    size_t i = 0, o = 0;
    while (i < s.len) {
        uint32_t cp = p[i];
        size_t n = 1;
        if (p[i] >= 0xC0 && p[i] < 0xE0 && i + 1 < s.len && (p[i + 1] & 0xC0) == 0x80) {
            cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
            n = 2;
        }
        if (cp < 324 && cp_to_byte[cp] >= 0)
            out[o++] = (char)cp_to_byte[cp];
        else {
            memcpy(out + o, p + i, n);
            o += n;
        }
        i += n;
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

static fm_status load_token_bytes(fm_tokenizer *tok, const gguf_str *strs, const int32_t *types,
                                  fm_error *err)
{
    uint32_t b2c[256];
    int16_t c2b[324];
    uint64_t total = 0;
    build_alphabet(b2c, c2b);
    for (uint32_t i = 0; i < tok->n_vocab; i++)
        total += strs[i].len;
    tok->bytes = malloc(total + 1);
    tok->bytes_off = malloc((tok->n_vocab + 1) * sizeof *tok->bytes_off);
    tok->is_control = calloc(tok->n_vocab, 1);
    if (!tok->bytes || !tok->bytes_off || !tok->is_control)
        return fm_fail(err, FM_ERR_NOMEM, "tokenizer: out of memory for %u tokens", tok->n_vocab);
    uint64_t o = 0;
    for (uint32_t i = 0; i < tok->n_vocab; i++) {
        tok->bytes_off[i] = o;
        bool literal = types && (types[i] == TOKEN_TYPE_CONTROL || types[i] == TOKEN_TYPE_USER_DEFINED);
        tok->is_control[i] = types && types[i] == TOKEN_TYPE_CONTROL;
        if (literal) {
            memcpy(tok->bytes + o, strs[i].ptr, strs[i].len);
            o += strs[i].len;
        } else {
            o += alphabet_to_bytes(strs[i], c2b, tok->bytes + o);
        }
    }
    tok->bytes_off[tok->n_vocab] = o;
    return FM_OK;
}

/* One-byte tokens.  SmolLM2's vocab lacks 21 of them (bytes that never occur
 * in UTF-8 such as 0xC0 and 0xF5..0xFF, and a few C0 controls): those bytes
 * get -1 and are dropped by the encoder, as HF's BPE without an unk token and
 * llama.cpp do. */
static void find_byte_tokens(fm_tokenizer *tok, const fm_strmap *vocab)
{
    uint32_t b2c[256];
    int16_t c2b[324];
    build_alphabet(b2c, c2b);
    for (unsigned b = 0; b < 256; b++) {
        char s[2];
        size_t n = utf8_encode(b2c[b], s);
        if (!fm_strmap_get(vocab, s, n, &tok->byte_token[b]))
            tok->byte_token[b] = -1;
    }
}

static fm_status add_merge(fm_tokenizer *tok, const fm_strmap *vocab, gguf_str m, uint32_t rank,
                           fm_error *err)
{
    const char *space = memchr(m.ptr, ' ', m.len);
    int32_t a, b, r;
    char shown[80], joined[512];
    fm_sanitize(shown, sizeof shown, m.ptr, m.len, 60);
    if (!space || space == m.ptr || memchr(space + 1, ' ', m.len - (size_t)(space - m.ptr) - 1) ||
        m.len - 1 > sizeof joined)
        return fm_fail(err, FM_ERR_PARSE, "tokenizer.ggml.merges[%u] = '%s' is not 'A B'", rank,
                       shown);
    size_t la = (size_t)(space - m.ptr), lb = m.len - la - 1;
    memcpy(joined, m.ptr, la);
    memcpy(joined + la, space + 1, lb);
    if (!fm_strmap_get(vocab, m.ptr, la, &a) || !fm_strmap_get(vocab, space + 1, lb, &b) ||
        !fm_strmap_get(vocab, joined, la + lb, &r))
        return fm_fail(err, FM_ERR_PARSE,
                       "tokenizer.ggml.merges[%u] = '%s' uses a token missing from the vocab",
                       rank, shown);
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b, old;
    if (fm_u64map_get(&tok->merges, key, &old))
        return FM_OK;   /* a repeated pair keeps its first (best) rank */
    if (!fm_u64map_put(&tok->merges, key, (uint64_t)rank << 32 | (uint32_t)r))
        return fm_fail(err, FM_ERR_NOMEM, "tokenizer: out of memory for merges");
    return FM_OK;
}

static fm_status load_merges(fm_tokenizer *tok, const gguf_file *f, const fm_strmap *vocab,
                             fm_error *err)
{
    gguf_str *merges = NULL;
    uint64_t n = 0;
    fm_status st = gguf_get_str_array(f, "tokenizer.ggml.merges", &merges, &n, err);
    if (st)
        return st;
    if (n > UINT32_MAX || !fm_u64map_init(&tok->merges, n))
        st = fm_fail(err, FM_ERR_NOMEM, "tokenizer: cannot index %llu merges", (unsigned long long)n);
    for (uint64_t i = 0; !st && i < n; i++)
        st = add_merge(tok, vocab, merges[i], (uint32_t)i, err);
    free(merges);
    return st;
}

static int cmp_special_len(const void *a, const void *b)
{
    const special_text *x = a, *y = b;
    return x->len < y->len ? 1 : x->len > y->len ? -1 : (x->id > y->id) - (x->id < y->id);
}

static fm_status collect_specials(fm_tokenizer *tok, const int32_t *types, fm_error *err)
{
    size_t n = 0;
    for (uint32_t i = 0; types && i < tok->n_vocab; i++)
        n += (types[i] == TOKEN_TYPE_CONTROL || types[i] == TOKEN_TYPE_USER_DEFINED);
    tok->specials = calloc(n ? n : 1, sizeof *tok->specials);
    if (!tok->specials)
        return fm_fail(err, FM_ERR_NOMEM, "tokenizer: out of memory");
    for (uint32_t i = 0; types && i < tok->n_vocab; i++) {
        if (types[i] != TOKEN_TYPE_CONTROL && types[i] != TOKEN_TYPE_USER_DEFINED)
            continue;
        size_t len;
        const char *text = fm_token_bytes(tok, (int32_t)i, &len);
        if (len)
            tok->specials[tok->n_specials++] = (special_text){ (int32_t)i, text, len };
    }
    qsort(tok->specials, tok->n_specials, sizeof *tok->specials, cmp_special_len);
    return FM_OK;
}

static fm_status optional_id(const gguf_file *f, const char *key, uint32_t n_vocab, int32_t *out,
                             fm_error *err)
{
    uint64_t v;
    *out = -1;
    if (!gguf_find_kv(f, key))
        return FM_OK;
    fm_status st = gguf_get_uint(f, key, n_vocab ? n_vocab - 1 : 0, &v, err);
    if (!st)
        *out = (int32_t)v;
    return st;
}

static fm_status load_special_ids(fm_tokenizer *tok, const gguf_file *f, const fm_strmap *vocab,
                                  fm_error *err)
{
    fm_special_ids *s = &tok->ids;
    fm_status st = optional_id(f, "tokenizer.ggml.bos_token_id", tok->n_vocab, &s->bos, err);
    if (!st)
        st = optional_id(f, "tokenizer.ggml.eos_token_id", tok->n_vocab, &s->eos, err);
    if (!st)
        st = optional_id(f, "tokenizer.ggml.padding_token_id", tok->n_vocab, &s->pad, err);
    if (!st)
        st = optional_id(f, "tokenizer.ggml.unknown_token_id", tok->n_vocab, &s->unk, err);
    if (!st && gguf_find_kv(f, "tokenizer.ggml.add_bos_token"))
        st = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &s->add_bos, err);
    if (st)
        return st;
    if (!fm_strmap_get(vocab, "<|im_start|>", 12, &s->im_start))
        s->im_start = -1;
    if (!fm_strmap_get(vocab, "<|im_end|>", 10, &s->im_end))
        s->im_end = -1;
    return FM_OK;
}

static fm_status check_model_kind(fm_tokenizer *tok, const gguf_file *f, fm_error *err)
{
    gguf_str model, pre;
    char shown[80];
    fm_status st = gguf_get_str(f, "tokenizer.ggml.model", &model, err);
    if (st)
        return st;
    if (model.len != 4 || memcmp(model.ptr, "gpt2", 4) != 0) {
        fm_sanitize(shown, sizeof shown, model.ptr, model.len, 60);
        return fm_fail(err, FM_ERR_UNSUPPORTED,
                       "tokenizer.ggml.model = '%s': only 'gpt2' (byte-level BPE) is supported", shown);
    }
    st = gguf_get_str(f, "tokenizer.ggml.pre", &pre, err);
    if (st)
        return st;
    fm_sanitize(shown, sizeof shown, pre.ptr, pre.len, 60);
    if (!strcmp(shown, "smollm") || !strcmp(shown, "starcoder"))
        tok->split_digits = true;
    else if (strcmp(shown, "gpt2") && strcmp(shown, "gpt-2"))
        return fm_fail(err, FM_ERR_UNSUPPORTED,
                       "tokenizer.ggml.pre = '%s': supported are smollm, starcoder, gpt2", shown);
    return FM_OK;
}

static fm_status load_vocab(fm_tokenizer *tok, const gguf_file *f, gguf_str *strs, uint64_t n,
                            int32_t *types, fm_error *err)
{
    fm_strmap vocab;
    if (!fm_strmap_init(&vocab, n))
        return fm_fail(err, FM_ERR_NOMEM, "tokenizer: out of memory for the vocab index");
    /* A repeated token string keeps its first id, as HF does. */
    for (uint64_t i = 0; i < n; i++) {
        int32_t first;
        if (fm_strmap_get(&vocab, strs[i].ptr, strs[i].len, &first))
            continue;
        if (!fm_strmap_put(&vocab, strs[i].ptr, strs[i].len, (int32_t)i, NULL)) {
            fm_strmap_free(&vocab);
            return fm_fail(err, FM_ERR_NOMEM, "tokenizer: out of memory for the vocab index");
        }
    }
    fm_status st = load_token_bytes(tok, strs, types, err);
    find_byte_tokens(tok, &vocab);
    if (!st)
        st = load_merges(tok, f, &vocab, err);
    if (!st)
        st = load_special_ids(tok, f, &vocab, err);
    if (!st)
        st = collect_specials(tok, types, err);
    fm_strmap_free(&vocab);
    return st;
}

fm_status fm_tokenizer_load(const gguf_file *f, fm_tokenizer **out, fm_error *err)
{
    gguf_str *strs = NULL;
    int32_t *types = NULL;
    uint64_t n = 0, n_types = 0;
    if (!f || !out)
        return fm_fail(err, FM_ERR_ARG, "fm_tokenizer_load: NULL argument");
    *out = NULL;
    fm_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok)
        return fm_fail(err, FM_ERR_NOMEM, "tokenizer: out of memory");
    fm_status st = check_model_kind(tok, f, err);
    if (!st)
        st = gguf_get_str_array(f, "tokenizer.ggml.tokens", &strs, &n, err);
    if (!st && (n == 0 || n > INT32_MAX))
        st = fm_fail(err, FM_ERR_PARSE, "tokenizer.ggml.tokens has %llu entries",
                     (unsigned long long)n);
    if (!st && gguf_find_kv(f, "tokenizer.ggml.token_type")) {
        st = gguf_get_i32_array(f, "tokenizer.ggml.token_type", &types, &n_types, err);
        if (!st && n_types != n)
            st = fm_fail(err, FM_ERR_MISMATCH,
                         "tokenizer.ggml.token_type has %llu entries, tokenizer.ggml.tokens %llu",
                         (unsigned long long)n_types, (unsigned long long)n);
        for (uint64_t i = 0; !st && i < n_types; i++)
            if (types[i] < 0 || types[i] > TOKEN_TYPE_MAX)
                st = fm_fail(err, FM_ERR_MISMATCH,
                             "tokenizer.ggml.token_type[%llu] = %d is not a token type (0..%d)",
                             (unsigned long long)i, types[i], TOKEN_TYPE_MAX);
    }
    if (!st) {
        tok->n_vocab = (uint32_t)n;
        st = load_vocab(tok, f, strs, n, types, err);
    }
    free(strs);
    free(types);
    if (st) {
        fm_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return FM_OK;
}

void fm_tokenizer_free(fm_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->bytes);
    free(tok->bytes_off);
    free(tok->is_control);
    free(tok->specials);
    fm_u64map_free(&tok->merges);
    free(tok);
}

uint32_t fm_tokenizer_n_vocab(const fm_tokenizer *tok) { return tok->n_vocab; }
const fm_special_ids *fm_tokenizer_special(const fm_tokenizer *tok) { return &tok->ids; }

bool fm_tokenizer_byte_has_token(const fm_tokenizer *tok, uint8_t byte)
{
    return tok->byte_token[byte] >= 0;
}

bool fm_tokenizer_is_control(const fm_tokenizer *tok, int32_t id)
{
    return id >= 0 && (uint32_t)id < tok->n_vocab && tok->is_control[id];
}

const char *fm_token_bytes(const fm_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= tok->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = tok->bytes_off[id + 1] - tok->bytes_off[id];
    return tok->bytes + tok->bytes_off[id];
}

/* ------------------------------------------------------------------------ */
/* BPE on one piece: merge the lowest-rank adjacent pair (leftmost on ties)  */
/* until none applies.  A binary heap with lazy deletion keeps it            */
/* O(n log n) even for long pieces such as runs of punctuation.              */
/* ------------------------------------------------------------------------ */

typedef struct bpe_sym { int32_t id, prev, next; } bpe_sym;
typedef struct bpe_cand { uint32_t rank; int32_t left, left_id, right_id; } bpe_cand;

typedef struct bpe_work {
    bpe_sym *syms;
    bpe_cand *heap;
    size_t cap, heap_n;
} bpe_work;

static bool cand_less(const bpe_cand *a, const bpe_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_work *w, bpe_cand c)
{
    size_t i = w->heap_n++;
    while (i > 0 && cand_less(&c, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = c;
}

static bpe_cand heap_pop(bpe_work *w)
{
    bpe_cand top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->heap_n)
            break;
        if (c + 1 < w->heap_n && cand_less(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!cand_less(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (w->heap_n)
        w->heap[i] = last;
    return top;
}

static void try_pair(const fm_tokenizer *tok, bpe_work *w, int32_t left)
{
    if (left < 0 || w->syms[left].next < 0)
        return;
    int32_t a = w->syms[left].id, b = w->syms[w->syms[left].next].id;
    uint64_t v;
    if (fm_u64map_get(&tok->merges, (uint64_t)(uint32_t)a << 32 | (uint32_t)b, &v))
        heap_push(w, (bpe_cand){ (uint32_t)(v >> 32), left, a, b });
}

static fm_status work_reserve(bpe_work *w, size_t n, fm_error *err)
{
    if (n <= w->cap)
        return FM_OK;
    size_t cap = n * 2;
    bpe_sym *s = realloc(w->syms, cap * sizeof *s);
    if (s)
        w->syms = s;
    bpe_cand *h = realloc(w->heap, cap * 2 * sizeof *h);
    if (h)
        w->heap = h;
    if (!s || !h)
        return fm_fail(err, FM_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte piece", n);
    w->cap = cap;
    return FM_OK;
}

static fm_status bpe_piece(const fm_tokenizer *tok, bpe_work *w, const unsigned char *p, size_t n,
                           fm_tokens *out, fm_error *err)
{
    fm_status st = work_reserve(w, n, err);
    if (st)
        return st;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (tok->byte_token[p[i]] < 0)
            continue;
        w->syms[m] = (bpe_sym){ tok->byte_token[p[i]], (int32_t)m - 1, (int32_t)m + 1 };
        m++;
    }
    if (m == 0)
        return FM_OK;
    w->syms[m - 1].next = -1;
    n = m;
    w->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        try_pair(tok, w, (int32_t)i);
    while (w->heap_n) {
        bpe_cand c = heap_pop(w);
        bpe_sym *l = &w->syms[c.left];
        /* Stale if either side changed since the candidate was pushed: ids
         * only grow by merging, so equal ids mean the same two symbols. */
        if (l->id != c.left_id || l->next < 0 || w->syms[l->next].id != c.right_id)
            continue;
        uint64_t v;
        fm_u64map_get(&tok->merges, (uint64_t)(uint32_t)c.left_id << 32 | (uint32_t)c.right_id, &v);
        bpe_sym *r = &w->syms[l->next];
        l->id = (int32_t)(uint32_t)v;
        r->id = -1;
        l->next = r->next;
        if (r->next >= 0)
            w->syms[r->next].prev = c.left;
        try_pair(tok, w, l->prev);
        try_pair(tok, w, c.left);
    }
    for (int32_t i = 0; i >= 0 && st == FM_OK; i = w->syms[i].next)
        st = fm_tokens_push(out, w->syms[i].id, err);
    return st;
}

typedef struct encode_ctx {
    const fm_tokenizer *tok;
    bpe_work work;
    fm_tokens *out;
    fm_error *err;
} encode_ctx;

static fm_status encode_piece(void *user, const char *piece, size_t len)
{
    encode_ctx *c = user;
    return bpe_piece(c->tok, &c->work, (const unsigned char *)piece, len, c->out, c->err);
}

static fm_status encode_plain(encode_ctx *c, const char *text, size_t len)
{
    return fm_pretokenize(text, len, c->tok->split_digits, encode_piece, c);
}

fm_status fm_tokenize(const fm_tokenizer *tok, const char *text, size_t len, fm_tokens *out,
                      fm_error *err)
{
    if (!tok || !out || (!text && len))
        return fm_fail(err, FM_ERR_ARG, "fm_tokenize: NULL argument");
    encode_ctx c = { tok, { 0 }, out, err };
    fm_status st = encode_plain(&c, text, len);
    free(c.work.syms);
    free(c.work.heap);
    return st;
}

/* Longest special token whose text starts at text[p], or NULL. */
static const special_text *special_at(const fm_tokenizer *tok, const char *text, size_t len,
                                      size_t p)
{
    for (size_t i = 0; i < tok->n_specials; i++) {
        const special_text *s = &tok->specials[i];
        if (s->len <= len - p && memcmp(text + p, s->text, s->len) == 0)
            return s;
    }
    return NULL;
}

fm_status fm_tokenize_special(const fm_tokenizer *tok, const char *text, size_t len,
                              fm_tokens *out, fm_error *err)
{
    if (!tok || !out || (!text && len))
        return fm_fail(err, FM_ERR_ARG, "fm_tokenize_special: NULL argument");
    encode_ctx c = { tok, { 0 }, out, err };
    fm_status st = FM_OK;
    size_t start = 0;
    for (size_t p = 0; p < len && !st; p++) {
        const special_text *s = special_at(tok, text, len, p);
        if (!s)
            continue;
        st = encode_plain(&c, text + start, p - start);
        if (!st)
            st = fm_tokens_push(out, s->id, err);
        start = p + s->len;
        p = start - 1;
    }
    if (!st)
        st = encode_plain(&c, text + start, len - start);
    free(c.work.syms);
    free(c.work.heap);
    return st;
}

fm_status fm_detokenize(const fm_tokenizer *tok, const int32_t *ids, size_t n, bool render_control,
                        char **out, size_t *out_len, fm_error *err)
{
    size_t total = 0, len;
    if (!tok || !out || (!ids && n))
        return fm_fail(err, FM_ERR_ARG, "fm_detokenize: NULL argument");
    for (size_t i = 0; i < n; i++) {
        if (!fm_token_bytes(tok, ids[i], &len))
            return fm_fail(err, FM_ERR_ARG, "fm_detokenize: token %zu has id %d outside 0..%u", i,
                           ids[i], tok->n_vocab - 1);
        if (render_control || !tok->is_control[ids[i]])
            total += len;
    }
    char *buf = malloc(total + 1);
    if (!buf)
        return fm_fail(err, FM_ERR_NOMEM, "fm_detokenize: out of memory for %zu bytes", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b = fm_token_bytes(tok, ids[i], &len);
        if (render_control || !tok->is_control[ids[i]]) {
            memcpy(buf + o, b, len);
            o += len;
        }
    }
    buf[o] = '\0';
    *out = buf;
    if (out_len)
        *out_len = o;
    return FM_OK;
}

/* One chat turn: <|im_start|>{role}\n{content}<|im_end|>\n (content may be NULL
 * for the open generation prompt, which stops after the role line). */
static fm_status chat_turn(encode_ctx *c, const char *role, const char *content, size_t content_len)
{
    const fm_special_ids *s = &c->tok->ids;
    fm_status st = fm_tokens_push(c->out, s->im_start, c->err);
    size_t rl = strlen(role), cl = content ? (content_len ? content_len : strlen(content)) : 0;
    char *head = malloc(rl + cl + 2);
    if (!st && !head)
        st = fm_fail(c->err, FM_ERR_NOMEM, "chat: out of memory");
    if (!st) {
        memcpy(head, role, rl);
        head[rl] = '\n';
        if (content)
            memcpy(head + rl + 1, content, cl);
        st = encode_plain(c, head, rl + 1 + cl);
    }
    free(head);
    if (!st && content)
        st = fm_tokens_push(c->out, s->im_end, c->err);
    if (!st && content)
        st = encode_plain(c, "\n", 1);
    return st;
}

fm_status fm_chat_tokenize(const fm_tokenizer *tok, const fm_chat_message *messages, size_t n,
                           bool add_generation_prompt, fm_tokens *out, fm_error *err)
{
    if (!tok || !out || (!messages && n))
        return fm_fail(err, FM_ERR_ARG, "fm_chat_tokenize: NULL argument");
    if (tok->ids.im_start < 0 || tok->ids.im_end < 0)
        return fm_fail(err, FM_ERR_UNSUPPORTED, "chat: the vocab has no <|im_start|>/<|im_end|>");
    for (size_t i = 0; i < n; i++)
        if (!messages[i].role || !messages[i].content)
            return fm_fail(err, FM_ERR_ARG, "chat: message %zu has a NULL role or content", i);
    encode_ctx c = { tok, { 0 }, out, err };
    fm_status st = FM_OK;
    if (n == 0 || strcmp(messages[0].role, "system") != 0)
        st = chat_turn(&c, "system", FM_CHAT_DEFAULT_SYSTEM, 0);
    for (size_t i = 0; i < n && !st; i++)
        st = chat_turn(&c, messages[i].role, messages[i].content, messages[i].content_len);
    if (!st && add_generation_prompt)
        st = chat_turn(&c, "assistant", NULL, 0);
    free(c.work.syms);
    free(c.work.heap);
    return st;
}
