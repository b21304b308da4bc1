/* A small fixed pool of worker threads running parallel-for loops.
 * The calling thread takes part in the work, so a pool of n threads starts
 * n-1 workers. */
#include "internal.h"

#include <unistd.h>

struct fasa_pool {
    fasa_context *ctx;
    uint32_t n_threads;          /* including the caller */
    pthread_t *threads;
    pthread_mutex_t mutex;
    pthread_cond_t work_ready;
    pthread_cond_t work_done;
    /* current job */
    fasa_task_fn fn;
    void *arg;
    uint32_t n_tasks;
    uint32_t next_task;          /* protected by mutex */
    uint32_t busy_workers;
    uint64_t generation;         /* bumped per job so workers notice new work */
    bool quit;
};

uint32_t fasa__cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 256 ? 256 : (uint32_t)n);
}

/* Takes tasks until none are left. */
static void drain(fasa_pool *pool, uint32_t worker)
{
    for (;;) {
        pthread_mutex_lock(&pool->mutex);
        uint32_t t = pool->next_task < pool->n_tasks ? pool->next_task++ : UINT32_MAX;
        pthread_mutex_unlock(&pool->mutex);
        if (t == UINT32_MAX) return;
        pool->fn(pool->arg, t, worker);
    }
}

typedef struct { fasa_pool *pool; uint32_t worker; } worker_arg;

static void *worker_main(void *p)
{
    worker_arg *wa = p;
    fasa_pool *pool = wa->pool;
    uint32_t worker = wa->worker;
    fasa__free(pool->ctx, wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->mutex);
    for (;;) {
        while (!pool->quit && pool->generation == seen) pthread_cond_wait(&pool->work_ready, &pool->mutex);
        if (pool->quit) break;
        seen = pool->generation;
        pool->busy_workers++;
        pthread_mutex_unlock(&pool->mutex);
        drain(pool, worker);
        pthread_mutex_lock(&pool->mutex);
        if (--pool->busy_workers == 0) pthread_cond_signal(&pool->work_done);
    }
    pthread_mutex_unlock(&pool->mutex);
    return NULL;
}

static void stop_workers(fasa_pool *pool, uint32_t started)
{
    pthread_mutex_lock(&pool->mutex);
    pool->quit = true;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->mutex);
    for (uint32_t i = 0; i < started; i++) pthread_join(pool->threads[i], NULL);
}

fasa_status fasa__pool_create(fasa_context *ctx, uint32_t n_threads, fasa_pool **out)
{
    *out = NULL;
    fasa_pool *pool = fasa__alloc(ctx, sizeof *pool);
    if (!pool) return FASA_ERROR_OUT_OF_HOST_MEMORY;
    pool->ctx = ctx;
    pool->n_threads = n_threads ? n_threads : 1;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->work_ready, NULL);
    pthread_cond_init(&pool->work_done, NULL);
    uint32_t n_workers = pool->n_threads - 1;
    pool->threads = fasa__alloc(ctx, sizeof(pthread_t) * (n_workers ? n_workers : 1));
    if (!pool->threads) {
        pool->n_threads = 1; /* no worker was started: nothing to stop or join */
        fasa__pool_destroy(ctx, pool);
        return FASA_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint32_t i = 0; i < n_workers; i++) {
        worker_arg *wa = fasa__alloc(ctx, sizeof *wa);
        if (wa) *wa = (worker_arg){pool, i + 1};
        if (!wa || pthread_create(&pool->threads[i], NULL, worker_main, wa) != 0) {
            fasa__free(ctx, wa);
            stop_workers(pool, i);
            pool->n_threads = 1; /* nothing left to join */
            fasa__pool_destroy(ctx, pool);
            return FASA_ERROR_OUT_OF_HOST_MEMORY;
        }
    }
    *out = pool;
    return FASA_OK;
}

void fasa__pool_destroy(fasa_context *ctx, fasa_pool *pool)
{
    if (!pool) return;
    if (pool->n_threads > 1 && !pool->quit) stop_workers(pool, pool->n_threads - 1);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->work_ready);
    pthread_cond_destroy(&pool->work_done);
    fasa__free(ctx, pool->threads);
    fasa__free(ctx, pool);
}

uint32_t fasa__pool_size(const fasa_pool *pool) { return pool ? pool->n_threads : 1; }

void fasa__pool_run(fasa_pool *pool, uint32_t n_tasks, fasa_task_fn fn, void *arg)
{
    if (n_tasks == 0) return;
    if (!pool || pool->n_threads == 1 || n_tasks == 1) {
        for (uint32_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    pthread_mutex_lock(&pool->mutex);
    pool->fn = fn;
    pool->arg = arg;
    pool->n_tasks = n_tasks;
    pool->next_task = 0;
    pool->generation++;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->mutex);

    drain(pool, 0);

    /* Wait until every worker that joined this job has left it. */
    pthread_mutex_lock(&pool->mutex);
    while (pool->busy_workers > 0) pthread_cond_wait(&pool->work_done, &pool->mutex);
    pool->fn = NULL;
    pthread_mutex_unlock(&pool->mutex);
}
