/*
 * Shared status codes and error reporting for the SmolLM/Llama model engine
 * (tools/model).  Every fallible function returns an fm_status and, when the
 * caller passes a non-NULL fm_error, a message naming the key, tensor or
 * argument at fault.  Nothing here prints, aborts or exits.
 */
#ifndef FM_COMMON_H
#define FM_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef enum fm_status {
    FM_OK = 0,
    FM_ERR_ARG,          /* invalid argument from the caller                 */
    FM_ERR_IO,           /* file could not be opened, mapped or read          */
    FM_ERR_PARSE,        /* malformed file content                           */
    FM_ERR_UNSUPPORTED,  /* well-formed but not handled (version, type, ...)  */
    FM_ERR_MISSING,      /* a required key or tensor is absent                */
    FM_ERR_MISMATCH,     /* wrong type or shape of a key or tensor            */
    FM_ERR_NOMEM,        /* allocation failed                                 */
    FM_ERR_CAPACITY,     /* context (KV cache) full                           */
    FM_ERR_CALLBACK,     /* an attention callback reported failure            */
    FM_ERR_THREAD        /* a worker thread could not be started              */
} fm_status;

#define FM_ERROR_MSG_SIZE 512

typedef struct fm_error {
    fm_status status;
    char msg[FM_ERROR_MSG_SIZE];
} fm_error;

/* Short name of a status ("FM_ERR_PARSE"), never NULL. */
const char *fm_status_name(fm_status status);

/* Records status and a printf-style message in err (if non-NULL) and returns
 * status, so error paths read `return fm_fail(err, FM_ERR_PARSE, "...", ...)`. */
fm_status fm_fail(fm_error *err, fm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (adds context on the way up). */
fm_status fm_wrap(fm_error *err, fm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies at most max_len bytes of untrusted text into dst (size dst_size) with
 * non-printable bytes replaced by '?', for safe use in messages. */
void fm_sanitize(char *dst, size_t dst_size, const void *src, size_t len, size_t max_len);

/* Aligned allocation for float arrays (64-byte alignment); free with fm_free. */
void *fm_alloc(size_t bytes);
void fm_free(void *p);

#endif
