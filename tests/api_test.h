/* The start and end shared by the public-API tests that run on one backend
 * (test_nonfinite, test_external, test_bf16, test_paged): the backend from
 * argv[1], a context with the Vulkan validation layer where installed, and
 * a count of validation messages that must stay 0. */
#ifndef FASA_API_TEST_H
#define FASA_API_TEST_H

#include "check.h"
#include "fasa.h"

#include <stdio.h>
#include <string.h>

static fasa_backend api_backend = FASA_BACKEND_CPU;
static unsigned api_validation_messages;

static void api_count_validation(void *user, fasa_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    if (strstr(msg, "vulkan validation")) {
        api_validation_messages++;
        fprintf(stderr, "%s\n", msg);
    }
}

/* Parses the backend argument and creates the context (2 threads).
 * Returns 0 with *ctx set, else the exit status: 2 on a usage error, 77
 * when the backend has no device here. */
static int api_test_open(int argc, char **argv, const char *name, fasa_context **ctx)
{
    *ctx = NULL;
    if (argc > 1 && fasa_backend_from_name(argv[1], &api_backend) != FASA_OK) {
        fprintf(stderr, "usage: %s [cpu|vulkan|opencl|cuda]\n", name);
        return 2;
    }
    char msg[512] = "";
    fasa_context_desc cd = {.backend = api_backend, .n_threads = 2, .error_message = msg,
                            .error_message_size = sizeof msg, .logger = {api_count_validation, NULL, FASA_LOG_WARN}};
    if (api_backend == FASA_BACKEND_VULKAN) {
        cd.flags = FASA_CONTEXT_ENABLE_VALIDATION; /* where the layer is installed */
        if (fasa_context_create(&cd, ctx) != FASA_OK) printf("note: no Vulkan validation layer: %s\n", msg);
        cd.flags = 0;
    }
    if (!*ctx && fasa_context_create(&cd, ctx) != FASA_OK) {
        printf("skip: backend %s unavailable: %s\n", fasa_backend_name(api_backend), msg);
        return 77;
    }
    return 0;
}

/* Destroys the context and prints the counts; the exit status. */
static int api_test_close(fasa_context *ctx)
{
    fasa_context_destroy(ctx);
    CHECK(api_validation_messages == 0, "%u validation messages", api_validation_messages);
    return check_done(fasa_backend_name(api_backend));
}

#endif
