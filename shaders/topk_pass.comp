#version 450
/* topk_pass: one tile (TILE = workgroup size x EPT consecutive tokens) of one
 * selection row per workgroup.  Elements whose compared digit is above the
 * chosen bin are winners: appended to the row's selection (order within the
 * selection is free, the set is exact).  Elements in the chosen bin stay
 * candidates: compacted in index order into the tile's own segment of the
 * candidate array, and counted in the histogram of the next digit.
 *   mode 0  source = scores in [lo, hi), compare digit 0, histogram digit 1
 *   mode 1  source = candidates, compare digit at cmp_shift, histogram the next
 *   mode 2  source = candidates, compare the last digit: keys above the
 *           threshold win; keys equal to it (ties) stay, counted per tile;
 *           when every tie is needed they win at once
 *   mode 3  source = the ties: the k_rem lowest-index ones win (tile prefix
 *           of the tie counts + rank inside the tile)
 * CPU statement: src/select.c (ties to the lowest index, NaN lowest). */
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
#define EPT 16u
#include "wg_scan.glsl"

#define PARAMS                                                                                     \
    uvec2 sc_tab, cand_tab, scratch;                                                               \
    uint sc_stride, sc_shift, lo, hi;                                                              \
    uint tile0, mode, cmp_shift, hist_off;                                                         \
    uint state_off, tcnt_off, ttie_off, sel_off;                                                   \
    uint n_tiles, max_n_fac, n_forced, pad0;
#define BATCH_ITEM()                                                                               \
    pc.scratch = item_addr(pc.scratch, bpc.item_words);                                            \
    pc.sc_tab = item_addr(pc.sc_tab, 2u);                                                          \
    pc.cand_tab = item_addr(pc.cand_tab, 2u);                                                      \
    pc.hi = item_word(ITEM_L) - (pc.n_forced - pc.lo);
#include "params.glsl"

shared uint shist[256];
shared uint sh_base;

uint tie_prefix(uint r, uint tile)
{
    Words s = Words(pc.scratch);
    uint sum = 0u;
    for (uint t = pc.tile0 + gl_LocalInvocationID.x; t < tile; t += gl_WorkGroupSize.x)
        sum += s.w[pc.ttie_off + r * pc.n_tiles + t];
    uint total;
    wg_exclusive_scan(sum, total);
    return total;
}

void main()
{
    LOAD_PARAMS();
#if BATCH
    if (pc.tile0 + gl_WorkGroupID.x > (pc.hi - 1u) / (gl_WorkGroupSize.x * EPT)) return; /* past this item's tiles */
#endif
    uint lid = gl_LocalInvocationID.x;
    uint tile = pc.tile0 + gl_WorkGroupID.x, r = gl_WorkGroupID.y;
    uint T = gl_WorkGroupSize.x * EPT;
    Words s = Words(pc.scratch);
    uint st = pc.state_off + r * 8u;
    uint prefix = s.w[st], k_rem = s.w[st + 1u], n_bin = s.w[st + 2u];
    bool all_ties = k_rem == n_bin;
    uint tcnt_at = pc.tcnt_off + r * pc.n_tiles + tile;
    uint cnt = pc.mode == 0u ? T : s.w[tcnt_at];
    if (cnt == 0u || (pc.mode == 3u && all_ties)) { /* uniform */
        /* an empty tile has no ties: pass 3 sums these counts over tiles */
        if (pc.mode == 2u && lid == 0u) s.w[pc.ttie_off + r * pc.n_tiles + tile] = 0u;
        return;
    }

    uint f_tile = r * pc.sc_stride + tile * T;
    /* a tile never straddles a chunk: sc_stride and chunks are multiples of T */
    Floats sc = Floats(chunk_addr(pc.sc_tab, f_tile, pc.sc_shift));
    Words cand = Words(chunk_addr(pc.cand_tab, f_tile, pc.sc_shift));
    uint cand_base = chunk_off(f_tile, pc.sc_shift, 1u);
    uint sc_base = cand_base - tile * T; /* + j: token j of this tile */

    for (uint i = lid; i < 256u; i += gl_WorkGroupSize.x) shist[i] = 0u;

    uint idx[EPT], key[EPT];
    uint valid = 0u;
    [[unroll]] for (uint i = 0u; i < EPT; i++) {
        uint e = lid * EPT + i;
        uint j;
        bool ok;
        if (pc.mode == 0u) {
            j = tile * T + e;
            ok = j >= pc.lo && j < pc.hi;
        } else {
            ok = e < cnt;
            j = ok ? cand.w[cand_base + e] : 0u;
        }
        idx[i] = j;
        key[i] = ok ? score_key(sc.f[sc_base + j]) : 0u;
        if (ok) valid |= 1u << i;
    }

    uint b = (prefix >> pc.cmp_shift) & 255u;
    uint win = 0u, keep = 0u;
    if (pc.mode == 3u) {
        uint tp = tie_prefix(r, tile);
        uint total;
        uint rank = wg_exclusive_scan(bitCount(valid), total);
        uint n_win = k_rem > tp ? min(k_rem - tp, total) : 0u;
        if (lid == 0u && n_win > 0u) sh_base = atomicAdd(s.w[st + 3u], n_win);
        barrier();
        uint out_at = pc.sel_off + r * pc.max_n_fac + pc.n_forced + sh_base;
        [[unroll]] for (uint i = 0u; i < EPT; i++)
            if ((valid & (1u << i)) != 0u && rank < n_win) s.w[out_at + rank++] = idx[i];
        return;
    }
    [[unroll]] for (uint i = 0u; i < EPT; i++) {
        if ((valid & (1u << i)) == 0u) continue;
        uint dgt = (key[i] >> pc.cmp_shift) & 255u;
        if (dgt > b || (pc.mode == 2u && dgt == b && all_ties)) win |= 1u << i;
        else if (dgt == b) keep |= 1u << i;
    }
    uint total;
    uint pos = wg_exclusive_scan(bitCount(win) | (bitCount(keep) << 16), total);
    uint win_total = total & 0xffffu, keep_total = total >> 16;
    if (lid == 0u) {
        if (win_total > 0u) sh_base = atomicAdd(s.w[st + 3u], win_total);
        s.w[tcnt_at] = keep_total;
        if (pc.mode == 2u) s.w[pc.ttie_off + r * pc.n_tiles + tile] = keep_total;
    }
    barrier();
    uint wpos = pc.sel_off + r * pc.max_n_fac + pc.n_forced + sh_base + (pos & 0xffffu);
    uint kpos = cand_base + (pos >> 16);
    [[unroll]] for (uint i = 0u; i < EPT; i++) {
        if ((win & (1u << i)) != 0u) s.w[wpos++] = idx[i];
        if ((keep & (1u << i)) != 0u) {
            cand.w[kpos++] = idx[i];
            if (pc.mode < 2u) atomicAdd(shist[(key[i] >> (pc.cmp_shift - 8u)) & 255u], 1u);
        }
    }
    barrier();
    if (pc.mode < 2u) {
        for (uint i = lid; i < 256u; i += gl_WorkGroupSize.x) {
            uint c = shist[i];
            if (c != 0u) atomicAdd(s.w[pc.hist_off + r * 256u + i], c);
        }
    }
}
