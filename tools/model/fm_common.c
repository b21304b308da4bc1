#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* posix_memalign */
#endif
#include "fm_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *fm_status_name(fm_status status)
{
    switch (status) {
    case FM_OK: return "FM_OK";
    case FM_ERR_ARG: return "FM_ERR_ARG";
    case FM_ERR_IO: return "FM_ERR_IO";
    case FM_ERR_PARSE: return "FM_ERR_PARSE";
    case FM_ERR_UNSUPPORTED: return "FM_ERR_UNSUPPORTED";
    case FM_ERR_MISSING: return "FM_ERR_MISSING";
    case FM_ERR_MISMATCH: return "FM_ERR_MISMATCH";
    case FM_ERR_NOMEM: return "FM_ERR_NOMEM";
    case FM_ERR_CAPACITY: return "FM_ERR_CAPACITY";
    case FM_ERR_CALLBACK: return "FM_ERR_CALLBACK";
    case FM_ERR_THREAD: return "FM_ERR_THREAD";
    }
    return "FM_ERR_UNKNOWN";
}

fm_status fm_fail(fm_error *err, fm_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

fm_status fm_wrap(fm_error *err, fm_status status, const char *fmt, ...)
{
    if (err) {
        char prefix[FM_ERROR_MSG_SIZE], old[FM_ERROR_MSG_SIZE];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        /* Truncation is intended: keep as much of both parts as fits. */
        memcpy(old, err->msg, sizeof old);
        old[sizeof old - 1] = '\0';
        size_t np = strlen(prefix), no = strlen(old), cap = sizeof err->msg - 1, o = 0;
        np = np < cap ? np : cap;
        memcpy(err->msg, prefix, np);
        o = np;
        if (o + 2 <= cap) {
            memcpy(err->msg + o, ": ", 2);
            o += 2;
        }
        no = no < cap - o ? no : cap - o;
        memcpy(err->msg + o, old, no);
        err->msg[o + no] = '\0';
        err->status = status;
    }
    return status;
}

void fm_sanitize(char *dst, size_t dst_size, const void *src, size_t len, size_t max_len)
{
    const unsigned char *s = src;
    size_t n = len < max_len ? len : max_len, o = 0;
    if (dst_size == 0)
        return;
    for (size_t i = 0; i < n && o + 1 < dst_size; i++)
        dst[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (len > n && o + 4 < dst_size) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

void *fm_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = 1;
    if (posix_memalign(&p, 64, bytes) != 0)
        return NULL;
    return p;
}

void fm_free(void *p)
{
    free(p);
}
