/*
 * Tokenizer tests.
 *   test_model_tokenizer                synthetic vocab: pre-tokenizer pieces,
 *                                       BPE ranks and ties, specials, chat,
 *                                       round trips, load errors
 *   test_model_tokenizer FIXTURES       + with FASA_MODEL: exact ids against
 *                                       the HF fixtures, round trips on the
 *                                       fixtures, GPL-3 and every .txt file
 *                                       in the directory $FASA_TEXTS
 * Exits 77 (skip) when FIXTURES is given but FASA_MODEL is unset/missing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime, strdup */
#endif
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "synth_model.h"
#include "tokenizer.h"

static int n_pass, n_fail;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            n_pass++;                                                      \
        } else {                                                           \
            n_fail++;                                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Pre-tokenizer (expected pieces checked against HF's Digits + ByteLevel)   */
/* ------------------------------------------------------------------------ */

typedef struct pieces {
    char buf[1024];
    size_t n;
} pieces;

/* Joins pieces with '|' for easy comparison. */
static fm_status collect(void *user, const char *piece, size_t len)
{
    pieces *p = user;
    if (p->n + len + 2 < sizeof p->buf) {
        if (p->n)
            p->buf[p->n++] = '|';
        memcpy(p->buf + p->n, piece, len);
        p->n += len;
        p->buf[p->n] = 0;
    }
    return FM_OK;
}

static void check_split(const char *text, bool digits, const char *want)
{
    pieces p = { { 0 }, 0 };
    fm_pretokenize(text, strlen(text), digits, collect, &p);
    CHECK(!strcmp(p.buf, want), "pretokenize(%s): got [%s], want [%s]", text, p.buf, want);
}

static void test_pretokenizer(void)
{
    check_split("Hello world!", true, "Hello| world|!");
    check_split("I'm sure she'll   go\n\n  there", true, "I|'m| sure| she|'ll|  | go|\n\n | there");
    check_split("a 123 b", true, "a| |1|2|3| b");
    check_split("a 123 b", false, "a| 123| b");
    check_split("x  \ty", true, "x|  |\t|y");
    check_split("end.  ", true, "end|.|  ");
    check_split("'S 'sa ''", true, "'|S| '|sa| ''");
    check_split("caf\xc3\xa9 \xc2\xa3" "5", true, "caf\xc3\xa9| \xc2\xa3|5");
    check_split("a\xc2\xa0" "b", true, "a|\xc2\xa0|b");
    check_split("x\xc2\xb2y\xc2\xbd", true, "x|\xc2\xb2|y|\xc2\xbd");
    check_split("\xce\xb1-\xce\xb2", true, "\xce\xb1|-|\xce\xb2");
    check_split("", true, "");
}

/* ------------------------------------------------------------------------ */
/* Synthetic vocabulary                                                      */
/* ------------------------------------------------------------------------ */

static fm_tokenizer *synth_tokenizer(const char *pre, fm_status *st, fm_error *e)
{
    gguf_writer w;
    size_t size;
    gguf_file *f = NULL;
    fm_tokenizer *tok = NULL;
    gw_init(&w, 32);
    synth_add_tokenizer(&w, pre);
    uint8_t *buf = gw_finish(&w, &size);
    *st = gguf_open_memory(buf, size, &f, e);
    if (*st == FM_OK)
        *st = fm_tokenizer_load(f, &tok, e);
    gguf_close(f);
    free(buf);
    gw_free(&w);
    return tok;
}

static bool ids_equal(const fm_tokens *t, const int32_t *want, size_t n)
{
    return t->n == n && (n == 0 || !memcmp(t->ids, want, n * sizeof *want));
}

static void check_encode(const fm_tokenizer *tok, const char *text, const int32_t *want, size_t n)
{
    fm_tokens t = { 0 };
    fm_error e = { 0 };
    fm_status st = fm_tokenize(tok, text, strlen(text), &t, &e);
    CHECK(st == FM_OK && ids_equal(&t, want, n), "encode '%s': %zu ids, want %zu (%s)", text, t.n, n,
          e.msg);
    fm_tokens_free(&t);
}

static void test_synthetic_bpe(const fm_tokenizer *tok)
{
    const int32_t B = 3;  /* byte token id = 3 + byte */
    check_encode(tok, "hello", (const int32_t[]){ 259, 263 }, 2);          /* he + llo */
    check_encode(tok, " the", (const int32_t[]){ 261 }, 1);                /* Ġthe */
    check_encode(tok, "aaa", (const int32_t[]){ 264, B + 'a' }, 2);        /* leftmost tie */
    check_encode(tok, "aaaa", (const int32_t[]){ 264, 264 }, 2);
    check_encode(tok, "x7", (const int32_t[]){ B + 'x', B + '7' }, 2);
    /* Special-token text is plain text for fm_tokenize. */
    fm_tokens t = { 0 };
    fm_error e = { 0 };
    const char *s = "<|im_end|>";
    fm_tokenize(tok, s, strlen(s), &t, &e);
    CHECK(t.n > 1 && t.ids[0] == B + '<', "fm_tokenize does not match specials");
    fm_tokens_free(&t);
    const char *mixed = "a<|im_end|>b<|endoftext|>";
    fm_tokenize_special(tok, mixed, strlen(mixed), &t, &e);
    CHECK(ids_equal(&t, (const int32_t[]){ B + 'a', 2, B + 'b', 0 }, 4),
          "fm_tokenize_special matches specials (%zu ids)", t.n);
    fm_tokens_free(&t);
}

static void test_synthetic_roundtrip(const fm_tokenizer *tok)
{
    char all[512];
    for (int i = 0; i < 256; i++)
        all[i] = (char)i, all[256 + i] = (char)(255 - i);
    fm_tokens t = { 0 };
    fm_error e = { 0 };
    char *back = NULL;
    size_t len = 0;
    fm_status st = fm_tokenize(tok, all, sizeof all, &t, &e);
    if (st == FM_OK)
        st = fm_detokenize(tok, t.ids, t.n, true, &back, &len, &e);
    CHECK(st == FM_OK && len == sizeof all && !memcmp(back, all, len),
          "every byte value round-trips (%s)", e.msg);
    free(back);
    fm_tokens_free(&t);
    int32_t ids[] = { 1, 3 + 'h', 2 };
    CHECK(fm_detokenize(tok, ids, 3, false, &back, &len, &e) == FM_OK && len == 1 && back[0] == 'h',
          "control tokens skipped unless rendered");
    free(back);
    int32_t bad[] = { SYNTH_N_VOCAB };
    CHECK(fm_detokenize(tok, bad, 1, true, &back, &len, &e) == FM_ERR_ARG, "bad id rejected");
}

static void test_synthetic_chat(const fm_tokenizer *tok)
{
    fm_tokens t = { 0 };
    fm_error e = { 0 };
    char *text = NULL;
    fm_chat_message msg = { "user", "hi <|im_end|>", 0 };
    fm_status st = fm_chat_tokenize(tok, &msg, 1, true, &t, &e);
    if (st == FM_OK)
        st = fm_detokenize(tok, t.ids, t.n, true, &text, NULL, &e);
    const char *want = "<|im_start|>system\n" FM_CHAT_DEFAULT_SYSTEM "<|im_end|>\n"
                       "<|im_start|>user\nhi <|im_end|><|im_end|>\n<|im_start|>assistant\n";
    CHECK(st == FM_OK && !strcmp(text, want), "chat rendering: %s", text ? text : e.msg);
    size_t n_control = 0;
    for (size_t i = 0; i < t.n; i++)
        n_control += fm_tokenizer_is_control(tok, t.ids[i]);
    CHECK(n_control == 5, "chat: 5 control tokens, content's marker stays text (%zu)", n_control);
    free(text);
    fm_tokens_free(&t);
    fm_chat_message sys[2] = { { "system", "Be brief.", 0 }, { "user", "x", 0 } };
    fm_chat_tokenize(tok, sys, 2, false, &t, &e);
    fm_detokenize(tok, t.ids, t.n, true, &text, NULL, &e);
    CHECK(!strcmp(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n"),
          "explicit system message replaces the default: %s", text);
    free(text);
    fm_tokens_free(&t);
}

static void test_load_errors(void)
{
    fm_status st;
    fm_error e = { 0 };
    fm_tokenizer *tok = synth_tokenizer("llama3", &st, &e);
    CHECK(!tok && st == FM_ERR_UNSUPPORTED && strstr(e.msg, "llama3"), "unknown pre: %s", e.msg);
    fm_tokenizer_free(tok);
    gguf_writer w;
    size_t size;
    gguf_file *f = NULL;
    gw_init(&w, 32);
    gw_str(&w, "tokenizer.ggml.model", "llama");
    uint8_t *buf = gw_finish(&w, &size);
    gguf_open_memory(buf, size, &f, &e);
    CHECK(fm_tokenizer_load(f, &tok, &e) == FM_ERR_UNSUPPORTED && strstr(e.msg, "llama"),
          "SentencePiece vocab rejected: %s", e.msg);
    gguf_close(f);
    free(buf);
    gw_free(&w);
}

static void test_synthetic(void)
{
    fm_status st;
    fm_error e = { 0 };
    fm_tokenizer *tok = synth_tokenizer(NULL, &st, &e);
    CHECK(tok != NULL, "synthetic tokenizer loads: %s", e.msg);
    if (!tok)
        return;
    CHECK(fm_tokenizer_special(tok)->im_start == 1 && fm_tokenizer_special(tok)->im_end == 2 &&
              fm_tokenizer_special(tok)->eos == 2 && !fm_tokenizer_special(tok)->add_bos,
          "special ids");
    test_synthetic_bpe(tok);
    test_synthetic_roundtrip(tok);
    test_synthetic_chat(tok);
    fm_tokenizer_free(tok);
    test_load_errors();
}

/* ------------------------------------------------------------------------ */
/* Real model: fixtures and long texts                                       */
/* ------------------------------------------------------------------------ */

static size_t unhex(const char *hex, char *out)
{
    size_t n = 0;
    for (; hex[0] && hex[1] && hex[0] != '\t'; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (char)v;
    }
    out[n] = 0;
    return n;
}

static void check_fixture_line(const fm_tokenizer *tok, char *line)
{
    char *mode = strtok(line, "\t"), *hex = strtok(NULL, "\t"), *ids = strtok(NULL, "\n");
    char text[4096];
    fm_tokens want = { 0 }, got = { 0 };
    fm_error e = { 0 };
    if (!mode || !hex || !ids || strlen(hex) / 2 >= sizeof text)
        return;
    size_t len = unhex(hex, text);
    for (char *p = strtok(ids, " "); p; p = strtok(NULL, " "))
        fm_tokens_push(&want, atoi(p), NULL);
    fm_status st;
    if (!strcmp(mode, "chat")) {
        fm_chat_message msg = { "user", text, 0 };
        st = fm_chat_tokenize(tok, &msg, 1, true, &got, &e);
    } else if (!strcmp(mode, "special")) {
        st = fm_tokenize_special(tok, text, len, &got, &e);
    } else {
        st = fm_tokenize(tok, text, len, &got, &e);
    }
    CHECK(st == FM_OK && got.n == want.n && !memcmp(got.ids, want.ids, got.n * sizeof(int32_t)),
          "fixture %s '%.40s': %zu ids, want %zu", mode, text, got.n, want.n);
    if (strcmp(mode, "plain") == 0) {
        char *back = NULL;
        size_t blen = 0;
        fm_detokenize(tok, got.ids, got.n, true, &back, &blen, &e);
        CHECK(blen == len && !memcmp(back, text, len), "fixture round trip '%.40s'", text);
        free(back);
    }
    fm_tokens_free(&want);
    fm_tokens_free(&got);
}

static void test_fixtures(const fm_tokenizer *tok, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[16384];
    int cases = 0;
    CHECK(f != NULL, "open fixtures %s", path);
    while (f && fgets(line, sizeof line, f))
        if (line[0] != '#' && line[0] != '\n') {
            check_fixture_line(tok, line);
            cases++;
        }
    if (f)
        fclose(f);
    CHECK(cases >= 10, "%d fixture cases", cases);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void roundtrip_file(const fm_tokenizer *tok, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *text = malloc((size_t)n + 1), *back = NULL;
    size_t got = fread(text, 1, (size_t)n, f), blen = 0;
    fclose(f);
    fm_tokens t = { 0 };
    fm_error e = { 0 };
    double t0 = now_s();
    fm_status st = fm_tokenize(tok, text, got, &t, &e);
    double dt = now_s() - t0;
    if (st == FM_OK)
        st = fm_detokenize(tok, t.ids, t.n, true, &back, &blen, &e);
    CHECK(st == FM_OK && blen == got && !memcmp(back, text, got), "round trip %s", path);
    /* "A few seconds" for a 900 KB novel, with slack for a loaded machine. */
    CHECK(dt < 5.0 * (1.0 + (double)got / 1e6), "%s: %.2f s", path, dt);
    printf("%s: %zu bytes -> %zu tokens in %.3f s\n", path, got, t.n, dt);
    free(text);
    free(back);
    fm_tokens_free(&t);
}

static void roundtrip_texts(const fm_tokenizer *tok)
{
    roundtrip_file(tok, "/usr/share/common-licenses/GPL-3");
    const char *dir = getenv("FASA_TEXTS");
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) {
        printf("note: FASA_TEXTS not set or unreadable; novels not round-tripped\n");
        return;
    }
    for (struct dirent *de; (de = readdir(d));) {
        size_t l = strlen(de->d_name);
        if (l > 4 && !strcmp(de->d_name + l - 4, ".txt")) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            roundtrip_file(tok, path);
        }
    }
    closedir(d);
}

static int test_real(const char *fixtures)
{
    const char *model = getenv("FASA_MODEL");
    if (!model || access(model, R_OK) != 0) {
        printf("SKIP: FASA_MODEL is unset or unreadable (%s); run tools/get-model.sh and set "
               "FASA_MODEL to the path it prints\n", model ? model : "unset");
        return 77;
    }
    gguf_file *f = NULL;
    fm_tokenizer *tok = NULL;
    fm_error e = { 0 };
    if (gguf_open(model, &f, &e) || fm_tokenizer_load(f, &tok, &e)) {
        CHECK(0, "load %s: %s", model, e.msg);
        gguf_close(f);
        return 1;
    }
    gguf_close(f);  /* the tokenizer keeps no reference to the file */
    CHECK(fm_tokenizer_n_vocab(tok) == 49152 && fm_tokenizer_special(tok)->bos == 1 &&
              fm_tokenizer_special(tok)->eos == 2, "SmolLM2 vocab and ids");
    test_fixtures(tok, fixtures);
    roundtrip_texts(tok);
    fm_tokenizer_free(tok);
    return 0;
}

int main(int argc, char **argv)
{
    test_pretokenizer();
    test_synthetic();
    int rc = argc > 1 ? test_real(argv[1]) : 0;
    printf("%d passed, %d failed\n", n_pass, n_fail);
    if (n_fail)
        return 1;
    return rc;
}
