/* libFuzzer target: the calibration JSON loader.  Any input must either
 * load or be rejected with PARSE/MISMATCH; a loaded calibration must save
 * and load back to the same dims, and saving that again must give the same
 * bytes (writer and reader agree, strings and %.6g floats included). */
#include "fasa.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static fasa_context *ctx;

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    long size = -1;
    if (!f || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) abort();
    char *buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) abort();
    fclose(f);
    *n = (size_t)size;
    return buf;
}

/* save(back) must reproduce the file back was loaded from. */
static void same_bytes_again(const fasa_calibration *back, const char *path)
{
    char again[80];
    snprintf(again, sizeof again, "%s.again", path);
    if (fasa_calibration_save(back, again) != FASA_OK) abort();
    size_t n1 = 0, n2 = 0;
    char *a = slurp(path, &n1), *b = slurp(again, &n2);
    if (n1 != n2 || memcmp(a, b, n1) != 0) abort();
    free(a);
    free(b);
    remove(again);
}

static void roundtrip(const fasa_calibration *cal)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz-calib-%d.json", (int)getpid());
    fasa_calibration *back = NULL;
    if (fasa_calibration_save(cal, path) != FASA_OK) abort();
    fasa_calibration_info info;
    fasa_calibration_get_info(cal, &info);
    if (fasa_calibration_load(ctx, path, &info.shape, &back) != FASA_OK) abort();
    for (uint32_t l = 0; l < info.shape.n_layers; l++)
        for (uint32_t h = 0; h < info.shape.n_q_heads; h++) {
            uint16_t a[FASA_MAX_HEAD_DIM], b[FASA_MAX_HEAD_DIM];
            fasa_calibration_get_dims(cal, l, h, a, FASA_MAX_HEAD_DIM);
            fasa_calibration_get_dims(back, l, h, b, FASA_MAX_HEAD_DIM);
            if (memcmp(a, b, 2 * info.n_tip * sizeof a[0]) != 0) abort();
        }
    same_bytes_again(back, path);
    fasa_calibration_destroy(back);
    remove(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx) {
        fasa_context_desc d = {.backend = FASA_BACKEND_CPU, .n_threads = 1};
        if (fasa_context_create(&d, &ctx) != FASA_OK) abort();
    }
    fasa_calibration *cal = NULL;
    fasa_status st = fasa_calibration_load_memory(ctx, (const char *)data, size, NULL, &cal);
    if (st == FASA_OK) {
        /* keep the saved file small: only round-trip modest shapes */
        fasa_calibration_info info;
        fasa_calibration_get_info(cal, &info);
        if ((uint64_t)info.shape.n_layers * info.shape.n_q_heads * info.shape.head_dim < 200000) roundtrip(cal);
        fasa_calibration_destroy(cal);
    } else if (st != FASA_ERROR_PARSE && st != FASA_ERROR_MISMATCH && st != FASA_ERROR_OUT_OF_HOST_MEMORY) {
        abort(); /* any other status on file content is a bug */
    } else if (cal != NULL || strlen(fasa_context_last_error(ctx)) == 0) {
        abort(); /* failures must leave no object and say why */
    }
    return 0;
}
