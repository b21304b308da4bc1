#version 450
/* tip: TIP scores S[row][j] = q_masked[h] . K_dom[g][j] (no scale), or the
 * full q[h] . K[g][j] for the oracle, for a tile of tokens, fused with the
 * first top-k pass: a histogram of the top key digit of the scores inside
 * the candidate window [lo, hi).
 * CPU statement: src/cpu/cpu_kernels.c, build_masked_q / tip_chunk.
 *
 * One thread per token.  A workgroup serves the heads [h0, h0 + nh) of KV
 * head g: per-head selection splits a group into batches of at most 8 heads
 * (grid y = g * n_batches + batch); per-group selection takes all G heads
 * and sums their scores in head order from 0.  The masked queries sit in
 * shared memory transposed, four heads per vec4 (qt[head/4][dim]), so one
 * row read feeds four heads per multiply-add and no register array is
 * indexed at run time (llvmpipe spills those).  A group too large for
 * QMAX floats reads q from global memory instead. */
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 2) const uint QMAX = 4096; /* floats of q in shared memory */

layout(push_constant) uniform Push {
    uvec2 rows_tab;  /* K_dom (or K for the oracle) chunk table of the layer */
    uvec2 sc_tab;    /* score chunk table */
    uvec2 scratch;   /* q at q_off, histograms at hist_off (digit 0) */
    uvec2 map;       /* [Hq][u_pad] q dim feeding each union slot, or -1 */
    uint L, lo, hi, G;
    uint width, kv_stride, kv_shift, sc_stride;
    uint sc_shift, q_off, hist_off, flags; /* flags: 1 per group, 2 oracle */
    uint d, u_pad, n_batches, pad1;
} pc;

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

/* Scores of the four heads of vec4 group hv for this thread's row.  One
 * vec4 accumulator per loop: more live values per loop iteration make
 * llvmpipe's code many times slower. */
vec4 dot4(Words rows, uint roff, uint hv)
{
    vec4 s = vec4(0.0);
    uint base = hv * pc.width;
#if STORAGE_F16
    if (in_shared_) {
        for (uint w = 0u; w < (pc.width >> 1); w++) {
            vec2 v = unpackHalf2x16(rows.w[roff + w]);
            s += qt[base + 2u * w] * v.x + qt[base + 2u * w + 1u] * v.y;
        }
    } else {
        for (uint w = 0u; w < (pc.width >> 1); w++) {
            vec2 v = unpackHalf2x16(rows.w[roff + w]);
            for (uint i = 0u; i < 4u; i++) s[i] += q_at(hv, i, 2u * w) * v.x + q_at(hv, i, 2u * w + 1u) * v.y;
        }
    }
#else
    if (in_shared_) {
        for (uint w = 0u; w < pc.width; w++) s += qt[base + w] * uintBitsToFloat(rows.w[roff + w]);
    } else {
        for (uint w = 0u; w < pc.width; w++) {
            float v = uintBitsToFloat(rows.w[roff + w]);
            for (uint i = 0u; i < 4u; i++) s[i] += q_at(hv, i, w) * v;
        }
    }
#endif
    return s;
}

void store_score(uint r, uint j, float s, uint slot)
{
    uint f = r * pc.sc_stride + j;
    Floats(chunk_addr(pc.sc_tab, f, pc.sc_shift)).f[chunk_off(f, pc.sc_shift, 1u)] = s;
    if (j >= pc.lo && j < pc.hi) atomicAdd(shist[slot * 256u + (score_key(s) >> 24)], 1u);
}

void main()
{
    bool per_group = (pc.flags & 1u) != 0u;
    uint batch = gl_WorkGroupID.y % pc.n_batches;
    g_ = gl_WorkGroupID.y / pc.n_batches;
    h0_ = g_ * pc.G + batch * 8u;
    nh_ = per_group ? pc.G : min(8u, pc.G - batch * 8u);
    nhv_ = (nh_ + 3u) / 4u;
    in_shared_ = nhv_ * 4u * pc.width <= QMAX;
    uint j = gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    bool valid = j < pc.L;
    load_q();
    barrier();
    uint row = g_ * pc.kv_stride + (valid ? j : 0u);
#if STORAGE_F16
    uint W = pc.width >> 1;
#else
    uint W = pc.width;
#endif
    Words rows = Words(chunk_addr(pc.rows_tab, row, pc.kv_shift));
    uint roff = chunk_off(row, pc.kv_shift, W);
    float gsum = 0.0;
    for (uint hv = 0u; valid && hv < nhv_; hv++) {
        vec4 s = dot4(rows, roff, hv);
        if (per_group) { /* head order, from 0, like the CPU */
            gsum += s.x;
            if (4u * hv + 1u < nh_) gsum += s.y;
            if (4u * hv + 2u < nh_) gsum += s.z;
            if (4u * hv + 3u < nh_) gsum += s.w;
        } else {
            store_score(h0_ + 4u * hv, j, s.x, 4u * hv);
            if (4u * hv + 1u < nh_) store_score(h0_ + 4u * hv + 1u, j, s.y, 4u * hv + 1u);
            if (4u * hv + 2u < nh_) store_score(h0_ + 4u * hv + 2u, j, s.z, 4u * hv + 2u);
            if (4u * hv + 3u < nh_) store_score(h0_ + 4u * hv + 3u, j, s.w, 4u * hv + 3u);
        }
    }
    if (per_group && valid) store_score(g_, j, gsum, 0u);
    barrier();
    uint n_hist = per_group ? 1u : nh_, r0 = per_group ? g_ : h0_;
    Words hist = Words(pc.scratch);
    for (uint i = gl_LocalInvocationID.x; i < n_hist * 256u; i += gl_WorkGroupSize.x) {
        uint c = shist[i];
        if (c != 0u) atomicAdd(hist.w[pc.hist_off + (r0 + i / 256u) * 256u + (i & 255u)], c);
    }
}
