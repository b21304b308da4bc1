/* fp64 reference decode step (see ref64.h). */
#include "ref64.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ref_round_half(double x)
{
    if (x == 0 || !isfinite(x)) return x;
    double ax = fabs(x);
    if (ax >= 65520.0) return copysign(INFINITY, x); /* halfway to 2^16 and up */
    int e;
    frexp(ax, &e); /* ax = m * 2^e, m in [0.5, 1) */
    /* 11 significant bits for normals; a fixed 2^-24 step below 2^-14 */
    int ulp_exp = e - 11 < -24 ? -24 : e - 11;
    return copysign(ldexp(nearbyint(ldexp(ax, -ulp_exp)), ulp_exp), x);
}

uint16_t ref_half_bits(double x)
{
    double h = ref_round_half(x), a = fabs(h);
    uint16_t sign = signbit(h) ? 0x8000u : 0;
    if (isnan(h)) return 0x7e00u;
    if (isinf(a)) return sign | 0x7c00u;
    if (a < 0x1p-14) return (uint16_t)(sign | (uint16_t)(a * 0x1p24)); /* zero and subnormals: m * 2^-24 */
    int e;
    double m = frexp(a, &e); /* a = (2m) * 2^(e-1), 2m in [1, 2) */
    return (uint16_t)(sign | (uint16_t)((e + 14) << 10) | (uint16_t)((2 * m - 1) * 1024));
}

double ref_round_bf16(double x)
{
    if (x == 0 || !isfinite(x)) return x;
    double ax = fabs(x);
    if (ax >= 0x1p128 - 0x1p119) return copysign(INFINITY, x); /* halfway to 2^128 and up */
    int e;
    frexp(ax, &e);
    /* 8 significant bits for normals; a fixed 2^-133 step below 2^-126 */
    int ulp_exp = e - 8 < -133 ? -133 : e - 8;
    return copysign(ldexp(nearbyint(ldexp(ax, -ulp_exp)), ulp_exp), x);
}

uint16_t ref_bf16_bits(double x)
{
    float f = (float)ref_round_bf16(x); /* exact: a bf16 value is an fp32 value */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

uint32_t ref_rows(const ref_step *s) { return s->per_group ? s->n_kv_heads : s->n_q_heads; }

static double head_score(const ref_step *s, uint32_t h, uint32_t j, double *mag)
{
    uint32_t d = s->head_dim, g = h / (s->n_q_heads / s->n_kv_heads);
    const double *q = s->q + (size_t)h * d, *k = s->k + ((size_t)j * s->n_kv_heads + g) * d;
    double acc = 0, m = 0;
    uint32_t n = s->dims ? 2 * s->n_tip : d;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = s->dims ? s->dims[(size_t)h * 2 * s->n_tip + i] : i;
        acc += q[c] * k[c];
        m += fabs(q[c] * k[c]);
    }
    *mag += m;
    return acc;
}

void ref_scores(const ref_step *s, double *scores, double *magnitude)
{
    uint32_t G = s->n_q_heads / s->n_kv_heads;
    for (uint32_t r = 0; r < ref_rows(s); r++)
        for (uint32_t j = 0; j < s->L; j++) {
            double acc = 0, mag = 0;
            if (s->per_group)
                for (uint32_t h = r * G; h < (r + 1) * G; h++) acc += head_score(s, h, j, &mag);
            else
                acc = head_score(s, r, j, &mag);
            scores[(size_t)r * s->L + j] = acc;
            if (magnitude) magnitude[(size_t)r * s->L + j] = mag;
        }
}

typedef struct { double score; int32_t index; } ranked;

/* Descending score, then ascending index. */
static int by_rank(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int by_index(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Ranks the non-forced tokens of a row; returns their count. */
static uint32_t rank_row(const ref_step *s, const double *scores, uint32_t row, ranked *out)
{
    uint32_t n = 0;
    for (uint32_t j = s->n_sink; j < s->L - s->n_recent; j++)
        out[n++] = (ranked){scores[(size_t)row * s->L + j], (int32_t)j};
    qsort(out, n, sizeof *out, by_rank);
    return n;
}

void ref_select(const ref_step *s, const double *scores, int32_t *sel)
{
    ranked *buf = malloc(sizeof *buf * (s->L ? s->L : 1));
    for (uint32_t r = 0; r < ref_rows(s); r++) {
        int32_t *out = sel + (size_t)r * s->n_fac;
        uint32_t w = 0;
        for (uint32_t j = 0; j < s->n_sink; j++) out[w++] = (int32_t)j;
        for (uint32_t j = s->L - s->n_recent; j < s->L; j++) out[w++] = (int32_t)j;
        uint32_t forced = w, n = rank_row(s, scores, r, buf);
        for (uint32_t i = 0; w < s->n_fac && i < n; i++) out[w++] = buf[i].index;
        qsort(out + forced, w - forced, sizeof *out, by_index);
    }
    free(buf);
}

double ref_threshold(const ref_step *s, const double *scores, uint32_t row)
{
    ranked *buf = malloc(sizeof *buf * (s->L ? s->L : 1));
    uint32_t n = rank_row(s, scores, row, buf), k = s->n_fac - s->n_sink - s->n_recent;
    double t = k == 0 || n == 0 ? INFINITY : buf[(k < n ? k : n) - 1].score;
    free(buf);
    return t;
}

void ref_attend(const ref_step *s, const int32_t *idx, uint32_t count, double *o)
{
    uint32_t d = s->head_dim, G = s->n_q_heads / s->n_kv_heads;
    uint32_t n = idx ? count : s->L;
    double *logit = malloc(sizeof *logit * (n ? n : 1));
    for (uint32_t h = 0; h < s->n_q_heads; h++) {
        uint32_t g = h / G, row = s->per_group ? g : h;
        const int32_t *list = idx ? idx + (size_t)row * count : NULL;
        const double *q = s->q + (size_t)h * d;
        double mx = -INFINITY;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t j = list ? (uint32_t)list[i] : i;
            const double *k = s->k + ((size_t)j * s->n_kv_heads + g) * d;
            double acc = 0;
            for (uint32_t c = 0; c < d; c++) acc += q[c] * k[c];
            logit[i] = acc / sqrt((double)d);
            if (logit[i] > mx) mx = logit[i];
        }
        double sum = 0;
        for (uint32_t i = 0; i < n; i++) sum += (logit[i] = exp(logit[i] - mx));
        double *oh = o + (size_t)h * d;
        memset(oh, 0, d * sizeof *oh);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t j = list ? (uint32_t)list[i] : i;
            const double *v = s->v + ((size_t)j * s->n_kv_heads + g) * d;
            for (uint32_t c = 0; c < d; c++) oh[c] += logit[i] / sum * v[c];
        }
    }
    free(logit);
}
