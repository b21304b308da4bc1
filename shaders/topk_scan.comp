#version 450
/* topk_scan: one workgroup per selection row picks the digit of the radix
 * select.  From the 256-bin histogram of the current digit (bits
 * 31-8*digit .. 24-8*digit) of the keys still matching the prefix, it finds
 * the bin holding the k_rem-th largest key, fixes that digit in the prefix
 * and subtracts the counts above it from k_rem.  Digit 0 also initialises the
 * row state and writes the forced tokens (sinks, then the recent window)
 * at the head of the row's selection.
 * CPU statement: src/select.c radix_threshold and src/cpu/cpu_kernels.c topk_row.
 * Row state (8 words): prefix, k_rem, n_bin (keys in the chosen bin), winner
 * counter, digit.  The bin search is two-level (16 segments of 16 bins)
 * with one barrier; barriers in loops are slow on llvmpipe. */
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 64) in;

/* hist_off: histogram of this digit, [rows][256]; state_off: [rows][8];
 * sel_off: [rows][max_n_fac]; digit 0..3; k: top-k size after the forced
 * tokens */
#define PARAMS                                                                                     \
    uvec2 scratch;                                                                                 \
    uint hist_off, state_off, sel_off, digit;                                                      \
    uint k, n_sink, n_recent, L;                                                                   \
    uint max_n_fac, pad0;
#define BATCH_ITEM()                                                                               \
    pc.scratch = item_addr(pc.scratch, bpc.item_words);                                            \
    pc.L = item_word(ITEM_L);
#include "params.glsl"

shared uint seg[16];

void main()
{
    LOAD_PARAMS();
    uint r = gl_WorkGroupID.x, lid = gl_LocalInvocationID.x;
    Words s = Words(pc.scratch);
    uint st = pc.state_off + r * 8u, h = pc.hist_off + r * 256u;
    if (pc.digit == 0u) {
        uint n_forced = pc.n_sink + pc.n_recent;
        for (uint i = lid; i < n_forced; i += gl_WorkGroupSize.x)
            s.w[pc.sel_off + r * pc.max_n_fac + i] = i < pc.n_sink ? i : pc.L - pc.n_recent + (i - pc.n_sink);
    }
    if (lid < 16u) {
        uint sum = 0u;
        for (uint b = 0u; b < 16u; b++) sum += s.w[h + lid * 16u + b];
        seg[lid] = sum;
    }
    barrier();
    if (lid != 0u) return;
    uint prefix = pc.digit == 0u ? 0u : s.w[st];
    uint k_rem = pc.digit == 0u ? pc.k : s.w[st + 1u];
    uint above = 0u, sg = 15u;
    while (sg > 0u && above + seg[sg] < k_rem) above += seg[sg--];
    uint b = sg * 16u + 15u, cnt = s.w[h + b];
    while (b > sg * 16u && above + cnt < k_rem) {
        above += cnt;
        cnt = s.w[h + --b];
    }
    s.w[st] = prefix | (b << (24u - 8u * pc.digit));
    s.w[st + 1u] = k_rem - above;
    s.w[st + 2u] = cnt;
    s.w[st + 4u] = pc.digit;
}
