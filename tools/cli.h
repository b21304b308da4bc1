/* Command-line plumbing shared by the fasa subcommands: a table-driven
 * option parser (also a fuzz target), usage text, progress bar, helpers. */
#ifndef FASA_CLI_H
#define FASA_CLI_H

#include "fasa.h"

#include <stdio.h>

#define CLI_MAX_LIST 64

typedef struct cli_list {        /* comma-separated unsigned integers */
    uint32_t n;
    uint32_t v[CLI_MAX_LIST];
} cli_list;

typedef enum cli_type {
    CLI_FLAG,                    /* bool, no value */
    CLI_UINT,                    /* uint32_t */
    CLI_U64,                     /* uint64_t */
    CLI_DOUBLE,
    CLI_STRING,                  /* const char * (points into argv) */
    CLI_LIST                     /* cli_list */
} cli_type;

typedef struct cli_opt {
    const char *name;            /* "L" for --L */
    cli_type type;
    void *target;
    const char *meta;            /* value placeholder in --help, e.g. "N[,N...]" */
    const char *help;
} cli_opt;

typedef enum cli_result { CLI_OK = 0, CLI_HELP = 1, CLI_ERROR = 2 } cli_result;

/* Parses --name value / --name=value / -h / --help.  opts ends with a
 * {NULL} entry.  No positional arguments are accepted. */
cli_result cli_parse(const cli_opt *opts, int argc, char **argv, char *err, size_t err_size);
void cli_usage(FILE *f, const char *synopsis, const char *description, const cli_opt *opts);

/* The front door of a subcommand: parses argv, runs check (may be NULL;
 * it writes a message and returns false on bad values), prints the usage
 * for --help (returns 0) or the error plus usage (returns 2).  Returns -1
 * when the command should go on. */
typedef bool (*cli_check_fn)(const void *opts, char *err, size_t err_size);
int cli_parse_command(const char *cmd, const char *synopsis, const char *description, const cli_opt *opts,
                      int argc, char **argv, cli_check_fn check, const void *check_arg);

/* Numbers (CLI_UINT, CLI_U64, every CLI_LIST entry): decimal digits only,
 * optionally followed by k/K (x1024) or m/M (x1048576); no sign, no
 * leading or trailing spaces, no 0x; the value after the suffix must fit
 * the type (a 32-bit option rejects 4294967296 and 4194304m).  CLI_DOUBLE:
 * a finite decimal number ([+-]digits[.digits][e[+-]digits]); nan, inf,
 * hex floats and spaces are rejected.  Errors name the option and say
 * what is wrong. */

/* Parses "a,b,c" into a list; false on a malformed entry. */
bool cli_parse_list(const char *s, cli_list *out);
/* True if the comma-separated list s contains word. */
bool cli_list_has(const char *s, const char *word);
/* The storage type named by a --dtype value already checked to be "f16",
 * "bf16" or "f32". */
fasa_dtype cli_dtype(const char *name);
/* Checks an option's comma-separated list of names against allowed (NULL
 * terminated): at least one name, no empty entry, no unknown or repeated
 * name.  On failure writes e.g. "--variant: unknown name 'nosuch' in
 * 'fasa,nosuch' (valid: dense, fasa, fasa-m)" to err and returns false.
 * opt is the option's name without the dashes. */
bool cli_check_names(const char *opt, const char *value, const char *const *allowed, char *err, size_t err_size);
/* Bytes for people: "512 B", "32.0 KiB", "16.0 GiB" (powers of 1024, up
 * to EiB).  Returns buf. */
const char *cli_format_bytes(uint64_t bytes, char *buf, size_t size);

/* Progress bar on stderr, drawn only when stdout and stderr are terminals. */
typedef struct cli_progress {
    const char *label;
    uint64_t total, done;
    bool active;
    double last_draw;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *label, uint64_t total);
void cli_progress_step(cli_progress *p, uint64_t n);
void cli_progress_end(cli_progress *p);

/* Where a command's report goes: stdout, or with --output FILE a temporary
 * file next to FILE that replaces it in cli_output_finish (fsync +
 * rename), so an existing FILE stays whole on any failure and no
 * temporary file is left behind.  A directory, FIFO, device or socket as
 * FILE is refused by cli_output_begin (err: "is a directory", ...). */
struct fasa__atomic_file;
typedef struct cli_output {
    FILE *f;                     /* print the report here */
    const char *path;            /* NULL: stdout */
    struct fasa__atomic_file *file;
} cli_output;
bool cli_output_begin(cli_output *out, const char *path, char *err, size_t err_size);
/* keep: commit the report (replace FILE; on stdout, flush it and check for
 * write errors); !keep: drop it, FILE untouched.  False with err when the
 * report could not be written. */
bool cli_output_finish(cli_output *out, bool keep, char *err, size_t err_size);

/* False (with the numbers in err) when `bytes` of host memory for `what`
 * exceed the machine's physical memory: checked before a large malloc, so
 * a huge option value fails at once instead of swapping or being killed. */
bool cli_check_host_bytes(uint64_t bytes, const char *what, char *err, size_t err_size);

double cli_now(void);            /* seconds, monotonic */
/* The user's kernel cache directory: $XDG_CACHE_HOME/libfasa or ~/.cache/libfasa. */
const char *cli_cache_dir(void);
const char *cli_device_type_name(fasa_device_type t);
/* FASA-M row-cache hits / rows needed (0 without steps). */
double cli_row_hit_rate(const fasa_transfer_stats *t);
/* Creates a context for --backend / --device; prints the reason on failure. */
fasa_status cli_make_context(const char *backend, int device, uint32_t threads, uint32_t flags,
                             fasa_context **out, char *err, size_t err_size);

#endif
