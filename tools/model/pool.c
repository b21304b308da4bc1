#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sysconf(_SC_NPROCESSORS_ONLN) */
#endif
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN_ITERATIONS 2000   /* ~50 microseconds of pause before sleeping */

struct fm_pool {
    uint32_t n_threads;
    pthread_t *workers;
    uint32_t n_started;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_uint generation;    /* bumped once per job */
    atomic_uint next_task;
    atomic_uint busy_workers;  /* workers still inside the current job */
    atomic_bool stop;
    uint32_t n_tasks;
    fm_task_fn fn;
    void *ctx;
};

typedef struct worker_arg {
    fm_pool *pool;
    uint32_t index;
} worker_arg;

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_tasks(fm_pool *p, uint32_t thread)
{
    for (;;) {
        uint32_t t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (t >= p->n_tasks)
            return;
        p->fn(p->ctx, t, thread);
    }
}

/* Waits until the generation differs from `seen` (or stop); returns it. */
static unsigned wait_for_job(fm_pool *p, unsigned seen)
{
    for (int i = 0; i < SPIN_ITERATIONS; i++) {
        unsigned g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load(&p->stop))
            return g;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    unsigned g;
    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->wake, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    fm_pool *p = wa->pool;
    uint32_t index = wa->index;
    unsigned seen = 0;
    free(wa);
    for (;;) {
        seen = wait_for_job(p, seen);
        if (atomic_load(&p->stop))
            return NULL;
        run_tasks(p, index);
        if (atomic_fetch_sub_explicit(&p->busy_workers, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static uint32_t default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (uint32_t)n : 1;
}

fm_status fm_pool_create(uint32_t n_threads, fm_pool **out, fm_error *err)
{
    if (!out)
        return fm_fail(err, FM_ERR_ARG, "fm_pool_create: NULL out");
    *out = NULL;
    fm_pool *p = calloc(1, sizeof *p);
    if (!p)
        return fm_fail(err, FM_ERR_NOMEM, "thread pool: out of memory");
    p->n_threads = n_threads ? n_threads : default_threads();
    if (p->n_threads > 256)
        p->n_threads = 256;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->workers = calloc(p->n_threads, sizeof *p->workers);
    if (!p->workers) {
        fm_pool_destroy(p);
        return fm_fail(err, FM_ERR_NOMEM, "thread pool: out of memory");
    }
    for (uint32_t i = 1; i < p->n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->pool = p;
            wa->index = i;
        }
        if (!wa || pthread_create(&p->workers[i - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            fm_pool_destroy(p);
            return fm_fail(err, FM_ERR_THREAD, "thread pool: cannot start worker %u", i);
        }
        p->n_started++;
    }
    *out = p;
    return FM_OK;
}

void fm_pool_destroy(fm_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->workers);
    free(p);
}

uint32_t fm_pool_threads(const fm_pool *p)
{
    return p->n_threads;
}

void fm_pool_run(fm_pool *p, uint32_t n_tasks, fm_task_fn fn, void *ctx)
{
    if (p->n_started == 0 || n_tasks <= 1) {
        for (uint32_t t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&p->busy_workers, p->n_started, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, 0);
    for (int i = 0; i < SPIN_ITERATIONS; i++) {
        if (atomic_load_explicit(&p->busy_workers, memory_order_acquire) == 0)
            return;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->busy_workers) != 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
