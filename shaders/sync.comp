#version 450
/* sync: the K_dom rows of tokens [first, first + n) of one layer of an
 * external cache (fasa_kv_cache_desc.external), cut from the engine's K in
 * place: the union dims of the KV head, zero padded to u_pad, as
 * append.comp writes them from its stage.  The engine's K is in the cache
 * dtype, so the bits are copied.  CPU statement: src/cpu/cpu_kernels.c,
 * sync_token / store_dom.  One workgroup per (token slot, KV head); tokens
 * stride by the grid width.  Storage as storage.glsl: 16-bit types two per
 * word (the bits are copied either way), else fp32. */
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "storage.glsl"

layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push {
    uvec2 k;                    /* the engine's K of this layer (its offset applied) */
    uvec2 kd_tab;               /* chunk table of this layer's K_dom */
    uvec2 dims;                 /* [Hkv][u_pad] union dims, 0xffffffff = padding */
    uint first, n, kv_stride, kd_shift;
    uint u_pad, ts, hs, pad0;   /* ts, hs: K's strides in words */
} pc;

/* Element `dim` of a K row, as storage bits. */
uint elem(Words row, uint dim)
{
#if STORAGE_16
    uint word = row.w[dim >> 1];
    return (dim & 1u) != 0u ? (word >> 16) : (word & 0xffffu);
#else
    return row.w[dim];
#endif
}

uint dom_elem(Words krow, uint g, uint slot)
{
    uint dim = Words(pc.dims).w[g * pc.u_pad + slot];
    return dim == 0xffffffffu ? 0u : elem(krow, dim);
}

void main()
{
    uint g = gl_WorkGroupID.y;
#if STORAGE_16
    uint W = pc.u_pad >> 1;
#else
    uint W = pc.u_pad;
#endif
    for (uint t = gl_WorkGroupID.x; t < pc.n; t += gl_NumWorkGroups.x) {
        uint tok = pc.first + t, row = g * pc.kv_stride + tok;
        Words krow = Words(ext_row(pc.k, tok, pc.ts, g, pc.hs));
        Words dst = Words(chunk_addr(pc.kd_tab, row, pc.kd_shift));
        uint off = chunk_off(row, pc.kd_shift, W);
        for (uint w = gl_LocalInvocationID.x; w < W; w += gl_WorkGroupSize.x) {
#if STORAGE_16
            dst.w[off + w] = dom_elem(krow, g, 2u * w) | (dom_elem(krow, g, 2u * w + 1u) << 16);
#else
            dst.w[off + w] = dom_elem(krow, g, w);
#endif
        }
    }
}
