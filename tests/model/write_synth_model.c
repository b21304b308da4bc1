/* Writes the tiny synthetic Llama GGUF of synth_model.c to a file, so CLI
 * tests can run `fasa run/eval/calibrate --model` in milliseconds without
 * the real model.
 *
 *   write_synth_model OUT.gguf [--set KEY u32|i32|f32|f64 VALUE]
 *                              [--token-type INDEX VALUE] [--extra-token] [--no-c0-tokens]
 */
#include "synth_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: write_synth_model OUT.gguf [--set KEY u32|i32|f32|f64 VALUE] "
                    "[--token-type INDEX VALUE] [--extra-token] [--no-c0-tokens]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    synth_options opt = { .seed = 7 };
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--set") && i + 3 < argc) {
            static const char *const types[] = { "u32", "i32", "f32", "f64" };
            static const uint32_t ids[] = { 4, 5, 6, 12 };
            opt.set_key = argv[i + 1];
            opt.set_type = 0;
            for (int t = 0; t < 4; t++)
                if (!strcmp(argv[i + 2], types[t]))
                    opt.set_type = ids[t];
            if (!opt.set_type)
                return usage();
            opt.set_value = strtod(argv[i + 3], NULL);
            i += 3;
        } else if (!strcmp(argv[i], "--token-type") && i + 2 < argc) {
            opt.set_token_type = true;
            opt.token_type_at = (uint32_t)strtoul(argv[i + 1], NULL, 10);
            opt.token_type = (int32_t)strtol(argv[i + 2], NULL, 10);
            i += 2;
        } else if (!strcmp(argv[i], "--extra-token")) {
            opt.extra_vocab_token = true;
        } else if (!strcmp(argv[i], "--no-c0-tokens")) {
            opt.no_c0_tokens = true;
        } else {
            return usage();
        }
    }
    size_t size = 0;
    uint8_t *data = synth_model(&opt, &size);
    FILE *f = data ? fopen(argv[1], "wb") : NULL;
    int ok = f && fwrite(data, 1, size, f) == size;
    if (f && fclose(f) != 0)
        ok = 0;
    free(data);
    if (!ok)
        fprintf(stderr, "write_synth_model: cannot write %s\n", argv[1]);
    return ok ? 0 : 1;
}
