#version 450
/* convert: q and o of a decode step in a 16-bit io type
 * (fasa_decode_desc.q_type / o_type), inside the step scratch.  mode 0 and
 * 1 widen the 2 * n_words fp16 (0) or bf16 (1) elements at word src (two
 * per word, low half first) to fp32 at word dst, exactly; mode 2 and 3
 * round the 2 * n_words fp32 values at src to fp16 (2) or bf16 (3) at dst,
 * to nearest even (half.glsl, bit-exact with src/half.c).  One thread per
 * 16-bit word pair.  CPU statement: src/cpu/cpu_kernels.c, step_q / finish_o. */
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "half.glsl"

layout(local_size_x_id = 0) in;

#define PARAMS                                                                                     \
    uvec2 scratch;                                                                                 \
    uint src, dst, n_words, mode;
#define BATCH_ITEM() pc.scratch = item_addr(pc.scratch, bpc.item_words);
#include "params.glsl"

void main()
{
    LOAD_PARAMS();
    uint w = gl_GlobalInvocationID.x;
    if (w >= pc.n_words) return;
    Words s = Words(pc.scratch);
    if (pc.mode < 2u) {
        uint x = s.w[pc.src + w];
        vec2 v = pc.mode == 0u ? unpackHalf2x16(x) : vec2(uintBitsToFloat(x << 16), uintBitsToFloat(x & 0xffff0000u));
        s.w[pc.dst + 2u * w] = floatBitsToUint(v.x);
        s.w[pc.dst + 2u * w + 1u] = floatBitsToUint(v.y);
    } else {
        float a = uintBitsToFloat(s.w[pc.src + 2u * w]), b = uintBitsToFloat(s.w[pc.src + 2u * w + 1u]);
        uint lo = pc.mode == 2u ? f32_to_f16(a) : f32_to_bf16(a);
        uint hi = pc.mode == 2u ? f32_to_f16(b) : f32_to_bf16(b);
        s.w[pc.dst + w] = lo | (hi << 16);
    }
}
