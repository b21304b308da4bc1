/* Shared pieces of the model subcommands (run, eval, calibrate --model). */
#ifndef FASA_MODEL_CLI_H
#define FASA_MODEL_CLI_H

#include "fasa.h"
#include "model.h"

/* The committed calibration of SmolLM2-135M-Instruct, looked up by
 * find_default_calibration when --calibration is not given. */
#define DEFAULT_CALIBRATION_NAME "smollm2-135m-instruct.calib.json"
#define DEFAULT_CALIBRATION_HELP                                                                   \
    "calibration JSON (default: " DEFAULT_CALIBRATION_NAME " from <prefix>/share/libfasa, the "    \
    "source tree's data/ or ./data/)"

#define MODEL_CLI_STR_(x) #x
#define MODEL_CLI_STR(x) MODEL_CLI_STR_(x)   /* a macro's value as a string literal */

/* Largest prompt or text file read (bytes). */
#define MODEL_CLI_MAX_TEXT ((size_t)256 << 20)

/* Loads the GGUF; prints the reason and returns NULL on failure. */
fm_model *model_open(const char *cmd, const char *path, uint32_t threads);

/* Checks that text (n bytes) is UTF-8 (RFC 3629) without NUL bytes: the
 * tools take text, and a NUL or an invalid sequence means a damaged or
 * binary file.  On failure writes "what: byte OFFSET ..." to err and
 * returns false. */
bool check_text(const char *what, const char *text, size_t n, char *err, size_t err_size);
/* Reads a whole text file (regular files only, never blocking on a FIFO,
 * at most MODEL_CLI_MAX_TEXT bytes; NUL-terminated, *size bytes of
 * content) and checks it with check_text.  opt names the option
 * ("--prompt-file") in messages; prints the reason and returns NULL on
 * failure. */
char *read_text_file(const char *cmd, const char *opt, const char *path, size_t *size);
/* Warns (once per text) about bytes the vocab has no token for: the
 * tokenizer drops them. */
void warn_untokenizable(const char *cmd, const char *what, const fm_model *m, const char *text, size_t n);
/* Tokenizes plain text; prints the reason on failure. */
bool tokenize_text(const char *cmd, const char *what, const fm_model *m, const char *text, size_t n,
                   fm_tokens *out);

/* The context a run needs: a + b tokens (computed in 64 bits, so no sum
 * wraps) against the model's context length.  On success *total = a + b;
 * else prints "cmd: A_WHAT A + B_WHAT B = N tokens, more than the model's
 * context length C" and returns false.  Call it before allocating caches. */
bool check_context(const char *cmd, const fm_hparams *hp, uint64_t a, const char *a_what, uint64_t b,
                   const char *b_what, uint32_t *total);

/* An input file of a command, for same-file checks: its option and path. */
typedef struct model_cli_input {
    const char *opt, *path;      /* path NULL: skipped */
} model_cli_input;

/* Output files: false (with the reason in err) when path names one of the
 * inputs (the same file: device and inode, so links and other spellings
 * count) or an existing non-regular file.  A path that does not exist yet
 * is fine (it cannot be an input). */
bool check_output_path(const char *opt, const char *path, const model_cli_input *inputs, size_t n_inputs,
                       char *err, size_t err_size);
/* Prints "cmd: replacing existing PATH" when path exists. */
void note_replacing(const char *cmd, const char *path);

/* Finds DEFAULT_CALIBRATION_NAME in, in order, <exe dir>/<bindir->datadir>/
 * libfasa (the installed data), the source tree's data/ (baked in at build
 * time) and ./data/.  Writes the path to buf and returns true, or returns
 * false with the places searched in searched ("A, B, C"). */
bool find_default_calibration(char *buf, size_t size, char *searched, size_t searched_size);

fasa_model_shape model_shape(const fm_hparams *hp);
/* The calibration file to read: path itself, or for NULL the default (see
 * find_default_calibration, in buf); NULL with a message listing the places
 * searched when there is none. */
const char *resolve_calibration(const char *cmd, const char *path, char *buf, size_t size);
/* Loads a calibration for the model from path (resolved; is_default: it
 * came from the default lookup) and re-selects n_tip chunks per head from
 * its CA table when n_tip differs (0 keeps the file's). */
fasa_calibration *load_calibration(const char *cmd, fasa_context *ctx, const char *path, bool is_default,
                                   const fm_hparams *hp, uint32_t n_tip);
/* Comparison calibrations at the same budget: the n_tip highest-frequency
 * chunks (FC 0..n_tip-1) or n_tip random chunks per head (seeded). */
fasa_calibration *make_baseline_calibration(fasa_context *ctx, const fm_hparams *hp, uint32_t n_tip,
                                            bool random, uint64_t seed);

#endif
