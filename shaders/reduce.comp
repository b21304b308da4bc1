#version 450
/* reduce: the split-K reduce of fac and dense.  One workgroup per query
 * head combines the partials (m, l, acc[d]) of its splits:
 * o = sum_s acc_s * exp(m_s - m) / sum_s l_s * exp(m_s - m), m = max_s m_s.
 * CPU statement: src/cpu/cpu_kernels.c reduce_partials. */
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MAXS = 256; /* splits per head */

#define PARAMS                                                                                     \
    uvec2 scratch;                                                                                 \
    uint part_off, o_off, d, n_splits;                                                             \
    uint maxs, pad0;
#define BATCH_ITEM()                                                                               \
    pc.scratch = item_addr(pc.scratch, bpc.item_words);                                            \
    pc.n_splits = item_word(ITEM_SPLITS);
#include "params.glsl"

shared float sw[MAXS];
shared float sl;

void main()
{
    LOAD_PARAMS();
    uint h = gl_WorkGroupID.x, lid = gl_LocalInvocationID.x;
    Floats f = Floats(pc.scratch);
    uint base = pc.part_off + h * pc.maxs * (pc.d + 2u);
    if (lid == 0u) {
        float m = NEG_START;
        for (uint s = 0u; s < pc.n_splits; s++) m = max(m, f.f[base + s * (pc.d + 2u)]);
        float l = 0.0;
        for (uint s = 0u; s < pc.n_splits; s++) {
            float w = exp(f.f[base + s * (pc.d + 2u)] - m);
            sw[s] = w;
            l += f.f[base + s * (pc.d + 2u) + 1u] * w;
        }
        sl = l > 0.0 ? 1.0 / l : 0.0;
    }
    barrier();
    for (uint c = lid; c < pc.d; c += gl_WorkGroupSize.x) {
        float o = 0.0;
        for (uint s = 0u; s < pc.n_splits; s++) o += f.f[base + s * (pc.d + 2u) + 2u + c] * sw[s];
        f.f[pc.o_off + h * pc.d + c] = o * sl;
    }
}
