/* fasa eval: model quality of FASA against dense attention and baselines
 * (MODEL_NOTES §8 items 1-2).  Per text window: a dense prefill of --ctx
 * tokens, then --steps teacher-forced decode steps per method, each method
 * keeping the K/V of its own run (errors compound as in deployment). */
#include "cli.h"
#include "commands.h"
#include "fileio.h"
#include "model_attn.h"
#include "model_cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <sys/stat.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONFIGS 256

typedef struct eval_opts {
    const char *model, *texts, *methods, *calibration, *backend, *dtype, *gqa, *dump;
    uint32_t device, ctx, steps, windows, threads, sink, n_sink, n_recent;
    cli_list nfac, ntip;
    uint64_t seed;
    bool json, no_measure;
} eval_opts;

typedef struct eval_config {
    char method[16];
    uint32_t nfac, ntip;
    /* sums over steps (and heads for recall/mass) */
    double nll, kl, recall, mass, oracle_mass, attended;
    uint64_t steps, top1, measured;
} eval_config;

typedef struct eval_run {
    const eval_opts *o;
    const char *cal_path;        /* the calibration file read (--calibration or the default) */
    fm_model *m;
    const fm_hparams *hp;
    fasa_context *ctx;
    fasa_calibration *cal;       /* the file's, as loaded */
    fm_state *state;
    model_attn attn;
    float *logits, *dense_logp;  /* [vocab], [steps][vocab] */
    double dense_nll;
    uint64_t dense_steps;
    eval_config configs[MAX_CONFIGS];
    uint32_t n_configs, max_nfac;
    bool dumped, dump_failed;
} eval_run;

/* ------------------------------------------------------------------------ */
/* Configurations                                                            */
/* ------------------------------------------------------------------------ */

static void add_config(eval_run *r, const char *method, uint32_t nfac, uint32_t ntip)
{
    if (r->n_configs >= MAX_CONFIGS) return;
    eval_config *c = &r->configs[r->n_configs++];
    memset(c, 0, sizeof *c);
    snprintf(c->method, sizeof c->method, "%s", method);
    c->nfac = nfac;
    c->ntip = ntip;
}

/* fasa, random and highfreq at every (nfac, ntip); oracle and window need
 * no dims, so once per nfac. */
static void plan(eval_run *r)
{
    const char *with_dims[] = {"fasa", "random", "highfreq"}, *without[] = {"oracle", "window"};
    for (uint32_t f = 0; f < r->o->nfac.n; f++) {
        for (int m = 0; m < 3; m++)
            if (cli_list_has(r->o->methods, with_dims[m]))
                for (uint32_t t = 0; t < r->o->ntip.n; t++) add_config(r, with_dims[m], r->o->nfac.v[f], r->o->ntip.v[t]);
        for (int m = 0; m < 2; m++)
            if (cli_list_has(r->o->methods, without[m])) add_config(r, without[m], r->o->nfac.v[f], 0);
    }
}

static fasa_calibration *config_calibration(eval_run *r, const eval_config *c)
{
    fasa_calibration *cal = NULL;
    if (strcmp(c->method, "random") == 0) return make_baseline_calibration(r->ctx, r->hp, c->ntip, true, r->o->seed);
    if (strcmp(c->method, "highfreq") == 0) return make_baseline_calibration(r->ctx, r->hp, c->ntip, false, 0);
    if (strcmp(c->method, "fasa") == 0) {
        if (fasa_calibration_reselect(r->cal, c->ntip, &cal) != FASA_OK)
            fprintf(stderr, "fasa eval: --ntip %u: %s\n", c->ntip, fasa_context_last_error(r->ctx));
        return cal;
    }
    /* oracle and window ignore the dims; the file's satisfy the cache */
    if (fasa_calibration_reselect(r->cal, 1, &cal) != FASA_OK) return NULL;
    return cal;
}

static fasa_decode_desc config_desc(const eval_run *r, const eval_config *c)
{
    fasa_decode_desc d = {.mode = FASA_MODE_FASA, .n_fac = c->nfac,
                          .gqa_select = strcmp(r->o->gqa, "group") == 0 ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD};
    if (strcmp(c->method, "oracle") == 0) d.mode = FASA_MODE_ORACLE;
    if (strcmp(c->method, "window") != 0 && (uint64_t)r->o->n_sink + r->o->n_recent < c->nfac) {
        d.n_sink = r->o->n_sink; /* forced tokens inside the budget (docs/SPEC.md §2 rule 7) */
        d.n_recent = r->o->n_recent;
    }
    if (strcmp(c->method, "window") == 0) { /* sink + recent only: the whole budget is forced */
        d.n_sink = r->o->sink < c->nfac ? r->o->sink : 0;
        d.n_recent = c->nfac - d.n_sink;
    }
    return d;
}

/* ------------------------------------------------------------------------ */
/* Scoring                                                                   */
/* ------------------------------------------------------------------------ */

static void log_softmax(const float *x, uint32_t n, float *out)
{
    float mx = x[0];
    for (uint32_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    float lse = mx + (float)log(sum);
    for (uint32_t i = 0; i < n; i++) out[i] = x[i] - lse;
}

static uint32_t argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++) best = x[i] > x[best] ? i : best;
    return best;
}

/* KL(dense || method) from two log-probability rows. */
static double kl_div(const float *logp_dense, const float *logp, uint32_t n)
{
    double kl = 0;
    for (uint32_t i = 0; i < n; i++) {
        double p = exp((double)logp_dense[i]);
        if (p > 0) kl += p * ((double)logp_dense[i] - logp[i]);
    }
    return kl > 0 ? kl : 0;
}

/* Runs the steps of one method (or the dense baseline when c is NULL). */
static bool run_steps(eval_run *r, const fm_tokens *toks, size_t start, eval_config *c)
{
    uint32_t V = r->hp->n_vocab;
    float *logp = malloc(V * sizeof(float));
    fm_error err = {0};
    bool ok = logp && fm_state_truncate(r->state, r->o->ctx, &err) == FM_OK;
    for (uint32_t t = 0; ok && t < r->o->steps; t++) {
        int32_t in = toks->ids[start + r->o->ctx + t], target = toks->ids[start + r->o->ctx + t + 1];
        ok = fm_state_eval(r->state, &in, 1, r->logits, 0, &err) == FM_OK;
        if (!ok) break;
        float *dense = r->dense_logp + (size_t)t * V;
        log_softmax(r->logits, V, c ? logp : dense);
        if (!c) {
            r->dense_nll -= dense[target];
            r->dense_steps++;
            continue;
        }
        c->nll -= logp[target];
        c->kl += kl_div(dense, logp, V);
        c->top1 += argmax(logp, V) == argmax(dense, V);
        c->steps++;
    }
    if (!ok) fprintf(stderr, "fasa eval: %s\n", err.msg[0] ? err.msg : "out of memory");
    free(logp);
    return ok;
}

static bool run_config(eval_run *r, const fm_tokens *toks, size_t start, eval_config *c)
{
    fasa_calibration *cal = c ? config_calibration(r, c) : NULL;
    if (c && !cal) return false;
    fasa_kv_cache *cache = NULL;
    uint32_t capacity = r->attn.capacity;   /* --ctx + --steps, checked against the model's context */
    model_attn_cache_opts co = {.dtype = cli_dtype(r->o->dtype),
                                .placement = FASA_PLACEMENT_DEVICE, .max_n_fac = r->max_nfac};
    fasa_status st = model_attn_make_cache(r->ctx, r->state, r->hp, cal, capacity, r->o->ctx, &co, &cache);
    fasa_calibration_destroy(cal);
    if (st != FASA_OK) {
        fprintf(stderr, "fasa eval: cache: %s\n", fasa_context_last_error(r->ctx));
        return false;
    }
    r->attn.cache = cache;
    /* n_fac is explicit even for dense steps: 0 would be libfasa's 256,
     * more than a cache sized for smaller budgets accepts */
    r->attn.desc = c ? config_desc(r, c) : (fasa_decode_desc){.mode = FASA_MODE_DENSE, .n_fac = r->max_nfac};
    r->attn.measure = c && !r->o->no_measure && strcmp(c->method, "oracle") != 0;
    memset(&r->attn.stats, 0, sizeof r->attn.stats);
    bool ok = run_steps(r, toks, start, c);
    if (c) {
        c->recall += r->attn.stats.recall_sum;
        c->mass += r->attn.stats.mass_sum;
        c->oracle_mass += r->attn.stats.oracle_mass_sum;
        c->measured += r->attn.stats.measured;
        c->attended += model_attn_attended(&r->attn) * r->o->steps;
    }
    r->attn.cache = NULL;
    fasa_kv_cache_destroy(cache);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Dumping real decode cases for fasa conform --replay                        */
/* ------------------------------------------------------------------------ */

bool conform_write_case_file(const char *path, uint32_t hq, uint32_t hkv, uint32_t d, uint32_t L,
                             uint32_t n_tip, const float *q, const float *k, const float *v,
                             const uint16_t *dims, const char *origin);

/* Writes one case file atomically (a temporary file renamed over the
 * target), never over one of the command's inputs. */
static bool write_case(eval_run *r, const char *path, uint32_t L, uint32_t n_tip, const float *q, const float *k,
                       const float *v, const uint16_t *dims, const char *origin)
{
    model_cli_input inputs[2 + 64] = {{"--model", r->o->model}, {"--calibration", r->cal_path}};
    size_t n_inputs = 2;
    char *texts = strdup(r->o->texts), *save = NULL, err[1024];
    for (char *t = texts ? strtok_r(texts, ",", &save) : NULL; t && n_inputs < sizeof inputs / sizeof inputs[0];
         t = strtok_r(NULL, ",", &save))
        inputs[n_inputs++] = (model_cli_input){"--text", t};
    bool ok = check_output_path("--dump", path, inputs, n_inputs, err, sizeof err);
    free(texts);
    if (!ok) {
        fprintf(stderr, "fasa eval: %s\n", err);
        return false;
    }
    note_replacing("fasa eval", path);
    fasa__atomic_file af;
    if (fasa__atomic_begin(&af, path, err, sizeof err) != 0) {
        fprintf(stderr, "fasa eval: --dump: %s: %s\n", path, err);
        return false;
    }
    /* conform_write_case_file writes by path: hand it the temporary file
     * (the inode af.f holds, so the commit's fsync covers its content) */
    const fm_hparams *hp = r->hp;
    if (!conform_write_case_file(af.tmp, hp->n_head, hp->n_head_kv, hp->head_dim, L, n_tip, q, k, v, dims, origin)) {
        fprintf(stderr, "fasa eval: --dump: %s: write failed\n", path);
        fasa__atomic_abort(&af);
        return false;
    }
    if (fasa__atomic_commit(&af, err, sizeof err) != 0) {
        fprintf(stderr, "fasa eval: --dump: %s: %s\n", path, err);
        return false;
    }
    return true;
}

static void dump_cases(eval_run *r, const float *q_last, uint32_t layer)
{
    uint32_t L = 0, d = r->hp->head_dim, hq = r->hp->n_head, hkv = r->hp->n_head_kv;
    fasa_kv_cache_length(r->attn.cache, layer, &L);
    fasa_calibration_info info;
    fasa_calibration_get_info(r->cal, &info);
    float *k = malloc((size_t)L * hkv * d * sizeof(float)), *v = malloc((size_t)L * hkv * d * sizeof(float));
    uint16_t *dims = malloc((size_t)hq * 2 * info.n_tip * sizeof(uint16_t));
    bool ok = k && v && dims && fasa_kv_cache_read(r->attn.cache, layer, 0, L, k, v) == FASA_OK;
    for (uint32_t h = 0; ok && h < hq; h++)
        ok = fasa_calibration_get_dims(r->cal, layer, h, dims + (size_t)h * 2 * info.n_tip, 2 * info.n_tip) == FASA_OK;
    char path[4096], origin[256];
    snprintf(path, sizeof path, "%s/smollm2-layer%02u-L%u.fasacase", r->o->dump, layer, L);
    snprintf(origin, sizeof origin, "fasa eval: %s, layer %u, position %u", r->o->model, layer, L - 1);
    if (!ok) fprintf(stderr, "fasa eval: --dump: %s: out of memory or cache read failed\n", path);
    if (ok && write_case(r, path, L, info.n_tip, q_last, k, v, dims, origin))
        fprintf(stderr, "fasa eval: wrote %s\n", path);
    else
        r->dump_failed = true;
    free(k);
    free(v);
    free(dims);
}

/* Decode hook: the first decode step of the first window, three layers. */
static void maybe_dump(void *user, uint32_t layer, const float *q)
{
    eval_run *r = user;
    if (r->dumped || r->dump_failed || !r->o->dump || !r->attn.cache) return;
    uint32_t last = r->hp->n_layer - 1;
    if (layer == 1 || layer == r->hp->n_layer / 2 || layer == last) dump_cases(r, q, layer);
    if (layer == last) r->dumped = true;
}

/* ------------------------------------------------------------------------ */
/* Windows                                                                   */
/* ------------------------------------------------------------------------ */

static bool prefill(eval_run *r, const fm_tokens *toks, size_t start)
{
    fm_error err = {0};
    bool ok = fm_state_truncate(r->state, 0, &err) == FM_OK;
    cli_progress prog;
    cli_progress_start(&prog, "prefill", r->o->ctx);
    for (uint32_t i = 0; ok && i < r->o->ctx; i += 256) {
        uint32_t n = r->o->ctx - i < 256 ? r->o->ctx - i : 256;
        ok = fm_state_eval(r->state, toks->ids + start + i, n, NULL, 0, &err) == FM_OK;
        cli_progress_step(&prog, n);
    }
    cli_progress_end(&prog);
    if (!ok) fprintf(stderr, "fasa eval: prefill: %s\n", err.msg);
    return ok;
}

static bool eval_window(eval_run *r, const fm_tokens *toks, size_t start)
{
    if (!prefill(r, toks, start) || !run_config(r, toks, start, NULL)) return false;
    cli_progress prog;
    cli_progress_start(&prog, "methods", r->n_configs);
    for (uint32_t i = 0; i < r->n_configs; i++) {
        r->attn.on_decode = i == 0 ? maybe_dump : NULL;
        if (!run_config(r, toks, start, &r->configs[i])) return false;
        if (r->dump_failed) return false;   /* the reason is printed already */
        cli_progress_step(&prog, 1);
    }
    cli_progress_end(&prog);
    return true;
}

/* Windows spread over each text (comma-separated files). */
static bool eval_texts(eval_run *r, uint32_t *n_windows)
{
    char *list = strdup(r->o->texts), *save = NULL;
    bool ok = true;
    *n_windows = 0;
    for (char *path = strtok_r(list, ",", &save); ok && path; path = strtok_r(NULL, ",", &save)) {
        size_t len = 0;
        char *text = read_text_file("fasa eval", "--text", path, &len), what[4096];
        snprintf(what, sizeof what, "--text %s", path);
        fm_tokens toks = {0};
        ok = text && tokenize_text("fasa eval", what, r->m, text, len, &toks);
        size_t need = (size_t)r->o->ctx + r->o->steps + 1;
        if (ok && toks.n < need) {
            fprintf(stderr, "fasa eval: %s has %zu tokens, fewer than ctx + steps + 1 = %zu\n", path, toks.n, need);
            ok = false;
        }
        /* skip the first 5% (front matter) where the text is long enough, then spread evenly */
        size_t lo = ok ? toks.n / 20 : 0;
        lo = ok && lo > toks.n - need ? toks.n - need : lo;
        size_t span = ok ? toks.n - need - lo : 0;
        if (ok && r->o->windows > span + 1) {   /* more would repeat windows (and could run for ever) */
            fprintf(stderr, "fasa eval: --windows %u: %s (%zu tokens) has only %zu distinct window%s of ctx + steps + 1 = "
                            "%zu tokens after the front matter\n", r->o->windows, path, toks.n, span + 1,
                    span ? "s" : "", need);
            ok = false;
        }
        for (uint32_t w = 0; ok && w < r->o->windows; w++) {
            size_t start = lo + (r->o->windows > 1 ? span * w / (r->o->windows - 1) : span / 2);
            if (!r->o->json) fprintf(stderr, "fasa eval: %s window %u at token %zu\n", path, w, start);
            ok = eval_window(r, &toks, start);
            *n_windows += ok;
        }
        fm_tokens_free(&toks);
        free(text);
    }
    free(list);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

static void print_results(const eval_run *r, uint32_t n_windows)
{
    const eval_opts *o = r->o;
    double ppl_dense = exp(r->dense_nll / (double)r->dense_steps);
    fasa_device_info dev;
    fasa_context_device(r->ctx, &dev);
    if (o->json) {
        cJSON *arr = cJSON_CreateArray();
        for (uint32_t i = 0; i < r->n_configs; i++) {
            const eval_config *c = &r->configs[i];
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "method", c->method);
            cJSON_AddNumberToObject(j, "nfac", c->nfac);
            cJSON_AddNumberToObject(j, "ntip", c->ntip);
            cJSON_AddNumberToObject(j, "ppl", exp(c->nll / c->steps));
            cJSON_AddNumberToObject(j, "ppl_dense", ppl_dense);
            cJSON_AddNumberToObject(j, "kl", c->kl / c->steps);
            cJSON_AddNumberToObject(j, "top1_agree", (double)c->top1 / c->steps);
            if (c->measured) {
                cJSON_AddNumberToObject(j, "recall", c->recall / c->measured);
                cJSON_AddNumberToObject(j, "mass", c->mass / c->measured);
                cJSON_AddNumberToObject(j, "oracle_mass", c->oracle_mass / c->measured);
            }
            cJSON_AddNumberToObject(j, "attended", c->attended / c->steps);
            cJSON_AddNumberToObject(j, "ctx", o->ctx);
            cJSON_AddNumberToObject(j, "steps", (double)c->steps);
            cJSON_AddNumberToObject(j, "windows", n_windows);
            /* tokens forced inside a selector's budget (the window method is all forced) */
            fasa_decode_desc d = config_desc(r, c);
            bool window = strcmp(c->method, "window") == 0;
            cJSON_AddNumberToObject(j, "n_sink", window ? 0 : d.n_sink);
            cJSON_AddNumberToObject(j, "n_recent", window ? 0 : d.n_recent);
            cJSON_AddStringToObject(j, "gqa_select", o->gqa);
            cJSON_AddStringToObject(j, "backend", fasa_backend_name(dev.backend));
            cJSON_AddItemToArray(arr, j);
        }
        char *text = cJSON_Print(arr);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(arr);
        return;
    }
    printf("fasa eval: %u window(s) x %u steps after a %u-token dense prefill; backend %s; dense ppl %.3f\n",
           n_windows, o->steps, o->ctx, fasa_backend_name(dev.backend), ppl_dense);
    printf("%-9s %5s %5s %9s %8s %9s %8s %8s %8s %8s\n", "method", "nfac", "ntip", "ppl", "dppl%", "kl", "top1",
           "recall", "mass", "oracle");
    for (uint32_t i = 0; i < r->n_configs; i++) {
        const eval_config *c = &r->configs[i];
        double ppl = exp(c->nll / c->steps);
        printf("%-9s %5u %5u %9.3f %+8.2f %9.5f %8.4f ", c->method, c->nfac, c->ntip, ppl,
               100 * (ppl / ppl_dense - 1), c->kl / c->steps, (double)c->top1 / c->steps);
        if (c->measured)
            printf("%8.4f %8.4f %8.4f\n", c->recall / c->measured, c->mass / c->measured, c->oracle_mass / c->measured);
        else
            printf("%8s %8s %8s\n", "-", "-", "-");
    }
}

/* The configurations plan() makes, without making them. */
static uint64_t count_configs(const eval_opts *o)
{
    static const char *const with_dims[] = {"fasa", "random", "highfreq"}, *const without[] = {"oracle", "window"};
    uint64_t per_nfac = 0;
    for (int m = 0; m < 3; m++) per_nfac += cli_list_has(o->methods, with_dims[m]) ? o->ntip.n : 0;
    for (int m = 0; m < 2; m++) per_nfac += cli_list_has(o->methods, without[m]);
    return per_nfac * o->nfac.n;
}

/* A list of numbers: each in lo..hi, none twice. */
static bool check_number_list(const char *opt, const cli_list *l, uint32_t lo, uint32_t hi, const char *why,
                              char *err, size_t n)
{
    for (uint32_t i = 0; i < l->n; i++) {
        if (l->v[i] < lo || l->v[i] > hi) {
            snprintf(err, n, "%s: %u is outside %u..%u (%s)", opt, l->v[i], lo, hi, why);
            return false;
        }
        for (uint32_t j = 0; j < i; j++)
            if (l->v[j] == l->v[i]) {
                snprintf(err, n, "%s: %u is listed twice", opt, l->v[i]);
                return false;
            }
    }
    return true;
}

/* --text: comma-separated files, none empty. */
static bool check_file_list(const char *opt, const char *value, char *err, size_t n)
{
    for (const char *s = value;; s++) {
        size_t len = strcspn(s, ",");
        if (len == 0) {
            snprintf(err, n, "%s '%s': empty file name (files are separated by single commas)", opt, value);
            return false;
        }
        s += len;
        if (!*s) return true;
    }
}

static bool check_opts(const eval_opts *o, char *err, size_t n)
{
    static const char *const methods[] = {"fasa", "oracle", "window", "random", "highfreq", NULL};
    struct stat st;
    if (!o->model) snprintf(err, n, "--model FILE is required (tools/get-model.sh prints the path)");
    else if (!o->texts) snprintf(err, n, "--text FILE[,FILE...] is required");
    else if (!check_file_list("--text", o->texts, err, n)) return false;
    else if (!cli_check_names("methods", o->methods, methods, err, n)) return false;
    /* 0 would be the library's default (256 tokens, d/8 chunks) while the
     * tool sizes its buffers from the list: every value is explicit */
    else if (!check_number_list("--nfac", &o->nfac, 1, FASA_MAX_N_FAC, "token budget", err, n)) return false;
    else if (!check_number_list("--ntip", &o->ntip, 1, FASA_MAX_HEAD_DIM / 2, "chunks per head", err, n)) return false;
    else if (count_configs(o) > MAX_CONFIGS)
        snprintf(err, n, "--nfac x --ntip x --methods make %llu configurations, more than %d",
                 (unsigned long long)count_configs(o), MAX_CONFIGS);
    else if (o->ctx < 16 || o->steps == 0 || o->windows == 0) snprintf(err, n, "--ctx >= 16, --steps and --windows > 0");
    else if (strcmp(o->gqa, "head") && strcmp(o->gqa, "group")) snprintf(err, n, "--gqa-select must be head or group");
    else if (strcmp(o->dtype, "f16") && strcmp(o->dtype, "f32") && strcmp(o->dtype, "bf16"))
        snprintf(err, n, "--dtype must be f16, bf16 or f32");
    else if (o->dump && (!*o->dump || (stat(o->dump, &st) == 0 && !S_ISDIR(st.st_mode))))
        snprintf(err, n, "--dump '%s': not a directory", o->dump);
    else return true;
    return false;
}

static int evaluate(eval_run *r)
{
    const eval_opts *o = r->o;
    uint32_t capacity = 0, max_nfac = 1;
    /* before any allocation: the window must fit the model's context */
    if (!check_context("fasa eval", r->hp, o->ctx, "--ctx", o->steps, "--steps", &capacity)) return 1;
    bool uses_ntip = cli_list_has(o->methods, "fasa") || cli_list_has(o->methods, "random") ||
                     cli_list_has(o->methods, "highfreq");
    for (uint32_t i = 0; uses_ntip && i < o->ntip.n; i++)
        if (o->ntip.v[i] > r->hp->head_dim / 2) {
            fprintf(stderr, "fasa eval: --ntip %u: the model has %u chunks per head (head dim %u)\n", o->ntip.v[i],
                    r->hp->head_dim / 2, r->hp->head_dim);
            return 1;
        }
    for (uint32_t i = 0; i < o->nfac.n; i++) max_nfac = o->nfac.v[i] > max_nfac ? o->nfac.v[i] : max_nfac;
    r->max_nfac = max_nfac;
    r->logits = malloc((size_t)r->hp->n_vocab * sizeof(float));
    r->dense_logp = malloc((size_t)o->steps * r->hp->n_vocab * sizeof(float));
    if (!r->logits || !r->dense_logp || !model_attn_init(&r->attn, r->ctx, r->hp, capacity, max_nfac)) {
        fprintf(stderr, "fasa eval: out of memory\n");
        return 1;
    }
    r->attn.on_decode_user = r;
    fm_attn_ops ops = model_attn_ops(&r->attn);
    fm_state_desc sd = {.n_ctx = capacity, .n_threads = o->threads, .attn = &ops};
    fm_error err = {0};
    if (fm_state_create(r->m, &sd, &r->state, &err) != FM_OK) {
        fprintf(stderr, "fasa eval: %s\n", err.msg);
        return 1;
    }
    r->attn.state = r->state;
    if (o->dump && mkdir(o->dump, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fasa eval: --dump %s: %s\n", o->dump, strerror(errno));
        return 1;
    }
    plan(r);
    uint32_t n_windows = 0;
    if (!eval_texts(r, &n_windows)) return 1;
    print_results(r, n_windows);
    return 0;
}

int cmd_eval(int argc, char **argv)
{
    eval_opts o = {.methods = "fasa,oracle,window,random,highfreq",
                   .backend = "auto", .dtype = "f16", .gqa = "head", .ctx = 4096, .steps = 256, .windows = 1,
                   .sink = 4, .seed = 1, .nfac = {4, {64, 128, 256, 512}}, .ntip = {3, {4, 8, 16}}};
    uint32_t device = UINT32_MAX;
    const cli_opt opts[] = {
        {"model", CLI_STRING, &o.model, "FILE", "GGUF model"},
        {"text", CLI_STRING, &o.texts, "FILE[,FILE]", "evaluation text(s) (not the calibration text)"},
        {"ctx", CLI_UINT, &o.ctx, "N", "dense prefill length (default 4096)"},
        {"steps", CLI_UINT, &o.steps, "N", "teacher-forced decode steps per method (default 256)"},
        {"windows", CLI_UINT, &o.windows, "N", "windows per text (default 1)"},
        {"nfac", CLI_LIST, &o.nfac, "N[,N]", "token budgets, 1.." MODEL_CLI_STR(FASA_MAX_N_FAC) " (default 64,128,256,512)"},
        {"ntip", CLI_LIST, &o.ntip, "N[,N]", "chunks per head, 1..d/2 (default 4,8,16)"},
        {"methods", CLI_STRING, &o.methods, "M[,M]", "fasa, oracle, window, random, highfreq (default all)"},
        {"sink", CLI_UINT, &o.sink, "N", "window method: sink tokens (default 4; the rest is recent)"},
        {"n-sink", CLI_UINT, &o.n_sink, "N", "other methods: first tokens always kept, inside the budget (default 0)"},
        {"n-recent", CLI_UINT, &o.n_recent, "N", "other methods: last tokens always kept, inside the budget (default 0)"},
        {"calibration", CLI_STRING, &o.calibration, "FILE", DEFAULT_CALIBRATION_HELP},
        {"gqa-select", CLI_STRING, &o.gqa, "head|group", "selection per query head (default) or KV group"},
        {"dtype", CLI_STRING, &o.dtype, "f16|bf16|f32", "KV storage (default f16)"},
        {"backend", CLI_STRING, &o.backend, "B", "auto, cpu, vulkan, opencl, cuda"},
        {"device", CLI_UINT, &device, "N", "device index within the backend"},
        {"threads", CLI_UINT, &o.threads, "N", "threads (default: all cores)"},
        {"no-measure", CLI_FLAG, &o.no_measure, NULL, "skip recall and attention-mass measurement (faster)"},
        {"dump", CLI_STRING, &o.dump, "DIR", "write real decode cases for 'fasa conform --replay DIR'"},
        {"seed", CLI_U64, &o.seed, "N", "seed of the random-chunks baseline (default 1)"},
        {"json", CLI_FLAG, &o.json, NULL, "print JSON rows"},
        {NULL, 0, NULL, NULL, NULL}};
    int parsed = cli_parse_command("fasa eval", "fasa eval --model FILE --text FILE [options]",
                  "Teacher-forced decoding after a dense prefill: perplexity, KL(dense || method),\n"
                  "top-1 agreement with dense, recall of the oracle top-N_fac and the softmax mass the\n"
                  "selection captures, for FASA and the oracle, sink+recent window, random-chunk and\n"
                  "highest-frequency-chunk baselines at the same budget.", opts, argc, argv, (cli_check_fn)check_opts, &o);
    if (parsed >= 0) return parsed;
    char err[512], default_cal[4096];
    eval_run *r = calloc(1, sizeof *r);
    if (!r) return 1;
    r->o = &o;
    r->m = model_open("fasa eval", o.model, o.threads);
    int rc = 1;
    if (r->m) {
        r->hp = fm_model_hparams(r->m);
        if (cli_make_context(o.backend, device == UINT32_MAX ? -1 : (int)device, o.threads, 0, &r->ctx, err,
                             sizeof err) != FASA_OK)
            fprintf(stderr, "fasa eval: %s\n", err);
        else if ((r->cal_path = resolve_calibration("fasa eval", o.calibration, default_cal, sizeof default_cal)) &&
                 (r->cal = load_calibration("fasa eval", r->ctx, r->cal_path, !o.calibration, r->hp, 0)))
            rc = evaluate(r);
    }
    fm_state_destroy(r->state);
    model_attn_free(&r->attn);
    fasa_calibration_destroy(r->cal);
    fasa_context_destroy(r->ctx);
    fm_model_free(r->m);
    free(r->logits);
    free(r->dense_logp);
    free(r);
    return rc;
}
