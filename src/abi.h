/* Version query and extension chains of the description structs (abi.c;
 * docs/API.md, "Loading and ABI"). */
#ifndef FASA_ABI_H
#define FASA_ABI_H

#include "fasa.h"

#include <stdbool.h>
#include <stddef.h>

/* Validates the extension chain `next` of a description struct.  field
 * names the member in messages ("desc.next"), type_name the struct
 * ("fasa_kv_cache_desc").  Every entry must be an extension struct type
 * that struct accepts; this version defines none, so any entry is
 * rejected: false with "desc.next (fasa_kv_cache_desc): unknown extension
 * struct type 7 ..." in msg.  NULL is always fine. */
bool fasa__chain_ok(const void *next, const char *field, const char *type_name, char *msg, size_t msg_size);

/* The same, as INVALID_ARGUMENT with the message set on ctx (not locked). */
fasa_status fasa__check_chain(fasa_context *ctx, const void *next, const char *field, const char *type_name);

#endif
