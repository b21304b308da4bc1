/* Shared pieces of the model subcommands (see model_cli.h). */
#include "model_cli.h"
#include "synth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        fprintf(stderr, "%s: %s: %s\n", cmd, path, err.msg);
        return NULL;
    }
    return m;
}

char *read_text_file(const char *cmd, const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s: %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: %s: read failed\n", cmd, path);
        free(text);
        fclose(f);
        return NULL;
    }
    fclose(f);
    text[n] = '\0';
    *size = (size_t)n;
    return text;
}

bool tokenize_text(const char *cmd, const fm_model *m, const char *text, size_t n, fm_tokens *out)
{
    fm_error err = {0};
    if (fm_tokenize(fm_model_tokenizer(m), text, n, out, &err) == FM_OK) return true;
    fprintf(stderr, "%s: tokenizing: %s\n", cmd, err.msg);
    return false;
}

fasa_model_shape model_shape(const fm_hparams *hp)
{
    return (fasa_model_shape){hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, FASA_ROPE_NORM};
}

fasa_calibration *load_calibration(const char *cmd, fasa_context *ctx, const char *path,
                                   const fm_hparams *hp, uint32_t n_tip)
{
    fasa_model_shape shape = model_shape(hp);
    fasa_calibration *cal = NULL, *re = NULL;
    if (fasa_calibration_load(ctx, path, &shape, &cal) != FASA_OK) {
        fprintf(stderr, "%s: %s\n", cmd, fasa_context_last_error(ctx));
        if (strcmp(path, DEFAULT_CALIBRATION) == 0)
            fprintf(stderr, "%s: run from the repository root, or pass --calibration FILE "
                            "(made by 'fasa calibrate --model ...')\n", cmd);
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
