/*
 * Engine tests on a synthetic Llama GGUF (always) and the real model.
 *   test_model_engine                    synthetic: prefill vs decode, chunking,
 *                                        external attention ops, qk hook,
 *                                        truncate, error paths
 *   test_model_engine --real             SmolLM2 from FASA_MODEL (exit 77 if
 *                                        absent): greedy answer, prefill vs
 *                                        decode agreement
 *   test_model_engine --write-synthetic PATH   writes the synthetic GGUF
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "synth_model.h"

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

static const int32_t prompt[] = { 3 + 'T', 261, 3 + ' ', 259, 263, 1, 2, 100, 200, 264, 7, 9 };
#define N_PROMPT ((uint32_t)(sizeof prompt / sizeof prompt[0]))

static fm_status load_synth(const synth_options *o, fm_model **m, fm_error *e)
{
    size_t size;
    gguf_file *f = NULL;
    uint8_t *buf = synth_model(o, &size);
    fm_status st = gguf_open_memory(buf, size, &f, e);
    if (st == FM_OK)
        st = fm_model_load_gguf(f, NULL, m, e);
    gguf_close(f);
    free(buf);
    return st;
}

static float max_diff(const float *a, const float *b, size_t n)
{
    float d = 0;
    for (size_t i = 0; i < n; i++)
        d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

/* All-position logits of the prompt with the given state options. */
static float *run_logits(const fm_model *m, fm_state_desc sd, uint32_t flags, fm_error *e)
{
    fm_state *s = NULL;
    uint32_t vocab = fm_model_hparams(m)->n_vocab;
    float *out = malloc((size_t)N_PROMPT * vocab * sizeof *out);
    if (fm_state_create(m, &sd, &s, e) ||
        fm_state_eval(s, prompt, N_PROMPT, out, flags | FM_EVAL_ALL_LOGITS, e)) {
        free(out);
        out = NULL;
    }
    fm_state_destroy(s);
    return out;
}

/* ------------------------------------------------------------------------ */
/* An external attention that forwards to a reference cache and counts calls */
/* ------------------------------------------------------------------------ */

typedef struct counting_attn {
    fm_ref_attn *inner;
    fm_attn_ops ops;
    int appends, decodes, truncates;
    uint32_t appended_tokens;
    int fail_decode_at;        /* 1-based decode call that fails, 0 = never */
} counting_attn;

static fm_status ca_append(void *u, uint32_t layer, uint32_t n, const float *k, const float *v,
                           fm_error *e)
{
    counting_attn *c = u;
    c->appends++;
    c->appended_tokens += n;
    return c->ops.append_kv(c->ops.user, layer, n, k, v, e);
}

static fm_status ca_decode(void *u, uint32_t layer, const float *q, float *o, fm_error *e)
{
    counting_attn *c = u;
    if (++c->decodes == c->fail_decode_at)
        return fm_fail(e, FM_ERR_CAPACITY, "injected failure");
    return c->ops.decode(c->ops.user, layer, q, o, e);
}

static fm_status ca_truncate(void *u, uint32_t n, fm_error *e)
{
    counting_attn *c = u;
    c->truncates++;
    return c->ops.truncate(c->ops.user, n, e);
}

static void counting_init(counting_attn *c, const fm_model *m, fm_attn_ops *out)
{
    memset(c, 0, sizeof *c);
    fm_ref_attn_create(fm_model_hparams(m), 64, NULL, &c->inner, NULL);
    c->ops = fm_ref_attn_ops(c->inner);
    *out = (fm_attn_ops){ ca_append, ca_decode, ca_truncate, c };
}

/* ------------------------------------------------------------------------ */
/* Synthetic model tests                                                     */
/* ------------------------------------------------------------------------ */

static void test_paths_agree(const fm_model *m)
{
    fm_error e = { 0 };
    uint32_t vocab = fm_model_hparams(m)->n_vocab;
    size_t n = (size_t)N_PROMPT * vocab;
    fm_state_desc base = { .n_ctx = 64, .n_threads = 2 };
    fm_state_desc chunked = { .n_ctx = 64, .n_threads = 2, .max_batch = 3 };
    fm_state_desc single = { .n_ctx = 64, .n_threads = 1 };
    float *dense = run_logits(m, base, 0, &e);
    float *decode = run_logits(m, base, FM_EVAL_DECODE_EACH, &e);
    float *chunks = run_logits(m, chunked, 0, &e);
    float *one = run_logits(m, single, 0, &e);
    CHECK(dense && decode && chunks && one, "evals succeed: %s", e.msg);
    if (dense && decode && chunks && one) {
        CHECK(max_diff(dense, decode, n) < 1e-4f, "prefill vs decode: %g",
              (double)max_diff(dense, decode, n));
        CHECK(max_diff(dense, chunks, n) < 1e-4f, "one chunk vs chunks of 3: %g",
              (double)max_diff(dense, chunks, n));
        CHECK(max_diff(dense, one, n) < 1e-5f, "2 threads vs 1: %g", (double)max_diff(dense, one, n));
        float spread = 0;
        for (size_t i = 0; i < n; i++)
            spread = fmaxf(spread, fabsf(dense[i]));
        CHECK(spread > 1e-3f && isfinite(spread), "logits are non-trivial (max %g)", (double)spread);
    }
    free(dense);
    free(decode);
    free(chunks);
    free(one);
}

static void test_external_ops(const fm_model *m)
{
    fm_error e = { 0 };
    counting_attn c;
    fm_attn_ops ops;
    uint32_t vocab = fm_model_hparams(m)->n_vocab, layers = fm_model_hparams(m)->n_layer;
    fm_state_desc base = { .n_ctx = 64 };
    float *want = run_logits(m, base, 0, &e);
    float *got = malloc((size_t)N_PROMPT * vocab * sizeof *got);

    counting_init(&c, m, &ops);
    fm_state_desc sd = { .n_ctx = 64, .attn = &ops };
    fm_state *s = NULL;
    fm_status st = fm_state_create(m, &sd, &s, &e);
    if (!st)
        st = fm_state_eval(s, prompt, 8, got, FM_EVAL_ALL_LOGITS, &e);
    CHECK(!st && c.appends == (int)layers && c.appended_tokens == 8 * layers && c.decodes == 0,
          "prefill appends once per layer, no decode (%d appends, %d decodes)", c.appends, c.decodes);
    for (uint32_t i = 8; !st && i < N_PROMPT; i++)
        st = fm_state_eval(s, prompt + i, 1, got + (size_t)i * vocab, 0, &e);
    CHECK(!st && c.decodes == (int)(layers * (N_PROMPT - 8)), "one decode per layer and token (%d)",
          c.decodes);
    CHECK(!st && max_diff(want, got, (size_t)N_PROMPT * vocab) < 1e-4f, "external ops match built-in");
    CHECK(fm_ref_attn_length(c.inner, 0) == N_PROMPT, "external cache in sync");
    fm_state_destroy(s);
    fm_ref_attn_destroy(c.inner);

    /* No host cache: dense prefill at position 0, then per-token decode. */
    counting_init(&c, m, &ops);
    fm_state_desc nh = { .n_ctx = 64, .attn = &ops, .flags = FM_STATE_NO_HOST_KV };
    st = fm_state_create(m, &nh, &s, &e);
    if (!st)
        st = fm_state_eval(s, prompt, 5, got, FM_EVAL_ALL_LOGITS, &e);
    if (!st)
        st = fm_state_eval(s, prompt + 5, N_PROMPT - 5, got + 5 * (size_t)vocab, FM_EVAL_ALL_LOGITS,
                           &e);
    CHECK(!st && c.decodes == (int)(layers * (N_PROMPT - 5)),
          "without host KV a later prefill decodes token by token (%d): %s", c.decodes, e.msg);
    CHECK(!st && max_diff(want, got, (size_t)N_PROMPT * vocab) < 1e-4f, "no-host-KV logits match");
    CHECK(fm_state_read_kv(s, 0, 0, 1, got, NULL, &e) == FM_ERR_ARG, "read_kv needs the host cache");
    fm_state_destroy(s);
    fm_ref_attn_destroy(c.inner);
    free(want);
    free(got);
}

static void test_failing_ops(const fm_model *m)
{
    fm_error e = { 0 };
    counting_attn c;
    fm_attn_ops ops;
    fm_state *s = NULL;
    float *logits = malloc(fm_model_hparams(m)->n_vocab * sizeof *logits);
    counting_init(&c, m, &ops);
    c.fail_decode_at = 2;
    fm_state_desc sd = { .n_ctx = 64, .attn = &ops };
    fm_state_create(m, &sd, &s, &e);
    fm_state_eval(s, prompt, 4, logits, 0, &e);
    fm_status st = fm_state_eval(s, prompt + 4, 1, logits, 0, &e);
    CHECK(st == FM_ERR_CALLBACK && strstr(e.msg, "decode(layer 1") && strstr(e.msg, "injected"),
          "callback failure reported: %s", e.msg);
    CHECK(fm_state_pos(s) == 4 && fm_ref_attn_length(c.inner, 0) == 4 && c.truncates >= 1,
          "failed eval leaves position 4 and rolls caches back");
    fm_state_destroy(s);
    fm_ref_attn_destroy(c.inner);
    free(logits);
}

typedef struct hook_log {
    int calls, bad_keys;
    float newest[2][8][32];   /* [layer][pos][Hkv*d] key seen by the hook */
} hook_log;

static void on_qk(void *user, uint32_t layer, uint32_t pos, const float *q, const float *k_all,
                  uint32_t n_keys)
{
    hook_log *h = user;
    (void)q;
    h->calls++;
    h->bad_keys += n_keys != pos + 1;
    if (layer < 2 && pos < 8)
        memcpy(h->newest[layer][pos], k_all + (size_t)pos * 32, sizeof h->newest[0][0]);
}

/* The newest key the hook saw must be what the cache holds afterwards. */
static int hook_rows_differ(const fm_state *s, const hook_log *h, uint32_t n)
{
    float row[32];
    int bad = 0;
    for (uint32_t l = 0; l < 2; l++)
        for (uint32_t p = 0; p < n; p++) {
            fm_state_read_kv(s, l, p, 1, row, NULL, NULL);
            bad += memcmp(row, h->newest[l][p], sizeof row) != 0;
        }
    return bad;
}

static void test_hook_and_truncate(const fm_model *m)
{
    fm_error e = { 0 };
    hook_log h = { 0 };
    float first[SYNTH_N_VOCAB], again[SYNTH_N_VOCAB];
    fm_state_desc sd = { .n_ctx = 64, .qk_hook = on_qk, .hook_user = &h };
    fm_state *s = NULL;
    fm_status st = fm_state_create(m, &sd, &s, &e);
    if (!st)
        st = fm_state_eval(s, prompt, 6, NULL, 0, &e);
    if (!st)
        st = fm_state_eval(s, prompt + 6, 1, first, 0, &e);
    int bad_rows = st ? -1 : hook_rows_differ(s, &h, 7);
    CHECK(!st && h.calls == 7 * 2 && h.bad_keys == 0 && bad_rows == 0,
          "hook: %d calls, %d bad n_keys, %d bad rows", h.calls, h.bad_keys, bad_rows);
    st = fm_state_truncate(s, 3, &e);
    if (!st)
        st = fm_state_eval(s, prompt + 3, 4, again, 0, &e);
    CHECK(!st && fm_state_pos(s) == 7 && max_diff(first, again, SYNTH_N_VOCAB) < 1e-4f,
          "truncate and re-evaluate gives the same logits");
    CHECK(fm_state_truncate(s, 9, &e) == FM_ERR_ARG, "truncate beyond position rejected");
    fm_state_destroy(s);
}

static void test_eval_errors(const fm_model *m)
{
    fm_error e = { 0 };
    fm_state *s = NULL;
    fm_state_desc sd = { .n_ctx = 8 };
    int32_t bad = SYNTH_N_VOCAB;
    fm_state_create(m, &sd, &s, &e);
    CHECK(fm_state_eval(s, prompt, 9, NULL, 0, &e) == FM_ERR_CAPACITY && fm_state_pos(s) == 0,
          "capacity: %s", e.msg);
    CHECK(fm_state_eval(s, &bad, 1, NULL, 0, &e) == FM_ERR_ARG && strstr(e.msg, "265"),
          "token id out of range: %s", e.msg);
    CHECK(fm_state_eval(s, prompt, 0, NULL, 0, &e) == FM_ERR_ARG, "empty eval rejected");
    fm_state_destroy(s);
    fm_state_desc too_big = { .n_ctx = 100000 };
    CHECK(fm_state_create(m, &too_big, &s, &e) == FM_ERR_ARG, "n_ctx above context length: %s",
          e.msg);
    fm_state_desc no_kv = { .flags = FM_STATE_NO_HOST_KV };
    CHECK(fm_state_create(m, &no_kv, &s, &e) == FM_ERR_ARG, "NO_HOST_KV without ops: %s", e.msg);
}

static void expect_load_error(synth_options o, fm_status want, const char *needle, const char *what)
{
    fm_model *m = NULL;
    fm_error e = { 0 };
    fm_status st = load_synth(&o, &m, &e);
    CHECK(st == want && strstr(e.msg, needle), "%s: got %s '%s'", what, fm_status_name(st), e.msg);
    fm_model_free(m);
}

static void test_load_errors(void)
{
    expect_load_error((synth_options){ .skip_key = "llama.rope.freq_base" }, FM_ERR_MISSING,
                      "llama.rope.freq_base", "missing rope base");
    expect_load_error((synth_options){ .skip_key = "llama.rope.dimension_count" }, FM_ERR_MISSING,
                      "llama.rope.dimension_count", "missing rope dims");
    expect_load_error((synth_options){ .skip_key = "llama.attention.head_count_kv" },
                      FM_ERR_MISSING, "head_count_kv", "missing kv heads");
    expect_load_error((synth_options){ .bad_shape = "blk.0.attn_k.weight" }, FM_ERR_MISMATCH,
                      "blk.0.attn_k.weight", "transposed attn_k");
    expect_load_error((synth_options){ .skip_tensor = "blk.1.ffn_up.weight" }, FM_ERR_MISSING,
                      "blk.1.ffn_up.weight", "missing tensor");
    expect_load_error((synth_options){ .extra_tensor = "blk.0.attn_q.bias" }, FM_ERR_UNSUPPORTED,
                      "blk.0.attn_q.bias", "unused bias tensor");
    expect_load_error((synth_options){ .pre = "qwen2" }, FM_ERR_UNSUPPORTED, "qwen2",
                      "unknown pre-tokenizer");
}

static int test_synthetic(void)
{
    fm_model *m = NULL;
    fm_error e = { 0 };
    fm_status st = load_synth(NULL, &m, &e);
    CHECK(st == FM_OK, "synthetic model loads: %s", e.msg);
    if (st)
        return 1;
    const fm_hparams *hp = fm_model_hparams(m);
    CHECK(hp->n_layer == 2 && hp->n_head == 4 && hp->n_head_kv == 2 && hp->head_dim == 16 &&
              hp->n_vocab == SYNTH_N_VOCAB && hp->tied_output && hp->rope_base == 10000.0f,
          "hyper-parameters");
    test_paths_agree(m);
    test_external_ops(m);
    test_failing_ops(m);
    test_hook_and_truncate(m);
    test_eval_errors(m);
    fm_model_free(m);
    test_load_errors();
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Real model                                                                */
/* ------------------------------------------------------------------------ */

static int32_t argmax(const float *x, uint32_t n)
{
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        b = x[i] > x[b] ? i : b;
    return (int32_t)b;
}

static void greedy_answer(const fm_model *m)
{
    fm_error e = { 0 };
    fm_tokens t = { 0 };
    fm_state *s = NULL;
    const fm_tokenizer *tok = fm_model_tokenizer(m);
    uint32_t vocab = fm_model_hparams(m)->n_vocab;
    float *logits = malloc(vocab * sizeof *logits);
    char answer[256] = "";
    size_t used = 0;
    fm_chat_message msg = { "user", "What is the capital of France?", 0 };
    fm_state_desc sd = { .n_ctx = 256 };
    fm_status st = fm_chat_tokenize(tok, &msg, 1, true, &t, &e);
    if (!st)
        st = fm_state_create(m, &sd, &s, &e);
    if (!st)
        st = fm_state_eval(s, t.ids, (uint32_t)t.n, logits, 0, &e);
    for (int i = 0; !st && i < 12; i++) {
        int32_t next = argmax(logits, vocab);
        size_t len;
        const char *b = fm_token_bytes(tok, next, &len);
        if (next == fm_tokenizer_special(tok)->eos)
            break;
        if (used + len < sizeof answer) {
            memcpy(answer + used, b, len);
            answer[used += len] = 0;
        }
        st = fm_state_eval(s, &next, 1, logits, 0, &e);
    }
    CHECK(!st && strstr(answer, "Paris"), "greedy answer mentions Paris: '%s' %s", answer, e.msg);
    printf("greedy answer: %s\n", answer);
    fm_state_destroy(s);
    fm_tokens_free(&t);
    free(logits);
}

static void real_paths_agree(const fm_model *m)
{
    fm_error e = { 0 };
    fm_tokens t = { 0 };
    const char *text = "It is a truth universally acknowledged, that a single man in possession "
                       "of a good fortune, must be in want of a wife.";
    fm_tokenize(fm_model_tokenizer(m), text, strlen(text), &t, &e);
    uint32_t vocab = fm_model_hparams(m)->n_vocab, n = (uint32_t)t.n;
    float *a = malloc((size_t)n * vocab * sizeof *a), *b = malloc((size_t)n * vocab * sizeof *b);
    fm_state *s1 = NULL, *s2 = NULL;
    fm_state_desc sd = { .n_ctx = 64 };
    fm_status st = fm_state_create(m, &sd, &s1, &e);
    if (!st)
        st = fm_state_create(m, &sd, &s2, &e);
    if (!st)
        st = fm_state_eval(s1, t.ids, n, a, FM_EVAL_ALL_LOGITS, &e);
    if (!st)
        st = fm_state_eval(s2, t.ids, n, b, FM_EVAL_ALL_LOGITS | FM_EVAL_DECODE_EACH, &e);
    int same_top = 0;
    for (uint32_t i = 0; !st && i < n; i++)
        same_top += argmax(a + (size_t)i * vocab, vocab) == argmax(b + (size_t)i * vocab, vocab);
    CHECK(!st && max_diff(a, b, (size_t)n * vocab) < 1e-3f && same_top == (int)n,
          "real model prefill vs decode: max diff %g, top-1 %d/%u (%s)",
          st ? -1.0 : (double)max_diff(a, b, (size_t)n * vocab), same_top, n, e.msg);
    fm_state_destroy(s1);
    fm_state_destroy(s2);
    fm_tokens_free(&t);
    free(a);
    free(b);
}

static int test_real(void)
{
    const char *path = getenv("FASA_MODEL");
    if (!path || access(path, R_OK) != 0) {
        printf("SKIP: FASA_MODEL is unset or unreadable (%s); run tools/get-model.sh and set "
               "FASA_MODEL to the path it prints\n", path ? path : "unset");
        return 77;
    }
    fm_model *m = NULL;
    fm_error e = { 0 };
    if (fm_model_load(path, NULL, &m, &e)) {
        CHECK(0, "load: %s", e.msg);
        return 1;
    }
    greedy_answer(m);
    real_paths_agree(m);
    fm_model_free(m);
    return 0;
}

static int write_synthetic(const char *path)
{
    size_t size;
    uint8_t *buf = synth_model(NULL, &size);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(buf, 1, size, f) == size;
    if (f)
        ok &= fclose(f) == 0;
    free(buf);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "--write-synthetic"))
        return write_synthetic(argv[2]);
    int rc = argc > 1 && !strcmp(argv[1], "--real") ? test_real() : test_synthetic();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : rc;
}
