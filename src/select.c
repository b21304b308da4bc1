/* Exact top-k on the host: MSD radix select over order-preserving keys
 * (GPU_NOTES §5), ties to the lowest index, NaN below everything.
 * Used by the CPU backend's topk kernel and by the calibrator. */
#include "internal.h"

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

uint32_t fasa__select_topk(const float *x, uint32_t n, uint32_t k, uint32_t *keys_tmp,
                           uint32_t *cand_tmp, int32_t *out)
{
    if (k >= n) { /* everything is selected */
        for (uint32_t j = 0; j < n; j++) out[j] = (int32_t)j;
        return n;
    }
    if (k == 0) return 0;
    for (uint32_t j = 0; j < n; j++) keys_tmp[j] = fasa__score_key(x[j]);
    uint32_t n_greater = 0;
    uint32_t tau = radix_threshold(keys_tmp, n, k, cand_tmp, &n_greater);
    /* emit everything above tau and the lowest-index keys equal to it */
    uint32_t ties_left = k - n_greater, w = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t key = keys_tmp[j];
        if (key > tau || (key == tau && ties_left > 0)) {
            if (key == tau) ties_left--;
            out[w++] = (int32_t)j;
        }
    }
    return w;
}
