/*
 * cpu_host.c: the smallest complete libfasa host, on the plain-C CPU backend.
 *
 * What an engine does with libfasa, in order:
 *   1. create a context (here the CPU backend; FASA_BACKEND_AUTO picks a GPU
 *      when there is one),
 *   2. get a calibration: the dominant RoPE dims of every (layer, query head),
 *      normally a file written by `fasa calibrate` (pass its path as argv[1]),
 *      here a synthetic one built in memory with fasa_calibration_create,
 *   3. create a KV cache with that calibration,
 *   4. per generated token and layer: append the token's k and v (post-RoPE)
 *      and decode the layer's query (post-RoPE),
 *   5. check every status; fasa_context_last_error() says what was wrong.
 *
 * The example then checks what the library computed against docs/SPEC.md,
 * written out here in plain C: the output of a FASA step must equal exact
 * softmax attention over the tokens the step selected (max abs difference
 * <= 1e-4), and the default dense layer 0 must equal a DENSE-mode decode.
 *
 * Build against an installed libfasa:
 *   cc cpu_host.c $(pkg-config --cflags --libs fasa) -lm -o cpu_host
 * Exit status: 0 = pass, 1 = failure.
 */
#include <fasa.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The model: 2 layers, 8 query heads sharing 2 KV heads (GQA group of 4),
 * head dim 64, interleaved RoPE (llama.cpp GGUF tensors). */
#define N_LAYERS 2u
#define HQ 8u
#define HKV 2u
#define D 64u
#define N_TIP 8u          /* dominant frequency chunks per head: 16 of 64 dims */
#define PROMPT 1500u      /* tokens already in the cache before the decode step */
#define N_FAC 256u        /* token budget of a FASA step */
#define TOLERANCE 1e-4    /* max abs difference allowed in the checks */

/* Deterministic test data (xorshift64*).  K and q hold small integers, so
 * every TIP score is exact in fp32 and no near-tie makes the check fragile;
 * all values are exact in the fp16 cache. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
static float small_int(void) { return (float)((int)(next_u64() >> 33) % 5 - 2); }      /* -2..2 */
/* -1..1 in steps of 1/256: exact in fp16, so the fp16 cache stores V exactly */
static float uniform(void) { return (float)((int)(next_u64() >> 33) % 513 - 256) / 256.0f; }

static int failures = 0;
#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "FAIL: " __VA_ARGS__);                        \
            fprintf(stderr, "\n");                                        \
            failures++;                                                   \
        }                                                                 \
    } while (0)

/* Every libfasa call returns a fasa_status; on failure the context keeps a
 * message naming the bad field. */
static int ok(fasa_context *ctx, fasa_status st, const char *what)
{
    if (st == FASA_OK) return 1;
    fprintf(stderr, "FAIL: %s: %s: %s\n", what, fasa_status_string(st), fasa_context_last_error(ctx));
    failures++;
    return 0;
}

/* A synthetic calibration: query head h of layer l gets N_TIP distinct
 * frequency chunks; chunk j of an interleaved (NORM) head is dims 2j, 2j+1.
 * Dim lists must be ascending and hold whole chunks (docs/SPEC.md §3). */
static fasa_status synthetic_calibration(fasa_context *ctx, const fasa_model_shape *shape, fasa_calibration **out)
{
    static uint16_t dims[N_LAYERS][HQ][2 * N_TIP];
    for (uint32_t l = 0; l < N_LAYERS; l++)
        for (uint32_t h = 0; h < HQ; h++) {
            uint8_t used[D / 2] = {0};
            for (uint32_t i = 0; i < N_TIP; i++) used[(h + 3 * i + l) % (D / 2)] = 1; /* 3 and 32 coprime: distinct */
            uint32_t w = 0;
            for (uint32_t j = 0; j < D / 2; j++)
                if (used[j]) {
                    dims[l][h][w++] = (uint16_t)(2 * j);
                    dims[l][h][w++] = (uint16_t)(2 * j + 1);
                }
        }
    fasa_calibration_desc cd = {.shape = *shape, .n_tip = N_TIP, .dims = &dims[0][0][0],
                                .convention = FASA_FC_TRUE_PAIR, .source = "synthetic"};
    return fasa_calibration_create(ctx, &cd, out);
}

/* docs/SPEC.md §2, FAC: exact softmax attention of query head h over the
 * listed tokens, scale 1/sqrt(d), in double.  k and v are [L][Hkv][d]. */
static void attend_ref(const float *q, const float *k, const float *v, uint32_t h, const int32_t *tokens,
                       uint32_t n, double *o)
{
    uint32_t g = h / (HQ / HKV);
    double *logit = malloc(n * sizeof *logit), max = -INFINITY, sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        const float *kr = k + ((size_t)tokens[i] * HKV + g) * D;
        double dot = 0;
        for (uint32_t c = 0; c < D; c++) dot += (double)q[h * D + c] * kr[c];
        logit[i] = dot / sqrt((double)D);
        if (logit[i] > max) max = logit[i];
    }
    for (uint32_t i = 0; i < n; i++) sum += logit[i] = exp(logit[i] - max);
    memset(o, 0, D * sizeof *o);
    for (uint32_t i = 0; i < n; i++) {
        const float *vr = v + ((size_t)tokens[i] * HKV + g) * D;
        for (uint32_t c = 0; c < D; c++) o[c] += logit[i] / sum * vr[c];
    }
    free(logit);
}

int main(int argc, char **argv)
{
    const uint32_t L = PROMPT + 1; /* the prompt plus the token being decoded */
    const size_t row = (size_t)HKV * D, nq = (size_t)HQ * D;

    /* 1. Context.  Creation has no context to hold a message yet: pass a buffer. */
    char msg[512] = "";
    fasa_context_desc cdesc = {.backend = FASA_BACKEND_CPU, .n_threads = 0, /* 0 = all cores */
                               .error_message = msg, .error_message_size = sizeof msg};
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&cdesc, &ctx);
    if (st != FASA_OK) {
        fprintf(stderr, "FAIL: fasa_context_create: %s: %s\n", fasa_status_string(st), msg);
        return 1;
    }
    fasa_device_info dev;
    fasa_context_device(ctx, &dev);
    printf("libfasa %d.%d.%d, backend %s, device %s\n", FASA_VERSION_MAJOR, FASA_VERSION_MINOR, FASA_VERSION_PATCH,
           fasa_backend_name(fasa_context_backend(ctx)), dev.name);

    /* 2. Calibration: a file when given (checked against the model's shape),
     *    else the synthetic one. */
    fasa_model_shape shape = {.n_layers = N_LAYERS, .n_q_heads = HQ, .n_kv_heads = HKV, .head_dim = D,
                              .layout = FASA_ROPE_NORM};
    fasa_calibration *cal = NULL;
    if (argc > 1) st = fasa_calibration_load(ctx, argv[1], &shape, &cal);
    else st = synthetic_calibration(ctx, &shape, &cal);
    if (!ok(ctx, st, "calibration")) return 1;
    uint32_t u = 0;
    fasa_calibration_union_size(cal, 1, 0, &u);
    printf("calibration: %u dims per query head, union of KV head 0 in layer 1: %u of %u dims\n", 2 * N_TIP, u, D);

    /* 3. KV cache: fp16 storage (the default), layer 0 decoded densely (the
     *    default dense layer set {0}).  The cache copies what it needs from
     *    the calibration, which may be destroyed right away. */
    fasa_kv_cache_desc kdesc = {.shape = shape, .capacity = 2048, .calibration = cal};
    fasa_kv_cache *cache = NULL;
    if (!ok(ctx, fasa_kv_cache_create(ctx, &kdesc, &cache), "fasa_kv_cache_create")) return 1;
    fasa_calibration_destroy(cal);

    /* Model activations: k and v rows [L][Hkv][d], one query [Hq][d]. */
    float *k = malloc(L * row * sizeof(float)), *v = malloc(L * row * sizeof(float));
    float *q = malloc(nq * sizeof(float)), *o = malloc(nq * sizeof(float)), *o_dense = malloc(nq * sizeof(float));
    for (size_t i = 0; i < L * row; i++) k[i] = small_int(), v[i] = uniform();
    for (size_t i = 0; i < nq; i++) q[i] = small_int();

    /* 4a. Prefill: the engine ran dense attention over the prompt itself and
     *     hands libfasa the prompt's k/v, all tokens of a layer in one call. */
    for (uint32_t l = 0; l < N_LAYERS; l++)
        if (!ok(ctx, fasa_kv_cache_append(cache, l, PROMPT, k, v, FASA_DTYPE_F32), "prefill append")) return 1;

    /* 4b. One decode step: per layer, append the new token's k/v, then decode.
     *     The step keeps 4 sink and 28 recent tokens inside the 256-token budget. */
    fasa_decode_desc fasa = {.mode = FASA_MODE_FASA, .n_fac = N_FAC, .n_sink = 4, .n_recent = 28,
                             .gqa_select = FASA_GQA_PER_HEAD};
    int32_t *selected = malloc((size_t)HQ * N_FAC * sizeof(int32_t));
    for (uint32_t l = 0; l < N_LAYERS; l++) {
        if (!ok(ctx, fasa_kv_cache_append(cache, l, 1, k + PROMPT * row, v + PROMPT * row, FASA_DTYPE_F32),
                "decode append"))
            return 1;
        fasa_decode_outputs out = {.selected = selected, .selected_stride = N_FAC}; /* optional */
        if (!ok(ctx, fasa_decode_host(cache, l, &fasa, q, o, &out), "fasa_decode_host")) return 1;
        printf("layer %u: %s path, %u selection rows of %u tokens (L = %u)\n", l,
               out.path == FASA_PATH_SPARSE ? "sparse (TIP -> top-k -> FAC)" : "dense", out.n_rows,
               out.n_selected, L);

        if (l == 0) {
            /* Layer 0 is a dense layer: the same as an explicit DENSE decode. */
            fasa_decode_desc dense = {.mode = FASA_MODE_DENSE};
            if (!ok(ctx, fasa_decode_host(cache, 0, &dense, q, o_dense, NULL), "dense decode")) return 1;
            CHECK(out.path == FASA_PATH_DENSE && memcmp(o, o_dense, nq * sizeof(float)) == 0,
                  "layer 0 must take the dense path and equal a DENSE decode");
            continue;
        }
        /* Layer 1 is sparse: the output is exact attention over the selection,
         * which starts with the forced tokens (4 sinks, 28 recent). */
        CHECK(out.path == FASA_PATH_SPARSE && out.n_rows == HQ && out.n_selected == N_FAC, "layer 1 must be sparse");
        double max_diff = 0, ref[D];
        for (uint32_t h = 0; h < HQ; h++) {
            const int32_t *sel = selected + (size_t)h * N_FAC;
            CHECK(sel[0] == 0 && sel[3] == 3 && sel[4] == (int32_t)(L - 28) && sel[31] == (int32_t)(L - 1),
                  "head %u: forced tokens missing", h);
            attend_ref(q, k, v, h, sel, N_FAC, ref);
            for (uint32_t c = 0; c < D; c++) {
                double diff = fabs(ref[c] - o[h * D + c]);
                if (diff > max_diff) max_diff = diff;
            }
        }
        printf("layer 1: max |o - exact attention over the selection| = %.3g (tolerance %.0e)\n", max_diff,
               TOLERANCE);
        CHECK(max_diff <= TOLERANCE, "layer 1 output differs from attention over its selection by %.3g", max_diff);
    }

    /* 5. Error handling: a bad request fails with a status, writes nothing,
     *    and the message names the field. */
    fasa_decode_desc bad = {.n_fac = 16, .n_sink = 10, .n_recent = 10};
    memcpy(o_dense, o, nq * sizeof(float));
    st = fasa_decode_host(cache, 1, &bad, q, o, NULL);
    printf("expected error: %s: %s\n", fasa_status_string(st), fasa_context_last_error(ctx));
    CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(fasa_context_last_error(ctx), "n_sink") &&
              memcmp(o, o_dense, nq * sizeof(float)) == 0,
          "forced tokens over the budget must be rejected without writing o");
    q[5] = NAN; /* host inputs are scanned for NaN/Inf */
    st = fasa_decode_host(cache, 1, &fasa, q, o, NULL);
    printf("expected error: %s: %s\n", fasa_status_string(st), fasa_context_last_error(ctx));
    CHECK(st == FASA_ERROR_NON_FINITE, "a NaN in q must be rejected");

    fasa_kv_cache_destroy(cache);
    fasa_context_destroy(ctx);
    free(k), free(v), free(q), free(o), free(o_dense), free(selected);
    printf("cpu_host: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
