/* libFuzzer target: the GGUF reader (tools/model/gguf.c) on arbitrary
 * bytes, followed by a model load from whatever parsed: every path must
 * return a status with a message, never crash or read out of bounds. */
#include "gguf.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    fm_error err = {0};
    fm_status st = gguf_open_memory(data, size, &f, &err);
    if (st != FM_OK) {
        if (f || err.msg[0] == '\0') abort();
        return 0;
    }
    /* walk everything the reader exposes */
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) (void)gguf_kv_at(f, i);
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) (void)gguf_tensor_at(f, i);
    uint32_t u;
    (void)gguf_get_u32(f, "llama.block_count", &u, &err);
    fm_model *m = NULL;
    fm_model_desc md = {.n_threads = 1};
    memset(&err, 0, sizeof err);
    if (fm_model_load_gguf(f, &md, &m, &err) == FM_OK) fm_model_free(m);
    else if (err.msg[0] == '\0') abort();
    gguf_close(f);
    return 0;
}
