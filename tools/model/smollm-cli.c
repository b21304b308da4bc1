/*
 * smollm-cli: a developer tool for the model engine (not the fasa CLI).
 *
 *   smollm-cli info MODEL
 *   smollm-cli tokenize MODEL [--special|--chat] [--file PATH | TEXT]
 *   smollm-cli roundtrip MODEL FILE...
 *   smollm-cli logits MODEL --out PATH (--ids 1,2,3 | --text TEXT) [--all] [--decode-each]
 *   smollm-cli generate MODEL [--chat] [-n N] TEXT
 *   smollm-cli bench MODEL [--ctx 128,512,2048] [--decode N]
 * Common options: --threads N.  Logits files are raw little-endian f32,
 * [rows][n_vocab] (one row unless --all).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

typedef struct options {
    const char *cmd, *model, *out, *ids, *text, *file, *ctx_list;
    bool special, chat, all, decode_each;
    int n_predict, n_decode;
    unsigned threads;
    int first_free, argc;
    char **argv;
} options;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Process CPU time: on a shared machine, with --threads 1, a steadier
 * measure of the work than wall time. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fail(const char *what, const fm_error *e)
{
    fprintf(stderr, "smollm-cli: %s: %s (%s)\n", what, e->msg, fm_status_name(e->status));
    return 1;
}

static int usage(void)
{
    fputs("usage: smollm-cli info|tokenize|roundtrip|logits|generate|bench MODEL [options]\n"
          "  see the comment at the top of tools/model/smollm-cli.c\n", stderr);
    return 2;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = '\0';
        *len = (size_t)n;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static bool parse_options(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 32;
    o->n_decode = 16;
    o->ctx_list = "128,512,2048";
    if (argc < 3)
        return false;
    o->cmd = argv[1];
    o->model = argv[2];
    o->argc = argc;
    o->argv = argv;
    o->first_free = argc;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--special")) o->special = true;
        else if (!strcmp(a, "--chat")) o->chat = true;
        else if (!strcmp(a, "--all")) o->all = true;
        else if (!strcmp(a, "--decode-each")) o->decode_each = true;
        else if (!strcmp(a, "--out") && has_val) o->out = argv[++i];
        else if (!strcmp(a, "--ids") && has_val) o->ids = argv[++i];
        else if (!strcmp(a, "--text") && has_val) o->text = argv[++i];
        else if (!strcmp(a, "--file") && has_val) o->file = argv[++i];
        else if (!strcmp(a, "--ctx") && has_val) o->ctx_list = argv[++i];
        else if (!strcmp(a, "--threads") && has_val) o->threads = (unsigned)atoi(argv[++i]);
        else if (!strcmp(a, "-n") && has_val) o->n_predict = atoi(argv[++i]);
        else if (!strcmp(a, "--decode") && has_val) o->n_decode = atoi(argv[++i]);
        else if (a[0] == '-' && a[1]) return false;
        else if (o->first_free == argc) o->first_free = i;
    }
    return true;
}

static int load(const options *o, bool weights, fm_model **m, gguf_file **g, fm_tokenizer **t)
{
    fm_error e = { 0 };
    if (weights) {
        fm_model_desc d = { .n_threads = o->threads };
        double t0 = now_s();
        if (fm_model_load(o->model, &d, m, &e))
            return fail("load", &e);
        fprintf(stderr, "loaded %s in %.2f s\n", o->model, now_s() - t0);
        *t = (fm_tokenizer *)fm_model_tokenizer(*m);
        return 0;
    }
    if (gguf_open(o->model, g, &e) || fm_tokenizer_load(*g, t, &e))
        return fail("load tokenizer", &e);
    return 0;
}

/* Text input: --file, --text or the first free argument. */
static char *input_text(const options *o, size_t *len)
{
    if (o->file)
        return read_file(o->file, len);
    const char *t = o->text ? o->text : o->first_free < o->argc ? o->argv[o->first_free] : NULL;
    if (!t)
        return NULL;
    *len = strlen(t);
    return strdup(t);
}

static fm_status encode_input(const options *o, const fm_tokenizer *tok, const char *text,
                              size_t len, fm_tokens *out, fm_error *e)
{
    if (o->chat) {
        fm_chat_message msg = { "user", text, len };
        return fm_chat_tokenize(tok, &msg, 1, true, out, e);
    }
    return o->special ? fm_tokenize_special(tok, text, len, out, e)
                      : fm_tokenize(tok, text, len, out, e);
}

static int cmd_info(const options *o)
{
    fm_model *m = NULL;
    fm_tokenizer *t = NULL;
    gguf_file *g = NULL;
    if (load(o, true, &m, &g, &t))
        return 1;
    const fm_hparams *h = fm_model_hparams(m);
    printf("layers %u embd %u heads %u kv_heads %u head_dim %u ff %u vocab %u ctx %u "
           "rope_base %g rms_eps %g tied %d\n", h->n_layer, h->n_embd, h->n_head, h->n_head_kv,
           h->head_dim, h->n_ff, h->n_vocab, h->n_ctx_train, (double)h->rope_base,
           (double)h->rms_eps, h->tied_output);
    fm_model_free(m);
    return 0;
}

static int cmd_tokenize(const options *o)
{
    fm_model *m = NULL;
    fm_tokenizer *t = NULL;
    gguf_file *g = NULL;
    fm_error e = { 0 };
    fm_tokens toks = { 0 };
    size_t len;
    if (load(o, false, &m, &g, &t))
        return 1;
    char *text = input_text(o, &len);
    int rc = 0;
    if (!text) {
        fprintf(stderr, "smollm-cli: tokenize: no input text\n");
        rc = 2;
    } else if (encode_input(o, t, text, len, &toks, &e)) {
        rc = fail("tokenize", &e);
    } else {
        for (size_t i = 0; i < toks.n; i++)
            printf("%d%c", toks.ids[i], i + 1 < toks.n ? ' ' : '\n');
    }
    free(text);
    fm_tokens_free(&toks);
    fm_tokenizer_free(t);
    gguf_close(g);
    return rc;
}

static int roundtrip_one(const fm_tokenizer *t, const char *path)
{
    fm_error e = { 0 };
    fm_tokens toks = { 0 };
    size_t len, out_len;
    char *text = read_file(path, &len), *back = NULL;
    if (!text) {
        fprintf(stderr, "smollm-cli: cannot read %s\n", path);
        return 1;
    }
    double t0 = now_s();
    int rc = fm_tokenize(t, text, len, &toks, &e) ? fail("tokenize", &e) : 0;
    double t1 = now_s();
    if (!rc && fm_detokenize(t, toks.ids, toks.n, true, &back, &out_len, &e))
        rc = fail("detokenize", &e);
    if (!rc) {
        bool same = out_len == len && memcmp(back, text, len) == 0;
        printf("%s: %zu bytes -> %zu tokens in %.3f s, round trip %s\n", path, len, toks.n,
               t1 - t0, same ? "OK" : "DIFFERS");
        rc = same ? 0 : 1;
    }
    free(text);
    free(back);
    fm_tokens_free(&toks);
    return rc;
}

static int cmd_roundtrip(const options *o)
{
    fm_model *m = NULL;
    fm_tokenizer *t = NULL;
    gguf_file *g = NULL;
    int rc = 0;
    if (load(o, false, &m, &g, &t))
        return 1;
    for (int i = 3; i < o->argc; i++)
        if (o->argv[i][0] != '-')
            rc |= roundtrip_one(t, o->argv[i]);
    fm_tokenizer_free(t);
    gguf_close(g);
    return rc;
}

static bool parse_ids(const char *s, fm_tokens *out)
{
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || fm_tokens_push(out, (int32_t)v, NULL))
            return false;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return false;
    }
    return out->n > 0;
}

static int write_logits(const char *path, const float *logits, size_t count)
{
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(logits, sizeof(float), count, f) == count;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok)
        fprintf(stderr, "smollm-cli: cannot write %s\n", path);
    return ok ? 0 : 1;
}

static int cmd_logits(const options *o)
{
    fm_model *m = NULL;
    fm_tokenizer *t = NULL;
    gguf_file *g = NULL;
    fm_state *s = NULL;
    fm_error e = { 0 };
    fm_tokens toks = { 0 };
    size_t len;
    if (!o->out || (!o->ids && !o->text))
        return usage();
    if (load(o, true, &m, &g, &t))
        return 1;
    int rc = 0;
    char *text = o->ids ? NULL : input_text(o, &len);
    if (o->ids ? !parse_ids(o->ids, &toks) : encode_input(o, t, text, len, &toks, &e) != FM_OK) {
        fprintf(stderr, "smollm-cli: logits: bad input %s\n", e.msg);
        rc = 2;
    }
    fm_state_desc sd = { .n_threads = o->threads, .n_ctx = (uint32_t)toks.n + 1 };
    uint32_t rows = o->all ? (uint32_t)toks.n : 1, vocab = fm_model_hparams(m)->n_vocab;
    float *logits = rc ? NULL : malloc((size_t)rows * vocab * sizeof(float));
    uint32_t flags = (o->all ? FM_EVAL_ALL_LOGITS : 0) | (o->decode_each ? FM_EVAL_DECODE_EACH : 0);
    if (!rc && (!logits || fm_state_create(m, &sd, &s, &e) ||
                fm_state_eval(s, toks.ids, (uint32_t)toks.n, logits, flags, &e)))
        rc = fail("logits", &e);
    if (!rc)
        rc = write_logits(o->out, logits, (size_t)rows * vocab);
    free(text);
    free(logits);
    fm_tokens_free(&toks);
    fm_state_destroy(s);
    fm_model_free(m);
    return rc;
}

static int32_t argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

static void print_token(const fm_tokenizer *t, int32_t id)
{
    size_t len;
    const char *b = fm_token_bytes(t, id, &len);
    if (!fm_tokenizer_is_control(t, id))
        fwrite(b, 1, len, stdout);
    fflush(stdout);
}

static int generate_loop(const options *o, const fm_model *m, fm_state *s, fm_tokens *toks)
{
    fm_error e = { 0 };
    const fm_tokenizer *t = fm_model_tokenizer(m);
    uint32_t vocab = fm_model_hparams(m)->n_vocab;
    float *logits = malloc(vocab * sizeof(float));
    if (!logits)
        return 1;
    double t0 = now_s();
    int rc = fm_state_eval(s, toks->ids, (uint32_t)toks->n, logits, 0, &e) ? fail("prefill", &e) : 0;
    double t1 = now_s();
    int produced = 0;
    for (; !rc && produced < o->n_predict; produced++) {
        int32_t next = argmax(logits, vocab);
        if (next == fm_tokenizer_special(t)->eos)
            break;
        print_token(t, next);
        if (fm_state_pos(s) >= fm_state_capacity(s) ||
            fm_state_eval(s, &next, 1, logits, 0, &e))
            rc = e.msg[0] ? fail("decode", &e) : 0;
    }
    double t2 = now_s();
    printf("\n");
    fprintf(stderr, "prefill %zu tokens %.2f s (%.1f tok/s); decode %d tokens %.2f s (%.2f tok/s)\n",
            toks->n, t1 - t0, toks->n / (t1 - t0), produced, t2 - t1,
            produced ? produced / (t2 - t1) : 0.0);
    free(logits);
    return rc;
}

static int cmd_generate(const options *o)
{
    fm_model *m = NULL;
    fm_tokenizer *t = NULL;
    gguf_file *g = NULL;
    fm_state *s = NULL;
    fm_error e = { 0 };
    fm_tokens toks = { 0 };
    size_t len;
    if (load(o, true, &m, &g, &t))
        return 1;
    char *text = input_text(o, &len);
    int rc = 0;
    fm_state_desc sd = { .n_threads = o->threads };
    if (!text || encode_input(o, t, text, len, &toks, &e) || toks.n == 0)
        rc = text ? fail("tokenize", &e) : usage();
    if (!rc && fm_state_create(m, &sd, &s, &e))
        rc = fail("state", &e);
    if (!rc)
        rc = generate_loop(o, m, s, &toks);
    free(text);
    fm_tokens_free(&toks);
    fm_state_destroy(s);
    fm_model_free(m);
    return rc;
}

/* Prefills ctx tokens of deterministic filler, then times n_decode steps. */
static int bench_one(const options *o, const fm_model *m, uint32_t ctx)
{
    fm_error e = { 0 };
    fm_state *s = NULL;
    uint32_t vocab = fm_model_hparams(m)->n_vocab;
    fm_state_desc sd = { .n_threads = o->threads, .n_ctx = ctx + (uint32_t)o->n_decode + 1 };
    int32_t *ids = malloc(ctx * sizeof *ids);
    float *logits = malloc(vocab * sizeof(float));
    int rc = (!ids || !logits) ? 1 : 0;
    for (uint32_t i = 0; !rc && i < ctx; i++)
        ids[i] = (int32_t)(100 + (i * 7919u) % 20000u);
    if (!rc && fm_state_create(m, &sd, &s, &e))
        rc = fail("state", &e);
    double t0 = now_s(), c0 = cpu_s();
    if (!rc && fm_state_eval(s, ids, ctx, logits, 0, &e))
        rc = fail("prefill", &e);
    double t1 = now_s(), c1 = cpu_s();
    for (int i = 0; !rc && i < o->n_decode; i++) {
        int32_t next = argmax(logits, vocab);
        if (fm_state_eval(s, &next, 1, logits, 0, &e))
            rc = fail("decode", &e);
    }
    double t2 = now_s(), c2 = cpu_s();
    if (!rc)
        printf("ctx %5u: prefill %.2f s (%.1f tok/s, cpu %.2f s), decode %.1f ms/token "
               "(%.2f tok/s, cpu %.1f ms/token)\n", ctx, t1 - t0, ctx / (t1 - t0), c1 - c0,
               1e3 * (t2 - t1) / o->n_decode, o->n_decode / (t2 - t1),
               1e3 * (c2 - c1) / o->n_decode);
    fflush(stdout);
    fm_state_destroy(s);
    free(ids);
    free(logits);
    return rc;
}

static int cmd_bench(const options *o)
{
    fm_model *m = NULL;
    fm_tokenizer *t = NULL;
    gguf_file *g = NULL;
    if (load(o, true, &m, &g, &t))
        return 1;
    int rc = 0;
    for (const char *p = o->ctx_list; *p && !rc;) {
        char *end;
        long ctx = strtol(p, &end, 10);
        if (end == p || ctx < 1)
            break;
        rc = bench_one(o, m, (uint32_t)ctx);
        p = *end ? end + 1 : end;
    }
    fm_model_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    options o;
    if (!parse_options(argc, argv, &o))
        return usage();
    static const struct { const char *name; int (*fn)(const options *); } cmds[] = {
        { "info", cmd_info },         { "tokenize", cmd_tokenize }, { "roundtrip", cmd_roundtrip },
        { "logits", cmd_logits },     { "generate", cmd_generate }, { "bench", cmd_bench },
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(o.cmd, cmds[i].name))
            return cmds[i].fn(&o);
    return usage();
}
