#!/bin/bash
# OpenCL follow-up checks for the H200 test machine (GPU_NOTES §3), one
# prepared run; tools/device/run_gpu_checks.sh already runs fasa conform and
# fasa bench for every backend.  Build here first (docs/OPENCL.md §7), then
# with the device tool:
#
#   command: . .gpu-debs/gpu-env.sh; bash tests/opencl/h200_checks.sh build-gpu
#   carry:   [".gpu-debs", "build-gpu"]       timeout_s: 560
#
# Every step has its own timeout (about 8 minutes in all) and appends to one
# of five files in $OUT.  NVIDIA is pinned through the ICD loader (the image
# also exposes PoCL 5.0 on its CPU).
set -u
B=${1:-build-gpu}
OUT=${OUT:-${2:-out}}
mkdir -p "$OUT"
export OCL_ICD_VENDORS=/etc/OpenCL/vendors/nvidia.icd
export FASA_TEST_CL_DEVICE=NVIDIA
export FASA_TEST_TMP=/tmp/fasa-cl-tests
mkdir -p "$FASA_TEST_TMP"
step() { # file timeout command...
    local file=$1 t=$2
    shift 2
    local t0
    t0=$(date +%s)
    echo "==== $*" >> "$OUT/$file"
    timeout "$t" "$@" >> "$OUT/$file" 2>&1
    echo "$*: rc=$? $(($(date +%s) - t0))s" | tee -a "$OUT/summary.txt"
}
{ date -u; git log -1 --oneline 2>/dev/null; nvidia-smi; } > "$OUT/env.txt" 2>&1
step env.txt 30 "$B/tools/fasa" info
# 1. correctness on NVIDIA's OpenCL (our matrix; the lead's conform runs in
#    tools/device/run_gpu_checks.sh)
step tests.txt 60 "$B/tests/opencl/test_cl_embed"
step tests.txt 60 "$B/tests/opencl/test_cl_program_cache"
step tests.txt 150 "$B/tests/opencl/test_cl_compare" --quick
# 2. performance: dense vs FASA at 64K/128K/512K with every variant (load
#    path, fused histogram, heads per attention group), plus the naive TIP
#    probe (vload_half8 vs uint4, with and without fast math, a copy kernel
#    as the ceiling) for the 896 vs 3170 GB/s question
step bench.txt 150 "$B/tests/opencl/cl_bench" --L 65536,131072,524288 --iters 20 --probe --json
