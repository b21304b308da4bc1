/* AMD compile check without AMD hardware: with RADV_FORCE_FAMILY (vega10,
 * navi21, gfx1100, ...) and VK_DRIVER_FILES pointing at the radeon ICD,
 * Mesa exposes a "Null hardware" device with no memory types whose shader
 * compiler (ACO) is real.  Every libfasa pipeline must build there, at each
 * subgroup size the family can require (wave32 and wave64 on RDNA); prints
 * registers, spills/scratch and code size per pipeline.
 *
 * usage: test_vk_radv [--markdown]   (the environment selects the device) */
#include "vt_common.h"

#include "vulkan/vk_report.h"

#include <string.h>

static const char *const wanted[] = {"SGPRs", "VGPRs", "Spilled SGPRs", "Spilled VGPRs", "PrivMem VGPRs",
                                     "Scratch size", "Code size", "LDS size", "Subgroups per SIMD"};
#define N_WANTED (sizeof wanted / sizeof wanted[0])

int main(int argc, char **argv)
{
    bool markdown = argc > 1 && strcmp(argv[1], "--markdown") == 0;
    const char *family = getenv("RADV_FORCE_FAMILY");
    enum { MAX_ROWS = 256 }; /* pipelines x subgroup sizes (82 on RDNA today) */
    static fasa_vk_report_row rows[MAX_ROWS];
    uint32_t n = MAX_ROWS;
    char msg[512] = "";
    fasa_status st = fasa_vk_compile_report(0, rows, &n, msg, sizeof msg);
    if (st == FASA_ERROR_BACKEND_UNAVAILABLE || (st == FASA_ERROR_UNSUPPORTED && !family)) {
        printf("SKIP: %s (%s)\n", msg, fasa_status_string(st));
        return VT_SKIP;
    }
    VT_CHECK(st == FASA_OK, "compile report failed: %s: %s", fasa_status_string(st), msg);
    if (st != FASA_OK) return vt_finish("test_vk_radv");
    VT_CHECK(n > 0 && n <= MAX_ROWS, "%u pipelines reported", n);
    if (n > MAX_ROWS) n = MAX_ROWS;
    printf("device: %s (RADV_FORCE_FAMILY=%s), %u pipeline builds\n", rows[0].device, family ? family : "unset", n);
    if (family) VT_CHECK(strstr(rows[0].device, "RADV") != NULL, "device \"%s\" is not RADV", rows[0].device);
    if (markdown) {
        printf("| family | pipeline | wave |");
        for (size_t i = 0; i < N_WANTED; i++) printf(" %s |", wanted[i]);
        printf("\n|---|---|---|");
        for (size_t i = 0; i < N_WANTED; i++) printf("---|");
        printf("\n");
    }
    for (uint32_t r = 0; r < n; r++) {
        const fasa_vk_report_row *row = &rows[r];
        VT_CHECK(row->n_stats > 0, "%s: no statistics", row->pipeline);
        if (markdown) printf("| %s | %s | %u |", family ? family : "?", row->pipeline, row->subgroup_size);
        else printf("%-12s wave %-2u", row->pipeline, row->subgroup_size);
        for (size_t i = 0; i < N_WANTED; i++) {
            double v = fasa_vk_report_stat(row, wanted[i]);
            if (markdown) printf(v < 0 ? " - |" : " %.0f |", v);
            else if (v >= 0) printf("  %s %.0f", wanted[i], v);
        }
        printf("\n");
        double spills = fasa_vk_report_stat(row, "Spilled VGPRs") + fasa_vk_report_stat(row, "Spilled SGPRs");
        if (spills > 0) printf("  note: %s spills %.0f registers\n", row->pipeline, spills);
    }
    return vt_finish("test_vk_radv");
}
