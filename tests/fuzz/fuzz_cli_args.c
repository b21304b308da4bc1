/* libFuzzer target: the fasa tool's option parser.  The input is split at
 * NUL or newline bytes into argv; parsing must never crash, must accept or
 * reject with a message, and parsed values must be in their types' ranges.
 * The number grammar (cli.h) is also checked against a reference: an
 * unsigned value is decimal digits plus an optional k/m suffix, no sign or
 * spaces, and must fit after the suffix; a real number is finite.  The
 * names helper must accept exactly the lists of distinct allowed names. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Reference for CLI_U64: true and *out when s is a valid number <= max. */
static bool ref_u64(const char *s, uint64_t max, uint64_t *out)
{
    size_t n = strlen(s);
    unsigned __int128 mult = 1, v = 0;
    if (n && (s[n - 1] == 'k' || s[n - 1] == 'K')) mult = 1024, n--;
    else if (n && (s[n - 1] == 'm' || s[n - 1] == 'M')) mult = 1048576, n--;
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > UINT64_MAX) return false;
    }
    v *= mult;
    if (v > max) return false;
    *out = (uint64_t)v;
    return true;
}

/* Reference for cli_check_names: distinct allowed names, single commas. */
static bool ref_names(const char *s, const char *const *allowed)
{
    bool seen[8] = {false};
    if (!*s) return false;
    for (;;) {
        size_t len = strcspn(s, ","), k = 0;
        while (allowed[k] && !(strlen(allowed[k]) == len && strncmp(allowed[k], s, len) == 0)) k++;
        if (!allowed[k] || seen[k]) return false;
        seen[k] = true;
        s += len;
        if (!*s) return true;
        s++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[64];
    int argc = 0;
    for (char *p = buf; argc < 64 && p <= buf + size;) {
        size_t len = strcspn(p, "\n");
        if (p + len > buf + size) len = (size_t)(buf + size - p);
        p[len] = '\0';
        argv[argc++] = p;
        p += len + 1;
    }
    bool flag = false;
    uint32_t u = 7;
    uint64_t u64 = 9;
    double dbl = 0;
    const char *str = NULL;
    cli_list list = {0};
    const cli_opt opts[] = {{"flag", CLI_FLAG, &flag, NULL, "a flag"},
                            {"L", CLI_LIST, &list, "N[,N]", "a list"},
                            {"n", CLI_UINT, &u, "N", "a count"},
                            {"seed", CLI_U64, &u64, "N", "a seed"},
                            {"bw", CLI_DOUBLE, &dbl, "X", "a number"},
                            {"backend", CLI_STRING, &str, "B", "a name"},
                            {NULL, 0, NULL, NULL, NULL}};
    char err[256] = "";
    cli_result r = cli_parse(opts, argc, argv, err, sizeof err);
    if (r == CLI_ERROR && err[0] == '\0') abort();
    if (list.n > CLI_MAX_LIST) abort();
    if (!isfinite(dbl)) abort();                       /* nan / inf never parse */
    if (str && (str < buf || str > buf + size)) abort();
    if (cli_list_has(str ? str : "", "dense")) (void)0;

    /* the first argument as the value of each number option, against the reference */
    const char *val = argv[0];
    uint64_t want = 0, got = 0;
    bool ok32 = ref_u64(val, UINT32_MAX, &want);
    char *one[2] = {"--n", (char *)val};
    u = 7;
    err[0] = '\0';
    r = cli_parse(opts, 2, one, err, sizeof err);
    if ((r == CLI_OK) != ok32 && !(r == CLI_HELP)) abort();
    if (r == CLI_OK && u != want) abort();
    if (r == CLI_ERROR && !strstr(err, "--n")) abort();   /* the message names the option */
    bool ok64 = ref_u64(val, UINT64_MAX, &want);
    char *seed[2] = {"--seed", (char *)val};
    r = cli_parse(opts, 2, seed, err, sizeof err);
    if ((r == CLI_OK) != ok64 && !(r == CLI_HELP)) abort();
    if (r == CLI_OK && u64 != want) abort();
    /* a list is its entries, each a valid 32-bit number */
    cli_list l2;
    if (cli_parse_list(val, &l2)) {
        const char *p = val;
        for (uint32_t i = 0; i < l2.n; i++) {
            size_t len = strcspn(p, ",");
            char *entry = strndup(p, len);
            if (!ref_u64(entry, UINT32_MAX, &got) || got != l2.v[i]) abort();
            free(entry);
            p += len + (p[len] == ',');
        }
        if (*p) abort();
    }
    /* names */
    static const char *const allowed[] = {"dense", "fasa", "fasa-m", NULL};
    err[0] = '\0';
    bool names_ok = cli_check_names("variant", val, allowed, err, sizeof err);
    if (names_ok != ref_names(val, allowed)) abort();
    if (!names_ok && !strstr(err, "--variant")) abort();
    /* the byte formatter never prints a number of 1024 or more of its unit */
    got = 0;
    memcpy(&got, data, size < 8 ? size : 8);
    char bytes[32];
    if (strtod(cli_format_bytes(got, bytes, sizeof bytes), NULL) >= 1024) abort();
    free(buf);
    return 0;
}
