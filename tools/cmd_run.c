/* fasa run: generate text with SmolLM2 (or another Llama GGUF) whose decode
 * attention runs through libfasa, streaming the tokens. */
#include "cli.h"
#include "commands.h"
#include "model_attn.h"
#include "model_cli.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define PREFILL_CHUNK 256u

/* --ntip when not given: the calibration file's n_tip. */
#define NTIP_FROM_FILE UINT32_MAX

typedef struct run_opts {
    const char *model, *prompt, *prompt_file, *question, *backend, *variant, *calibration, *dtype;
    const char *fetch, *prefetch;          /* FASA-M: direct|staged, none|attn|mlp */
    uint32_t device, nfac, ntip, max_tokens, threads, n_sink, n_recent, row_cache;
    bool raw, json, quiet;
} run_opts;

/* --prefetch as the engine's prefetch point; -1 when unknown. */
static int prefetch_point(const char *name)
{
    static const char *const names[] = {"none", "attn", "mlp"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) return i;   /* = FM_PREFETCH_NONE, _ATTN, _MLP */
    return -1;
}

/* The prompt text: the file's content and/or --prompt and --question,
 * joined by blank lines.  Lengths are carried throughout (the text was
 * checked to hold no NUL).  Prints the reason and returns NULL on failure;
 * an empty prompt is refused (greedy decoding needs the logits of at least
 * one prompt token). */
static char *read_prompt(const run_opts *o, size_t *len)
{
    size_t file_len = 0;
    char *file = o->prompt_file ? read_text_file("fasa run", "--prompt-file", o->prompt_file, &file_len) : NULL;
    if (o->prompt_file && !file) return NULL;
    if (o->prompt_file && file_len == 0 && !o->prompt && !o->question) {
        fprintf(stderr, "fasa run: --prompt-file %s is empty; the prompt needs at least one token\n", o->prompt_file);
        free(file);
        return NULL;
    }
    const char *parts[3] = {file, o->prompt, o->question};
    size_t lens[3] = {file_len, o->prompt ? strlen(o->prompt) : 0, o->question ? strlen(o->question) : 0};
    char *text = malloc(lens[0] + lens[1] + lens[2] + 5);
    size_t n = 0;
    for (int i = 0; text && i < 3; i++) {
        if (!parts[i] || lens[i] == 0) continue;
        if (n) memcpy(text + n, "\n\n", 2), n += 2;
        memcpy(text + n, parts[i], lens[i]);
        n += lens[i];
    }
    free(file);
    if (!text) {
        fprintf(stderr, "fasa run: out of memory for the prompt\n");
        return NULL;
    }
    text[n] = '\0';
    *len = n;
    return text;
}

/* Tokenizes the prompt (a chat turn, or the raw text with --raw); refuses a
 * prompt of no tokens (e.g. only bytes the vocab lacks). */
static bool tokenize_prompt(const run_opts *o, const fm_model *m, const char *text, size_t n, fm_tokens *out)
{
    warn_untokenizable("fasa run", "prompt", m, text, n);
    fm_error err = {0};
    fm_status st;
    if (o->raw) {
        st = fm_tokenize(fm_model_tokenizer(m), text, n, out, &err);
    } else {
        fm_chat_message msg = {"user", text, n};
        st = fm_chat_tokenize(fm_model_tokenizer(m), &msg, 1, true, out, &err);
    }
    if (st != FM_OK) {
        fprintf(stderr, "fasa run: prompt: %s\n", err.msg);
        return false;
    }
    if (out->n == 0) {
        fprintf(stderr, "fasa run: the prompt has no tokens (every byte of it lacks a token in the vocabulary); "
                        "the prompt needs at least one token\n");
        return false;
    }
    return true;
}

static int32_t argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++) best = x[i] > x[best] ? i : best;
    return (int32_t)best;
}

static void print_token(const fm_model *m, int32_t id)
{
    size_t len = 0;
    const char *bytes = fm_token_bytes(fm_model_tokenizer(m), id, &len);
    if (bytes && !fm_tokenizer_is_control(fm_model_tokenizer(m), id)) fwrite(bytes, 1, len, stdout);
    fflush(stdout);
}

typedef struct run_result {
    uint32_t prompt_tokens, generated, row_cache;
    int32_t *tokens;                       /* [max_tokens] generated ids */
    double prefill_s, decode_s, attended;
    bool has_transfer;                     /* fasa-m: transfer holds the cache's counters */
    fasa_transfer_stats transfer;
} run_result;

static bool prefill(fm_state *s, const fm_tokens *prompt, float *logits, double *secs)
{
    cli_progress prog;
    cli_progress_start(&prog, "prefill", prompt->n);
    double t0 = cli_now();
    fm_error err = {0};
    for (size_t i = 0; i < prompt->n; i += PREFILL_CHUNK) {
        uint32_t n = prompt->n - i < PREFILL_CHUNK ? (uint32_t)(prompt->n - i) : PREFILL_CHUNK;
        if (fm_state_eval(s, prompt->ids + i, n, logits, 0, &err) != FM_OK) {
            cli_progress_end(&prog);
            fprintf(stderr, "fasa run: prefill: %s\n", err.msg);
            return false;
        }
        cli_progress_step(&prog, n);
    }
    cli_progress_end(&prog);
    *secs = cli_now() - t0;
    return true;
}

static bool generate(const run_opts *o, const fm_model *m, fm_state *s, float *logits, run_result *r)
{
    const fm_special_ids *sp = fm_tokenizer_special(fm_model_tokenizer(m));
    uint32_t n_vocab = fm_model_hparams(m)->n_vocab;
    double t0 = cli_now();
    fm_error err = {0};
    for (r->generated = 0; r->generated < o->max_tokens;) {
        int32_t next = argmax(logits, n_vocab);
        if (next == sp->eos || next == sp->im_end) break;
        if (!o->quiet && !o->json) print_token(m, next);
        r->tokens[r->generated++] = next;
        if (fm_state_eval(s, &next, 1, logits, 0, &err) != FM_OK) {
            fprintf(stderr, "\nfasa run: decode: %s\n", err.msg);
            return false;
        }
    }
    r->decode_s = cli_now() - t0;
    if (!o->quiet && !o->json) printf("\n");
    return true;
}

/* Drops bytes that are not part of a valid UTF-8 sequence (a token may end
 * inside a character), so the JSON text is valid. */
static void utf8_clean(char *s)
{
    unsigned char *src = (unsigned char *)s, *dst = src;
    while (*src) {
        int n = *src < 0x80 ? 1 : (*src >> 5) == 6 ? 2 : (*src >> 4) == 14 ? 3 : (*src >> 3) == 30 ? 4 : 0;
        bool ok = n > 0;
        for (int i = 1; ok && i < n; i++) ok = (src[i] & 0xC0) == 0x80;
        if (!ok) { src++; continue; }
        for (int i = 0; i < n; i++) *dst++ = *src++;
    }
    *dst = 0;
}

static char *generated_text(const fm_model *m, const run_result *r)
{
    const fm_tokenizer *tok = fm_model_tokenizer(m);
    size_t cap = 1, len = 0, n;
    for (uint32_t i = 0; i < r->generated; i++) cap += fm_token_bytes(tok, r->tokens[i], &n) ? n : 0;
    char *text = malloc(cap);
    if (!text) return NULL;
    for (uint32_t i = 0; i < r->generated; i++) {
        const char *b = fm_token_bytes(tok, r->tokens[i], &n);
        if (b && !fm_tokenizer_is_control(tok, r->tokens[i])) memcpy(text + len, b, n), len += n;
    }
    text[len] = 0;
    utf8_clean(text);
    return text;
}

/* FASA-M traffic per sparse (layer, token) step; prefetch bytes are divided
 * by the same demand steps, so demand + prefetch compares with 'none'. */
static double kb_per_step(uint64_t bytes, uint64_t steps) { return steps ? bytes / 1024.0 / steps : 0; }

static void transfer_json(cJSON *j, const run_opts *o, const run_result *r)
{
    const fasa_transfer_stats *t = &r->transfer;
    cJSON_AddStringToObject(j, "fetch", o->fetch);
    cJSON_AddNumberToObject(j, "row_cache_rows", r->row_cache);
    cJSON_AddStringToObject(j, "prefetch", o->prefetch);
    cJSON *x = cJSON_AddObjectToObject(j, "transfer");
    cJSON_AddNumberToObject(x, "steps", (double)t->steps);
    cJSON_AddNumberToObject(x, "rows_needed", (double)t->rows_needed);
    cJSON_AddNumberToObject(x, "rows_cached", (double)t->rows_cached);
    cJSON_AddNumberToObject(x, "hit_rate", cli_row_hit_rate(t));
    cJSON_AddNumberToObject(x, "demand_bytes", (double)t->bytes);
    cJSON_AddNumberToObject(x, "demand_kb_per_step", kb_per_step(t->bytes, t->steps));
    cJSON_AddNumberToObject(x, "prefetch_steps", (double)t->prefetch_steps);
    cJSON_AddNumberToObject(x, "prefetch_rows", (double)t->prefetch_rows);
    cJSON_AddNumberToObject(x, "prefetch_bytes", (double)t->prefetch_bytes);
    cJSON_AddNumberToObject(x, "prefetch_kb_per_step", kb_per_step(t->prefetch_bytes, t->steps));
}

static void report_json(const run_opts *o, const fm_model *m, const fasa_device_info *dev, const run_result *r)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "backend", fasa_backend_name(dev->backend));
    cJSON_AddStringToObject(j, "device", dev->name);
    cJSON_AddStringToObject(j, "variant", o->variant);
    cJSON_AddNumberToObject(j, "prompt_tokens", r->prompt_tokens);
    cJSON_AddNumberToObject(j, "generated_tokens", r->generated);
    cJSON_AddNumberToObject(j, "prefill_tokens_per_s", r->prefill_s > 0 ? r->prompt_tokens / r->prefill_s : 0);
    cJSON_AddNumberToObject(j, "decode_tokens_per_s", r->decode_s > 0 ? r->generated / r->decode_s : 0);
    cJSON_AddNumberToObject(j, "attended_fraction", r->attended);
    cJSON_AddItemToObject(j, "tokens", cJSON_CreateIntArray(r->tokens, (int)r->generated));
    char *text = generated_text(m, r);
    cJSON_AddStringToObject(j, "text", text ? text : "");
    free(text);
    if (r->has_transfer) transfer_json(j, o, r);
    char *out = cJSON_Print(j);
    printf("%s\n", out);
    free(out);
    cJSON_Delete(j);
}

static void report(const run_opts *o, const fm_model *m, const fasa_device_info *dev, const run_result *r)
{
    if (o->json) {
        report_json(o, m, dev, r);
        return;
    }
    double pre_tps = r->prefill_s > 0 ? r->prompt_tokens / r->prefill_s : 0;
    double dec_tps = r->decode_s > 0 ? r->generated / r->decode_s : 0;
    fprintf(stderr, "\n[%s on %s (%s): prompt %u tokens, prefill %.1f tok/s; generated %u tokens, %.2f tok/s; "
                    "attention read %.1f%% of the cached tokens per decode step]\n",
            o->variant, fasa_backend_name(dev->backend), dev->name, r->prompt_tokens, pre_tps, r->generated, dec_tps,
            100 * r->attended);
    if (!r->has_transfer) return;
    const fasa_transfer_stats *t = &r->transfer;
    fprintf(stderr, "[FASA-M, fetch %s, row cache %u rows, prefetch %s: %llu sparse steps, row-cache hit rate "
                    "%.1f%% (%llu of %llu rows), demand %.1f KB/step; prefetch %llu steps, %llu rows, %.1f KB/step]\n",
            o->fetch, r->row_cache, o->prefetch, (unsigned long long)t->steps, 100 * cli_row_hit_rate(t),
            (unsigned long long)t->rows_cached, (unsigned long long)t->rows_needed, kb_per_step(t->bytes, t->steps),
            (unsigned long long)t->prefetch_steps, (unsigned long long)t->prefetch_rows,
            kb_per_step(t->prefetch_bytes, t->steps));
}

/* --prompt and --question: non-empty UTF-8 text. */
static bool check_arg_text(const char *opt, const char *value, char *err, size_t n)
{
    if (!value) return true;
    if (!*value) {
        snprintf(err, n, "%s is empty", opt);
        return false;
    }
    return check_text(opt, value, strlen(value), err, n);
}

static bool check_opts(const run_opts *o, char *err, size_t n)
{
    if (!o->model) snprintf(err, n, "--model FILE is required (tools/get-model.sh prints the path)");
    else if (!o->prompt && !o->prompt_file && !o->question) snprintf(err, n, "give --prompt TEXT and/or --prompt-file FILE");
    else if (!check_arg_text("--prompt", o->prompt, err, n) || !check_arg_text("--question", o->question, err, n))
        return false;
    else if (strcmp(o->variant, "dense") && strcmp(o->variant, "fasa") && strcmp(o->variant, "fasa-m"))
        snprintf(err, n, "--variant must be dense, fasa or fasa-m");
    else if (strcmp(o->dtype, "f16") && strcmp(o->dtype, "f32") && strcmp(o->dtype, "bf16"))
        snprintf(err, n, "--dtype must be f16, bf16 or f32");
    else if (o->nfac == 0 || o->nfac > FASA_MAX_N_FAC) snprintf(err, n, "--nfac must be in 1..%d", FASA_MAX_N_FAC);
    else if (o->ntip != NTIP_FROM_FILE && (o->ntip == 0 || o->ntip > FASA_MAX_HEAD_DIM / 2))
        snprintf(err, n, "--ntip must be in 1..%d (default: the calibration file's)", FASA_MAX_HEAD_DIM / 2);
    else if ((uint64_t)o->n_sink + o->n_recent > o->nfac) snprintf(err, n, "--n-sink + --n-recent exceed --nfac");
    else if (strcmp(o->fetch, "direct") && strcmp(o->fetch, "staged")) snprintf(err, n, "--fetch must be direct or staged");
    else if (strcmp(o->fetch, "staged") == 0 && strcmp(o->variant, "fasa-m"))
        snprintf(err, n, "--fetch staged needs --variant fasa-m");
    else if (o->row_cache && strcmp(o->fetch, "staged")) snprintf(err, n, "--row-cache needs --fetch staged");
    else if (prefetch_point(o->prefetch) < 0) snprintf(err, n, "--prefetch must be none, attn or mlp");
    else if (prefetch_point(o->prefetch) > 0 && !o->row_cache)
        snprintf(err, n, "--prefetch %s needs --row-cache N > 0 (with --fetch staged)", o->prefetch);
    else return true;
    return false;
}

/* --row-cache for this prompt: clamped to the cache capacity (libfasa's
 * limit; a row cache of >= L rows holds the whole layer), and large enough
 * for the rows one step may need per KV head unless it holds everything. */
static bool row_cache_rows(const run_opts *o, const fm_hparams *hp, uint32_t capacity, uint32_t *rows)
{
    *rows = o->row_cache < capacity ? o->row_cache : capacity;
    uint64_t need = (uint64_t)(hp->n_head / hp->n_head_kv) * o->nfac;
    if (*rows == 0 || *rows >= need || *rows == capacity) return true;
    fprintf(stderr, "fasa run: --row-cache %u is below the %llu rows one step may need per KV head (%u query heads "
                    "per KV head x --nfac %u)\n", o->row_cache, (unsigned long long)need, hp->n_head / hp->n_head_kv,
            o->nfac);
    return false;
}

static fasa_status make_cache(const run_opts *o, fasa_context *ctx, const fm_hparams *hp, const fasa_calibration *cal,
                              uint32_t capacity, uint32_t rows, fasa_kv_cache **cache)
{
    bool offload = strcmp(o->variant, "fasa-m") == 0;
    model_attn_cache_opts co = {
        .dtype = cli_dtype(o->dtype),
        .placement = offload ? FASA_PLACEMENT_OFFLOAD : FASA_PLACEMENT_DEVICE,
        .fetch = strcmp(o->fetch, "staged") == 0 ? FASA_FETCH_STAGED : FASA_FETCH_DIRECT,
        .row_cache_rows = rows, .max_n_fac = o->nfac};
    return model_attn_make_cache(ctx, NULL, hp, cal, capacity, 0, &co, cache);
}

/* Prefill, generate and report with the attention in place. */
static bool run_attn(const run_opts *o, fm_model *m, fasa_context *ctx, model_attn *attn, const fm_tokens *prompt,
                     run_result *r)
{
    fm_attn_ops ops = model_attn_ops(attn);
    int point = prefetch_point(o->prefetch);
    fm_state_desc sd = {.n_ctx = attn->capacity, .n_threads = o->threads, .attn = &ops,
                        .prefetch = (fm_prefetch_point)point, .prefetch_fn = point ? model_attn_prefetch_fn() : NULL};
    fm_state *state = NULL;
    fm_error err = {0};
    float *logits = malloc((size_t)fm_model_hparams(m)->n_vocab * sizeof(float));
    bool ok = logits && (r->tokens = malloc(((size_t)o->max_tokens + 1) * sizeof(int32_t)));
    if (ok && fm_state_create(m, &sd, &state, &err) != FM_OK) {
        fprintf(stderr, "fasa run: %s\n", err.msg);
        ok = false;
    }
    ok = ok && prefill(state, prompt, logits, &r->prefill_s) && generate(o, m, state, logits, r);
    if (ok) {
        fasa_device_info dev;
        fasa_context_device(ctx, &dev);
        r->attended = model_attn_attended(attn);
        r->has_transfer = strcmp(o->variant, "fasa-m") == 0 &&
                          fasa_kv_cache_transfer_stats(attn->cache, &r->transfer, false) == FASA_OK;
        report(o, m, &dev, r);
    }
    fm_state_destroy(state);
    free(logits);
    free(r->tokens);
    return ok;
}

static int run_model(const run_opts *o, fm_model *m, fasa_context *ctx, const char *prompt_text, size_t prompt_len)
{
    const fm_hparams *hp = fm_model_hparams(m);
    fm_tokens prompt = {0};
    uint32_t capacity = 0, rows = 0;
    /* the context check comes before any cache is allocated */
    if (!tokenize_prompt(o, m, prompt_text, prompt_len, &prompt) ||
        !check_context("fasa run", hp, prompt.n, "prompt tokens", o->max_tokens, "--max-tokens", &capacity)) {
        fm_tokens_free(&prompt);
        return 1;
    }
    bool dense = strcmp(o->variant, "dense") == 0;
    fasa_calibration *cal = NULL;
    char default_cal[4096];
    const char *cal_path = dense ? NULL : resolve_calibration("fasa run", o->calibration, default_cal, sizeof default_cal);
    if (cal_path && row_cache_rows(o, hp, capacity, &rows))
        cal = load_calibration("fasa run", ctx, cal_path, !o->calibration, hp,
                               o->ntip == NTIP_FROM_FILE ? 0 : o->ntip);
    model_attn attn;
    fasa_kv_cache *cache = NULL;
    run_result r = {.prompt_tokens = (uint32_t)prompt.n, .row_cache = rows};
    int rc = 1;
    if (!dense && !cal) {
        /* the reason is printed already */
    } else if (!model_attn_init(&attn, ctx, hp, capacity, o->nfac)) {
        fprintf(stderr, "fasa run: out of memory\n");
        model_attn_free(&attn);
    } else if (make_cache(o, ctx, hp, cal, capacity, rows, &cache) != FASA_OK) {
        fprintf(stderr, "fasa run: %s\n", fasa_context_last_error(ctx));
        model_attn_free(&attn);
    } else {
        attn.cache = cache;
        attn.desc = (fasa_decode_desc){.mode = dense ? FASA_MODE_DENSE : FASA_MODE_FASA, .n_fac = o->nfac,
                                       .n_sink = o->n_sink, .n_recent = o->n_recent};
        rc = run_attn(o, m, ctx, &attn, &prompt, &r) ? 0 : 1;
        model_attn_free(&attn);
    }
    fasa_kv_cache_destroy(cache);
    fasa_calibration_destroy(cal);
    fm_tokens_free(&prompt);
    return rc;
}

int cmd_run(int argc, char **argv)
{
    run_opts o = {.backend = "auto", .variant = "fasa", .dtype = "f16", .fetch = "direct", .prefetch = "none",
                  .nfac = 256, .ntip = NTIP_FROM_FILE, .max_tokens = 128};
    uint32_t device = UINT32_MAX;
    const cli_opt opts[] = {
        {"model", CLI_STRING, &o.model, "FILE", "GGUF model (tools/get-model.sh prints it)"},
        {"prompt", CLI_STRING, &o.prompt, "TEXT", "prompt text"},
        {"prompt-file", CLI_STRING, &o.prompt_file, "FILE", "prompt text from a file (e.g. a novel chapter)"},
        {"question", CLI_STRING, &o.question, "TEXT", "appended after the prompt text"},
        {"raw", CLI_FLAG, &o.raw, NULL, "no chat template: continue the text as is"},
        {"backend", CLI_STRING, &o.backend, "B", "auto, cpu, vulkan, opencl, cuda (default auto)"},
        {"device", CLI_UINT, &device, "N", "device index within the backend"},
        {"variant", CLI_STRING, &o.variant, "V", "dense, fasa (FASA-C) or fasa-m (default fasa)"},
        {"calibration", CLI_STRING, &o.calibration, "FILE", DEFAULT_CALIBRATION_HELP},
        {"ntip", CLI_UINT, &o.ntip, "N", "chunks per head, re-selected from the file's CA (default: the file's)"},
        {"nfac", CLI_UINT, &o.nfac, "N", "token budget, 1.." MODEL_CLI_STR(FASA_MAX_N_FAC) " (default 256)"},
        {"n-sink", CLI_UINT, &o.n_sink, "N", "first tokens always attended, inside the budget (default 0)"},
        {"n-recent", CLI_UINT, &o.n_recent, "N", "last tokens always attended, inside the budget (default 0)"},
        {"dtype", CLI_STRING, &o.dtype, "f16|bf16|f32", "KV storage (default f16)"},
        {"fetch", CLI_STRING, &o.fetch, "direct|staged", "fasa-m: FAC reads host rows in place or gathers them first"},
        {"row-cache", CLI_UINT, &o.row_cache, "N", "with --fetch staged: device rows kept per layer and KV head"},
        {"prefetch", CLI_STRING, &o.prefetch, "none|attn|mlp", "with --row-cache: fetch layer l+1's rows during l"},
        {"max-tokens", CLI_UINT, &o.max_tokens, "N",
         "tokens to generate at most (default 128); prompt + N must fit the model's context"},
        {"threads", CLI_UINT, &o.threads, "N", "threads (default: all cores)"},
        {"quiet", CLI_FLAG, &o.quiet, NULL, "do not print the generated text"},
        {"json", CLI_FLAG, &o.json, NULL, "print the statistics, token ids and text as JSON"},
        {NULL, 0, NULL, NULL, NULL}};
    int parsed = cli_parse_command("fasa run", "fasa run --model FILE --prompt TEXT [options]",
                  "Greedy generation with a Llama-architecture GGUF model (SmolLM2-135M-Instruct);\n"
                  "the prompt is prefilled densely, every generated token's attention runs through\n"
                  "libfasa in the chosen variant.  Streams the text, then prints tokens/s and the\n"
                  "fraction of the cache the attention read; for fasa-m also the host->device\n"
                  "traffic (row-cache hit rate, demand and prefetch KB per sparse step).\n"
                  "FASA-M options: --fetch staged gathers the selected rows into device memory\n"
                  "(default direct: read in place); --row-cache N keeps N rows per layer and KV\n"
                  "head there across steps (N >= group x nfac, clamped to the context); --prefetch\n"
                  "attn|mlp forms layer l+1's query from layer l's input or from its state after\n"
                  "the attention, and fetches l+1's selected rows early (InfiniGen-style).\n"
                  "The prompt (file, --prompt, --question) must be UTF-8 text without NUL bytes\n"
                  "(else the error names the byte offset) and give at least one token; prompt\n"
                  "tokens + --max-tokens must fit the model's context length.", opts, argc, argv, (cli_check_fn)check_opts, &o);
    if (parsed >= 0) return parsed;
    char err[512];
    size_t prompt_len = 0;
    char *prompt = read_prompt(&o, &prompt_len);   /* before the model: fail fast on a bad file */
    if (!prompt) return 1;
    fm_model *m = model_open("fasa run", o.model, o.threads);
    fasa_context *ctx = NULL;
    int rc = 1;
    if (!m) {
        /* the reason is printed already */
    } else if (cli_make_context(o.backend, device == UINT32_MAX ? -1 : (int)device, o.threads, 0, &ctx, err,
                                sizeof err) != FASA_OK)
        fprintf(stderr, "fasa run: %s\n", err);
    else
        rc = run_model(&o, m, ctx, prompt, prompt_len);
    fasa_context_destroy(ctx);
    fm_model_free(m);
    free(prompt);
    return rc;
}
