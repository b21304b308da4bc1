/* Declarations shared by libfasa's compute shaders.
 *
 * Every large array (K, V, K_dom, scores, candidates) is a table of chunks:
 * rows r live in chunk r >> shift at word (r & mask) * row_words.  The chunk
 * table holds one device address (uvec2) per chunk, so no array needs to fit
 * in one buffer or one descriptor (see docs/VULKAN.md).  Small per-step data
 * (q, o, histograms, selection, partials) lives in one scratch buffer whose
 * address and word offsets come in push constants. */
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require

layout(buffer_reference, std430, buffer_reference_align = 4) buffer Words { uint w[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Floats { float f[]; };
layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer Chunks { uvec2 a[]; };

/* Online-softmax start: finite, never -inf (llama.cpp PR 12776). */
const float NEG_START = -1.70141173e38; /* -FLT_MAX / 2 */
const float NEG_MAX = -3.40282347e38;  /* -FLT_MAX */

uvec2 chunk_addr(uvec2 table, uint row, uint shift)
{
    return Chunks(table).a[row >> shift];
}

uint chunk_off(uint row, uint shift, uint row_words)
{
    return (row & ((1u << shift) - 1u)) * row_words;
}

/* External K/V (an engine's buffer, fasa_kv_cache_desc.external): the row
 * of (KV head g, physical row t) starts t * ts + g * hs words after base.
 * The 64-bit byte address is formed from 32-bit halves with carries (no
 * int64 in the shaders).  Paged caches pass row_of(token), not the token. */
uvec2 ext_row(uvec2 base, uint t, uint ts, uint g, uint hs)
{
    uint th, tl, gh, gl, c0, c1;
    umulExtended(t, ts, th, tl);
    umulExtended(g, hs, gh, gl);
    uint wl = uaddCarry(tl, gl, c0), wh = th + gh + c0; /* words */
    uint lo = uaddCarry(base.x, wl << 2, c1);
    return uvec2(lo, base.y + ((wh << 2) | (wl >> 30)) + c1);
}

/* Paged caches (fasa_kv_external.block_size = 2^shift): the physical row
 * of logical token j of a sequence whose block table starts at `table`.
 * The one definition of src/internal.h fasa__row_of; scores, top-k and the
 * selection stay in logical tokens, only K, V and K_dom reads map. */
uint row_of(uvec2 table, uint shift, uint j)
{
    return (Words(table).w[j >> shift] << shift) | (j & ((1u << shift) - 1u));
}

/* Order-preserving key (src/select.c): larger score -> larger key, NaN -> 0,
 * -0 == +0. */
uint score_key(float f)
{
    uint u = floatBitsToUint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0u;
    if (u == 0x80000000u) u = 0u;
    return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
}
