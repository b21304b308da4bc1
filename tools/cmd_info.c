/* fasa info: backends compiled in, devices found, memory heaps. */
#include "cli.h"
#include "commands.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

#define MAX_DEVICES 16

/* Byte counts go into the JSON as exact integers (a double would round
 * e.g. the CPU's UINT64_MAX "no limit" up to 2^64). */
static void add_bytes(cJSON *j, const char *name, uint64_t v)
{
    char text[32];
    snprintf(text, sizeof text, "%llu", (unsigned long long)v);
    cJSON_AddRawToObject(j, name, text);
}

static cJSON *device_json(const fasa_device_info *d)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "index", d->index);
    cJSON_AddStringToObject(j, "name", d->name);
    cJSON_AddStringToObject(j, "type", cli_device_type_name(d->type));
    cJSON_AddStringToObject(j, "driver", d->driver);
    cJSON_AddNumberToObject(j, "vendor_id", d->vendor_id);
    cJSON_AddNumberToObject(j, "device_id", d->device_id);
    cJSON_AddNumberToObject(j, "subgroup_size", d->subgroup_size);
    cJSON_AddNumberToObject(j, "compute_units", d->compute_units);
    add_bytes(j, "max_shared_memory", d->max_shared_memory);
    add_bytes(j, "max_buffer_size", d->max_buffer_size);
    cJSON_AddBoolToObject(j, "unified_memory", d->unified_memory);
    cJSON *heaps = cJSON_AddArrayToObject(j, "heaps");
    for (uint32_t h = 0; h < d->heap_count && h < FASA_MAX_HEAPS; h++) {
        cJSON *hj = cJSON_CreateObject();
        add_bytes(hj, "size", d->heaps[h].size);
        cJSON_AddBoolToObject(hj, "device_local", d->heaps[h].device_local);
        cJSON_AddBoolToObject(hj, "host_visible", d->heaps[h].host_visible);
        cJSON_AddItemToArray(heaps, hj);
    }
    return j;
}

static void print_device(const fasa_device_info *d)
{
    printf("    [%u] %s\n        type %s, driver %s\n", d->index, d->name, cli_device_type_name(d->type), d->driver);
    char shared[32], max_buffer[32], heap[32];
    /* UINT64_MAX: the backend sets no limit of its own (the CPU: host memory is the limit) */
    if (d->max_buffer_size == UINT64_MAX) snprintf(max_buffer, sizeof max_buffer, "no limit");
    else cli_format_bytes(d->max_buffer_size, max_buffer, sizeof max_buffer);
    printf("        compute units %u, subgroup %u, shared memory %s, max buffer %s%s\n", d->compute_units,
           d->subgroup_size, cli_format_bytes(d->max_shared_memory, shared, sizeof shared), max_buffer,
           d->unified_memory ? ", unified memory" : "");
    for (uint32_t h = 0; h < d->heap_count && h < FASA_MAX_HEAPS; h++)
        printf("        heap %u: %s%s%s\n", h, cli_format_bytes(d->heaps[h].size, heap, sizeof heap),
               d->heaps[h].device_local ? " device-local" : "", d->heaps[h].host_visible ? " host-visible" : "");
}

int cmd_info(int argc, char **argv)
{
    bool json = false;
    const cli_opt opts[] = {{"json", CLI_FLAG, &json, NULL, "print JSON"}, {NULL, 0, NULL, NULL, NULL}};
    int parsed = cli_parse_command("fasa info", "fasa info [--json]",
                  "Lists the backends compiled into libfasa, the devices each one finds and\n"
                  "their memory heaps, and which device 'auto' picks.", opts, argc, argv,
                                   NULL, NULL);
    if (parsed >= 0) return parsed;
    char err[256];
    cJSON *root = cJSON_CreateObject(), *backends = cJSON_AddArrayToObject(root, "backends");
    /* the library loaded at run time (the tool's headers may be older) */
    cJSON_AddStringToObject(root, "version", fasa_version_string());
    if (!json) printf("libfasa %s\n", fasa_version_string());
    for (int b = FASA_BACKEND_CPU; b < FASA_BACKEND_COUNT_; b++) {
        fasa_device_info devs[MAX_DEVICES];
        uint32_t n = MAX_DEVICES;
        char msg[512] = "";
        bool compiled = fasa_backend_compiled((fasa_backend)b);
        fasa_status st = compiled ? fasa_list_devices((fasa_backend)b, devs, &n, msg, sizeof msg)
                                  : FASA_ERROR_BACKEND_UNAVAILABLE;
        if (st != FASA_OK) n = 0;
        cJSON *bj = cJSON_CreateObject();
        cJSON_AddStringToObject(bj, "name", fasa_backend_name((fasa_backend)b));
        cJSON_AddBoolToObject(bj, "compiled", compiled);
        cJSON_AddBoolToObject(bj, "available", st == FASA_OK && n > 0);
        if (st != FASA_OK) cJSON_AddStringToObject(bj, "reason", compiled ? msg : "not compiled in");
        cJSON *dj = cJSON_AddArrayToObject(bj, "devices");
        for (uint32_t i = 0; i < n && i < MAX_DEVICES; i++) cJSON_AddItemToArray(dj, device_json(&devs[i]));
        cJSON_AddItemToArray(backends, bj);
        if (json) continue;
        if (!compiled) printf("  %-7s not compiled in\n", fasa_backend_name((fasa_backend)b));
        else if (st != FASA_OK) printf("  %-7s compiled, unavailable: %s\n", fasa_backend_name((fasa_backend)b), msg);
        else {
            printf("  %-7s %u device%s\n", fasa_backend_name((fasa_backend)b), n, n == 1 ? "" : "s");
            for (uint32_t i = 0; i < n && i < MAX_DEVICES; i++) print_device(&devs[i]);
        }
    }
    /* what auto picks: create a throwaway context */
    fasa_context *ctx = NULL;
    fasa_context_desc desc = {.error_message = err, .error_message_size = sizeof err};
    cJSON *aj = cJSON_AddObjectToObject(root, "auto");
    if (fasa_context_create(&desc, &ctx) == FASA_OK) {
        fasa_device_info d;
        fasa_context_device(ctx, &d);
        cJSON_AddStringToObject(aj, "backend", fasa_backend_name(d.backend));
        cJSON_AddNumberToObject(aj, "device", d.index);
        cJSON_AddStringToObject(aj, "name", d.name);
        if (!json) printf("auto picks: %s device %u (%s)\n", fasa_backend_name(d.backend), d.index, d.name);
        fasa_context_destroy(ctx);
    } else {
        cJSON_AddStringToObject(aj, "error", err);
        if (!json) printf("auto picks: nothing (%s)\n", err);
    }
    if (json) {
        char *text = cJSON_Print(root);
        printf("%s\n", text);
        free(text);
    }
    cJSON_Delete(root);
    return 0;
}
