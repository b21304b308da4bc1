/* Exact top-k (src/select.c) against a sort, over lengths 2^i and 2^i+11
 * up to 2^20, budgets around powers of two, tie-heavy, constant and
 * NaN/Inf/-0 data, and inputs built to defeat the sampled fast path. */
#include "check.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct { float v; uint32_t i; } item;

/* Descending by value with NaN lowest and -0 == +0, then ascending index. */
static int rank_cmp(const void *a, const void *b)
{
    const item *x = a, *y = b;
    bool xn = isnan(x->v), yn = isnan(y->v);
    if (xn != yn) return xn ? 1 : -1;
    if (!xn && x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static int int_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static uint64_t rng = 88172645463325252ull;
static uint32_t next_u32(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

enum data_kind { DISTINCT, TIES, CONSTANT, SPECIAL, ANTI_SAMPLE, N_KINDS };
static const char *kind_name[] = {"distinct", "ties", "constant", "special", "anti-sample"};

static void fill(float *x, uint32_t n, enum data_kind kind)
{
    for (uint32_t j = 0; j < n; j++) {
        switch (kind) {
        case DISTINCT: x[j] = (float)j + 0.5f; break;
        case TIES: x[j] = (float)(next_u32() % 97); break;
        case CONSTANT: x[j] = 3.0f; break;
        case SPECIAL: {
            uint32_t r = next_u32() % 20;
            x[j] = r == 0 ? NAN : r == 1 ? INFINITY : r == 2 ? -INFINITY : r == 3 ? -0.0f : r == 4 ? 0.0f
                                                                           : (float)(next_u32() % 50) - 25.0f;
            break;
        }
        case ANTI_SAMPLE: /* the sampled positions are huge, everything else tiny */
            x[j] = ((uint64_t)j * 1024u % n) < 1024u ? 1e6f + (float)j : -(float)(next_u32() % 1000);
            break;
        default: break;
        }
    }
    if (kind == DISTINCT) /* shuffle the distinct values */
        for (uint32_t j = n; j > 1; j--) {
            uint32_t r = next_u32() % j;
            float t = x[j - 1]; x[j - 1] = x[r]; x[r] = t;
        }
}

static void check_row(const float *x, uint32_t n, const item *ranked, const uint32_t *ks, size_t n_ks,
                      uint32_t *scratch, int32_t *got, int32_t *want, const char *kind)
{
    for (size_t ki = 0; ki < n_ks; ki++) {
        uint32_t k = ks[ki];
        uint32_t m = fasa__select_topk(x, n, k, scratch, got);
        uint32_t expect = k < n ? k : n;
        for (uint32_t i = 0; i < expect; i++) want[i] = (int32_t)ranked[i].i;
        qsort(want, expect, sizeof *want, int_cmp);
        bool same = m == expect && memcmp(got, want, expect * sizeof *got) == 0;
        bool ascending = true;
        for (uint32_t i = 1; i < m; i++) ascending &= got[i] > got[i - 1];
        CHECK(same && ascending, "n=%u k=%u data=%s: selection differs from the sort (count %u vs %u)", n, k,
              kind, m, expect);
    }
}

int main(void)
{
    const uint32_t ks[] = {1, 7, 100, 256, 1023, 1024, 1025, 2047, 2048};
    uint32_t max_n = (1u << 20) + 11;
    float *x = malloc(max_n * sizeof *x);
    item *ranked = malloc(max_n * sizeof *ranked);
    uint32_t *scratch = malloc(3 * (size_t)max_n * sizeof *scratch);
    int32_t *got = malloc(max_n * sizeof *got), *want = malloc(max_n * sizeof *want);
    for (uint32_t e = 0; e <= 20; e++)
        for (uint32_t extra = 0; extra <= 11; extra += 11)
            for (int kind = 0; kind < N_KINDS; kind++) {
                uint32_t n = (1u << e) + extra;
                if (e > 16 && kind != DISTINCT && kind != ANTI_SAMPLE && kind != TIES) continue;
                fill(x, n, (enum data_kind)kind);
                for (uint32_t j = 0; j < n; j++) ranked[j] = (item){x[j], j};
                qsort(ranked, n, sizeof *ranked, rank_cmp);
                check_row(x, n, ranked, ks, sizeof ks / sizeof ks[0], scratch, got, want, kind_name[kind]);
            }
    /* order-preserving key: the spec's ordering */
    CHECK(fasa__score_key(-0.0f) == fasa__score_key(0.0f), "-0 and +0 must be equal keys");
    CHECK(fasa__score_key(NAN) < fasa__score_key(-INFINITY), "NaN must rank below -Inf");
    CHECK(fasa__score_key(-INFINITY) < fasa__score_key(-1e30f), "-Inf below finite");
    CHECK(fasa__score_key(1e30f) < fasa__score_key(INFINITY), "+Inf above finite");
    CHECK(fasa__score_key(-2.0f) < fasa__score_key(-1.0f) && fasa__score_key(1.0f) < fasa__score_key(2.0f),
          "keys must follow the float order");
    free(x); free(ranked); free(scratch); free(got); free(want);
    return check_done("test_topk");
}
