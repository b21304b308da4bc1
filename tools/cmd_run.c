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

typedef struct run_opts {
    const char *model, *prompt, *prompt_file, *question, *backend, *variant, *calibration, *dtype;
    uint32_t device, nfac, ntip, max_tokens, threads, n_sink, n_recent;
    bool raw, json, quiet;
} run_opts;

/* The prompt: a chat turn holding the prompt text (a file and/or --prompt
 * and --question), or the raw text with --raw. */
static bool build_prompt(const run_opts *o, const fm_model *m, fm_tokens *out)
{
    size_t file_len = 0;
    char *file = o->prompt_file ? read_text_file("fasa run", o->prompt_file, &file_len) : NULL;
    if (o->prompt_file && !file) return false;
    size_t n = file_len + (o->prompt ? strlen(o->prompt) : 0) + (o->question ? strlen(o->question) : 0) + 8;
    char *text = malloc(n);
    snprintf(text, n, "%s%s%s%s%s", file ? file : "", file && o->prompt ? "\n\n" : "", o->prompt ? o->prompt : "",
             (file || o->prompt) && o->question ? "\n\n" : "", o->question ? o->question : "");
    free(file);
    fm_error err = {0};
    fm_status st;
    if (o->raw) {
        st = fm_tokenize(fm_model_tokenizer(m), text, strlen(text), out, &err);
    } else {
        fm_chat_message msg = {"user", text};
        st = fm_chat_tokenize(fm_model_tokenizer(m), &msg, 1, true, out, &err);
    }
    free(text);
    if (st != FM_OK) fprintf(stderr, "fasa run: prompt: %s\n", err.msg);
    return st == FM_OK;
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
    uint32_t prompt_tokens, generated;
    double prefill_s, decode_s, attended;
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
        r->generated++;
        if (fm_state_eval(s, &next, 1, logits, 0, &err) != FM_OK) {
            fprintf(stderr, "\nfasa run: decode: %s\n", err.msg);
            return false;
        }
    }
    r->decode_s = cli_now() - t0;
    if (!o->quiet && !o->json) printf("\n");
    return true;
}

static void report(const run_opts *o, const fasa_device_info *dev, const run_result *r)
{
    double pre_tps = r->prefill_s > 0 ? r->prompt_tokens / r->prefill_s : 0;
    double dec_tps = r->decode_s > 0 ? r->generated / r->decode_s : 0;
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "backend", fasa_backend_name(dev->backend));
        cJSON_AddStringToObject(j, "device", dev->name);
        cJSON_AddStringToObject(j, "variant", o->variant);
        cJSON_AddNumberToObject(j, "prompt_tokens", r->prompt_tokens);
        cJSON_AddNumberToObject(j, "generated_tokens", r->generated);
        cJSON_AddNumberToObject(j, "prefill_tokens_per_s", pre_tps);
        cJSON_AddNumberToObject(j, "decode_tokens_per_s", dec_tps);
        cJSON_AddNumberToObject(j, "attended_fraction", r->attended);
        char *text = cJSON_Print(j);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(j);
        return;
    }
    fprintf(stderr, "\n[%s on %s (%s): prompt %u tokens, prefill %.1f tok/s; generated %u tokens, %.2f tok/s; "
                    "attention read %.1f%% of the cached tokens per decode step]\n",
            o->variant, fasa_backend_name(dev->backend), dev->name, r->prompt_tokens, pre_tps, r->generated, dec_tps,
            100 * r->attended);
}

static bool check_opts(const run_opts *o, char *err, size_t n)
{
    if (!o->prompt && !o->prompt_file && !o->question) snprintf(err, n, "give --prompt TEXT and/or --prompt-file FILE");
    else if (strcmp(o->variant, "dense") && strcmp(o->variant, "fasa") && strcmp(o->variant, "fasa-m"))
        snprintf(err, n, "--variant must be dense, fasa or fasa-m");
    else if (strcmp(o->dtype, "f16") && strcmp(o->dtype, "f32")) snprintf(err, n, "--dtype must be f16 or f32");
    else if (o->nfac == 0 || o->nfac > FASA_MAX_N_FAC) snprintf(err, n, "--nfac must be in 1..%d", FASA_MAX_N_FAC);
    else if ((uint64_t)o->n_sink + o->n_recent > o->nfac) snprintf(err, n, "--n-sink + --n-recent exceed --nfac");
    else return true;
    return false;
}

static int run_model(const run_opts *o, fm_model *m, fasa_context *ctx)
{
    const fm_hparams *hp = fm_model_hparams(m);
    fm_tokens prompt = {0};
    if (!build_prompt(o, m, &prompt)) return 1;
    uint32_t capacity = (uint32_t)prompt.n + o->max_tokens + 1;
    if (capacity > hp->n_ctx_train)
        fprintf(stderr, "fasa run: warning: %u tokens exceed the model's trained context (%u)\n", capacity,
                hp->n_ctx_train);
    bool dense = strcmp(o->variant, "dense") == 0;
    fasa_calibration *cal = dense ? NULL : load_calibration("fasa run", ctx, o->calibration, hp, o->ntip);
    model_attn attn;
    fasa_kv_cache *cache = NULL;
    fm_state *state = NULL;
    fm_error err = {0};
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    int rc = 1;
    if ((dense || cal) && logits && model_attn_init(&attn, ctx, hp, capacity, o->nfac) &&
        model_attn_make_cache(ctx, NULL, hp, cal, capacity, 0,
                              strcmp(o->dtype, "f32") == 0 ? FASA_DTYPE_F32 : FASA_DTYPE_F16,
                              strcmp(o->variant, "fasa-m") == 0 ? FASA_PLACEMENT_OFFLOAD : FASA_PLACEMENT_DEVICE,
                              &cache) == FASA_OK) {
        attn.cache = cache;
        attn.desc = (fasa_decode_desc){.mode = dense ? FASA_MODE_DENSE : FASA_MODE_FASA, .n_fac = o->nfac,
                                       .n_sink = o->n_sink, .n_recent = o->n_recent};
        fm_attn_ops ops = model_attn_ops(&attn);
        fm_state_desc sd = {.n_ctx = capacity, .n_threads = o->threads, .attn = &ops};
        run_result r = {.prompt_tokens = (uint32_t)prompt.n};
        if (fm_state_create(m, &sd, &state, &err) != FM_OK) fprintf(stderr, "fasa run: %s\n", err.msg);
        else if (prefill(state, &prompt, logits, &r.prefill_s) && generate(o, m, state, logits, &r)) {
            fasa_device_info dev;
            fasa_context_device(ctx, &dev);
            r.attended = model_attn_attended(&attn);
            report(o, &dev, &r);
            rc = 0;
        }
        model_attn_free(&attn);
    } else if (dense || cal) {
        fprintf(stderr, "fasa run: %s\n", fasa_context_last_error(ctx));
    }
    fm_state_destroy(state);
    fasa_kv_cache_destroy(cache);
    fasa_calibration_destroy(cal);
    fm_tokens_free(&prompt);
    free(logits);
    return rc;
}

int cmd_run(int argc, char **argv)
{
    run_opts o = {.backend = "auto", .variant = "fasa", .calibration = DEFAULT_CALIBRATION, .dtype = "f16",
                  .nfac = 256, .max_tokens = 128};
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
        {"calibration", CLI_STRING, &o.calibration, "FILE", "calibration JSON (default " DEFAULT_CALIBRATION ")"},
        {"ntip", CLI_UINT, &o.ntip, "N", "chunks per head, re-selected from the file's CA (default: the file's)"},
        {"nfac", CLI_UINT, &o.nfac, "N", "token budget (default 256)"},
        {"n-sink", CLI_UINT, &o.n_sink, "N", "first tokens always attended, inside the budget (default 0)"},
        {"n-recent", CLI_UINT, &o.n_recent, "N", "last tokens always attended, inside the budget (default 0)"},
        {"dtype", CLI_STRING, &o.dtype, "f16|f32", "KV storage (default f16)"},
        {"max-tokens", CLI_UINT, &o.max_tokens, "N", "tokens to generate at most (default 128)"},
        {"threads", CLI_UINT, &o.threads, "N", "threads (default: all cores)"},
        {"quiet", CLI_FLAG, &o.quiet, NULL, "do not print the generated text"},
        {"json", CLI_FLAG, &o.json, NULL, "print only the statistics as JSON"},
        {NULL, 0, NULL, NULL, NULL}};
    int parsed = cli_parse_command("fasa run", "fasa run --model FILE --prompt TEXT [options]",
                  "Greedy generation with a Llama-architecture GGUF model (SmolLM2-135M-Instruct);\n"
                  "the prompt is prefilled densely, every generated token's attention runs through\n"
                  "libfasa in the chosen variant.  Streams the text, then prints tokens/s and the\n"
                  "fraction of the cache the attention read.", opts, argc, argv, (cli_check_fn)check_opts, &o);
    if (parsed >= 0) return parsed;
    char err[512];
    fm_model *m = model_open("fasa run", o.model, o.threads);
    if (!m) return 1;
    fasa_context *ctx = NULL;
    int rc = 1;
    if (cli_make_context(o.backend, device == UINT32_MAX ? -1 : (int)device, o.threads, 0, &ctx, err,
                         sizeof err) != FASA_OK)
        fprintf(stderr, "fasa run: %s\n", err);
    else
        rc = run_model(&o, m, ctx);
    fasa_context_destroy(ctx);
    fm_model_free(m);
    return rc;
}
