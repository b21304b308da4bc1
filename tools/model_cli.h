/* Shared pieces of the model subcommands (run, eval, calibrate --model). */
#ifndef FASA_MODEL_CLI_H
#define FASA_MODEL_CLI_H

#include "fasa.h"
#include "model.h"

#define DEFAULT_CALIBRATION "data/smollm2-135m-instruct.calib.json"

/* Loads the GGUF; prints the reason and returns NULL on failure. */
fm_model *model_open(const char *cmd, const char *path, uint32_t threads);
/* Reads a whole text file (NUL-terminated); prints the reason on failure. */
char *read_text_file(const char *cmd, const char *path, size_t *size);
/* Tokenizes plain text; prints the reason on failure. */
bool tokenize_text(const char *cmd, const fm_model *m, const char *text, size_t n, fm_tokens *out);
fasa_model_shape model_shape(const fm_hparams *hp);
/* Loads a calibration for the model and re-selects n_tip chunks per head
 * from its CA table when n_tip differs (0 keeps the file's). */
fasa_calibration *load_calibration(const char *cmd, fasa_context *ctx, const char *path,
                                   const fm_hparams *hp, uint32_t n_tip);
/* Comparison calibrations at the same budget: the n_tip highest-frequency
 * chunks (FC 0..n_tip-1) or n_tip random chunks per head (seeded). */
fasa_calibration *make_baseline_calibration(fasa_context *ctx, const fm_hparams *hp, uint32_t n_tip,
                                            bool random, uint64_t seed);

#endif
