#version 450
/* fetch (FASA-M, placement OFFLOAD): recorded by fac after the top-k.
 * CPU statement: src/cpu/cpu_kernels.c count_offload_rows and the row-cache
 * policy of src/rowcache.c (followed exactly, so hits and bytes agree with
 * every backend).
 *
 * phase 0, one workgroup per KV head g:
 *   1. the distinct tokens N of the group's selection rows, ascending: a
 *      bitmap over the tokens (atomicOr), then a workgroup prefix sum of the
 *      words' popcounts writes them in order.  The bitmap is cleared by the
 *      step prologue's fill (it lies in the scratch's cleared region).
 *   mode 0 (DIRECT): only counts |N| (fac reads the rows in place).
 *   mode 1 (STAGED, no row cache): token N[i] gets staging slot i; the
 *      selection is remapped by a binary search in N.
 *   mode 2 (STAGED with a row cache of R slots per (layer, KV head)):
 *      hits = tokens of N already resident (token -> slot map); misses take
 *      victims in the policy's order and are placed in ascending token order.
 *      The victim order "free slots by slot, then resident slots by (stamp of
 *      last need, slot)" is kept as the list of resident slots sorted by
 *      (stamp, slot): every slot of N gets the newest stamp, so the next list
 *      is the old one without N's slots, followed by N's slots by slot index
 *      (two index-ordered compactions; no stamps need to be stored).
 *      A truncation pending for the layer (tokens >= trunc) is applied first.
 *   The head's counters (rows needed, hits) live in host-visible memory and
 *   are only ever written by the head's own workgroup: no atomics; 64-bit
 *   totals as (lo, hi) with a carry.  Workgroup 0 also counts the step.
 * phase 1, grid (ceil(misses bound / RPW), Hkv): copies the K and V rows of
 *   the misses from the offloaded arrays into the device slot arrays (16-byte
 *   loads where rows and chunks allow), RPW rows per workgroup.
 * fac then reads the slot arrays through the remapped selection: the same
 * values in the same order as in place, so outputs are bit-identical.
 * No barrier sits inside a loop (llvmpipe, docs/VULKAN.md §8). */
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in; /* a multiple of 32 (wg_scan.glsl) */
layout(constant_id = 1) const uint RPW = 16u; /* rows per copy workgroup (VK_FETCH_RPW) */
#include "wg_scan.glsl"

/* Written and read back by other invocations of the workgroup. */
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer CWords { uint w[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Quads { uvec4 q[]; };

layout(push_constant) uniform Push {
    uvec2 scratch;          /* selection, remap and the fetch area (word offsets below) */
    uvec2 state;            /* mode 2: the layer's row-cache state */
    uvec2 counters;         /* host-visible: [Hkv][4] needed lo/hi, hits lo/hi; steps lo/hi */
    uvec2 src_k, src_v;     /* chunk tables of the offloaded K and V of the layer */
    uvec2 dst_k, dst_v;     /* chunk tables of the slot arrays */
    uint sel_off, remap_off, fs_off, max_n_fac;
    uint rpg, n_fac, L, capacity;   /* rpg: selection rows per KV head */
    uint rmax, slots, trunc, mode;  /* slots: R (mode 2), trunc: 0xffffffff = none */
    uint phase, kv_stride, kv_shift, dst_shift;
    uint W, flags;                  /* words per row; 1 = 16-byte copies, 2 = 16-bit token map */
} pc;

#define WG gl_WorkGroupSize.x
#define NONE 0xffffffffu

/* Fetch area of the scratch (words from fs_off):
 *   bits [Hkv][words] | sflag [Hkv][R]       cleared at every sparse step
 *   per head: need [rmax] | mtok [rmax] | mslot [rmax] | vict [R] | info [4] */
uint words() { return (pc.capacity + 31u) / 32u; }
uint work_at(uint hkv, uint g)
{
    return pc.fs_off + hkv * (words() + pc.slots) + g * (3u * pc.rmax + pc.slots + 4u);
}

/* Row-cache state of the layer (words): lst [Hkv][4] (list length, current
 * list) | map [Hkv][mapw] | stok [Hkv][R] | lists [Hkv][2][R].  The token ->
 * slot map takes 16 bits per token when R < 65535 (flag 2): it is the
 * largest part of the device-resident state (capacity entries per head). */
bool map16() { return (pc.flags & 2u) != 0u; }
uint mapw() { return map16() ? (pc.capacity + 1u) / 2u : pc.capacity; }
uint st_map(uint hkv, uint g) { return hkv * 4u + g * mapw(); }
uint st_stok(uint hkv, uint g) { return hkv * (4u + mapw()) + g * pc.slots; }
uint st_list(uint hkv, uint g, uint which)
{
    return hkv * (4u + mapw() + pc.slots) + (2u * g + which) * pc.slots;
}

/* Slot of token t, NONE if not resident. */
uint map_get(CWords st, uint map, uint t)
{
    if (!map16()) return st.w[map + t];
    uint h = (st.w[map + (t >> 1)] >> ((t & 1u) * 16u)) & 0xffffu;
    return h == 0xffffu ? NONE : h;
}

/* Other invocations write the other half of the word: two atomics on
 * disjoint bits. */
void map_set(CWords st, uint map, uint t, uint sl)
{
    if (!map16()) {
        st.w[map + t] = sl;
        return;
    }
    uint sh = (t & 1u) * 16u;
    atomicAnd(st.w[map + (t >> 1)], ~(0xffffu << sh));
    atomicOr(st.w[map + (t >> 1)], (sl & 0xffffu) << sh);
}

/* The contiguous share [lo, hi) of n items of this invocation: items in
 * invocation order cover the range in order (index-ordered compaction). */
void share(uint n, out uint lo, out uint hi)
{
    uint per = (n + WG - 1u) / WG;
    lo = min(gl_LocalInvocationID.x * per, n);
    hi = min(lo + per, n);
}

uint sel_index(uint g, uint i)
{
    uint r = i / pc.n_fac;
    return (g * pc.rpg + r) * pc.max_n_fac + (i - r * pc.n_fac);
}

void add64(CWords c, uint at, uint v)
{
    uint lo = c.w[at], nlo = lo + v;
    c.w[at] = nlo;
    if (nlo < lo) c.w[at + 1u] += 1u;
}

void count(uint g, uint hkv, uint needed, uint hits)
{
    if (gl_LocalInvocationID.x != 0u) return;
    CWords c = CWords(pc.counters);
    add64(c, g * 4u, needed);
    add64(c, g * 4u + 2u, hits);
    if (g == 0u) add64(c, hkv * 4u, 1u);
}

/* Step 1: the distinct tokens of the group, ascending, into need[]; returns |N|. */
uint distinct_tokens(uint g, uint need)
{
    CWords s = CWords(pc.scratch);
    uint bits = pc.fs_off + g * words(), n_ent = pc.rpg * pc.n_fac;
    for (uint i = gl_LocalInvocationID.x; i < n_ent; i += WG) {
        uint t = s.w[pc.sel_off + sel_index(g, i)];
        atomicOr(s.w[bits + (t >> 5)], 1u << (t & 31u));
    }
    memoryBarrierBuffer();
    barrier();
    uint lo, hi, cnt = 0u, n;
    share((pc.L + 31u) / 32u, lo, hi);
    for (uint w = lo; w < hi; w++) cnt += bitCount(s.w[bits + w]);
    uint at = wg_exclusive_scan(cnt, n);
    if (pc.mode == 0u) return n;
    for (uint w = lo; w < hi; w++) {
        uint x = s.w[bits + w];
        while (x != 0u) {
            s.w[need + at++] = w * 32u + uint(findLSB(x));
            x &= x - 1u;
        }
    }
    memoryBarrierBuffer();
    barrier();
    return n;
}

/* mode 1: slot i for N[i]; the selection remapped by binary search. */
void staging(uint g, uint work, uint n)
{
    CWords s = CWords(pc.scratch);
    uint need = work, mtok = work + pc.rmax, mslot = work + 2u * pc.rmax;
    for (uint i = gl_LocalInvocationID.x; i < n; i += WG) {
        s.w[mtok + i] = s.w[need + i];
        s.w[mslot + i] = i;
    }
    for (uint i = gl_LocalInvocationID.x; i < pc.rpg * pc.n_fac; i += WG) {
        uint at = sel_index(g, i), t = s.w[pc.sel_off + at], a = 0u, b = n;
        while (a < b) {
            uint mid = (a + b) >> 1;
            if (s.w[need + mid] < t) a = mid + 1u; else b = mid;
        }
        s.w[pc.remap_off + at] = a;
    }
}

/* mode 2, before the lookups: forget the rows of tokens >= trunc. */
void truncate_rows(CWords st, uint map, uint stok)
{
    if (pc.trunc == NONE) return; /* uniform */
    for (uint sl = gl_LocalInvocationID.x; sl < pc.slots; sl += WG) {
        uint t = st.w[stok + sl];
        if (t != NONE && t >= pc.trunc) {
            map_set(st, map, t, NONE);
            st.w[stok + sl] = NONE;
        }
    }
    memoryBarrierBuffer();
    barrier();
}

/* Victims in policy order into vict[]: free slots by slot, then the
 * resident slots of the current list (stamp order) not needed now.
 * Returns their number (at least the misses: decode.c keeps R >= |N|). */
uint victims(CWords st, CWords s, uint stok, uint list, uint list_n, uint sflag, uint vict)
{
    uint lo, hi, c = 0u, n_free, n_old;
    share(pc.slots, lo, hi);
    for (uint sl = lo; sl < hi; sl++) c += st.w[stok + sl] == NONE ? 1u : 0u;
    uint at = wg_exclusive_scan(c, n_free);
    for (uint sl = lo; sl < hi; sl++)
        if (st.w[stok + sl] == NONE) s.w[vict + at++] = sl;
    share(list_n, lo, hi);
    c = 0u;
    for (uint j = lo; j < hi; j++) {
        uint sl = st.w[list + j];
        c += st.w[stok + sl] != NONE && s.w[sflag + sl] == 0u ? 1u : 0u;
    }
    at = n_free + wg_exclusive_scan(c, n_old);
    for (uint j = lo; j < hi; j++) {
        uint sl = st.w[list + j];
        if (st.w[stok + sl] != NONE && s.w[sflag + sl] == 0u) s.w[vict + at++] = sl;
    }
    memoryBarrierBuffer();
    barrier();
    return n_free + n_old;
}

/* The next list: old entries still resident and not needed now (stamp
 * order kept), then every slot of N by slot index (the newest stamp).
 * Returns its length. */
uint next_list(CWords st, CWords s, uint stok, uint list, uint list_n, uint sflag, uint out_list)
{
    uint lo, hi, c = 0u, k1, k2;
    share(list_n, lo, hi);
    for (uint j = lo; j < hi; j++) {
        uint sl = st.w[list + j];
        c += st.w[stok + sl] != NONE && s.w[sflag + sl] == 0u ? 1u : 0u;
    }
    uint at = wg_exclusive_scan(c, k1);
    for (uint j = lo; j < hi; j++) {
        uint sl = st.w[list + j];
        if (st.w[stok + sl] != NONE && s.w[sflag + sl] == 0u) st.w[out_list + at++] = sl;
    }
    share(pc.slots, lo, hi);
    c = 0u;
    for (uint sl = lo; sl < hi; sl++) c += s.w[sflag + sl];
    at = k1 + wg_exclusive_scan(c, k2);
    for (uint sl = lo; sl < hi; sl++)
        if (s.w[sflag + sl] != 0u) st.w[out_list + at++] = sl;
    return k1 + k2;
}

/* mode 2: the row-cache policy; returns the hits. */
uint row_cache(uint g, uint hkv, uint work, uint n)
{
    CWords st = CWords(pc.state), s = CWords(pc.scratch);
    uint map = st_map(hkv, g), stok = st_stok(hkv, g), lst = g * 4u;
    uint need = work, mtok = work + pc.rmax, mslot = work + 2u * pc.rmax, vict = work + 3u * pc.rmax;
    uint sflag = pc.fs_off + hkv * words() + g * pc.slots;
    uint list_n = st.w[lst], cur = st.w[lst + 1u] & 1u;
    uint list = st_list(hkv, g, cur);
    truncate_rows(st, map, stok);
    uint lo, hi, c = 0u, m;
    share(n, lo, hi); /* hits mark their slot as needed */
    for (uint i = lo; i < hi; i++) {
        uint sl = map_get(st, map, s.w[need + i]);
        if (sl != NONE) s.w[sflag + sl] = 1u;
        else c++;
    }
    memoryBarrierBuffer();
    uint q = wg_exclusive_scan(c, m); /* rank of this share's first miss */
    uint n_vict = m > 0u ? victims(st, s, stok, list, list_n, sflag, vict) : 0u;
    for (uint i = lo; i < hi; i++) { /* misses in ascending token order */
        uint t = s.w[need + i];
        if (map_get(st, map, t) != NONE) continue;
        if (q >= n_vict) break; /* never with R >= |N|; keeps a broken state in bounds */
        uint sl = s.w[vict + q], old = st.w[stok + sl];
        if (old != NONE) map_set(st, map, old, NONE); /* old is not in N */
        st.w[stok + sl] = t;
        map_set(st, map, t, sl);
        s.w[sflag + sl] = 1u;
        s.w[mtok + q] = t;
        s.w[mslot + q] = sl;
        q++;
    }
    memoryBarrierBuffer();
    barrier();
    for (uint i = gl_LocalInvocationID.x; i < pc.rpg * pc.n_fac; i += WG) {
        uint at = sel_index(g, i);
        s.w[pc.remap_off + at] = min(map_get(st, map, s.w[pc.sel_off + at]), pc.slots - 1u); /* in bounds */
    }
    uint next_n = next_list(st, s, stok, list, list_n, sflag, st_list(hkv, g, cur ^ 1u));
    if (gl_LocalInvocationID.x == 0u) {
        st.w[lst] = next_n;
        st.w[lst + 1u] = cur ^ 1u;
        s.w[work + 3u * pc.rmax + pc.slots] = m;
    }
    return n - m;
}

void policy()
{
    uint g = gl_WorkGroupID.x, hkv = gl_NumWorkGroups.x;
    uint work = work_at(hkv, g);
    uint n = distinct_tokens(g, work);
    uint hits = 0u;
    if (pc.mode == 1u) {
        staging(g, work, n);
        if (gl_LocalInvocationID.x == 0u) CWords(pc.scratch).w[work + 3u * pc.rmax + pc.slots] = n;
    } else if (pc.mode == 2u) {
        hits = row_cache(g, hkv, work, n);
    }
    count(g, hkv, n, hits);
}

/* One row of `words` words from (src chunk table, row) to (dst table, row). */
void copy_row(uvec2 src_tab, uint src_row, uvec2 dst_tab, uint dst_row, uint part, uint parts)
{
    uvec2 sa = chunk_addr(src_tab, src_row, pc.kv_shift), da = chunk_addr(dst_tab, dst_row, pc.dst_shift);
    uint so = chunk_off(src_row, pc.kv_shift, pc.W), dof = chunk_off(dst_row, pc.dst_shift, pc.W);
    if ((pc.flags & 1u) != 0u) Quads(da).q[dof / 4u + part] = Quads(sa).q[so / 4u + part];
    else Words(da).w[dof + part] = Words(sa).w[so + part];
}

void copy_misses()
{
    uint g = gl_WorkGroupID.y, hkv = gl_NumWorkGroups.y;
    uint work = work_at(hkv, g);
    Words s = Words(pc.scratch);
    uint m = s.w[work + 3u * pc.rmax + pc.slots], r0 = gl_WorkGroupID.x * RPW;
    if (r0 >= m) return;
    uint rows = min(RPW, m - r0), parts = (pc.flags & 1u) != 0u ? pc.W / 4u : pc.W;
    uint per_head = pc.mode == 2u ? pc.slots : pc.rmax;
    for (uint i = gl_LocalInvocationID.x; i < rows * parts; i += WG) {
        uint r = i / parts, part = i - r * parts;
        uint t = s.w[work + pc.rmax + r0 + r], sl = s.w[work + 2u * pc.rmax + r0 + r];
        copy_row(pc.src_k, g * pc.kv_stride + t, pc.dst_k, g * per_head + sl, part, parts);
        copy_row(pc.src_v, g * pc.kv_stride + t, pc.dst_v, g * per_head + sl, part, parts);
    }
}

void main()
{
    if (pc.phase == 0u) policy();
    else copy_misses();
}
