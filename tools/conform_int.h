/* Internals of the conformance runner shared by conform.c and
 * conform_paged.c (not used outside tools/conform*.c). */
#ifndef FASA_CONFORM_INT_H
#define FASA_CONFORM_INT_H

#include "conform.h"

#include <stddef.h>

#define GUARD 64                 /* poisoned elements before and after outputs */
#define POISON_BITS 0x7fc0badu   /* a NaN with a payload nobody writes */
#define POISON_INDEX (-777)
#define IO_GUARD 256             /* bytes before q and o in their buffers (offsets of the io decode) */
#define IO_POISON 0xa5

typedef struct case_data {
    float *q, *k, *v;            /* fp32 inputs: q [Hq][d], k/v [L][Hkv][d] */
    double *qd, *kd, *vd;        /* reference copies, k/v as stored */
    uint16_t *dims;              /* [Hq][2 n_tip] */
    float *o_buf, *score_buf;    /* poisoned, with guards */
    int32_t *sel_buf;
    uint8_t *o_io;               /* q/o cases: the io decode's o buffer as read back, IO_GUARD bytes
                                    of poison on either side (batch cases: the batched o) */
} case_data;

void conform__name_case(conform_case *c);
/* Marks r failed, keeping the first reason; returns true (for `return
 * conform__fail(...)` in checks). */
bool conform__fail(conform_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The case's inputs (synthesised from c->seed when given is NULL) and its
 * poisoned output buffers; false when out of host memory (free it anyway). */
bool conform__make_data(const conform_case *c, const conform_data *given, case_data *cd);
void conform__free_data(case_data *cd);
/* Every fp64 check of one decode_host step (path, guards, scores,
 * selection, output, and the io o when cd->o_io is set). */
void conform__compare(const conform_case *c, case_data *cd, const fasa_decode_outputs *out, conform_result *r,
                      conform_capture *cap);
/* The same step again through fasa_decode with q and o in c's io types
 * (dd->sequence is kept); fills cd->o_io. */
fasa_status conform__decode_io(fasa_context *ctx, fasa_kv_cache *cache, uint32_t layer, const fasa_decode_desc *dd,
                               const conform_case *c, case_data *cd);
size_t conform__io_size(fasa_io_type t);
void conform__io_store(void *dst, size_t i, double x, fasa_io_type t);

#endif
