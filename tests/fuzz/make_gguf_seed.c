/* Writes the fuzz seeds for fuzz_gguf: a small valid synthetic model GGUF
 * and a few structurally interesting variants, into the given directory. */
#include "synth_model.h"

#include <stdio.h>
#include <stdlib.h>

static int write_seed(const char *dir, const char *name, const uint8_t *data, size_t size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size) {
        fprintf(stderr, "make_gguf_seed: cannot write %s\n", path);
        if (f) fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_gguf_seed DIR\n");
        return 2;
    }
    synth_options variants[] = {{.seed = 1}, {.seed = 2, .skip_key = "llama.rope.freq_base"},
                                {.seed = 3, .bad_shape = "blk.0.attn_q.weight"}};
    const char *names[] = {"valid.gguf", "no_rope_base.gguf", "bad_shape.gguf"};
    int rc = 0;
    for (int i = 0; i < 3; i++) {
        size_t size = 0;
        uint8_t *data = synth_model(&variants[i], &size);
        rc |= !data || write_seed(argv[1], names[i], data, size);
        free(data);
    }
    return rc;
}
