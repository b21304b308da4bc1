/* libFuzzer target: the fasa tool's option parser.  The input is split at
 * NUL or newline bytes into argv; parsing must never crash, must accept or
 * reject with a message, and parsed values must be in their types' ranges. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

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
    if (str && (str < buf || str > buf + size)) abort();
    if (cli_list_has(str ? str : "", "dense")) (void)0;
    free(buf);
    return 0;
}
