#version 450
/* append: writes tokens [first, first + n) of one layer from the staging
 * area (k then v, [n][Hkv][d] in the source dtype) into K, V and the
 * dominant-dims copy K_dom (the union dims of the KV head, zero padded).
 * CPU statement: src/cpu/cpu_kernels.c, append_token / store_dom_row.
 * One workgroup per (token slot, KV head); tokens stride by the grid width.
 * STORAGE_F16: the cache holds fp16 (two per word), else fp32. */
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "half.glsl"

layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push {
    uvec2 k_tab, v_tab, kd_tab; /* chunk tables of K, V, K_dom (this layer) */
    uvec2 stage;                /* source rows: k at word 0, v at word v_off */
    uvec2 dims;                 /* [Hkv][u_pad] union dims, 0xffffffff = padding */
    uint first, n, hkv, kv_stride;
    uint kv_shift, kd_shift, d, u_pad;
    uint v_off, src_f32, has_dom, pad0;
} pc;

/* Source element e of (token t, head g) of k (which = 0) or v, as storage bits. */
uint load_src(uint which, uint t, uint g, uint e)
{
    uint idx = (t * pc.hkv + g) * pc.d + e;
    uint base = which == 0u ? 0u : pc.v_off;
    Words s = Words(pc.stage);
    if (pc.src_f32 != 0u) {
        uint bits = s.w[base + idx];
#if STORAGE_F16
        return f32_to_f16(uintBitsToFloat(bits));
#else
        return bits;
#endif
    }
    uint word = s.w[base + (idx >> 1)];
    uint h = (idx & 1u) != 0u ? (word >> 16) : (word & 0xffffu);
#if STORAGE_F16
    return h;
#else
    return floatBitsToUint(unpackHalf2x16(h).x);
#endif
}

void store_row(uint which, uvec2 tab, uint row, uint t, uint g)
{
#if STORAGE_F16
    uint W = pc.d >> 1;
#else
    uint W = pc.d;
#endif
    Words dst = Words(chunk_addr(tab, row, pc.kv_shift));
    uint off = chunk_off(row, pc.kv_shift, W);
    for (uint w = gl_LocalInvocationID.x; w < W; w += gl_WorkGroupSize.x) {
#if STORAGE_F16
        dst.w[off + w] = load_src(which, t, g, 2u * w) | (load_src(which, t, g, 2u * w + 1u) << 16);
#else
        dst.w[off + w] = load_src(which, t, g, w);
#endif
    }
}

uint dom_elem(uint t, uint g, uint slot)
{
    uint dim = Words(pc.dims).w[g * pc.u_pad + slot];
    return dim == 0xffffffffu ? 0u : load_src(0u, t, g, dim);
}

void store_dom(uint row, uint t, uint g)
{
#if STORAGE_F16
    uint W = pc.u_pad >> 1;
#else
    uint W = pc.u_pad;
#endif
    Words dst = Words(chunk_addr(pc.kd_tab, row, pc.kd_shift));
    uint off = chunk_off(row, pc.kd_shift, W);
    for (uint w = gl_LocalInvocationID.x; w < W; w += gl_WorkGroupSize.x) {
#if STORAGE_F16
        dst.w[off + w] = dom_elem(t, g, 2u * w) | (dom_elem(t, g, 2u * w + 1u) << 16);
#else
        dst.w[off + w] = dom_elem(t, g, w);
#endif
    }
}

void main()
{
    uint g = gl_WorkGroupID.y;
    for (uint t = gl_WorkGroupID.x; t < pc.n; t += gl_NumWorkGroups.x) {
        uint row = g * pc.kv_stride + pc.first + t;
        store_row(0u, pc.k_tab, row, t, g);
        store_row(1u, pc.v_tab, row, t, g);
        if (pc.has_dom != 0u) store_dom(row, t, g);
    }
}
