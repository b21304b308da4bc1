/*
 * libfasa OpenCL kernels: shared definitions (OpenCL C 1.2).
 *
 * The host concatenates common.cl, append.cl, tip.cl, topk.cl, attn.cl and
 * fetch.cl into one program and builds it once per storage dtype with these macros:
 *
 *   FASA_F16          1: K/V/K_dom hold IEEE binary16 bits
 *   FASA_BF16         1: K/V/K_dom hold bfloat16 bits (the top half of an
 *                     fp32; absent = 0); neither: fp32
 *   FASA_HALF_LOAD    fp16 load path: 0 = vload_half/vload_half8,
 *                     1 = 16-byte uint4 loads with manual half->float
 *                     conversion (GPU_NOTES §2: measure both on NVIDIA)
 *   WG_APPEND, WG_TIP, TIP_TPT (tokens per TIP work-item), TIP_HB (query
 *   heads per TIP work-group), WG_TOPK, TOPK_TILE (keys per top-k pass
 *   work-group), WG_ATTN, ATT_QL (floats of q held in local memory by one
 *   attention work-group), ATT_HB (max heads per attention work-group),
 *   WG_RED, RED_PMAX (max partials per head), FASA_DYN_LOOPS (see FOR_HEAD),
 *   WG_FETCH (work-items of the FASA-M bookkeeping groups, a power of two)
 *
 * Arithmetic and accumulation are fp32 everywhere (no cl_khr_fp16 needed).
 * Nothing relies on -inf: the online softmax starts from NEG_START and
 * excluded tokens get an explicit zero weight.  Never build with
 * -cl-finite-math-only or -cl-fast-relaxed-math: they would break the NaN/Inf
 * rules of docs/SPEC.md §8.
 */

#define NEG_START (-FLT_MAX / 2)

#ifndef FASA_BF16
#define FASA_BF16 0
#endif
#if FASA_F16 || FASA_BF16
typedef ushort store_t;
#else
typedef float store_t;
#endif
/* The storage type as a fasa_dtype value (fp16 0, fp32 1, bf16 2). */
#define STORE_TYPE (FASA_F16 ? 0u : FASA_BF16 ? 2u : 1u)

/* ---- fp16 conversion ---------------------------------------------------- */

/* Exact binary16 -> binary32, subnormals, Inf and NaN included; integer
 * arithmetic only, so it does not depend on fp32 denormal support. */
static inline float h2f(uint h)
{
    uint sign = (h & 0x8000u) << 16;
    uint ex = (h >> 10) & 0x1fu;
    uint man = h & 0x3ffu;
    if (ex == 0u) {
        float v = (float)man * 0x1.0p-24f;
        return sign ? -v : v;
    }
    uint bits = ex == 0x1fu ? (sign | 0x7f800000u | (man << 13))
                            : (sign | ((ex + 112u) << 23) | (man << 13));
    return as_float(bits);
}

static inline float8 h2f8(uint4 w)
{
    return (float8)(h2f(w.x & 0xffffu), h2f(w.x >> 16), h2f(w.y & 0xffffu), h2f(w.y >> 16),
                    h2f(w.z & 0xffffu), h2f(w.z >> 16), h2f(w.w & 0xffffu), h2f(w.w >> 16));
}

/* ---- bfloat16 ------------------------------------------------------------ */

/* bf16 -> fp32 is exact: the bits are the top half of the fp32. */
static inline float b2f(uint b) { return as_float(b << 16); }

/* Eight bf16 values of four words (low half first) as fp32. */
static inline float8 b2f8(uint4 w)
{
    return (float8)(as_float(w.x << 16), as_float(w.x & 0xffff0000u), as_float(w.y << 16), as_float(w.y & 0xffff0000u),
                    as_float(w.z << 16), as_float(w.z & 0xffff0000u), as_float(w.w << 16), as_float(w.w & 0xffff0000u));
}

/* fp32 -> bf16, round to nearest even (bit-exact with src/half.c): a carry
 * out of the fraction reaches the exponent, up to Inf from 0x7f7f8000; NaN
 * keeps its sign and top payload, made quiet. */
static inline ushort f2b(float x)
{
    uint u = as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u);
    return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Element i of an array of 16-bit io elements (q) or sources (appends) of
 * fasa_dtype type (0 fp16, 2 bf16; 1 fp32) as fp32, exactly. */
static inline float ld_any(__global const uchar *p, size_t i, uint type)
{
    if (type == 1u) return ((__global const float *)p)[i];
    uint b = ((__global const ushort *)p)[i];
    return type == 2u ? b2f(b) : h2f(b);
}

/* ---- storage loads: element i of an array in the cache dtype ----------- */

static inline float ld1(__global const store_t *p, size_t i)
{
#if FASA_BF16
    return b2f(p[i]);
#elif FASA_F16
#if FASA_HALF_LOAD == 1
    return h2f(p[i]);
#else
    return vload_half(i, (__global const half *)p);
#endif
#else
    return p[i];
#endif
}

/* Eight elements starting at i; i and the row start are multiples of 8, so
 * the address is 16-byte aligned for fp16 and 32-byte aligned for fp32. */
static inline float8 ld8(__global const store_t *p, size_t i)
{
#if FASA_BF16
    return b2f8(*(__global const uint4 *)(p + i));
#elif FASA_F16
#if FASA_HALF_LOAD == 1
    return h2f8(*(__global const uint4 *)(p + i));
#else
    return vload_half8(0, (__global const half *)(p + i));
#endif
#else
#if FASA_HALF_LOAD == 1
    __global const float4 *v = (__global const float4 *)(p + i);
    return (float8)(v[0], v[1]);
#else
    return vload8(0, p + i);
#endif
#endif
}

/* ld8 for rows that may not start on a multiple of 8 elements (external
 * K/V layouts): aligned = 0 reads the same eight values one by one, so the
 * arithmetic that follows is the same either way. */
static inline float8 ld8a(__global const store_t *p, size_t i, uint aligned)
{
    if (aligned) return ld8(p, i);
    return (float8)(ld1(p, i), ld1(p, i + 1), ld1(p, i + 2), ld1(p, i + 3), ld1(p, i + 4), ld1(p, i + 5),
                    ld1(p, i + 6), ld1(p, i + 7));
}

static inline void st1(__global store_t *p, size_t i, float x)
{
#if FASA_BF16
    p[i] = f2b(x);
#elif FASA_F16
    vstore_half_rte(x, i, (__global half *)p); /* round to nearest even, like the CPU */
#else
    p[i] = x;
#endif
}

/* Dot products accumulate lane-wise in a float8 and are summed once at the
 * end: measurably faster than dot() per chunk on PoCL, the same on GPUs. */
static inline float hsum8(float8 a)
{
    float4 b = a.lo + a.hi;
    return (b.x + b.y) + (b.z + b.w);
}

/* ---- paged caches: a sequence token's physical row --------------------- */

/* Row of logical token j of a sequence with block table `table` and
 * blocks of 1 << shift rows: src/internal.h fasa__row_of, bit for bit. */
static inline uint row_of(__global const uint *table, uint shift, uint j)
{
    return (table[j >> shift] << shift) | (j & ((1u << shift) - 1u));
}

/* ---- order-preserving key (src/select.c): larger score -> larger key --- */

static inline uint score_key(float f)
{
    uint u = as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0u; /* NaN ranks lowest */
    if (u == 0x80000000u) u = 0u;                   /* -0 equals +0 */
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* ---- per-row top-k state (topk.cl), 16 uints per selection row -------- */

#define ST_PREFIX 0   /* key bits fixed so far */
#define ST_MASK 1     /* which bits of the key are fixed */
#define ST_ABOVE 2    /* candidates known to rank above the prefix */
#define ST_NEED 3     /* how many of the prefix-matching candidates to take */
#define ST_SRC 4      /* next pass reads: 0 the score window, 1 list 0, 2 list 1 */
#define ST_SRC_N 5    /* keys in the source list */
#define ST_DST 6      /* next pass writes its matching keys to: 0 none, 1 list 0, 2 list 1 */
#define ST_DST_N 7    /* keys written so far (atomic counter) */
#define ST_DONE 8     /* threshold found: later passes do nothing */
#define ST_WORDS 16

/* Loops over the query heads a work-item serves: GPUs unroll to the
 * compile-time maximum (arrays stay in registers); CPU runtimes loop to the
 * actual count (FASA_DYN_LOOPS=1). */
#if FASA_DYN_LOOPS
#define FOR_HEAD(m, n, max) for (uint m = 0; m < (n); m++)
#else
#define FOR_HEAD(m, n, max) for (uint m = 0; m < (max); m++) if (m < (n))
#endif

/* Local-memory counters: a work-group of one work-item (CPU runtimes)
 * needs no atomics. */
#if WG_TIP == 1
#define TIP_ADD(p, v) (*(p) += (v))
#else
#define TIP_ADD(p, v) atomic_add((p), (v))
#endif
#if WG_TOPK == 1
#define TOPK_ADD(p, v) (*(p) += (v))
#else
#define TOPK_ADD(p, v) atomic_add((p), (v))
#endif

/* Histograms of the top key byte are skewed (similar scores share sign and
 * exponent), so a work-item counts runs of equal bins in registers and adds
 * each run with one local atomic: far fewer conflicting atomics on GPUs. */
#define RUN_NONE 0xffffffffu
#define RUN_ADD(add, h, rb, rn, bin)                                                    \
    do {                                                                               \
        if ((bin) != (rb)) {                                                           \
            if (rn) add(&(h)[rb], (rn));                                               \
            (rb) = (bin);                                                              \
            (rn) = 0u;                                                                 \
        }                                                                              \
        (rn)++;                                                                        \
    } while (0)
#define RUN_FLUSH(add, h, rb, rn)                                                       \
    do {                                                                               \
        if (rn) add(&(h)[rb], (rn));                                                   \
        (rn) = 0u;                                                                     \
        (rb) = RUN_NONE;                                                               \
    } while (0)

/* ---- batched decode: per-item parameters (src/opencl/cl_batch.c) -------- */

/* The batch kernels (*_b) serve every item of a batch in one launch, the
 * item in dim 2 of the grid.  What differs per item comes from BP_WORDS
 * uints of the parameter buffer (the same enum as cl_batch.c): its length,
 * q/o offsets, block table offset and the word offsets of its regions in
 * the batch scratch bs.  Each *_b kernel runs the single kernel's body
 * with those values, so an item's o is bit for bit a single step's. */
#define BP_L 0        /* tokens of the item's sequence */
#define BP_NCAND 1    /* top-k window length L - n_sink - n_recent */
#define BP_TE 2       /* top-k output tile */
#define BP_NTILES 3   /* tiles per row (row stride of the tile counts) */
#define BP_LCAP 4     /* candidate list capacity */
#define BP_QS 5       /* 2 words: element offset of a 16-bit q (fasa_widen_b's source) */
#define BP_QR 7       /* 2 words: fp32 element offset q is read from */
#define BP_O 9        /* 2 words: element offset of o */
#define BP_TAB 11     /* 2 words: entry offset of the block table */
#define BP_SCORES 13  /* word offsets in bs: scores [rows][L] */
#define BP_HIST 14    /* [rows][256] */
#define BP_STATE 15   /* [rows][ST_WORDS] */
#define BP_LISTS 16   /* [rows][2][lcap] */
#define BP_TILES 17   /* [rows][ntiles][2] */
#define BP_SEL 18     /* [rows][sel_stride] */
#define BP_PART 19    /* [Hq][n_parts][d + 2] */
#define BP_QM 20      /* [Hq][width] */
#define BP_QF 21      /* [Hq][d] */
#define BP_WORDS 22

static inline __global const uint *bp_item(__global const uint *prm, uint item0)
{
    return prm + (size_t)(item0 + get_group_id(2)) * BP_WORDS;
}

static inline ulong bp_u64(__global const uint *p, uint i) { return (ulong)p[i] | ((ulong)p[i + 1] << 32); }
