/* The FASA-M row cache policy, the reference every backend follows so that
 * hit rates and transfer counts agree across backends.
 *
 * One row cache per (layer, KV head) holds up to `slots` rows of K and V in
 * device memory.  At each sparse step the group needs a set N of distinct
 * tokens (the union of its selection rows):
 *   - hits are the tokens of N already resident;
 *   - every miss needs a slot: free slots first, then slots whose token is
 *     not in N, oldest "last needed" step first, ties to the lower slot;
 *   - misses are placed in ascending token order into the victims in that
 *     order; every token of N gets its "last needed" stamp set to the step.
 * A step needing more rows than there are slots is rejected by the caller
 * (the cache must hold one step's rows). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct fasa_rowcache {
    uint32_t slots, capacity;
    int32_t *slot_token;         /* [slots] token or -1 */
    uint64_t *slot_stamp;        /* [slots] last step the row was needed */
    int32_t *token_slot;         /* [capacity] slot or -1 */
    uint8_t *needed;             /* [slots] scratch: slot holds a row needed now */
    uint32_t *victims;           /* [slots] scratch */
};

void fasa__rowcache_destroy(fasa_context *ctx, fasa_rowcache *rc)
{
    if (!rc) return;
    fasa__free(ctx, rc->slot_token);
    fasa__free(ctx, rc->slot_stamp);
    fasa__free(ctx, rc->token_slot);
    fasa__free(ctx, rc->needed);
    fasa__free(ctx, rc->victims);
    fasa__free(ctx, rc);
}

fasa_rowcache *fasa__rowcache_create(fasa_context *ctx, uint32_t slots, uint32_t capacity)
{
    fasa_rowcache *rc = fasa__alloc(ctx, sizeof *rc);
    if (!rc) return NULL;
    rc->slots = slots;
    rc->capacity = capacity;
    rc->slot_token = fasa__alloc_aligned(ctx, slots * sizeof(int32_t), 64);
    rc->slot_stamp = fasa__alloc(ctx, slots * sizeof(uint64_t));
    rc->token_slot = fasa__alloc_aligned(ctx, (size_t)capacity * sizeof(int32_t), 64);
    rc->needed = fasa__alloc(ctx, slots);
    rc->victims = fasa__alloc(ctx, slots * sizeof(uint32_t));
    if (!rc->slot_token || !rc->slot_stamp || !rc->token_slot || !rc->needed || !rc->victims) {
        fasa__rowcache_destroy(ctx, rc);
        return NULL;
    }
    fasa__rowcache_clear(rc);
    return rc;
}

void fasa__rowcache_clear(fasa_rowcache *rc)
{
    memset(rc->slot_token, 0xff, rc->slots * sizeof(int32_t));
    memset(rc->slot_stamp, 0, rc->slots * sizeof(uint64_t));
    memset(rc->token_slot, 0xff, (size_t)rc->capacity * sizeof(int32_t));
}

/* Victim order: free slots (stamp 0, token -1) first, then the oldest stamp,
 * ties to the lower slot.  Insertion by a counting pass is enough: stamps
 * of resident rows only grow, so a stable sort by stamp does it. */
static int cmp_victim(const void *a, const void *b, void *arg)
{
    const fasa_rowcache *rc = arg;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    bool fx = rc->slot_token[x] < 0, fy = rc->slot_token[y] < 0;
    if (fx != fy) return fx ? -1 : 1;
    if (rc->slot_stamp[x] != rc->slot_stamp[y]) return rc->slot_stamp[x] < rc->slot_stamp[y] ? -1 : 1;
    return (x > y) - (x < y);
}

uint32_t fasa__rowcache_step(fasa_rowcache *rc, const int32_t *tokens, uint32_t n, uint64_t step, int32_t *slot_out)
{
    memset(rc->needed, 0, rc->slots);
    uint32_t hits = 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t s = rc->token_slot[tokens[i]];
        if (s >= 0) {
            rc->needed[s] = 1;
            hits++;
        }
    }
    uint32_t n_victims = 0;
    for (uint32_t s = 0; s < rc->slots; s++)
        if (!rc->needed[s]) rc->victims[n_victims++] = s;
    qsort_r(rc->victims, n_victims, sizeof(uint32_t), cmp_victim, rc);
    uint32_t next = 0;
    for (uint32_t i = 0; i < n; i++) { /* tokens arrive ascending: misses in token order */
        int32_t t = tokens[i], s = rc->token_slot[t];
        if (s < 0) {
            s = (int32_t)rc->victims[next++];
            if (rc->slot_token[s] >= 0) rc->token_slot[rc->slot_token[s]] = -1;
            rc->slot_token[s] = t;
            rc->token_slot[t] = s;
        }
        rc->slot_stamp[s] = step;
        if (slot_out) slot_out[i] = s;
    }
    return hits;
}

void fasa__rowcache_truncate(fasa_rowcache *rc, uint32_t length)
{
    for (uint32_t s = 0; s < rc->slots; s++) {
        int32_t t = rc->slot_token[s];
        if (t >= 0 && (uint32_t)t >= length) {
            rc->token_slot[t] = -1;
            rc->slot_token[s] = -1;
            rc->slot_stamp[s] = 0;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* GPU fetch: sizes and counter folding                                      */
/* ------------------------------------------------------------------------ */

uint32_t fasa__fetch_rows_max(const fasa_kv_cache *c)
{
    uint64_t rmax = (uint64_t)c->group * c->max_n_fac;
    return (uint32_t)(rmax < c->capacity ? rmax : c->capacity);
}

fasa_status fasa__fetch_plan(fasa_kv_cache *c, fasa_fetch_plan *plan)
{
    plan->staged = c->fetch == FASA_FETCH_STAGED;
    plan->slots = c->row_cache_rows;
    plan->rmax = fasa__fetch_rows_max(c);
    plan->words = (c->capacity + 31) / 32;
    plan->trunc = fasa__alloc(c->ctx, c->shape.n_layers * sizeof(uint32_t));
    if (!plan->trunc) return fasa__error(c->ctx, FASA_ERROR_OUT_OF_HOST_MEMORY, "FASA-M fetch: out of host memory");
    for (uint32_t l = 0; l < c->shape.n_layers; l++) plan->trunc[l] = c->capacity; /* nothing pending */
    return FASA_OK;
}

/* The counters of cache->transfer, one bucket per step kind: demand steps
 * count the rows they needed, the hits and the bytes of the misses (a K and
 * a V row each); prefetches count only what they copied in. */
void fasa__fetch_step(fasa_kv_cache *c, bool prefetch)
{
    c->step_count++; /* the row-cache stamp of this step */
    if (prefetch) c->transfer.prefetch_steps++;
    else c->transfer.steps++;
}

void fasa__fetch_add(fasa_kv_cache *c, bool prefetch, uint64_t needed, uint64_t hits)
{
    fasa_transfer_stats *t = &c->transfer;
    uint64_t bytes = (needed - hits) * 2ull * c->shape.head_dim * c->elem_size;
    if (prefetch) {
        t->prefetch_rows += needed - hits;
        t->prefetch_bytes += bytes;
        return;
    }
    t->rows_needed += needed;
    t->rows_cached += hits;
    t->bytes += bytes;
}

void fasa__fetch_fold(fasa_kv_cache *c, bool prefetch, const uint64_t total[2], uint64_t folded[2])
{
    fasa__fetch_add(c, prefetch, total[0] - folded[0], total[1] - folded[1]);
    folded[0] = total[0];
    folded[1] = total[1];
}
