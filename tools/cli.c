/* Command-line plumbing (see cli.h). */
#include "cli.h"
#include "fileio.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const cli_opt *find_opt(const cli_opt *opts, const char *name, size_t len)
{
    for (const cli_opt *o = opts; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
    return NULL;
}

/* Unsigned integers: decimal digits only (no sign, no spaces, no 0x), then
 * an optional k/K (x1024) or m/M (x1048576) suffix; the value after the
 * suffix must fit in max.  Reads exactly len bytes of s.  Returns NULL or
 * the reason the text is not such a number. */
static const char *parse_u64n(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0) return "is empty";
    uint64_t mult = 1;
    char last = s[len - 1];
    if (last == 'k' || last == 'K') mult = 1024, len--;
    else if (last == 'm' || last == 'M') mult = 1048576, len--;
    if (len == 0) return "has no digits";
    uint64_t v = 0;
    bool too_big = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return "is not an unsigned integer";
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - digit) / 10) too_big = true;   /* keep scanning: a bad character wins */
        else v = v * 10 + digit;
    }
    if (too_big || v > UINT64_MAX / mult || v * mult > max) return "is out of range";
    *out = v * mult;
    return NULL;
}

/* A value as it can be shown in a message: printable ASCII, anything else
 * as \xNN, cut after about 60 characters. */
static const char *shown(const char *s, size_t len, char *buf, size_t size)
{
    size_t w = 0;
    for (size_t i = 0; i < len && w + 8 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (w >= 60) {
            w += (size_t)snprintf(buf + w, size - w, "...");
            break;
        }
        if (c >= 0x20 && c < 0x7f) buf[w++] = (char)c;
        else w += (size_t)snprintf(buf + w, size - w, "\\x%02x", c);
    }
    buf[w < size ? w : size - 1] = '\0';
    return buf;
}

static const char *const number_help =
    "decimal digits with an optional k (x1024) or m (x1048576) suffix; no sign, spaces or 0x";
static const char *const double_help =
    "a decimal number such as 12, 0.5 or 1e3; no spaces, hex, nan or inf";

/* Decimal floating point: [+-] digits [. digits] [e [+-] digits] (or
 * .digits), finite, nothing before or after.  Returns NULL or the reason. */
static const char *parse_double(const char *s, double *out)
{
    const char *p = s;
    size_t digits = 0;
    if (*p == '+' || *p == '-') p++;
    while (*p >= '0' && *p <= '9') p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, digits++;
    }
    if (!digits) return "is not a number";
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!(*p >= '0' && *p <= '9')) return "is not a number";
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p) return "is not a number";
    errno = 0;
    char *end = NULL;
    double d = strtod(s, &end);
    if (end != p) return "is not a number";
    if (errno == ERANGE || !isfinite(d)) return "is out of range";
    *out = d;
    return NULL;
}

/* "a,b,c" into out; on a bad list why (may be NULL) says what is wrong. */
static bool parse_list(const char *s, uint64_t max, cli_list *out, char *why, size_t why_size)
{
    char buf[80];
    out->n = 0;
    if (!s || !*s) {
        if (why) snprintf(why, why_size, "is empty");
        return false;
    }
    for (const char *p = s;;) {
        size_t len = strcspn(p, ",");
        uint64_t v = 0;
        const char *bad = len == 0 ? "is empty" : parse_u64n(p, len, max, &v);
        if (!bad && out->n >= CLI_MAX_LIST) {
            if (why) snprintf(why, why_size, "has more than %d entries", CLI_MAX_LIST);
            return false;
        }
        if (bad) {
            if (why && strcmp(bad, "is out of range") == 0)
                snprintf(why, why_size, "entry %u '%s' is out of range (at most %llu)", out->n + 1,
                         shown(p, len, buf, sizeof buf), (unsigned long long)max);
            else if (why) snprintf(why, why_size, "entry %u '%s' %s", out->n + 1, shown(p, len, buf, sizeof buf), bad);
            out->n = 0;
            return false;
        }
        out->v[out->n++] = (uint32_t)v;
        p += len;
        if (!*p) return true;
        p++; /* the comma: an entry must follow */
    }
}

bool cli_parse_list(const char *s, cli_list *out)
{
    return parse_list(s, UINT32_MAX, out, NULL, 0);
}

bool cli_list_has(const char *s, const char *word)
{
    size_t n = strlen(word);
    while (s && *s) {
        size_t len = strcspn(s, ",");
        if (len == n && strncmp(s, word, n) == 0) return true;
        s += len + (s[len] == ',');
    }
    return false;
}

fasa_dtype cli_dtype(const char *name)
{
    return strcmp(name, "f32") == 0 ? FASA_DTYPE_F32 : strcmp(name, "bf16") == 0 ? FASA_DTYPE_BF16 : FASA_DTYPE_F16;
}

bool cli_check_names(const char *opt, const char *value, const char *const *allowed, char *err, size_t err_size)
{
    char valid[256] = "", buf[80], whole[80];
    for (size_t i = 0, w = 0; allowed[i] && w < sizeof valid; i++)
        w += (size_t)snprintf(valid + w, sizeof valid - w, "%s%s", i ? ", " : "", allowed[i]);
    if (!value || !*value) {
        snprintf(err, err_size, "--%s is empty (expected one or more of: %s)", opt, valid);
        return false;
    }
    shown(value, strlen(value), whole, sizeof whole);
    for (const char *p = value;;) {
        size_t len = strcspn(p, ",");
        if (len == 0) {
            snprintf(err, err_size, "--%s: empty name in '%s' (names are separated by single commas; valid: %s)",
                     opt, whole, valid);
            return false;
        }
        size_t k = 0;
        while (allowed[k] && !(strlen(allowed[k]) == len && strncmp(allowed[k], p, len) == 0)) k++;
        if (!allowed[k]) {
            snprintf(err, err_size, "--%s: unknown name '%s' in '%s' (valid: %s)", opt, shown(p, len, buf, sizeof buf),
                     whole, valid);
            return false;
        }
        for (const char *q = value; q < p; q += strcspn(q, ",") + 1)
            if (strcspn(q, ",") == len && strncmp(q, p, len) == 0) {
                snprintf(err, err_size, "--%s: '%s' is listed twice in '%s'", opt, allowed[k], whole);
                return false;
            }
        p += len;
        if (!*p) return true;
        p++;
    }
}

const char *cli_format_bytes(uint64_t bytes, char *buf, size_t size)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(buf, size, "%llu B", (unsigned long long)bytes);
        return buf;
    }
    double v = (double)bytes / 1024.0;
    size_t u = 0;
    /* 1023.95 and up would print as "1024.0": the next unit then */
    while (v >= 1023.95 && u + 1 < sizeof units / sizeof units[0]) v /= 1024.0, u++;
    snprintf(buf, size, "%.1f %s", v, units[u]);
    return buf;
}

/* The message for a bad whole number (bad: what parse_u64n said). */
static void number_error(const cli_opt *o, const char *val, const char *bad, uint64_t max, char *err, size_t err_size)
{
    char buf[80];
    if (strcmp(bad, "is out of range") == 0)
        snprintf(err, err_size, "--%s: '%s' is out of range (at most %llu)", o->name,
                 shown(val, strlen(val), buf, sizeof buf), (unsigned long long)max);
    else
        snprintf(err, err_size, "--%s: '%s' %s (expected %s: %s)", o->name, shown(val, strlen(val), buf, sizeof buf),
                 bad, o->meta ? o->meta : "N", number_help);
}

static bool set_value(const cli_opt *o, const char *val, char *err, size_t err_size)
{
    uint64_t u = 0;
    double d = 0;
    char buf[80], why[160];
    const char *bad = NULL;
    switch (o->type) {
    case CLI_UINT:
    case CLI_U64: {
        uint64_t max = o->type == CLI_UINT ? UINT32_MAX : UINT64_MAX;
        bad = parse_u64n(val, strlen(val), max, &u);
        if (bad) {
            number_error(o, val, bad, max, err, err_size);
            return false;
        }
        if (o->type == CLI_UINT) *(uint32_t *)o->target = (uint32_t)u;
        else *(uint64_t *)o->target = u;
        return true;
    }
    case CLI_DOUBLE:
        bad = parse_double(val, &d);
        if (!bad) {
            *(double *)o->target = d;
            return true;
        }
        snprintf(err, err_size, "--%s: '%s' %s (expected %s: %s)", o->name, shown(val, strlen(val), buf, sizeof buf),
                 bad, o->meta ? o->meta : "X", double_help);
        return false;
    case CLI_STRING:
        *(const char **)o->target = val;
        return true;
    case CLI_LIST:
        if (parse_list(val, UINT32_MAX, (cli_list *)o->target, why, sizeof why)) return true;
        if (!strchr(val, ',') && (bad = parse_u64n(val, strlen(val), UINT32_MAX, &u)) != NULL) {
            number_error(o, val, bad, UINT32_MAX, err, err_size); /* one entry: said like a single number */
        } else if (strncmp(why, "has ", 4) == 0) {
            snprintf(err, err_size, "--%s: '%s' %s", o->name, shown(val, strlen(val), buf, sizeof buf), why);
        } else if (strstr(why, "out of range")) {
            snprintf(err, err_size, "--%s: in '%s': %s", o->name, shown(val, strlen(val), buf, sizeof buf), why);
        } else {
            snprintf(err, err_size, "--%s: in '%s': %s (expected %s, each entry %s)", o->name,
                     shown(val, strlen(val), buf, sizeof buf), why, o->meta ? o->meta : "N[,N...]", number_help);
        }
        return false;
    case CLI_FLAG:
        break;
    }
    snprintf(err, err_size, "--%s: invalid value '%s'", o->name, shown(val, strlen(val), buf, sizeof buf));
    return false;
}

cli_result cli_parse(const cli_opt *opts, int argc, char **argv, char *err, size_t err_size)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (!arg) continue;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) return CLI_HELP;
        if (strncmp(arg, "--", 2) != 0 || !arg[2]) {
            snprintf(err, err_size, "unexpected argument '%s' (options start with --; see --help)", arg);
            return CLI_ERROR;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_opt *o = find_opt(opts, name, len);
        if (!o) {
            snprintf(err, err_size, "unknown option '--%.*s' (see --help)", (int)(len > 64 ? 64 : len), name);
            return CLI_ERROR;
        }
        if (o->type == CLI_FLAG) {
            if (eq) {
                snprintf(err, err_size, "--%s takes no value", o->name);
                return CLI_ERROR;
            }
            *(bool *)o->target = true;
            continue;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            snprintf(err, err_size, "--%s needs a value (%s)", o->name, o->meta ? o->meta : "value");
            return CLI_ERROR;
        }
        if (!set_value(o, val, err, err_size)) return CLI_ERROR;
    }
    return CLI_OK;
}

void cli_usage(FILE *f, const char *synopsis, const char *description, const cli_opt *opts)
{
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", synopsis, description);
    for (const cli_opt *o = opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->meta ? " " : "", o->meta ? o->meta : "");
        fprintf(f, "  %-26s %s\n", left, o->help);
    }
    fprintf(f, "  %-26s %s\n", "-h, --help", "show this help");
    bool numbers = false, reals = false;
    for (const cli_opt *o = opts; o->name; o++) {
        numbers |= o->type == CLI_UINT || o->type == CLI_U64 || o->type == CLI_LIST;
        reals |= o->type == CLI_DOUBLE;
    }
    if (numbers || reals) fprintf(f, "\n");
    if (numbers) fprintf(f, "whole numbers: %s\n", number_help);
    if (reals) fprintf(f, "real numbers: %s\n", double_help);
}

int cli_parse_command(const char *cmd, const char *synopsis, const char *description, const cli_opt *opts,
                      int argc, char **argv, cli_check_fn check, const void *check_arg)
{
    char err[512] = "";
    cli_result r = cli_parse(opts, argc, argv, err, sizeof err);
    if (r == CLI_OK && check && !check(check_arg, err, sizeof err)) r = CLI_ERROR;
    if (r == CLI_OK) return -1;
    if (r == CLI_ERROR) fprintf(stderr, "%s: %s\n", cmd, err);
    cli_usage(r == CLI_HELP ? stdout : stderr, synopsis, description, opts);
    return r == CLI_HELP ? 0 : 2;
}

bool cli_output_begin(cli_output *out, const char *path, char *err, size_t err_size)
{
    *out = (cli_output){stdout, path, NULL};
    if (!path) return true;
    out->file = malloc(sizeof *out->file);
    if (!out->file) {
        snprintf(err, err_size, "out of host memory");
        return false;
    }
    char why[256] = "";
    if (fasa__atomic_begin(out->file, path, why, sizeof why) != 0) {
        free(out->file);
        out->file = NULL;
        snprintf(err, err_size, "%s", why);
        return false;
    }
    out->f = out->file->f;
    return true;
}

bool cli_output_finish(cli_output *out, bool keep, char *err, size_t err_size)
{
    bool ok = true;
    if (!out->file) {
        if (out->f && (fflush(out->f) != 0 || ferror(out->f))) {
            snprintf(err, err_size, "writing the report to stdout failed: %s", strerror(errno ? errno : EIO));
            ok = false;
        }
    } else if (!keep) {
        fasa__atomic_abort(out->file);
    } else {
        char why[256] = "";
        if (fasa__atomic_commit(out->file, why, sizeof why) != 0) {
            snprintf(err, err_size, "%s", why);
            ok = false;
        }
    }
    free(out->file);
    *out = (cli_output){0};
    return ok;
}

bool cli_check_host_bytes(uint64_t bytes, const char *what, char *err, size_t err_size)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0) return true;   /* unknown: let malloc decide */
    uint64_t phys = (uint64_t)pages * (uint64_t)page;
    if (bytes <= phys) return true;
    char need[32], have[32];
    snprintf(err, err_size, "%s need %s of host memory, more than this machine's %s", what,
             cli_format_bytes(bytes, need, sizeof need), cli_format_bytes(phys, have, sizeof have));
    return false;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double cli_row_hit_rate(const fasa_transfer_stats *t)
{
    return t->rows_needed ? (double)t->rows_cached / (double)t->rows_needed : 0;
}

static void draw(cli_progress *p)
{
    int width = 30, fill = p->total ? (int)((double)p->done / (double)p->total * width) : 0;
    fprintf(stderr, "\r%-24.24s [", p->label);
    for (int i = 0; i < width; i++) fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %llu/%llu", (unsigned long long)p->done, (unsigned long long)p->total);
    fflush(stderr);
}

void cli_progress_start(cli_progress *p, const char *label, uint64_t total)
{
    *p = (cli_progress){label, total, 0, isatty(STDOUT_FILENO) && isatty(STDERR_FILENO), 0};
    if (p->active) draw(p);
}

void cli_progress_step(cli_progress *p, uint64_t n)
{
    p->done += n;
    if (!p->active) return;
    double t = cli_now();
    if (t - p->last_draw < 0.1 && p->done < p->total) return;
    p->last_draw = t;
    draw(p);
}

void cli_progress_end(cli_progress *p)
{
    if (!p->active) return;
    draw(p);
    fprintf(stderr, "\n");
    p->active = false;
}

const char *cli_cache_dir(void)
{
    static char path[1024];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) snprintf(path, sizeof path, "%s/libfasa", xdg);
    else if (home && *home) snprintf(path, sizeof path, "%s/.cache/libfasa", home);
    else return NULL;
    /* create both levels; failure just means no on-disk cache */
    char parent[1024];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash) {
        *slash = '\0';
        mkdir(parent, 0700);
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST) return NULL;
    return path;
}

const char *cli_device_type_name(fasa_device_type t)
{
    switch (t) {
    case FASA_DEVICE_DISCRETE_GPU: return "discrete-gpu";
    case FASA_DEVICE_INTEGRATED_GPU: return "integrated-gpu";
    case FASA_DEVICE_VIRTUAL_GPU: return "virtual-gpu";
    case FASA_DEVICE_CPU: return "cpu";
    default: return "other";
    }
}

fasa_status cli_make_context(const char *backend, int device, uint32_t threads, uint32_t flags,
                             fasa_context **out, char *err, size_t err_size)
{
    fasa_backend b = FASA_BACKEND_AUTO;
    if (backend && fasa_backend_from_name(backend, &b) != FASA_OK) {
        snprintf(err, err_size, "--backend: unknown backend '%s' (auto, cpu, vulkan, opencl, cuda)", backend);
        return FASA_ERROR_INVALID_ARGUMENT;
    }
    fasa_context_desc desc = {.backend = b, .device_index = device, .n_threads = threads,
                              .flags = flags, .cache_dir = cli_cache_dir(),
                              .error_message = err, .error_message_size = err_size};
    return fasa_context_create(&desc, out);
}
