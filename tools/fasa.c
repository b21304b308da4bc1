/* fasa: the libfasa command-line tool. */
#include "commands.h"
#include "fasa.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"info", cmd_info, "backends compiled in, devices found, memory heaps"},
    {"bench", cmd_bench, "time dense vs FASA decode steps on synthetic data"},
    {"conform", cmd_conform, "run the conformance matrix against the fp64 reference"},
    {"calibrate", cmd_calibrate, "compute dominant frequency chunks (Contextual Agreement)"},
    {"run", cmd_run, "generate text with a GGUF model, attention through libfasa"},
    {"eval", cmd_eval, "model quality of FASA vs dense and baselines (perplexity, KL, recall)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: fasa <command> [options]\n\n"
               "libfasa %d.%d.%d: Frequency-Aware Sparse Attention decoding.\n\ncommands:\n",
            FASA_VERSION_MAJOR, FASA_VERSION_MINOR, FASA_VERSION_PATCH);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'fasa <command> --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("fasa %d.%d.%d\n", FASA_VERSION_MAJOR, FASA_VERSION_MINOR, FASA_VERSION_PATCH);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "fasa: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
