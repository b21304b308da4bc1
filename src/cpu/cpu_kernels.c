/* CPU kernels: append, tip, topk, fac, dense.  fp32 arithmetic on fp16,
 * bf16 or fp32 storage, threaded with the context's pool.  These are also the
 * readable statement of what the GPU kernels compute. */
#include "cpu.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define BLOCK 16            /* tokens converted and scored together */
#define TIP_CHUNK 2048u     /* tokens per TIP task */
#define DENSE_CHUNK 2048u   /* minimum tokens per dense split */
#define NEG_START (-FLT_MAX / 2) /* online-softmax start: finite, never -inf */
#define MAX_TIP_GROUP 16u   /* query heads scored per pass over a block of rows */
#define MAX_GROUP 1024u     /* query heads per KV head (Hq <= 1024) */

static const fasa_cpu_simd *simd_of(const fasa_kv_cache *c)
{
    return ((const cpu_context *)c->ctx->impl)->simd;
}

/* Element offset of the K/V row of (KV head g, physical row t) in a
 * layer's K or V: libfasa's own layout or the engine's (external caches). */
static size_t kv_elem(const fasa_kv_cache *c, uint32_t g, uint32_t t)
{
    const cpu_cache *cc = c->impl;
    return (size_t)t * cc->ts + (size_t)g * cc->hs;
}

/* The physical row of a step's token j: j itself, or through the decoded
 * sequence's block table on a paged cache (fasa__row_of). */
static uint32_t row_of(const fasa_step *step, uint32_t j)
{
    if (!step->paged) return j;
    const uint32_t *table = (const uint32_t *)step->cache->tables->host + step->table_offset;
    return fasa__row_of(table, step->block_shift, j);
}

fasa_status fasa__cpu_upload_table(fasa_exec *exec, fasa_kv_cache *cache, uint32_t first, uint32_t n,
                                   const uint32_t *src)
{
    (void)exec;
    memcpy((uint32_t *)cache->tables->host + first, src, (size_t)n * sizeof *src);
    return FASA_OK;
}

/* The width elements at element `at` of a storage array as fp32: the row
 * itself for fp32 storage, else converted into tmp. */
static const float *load_row(const fasa_kv_cache *c, const void *base, size_t at, uint32_t width, float *tmp)
{
    if (c->dtype == FASA_DTYPE_F32) return (const float *)base + at;
    if (c->dtype == FASA_DTYPE_F16) simd_of(c)->half_to_float((const uint16_t *)base + at, tmp, width);
    else simd_of(c)->bf16_to_float((const uint16_t *)base + at, tmp, width);
    return tmp;
}

/* q of a step as fp32: the buffer itself, or widened into the scratch. */
static const float *step_q(const fasa_step *step)
{
    const fasa_kv_cache *c = step->cache;
    cpu_cache *cc = c->impl;
    const void *q = (const char *)step->q->host + step->q_offset;
    if (step->q_type == FASA_IO_F32) return q;
    fasa__dtype_to_float_n(fasa__io_dtype(step->q_type), q, cc->qf, (size_t)c->shape.n_q_heads * c->shape.head_dim);
    return cc->qf;
}

/* Where fac and dense write o in fp32: the buffer itself, or the scratch
 * that finish_o rounds into the buffer. */
static float *step_o(const fasa_step *step)
{
    cpu_cache *cc = step->cache->impl;
    return step->o_type == FASA_IO_F32 ? (float *)((char *)step->o->host + step->o_offset) : cc->of;
}

static void finish_o(const fasa_step *step)
{
    const fasa_kv_cache *c = step->cache;
    cpu_cache *cc = c->impl;
    if (step->o_type == FASA_IO_F32) return;
    fasa__float_to_dtype_n(fasa__io_dtype(step->o_type), cc->of, (char *)step->o->host + step->o_offset,
                           (size_t)c->shape.n_q_heads * c->shape.head_dim);
}

/* ------------------------------------------------------------------------ */
/* append                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct append_job {
    fasa_kv_cache *cache;
    const cpu_cache *cc;
    cpu_layer *lay;
    uint32_t layer, first, n;
    const void *k, *v;
    fasa_dtype src;
} append_job;

/* Converts one row of d elements from the source dtype into storage
 * (equal types copy the bits; others round to nearest even through fp32). */
static void store_row(const fasa_kv_cache *c, const void *src, fasa_dtype src_dtype, void *dst, uint32_t d)
{
    if (src_dtype == c->dtype) memcpy(dst, src, (size_t)d * c->elem_size);
    else if (c->dtype == FASA_DTYPE_F16 && src_dtype == FASA_DTYPE_F32) fasa__float_to_half_n(src, dst, d);
    else fasa__convert_n(c->dtype, dst, src_dtype, src, d);
}

/* Copies the union dims of a stored K row into token t's entries of its
 * K_dom tile of KV head g (padding dims stay zero). */
static void store_dom(const fasa_kv_cache *c, const cpu_cache *cc, void *kdom, uint32_t layer, uint32_t g,
                      uint32_t t, const void *krow)
{
    size_t gi = (size_t)layer * c->shape.n_kv_heads + g;
    const uint16_t *dims = c->union_dims + gi * c->u_pad;
    uint32_t u = c->union_size[gi];
    size_t base = (((size_t)g * cc->n_tiles + t / 16) * c->u_pad) * 16 + t % 16;
    for (uint32_t s = 0; s < u; s++) {
        size_t at = base + s * 16;
        if (c->elem_size == 2) ((uint16_t *)kdom)[at] = ((const uint16_t *)krow)[dims[s]];
        else ((float *)kdom)[at] = ((const float *)krow)[dims[s]];
    }
}

static void append_token(void *arg, uint32_t t, uint32_t worker)
{
    (void)worker;
    append_job *job = arg;
    fasa_kv_cache *c = job->cache;
    uint32_t d = c->shape.head_dim, hkv = c->shape.n_kv_heads;
    size_t src_elem = fasa__dtype_size(job->src);
    for (uint32_t g = 0; g < hkv; g++) {
        size_t src_off = ((size_t)t * hkv + g) * d * src_elem;
        size_t at = kv_elem(c, g, job->first + t) * c->elem_size;
        char *krow = (char *)job->lay->k + at;
        store_row(c, (const char *)job->k + src_off, job->src, krow, d);
        store_row(c, (const char *)job->v + src_off, job->src, (char *)job->lay->v + at, d);
        if (c->has_dims) store_dom(c, job->cc, job->lay->kdom, job->layer, g, job->first + t, krow);
    }
}

fasa_status fasa__cpu_append(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first,
                             uint32_t n, fasa_buffer *k, uint64_t k_offset, fasa_buffer *v,
                             uint64_t v_offset, fasa_dtype src_dtype)
{
    cpu_cache *cc = cache->impl;
    append_job job = {cache, cc, &cc->layers[layer], layer, first, n,
                      (const char *)k->host + k_offset, (const char *)v->host + v_offset, src_dtype};
    fasa__pool_run(exec->ctx->pool, n, append_token, &job);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* sync: K_dom rows of tokens an engine wrote into its own K (external)     */
/* ------------------------------------------------------------------------ */

static void sync_token(void *arg, uint32_t t, uint32_t worker)
{
    (void)worker;
    const append_job *job = arg;
    fasa_kv_cache *c = job->cache;
    for (uint32_t g = 0; g < c->shape.n_kv_heads; g++) {
        const char *krow = (const char *)job->lay->k + kv_elem(c, g, job->first + t) * c->elem_size;
        store_dom(c, job->cc, job->lay->kdom, job->layer, g, job->first + t, krow);
    }
}

fasa_status fasa__cpu_sync(fasa_exec *exec, fasa_kv_cache *cache, uint32_t layer, uint32_t first, uint32_t n)
{
    cpu_cache *cc = cache->impl;
    append_job job = {cache, cc, &cc->layers[layer], layer, first, n, NULL, NULL, cache->dtype};
    fasa__pool_run(exec->ctx->pool, n, sync_token, &job);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* tip: S[row][j] = sum over I_h of q[h][c] * K[g][j][c]                     */
/* ------------------------------------------------------------------------ */

typedef struct tip_job {
    const fasa_step *step;
    const cpu_cache *cc;
    const void *rows;            /* K_dom columns, or K rows for the oracle */
    uint32_t width;              /* u_pad, or d for the oracle */
    const float *qm;             /* [Hq][width] masked queries */
    float *scores;
    uint32_t n_chunks;
} tip_job;

/* Masked queries: q[h][c] where union slot c belongs to I_h, else 0. */
static void build_masked_q(const fasa_step *step, const float *q, float *qm, uint32_t width)
{
    const fasa_kv_cache *c = step->cache;
    uint32_t d = c->shape.head_dim;
    for (uint32_t h = 0; h < c->shape.n_q_heads; h++) {
        float *dst = qm + (size_t)h * width;
        if (step->oracle) {
            memcpy(dst, q + (size_t)h * d, d * sizeof(float));
            continue;
        }
        const int16_t *map = c->tip_map + ((size_t)step->layer * c->shape.n_q_heads + h) * c->u_pad;
        for (uint32_t s = 0; s < width; s++) dst[s] = map[s] >= 0 ? q[(size_t)h * d + map[s]] : 0.0f;
    }
}

/* Writes the G head scores of 16 tokens (or their sum, in head order, for
 * per-group selection), n_valid of them. */
static void store_scores(const tip_job *job, uint32_t g, uint32_t j, uint32_t n_valid, float s[][16])
{
    const fasa_kv_cache *c = job->step->cache;
    uint32_t G = c->group;
    if (job->step->select == FASA_GQA_PER_GROUP) {
        float *out = job->scores + (size_t)g * c->capacity + j;
        for (uint32_t t = 0; t < n_valid; t++) {
            float sum = 0.0f;
            for (uint32_t m = 0; m < G; m++) sum += s[m][t];
            out[t] = sum;
        }
        return;
    }
    for (uint32_t m = 0; m < G; m++)
        memcpy(job->scores + (size_t)(g * G + m) * c->capacity + j, s[m], n_valid * sizeof(float));
}

/* NaN test on the bits, so that no floating-point mode can drop it. */
static bool score_is_nan(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u & 0x7fffffffu) > 0x7f800000u;
}

/* Head h's score of token t of a K_dom tile over its own slots only (those
 * tip_map puts in I_h), in slot order, one fused multiply-add per term: the
 * fast dot product's order with the other heads' slots left out. */
static float own_score(const tip_job *job, uint32_t h, const char *cols, uint32_t t)
{
    const fasa_kv_cache *c = job->step->cache;
    const int16_t *map = c->tip_map + ((size_t)job->step->layer * c->shape.n_q_heads + h) * c->u_pad;
    const float *qm = job->qm + (size_t)h * job->width;
    float acc = 0.0f;
    for (uint32_t slot = 0; slot < job->width; slot++) {
        if (map[slot] < 0) continue;
        acc = fmaf(qm[slot], fasa__dtype_load(c->dtype, cols, (size_t)slot * 16 + t), acc);
    }
    return acc;
}

/* FASA scores of the 16 tokens of one K_dom tile (j a multiple of 16).
 * A score depends only on the head's own dims (docs/SPEC.md §8).  The fast
 * masked dot product also multiplies the other heads' slots of U_g by an
 * exact zero, which adds nothing unless the K value there is NaN or Inf
 * (0 * NaN and 0 * Inf are NaN): so a score that is not NaN is already
 * exact, and only a NaN one is recomputed over the head's own slots (it
 * stays NaN when an own dim holds NaN or its products give Inf - Inf). */
/* A paged sequence's tokens [j, j + n_valid) are scattered over K_dom
 * tiles: their columns are gathered into one tile (zeros past n_valid), so
 * each score is computed exactly as for a contiguous cache. */
static const char *gather_tile(const tip_job *job, uint32_t g, uint32_t j, uint32_t n_valid, char *tile_out)
{
    const fasa_kv_cache *c = job->step->cache;
    size_t es = c->elem_size;
    memset(tile_out, 0, (size_t)c->u_pad * 16 * es);
    for (uint32_t t = 0; t < n_valid; t++) {
        uint32_t r = row_of(job->step, j + t);
        const char *src = (const char *)job->rows + (((size_t)g * job->cc->n_tiles + r / 16) * c->u_pad * 16 + r % 16) * es;
        for (uint32_t slot = 0; slot < c->u_pad; slot++)
            memcpy(tile_out + ((size_t)slot * 16 + t) * es, src + (size_t)slot * 16 * es, es);
    }
    return tile_out;
}

static void tip_block16(const tip_job *job, uint32_t g, uint32_t j, uint32_t n_valid, float s[][16])
{
    const fasa_kv_cache *c = job->step->cache;
    size_t tile = (size_t)g * job->cc->n_tiles + j / 16;
    const char *cols = (const char *)job->rows + tile * c->u_pad * 16 * c->elem_size;
    char gathered[FASA_MAX_HEAD_DIM * 16 * 4] __attribute__((aligned(32)));
    if (job->step->paged) cols = gather_tile(job, g, j, n_valid, gathered);
    bool nan = simd_of(c)->tip16(cols, c->dtype, 16, job->width,
                                 job->qm + (size_t)g * c->group * job->width, c->group, &s[0][0], 16);
    if (nan) /* rare; the tile's tokens past L may also set it */
        for (uint32_t m = 0; m < c->group; m++)
            for (uint32_t t = 0; t < n_valid; t++)
                if (score_is_nan(s[m][t])) s[m][t] = own_score(job, g * c->group + m, cols, t);
    store_scores(job, g, j, n_valid, s);
}

/* Oracle scores of 16 tokens from the K rows (two dot8 calls over 16
 * consecutive rows; the tail is zero-padded so every score is computed the
 * same way, and rows that are not adjacent in memory, an external layout,
 * are gathered first). */
static void oracle_block16(const tip_job *job, uint32_t g, uint32_t j, uint32_t n_valid, float s[][16])
{
    const fasa_kv_cache *c = job->step->cache;
    size_t row_bytes = (size_t)job->width * c->elem_size;
    const char *rows = (const char *)job->rows + kv_elem(c, g, j) * c->elem_size;
    char pad[16 * FASA_MAX_HEAD_DIM * 4] __attribute__((aligned(32)));
    bool adjacent = ((const cpu_cache *)c->impl)->ts == job->width && !job->step->paged;
    if (n_valid < 16 || !adjacent) {
        memset(pad, 0, 16 * row_bytes);
        for (uint32_t t = 0; t < n_valid; t++)
            memcpy(pad + t * row_bytes,
                   (const char *)job->rows + kv_elem(c, g, row_of(job->step, j + t)) * c->elem_size, row_bytes);
        rows = pad;
    }
    const float *qg = job->qm + (size_t)g * c->group * job->width;
    for (uint32_t half_block = 0; half_block < 2; half_block++)
        for (uint32_t m0 = 0; m0 < c->group; m0 += MAX_TIP_GROUP) {
            uint32_t nm = c->group - m0 < MAX_TIP_GROUP ? c->group - m0 : MAX_TIP_GROUP;
            simd_of(c)->dot8(rows + half_block * 8 * row_bytes, c->dtype, job->width, qg + (size_t)m0 * job->width, nm,
                             &s[m0][half_block * 8], 16);
        }
    store_scores(job, g, j, n_valid, s);
}

static void tip_chunk(void *arg, uint32_t task, uint32_t worker)
{
    (void)worker;
    tip_job *job = arg;
    const fasa_step *step = job->step;
    uint32_t g = task / job->n_chunks, chunk = task % job->n_chunks;
    uint32_t j0 = chunk * TIP_CHUNK, j1 = j0 + TIP_CHUNK < step->L ? j0 + TIP_CHUNK : step->L;
    float s[MAX_GROUP][16];
    for (uint32_t j = j0; j < j1; j += 16) {
        uint32_t n = j1 - j < 16 ? j1 - j : 16;
        if (step->oracle) oracle_block16(job, g, j, n, s);
        else tip_block16(job, g, j, n, s);
    }
}

fasa_status fasa__cpu_tip(fasa_exec *exec, const fasa_step *step)
{
    fasa_kv_cache *c = step->cache;
    cpu_cache *cc = c->impl;
    const cpu_layer *lay = &cc->layers[step->layer];
    tip_job job = {step, cc, step->oracle ? lay->k : lay->kdom, step->oracle ? c->shape.head_dim : c->u_pad,
                   cc->qm, cc->scores, (step->L + TIP_CHUNK - 1) / TIP_CHUNK};
    build_masked_q(step, step_q(step), cc->qm, job.width);
    fasa__pool_run(exec->ctx->pool, c->shape.n_kv_heads * job.n_chunks, tip_chunk, &job);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* topk: forced tokens, then the exact top-(n_fac - forced) of the rest      */
/* ------------------------------------------------------------------------ */

typedef struct topk_job {
    const fasa_step *step;
    cpu_cache *cc;
} topk_job;

static void topk_row(void *arg, uint32_t r, uint32_t worker)
{
    topk_job *job = arg;
    const fasa_step *step = job->step;
    const fasa_kv_cache *c = step->cache;
    int32_t *out = job->cc->selected + (size_t)r * c->max_n_fac;
    uint32_t L = step->L, w = 0;
    for (uint32_t j = 0; j < step->n_sink; j++) out[w++] = (int32_t)j;
    for (uint32_t j = L - step->n_recent; j < L; j++) out[w++] = (int32_t)j;
    /* candidates are the contiguous window between the forced ranges */
    uint32_t lo = step->n_sink, n_cand = L - step->n_sink - step->n_recent;
    uint32_t k = step->n_fac - w;
    uint32_t got = fasa__select_topk(job->cc->scores + (size_t)r * c->capacity + lo, n_cand, k,
                                     job->cc->topk_scratch[worker], out + w);
    for (uint32_t i = 0; i < got; i++) out[w + i] += (int32_t)lo;
}

fasa_status fasa__cpu_topk(fasa_exec *exec, const fasa_step *step)
{
    topk_job job = {step, step->cache->impl};
    fasa__pool_run(exec->ctx->pool, step->n_rows, topk_row, &job);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* Attention core shared by fac and dense: online softmax over a token list */
/* ------------------------------------------------------------------------ */

/* A partial result: p[0] = running max m, p[1] = sum l, p[2..] = acc[d].
 * Partials live in cpu_cache.partials at [query head][split]. */
#define MAX_BATCH_HEADS 64u

typedef struct attend_args {
    const fasa_step *step;       /* maps tokens to rows (paged caches) */
    const fasa_kv_cache *cache;
    const cpu_layer *lay;
    uint32_t g;                  /* KV head */
    const float *q;              /* [nh][d] */
    uint32_t nh;                 /* query heads sharing the tokens */
    const int32_t *idx;          /* token list, or NULL for [first, first + count) */
    uint32_t first, count;
    float scale;
    float *part;                 /* partial of the first head */
    size_t part_stride;          /* floats between the partials of consecutive heads */
} attend_args;

/* The physical K/V row of the i-th token of the list. */
static uint32_t token_at(const attend_args *a, uint32_t i)
{
    return row_of(a->step, a->idx ? (uint32_t)a->idx[i] : a->first + i);
}

/* Starts fetching the K and V rows of tokens [b0, b0 + n): gathered rows
 * are scattered in memory, so without this FAC waits on every row. */
static void prefetch_rows(const attend_args *a, uint32_t b0, uint32_t n)
{
    const fasa_kv_cache *c = a->cache;
    size_t row_bytes = (size_t)c->shape.head_dim * c->elem_size;
    for (uint32_t t = b0; t < b0 + n && t < a->count; t++) {
        size_t off = kv_elem(c, a->g, token_at(a, t)) * c->elem_size;
        for (size_t line = 0; line < row_bytes; line += 64) {
            __builtin_prefetch((const char *)a->lay->k + off + line);
            __builtin_prefetch((const char *)a->lay->v + off + line);
        }
    }
}

/* Online softmax of up to MAX_BATCH_HEADS query rows over the tokens: each
 * K/V row is converted once and used by every head of the batch. */
static void attend_batch(const attend_args *a)
{
    const fasa_kv_cache *c = a->cache;
    const fasa_cpu_simd *simd = simd_of(c);
    uint32_t d = c->shape.head_dim, nh = a->nh;
    float tmp[FASA_MAX_HEAD_DIM], s[MAX_BATCH_HEADS][BLOCK];
    for (uint32_t h = 0; h < nh; h++) {
        float *p = a->part + h * a->part_stride;
        p[0] = NEG_START;
        p[1] = 0.0f;
        memset(p + 2, 0, d * sizeof(float));
    }
    /* gathered rows, and rows of one head that are not adjacent (an engine's
     * token-major K/V: a head's rows lie n_kv_heads rows apart, across pages
     * the hardware prefetcher does not cross) */
    bool prefetch = a->idx || a->step->paged || ((const cpu_cache *)c->impl)->ts != d;
    if (prefetch) prefetch_rows(a, 0, BLOCK);
    for (uint32_t b0 = 0; b0 < a->count; b0 += BLOCK) {
        uint32_t nb = a->count - b0 < BLOCK ? a->count - b0 : BLOCK;
        if (prefetch) prefetch_rows(a, b0 + BLOCK, BLOCK);
        for (uint32_t t = 0; t < nb; t++) {
            const float *k = load_row(c, a->lay->k, kv_elem(c, a->g, token_at(a, b0 + t)), d, tmp);
            for (uint32_t h = 0; h < nh; h++) s[h][t] = simd->dot(a->q + (size_t)h * d, k, d) * a->scale;
        }
        /* rescale each head's running sums once per block */
        for (uint32_t h = 0; h < nh; h++) {
            float *p = a->part + h * a->part_stride, m_new = p[0];
            for (uint32_t t = 0; t < nb; t++) m_new = s[h][t] > m_new ? s[h][t] : m_new;
            float corr = expf(p[0] - m_new);
            p[0] = m_new;
            p[1] *= corr;
            simd->scale(p + 2, corr, d);
            for (uint32_t t = 0; t < nb; t++) {
                s[h][t] = expf(s[h][t] - m_new);
                p[1] += s[h][t];
            }
        }
        for (uint32_t t = 0; t < nb; t++) {
            const float *v = load_row(c, a->lay->v, kv_elem(c, a->g, token_at(a, b0 + t)), d, tmp);
            for (uint32_t h = 0; h < nh; h++) simd->axpy(a->part + h * a->part_stride + 2, s[h][t], v, d);
        }
    }
}

static void attend(const attend_args *a)
{
    uint32_t d = a->cache->shape.head_dim;
    for (uint32_t h0 = 0; h0 < a->nh; h0 += MAX_BATCH_HEADS) {
        attend_args b = *a;
        b.nh = a->nh - h0 < MAX_BATCH_HEADS ? a->nh - h0 : MAX_BATCH_HEADS;
        b.q = a->q + (size_t)h0 * d;
        b.part = a->part + h0 * a->part_stride;
        attend_batch(&b);
    }
}

/* o[d] from n partials of one head (the split-K reduce). */
static void reduce_partials(const float *parts, uint32_t n, uint32_t d, float *o)
{
    float m = NEG_START;
    for (uint32_t i = 0; i < n; i++) m = parts[(size_t)i * (d + 2)] > m ? parts[(size_t)i * (d + 2)] : m;
    float l = 0.0f;
    memset(o, 0, d * sizeof(float));
    for (uint32_t i = 0; i < n; i++) {
        const float *p = parts + (size_t)i * (d + 2);
        float w = expf(p[0] - m);
        l += p[1] * w;
        for (uint32_t c = 0; c < d; c++) o[c] += p[2 + c] * w;
    }
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (uint32_t c = 0; c < d; c++) o[c] *= inv;
}

/* ------------------------------------------------------------------------ */
/* fac: exact attention over each row's selected tokens                      */
/* ------------------------------------------------------------------------ */

typedef struct fac_job {
    const fasa_step *step;
    cpu_cache *cc;
    const float *q;
    float *o;
} fac_job;

static void fac_row(void *arg, uint32_t r, uint32_t worker)
{
    (void)worker;
    fac_job *job = arg;
    const fasa_step *step = job->step;
    const fasa_kv_cache *c = step->cache;
    uint32_t d = c->shape.head_dim;
    size_t stride = (size_t)FASA_CPU_MAX_SPLITS * (d + 2);
    bool per_group = step->select == FASA_GQA_PER_GROUP;
    uint32_t nh = per_group ? c->group : 1, h0 = per_group ? r * c->group : r;
    attend_args a = {step, c, &job->cc->layers[step->layer], h0 / c->group, job->q + (size_t)h0 * d, nh,
                     job->cc->selected + (size_t)r * c->max_n_fac, 0, step->n_fac, step->scale,
                     job->cc->partials + h0 * stride, stride};
    attend(&a);
    for (uint32_t h = 0; h < nh; h++)
        reduce_partials(a.part + h * stride, 1, d, job->o + (size_t)(h0 + h) * d);
}

/* Distinct tokens of KV head g's selection rows, ascending. */
static uint32_t group_tokens(const fasa_step *step, uint32_t g, int32_t *out)
{
    fasa_kv_cache *c = step->cache;
    cpu_cache *cc = c->impl;
    uint32_t per_group = step->n_rows / c->shape.n_kv_heads, n = 0;
    for (uint32_t r = g * per_group; r < (g + 1) * per_group; r++)
        for (uint32_t i = 0; i < step->n_fac; i++) {
            int32_t t = cc->selected[(size_t)r * c->max_n_fac + i];
            if (!cc->seen[t]) out[n++] = t;
            cc->seen[t] = 1;
        }
    for (uint32_t i = 0; i < n; i++) cc->seen[out[i]] = 0;
    for (uint32_t i = 1; i < n; i++) /* insertion sort: nearly sorted already */
        for (uint32_t k = i; k > 0 && out[k] < out[k - 1]; k--) {
            int32_t t = out[k]; out[k] = out[k - 1]; out[k - 1] = t;
        }
    return n;
}

/* FASA-M bookkeeping (the reference all backends report): rows needed per
 * KV head, row-cache hits, and the bytes that cross to the device: a K row
 * and a V row per row read in place or fetched.  The CPU has one memory, so
 * these are the bytes a discrete GPU would move; nothing is copied here. */
static void count_offload_rows(const fasa_step *step)
{
    fasa_kv_cache *c = step->cache;
    cpu_cache *cc = c->impl;
    fasa__fetch_step(c, step->prefetch);
    for (uint32_t g = 0; g < c->shape.n_kv_heads; g++) {
        uint32_t n = group_tokens(step, g, cc->needed), hits = 0;
        if (c->rowcaches)
            hits = fasa__rowcache_step(c->rowcaches[(size_t)step->layer * c->shape.n_kv_heads + g], cc->needed, n,
                                       c->step_count, NULL);
        fasa__fetch_add(c, step->prefetch, n, hits);
    }
}

fasa_status fasa__cpu_fac(fasa_exec *exec, const fasa_step *step)
{
    if (step->cache->placement == FASA_PLACEMENT_OFFLOAD) count_offload_rows(step);
    if (step->prefetch) return FASA_OK; /* rows placed; no attention */
    fac_job job = {step, step->cache->impl, step_q(step), step_o(step)};
    fasa__pool_run(exec->ctx->pool, step->n_rows, fac_row, &job);
    finish_o(step);
    return FASA_OK;
}

/* ------------------------------------------------------------------------ */
/* dense: exact attention over all L tokens, split over tokens, then reduced */
/* ------------------------------------------------------------------------ */

typedef struct dense_job {
    const fasa_step *step;
    cpu_cache *cc;
    const float *q;
    float *o;
    uint32_t n_splits, split_len;
} dense_job;

/* Partials of split s for the G heads of group g, at [h][s]. */
static float *dense_part(const dense_job *job, uint32_t h, uint32_t s)
{
    uint32_t d = job->step->cache->shape.head_dim;
    return job->cc->partials + ((size_t)h * FASA_CPU_MAX_SPLITS + s) * (d + 2);
}

static void dense_split(void *arg, uint32_t task, uint32_t worker)
{
    (void)worker;
    dense_job *job = arg;
    const fasa_step *step = job->step;
    const fasa_kv_cache *c = step->cache;
    uint32_t d = c->shape.head_dim, G = c->group;
    uint32_t g = task / job->n_splits, s = task % job->n_splits;
    uint32_t first = s * job->split_len;
    uint32_t count = first + job->split_len < step->L ? job->split_len : step->L - first;
    attend_args a = {step, c, &job->cc->layers[step->layer], g, job->q + (size_t)g * G * d, G, NULL, first,
                     count, step->scale, dense_part(job, g * G, s),
                     (size_t)FASA_CPU_MAX_SPLITS * (d + 2)};
    attend(&a);
}

static void dense_reduce(void *arg, uint32_t h, uint32_t worker)
{
    (void)worker;
    dense_job *job = arg;
    uint32_t d = job->step->cache->shape.head_dim;
    reduce_partials(dense_part(job, h, 0), job->n_splits, d, job->o + (size_t)h * d);
}

fasa_status fasa__cpu_dense(fasa_exec *exec, const fasa_step *step)
{
    const fasa_kv_cache *c = step->cache;
    uint32_t workers = fasa__pool_size(exec->ctx->pool);
    /* enough splits to keep every worker busy, each at least DENSE_CHUNK tokens */
    uint32_t want = (2 * workers + c->shape.n_kv_heads - 1) / c->shape.n_kv_heads;
    uint32_t max_by_len = (step->L + DENSE_CHUNK - 1) / DENSE_CHUNK;
    uint32_t n_splits = want < max_by_len ? want : max_by_len;
    if (n_splits < 1) n_splits = 1;
    if (n_splits > FASA_CPU_MAX_SPLITS) n_splits = FASA_CPU_MAX_SPLITS;
    dense_job job = {step, c->impl, step_q(step), step_o(step), n_splits, (step->L + n_splits - 1) / n_splits};
    job.n_splits = (step->L + job.split_len - 1) / job.split_len;
    fasa__pool_run(exec->ctx->pool, c->shape.n_kv_heads * job.n_splits, dense_split, &job);
    fasa__pool_run(exec->ctx->pool, c->shape.n_q_heads, dense_reduce, &job);
    finish_o(step);
    return FASA_OK;
}
