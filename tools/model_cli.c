/* Shared pieces of the model subcommands (see model_cli.h). */
#include "model_cli.h"
#include "fileio.h"
#include "synth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Set by tools/meson.build: the installed data directory relative to the
 * installed executable's directory (or absolute), and the source tree. */
#ifndef FASA_DATA_FROM_BINDIR
#define FASA_DATA_FROM_BINDIR "../share/libfasa"
#endif

fm_model *model_open(const char *cmd, const char *path, uint32_t threads)
{
    if (!path) {
        fprintf(stderr, "%s: --model is required (tools/get-model.sh prints the path)\n", cmd);
        return NULL;
    }
    fm_model *m = NULL;
    fm_error err = {0};
    fm_model_desc md = {.n_threads = threads};
    if (fm_model_load(path, &md, &m, &err) != FM_OK) {
        /* the engine's messages name the file already */
        fprintf(stderr, "%s: --model: %s\n", cmd, err.msg);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------------------ */
/* Text                                                                      */
/* ------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) at s, or 0 when it is invalid. */
static size_t utf8_sequence(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (n == 0 || n > avail) return 0;
    unsigned char lo = 0x80, hi = 0xBF;   /* the second byte's range */
    if (c == 0xE0) lo = 0xA0;             /* overlong */
    if (c == 0xED) hi = 0x9F;             /* surrogates */
    if (c == 0xF0) lo = 0x90;             /* overlong */
    if (c == 0xF4) hi = 0x8F;             /* above U+10FFFF */
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return n;
}

bool check_text(const char *what, const char *text, size_t n, char *err, size_t err_size)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < n;) {
        if (s[i] == 0) {
            snprintf(err, err_size, "%s: byte %zu is a NUL byte; the input must be UTF-8 text", what, i);
            return false;
        }
        size_t len = utf8_sequence(s + i, n - i);
        if (len == 0) {
            char shown[32] = "";
            for (size_t k = 0; k < 4 && i + k < n; k++)
                snprintf(shown + strlen(shown), sizeof shown - strlen(shown), "%s0x%02x", k ? " " : "", s[i + k]);
            snprintf(err, err_size, "%s: byte %zu starts an invalid UTF-8 sequence (%s); the input must be UTF-8 text",
                     what, i, shown);
            return false;
        }
        i += len;
    }
    return true;
}

char *read_text_file(const char *cmd, const char *opt, const char *path, size_t *size)
{
    char *text = NULL, err[256];
    if (fasa__read_whole_file(path, MODEL_CLI_MAX_TEXT, NULL, &text, size, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s %s: %s\n", cmd, opt, path, err);
        return NULL;
    }
    char what[1024], why[1280];
    snprintf(what, sizeof what, "%s %s", opt, path);
    if (!check_text(what, text, *size, why, sizeof why)) {
        fprintf(stderr, "%s: %s\n", cmd, why);
        free(text);
        return NULL;
    }
    return text;
}

void warn_untokenizable(const char *cmd, const char *what, const fm_model *m, const char *text, size_t n)
{
    const fm_tokenizer *tok = fm_model_tokenizer(m);
    size_t dropped = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (!fm_tokenizer_byte_has_token(tok, (uint8_t)text[i]) && dropped++ == 0) first = i;
    if (dropped)
        fprintf(stderr, "%s: %s: warning: %zu byte%s without a token in the model's vocabulary %s dropped "
                        "(the first, 0x%02x, at byte %zu)\n", cmd, what, dropped, dropped == 1 ? "" : "s",
                dropped == 1 ? "is" : "are", (unsigned char)text[first], first);
}

bool tokenize_text(const char *cmd, const char *what, const fm_model *m, const char *text, size_t n,
                   fm_tokens *out)
{
    warn_untokenizable(cmd, what, m, text, n);
    fm_error err = {0};
    if (fm_tokenize(fm_model_tokenizer(m), text, n, out, &err) == FM_OK) return true;
    fprintf(stderr, "%s: %s: tokenizing: %s\n", cmd, what, err.msg);
    return false;
}

/* ------------------------------------------------------------------------ */
/* Context length                                                            */
/* ------------------------------------------------------------------------ */

bool check_context(const char *cmd, const fm_hparams *hp, uint64_t a, const char *a_what, uint64_t b,
                   const char *b_what, uint32_t *total)
{
    uint64_t sum = a + b;   /* both are at most 2^32 - 1: no wrap in 64 bits */
    if (sum <= hp->n_ctx_train) {
        *total = (uint32_t)sum;
        return true;
    }
    if (b_what)
        fprintf(stderr, "%s: %s %llu + %s %llu = %llu tokens, more than the model's context length %u\n", cmd,
                a_what, (unsigned long long)a, b_what, (unsigned long long)b, (unsigned long long)sum,
                hp->n_ctx_train);
    else
        fprintf(stderr, "%s: %s %llu tokens, more than the model's context length %u\n", cmd, a_what,
                (unsigned long long)a, hp->n_ctx_train);
    return false;
}

/* ------------------------------------------------------------------------ */
/* Output files                                                              */
/* ------------------------------------------------------------------------ */

bool check_output_path(const char *opt, const char *path, const model_cli_input *inputs, size_t n_inputs,
                       char *err, size_t err_size)
{
    struct stat st;
    if (!path || !*path) {
        snprintf(err, err_size, "%s: the path is empty", opt);
        return false;
    }
    if (stat(path, &st) != 0) return true;   /* a new file cannot be one of the inputs */
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "%s %s: %s, not a regular file", opt, path,
                 S_ISDIR(st.st_mode) ? "is a directory" : "exists and is a special file");
        return false;
    }
    for (size_t i = 0; i < n_inputs; i++)
        if (inputs[i].path && fasa__same_file(path, inputs[i].path)) {
            snprintf(err, err_size, "%s %s is the same file as %s %s; refusing to overwrite an input", opt, path,
                     inputs[i].opt, inputs[i].path);
            return false;
        }
    return true;
}

void note_replacing(const char *cmd, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0) fprintf(stderr, "%s: replacing existing %s\n", cmd, path);
}

/* ------------------------------------------------------------------------ */
/* The default calibration                                                   */
/* ------------------------------------------------------------------------ */

/* The directory of the running executable.  Linux: /proc/self/exe; this is
 * the one function a port to another system replaces (Windows:
 * GetModuleFileNameW, macOS: _NSGetExecutablePath). */
static bool exe_dir(char *buf, size_t size)
{
    if (size < 2) return false;
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    if (n <= 0 || (size_t)n >= size - 1) return false;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash) return false;
    slash[slash == buf] = '\0';   /* keep "/" for a binary in the root */
    return true;
}

static bool is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool find_default_calibration(char *buf, size_t size, char *searched, size_t searched_size)
{
    char candidates[3][4096 + 512], dir[4096];
    int n = 0;
    if (FASA_DATA_FROM_BINDIR[0] == '/')
        snprintf(candidates[n++], sizeof candidates[0], "%s/%s", FASA_DATA_FROM_BINDIR, DEFAULT_CALIBRATION_NAME);
    else if (exe_dir(dir, sizeof dir))
        snprintf(candidates[n++], sizeof candidates[0], "%s/%s/%s", dir, FASA_DATA_FROM_BINDIR,
                 DEFAULT_CALIBRATION_NAME);
#ifdef FASA_SOURCE_ROOT
    snprintf(candidates[n++], sizeof candidates[0], "%s/data/%s", FASA_SOURCE_ROOT, DEFAULT_CALIBRATION_NAME);
#endif
    snprintf(candidates[n++], sizeof candidates[0], "data/%s", DEFAULT_CALIBRATION_NAME);
    if (searched_size) searched[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (is_regular_file(candidates[i])) {
            snprintf(buf, size, "%s", candidates[i]);
            return true;
        }
        size_t used = strlen(searched);
        if (used < searched_size)
            snprintf(searched + used, searched_size - used, "%s%s", i ? ", " : "", candidates[i]);
    }
    return false;
}

const char *resolve_calibration(const char *cmd, const char *path, char *buf, size_t size)
{
    if (path) return path;
    char searched[3 * (4096 + 512) + 16];
    if (find_default_calibration(buf, size, searched, sizeof searched)) return buf;
    fprintf(stderr, "%s: no --calibration given and the default %s is in none of: %s; pass --calibration FILE "
                    "(made by 'fasa calibrate --model ...')\n", cmd, DEFAULT_CALIBRATION_NAME, searched);
    return NULL;
}

fasa_model_shape model_shape(const fm_hparams *hp)
{
    return (fasa_model_shape){hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, FASA_ROPE_NORM};
}

fasa_calibration *load_calibration(const char *cmd, fasa_context *ctx, const char *path, bool is_default,
                                   const fm_hparams *hp, uint32_t n_tip)
{
    fasa_model_shape shape = model_shape(hp);
    fasa_calibration *cal = NULL, *re = NULL;
    if (fasa_calibration_load(ctx, path, &shape, &cal) != FASA_OK) {
        const char *why = fasa_context_last_error(ctx);
        bool named = strstr(why, path) != NULL;   /* the library's messages usually name the file */
        fprintf(stderr, "%s: --calibration%s%s%s: %s\n", cmd, is_default ? " (default)" : "", named ? "" : " ",
                named ? "" : path, why);
        if (is_default)
            fprintf(stderr, "%s: the default calibration is for SmolLM2-135M-Instruct; pass --calibration FILE "
                            "(made by 'fasa calibrate --model ...') for another model\n", cmd);
        return NULL;
    }
    fasa_calibration_info info;
    fasa_calibration_get_info(cal, &info);
    if (n_tip == 0 || n_tip == info.n_tip) return cal;
    if (fasa_calibration_reselect(cal, n_tip, &re) != FASA_OK)
        fprintf(stderr, "%s: --ntip %u: %s\n", cmd, n_tip, fasa_context_last_error(ctx));
    fasa_calibration_destroy(cal);
    return re;
}

fasa_calibration *make_baseline_calibration(fasa_context *ctx, const fm_hparams *hp, uint32_t n_tip,
                                            bool random, uint64_t seed)
{
    fasa_model_shape shape = model_shape(hp);
    size_t heads = (size_t)hp->n_layer * hp->n_head;
    uint16_t *dims = malloc(heads * 2 * n_tip * sizeof(uint16_t));
    float *score = malloc(hp->head_dim / 2 * sizeof(float));
    if (!dims || !score) {
        free(dims);
        free(score);
        return NULL;
    }
    synth_rng rng = {seed};
    for (size_t h = 0; h < heads; h++) {
        /* rank FCs by a score: random, or favouring low FC index (fast rotation) */
        for (uint32_t i = 0; i < hp->head_dim / 2; i++) score[i] = random ? synth_uniform(&rng) : -(float)i;
        uint16_t *out = dims + h * 2 * n_tip;
        for (uint32_t pick = 0; pick < n_tip; pick++) {
            uint32_t best = 0;
            for (uint32_t i = 1; i < hp->head_dim / 2; i++) best = score[i] > score[best] ? i : best;
            score[best] = -1e30f;
            out[2 * pick] = (uint16_t)(2 * best);
            out[2 * pick + 1] = (uint16_t)(2 * best + 1);
        }
        for (uint32_t i = 1; i < 2 * n_tip; i++) /* ascending */
            for (uint32_t k = i; k > 0 && out[k] < out[k - 1]; k--) {
                uint16_t t = out[k]; out[k] = out[k - 1]; out[k - 1] = t;
            }
    }
    fasa_calibration_desc cd = {.shape = shape, .n_tip = n_tip, .dims = dims,
                                .source = random ? "random" : "highfreq"};
    fasa_calibration *cal = NULL;
    if (fasa_calibration_create(ctx, &cd, &cal) != FASA_OK)
        fprintf(stderr, "baseline calibration: %s\n", fasa_context_last_error(ctx));
    free(dims);
    free(score);
    return cal;
}
