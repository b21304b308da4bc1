/* Exclusive prefix sum over the invocations of a workgroup in local index
 * order (needed for index-ordered compaction).  Shared memory only: the
 * order of subgroup invocations is not tied to the local index by the spec.
 * The workgroup size must be a multiple of SCAN_SEG.  Contains barriers:
 * call from uniform control flow. */
#define SCAN_SEG 32u
shared uint scan_v[gl_WorkGroupSize.x];
shared uint scan_seg[gl_WorkGroupSize.x / SCAN_SEG + 1u];

uint wg_exclusive_scan(uint v, out uint total)
{
    uint lid = gl_LocalInvocationID.x;
    uint nseg = gl_WorkGroupSize.x / SCAN_SEG;
    scan_v[lid] = v;
    barrier();
    if (lid < nseg) {
        uint s = 0u;
        for (uint i = 0u; i < SCAN_SEG; i++) s += scan_v[lid * SCAN_SEG + i];
        scan_seg[lid] = s;
    }
    barrier();
    if (lid == 0u) {
        uint run = 0u;
        for (uint i = 0u; i < nseg; i++) {
            uint t = scan_seg[i];
            scan_seg[i] = run;
            run += t;
        }
        scan_seg[nseg] = run;
    }
    barrier();
    uint seg = lid / SCAN_SEG;
    uint p = scan_seg[seg];
    for (uint i = seg * SCAN_SEG; i < lid; i++) p += scan_v[i];
    total = scan_seg[nseg];
    barrier();
    return p;
}
