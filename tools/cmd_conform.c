/* fasa conform: the seeded conformance matrix on one or all backends. */
#include "cli.h"
#include "commands.h"
#include "conform.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CASES 2048
#ifdef FASA_TOOL_HAVE_VULKAN
#include "vk_report.h"
#endif
#define EXIT_SKIP 77

typedef struct conform_opts {
    const char *backend, *filter, *replay, *variants, *against, *output;
    uint32_t device, against_device, threads;
    bool json, markdown, quick, list, verbose, no_validation, compile_only;
    FILE *out;                   /* the report: stdout or the --output file */
    bool report_done;            /* a whole report was written: --output may replace FILE */
} conform_opts;

static const char *const variant_names[] = {"dense", "fasa", "fasa-m", "external", "paged", NULL};

/* --compile-only: build every Vulkan pipeline on the device (no memory
 * needed, so it works on RADV's null-hardware devices) and print the
 * driver's statistics per pipeline and subgroup size. */
static int compile_only(conform_opts *o)
{
#ifdef FASA_TOOL_HAVE_VULKAN
    static fasa_vk_report_row rows[256];
    uint32_t n = 256;
    char msg[512] = "";
    fasa_status st = fasa_vk_compile_report(o->device, rows, &n, msg, sizeof msg);
    if (st != FASA_OK) {
        fprintf(stderr, "fasa conform --compile-only: %s: %s\n", fasa_status_string(st), msg);
        return st == FASA_ERROR_BACKEND_UNAVAILABLE ? EXIT_SKIP : 1;
    }
    const char *wanted[] = {"VGPRs", "SGPRs", "Code size", "LDS size", "Scratch size", "Spilled VGPRs", "Spilled SGPRs"};
    FILE *f = o->out;
    fprintf(f, "%s\n%-14s %5s", n ? rows[0].device : "(no pipelines)", "pipeline", "wave");
    for (size_t i = 0; i < 7; i++) fprintf(f, " %13s", wanted[i]);
    fprintf(f, "\n");
    bool spills = false;
    for (uint32_t r = 0; r < n && r < 256; r++) {
        fprintf(f, "%-14s %5u", rows[r].pipeline, rows[r].subgroup_size);
        for (size_t i = 0; i < 7; i++) {
            double v = fasa_vk_report_stat(&rows[r], wanted[i]);
            if (v < 0) fprintf(f, " %13s", "-");
            else fprintf(f, " %13.0f", v);
            spills |= i >= 5 && v > 0;
        }
        fprintf(f, "\n");
    }
    fprintf(f, "%u pipelines built%s\n", n, spills ? "; some spill registers" : ", no spills");
    o->report_done = true;
    return 0;
#else
    (void)o;
    fprintf(stderr, "fasa conform --compile-only: the vulkan backend is not compiled into this build\n");
    return EXIT_SKIP;
#endif
}

typedef struct backend_summary {
    char backend[16], device[256];
    uint32_t run, passed, near_ties;
    double max_nmse, max_score_err, seconds;
    bool available;
    char skip_reason[256];
} backend_summary;

static bool selected_case(const conform_opts *o, const conform_case *c)
{
    return !o->filter || strstr(c->name, o->filter) != NULL;
}

static void print_case(const conform_opts *o, const char *backend, const conform_case *c,
                       const conform_result *r)
{
    if (o->json) return;
    if (!r->pass || o->verbose)
        fprintf(o->out, "%-4s %-7s %-80s nmse %.2e score %.2e ties %u  %s\n", r->pass ? "ok" : "FAIL", backend,
               c->name, r->nmse, r->score_err, r->near_ties, r->pass ? "" : r->why);
}

static cJSON *case_json(const char *backend, const char *device, const conform_case *c,
                        const conform_result *r)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "backend", backend);
    cJSON_AddStringToObject(j, "device", device);
    cJSON_AddStringToObject(j, "case", c->name);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON_AddBoolToObject(j, "pass", r->pass);
    cJSON_AddStringToObject(j, "path", conform_path_name(r->path));
    cJSON_AddNumberToObject(j, "nmse", r->nmse);
    cJSON_AddNumberToObject(j, "max_abs_err", r->max_abs_err);
    cJSON_AddNumberToObject(j, "score_err", r->score_err);
    cJSON_AddNumberToObject(j, "near_ties", r->near_ties);
    if (c->q_type || c->o_type) cJSON_AddNumberToObject(j, "io_nmse", r->io_nmse); /* the 16-bit o vs fp64 */
    cJSON_AddNumberToObject(j, "ms", r->seconds * 1e3);
    if (!r->pass) cJSON_AddStringToObject(j, "why", r->why);
    return j;
}

/* One backend of the run: its context and totals; cross: its totals
 * against the --against backend. */
typedef struct backend_run {
    fasa_backend backend;
    fasa_context *ctx;
    backend_summary sum;
    uint32_t cross_run, cross_passed, cross_swaps;
    double cross_max_nmse, cross_max_score_err;
} backend_run;

static void open_backend(const conform_opts *o, backend_run *b, uint32_t device)
{
    backend_summary *sum = &b->sum;
    snprintf(sum->backend, sizeof sum->backend, "%s", fasa_backend_name(b->backend));
    char err[1024] = "";
    uint32_t flags = o->no_validation ? 0 : FASA_CONTEXT_ENABLE_VALIDATION;
    if (cli_make_context(fasa_backend_name(b->backend), (int)device, o->threads, flags, &b->ctx, err,
                         sizeof err) != FASA_OK) {
        snprintf(sum->skip_reason, sizeof sum->skip_reason, "%s", err);
        b->ctx = NULL;
        return;
    }
    sum->available = true;
    fasa_device_info info;
    fasa_context_device(b->ctx, &info);
    snprintf(sum->device, sizeof sum->device, "%s", info.name);
}

/* Runs a case on one backend and folds the result into its totals. */
static bool run_one(const conform_opts *o, backend_run *b, const conform_case *c, const conform_data *data,
                    conform_capture *cap, cJSON *rows, bool progress_line)
{
    backend_summary *sum = &b->sum;
    conform_result r;
    conform_run(b->ctx, c, data, &r, cap);
    sum->run++;
    sum->passed += r.pass;
    sum->near_ties += r.near_ties;
    sum->seconds += r.seconds;
    if (r.nmse > sum->max_nmse) sum->max_nmse = r.nmse;
    if (r.score_err > sum->max_score_err) sum->max_score_err = r.score_err;
    if (!r.pass && progress_line) fprintf(stderr, "\n");
    print_case(o, sum->backend, c, &r);
    if (rows) cJSON_AddItemToArray(rows, case_json(sum->backend, sum->device, c, &r));
    return r.pass;
}

/* b against ref on case c (both captured); folds into b's cross totals. */
static bool cross_one(const conform_opts *o, backend_run *b, const backend_run *ref, const conform_case *c,
                      const conform_capture *ref_cap, const conform_capture *cap, cJSON *rows)
{
    conform_cross x;
    conform_cross_compare(c, ref_cap, cap, &x);
    b->cross_run++;
    b->cross_passed += x.pass;
    b->cross_swaps += x.swaps;
    if (x.nmse > b->cross_max_nmse) b->cross_max_nmse = x.nmse;
    if (x.score_err > b->cross_max_score_err) b->cross_max_score_err = x.score_err;
    if (!o->json && (!x.pass || o->verbose))
        fprintf(o->out, "%-4s %s vs %s %-70s nmse %.2e score %.2e swaps %u  %s\n", x.pass ? "ok" : "FAIL", b->sum.backend,
               ref->sum.backend, c->name, x.nmse, x.score_err, x.swaps, x.pass ? "" : x.why);
    if (rows) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "backend", b->sum.backend);
        cJSON_AddStringToObject(j, "against", ref->sum.backend);
        cJSON_AddStringToObject(j, "case", c->name);
        cJSON_AddBoolToObject(j, "pass", x.pass);
        cJSON_AddNumberToObject(j, "nmse", x.nmse);
        cJSON_AddNumberToObject(j, "max_abs_err", x.max_abs_err);
        cJSON_AddNumberToObject(j, "score_err", x.score_err);
        cJSON_AddNumberToObject(j, "swaps", x.swaps);
        if (!x.pass) cJSON_AddStringToObject(j, "why", x.why);
        cJSON_AddItemToArray(rows, j);
    }
    return x.pass;
}

/* Every selected case on every backend, case by case.  With a reference
 * backend (ref >= 0, available) each case runs there first and every other
 * backend's outputs are also compared with its outputs. */
static bool run_all(const conform_opts *o, backend_run *bs, uint32_t nb, int ref, const conform_case *cases,
                    const conform_data *const *data, uint32_t n, cJSON *rows, cJSON *cross_rows)
{
    bool ok = true, use_ref = ref >= 0 && bs[ref].ctx;
    cli_progress prog;
    cli_progress_start(&prog, "conform", n);
    for (uint32_t i = 0; i < n; i++) {
        cli_progress_step(&prog, 1);
        if (!selected_case(o, &cases[i])) continue;
        const conform_data *d = data ? data[i] : NULL;
        conform_capture ref_cap = {0};
        if (use_ref) ok &= run_one(o, &bs[ref], &cases[i], d, &ref_cap, rows, prog.active);
        for (uint32_t b = 0; b < nb; b++) {
            if ((int)b == ref || !bs[b].ctx) continue;
            conform_capture cap = {0};
            ok &= run_one(o, &bs[b], &cases[i], d, use_ref ? &cap : NULL, rows, prog.active);
            if (use_ref) ok &= cross_one(o, &bs[b], &bs[ref], &cases[i], &ref_cap, &cap, cross_rows);
            conform_capture_free(&cap);
        }
        conform_capture_free(&ref_cap);
    }
    cli_progress_end(&prog);
    return ok;
}

static void print_summary(const conform_opts *o, const backend_summary *s, uint32_t n)
{
    if (o->markdown) {
        fprintf(o->out, "| backend | device | cases | passed | max NMSE | max score err | near-tie swaps | decode calls s |\n");
        fprintf(o->out, "|---|---|---|---|---|---|---|---|\n");
        for (uint32_t i = 0; i < n; i++) {
            if (!s[i].available) {
                fprintf(o->out, "| %s | — | skipped: %s | | | | | |\n", s[i].backend, s[i].skip_reason);
                continue;
            }
            fprintf(o->out, "| %s | %s | %u | %u | %.2e | %.2e | %u | %.1f |\n", s[i].backend, s[i].device, s[i].run,
                   s[i].passed, s[i].max_nmse, s[i].max_score_err, s[i].near_ties, s[i].seconds);
        }
        return;
    }
    fprintf(o->out, "\n%-8s %-40s %7s %7s %10s %10s %6s\n", "backend", "device", "cases", "passed", "max_nmse",
           "score_err", "ties");
    for (uint32_t i = 0; i < n; i++) {
        if (!s[i].available) {
            fprintf(o->out, "%-8s skipped: %s\n", s[i].backend, s[i].skip_reason);
            continue;
        }
        fprintf(o->out, "%-8s %-40.40s %7u %7u %10.2e %10.2e %6u\n", s[i].backend, s[i].device, s[i].run, s[i].passed,
               s[i].max_nmse, s[i].max_score_err, s[i].near_ties);
    }
}

/* The --against table: every other backend's outputs vs the reference's. */
static void print_cross(const conform_opts *o, const backend_run *runs, uint32_t n, int ref)
{
    if (ref < 0) return;
    if (!runs[ref].ctx) {
        fprintf(o->out, "\nagainst %s: not run (%s)\n", runs[ref].sum.backend, runs[ref].sum.skip_reason);
        return;
    }
    if (o->markdown) {
        fprintf(o->out, "\n| backend | against | cases | agree | max output NMSE | max score err | selection swaps |\n");
        fprintf(o->out, "|---|---|---|---|---|---|---|\n");
    } else {
        fprintf(o->out, "\n%-8s %-8s %7s %7s %10s %10s %6s\n", "backend", "against", "cases", "agree", "max_nmse",
               "score_err", "swaps");
    }
    for (uint32_t i = 0; i < n; i++) {
        if ((int)i == ref || !runs[i].cross_run) continue;
        const backend_run *b = &runs[i];
        if (o->markdown)
            fprintf(o->out, "| %s | %s | %u | %u | %.2e | %.2e | %u |\n", b->sum.backend, runs[ref].sum.backend, b->cross_run,
                   b->cross_passed, b->cross_max_nmse, b->cross_max_score_err, b->cross_swaps);
        else
            fprintf(o->out, "%-8s %-8s %7u %7u %10.2e %10.2e %6u\n", b->sum.backend, runs[ref].sum.backend, b->cross_run,
                   b->cross_passed, b->cross_max_nmse, b->cross_max_score_err, b->cross_swaps);
    }
}

/* Real decode cases from 'fasa eval --dump': each file in four variants
 * (fp16/fp32 storage, per-head/per-group selection).  A file that cannot
 * be read (a FIFO, a directory, a truncated case) is reported and skipped. */
static uint32_t load_replay(const char *dir, conform_case *cases, conform_data **data, uint32_t max)
{
    DIR *dp = opendir(dir);   /* O_DIRECTORY | O_NONBLOCK: a FIFO here fails, never waits */
    if (!dp) {
        fprintf(stderr, "fasa conform: --replay %s: %s\n", dir,
                errno == ENOTDIR ? "not a directory" : errno == ENOENT ? "no such directory" : strerror(errno));
        return 0;
    }
    uint32_t n = 0, skipped = 0;
    for (struct dirent *e; (e = readdir(dp));) {
        size_t len = strlen(e->d_name);
        if (len < 9 || strcmp(e->d_name + len - 9, ".fasacase") != 0) continue;
        if (n + 4 > max) {
            skipped++;
            continue;
        }
        char path[4096], err[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        conform_data *d = calloc(1, sizeof *d);
        conform_case c;
        if (!d || !conform_read_case_file(path, &c, d, err, sizeof err)) {
            fprintf(stderr, "fasa conform: %s\n", d ? err : "out of host memory");
            free(d);
            continue;
        }
        for (int v = 0; v < 4; v++) {
            cases[n] = c;
            cases[n].dtype = v & 1 ? FASA_DTYPE_F32 : FASA_DTYPE_F16;
            cases[n].gqa = v & 2 ? FASA_GQA_PER_GROUP : FASA_GQA_PER_HEAD;
            snprintf(cases[n].name, sizeof cases[n].name, "%.120s/%s/%s", c.name, v & 1 ? "f32" : "f16",
                     v & 2 ? "group" : "head");
            data[n++] = d; /* the four variants share one data block, owned by the first */
        }
    }
    closedir(dp);
    if (skipped) fprintf(stderr, "fasa conform: --replay %s: only the first %u case files are replayed (%u left out)\n",
                         dir, max / 4, skipped);
    if (n == 0) fprintf(stderr, "fasa conform: --replay %s: no readable .fasacase files\n", dir);
    return n;
}

static void free_replay(conform_data **data, uint32_t n)
{
    for (uint32_t i = 0; data && i < n; i += 4) {
        conform_free_data(data[i]);
        free(data[i]);
    }
    free(data);
}

static bool check_opts(const conform_opts *o, char *err, size_t n)
{
    if (!cli_check_names("variant", o->variants, variant_names, err, n)) return false;
    if (o->filter && !*o->filter) {
        snprintf(err, n, "--filter is empty (leave it out to run every case)");
        return false;
    }
    return true;
}

/* Everything after the options: the report goes to o->out.  Returns the
 * exit status; sets o->report_done when the report is whole. */
static int conform_main(conform_opts *o)
{
    if (o->compile_only) {
        if (strcmp(o->backend, "vulkan") != 0) {
            fprintf(stderr, "fasa conform: --compile-only needs --backend vulkan\n");
            return 2;
        }
        return compile_only(o);
    }
    fasa_backend list[FASA_BACKEND_COUNT_];
    uint32_t n_backends = 0;
    if (strcmp(o->backend, "all") == 0) {
        for (int b = FASA_BACKEND_CPU; b < FASA_BACKEND_COUNT_; b++) list[n_backends++] = (fasa_backend)b;
    } else if (fasa_backend_from_name(o->backend, &list[0]) != FASA_OK || list[0] == FASA_BACKEND_AUTO) {
        fprintf(stderr, "fasa conform: --backend: unknown backend '%s' (cpu, vulkan, opencl, cuda or all)\n", o->backend);
        return 2;
    } else {
        n_backends = 1;
    }
    int ref = -1;
    const char *against = o->against ? o->against : n_backends > 1 ? "cuda" : "none";
    fasa_backend ref_backend = FASA_BACKEND_AUTO;
    if (strcmp(against, "none") != 0 &&
        (fasa_backend_from_name(against, &ref_backend) != FASA_OK || ref_backend == FASA_BACKEND_AUTO)) {
        fprintf(stderr, "fasa conform: --against: unknown backend '%s' (cpu, vulkan, opencl, cuda or none)\n", against);
        return 2;
    }
    conform_case *cases = calloc(MAX_CASES, sizeof *cases);
    conform_data **data = o->replay ? calloc(MAX_CASES, sizeof *data) : NULL;
    if (!cases || (o->replay && !data)) {
        fprintf(stderr, "fasa conform: out of host memory for the case list\n");
        free(cases);
        free(data);
        return 1;
    }
    uint32_t n = o->replay ? load_replay(o->replay, cases, data, MAX_CASES)
                           : conform_cases(cases, MAX_CASES, o->quick, o->variants);
    uint32_t n_selected = 0;
    for (uint32_t i = 0; i < n; i++) n_selected += selected_case(o, &cases[i]);
    if (n == 0 || n_selected == 0) {
        if (n && o->filter)
            fprintf(stderr, "fasa conform: --filter '%s' matches none of the %u cases (see --list)\n", o->filter, n);
        else if (!o->replay)
            fprintf(stderr, "fasa conform: --variant %s%s selects no case\n", o->variants, o->quick ? " with --quick" : "");
        free(cases);
        free_replay(data, n);
        return 2;
    }
    if (o->list) {
        for (uint32_t i = 0; i < n; i++)
            if (selected_case(o, &cases[i]))
                fprintf(o->out, "%s seed=%llu\n", cases[i].name, (unsigned long long)cases[i].seed);
        free(cases);
        free_replay(data, n);
        o->report_done = true;
        return 0;
    }
    if (ref_backend != FASA_BACKEND_AUTO) {
        for (uint32_t i = 0; i < n_backends; i++)
            if (list[i] == ref_backend) ref = (int)i;
        if (ref < 0) list[ref = (int)n_backends++] = ref_backend; /* run it too */
    }
    backend_run runs[FASA_BACKEND_COUNT_] = {0};
    for (uint32_t i = 0; i < n_backends; i++) {
        runs[i].backend = list[i];
        open_backend(o, &runs[i], (int)i == ref ? o->against_device : o->device);
        if (!o->json)
            fprintf(o->out, "fasa conform: backend %s: %s\n", runs[i].sum.backend,
                    runs[i].ctx ? runs[i].sum.device : "unavailable");
    }
    cJSON *root = o->json ? cJSON_CreateObject() : NULL;
    cJSON *rows = root ? cJSON_AddArrayToObject(root, "cases") : NULL;
    cJSON *cross_rows = root && ref >= 0 ? cJSON_AddArrayToObject(root, "cross") : NULL;
    bool ok = run_all(o, runs, n_backends, ref, cases, (const conform_data *const *)data, n, rows, cross_rows);
    backend_summary sums[FASA_BACKEND_COUNT_] = {0};
    for (uint32_t i = 0; i < n_backends; i++) {
        sums[i] = runs[i].sum;
        fasa_context_destroy(runs[i].ctx);
    }
    if (root) {
        cJSON *summary = cJSON_AddArrayToObject(root, "summary");
        for (uint32_t i = 0; i < n_backends; i++) {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddStringToObject(s, "backend", sums[i].backend);
            cJSON_AddBoolToObject(s, "available", sums[i].available);
            if (!sums[i].available) cJSON_AddStringToObject(s, "skipped", sums[i].skip_reason);
            cJSON_AddStringToObject(s, "device", sums[i].device);
            cJSON_AddNumberToObject(s, "cases", sums[i].run);
            cJSON_AddNumberToObject(s, "passed", sums[i].passed);
            cJSON_AddNumberToObject(s, "max_nmse", sums[i].max_nmse);
            cJSON_AddNumberToObject(s, "max_score_err", sums[i].max_score_err);
            cJSON_AddNumberToObject(s, "near_ties", sums[i].near_ties);
            if (ref >= 0 && (int)i != ref && runs[i].cross_run) {
                cJSON *x = cJSON_AddObjectToObject(s, "against");
                cJSON_AddStringToObject(x, "backend", sums[ref].backend);
                cJSON_AddNumberToObject(x, "cases", runs[i].cross_run);
                cJSON_AddNumberToObject(x, "passed", runs[i].cross_passed);
                cJSON_AddNumberToObject(x, "max_nmse", runs[i].cross_max_nmse);
                cJSON_AddNumberToObject(x, "max_score_err", runs[i].cross_max_score_err);
                cJSON_AddNumberToObject(x, "swaps", runs[i].cross_swaps);
            }
            cJSON_AddItemToArray(summary, s);
        }
        char *text = cJSON_Print(root);
        fprintf(o->out, "%s\n", text);
        free(text);
        cJSON_Delete(root);
    } else {
        print_summary(o, sums, n_backends);
        print_cross(o, runs, n_backends, ref);
    }
    free(cases);
    free_replay(data, n);
    if (n_backends == 1 && !sums[0].available) {
        fprintf(stderr, "fasa conform: backend %s unavailable: %s\n", sums[0].backend, sums[0].skip_reason);
        return EXIT_SKIP;
    }
    o->report_done = true; /* passing or not, the report is whole */
    return ok ? 0 : 1;
}

int cmd_conform(int argc, char **argv)
{
    conform_opts o = {.backend = "all", .variants = "dense,fasa,fasa-m,external,paged"};
    const cli_opt opts[] = {
        {"backend", CLI_STRING, &o.backend, "B", "cpu, vulkan, opencl, cuda or all (default all)"},
        {"device", CLI_UINT, &o.device, "N", "device index within each backend (default 0)"},
        {"against", CLI_STRING, &o.against, "B|none",
         "also compare every other backend with B case by case (default with --backend all: cuda, when it runs)"},
        {"against-device", CLI_UINT, &o.against_device, "N", "device index of the --against backend (default 0)"},
        {"threads", CLI_UINT, &o.threads, "N", "host threads (default: all cores)"},
        {"filter", CLI_STRING, &o.filter, "TEXT", "run only cases whose name contains TEXT (an error if none does)"},
        {"variant", CLI_STRING, &o.variants, "V[,V]", "dense, fasa (FASA-C), fasa-m, external, paged (paged/shared pools and batched decode: "
         "the paged-*, cells-* and batch-* cases; default all five)"},
        {"replay", CLI_STRING, &o.replay, "DIR", "run the real decode cases in DIR (fasa eval --dump)"},
        {"quick", CLI_FLAG, &o.quick, NULL, "skip the 65536-token cases and the three largest paged/batch cases"},
        {"list", CLI_FLAG, &o.list, NULL, "list the cases and exit"},
        {"verbose", CLI_FLAG, &o.verbose, NULL, "print every case, not only failures"},
        {"no-validation", CLI_FLAG, &o.no_validation, NULL, "do not enable GPU API validation layers"},
        {"json", CLI_FLAG, &o.json, NULL, "print JSON (one row per case plus a summary)"},
        {"markdown", CLI_FLAG, &o.markdown, NULL, "print the summary as a Markdown table"},
        {"output", CLI_STRING, &o.output, "FILE",
         "write the report to FILE instead of stdout (replaced atomically when the run completes)"},
        {"compile-only", CLI_FLAG, &o.compile_only, NULL,
         "vulkan: only build every pipeline and print register/code statistics (works on RADV null devices)"},
        {NULL, 0, NULL, NULL, NULL}};
    int parsed = cli_parse_command("fasa conform", "fasa conform [--backend B|all] [options]",
                  "Runs the seeded conformance matrix (shapes, layouts, dtypes, GQA modes, modes, edge\n"
                  "lengths, budgets, forced tokens; external, paged and shared caches, batched decode)\n"
                  "through the public API and compares every output, TIP score and selected set with an\n"
                  "independent fp64 reference; with --against B, also with backend B's outputs for the\n"
                  "same case (the CUDA reference on the same GPU).  Exit status: 0 all passed, 1 a case\n"
                  "failed, 2 a usage error (also a --filter or --variant that selects no case), 77 the\n"
                  "requested backend is unavailable.", opts, argc, argv,
                                   (cli_check_fn)check_opts, &o);
    if (parsed >= 0) return parsed;
    char err[512];
    cli_output out;
    if (!cli_output_begin(&out, o.output, err, sizeof err)) {
        fprintf(stderr, "fasa conform: --output %s: %s\n", o.output, err);
        return 1;
    }
    o.out = out.f;
    int rc = conform_main(&o);
    if (!cli_output_finish(&out, o.report_done, err, sizeof err)) {
        fprintf(stderr, "fasa conform: %s%s%s\n", o.output ? "--output " : "", o.output ? o.output : "", err);
        return 1;
    }
    return rc;
}
