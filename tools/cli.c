/* Command-line plumbing (see cli.h). */
#include "cli.h"

#include <errno.h>
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

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    /* accept k/m suffixes (x1024) for token counts like 128k */
    if (end && (*end == 'k' || *end == 'K') && end[1] == '\0') { v *= 1024ull; end++; }
    else if (end && (*end == 'm' || *end == 'M') && end[1] == '\0') { v *= 1048576ull; end++; }
    if (errno || !end || *end || v > max) return false;
    *out = v;
    return true;
}

bool cli_parse_list(const char *s, cli_list *out)
{
    out->n = 0;
    if (!s || !*s) return false;
    char buf[64];
    while (*s) {
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= sizeof buf || out->n >= CLI_MAX_LIST) return false;
        memcpy(buf, s, len);
        buf[len] = '\0';
        uint64_t v;
        if (!parse_u64(buf, UINT32_MAX, &v)) return false;
        out->v[out->n++] = (uint32_t)v;
        s += len;
        if (*s == ',') {
            s++;
            if (!*s) return false;
        }
    }
    return true;
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

static bool set_value(const cli_opt *o, const char *val, char *err, size_t err_size)
{
    uint64_t u;
    char *end = NULL;
    switch (o->type) {
    case CLI_UINT:
        if (!parse_u64(val, UINT32_MAX, &u)) break;
        *(uint32_t *)o->target = (uint32_t)u;
        return true;
    case CLI_U64:
        if (!parse_u64(val, UINT64_MAX, &u)) break;
        *(uint64_t *)o->target = u;
        return true;
    case CLI_DOUBLE: {
        errno = 0;
        double d = strtod(val, &end);
        if (errno || end == val || *end) break;
        *(double *)o->target = d;
        return true;
    }
    case CLI_STRING:
        *(const char **)o->target = val;
        return true;
    case CLI_LIST:
        if (!cli_parse_list(val, (cli_list *)o->target)) break;
        return true;
    case CLI_FLAG:
        break;
    }
    snprintf(err, err_size, "--%s: invalid value '%s' (expected %s)", o->name, val,
             o->meta ? o->meta : "a value");
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
        mkdir(parent, 0755);
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return NULL;
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
