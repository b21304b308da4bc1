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
 * counter, digit. */
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
    uvec2 scratch;
    uint hist_off;   /* histogram of this digit: [rows][256] */
    uint state_off;  /* [rows][8] */
    uint sel_off;    /* [rows][max_n_fac] */
    uint digit;      /* 0..3 */
    uint k;          /* top-k size after the forced tokens */
    uint n_sink, n_recent, L, max_n_fac;
} pc;

shared uint suffix[256];

void main()
{
    uint r = gl_WorkGroupID.x, b = gl_LocalInvocationID.x;
    Words s = Words(pc.scratch);
    uint st = pc.state_off + r * 8u;
    uint prefix = 0u, k_rem = pc.k;
    if (pc.digit == 0u) {
        uint n_forced = pc.n_sink + pc.n_recent;
        for (uint i = b; i < n_forced; i += 256u)
            s.w[pc.sel_off + r * pc.max_n_fac + i] = i < pc.n_sink ? i : pc.L - pc.n_recent + (i - pc.n_sink);
    } else {
        prefix = s.w[st];
        k_rem = s.w[st + 1u];
    }
    uint cnt = s.w[pc.hist_off + r * 256u + b];
    suffix[b] = cnt;
    barrier();
    for (uint off = 1u; off < 256u; off <<= 1) {
        uint add = b + off < 256u ? suffix[b + off] : 0u;
        barrier();
        suffix[b] += add;
        barrier();
    }
    uint incl = suffix[b];     /* keys in bins >= b */
    uint above = incl - cnt;   /* keys in bins > b */
    if (above < k_rem && incl >= k_rem) {
        s.w[st] = prefix | (b << (24u - 8u * pc.digit));
        s.w[st + 1u] = k_rem - above;
        s.w[st + 2u] = cnt;
        s.w[st + 4u] = pc.digit;
    }
}
