#version 450
/* tip: TIP scores S[row][j] = q_masked[h] . K_dom[g][j] (no scale), or the
 * full q[h] . K[g][j] for the oracle, for a tile of tokens, fused with the
 * first top-k pass: a histogram of the top key digit of the scores inside
 * the candidate window [lo, hi).
 * CPU statement: src/cpu/cpu_kernels.c, build_masked_q / tip_chunk.
 *
 * Each thread scores TPT tokens (strided by the workgroup size, so every row
 * load is coalesced), reusing each q value it reads from shared memory for
 * all of them.  A workgroup serves the heads [h0, h0 + nh) of KV
 * head g: per-head selection splits a group into batches of at most 8 heads
 * (grid y = g * n_batches + batch); per-group selection takes all G heads
 * and sums their scores in head order from 0.  The masked queries sit in
 * shared memory transposed, four heads per vec4 (qt[head/4][dim]), so one
 * row read feeds four heads per multiply-add and no register array is
 * indexed at run time (llvmpipe spills those).  A group too large for
 * QMAX floats reads q from global memory instead. */
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "storage.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 2) const uint QMAX = 4096; /* floats of q in shared memory */
layout(constant_id = 3) const bool EXT_KV = false; /* oracle rows from an engine's K (ext_row) */

/* rows_tab: K_dom (or K for the oracle) chunk table of the layer; sc_tab: the
 * score chunk table; scratch: q at q_off, histograms at hist_off (digit 0);
 * map: [Hq][u_pad] q dim feeding each union slot, or -1; flags: 1 per group,
 * 2 oracle, 4 paged; EXT_KV: rows_tab is K's base, ts/hs its strides in
 * words; paged: the step's block table at `table`, log2(block size) tshift. */
#define PARAMS                                                                                     \
    uvec2 rows_tab, sc_tab, scratch, map;                                                          \
    uint L, lo, hi, G;                                                                             \
    uint width, kv_stride, kv_shift, sc_stride;                                                    \
    uint sc_shift, q_off, hist_off, flags;                                                         \
    uint d, u_pad, n_batches, ts;                                                                  \
    uint hs, tshift;                                                                               \
    uvec2 table;
#define BATCH_ITEM()                                                                               \
    pc.scratch = item_addr(pc.scratch, bpc.item_words);                                            \
    pc.sc_tab = item_addr(pc.sc_tab, 2u);                                                          \
    pc.table = addr_add(pc.table, item_word(ITEM_TABLE));                                          \
    pc.hi = item_word(ITEM_L) - (pc.L - pc.hi);                                                    \
    pc.L = item_word(ITEM_L);
#include "params.glsl"

shared vec4 qt[QMAX / 4u];
shared uint shist[8u * 256u];

uint g_, h0_, nh_, nhv_;
bool in_shared_;

/* q of head h0_ + 4 * hv + i at slot c (masked by tip_map unless oracle). */
float q_at(uint hv, uint i, uint c)
{
    uint h = 4u * hv + i;
    if (h >= nh_) return 0.0;
    uint hq = h0_ + h;
    if ((pc.flags & 2u) != 0u) return Floats(pc.scratch).f[pc.q_off + hq * pc.d + c];
    int m = int(Words(pc.map).w[hq * pc.u_pad + c]);
    return m >= 0 ? Floats(pc.scratch).f[pc.q_off + hq * pc.d + uint(m)] : 0.0;
}

void load_q()
{
    for (uint i = gl_LocalInvocationID.x; in_shared_ && i < nhv_ * pc.width; i += gl_WorkGroupSize.x) {
        uint hv = i / pc.width, c = i - hv * pc.width;
        qt[i] = vec4(q_at(hv, 0u, c), q_at(hv, 1u, c), q_at(hv, 2u, c), q_at(hv, 3u, c));
    }
    for (uint i = gl_LocalInvocationID.x; i < 8u * 256u; i += gl_WorkGroupSize.x) shist[i] = 0u;
}

#define TPT 4u /* tokens per thread */

struct rows4 {
    uint off[TPT];
    uvec2 addr[TPT];
};

/* Scores of the four heads of vec4 group hv for the thread's TPT rows:
 * one shared q load feeds TPT multiply-adds (llvmpipe executes shared loads
 * at a uniform index slowly, GPUs gain register reuse). */
vec4 q_global(uint hv, uint c)
{
    return vec4(q_at(hv, 0u, c), q_at(hv, 1u, c), q_at(hv, 2u, c), q_at(hv, 3u, c));
}

/* One loop per q source: a branch inside the loop costs llvmpipe 2x. */
#if STORAGE_16
#define DOT4_LOOP(QA, QB)                                                                          \
    for (uint w = 0u; w < (pc.width >> 1); w++) {                                                  \
        vec4 qa = QA, qb = QB;                                                                     \
        vec2 v0 = unpack2(w0.w[r.off[0] + w]), v1 = unpack2(w1.w[r.off[1] + w]);            \
        vec2 v2 = unpack2(w2.w[r.off[2] + w]), v3 = unpack2(w3.w[r.off[3] + w]);            \
        s0 += qa * v0.x + qb * v0.y;                                                               \
        s1 += qa * v1.x + qb * v1.y;                                                               \
        s2 += qa * v2.x + qb * v2.y;                                                               \
        s3 += qa * v3.x + qb * v3.y;                                                               \
    }
#else
#define DOT4_LOOP(QA, QB)                                                                          \
    for (uint w = 0u; w < pc.width; w++) {                                                         \
        vec4 qa = QA;                                                                              \
        s0 += qa * uintBitsToFloat(w0.w[r.off[0] + w]);                                            \
        s1 += qa * uintBitsToFloat(w1.w[r.off[1] + w]);                                            \
        s2 += qa * uintBitsToFloat(w2.w[r.off[2] + w]);                                            \
        s3 += qa * uintBitsToFloat(w3.w[r.off[3] + w]);                                            \
    }
#endif

void dot4(rows4 r, uint hv, out vec4 s0, out vec4 s1, out vec4 s2, out vec4 s3)
{
    s0 = s1 = s2 = s3 = vec4(0.0);
    uint base = hv * pc.width;
    Words w0 = Words(r.addr[0]), w1 = Words(r.addr[1]), w2 = Words(r.addr[2]), w3 = Words(r.addr[3]);
#if STORAGE_16
    if (in_shared_) {
        DOT4_LOOP(qt[base + 2u * w], qt[base + 2u * w + 1u])
    } else {
        DOT4_LOOP(q_global(hv, 2u * w), q_global(hv, 2u * w + 1u))
    }
#else
    if (in_shared_) {
        DOT4_LOOP(qt[base + w], qa)
    } else {
        DOT4_LOOP(q_global(hv, w), qa)
    }
#endif
}

/* A score depends only on the head's own dims (docs/SPEC.md §8).  The fast dot
 * product also multiplies the other heads' slots of U_g by an exact zero,
 * which adds nothing unless the K value there is NaN or Inf (0 * NaN and
 * 0 * Inf are NaN): so a score that is not NaN is already exact, and only a
 * NaN one is recomputed over the head's own slots (it stays NaN when an own
 * dim holds NaN or its products give Inf - Inf).
 *
 * own_score: head hq's score of one K_dom row over the slots tip_map puts in
 * I_h, in slot order, one fused multiply-add per term (as
 * src/cpu/cpu_kernels.c, own_score).  Rare: only for a NaN fast score. */
float own_score(uint hq, uvec2 addr, uint off)
{
    Words row = Words(addr);
    float acc = 0.0;
    for (uint c = 0u; c < pc.width; c++) {
        int m = int(Words(pc.map).w[hq * pc.u_pad + c]);
        if (m < 0) continue;
#if STORAGE_16
        uint word = row.w[off + (c >> 1)];
        float k = unpack1((c & 1u) != 0u ? (word >> 16) : (word & 0xffffu));
#else
        float k = uintBitsToFloat(row.w[off + c]);
#endif
        acc = fma(Floats(pc.scratch).f[pc.q_off + hq * pc.d + uint(m)], k, acc);
    }
    return acc;
}

/* The four head scores of vec4 group hv for one row, NaN ones recomputed
 * (not for the oracle, whose score is the full q . k by definition).  The
 * NaN test reads the bits, so no floating-point mode can drop it; one call
 * site of own_score per row keeps the unrolled code small. */
vec4 own_dims(vec4 s, uint hv, uvec2 addr, uint off)
{
    if ((pc.flags & 2u) != 0u) return s;
    uvec4 mag = floatBitsToUint(s) & 0x7fffffffu;
    bvec4 redo = greaterThan(mag, uvec4(0x7f800000u));
    if (!any(redo)) return s;
    for (uint i = 0u; i < 4u; i++)
        if (redo[i] && 4u * hv + i < nh_) s[i] = own_score(h0_ + 4u * hv + i, addr, off);
    return s;
}

uint jbase_; /* first token of the workgroup: its tokens share one score chunk per row */

void store_score(uint r, uint j, float s, uint slot)
{
    /* sc_stride and chunks are multiples of 4096 >= the workgroup's tokens */
    uint f = r * pc.sc_stride + jbase_;
    Floats(chunk_addr(pc.sc_tab, f, pc.sc_shift)).f[chunk_off(f, pc.sc_shift, 1u) + (j - jbase_)] = s;
    if (j >= pc.lo && j < pc.hi) atomicAdd(shist[slot * 256u + (score_key(s) >> 24)], 1u);
}

void main()
{
    LOAD_PARAMS();
#if BATCH
    if (gl_WorkGroupID.x * gl_WorkGroupSize.x * TPT >= pc.L) return; /* past this item's tokens */
#endif
    bool per_group = (pc.flags & 1u) != 0u;
    uint batch = gl_WorkGroupID.y % pc.n_batches;
    g_ = gl_WorkGroupID.y / pc.n_batches;
    h0_ = g_ * pc.G + batch * 8u;
    nh_ = per_group ? pc.G : min(8u, pc.G - batch * 8u);
    nhv_ = (nh_ + 3u) / 4u;
    in_shared_ = nhv_ * 4u * pc.width <= QMAX;
    jbase_ = gl_WorkGroupID.x * gl_WorkGroupSize.x * TPT;
    uint j0 = jbase_ + gl_LocalInvocationID.x;
    load_q();
    barrier();
#if STORAGE_16
    uint W = pc.width >> 1;
#else
    uint W = pc.width;
#endif
    rows4 r;
    bool paged = (pc.flags & 4u) != 0u; /* uniform: unpaged caches read row j as before */
    [[unroll]] for (uint k = 0u; k < TPT; k++) { /* tokens past L read token 0 and are dropped */
        uint j = j0 + k * gl_WorkGroupSize.x;
        uint tok = j < pc.L ? j : 0u;
        if (paged) tok = row_of(pc.table, pc.tshift, tok); /* K_dom and K are indexed by physical row */
        uint row = g_ * pc.kv_stride + tok;
        r.addr[k] = EXT_KV ? ext_row(pc.rows_tab, tok, pc.ts, g_, pc.hs) : chunk_addr(pc.rows_tab, row, pc.kv_shift);
        r.off[k] = EXT_KV ? 0u : chunk_off(row, pc.kv_shift, W);
    }
    vec4 g = vec4(0.0); /* per-group sums of the TPT tokens */
    for (uint hv = 0u; j0 < pc.L && hv < nhv_; hv++) {
        vec4 s[TPT];
        dot4(r, hv, s[0], s[1], s[2], s[3]);
        [[unroll]] for (uint k = 0u; k < TPT; k++) {
            uint j = j0 + k * gl_WorkGroupSize.x;
            if (j >= pc.L) break;
            vec4 sk = own_dims(s[k], hv, r.addr[k], r.off[k]);
            if (per_group) { /* head order, from 0, like the CPU */
                float a = g[k];
                a += sk.x;
                if (4u * hv + 1u < nh_) a += sk.y;
                if (4u * hv + 2u < nh_) a += sk.z;
                if (4u * hv + 3u < nh_) a += sk.w;
                g[k] = a;
            } else {
                store_score(h0_ + 4u * hv, j, sk.x, 4u * hv);
                if (4u * hv + 1u < nh_) store_score(h0_ + 4u * hv + 1u, j, sk.y, 4u * hv + 1u);
                if (4u * hv + 2u < nh_) store_score(h0_ + 4u * hv + 2u, j, sk.z, 4u * hv + 2u);
                if (4u * hv + 3u < nh_) store_score(h0_ + 4u * hv + 3u, j, sk.w, 4u * hv + 3u);
            }
        }
    }
    [[unroll]] for (uint k = 0u; k < TPT; k++)
        if (per_group)
        if (j0 + k * gl_WorkGroupSize.x < pc.L) store_score(g_, j0 + k * gl_WorkGroupSize.x, g[k], 0u);
    barrier();
    uint n_hist = per_group ? 1u : nh_, r0 = per_group ? g_ : h0_;
    Words hist = Words(pc.scratch);
    for (uint i = gl_LocalInvocationID.x; i < n_hist * 256u; i += gl_WorkGroupSize.x) {
        uint c = shist[i];
        if (c != 0u) atomicAdd(hist.w[pc.hist_off + (r0 + i / 256u) * 256u + (i & 255u)], c);
    }
}
