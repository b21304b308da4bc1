/* Minimal test harness: CHECK counts and reports failures with file:line;
 * check_done() prints "N passed, N failed" and returns the exit status. */
#ifndef FASA_CHECK_H
#define FASA_CHECK_H

#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) {                                                             \
            check_passed++;                                                     \
        } else {                                                                \
            check_failed++;                                                     \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

/* A status check that also prints the context's message on failure. */
#define CHECK_STATUS(ctx, expr, want)                                           \
    do {                                                                        \
        fasa_status st_ = (expr);                                               \
        CHECK(st_ == (want), "%s returned %s, wanted %s (%s)", #expr,           \
              fasa_status_string(st_), fasa_status_string(want),                \
              (ctx) ? fasa_context_last_error(ctx) : "");                       \
    } while (0)

static inline int check_done(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
