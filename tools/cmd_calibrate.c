/* fasa calibrate: Contextual-Agreement calibration (docs/SPEC.md §4), here
 * from synthetic planted data, where the right answer is known. */
#include "cli.h"
#include "commands.h"
#include "model_cli.h"
#include "synth.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef struct calib_opts {
    const char *output, *layout, *model, *text;
    uint32_t layers, hq, hkv, d, ntip, kcalib, L, steps, threads;
    uint32_t windows, window, tmin, stride;
    uint64_t seed;
    bool synthetic, per_head_dims, share_group, json;
} calib_opts;

static synth_desc layer_synth(const calib_opts *o, uint32_t layer)
{
    return (synth_desc){.n_q_heads = o->hq, .n_kv_heads = o->hkv, .head_dim = o->d,
                        .layout = strcmp(o->layout, "neox") == 0 ? FASA_ROPE_NEOX : FASA_ROPE_NORM,
                        .n_tip = o->ntip, .per_head_dims = o->per_head_dims, .kind = SYNTH_PLANTED,
                        .seed = o->seed + 1000u * layer};
}

/* Feeds `steps` decode positions of every layer to the calibrator. */
static fasa_status feed(fasa_calibrator *calr, const calib_opts *o)
{
    size_t row = (size_t)o->hkv * o->d;
    uint64_t kv_bytes = 2 * (uint64_t)o->L * row * sizeof(float);
    char why[256];
    /* refuse what the machine cannot hold before asking malloc for it */
    if (!cli_check_host_bytes(kv_bytes, "--L keys and values", why, sizeof why)) {
        fprintf(stderr, "fasa calibrate: %s\n", why);
        return FASA_ERROR_OUT_OF_HOST_MEMORY;
    }
    float *k = malloc((size_t)o->L * row * sizeof(float)), *v = malloc((size_t)o->L * row * sizeof(float));
    float *q = malloc((size_t)o->hq * o->d * sizeof(float));
    fasa_status st = k && v && q ? FASA_OK : FASA_ERROR_OUT_OF_HOST_MEMORY;
    if (st != FASA_OK)
        fprintf(stderr, "fasa calibrate: out of memory for --L %u keys and values (%.1f GiB)\n", o->L,
                (double)kv_bytes / (1u << 30));
    cli_progress prog;
    cli_progress_start(&prog, "calibrating", (uint64_t)o->layers * o->steps);
    for (uint32_t l = 0; st == FASA_OK && l < o->layers; l++) {
        synth_desc sd = layer_synth(o, l);
        synth_keys(&sd, 0, o->L, k, v);
        for (uint32_t s = 0; st == FASA_OK && s < o->steps; s++) {
            /* decode positions spread over the second half of the window */
            uint32_t pos = o->L / 2 + (uint32_t)((uint64_t)(o->L / 2 - 1) * (s + 1) / o->steps);
            synth_query(&sd, pos, s, q);
            st = fasa_calibrator_add(calr, l, q, k, pos + 1);
            cli_progress_step(&prog, 1);
        }
    }
    cli_progress_end(&prog);
    free(k);
    free(v);
    free(q);
    return st;
}

typedef struct calib_report {
    uint32_t heads, exact_heads;
    double dims_recovered;      /* fraction of planted dims found */
    double share_above_04, share_below_015;
} calib_report;

static void evaluate(const calib_opts *o, const fasa_calibration *cal, calib_report *rep)
{
    uint32_t per_head = 2 * o->ntip, n_fc = o->d / 2;
    uint16_t *planted = malloc((size_t)o->hq * per_head * sizeof(uint16_t)), got[FASA_MAX_HEAD_DIM];
    float ca[FASA_MAX_HEAD_DIM / 2];
    uint64_t found = 0, total = 0, above = 0, below = 0, chunks = 0;
    memset(rep, 0, sizeof *rep);
    for (uint32_t l = 0; planted && l < o->layers; l++) {
        synth_desc sd = layer_synth(o, l);
        synth_planted_dims(&sd, planted);
        for (uint32_t h = 0; h < o->hq; h++) {
            fasa_calibration_get_dims(cal, l, h, got, FASA_MAX_HEAD_DIM);
            uint32_t hits = 0;
            for (uint32_t i = 0; i < per_head; i++)
                for (uint32_t j = 0; j < per_head; j++) hits += got[i] == planted[(size_t)h * per_head + j];
            found += hits;
            total += per_head;
            rep->heads++;
            rep->exact_heads += hits == per_head;
            fasa_calibration_get_ca(cal, l, h, ca, FASA_MAX_HEAD_DIM / 2);
            for (uint32_t i = 0; i < n_fc; i++, chunks++) {
                above += ca[i] > 0.4f;
                below += ca[i] < 0.15f;
            }
        }
    }
    free(planted);
    rep->dims_recovered = total ? (double)found / (double)total : 0;
    rep->share_above_04 = chunks ? (double)above / (double)chunks : 0;
    rep->share_below_015 = chunks ? (double)below / (double)chunks : 0;
}

/* ------------------------------------------------------------------------ */
/* From a model: teacher-forced windows of a text                           */
/* ------------------------------------------------------------------------ */

typedef struct model_hook {
    fasa_calibrator *calr;
    uint32_t tmin, stride;
    fasa_status st;
    uint64_t scored;
} model_hook;

/* Every stride-th position from tmin on, every layer: q against its keys. */
static void score_position(void *user, uint32_t layer, uint32_t pos, const float *q, const float *k_all,
                           uint32_t n_keys)
{
    model_hook *h = user;
    if (h->st != FASA_OK || pos < h->tmin || (pos - h->tmin) % h->stride != 0) return;
    h->st = fasa_calibrator_add(h->calr, layer, q, k_all, n_keys);
    h->scored += layer == 0;
}

static fasa_status feed_model(const calib_opts *o, fm_model *m, fasa_calibrator *calr, const fm_tokens *toks)
{
    model_hook hook = {calr, o->tmin, o->stride, FASA_OK, 0};
    fm_state_desc sd = {.n_ctx = o->window, .n_threads = o->threads, .qk_hook = score_position, .hook_user = &hook};
    fm_state *s = NULL;
    fm_error err = {0};
    if (fm_state_create(m, &sd, &s, &err) != FM_OK) {
        fprintf(stderr, "fasa calibrate: %s\n", err.msg);
        return FASA_ERROR_OUT_OF_HOST_MEMORY;
    }
    cli_progress prog;
    cli_progress_start(&prog, "calibrating", (uint64_t)o->windows * o->window);
    for (uint32_t w = 0; hook.st == FASA_OK && w < o->windows; w++) {
        /* windows spread evenly over the text, each a fresh sequence */
        size_t start = o->windows > 1 ? (toks->n - o->window) * w / (o->windows - 1) : 0;
        fm_state_truncate(s, 0, &err);
        for (uint32_t i = 0; hook.st == FASA_OK && i < o->window; i += 256) {
            uint32_t n = o->window - i < 256 ? o->window - i : 256;
            if (fm_state_eval(s, toks->ids + start + i, n, NULL, 0, &err) != FM_OK) {
                fprintf(stderr, "fasa calibrate: window %u: %s\n", w, err.msg);
                hook.st = FASA_ERROR_BACKEND;
            }
            cli_progress_step(&prog, n);
        }
        fasa_calibrator_next_sample(calr);
    }
    cli_progress_end(&prog);
    fm_state_destroy(s);
    return hook.st;
}

/* Mean CA shares and union sizes of a real-model calibration. */
static void model_report(const calib_opts *o, const fasa_calibration *cal, double secs)
{
    fasa_calibration_info info;
    fasa_calibration_get_info(cal, &info);
    uint32_t n_fc = info.shape.head_dim / 2, above = 0, below = 0, total = 0, u_min = UINT32_MAX, u_max = 0;
    double u_sum = 0;
    float ca[FASA_MAX_HEAD_DIM / 2];
    for (uint32_t l = 0; l < info.shape.n_layers; l++) {
        for (uint32_t h = 0; h < info.shape.n_q_heads; h++) {
            fasa_calibration_get_ca(cal, l, h, ca, n_fc);
            for (uint32_t i = 0; i < n_fc; i++, total++) {
                above += ca[i] > 0.4f;
                below += ca[i] < 0.15f;
            }
        }
        for (uint32_t g = 0; g < info.shape.n_kv_heads; g++) {
            uint32_t u;
            fasa_calibration_union_size(cal, l, g, &u);
            u_sum += u;
            u_min = u < u_min ? u : u_min;
            u_max = u > u_max ? u : u_max;
        }
    }
    double u_mean = u_sum / ((double)info.shape.n_layers * info.shape.n_kv_heads);
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "scored_steps", (double)info.n_steps);
        cJSON_AddNumberToObject(j, "samples", (double)info.n_samples);
        cJSON_AddNumberToObject(j, "share_ca_above_0_4", (double)above / total);
        cJSON_AddNumberToObject(j, "share_ca_below_0_15", (double)below / total);
        cJSON_AddNumberToObject(j, "union_dims_mean", u_mean);
        cJSON_AddNumberToObject(j, "union_dims_min", u_min);
        cJSON_AddNumberToObject(j, "union_dims_max", u_max);
        cJSON_AddNumberToObject(j, "seconds", secs);
        char *text = cJSON_Print(j);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(j);
        return;
    }
    printf("calibrated %u layers x %u heads on %llu windows, %llu scored positions per layer (K=%u, N_tip=%u) in %.0f s\n",
           info.shape.n_layers, info.shape.n_q_heads, (unsigned long long)info.n_samples,
           (unsigned long long)info.n_steps, info.k_calib, info.n_tip, secs);
    printf("chunks with mean CA > 0.4: %.2f%%, < 0.15: %.2f%%\n", 100.0 * above / total, 100.0 * below / total);
    printf("union of dominant dims per KV group: mean %.1f, min %u, max %u (2*N_tip = %u)\n", u_mean, u_min, u_max,
           2 * info.n_tip);
}

/* --output: the library replaces the file atomically; say when one existed. */
static fasa_status save(const fasa_calibration *cal, const char *path)
{
    note_replacing("fasa calibrate", path);
    return fasa_calibration_save(cal, path);
}

static int calibrate_model(const calib_opts *o)
{
    size_t len = 0;
    char *text = read_text_file("fasa calibrate", "--text", o->text, &len);   /* before the model: fail fast */
    if (!text) return 1;
    fm_model *m = model_open("fasa calibrate", o->model, o->threads);
    if (!m) {
        free(text);
        return 1;
    }
    fm_tokens toks = {0};
    fasa_context *ctx = NULL;
    fasa_calibrator *calr = NULL;
    fasa_calibration *cal = NULL;
    char err[512];
    int rc = 1;
    const fm_hparams *hp = fm_model_hparams(m);
    const char *base = strrchr(o->model, '/') ? strrchr(o->model, '/') + 1 : o->model;
    uint32_t window = 0;
    char what[4096];
    snprintf(what, sizeof what, "--text %s", o->text);
    if (!check_context("fasa calibrate", hp, o->window, "--window", 0, NULL, &window) ||
        !tokenize_text("fasa calibrate", what, m, text, len, &toks))
        goto done;
    if (toks.n < o->window) {
        fprintf(stderr, "fasa calibrate: %s has %zu tokens, fewer than --window %u\n", o->text, toks.n, o->window);
        goto done;
    }
    if (o->windows > toks.n - o->window + 1) {   /* more would repeat windows (and could run for ever) */
        fprintf(stderr, "fasa calibrate: --windows %u: %s (%zu tokens) has only %zu distinct window%s of --window %u "
                        "tokens\n", o->windows, o->text, toks.n, toks.n - o->window + 1,
                toks.n > o->window ? "s" : "", o->window);
        goto done;
    }
    if (cli_make_context("cpu", 0, o->threads, 0, &ctx, err, sizeof err) != FASA_OK) {
        fprintf(stderr, "fasa calibrate: %s\n", err);
        goto done;
    }
    fasa_calibrator_desc cd = {.shape = model_shape(hp), .n_tip = o->ntip, .k_calib = o->kcalib,
                               .model_id = base, .source = "teacher_forced"};
    double t0 = cli_now();
    fasa_status st = fasa_calibrator_create(ctx, &cd, &calr);
    if (st == FASA_OK) st = feed_model(o, m, calr, &toks);
    if (st == FASA_OK) st = fasa_calibrator_finish(calr, &cal);
    if (st == FASA_OK && o->output) st = save(cal, o->output);
    if (st != FASA_OK) {
        fprintf(stderr, "fasa calibrate: %s: %s\n", fasa_status_string(st), fasa_context_last_error(ctx));
        goto done;
    }
    model_report(o, cal, cli_now() - t0);
    if (o->output && !o->json) printf("wrote %s\n", o->output);
    rc = 0;
done:
    fasa_calibration_destroy(cal);
    fasa_calibrator_destroy(calr);
    fasa_context_destroy(ctx);
    fm_tokens_free(&toks);
    free(text);
    fm_model_free(m);
    return rc;
}

static bool check_opts(const calib_opts *o, char *err, size_t n)
{
    /* the output never replaces an input (a 98 MB GGUF once became 38 KB of JSON) */
    const model_cli_input inputs[] = {{"--model", o->model}, {"--text", o->text}};
    if (o->output && !check_output_path("--output", o->output, inputs, 2, err, n)) return false;
    if (!o->synthetic && !o->model) snprintf(err, n, "a data source is required: --synthetic, or --model FILE --text FILE");
    else if (o->synthetic && o->model) snprintf(err, n, "--synthetic and --model exclude each other");
    else if (o->model && !o->text) snprintf(err, n, "--model needs --text FILE (calibration text)");
    else if (o->model && (o->window < 64 || o->windows == 0 || o->stride == 0 || o->tmin >= o->window))
        snprintf(err, n, "--window must be >= 64, --windows and --stride positive, --tmin below --window");
    else if (strcmp(o->layout, "norm") && strcmp(o->layout, "neox")) snprintf(err, n, "--layout must be norm or neox");
    else if (!o->hkv || !o->hq || o->hq % o->hkv) snprintf(err, n, "--hq must be a positive multiple of --hkv");
    else if (o->synthetic && (!o->layers || !o->steps)) snprintf(err, n, "--layers and --steps must be positive");
    else if (o->L < 16) snprintf(err, n, "--L must be at least 16");
    else if (o->synthetic && o->steps > o->L / 2)   /* more would repeat positions (and could run for ever) */
        snprintf(err, n, "--steps %u: more than the %u distinct decode positions (--L / 2)", o->steps, o->L / 2);
    else return true;
    return false;
}

int cmd_calibrate(int argc, char **argv)
{
    calib_opts o = {.layout = "norm", .layers = 2, .hq = 8, .hkv = 2, .d = 128, .kcalib = 256,
                    .L = 4096, .steps = 16, .seed = 7, .windows = 8, .window = 4096, .tmin = 512, .stride = 16};
    const cli_opt opts[] = {
        {"synthetic", CLI_FLAG, &o.synthetic, NULL, "calibrate on synthetic planted data"},
        {"model", CLI_STRING, &o.model, "FILE", "calibrate a GGUF model (decode queries of --text)"},
        {"text", CLI_STRING, &o.text, "FILE", "calibration text for --model (e.g. texts/emma.txt)"},
        {"windows", CLI_UINT, &o.windows, "N", "model: text windows, each a fresh sequence (default 8)"},
        {"window", CLI_UINT, &o.window, "N", "model: tokens per window (default 4096)"},
        {"tmin", CLI_UINT, &o.tmin, "N", "model: first scored position (default 512)"},
        {"stride", CLI_UINT, &o.stride, "N", "model: score every N-th position (default 16)"},
        {"output", CLI_STRING, &o.output, "FILE", "write the calibration JSON here (replaced atomically; never an input)"},
        {"layers", CLI_UINT, &o.layers, "N", "layers (default 2)"},
        {"hq", CLI_UINT, &o.hq, "N", "query heads (default 8)"},
        {"hkv", CLI_UINT, &o.hkv, "N", "KV heads (default 2)"},
        {"d", CLI_UINT, &o.d, "N", "head dimension (default 128)"},
        {"ntip", CLI_UINT, &o.ntip, "N", "chunks to select per head (default d/8)"},
        {"kcalib", CLI_UINT, &o.kcalib, "K", "top-K for Contextual Agreement (default 256)"},
        {"L", CLI_UINT, &o.L, "N", "keys per layer (default 4096)"},
        {"steps", CLI_UINT, &o.steps, "N", "decode steps scored per layer (default 16)"},
        {"layout", CLI_STRING, &o.layout, "norm|neox", "RoPE pair layout (default norm)"},
        {"per-head-dims", CLI_FLAG, &o.per_head_dims, NULL, "plant different chunks per query head"},
        {"share-group-dims", CLI_FLAG, &o.share_group, NULL, "select one dim set per KV group (GQA option b)"},
        {"threads", CLI_UINT, &o.threads, "N", "host threads (default: all cores)"},
        {"seed", CLI_U64, &o.seed, "N", "data seed (default 7)"},
        {"json", CLI_FLAG, &o.json, NULL, "print the report as JSON"},
        {NULL, 0, NULL, NULL, NULL}};
    int parsed = cli_parse_command("fasa calibrate", "fasa calibrate (--synthetic | --model FILE --text FILE) [options] [--output FILE]",
                  "Scores every frequency chunk of every head by Contextual Agreement with the full\n"
                  "attention top-K over decode steps, keeps the N_tip best per head and writes the\n"
                  "calibration JSON.  On synthetic data it also reports how many planted dims it found;\n"
                  "on a model it reports the CA distribution and the union of dims per KV group.", opts, argc, argv,
                                   (cli_check_fn)check_opts, &o);
    if (parsed >= 0) return parsed;
    char err[512];
    if (o.model) return calibrate_model(&o);
    if (o.ntip == 0) o.ntip = o.d / 8 ? o.d / 8 : 1;
    fasa_context *ctx = NULL;
    if (cli_make_context("cpu", 0, o.threads, 0, &ctx, err, sizeof err) != FASA_OK) {
        fprintf(stderr, "fasa calibrate: %s\n", err);
        return 1;
    }
    fasa_calibrator_desc cd = {
        .shape = {o.layers, o.hq, o.hkv, o.d, strcmp(o.layout, "neox") == 0 ? FASA_ROPE_NEOX : FASA_ROPE_NORM},
        .n_tip = o.ntip, .k_calib = o.kcalib, .share_group_dims = o.share_group,
        .model_id = "synthetic-planted", .source = "synthetic"};
    fasa_calibrator *calr = NULL;
    fasa_calibration *cal = NULL;
    fasa_status st = fasa_calibrator_create(ctx, &cd, &calr);
    double t0 = cli_now();
    if (st == FASA_OK) st = feed(calr, &o);
    if (st == FASA_OK) st = fasa_calibrator_finish(calr, &cal);
    if (st == FASA_OK && o.output) st = save(cal, o.output);
    if (st != FASA_OK) {
        /* feed() explains its own failures; the library's are in last_error */
        if (*fasa_context_last_error(ctx))
            fprintf(stderr, "fasa calibrate: %s: %s\n", fasa_status_string(st), fasa_context_last_error(ctx));
    } else {
        calib_report rep;
        evaluate(&o, cal, &rep);
        double secs = cli_now() - t0;
        if (o.json) {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddNumberToObject(j, "heads", rep.heads);
            cJSON_AddNumberToObject(j, "heads_exact", rep.exact_heads);
            cJSON_AddNumberToObject(j, "planted_dims_recovered", rep.dims_recovered);
            cJSON_AddNumberToObject(j, "share_ca_above_0_4", rep.share_above_04);
            cJSON_AddNumberToObject(j, "share_ca_below_0_15", rep.share_below_015);
            cJSON_AddNumberToObject(j, "seconds", secs);
            if (o.output) cJSON_AddStringToObject(j, "output", o.output);
            char *text = cJSON_Print(j);
            printf("%s\n", text);
            free(text);
            cJSON_Delete(j);
        } else {
            printf("calibrated %u layers x %u heads from %u steps each (K=%u, N_tip=%u) in %.1f s\n", o.layers,
                   o.hq, o.steps, o.kcalib, o.ntip, secs);
            printf("planted dims recovered: %.1f%%; heads recovered exactly: %u of %u\n", 100 * rep.dims_recovered,
                   rep.exact_heads, rep.heads);
            printf("chunks with mean CA > 0.4: %.1f%%, < 0.15: %.1f%%\n", 100 * rep.share_above_04,
                   100 * rep.share_below_015);
            if (o.output) printf("wrote %s\n", o.output);
        }
    }
    fasa_calibration_destroy(cal);
    fasa_calibrator_destroy(calr);
    fasa_context_destroy(ctx);
    return st == FASA_OK ? 0 : 1;
}
