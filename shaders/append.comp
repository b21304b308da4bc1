#version 450
/* append: writes tokens [first, first + n) of one layer from the staging
 * area (k then v, [n][Hkv][d] in the source dtype) into K, V and the
 * dominant-dims copy K_dom (the union dims of the KV head, zero padded).
 * CPU statement: src/cpu/cpu_kernels.c, append_token / store_dom_row.
 * One workgroup per (token slot, KV head); tokens stride by the grid width.
 * The storage type is the variant's (storage.glsl: fp16 or bf16 two per
 * word, else fp32); the source type src_type (a fasa_dtype: 0 fp16, 1 fp32,
 * 2 bf16) comes with the call.  Equal types copy the bits, others convert
 * through the exact fp32 value and round to nearest even (half.glsl). */
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "half.glsl"
#include "storage.glsl"

#define SRC_F16 0u
#define SRC_F32 1u
#define SRC_BF16 2u
#if STORAGE_F16
#define STORAGE_TYPE SRC_F16
#elif STORAGE_BF16
#define STORAGE_TYPE SRC_BF16
#else
#define STORAGE_TYPE SRC_F32
#endif

layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push {
    uvec2 k_tab, v_tab, kd_tab; /* chunk tables of K, V, K_dom (this layer) */
    uvec2 stage;                /* source rows: k at word 0, v at word v_off */
    uvec2 dims;                 /* [Hkv][u_pad] union dims, 0xffffffff = padding */
    uint first, n, hkv, kv_stride;
    uint kv_shift, kd_shift, d, u_pad;
    uint v_off, src_type, has_dom, pad0;
} pc;

/* Source element e of (token t, head g) of k (which = 0) or v, as storage bits. */
uint load_src(uint which, uint t, uint g, uint e)
{
    uint idx = (t * pc.hkv + g) * pc.d + e;
    uint base = which == 0u ? 0u : pc.v_off;
    Words s = Words(pc.stage);
    uint bits;
    if (pc.src_type == SRC_F32) {
        bits = s.w[base + idx];
    } else {
        uint word = s.w[base + (idx >> 1)];
        bits = (idx & 1u) != 0u ? (word >> 16) : (word & 0xffffu);
    }
    if (pc.src_type == STORAGE_TYPE) return bits;
    float x = pc.src_type == SRC_F32 ? uintBitsToFloat(bits)
            : pc.src_type == SRC_BF16 ? uintBitsToFloat(bits << 16) : unpackHalf2x16(bits).x;
#if STORAGE_F16
    return f32_to_f16(x);
#elif STORAGE_BF16
    return f32_to_bf16(x);
#else
    return floatBitsToUint(x);
#endif
}

void store_row(uint which, uvec2 tab, uint row, uint t, uint g)
{
#if STORAGE_16
    uint W = pc.d >> 1;
#else
    uint W = pc.d;
#endif
    Words dst = Words(chunk_addr(tab, row, pc.kv_shift));
    uint off = chunk_off(row, pc.kv_shift, W);
    for (uint w = gl_LocalInvocationID.x; w < W; w += gl_WorkGroupSize.x) {
#if STORAGE_16
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
#if STORAGE_16
    uint W = pc.u_pad >> 1;
#else
    uint W = pc.u_pad;
#endif
    Words dst = Words(chunk_addr(pc.kd_tab, row, pc.kd_shift));
    uint off = chunk_off(row, pc.kd_shift, W);
    for (uint w = gl_LocalInvocationID.x; w < W; w += gl_WorkGroupSize.x) {
#if STORAGE_16
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
