/* Version query and extension chains (abi.h). */
#include "abi.h"
#include "internal.h"

#include <stdio.h>

#define FASA_STR_(x) #x
#define FASA_STR(x) FASA_STR_(x)

uint32_t fasa_version(void)
{
    return FASA_VERSION;
}

const char *fasa_version_string(void)
{
    return FASA_STR(FASA_VERSION_MAJOR) "." FASA_STR(FASA_VERSION_MINOR) "." FASA_STR(FASA_VERSION_PATCH);
}

/* Longest chain walked: a longer one is taken for a loop. */
#define MAX_CHAIN 64

bool fasa__chain_ok(const void *next, const char *field, const char *type_name, char *msg, size_t msg_size)
{
    unsigned n = 0;
    for (const fasa_struct_header *h = next; h; h = h->next) {
        if (++n > MAX_CHAIN) {
            snprintf(msg, msg_size, "%s (%s): the extension chain is longer than %u entries (a loop?)", field,
                     type_name, MAX_CHAIN);
            return false;
        }
        switch (h->type) {
        /* no extension struct types yet: each future one is accepted here by
         * the structs it extends */
        default:
            snprintf(msg, msg_size,
                     "%s (%s): unknown extension struct type %u at chain entry %u (libfasa %s defines no "
                     "extension structs; leave next NULL)",
                     field, type_name, (unsigned)h->type, n, fasa_version_string());
            return false;
        }
    }
    return true;
}

fasa_status fasa__check_chain(fasa_context *ctx, const void *next, const char *field, const char *type_name)
{
    if (!next) return FASA_OK;
    char msg[FASA_ERROR_MAX];
    if (fasa__chain_ok(next, field, type_name, msg, sizeof msg)) return FASA_OK;
    return fasa__error(ctx, FASA_ERROR_INVALID_ARGUMENT, "%s", msg);
}
