/* Compile report of the Vulkan pipelines (internal; for `fasa conform
 * --backend vulkan --compile-only` and tests/vulkan).  It builds every
 * libfasa pipeline on a device without allocating memory, so it also runs on
 * Mesa's RADV "null hardware" devices (RADV_FORCE_FAMILY=navi21 and
 * VK_DRIVER_FILES=.../radeon_icd.x86_64.json, set by the caller), and reads
 * the driver's statistics through VK_KHR_pipeline_executable_properties. */
#ifndef FASA_VK_REPORT_H
#define FASA_VK_REPORT_H

#include "fasa.h"

#define FASA_VK_REPORT_MAX_STATS 32

typedef struct fasa_vk_stat {
    char name[48];               /* as the driver names it: "VGPRs", "Code size", ... */
    double value;                /* bool, integer and float statistics alike */
} fasa_vk_stat;

typedef struct fasa_vk_report_row {
    char device[128];            /* device name */
    char pipeline[32];           /* "tip_f16", "topk_pass", ... */
    uint32_t subgroup_size;      /* required subgroup size, 0 = the driver's choice */
    uint32_t n_stats;
    fasa_vk_stat stats[FASA_VK_REPORT_MAX_STATS];
} fasa_vk_report_row;

/* Builds every pipeline on device `device_index` of all the devices the
 * loader enumerates (null-hardware ones included), once per subgroup size
 * the device can require for compute (wave32 and wave64 on RDNA), and reads
 * the statistics of each.  On input *count is the capacity of rows; on
 * output the number of rows produced (may exceed the capacity; only the
 * first capacity rows are written).  msg receives the reason on failure
 * (e.g. FASA_ERROR_UNSUPPORTED without VK_KHR_pipeline_executable_properties). */
FASA_API fasa_status fasa_vk_compile_report(uint32_t device_index, fasa_vk_report_row *rows, uint32_t *count,
                                            char *msg, size_t msg_size);

/* The value of the statistic named `name` in a row, or -1 if absent. */
FASA_API double fasa_vk_report_stat(const fasa_vk_report_row *row, const char *name);

#endif
