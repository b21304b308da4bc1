/* Exact top-k on the host: MSD radix select over order-preserving keys
 * (docs/SPEC.md §8), ties to the lowest index, NaN below everything.
 * Used by the CPU backend's topk kernel and by the calibrator. */
#include "internal.h"

#include <math.h>
#include <string.h>

uint32_t fasa__score_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0;   /* NaN ranks lowest */
    if (u == 0x80000000u) u = 0;                      /* -0 equals +0 */
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Finds the k-th largest key among keys[cand[0..n)] (or keys[0..n) when cand
 * is NULL): returns it and sets *n_greater to the count of keys above it.
 * Compacts survivors into cand_out after the first digit. */
static uint32_t radix_threshold(const uint32_t *keys, uint32_t n, uint32_t k, uint32_t *cand,
                                uint32_t *n_greater)
{
    uint32_t prefix = 0, prefix_mask = 0, above = 0;
    uint32_t n_cand = n;
    bool compacted = false;
    for (int shift = 24; shift >= 0; shift -= 8) {
        uint32_t hist[256] = {0};
        if (!compacted) {
            for (uint32_t j = 0; j < n; j++)
                if ((keys[j] & prefix_mask) == prefix) hist[(keys[j] >> shift) & 255u]++;
        } else {
            for (uint32_t c = 0; c < n_cand; c++) hist[(keys[cand[c]] >> shift) & 255u]++;
        }
        /* scan from the top bin for the one holding the k-th largest */
        uint32_t bin = 255, need = k - above;
        for (;; bin--) {
            if (hist[bin] >= need) break;
            need -= hist[bin];
            above += hist[bin];
        }
        prefix |= bin << shift;
        prefix_mask |= 255u << shift;
        /* keep only the survivors for the next digit */
        uint32_t w = 0;
        if (!compacted) {
            for (uint32_t j = 0; j < n; j++)
                if ((keys[j] & prefix_mask) == prefix) cand[w++] = j;
            compacted = true;
        } else {
            for (uint32_t c = 0; c < n_cand; c++)
                if ((keys[cand[c]] & prefix_mask) == prefix) cand[w++] = cand[c];
        }
        n_cand = w;
    }
    *n_greater = above;
    return prefix;
}

/* Emits, in ascending index order, the k largest of the keys (their
 * indices are idx[i], or i when idx is NULL): all above the threshold, then
 * the lowest-index keys equal to it. */
static uint32_t emit(const uint32_t *keys, const uint32_t *idx, uint32_t n, uint32_t k, uint32_t *tmp,
                     int32_t *out)
{
    uint32_t n_greater = 0;
    uint32_t tau = radix_threshold(keys, n, k, tmp, &n_greater);
    uint32_t ties_left = k - n_greater, w = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t key = keys[i];
        if (key > tau || (key == tau && ties_left > 0)) {
            if (key == tau) ties_left--;
            out[w++] = (int32_t)(idx ? idx[i] : i);
        }
    }
    return w;
}

#define SAMPLES 1024u

/* A key that at least k of the n scores probably reach: the right rank of
 * an evenly spaced sample, with a safety margin.  Only a guess: the caller
 * checks that enough candidates pass and falls back otherwise. */
static uint32_t sampled_floor(const float *x, uint32_t n, uint32_t k, uint32_t *sample, uint32_t *tmp)
{
    for (uint32_t i = 0; i < SAMPLES; i++) sample[i] = fasa__score_key(x[(uint64_t)i * n / SAMPLES]);
    double expect = (double)k * SAMPLES / n;
    uint32_t rank = (uint32_t)(expect * 1.25 + 3.0 * sqrt(expect)) + 4;
    if (rank > SAMPLES) rank = SAMPLES;
    uint32_t n_greater;
    return radix_threshold(sample, SAMPLES, rank, tmp, &n_greater);
}

/* Keeps (key, index) of every score whose key reaches floor_key, in index
 * order; returns the count. */
static uint32_t filter_scalar(const float *x, uint32_t n, uint32_t floor_key, uint32_t *keys, uint32_t *idx)
{
    uint32_t c = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t key = fasa__score_key(x[j]);
        if (key >= floor_key) {
            keys[c] = key;
            idx[c++] = j;
        }
    }
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* The same filter, eight scores at a time: the keys are computed with
 * integer vector ops and only the (rare) survivors leave the registers. */
__attribute__((target("avx2"))) static uint32_t filter_avx2(const float *x, uint32_t n, uint32_t floor_key,
                                                            uint32_t *keys, uint32_t *idx)
{
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i top = _mm256_set1_epi32((int)0x80000000u);
    const __m256i floor_s = _mm256_set1_epi32((int)(floor_key ^ 0x80000000u));
    uint32_t c = 0, j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(x + j));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        u = _mm256_andnot_si256(_mm256_cmpeq_epi32(u, top), u);              /* -0 -> +0 */
        __m256i key = _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31), top));
        key = _mm256_andnot_si256(nan, key);                                  /* NaN -> 0 */
        /* key >= floor as unsigned: not (floor > key) on sign-flipped values */
        __m256i below = _mm256_cmpgt_epi32(floor_s, _mm256_xor_si256(key, top));
        uint32_t keep = ~(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(below)) & 0xffu;
        if (!keep) continue;
        uint32_t lane_keys[8];
        _mm256_storeu_si256((__m256i *)lane_keys, key);
        for (; keep; keep &= keep - 1) {
            uint32_t lane = (uint32_t)__builtin_ctz(keep);
            keys[c] = lane_keys[lane];
            idx[c++] = j + lane;
        }
    }
    uint32_t tail = filter_scalar(x + j, n - j, floor_key, keys + c, idx + c);
    for (uint32_t i = 0; i < tail; i++) idx[c + i] += j;
    return c + tail;
}
#endif

static uint32_t filter(const float *x, uint32_t n, uint32_t floor_key, uint32_t *keys, uint32_t *idx)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx2")) return filter_avx2(x, n, floor_key, keys, idx);
#endif
    return filter_scalar(x, n, floor_key, keys, idx);
}

uint32_t fasa__select_topk(const float *x, uint32_t n, uint32_t k, uint32_t *scratch, int32_t *out)
{
    if (k >= n) { /* everything is selected */
        for (uint32_t j = 0; j < n; j++) out[j] = (int32_t)j;
        return n;
    }
    if (k == 0) return 0;
    uint32_t *keys = scratch, *idx = scratch + n, *tmp = scratch + 2 * (size_t)n;
    if (n >= 8 * SAMPLES && (uint64_t)k * 16 <= n) {
        /* one pass keeps only the candidates at or above a sampled floor;
         * if at least k pass, the exact top-k is among them */
        uint32_t floor_key = sampled_floor(x, n, k, keys, tmp);
        uint32_t c = filter(x, n, floor_key, keys, idx);
        if (c >= k) return emit(keys, idx, c, k, tmp, out);
    }
    for (uint32_t j = 0; j < n; j++) keys[j] = fasa__score_key(x[j]);
    return emit(keys, NULL, n, k, tmp, out);
}
