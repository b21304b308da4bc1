/* fasa bench --batch: one fasa_decode_batch of B sequences of a paged pool
 * against B single fasa_decode calls of the same items (bench_batch.c). */
#ifndef FASA_BENCH_BATCH_H
#define FASA_BENCH_BATCH_H

#include "cli.h"
#include "fasa.h"

#include <stdio.h>

#define BENCH_BATCH_DEFAULT_L 4096u   /* tokens per sequence when --L is not given */
#define BENCH_BATCH_BLOCK 16u         /* block_size of the pool */

typedef struct bench_batch_opts {
    uint32_t hq, hkv, d, ntip, nfac, iters, warmup;
    fasa_dtype dtype;
    const char *dtype_name;
    fasa_gqa_select gqa;
    bool per_head_dims, json;
    uint64_t seed;
    cli_list L, B;
} bench_batch_opts;

/* Runs every (L, B) row and prints the table (or JSON rows) to f; rows
 * measured before a failure are still printed (to stdout when f is an
 * --output file that will be dropped: fail_f).  Returns the status of the
 * first failure. */
fasa_status bench_batch_run(fasa_context *ctx, const bench_batch_opts *o, FILE *f, FILE *fail_f);

#endif
