/* Host emulation of the CUDA reference kernels' index math (runs without a
 * GPU, in every build).
 *
 * The top-k kernels of cuda_ref/topk.cu are replayed block by block and
 * thread by thread with the very functions they call from
 * cuda_ref/fasa_cuda_logic.h (key, digit pick, tile sizes, per-thread runs,
 * output slots); only the CUDA primitives are replaced by their sequential
 * meaning (atomicAdd on a counter, a block-wide exclusive scan, a block
 * sum).  Each emulated selection must equal the CPU backend's
 * (fasa__select_topk) as a set, fill every output slot exactly once and
 * keep the forced tokens in front, over lengths around every tile
 * boundary, budgets up to 8192 and distinct, tied, constant and NaN/Inf/-0
 * data.  Also checked: the key equals fasa__score_key bit for bit, the
 * attention units cover each query head exactly once, and the split-K
 * plans cover every token with non-empty splits within the partial slots,
 * paged caches' token-to-row map equals fasa__row_of, and the bf16
 * conversions of the kernels equal src/half.c's. */
#include "../check.h"
#include "fasa_cuda_logic.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t next_u32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void check_keys(void)
{
    const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f,
                             3.4e38f, -3.4e38f, 1.17549435e-38f};
    uint32_t bad = 0;
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        bad += fasa_tk_key(special[i]) != fasa__score_key(special[i]);
    for (uint32_t i = 0; i < 1000000; i++) {
        float f = bits_float(next_u32() ^ (next_u32() << 21));
        bad += fasa_tk_key(f) != fasa__score_key(f);
    }
    CHECK(bad == 0, "%u keys differ from fasa__score_key", bad);
    CHECK(fasa_tk_key(NAN) == 0 && fasa_tk_key(-INFINITY) > 0, "NaN must rank below -Inf");
    CHECK(fasa_tk_key(-0.0f) == fasa_tk_key(0.0f), "-0 and +0 must tie");
}

/* fasa_tip_is_nan picks out exactly the NaN scores the TIP kernel
 * recomputes over the head's own dims: every NaN payload and sign, never an
 * infinity or a number. */
static void check_tip_nan(void)
{
    const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f,
                             3.4e38f, -3.4e38f, 0.0f * INFINITY};
    uint32_t bad = 0;
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        bad += !fasa_tip_is_nan(special[i]) != !isnan(special[i]);
    for (uint32_t i = 0; i < 1000000; i++) {
        uint32_t u = next_u32();
        if (i & 1) u |= 0x7f800000u; /* half of them NaN or Inf */
        float f = bits_float(u);
        bad += !fasa_tip_is_nan(f) != !isnan(f);
    }
    CHECK(bad == 0, "%u values where fasa_tip_is_nan disagrees with isnan", bad);
    CHECK(fasa_tip_is_nan(bits_float(0x7f800001u)) && fasa_tip_is_nan(bits_float(0xffc00000u)) &&
              !fasa_tip_is_nan(bits_float(0x7f800000u)) && !fasa_tip_is_nan(bits_float(0xff800000u)),
          "NaN payloads are NaN, infinities are not");
}

/* ------------------------------------------------------------------------ */
/* The top-k launch sequence of fasa_cu_topk, one row, emulated              */
/* ------------------------------------------------------------------------ */

typedef struct emu_out {
    int32_t *sel;                /* [forced + k] */
    uint32_t *writes;            /* per slot: how often it was written */
} emu_out;

static void put(emu_out *o, uint32_t slot, int32_t token)
{
    o->sel[slot] = token;
    o->writes[slot]++;
}

/* topk_init: forced tokens in front, state reset. */
static void emu_init(const float *x, uint32_t L, uint32_t n_sink, uint32_t n_recent, uint32_t k, uint32_t *st,
                     emu_out *o)
{
    (void)x;
    fasa_tk_init(st, k);
    for (uint32_t i = 0; i < n_sink + n_recent; i++) put(o, i, (int32_t)(i < n_sink ? i : L - n_recent + (i - n_sink)));
}

/* topk_hist over every block and thread, then topk_scan. */
static void emu_pass(const float *win, uint32_t n_cand, uint32_t shift, uint32_t *st)
{
    if (st[FASA_TK_DONE]) return;
    uint32_t hist[256] = {0};
    for (uint32_t b = 0; b < fasa_tk_n_hist_blocks(n_cand); b++) {
        uint32_t t0 = b * FASA_TK_HIST_TILE;
        uint32_t t1 = t0 + FASA_TK_HIST_TILE < n_cand ? t0 + FASA_TK_HIST_TILE : n_cand;
        for (uint32_t tid = 0; tid < FASA_TK_THREADS; tid++)
            for (uint32_t i = t0 + tid; i < t1; i += FASA_TK_THREADS) {
                uint32_t key = fasa_tk_key(win[i]);
                if (fasa_tk_matches(key, st)) hist[fasa_tk_digit(key, shift)]++;
            }
    }
    fasa_tk_pick(hist, shift, st);
}

/* topk_count: keys above the threshold through the atomic counter. */
static void emu_count(const float *win, uint32_t lo, uint32_t n_cand, uint32_t te, uint32_t *st, uint32_t *tiles,
                      uint32_t forced, emu_out *o)
{
    for (uint32_t t = 0; t < fasa_tk_n_tiles(n_cand, te); t++) {
        uint32_t start = t * te, n = te < n_cand - start ? te : n_cand - start, eq = 0;
        for (uint32_t tid = 0; tid < FASA_TK_THREADS; tid++)
            for (uint32_t i = tid; i < n; i += FASA_TK_THREADS) {
                int c = fasa_tk_class(fasa_tk_key(win[start + i]), st);
                if (c > 0) put(o, forced + st[FASA_TK_GT]++, (int32_t)(lo + start + i));
                else if (c == 0) eq++;
            }
        tiles[t] = eq;
    }
}

/* topk_emit: ties in index order through the tile prefix and the block scan. */
static void emu_emit(const float *win, uint32_t lo, uint32_t n_cand, uint32_t te, const uint32_t *st,
                     const uint32_t *tiles, uint32_t forced, emu_out *o)
{
    uint32_t mine[FASA_TK_THREADS];
    for (uint32_t t = 0; t < fasa_tk_n_tiles(n_cand, te); t++) {
        uint32_t before = 0;
        for (uint32_t i = 0; i < t; i++) before += tiles[i];
        if (!fasa_tk_tile_emits(tiles[t], before, st)) continue;
        uint32_t start = t * te, n = te < n_cand - start ? te : n_cand - start;
        for (uint32_t tid = 0; tid < FASA_TK_THREADS; tid++) {
            uint32_t a, b;
            fasa_tk_run(n, tid, &a, &b);
            mine[tid] = 0;
            for (uint32_t i = a; i < b; i++) mine[tid] += fasa_tk_class(fasa_tk_key(win[start + i]), st) == 0;
        }
        uint32_t excl = 0;
        for (uint32_t tid = 0; tid < FASA_TK_THREADS; tid++) {
            uint32_t a, b, rank = before + excl;
            fasa_tk_run(n, tid, &a, &b);
            for (uint32_t i = a; i < b && rank < st[FASA_TK_NEED]; i++) {
                if (fasa_tk_class(fasa_tk_key(win[start + i]), st) != 0) continue;
                put(o, forced + fasa_tk_tie_slot(st, rank), (int32_t)(lo + start + i));
                rank++;
            }
            excl += mine[tid];
        }
    }
}

static void emulate(const float *x, uint32_t L, uint32_t n_sink, uint32_t n_recent, uint32_t n_fac, emu_out *o,
                    uint32_t *tiles)
{
    uint32_t st[FASA_TK_WORDS], forced = n_sink + n_recent, k = n_fac - forced;
    uint32_t n_cand = L - forced;
    const float *win = x + n_sink;
    emu_init(x, L, n_sink, n_recent, k, st, o);
    if (k == 0) return;
    for (int shift = 24; shift >= 0; shift -= 8) emu_pass(win, n_cand, (uint32_t)shift, st);
    uint32_t te = fasa_tk_tile(n_cand);
    CHECK(te % FASA_TK_THREADS == 0 && fasa_tk_n_tiles(n_cand, te) <= FASA_TK_MAX_TILES, "tiling of %u", n_cand);
    emu_count(win, n_sink, n_cand, te, st, tiles, forced, o);
    CHECK(st[FASA_TK_GT] == k - st[FASA_TK_NEED], "L=%u k=%u: %u keys above the threshold, expected %u", L, k,
          st[FASA_TK_GT], k - st[FASA_TK_NEED]);
    emu_emit(win, n_sink, n_cand, te, st, tiles, forced, o);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

enum { DISTINCT, TIES, CONSTANT, SPECIAL, HEAVY_TOP, N_KINDS };
static const char *kind_name[] = {"distinct", "ties", "constant", "special", "heavy-top"};

static void fill(float *x, uint32_t n, int kind)
{
    for (uint32_t j = 0; j < n; j++) {
        uint32_t r = next_u32();
        switch (kind) {
        case DISTINCT: x[j] = (float)j * 0.25f - 1000.0f; break;
        case TIES: x[j] = (float)(r % 29) - 14.0f; break;
        case CONSTANT: x[j] = -2.5f; break;
        case SPECIAL:
            r %= 16;
            x[j] = r == 0 ? NAN : r == 1 ? INFINITY : r == 2 ? -INFINITY : r == 3 ? -0.0f : r == 4 ? 0.0f
                                                                          : (float)(next_u32() % 9) - 4.0f;
            break;
        default: x[j] = r % 5 == 0 ? 7.0f : (float)(r % 1000) * -0.001f; /* many equal maxima */
        }
    }
    if (kind == DISTINCT)
        for (uint32_t j = n; j > 1; j--) {
            uint32_t r = next_u32() % j;
            float t = x[j - 1];
            x[j - 1] = x[r];
            x[r] = t;
        }
}

/* One (data, L, n_fac, sink, recent) case against the CPU selection. */
static void topk_case(const float *x, uint32_t L, uint32_t n_fac, uint32_t n_sink, uint32_t n_recent, int kind,
                      uint32_t *scratch, int32_t *ref, int32_t *got, uint32_t *writes, uint32_t *tiles)
{
    uint32_t forced = n_sink + n_recent, k = n_fac - forced;
    emu_out o = {got, writes};
    memset(writes, 0, n_fac * sizeof(uint32_t));
    emulate(x, L, n_sink, n_recent, n_fac, &o, tiles);
    uint32_t missing = 0, twice = 0;
    for (uint32_t i = 0; i < n_fac; i++) missing += writes[i] == 0, twice += writes[i] > 1;
    CHECK(missing == 0 && twice == 0, "%s L=%u n_fac=%u sink=%u recent=%u: %u slots empty, %u written twice",
          kind_name[kind], L, n_fac, n_sink, n_recent, missing, twice);
    /* the CPU backend: forced tokens, then the top-k of the window */
    uint32_t w = 0;
    for (uint32_t j = 0; j < n_sink; j++) ref[w++] = (int32_t)j;
    for (uint32_t j = L - n_recent; j < L; j++) ref[w++] = (int32_t)j;
    uint32_t n = fasa__select_topk(x + n_sink, L - forced, k, scratch, ref + w);
    for (uint32_t i = 0; i < n; i++) ref[w + i] += (int32_t)n_sink;
    CHECK(memcmp(ref, got, forced * 4) == 0, "%s L=%u: forced tokens differ", kind_name[kind], L);
    qsort(got + forced, k, 4, cmp_i32); /* the CPU's are ascending */
    uint32_t diff = 0;
    for (uint32_t i = forced; i < n_fac; i++) diff += ref[i] != got[i];
    CHECK(diff == 0, "%s L=%u n_fac=%u sink=%u recent=%u: %u of %u selected tokens differ from the CPU's",
          kind_name[kind], L, n_fac, n_sink, n_recent, diff, k);
}

static void check_topk(void)
{
    const uint32_t lengths[] = {2, 3, 8, 255, 256, 257, 2047, 2048, 2049, 4095, 4096, 4097, 8193, 65536 + 11,
                                300000, (1u << 20) + 11};
    const uint32_t budgets[] = {1, 7, 100, 256, 1023, 1024, 1025, 2047, 2048, 8192};
    uint32_t L_max = (1u << 20) + 11;
    float *x = malloc(L_max * sizeof(float));
    uint32_t *scratch = malloc(3 * (size_t)L_max * sizeof(uint32_t));
    int32_t *ref = malloc(FASA_MAX_N_FAC * 4), *got = malloc(FASA_MAX_N_FAC * 4);
    uint32_t *writes = malloc(FASA_MAX_N_FAC * 4), *tiles = malloc(FASA_TK_MAX_TILES * 4);
    uint32_t cases = 0;
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++)
        for (int kind = 0; kind < N_KINDS; kind++) {
            uint32_t L = lengths[li];
            bool big = L > 100000;
            fill(x, L, kind);
            for (size_t bi = 0; bi < sizeof budgets / sizeof budgets[0]; bi++) {
                uint32_t n_fac = budgets[bi];
                if (n_fac >= L || (big && bi % 3 != 0)) continue; /* sparse path only: L > n_fac */
                topk_case(x, L, n_fac, 0, 0, kind, scratch, ref, got, writes, tiles);
                if (n_fac >= 7) topk_case(x, L, n_fac, 2, 3, kind, scratch, ref, got, writes, tiles);
                if (n_fac >= 2 && !big) /* forced tokens fill the budget: k = 0 */
                    topk_case(x, L, n_fac, n_fac / 2, n_fac - n_fac / 2, kind, scratch, ref, got, writes, tiles);
                cases++;
            }
        }
    printf("top-k emulation: %u (data, L, n_fac) cases\n", cases);
    free(x), free(scratch), free(ref), free(got), free(writes), free(tiles);
}

/* ------------------------------------------------------------------------ */
/* Attention units and split-K plans                                         */
/* ------------------------------------------------------------------------ */

static void check_units(void)
{
    const uint32_t groups[] = {1, 2, 3, 4, 7, 8, 9, 16, 17, 64};
    const uint32_t kvs[] = {1, 2, 3, 8};
    for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++)
        for (size_t ki = 0; ki < sizeof kvs / sizeof kvs[0]; ki++) {
            uint32_t G = groups[gi], hkv = kvs[ki], hq = G * hkv;
            for (int per_head = 0; per_head < 2; per_head++) {
                uint8_t seen[1024] = {0};
                uint32_t n = fasa_cu_units(per_head, hq, hkv, G), bad = 0;
                for (uint32_t unit = 0; unit < n; unit++) {
                    fasa_cu_unit u = fasa_cu_unit_of(unit, per_head, G);
                    bad += u.nh == 0 || u.nh > FASA_CU_HEADS || u.g >= hkv;
                    bad += per_head ? u.row != u.h0 : u.row != u.g;
                    for (uint32_t h = u.h0; h < u.h0 + u.nh && h < 1024; h++) {
                        bad += h / G != u.g || h >= hq;
                        seen[h]++;
                    }
                }
                for (uint32_t h = 0; h < hq; h++) bad += seen[h] != 1;
                CHECK(bad == 0, "G=%u Hkv=%u per_head=%d: heads not covered exactly once (%u problems)", G, hkv,
                      per_head, bad);
            }
        }
}

static void check_plans(void)
{
    const uint32_t ns[] = {1, 2, 31, 32, 33, 127, 128, 129, 256, 2048, 4000, 8192, 70000, 131072, 524288,
                           1u << 20, 1u << 30};
    const uint32_t units[] = {1, 3, 8, 32, 64, 1024}, targets[] = {8, 1056}, pmaxes[] = {1, 31, 512};
    const uint32_t mins[] = {32, 128};
    uint32_t bad = 0, plans = 0;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof units / sizeof units[0]; b++)
            for (size_t c = 0; c < 2; c++)
                for (size_t d = 0; d < 3; d++)
                    for (size_t e = 0; e < 2; e++) {
                        uint32_t n = ns[a];
                        fasa_cu_split s = fasa_cu_plan_split(n, units[b], targets[c], pmaxes[d], mins[e]);
                        bool ok = s.n_splits >= 1 && s.n_splits <= pmaxes[d] && s.split_len >= 1 &&
                                  (uint64_t)s.split_len * s.n_splits >= n &&
                                  (uint64_t)(s.n_splits - 1) * s.split_len < n;
                        if (!ok && bad++ < 5)
                            fprintf(stderr, "plan n=%u units=%u: %u splits of %u\n", n, units[b], s.n_splits,
                                    s.split_len);
                        plans++;
                    }
    CHECK(bad == 0, "%u of %u split plans leave tokens out, make empty splits or exceed pmax", bad, plans);
    const uint32_t hqs[] = {1, 9, 32, 1024}, ds[] = {2, 64, 128, 512};
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 4; b++) {
            uint32_t p = fasa_cu_plan_pmax(hqs[a], ds[b]);
            uint64_t bytes = (uint64_t)hqs[a] * p * (ds[b] + 2) * 4;
            CHECK(p >= 1 && p <= FASA_CU_MAX_SPLITS && (p == 1 || bytes <= (64ull << 20)), "pmax(%u, %u) = %u",
                  hqs[a], ds[b], p);
        }
    for (uint64_t n = 1; n <= (1ull << 30); n = n * 3 + 1) {
        uint32_t te = fasa_tk_tile((uint32_t)n);
        CHECK(te % FASA_TK_THREADS == 0 && te >= 8 * FASA_TK_THREADS &&
              fasa_tk_n_tiles((uint32_t)n, te) <= FASA_TK_MAX_TILES, "tile for n=%llu", (unsigned long long)n);
    }
}

/* fasa_cu_row_at, the one place the kernels (attn.cu, tip.cu, the sync
 * kernel of append.cu) turn (KV head, token) into a K/V row: libfasa's own
 * arrays [Hkv][cap][d], and external token-major and head-major layouts,
 * padded too, put every row at its element offset, inside the span the
 * cache checks, and no two rows overlap. */
static void check_row_at(void)
{
    enum { HKV = 3, CAP = 5, D = 4 };
    const uint64_t strides[][2] = {{D, (uint64_t)CAP * D},            /* libfasa's own, head-major */
                                   {HKV * D, D},                      /* token-major (llama.cpp) */
                                   {HKV * (D + 2) + 2, D + 2},        /* token-major, padded */
                                   {D + 2, CAP * (D + 2) + 4}};       /* head-major, padded */
    for (size_t i = 0; i < sizeof strides / sizeof strides[0]; i++) {
        uint64_t ts = strides[i][0], hs = strides[i][1];
        uint64_t span = (CAP - 1) * ts + (HKV - 1) * hs + D;
        uint8_t used[256] = {0};
        bool ok = span <= sizeof used;
        for (uint32_t g = 0; ok && g < HKV; g++)
            for (uint32_t t = 0; ok && t < CAP; t++) {
                uint64_t at = fasa_cu_row_at(g, t, ts, hs);
                ok = at == t * ts + g * hs && at + D <= span;
                for (uint32_t c = 0; ok && c < D; c++) ok = used[at + c]++ == 0;
            }
        CHECK(ok, "layout %zu (ts %llu, hs %llu): rows misplaced or overlapping", i, (unsigned long long)ts,
              (unsigned long long)hs);
    }
    CHECK(fasa_cu_row_at(2, 7, 8, 1024) == 7 * 8 + 2 * 1024, "owned row of head 2, token 7");
    CHECK(fasa_cu_row_at(1, 0xffffffffu, 0xfffffffeull, 8) == 0xffffffffull * 0xfffffffeull + 8,
          "64-bit row offsets");
}

/* fasa_cu_token_row, where tip.cu and attn.cu map a sequence token of a
 * paged or shared cache to its row: fasa__row_of (src/internal.h) bit for
 * bit for every block size up to 2^12 over shuffled tables, a permutation of
 * the pool's rows when the table is one of its blocks, and row j without a
 * table (contiguous caches, whose kernels must not change). */
static void check_token_row(void)
{
    enum { POOL = 4096 };
    static uint32_t table[POOL], hit[POOL];
    uint32_t bad = 0, bad_perm = 0;
    for (uint32_t shift = 0; shift <= 12; shift++) {
        uint32_t n_blocks = POOL >> shift;
        for (uint32_t i = 0; i < n_blocks; i++) table[i] = i;
        for (uint32_t i = n_blocks; i > 1; i--) { /* Fisher-Yates */
            uint32_t j = next_u32() % i, t = table[i - 1];
            table[i - 1] = table[j];
            table[j] = t;
        }
        memset(hit, 0, sizeof hit);
        for (uint32_t j = 0; j < POOL; j++) {
            uint32_t r = fasa_cu_token_row(table, shift, j);
            bad += r != fasa__row_of(table, shift, j);
            if (r < POOL) hit[r]++;
            else bad_perm++;
        }
        for (uint32_t r = 0; r < POOL; r++) bad_perm += hit[r] != 1;
    }
    CHECK(bad == 0, "%u tokens map to other rows than fasa__row_of", bad);
    CHECK(bad_perm == 0, "%u rows of a full shuffled table are missed or hit twice", bad_perm);
    /* large block indices keep all 32 bits */
    uint32_t big[2] = {0x0fffffffu, 3u};
    CHECK(fasa_cu_token_row(big, 4, 5) == 0xfffffff5u && fasa_cu_token_row(big, 4, 17) == 0x31u,
          "block index shifted into the high bits");
    bad = 0;
    for (uint32_t i = 0; i < 100000; i++) {
        uint32_t j = next_u32();
        bad += fasa_cu_token_row(NULL, next_u32() % 13, j) != j;
    }
    CHECK(bad == 0, "%u tokens moved without a block table", bad);
}

/* The kernels' element types: the bf16 bit conversions they share with
 * the host (fasa_cuda_logic.h) equal src/half.c's for every fp32 pattern
 * (NaN included: quiet, sign and top payload kept) and every bf16 pattern,
 * and the type codes are the library's enum values. */
static void check_elements(void)
{
    uint32_t bad = 0;
    for (uint64_t w = 0; w < (1ull << 32); w += 3) {
        uint32_t u = (uint32_t)w;
        bad += fasa_cu_f32_bits_to_bf16(u) != fasa__float_to_bf16(bits_float(u));
    }
    CHECK(bad == 0, "%u fp32 patterns round to other bf16 bits than fasa__float_to_bf16", bad);
    bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        float got = bits_float(fasa_cu_bf16_to_f32_bits((uint16_t)b)), want = fasa__bf16_to_float((uint16_t)b);
        bad += memcmp(&got, &want, 4) != 0;
    }
    CHECK(bad == 0, "%u bf16 patterns widen differently", bad);
    CHECK((int)FASA_CU_F16 == (int)FASA_DTYPE_F16 && (int)FASA_CU_F32 == (int)FASA_DTYPE_F32 &&
              (int)FASA_CU_BF16 == (int)FASA_DTYPE_BF16,
          "storage type codes are the fasa_dtype values");
    CHECK((int)FASA_CU_IO_F32 == (int)FASA_IO_F32 && (int)FASA_CU_IO_F16 == (int)FASA_IO_F16 &&
              (int)FASA_CU_IO_BF16 == (int)FASA_IO_BF16,
          "io type codes are the fasa_io_type values");
    for (int t = FASA_IO_F32; t <= FASA_IO_BF16; t++)
        CHECK(fasa_cu_io_dtype(t) == (int)fasa__io_dtype((fasa_io_type)t), "io type %d maps to its storage type", t);
}

int main(void)
{
    check_elements();
    check_row_at();
    check_token_row();
    check_keys();
    check_tip_nan();
    check_units();
    check_plans();
    check_topk();
    return check_done("test_cuda_logic");
}
