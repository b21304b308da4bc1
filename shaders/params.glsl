/* Where a kernel's parameters come from.  The includer defines PARAMS, the
 * member list of its parameter block, and BATCH_ITEM(), then includes this
 * file; main() starts with LOAD_PARAMS().
 *
 * A single step (BATCH 0) passes them as push constants, as always.  The
 * batch variants (BATCH 1, compiled from the same source by
 * shaders/meson.build; recorded by src/vulkan/vk_batch.c) run one dispatch
 * for a run of items, the item in gl_WorkGroupID.z.  The push constants
 * hold a template (the same struct, std430 in both cases: the parameters
 * of the run's longest item) and the strides between items: item z's
 * scratch region lies z * item_words words after item 0's (every region
 * has the same layout), its score and candidate chunk tables 8 z bytes
 * after item 0's.  What depends on the item's length comes from its record
 * in the item list (ITEM_*).  BATCH_ITEM() moves those fields of pc to item
 * z.  Parameters are pushed, not loaded, wherever they can be: llvmpipe
 * loads device memory one invocation at a time, while push constants and
 * the workgroup id are uniform.  Each item computes with the values of its
 * single step, so it writes the same o bit for bit. */
#ifndef BATCH
#define BATCH 0
#endif

#if BATCH
struct Params {
    PARAMS
};
layout(push_constant) uniform BatchPush {
    Params t;         /* the template */
    uint item_words;  /* scratch words per item */
    uint pad;
    uvec2 items;      /* uint[items][4] records: ITEM_* */
} bpc;
Params pc;

#define ITEM_L 0u       /* the item's length */
#define ITEM_SPLITS 1u  /* its attention splits */
#define ITEM_CPS 2u     /* its chunks per split */
#define ITEM_TABLE 3u   /* its block table: entries after the template's */

uint item_word(uint k) { return Words(bpc.items).w[4u * gl_WorkGroupID.z + k]; }

/* a + words words (64-bit address from 32-bit halves, with carry) */
uvec2 addr_add(uvec2 a, uint words)
{
    uint c;
    uint lo = uaddCarry(a.x, words * 4u, c);
    return uvec2(lo, a.y + c);
}

/* a + z * per_item words */
uvec2 item_addr(uvec2 a, uint per_item) { return addr_add(a, gl_WorkGroupID.z * per_item); }

#define LOAD_PARAMS() \
    pc = bpc.t;       \
    BATCH_ITEM()
#else
layout(push_constant) uniform Push {
    PARAMS
} pc;
#define LOAD_PARAMS()
#endif
