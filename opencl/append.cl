/*
 * append: writes the K and V rows of new tokens into one storage chunk of a
 * layer, plus the K_dom row (the union dims U_g of the stored K row, zero
 * padded to u_pad), exactly as fasa__cpu_append does.
 *
 * Source rows: k/v [n][Hkv][d] in the source dtype (src_type), starting at
 * element offsets k_off/v_off.  Storage chunk: heads [gk0, ...) with tpb
 * tokens each, first token t0: row (g - gk0) * tpb + (t - t0).
 * Grid: (tokens [tok_lo, tok_lo + n_tok), KV heads [g_lo, g_lo + n_g)).
 * udims/usize are the tables of every layer; this layer's start at tab_off
 * (= layer * Hkv).
 */
/* The K_dom row of a stored K row kr: its u union dims, zero padded. */
static inline void put_dom(__global store_t *dr, __global const store_t *kr, __global const ushort *dims, uint u,
                           uint u_pad)
{
    for (uint s = 0; s < u_pad; s++) dr[s] = s < u ? kr[dims[s]] : (store_t)0;
}

/* src_type: the sources' fasa_dtype (0 fp16, 1 fp32, 2 bf16).  Equal types
 * copy the bits, like the CPU's memcpy; others convert through the exact
 * fp32 value, rounding to nearest even (st1). */
__kernel __attribute__((reqd_work_group_size(WG_APPEND, 1, 1)))
void fasa_append(__global const uchar *ksrc, ulong k_off, __global const uchar *vsrc, ulong v_off,
                 uint src_type, uint first, uint hkv, uint d,
                 __global store_t *kdst, __global store_t *vdst, __global store_t *ddst,
                 uint tpb, uint gk0, uint t0, uint tok_lo, uint n_tok, uint g_lo,
                 uint has_dims, uint u_pad, __global const ushort *udims, __global const uint *usize,
                 uint tab_off)
{
    uint i = get_global_id(0);
    if (i >= n_tok) return;
    uint t = tok_lo + i, g = g_lo + get_global_id(1);
    size_t src = ((size_t)(t - first) * hkv + g) * d;
    size_t row = (size_t)(g - gk0) * tpb + (t - t0);
    __global store_t *kr = kdst + row * d;
    __global store_t *vr = vdst + row * d;
    if (src_type == STORE_TYPE) {
        __global const store_t *ks = (__global const store_t *)ksrc + k_off + src;
        __global const store_t *vs = (__global const store_t *)vsrc + v_off + src;
        for (uint c = 0; c < d; c++) {
            kr[c] = ks[c];
            vr[c] = vs[c];
        }
    } else {
        for (uint c = 0; c < d; c++) {
            st1(kr, c, ld_any(ksrc, k_off + src + c, src_type));
            st1(vr, c, ld_any(vsrc, v_off + src + c, src_type));
        }
    }
    if (!has_dims) return;
    put_dom(ddst + row * u_pad, kr, udims + ((size_t)tab_off + g) * u_pad, usize[tab_off + g], u_pad);
}

/*
 * sync: the K_dom rows of tokens [tok_lo, tok_lo + n_tok) of an external
 * cache (fasa_kv_cache_desc.external), cut from the engine's K in place:
 * element c of (KV head g, token t) at k_base + t * ts + g * hs + c, in the
 * cache dtype.  K_dom chunk and grid as for fasa_append.
 */
__kernel __attribute__((reqd_work_group_size(WG_APPEND, 1, 1)))
void fasa_sync(__global const store_t *ksrc, ulong k_base, uint ts, uint hs, __global store_t *ddst,
               uint tpb, uint gk0, uint t0, uint tok_lo, uint n_tok, uint g_lo, uint u_pad,
               __global const ushort *udims, __global const uint *usize, uint tab_off)
{
    uint i = get_global_id(0);
    if (i >= n_tok) return;
    uint t = tok_lo + i, g = g_lo + get_global_id(1);
    __global const store_t *kr = ksrc + k_base + (size_t)t * ts + (size_t)g * hs;
    size_t row = (size_t)(g - gk0) * tpb + (t - t0);
    put_dom(ddst + row * u_pad, kr, udims + ((size_t)tab_off + g) * u_pad, usize[tab_off + g], u_pad);
}
