/* Synthetic RoPE-rotated q/K/V generator (see synth.h). */
#include "synth.h"

#include <math.h>
#include <string.h>

uint64_t synth_next(synth_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float synth_uniform(synth_rng *r) { return (float)(synth_next(r) >> 40) * (1.0f / 16777216.0f); }

float synth_normal(synth_rng *r)
{
    float u1 = synth_uniform(r), u2 = synth_uniform(r);
    if (u1 < 1e-7f) u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

static uint32_t n_tip_of(const synth_desc *d) { return d->n_tip ? d->n_tip : (d->head_dim / 8 ? d->head_dim / 8 : 1); }
static float base_of(const synth_desc *d) { return d->rope_base > 0 ? d->rope_base : 10000.0f; }

/* Dims (a, b) of rotation pair i in the layout. */
static void pair_dims(const synth_desc *d, uint32_t i, uint32_t *a, uint32_t *b)
{
    if (d->layout == FASA_ROPE_NORM) { *a = 2 * i; *b = 2 * i + 1; }
    else { *a = i; *b = i + d->head_dim / 2; }
}

/* Planted pair indices for a head: n_tip distinct pairs drawn from the
 * low-frequency half (slow rotation, i >= d/4), seeded per group or head. */
static void planted_pairs(const synth_desc *d, uint32_t head, uint32_t *pairs)
{
    uint32_t G = d->n_q_heads / d->n_kv_heads, n_tip = n_tip_of(d), n_fc = d->head_dim / 2;
    uint32_t owner = d->per_head_dims ? head : head / G;
    synth_rng r = {d->seed * 7919u + owner * 104729u + 17u};
    uint32_t lo = n_fc / 2, span = n_fc - lo;
    bool taken[FASA_MAX_HEAD_DIM / 2] = {false};
    for (uint32_t i = 0; i < n_tip; i++) {
        /* fall back to the whole range when the low half is too small */
        uint32_t pool = n_tip <= span ? span : n_fc, start = n_tip <= span ? lo : 0, p;
        do p = start + (uint32_t)(synth_next(&r) % pool); while (taken[p]);
        taken[p] = true;
        pairs[i] = p;
    }
}

void synth_planted_dims(const synth_desc *d, uint16_t *dims)
{
    uint32_t n_tip = n_tip_of(d), pairs[FASA_MAX_HEAD_DIM / 2];
    for (uint32_t h = 0; h < d->n_q_heads; h++) {
        uint16_t *out = dims + (size_t)h * 2 * n_tip;
        planted_pairs(d, h, pairs);
        for (uint32_t i = 0; i < n_tip; i++) {
            uint32_t a, b;
            pair_dims(d, pairs[i], &a, &b);
            out[2 * i] = (uint16_t)a;
            out[2 * i + 1] = (uint16_t)b;
        }
        for (uint32_t i = 1; i < 2 * n_tip; i++)
            for (uint32_t k = i; k > 0 && out[k] < out[k - 1]; k--) {
                uint16_t t = out[k]; out[k] = out[k - 1]; out[k - 1] = t;
            }
    }
}

/* Rotates every pair of one head vector by pos * theta_i. */
static void apply_rope(const synth_desc *d, float *x, uint32_t pos)
{
    uint32_t n_fc = d->head_dim / 2;
    for (uint32_t i = 0; i < n_fc; i++) {
        double theta = pow((double)base_of(d), -2.0 * i / d->head_dim), ang = (double)pos * theta;
        float c = (float)cos(ang), s = (float)sin(ang);
        uint32_t a, b;
        pair_dims(d, i, &a, &b);
        float xa = x[a], xb = x[b];
        x[a] = xa * c - xb * s;
        x[b] = xa * s + xb * c;
    }
}

/* Marks the dims planted in the union of KV group g. */
static void group_mask(const synth_desc *d, uint32_t g, bool *mask)
{
    uint32_t G = d->n_q_heads / d->n_kv_heads, n_tip = n_tip_of(d), pairs[FASA_MAX_HEAD_DIM / 2];
    memset(mask, 0, d->head_dim * sizeof(bool));
    for (uint32_t h = g * G; h < (g + 1) * G; h++) {
        planted_pairs(d, h, pairs);
        for (uint32_t i = 0; i < n_tip; i++) {
            uint32_t a, b;
            pair_dims(d, pairs[i], &a, &b);
            mask[a] = mask[b] = true;
        }
    }
}

/* One token's key and value row of KV head g, from a generator seeded by
 * (seed, g, t), so any token range can be produced on its own. */
static void key_row(const synth_desc *d, uint32_t g, uint32_t t, const bool *mask, float *kr, float *vr)
{
    synth_rng r = {d->seed * 0x2545f4914f6cdd1dull + (uint64_t)g * 0x100000001b3ull + t};
    synth_next(&r);
    for (uint32_t c = 0; c < d->head_dim; c++) {
        if (d->kind == SYNTH_INTEGER) {
            kr[c] = (float)((int)(synth_next(&r) % 5) - 2);
            if (vr) vr[c] = (float)((int)(synth_next(&r) % 9) - 4) * 0.25f;
        } else {
            float scale = d->kind == SYNTH_PLANTED && !mask[c] ? 0.25f : 1.0f;
            kr[c] = synth_normal(&r) * scale;
            float vv = synth_normal(&r);
            if (vr) vr[c] = vv;
        }
    }
    if (d->kind != SYNTH_INTEGER) apply_rope(d, kr, t);
}

void synth_keys(const synth_desc *d, uint32_t first, uint32_t n, float *k, float *v)
{
    uint32_t dim = d->head_dim, hkv = d->n_kv_heads;
    bool mask[FASA_MAX_HEAD_DIM];
    for (uint32_t g = 0; g < hkv; g++) {
        group_mask(d, g, mask);
        for (uint32_t t = 0; t < n; t++)
            key_row(d, g, first + t, mask, k + ((size_t)t * hkv + g) * dim, v + ((size_t)t * hkv + g) * dim);
    }
}

void synth_query(const synth_desc *d, uint32_t pos, uint64_t step, float *q)
{
    uint32_t dim = d->head_dim, G = d->n_q_heads / d->n_kv_heads, n_tip = n_tip_of(d);
    uint32_t n_targets = d->n_targets ? d->n_targets : 16, pairs[FASA_MAX_HEAD_DIM / 2];
    for (uint32_t h = 0; h < d->n_q_heads; h++) {
        synth_rng r = {d->seed * 131u + step * 7777777u + h * 65537u + 3u};
        float *qh = q + (size_t)h * dim;
        if (d->kind == SYNTH_INTEGER) {
            for (uint32_t c = 0; c < dim; c++) qh[c] = (float)((int)(synth_next(&r) % 5) - 2);
            continue;
        }
        for (uint32_t c = 0; c < dim; c++) qh[c] = synth_normal(&r);
        if (d->kind == SYNTH_GAUSSIAN) continue;
        /* planted chunks: the sum of some earlier keys' (rotated) planted dims,
         * so these chunks decide which tokens the query matches */
        planted_pairs(d, h, pairs);
        for (uint32_t i = 0; i < n_tip; i++) {
            uint32_t a, b;
            pair_dims(d, pairs[i], &a, &b);
            qh[a] = qh[b] = 0.0f;
        }
        bool mask[FASA_MAX_HEAD_DIM];
        float kr[FASA_MAX_HEAD_DIM];
        group_mask(d, h / G, mask);
        for (uint32_t t = 0; t < n_targets; t++) {
            uint32_t j = (uint32_t)(synth_next(&r) % (pos + 1));
            key_row(d, h / G, j, mask, kr, NULL);
            for (uint32_t i = 0; i < n_tip; i++) {
                uint32_t a, b;
                pair_dims(d, pairs[i], &a, &b);
                qh[a] += kr[a];
                qh[b] += kr[b];
            }
        }
    }
}
