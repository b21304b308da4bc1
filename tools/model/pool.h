/*
 * Minimal fork-join thread pool for the forward pass.  fm_pool_run hands out
 * task indices 0..n_tasks-1 through an atomic counter (dynamic balancing for
 * uneven work such as causal attention); the calling thread works too.
 * Workers spin briefly between jobs and then sleep, because a decode step
 * issues a few hundred short jobs and a condition-variable wake-up per job
 * would cost more than the job on small matrices.
 */
#ifndef FM_POOL_H
#define FM_POOL_H

#include <stdint.h>

#include "fm_common.h"

typedef struct fm_pool fm_pool;

/* fn(ctx, task, thread): thread is 0 for the caller, 1..n_threads-1 for workers. */
typedef void (*fm_task_fn)(void *ctx, uint32_t task, uint32_t thread);

/* n_threads 0 = number of online CPUs.  Total threads including the caller. */
fm_status fm_pool_create(uint32_t n_threads, fm_pool **out, fm_error *err);
void fm_pool_destroy(fm_pool *pool);
uint32_t fm_pool_threads(const fm_pool *pool);
/* Runs all tasks and returns when every one has finished. */
void fm_pool_run(fm_pool *pool, uint32_t n_tasks, fm_task_fn fn, void *ctx);

#endif
