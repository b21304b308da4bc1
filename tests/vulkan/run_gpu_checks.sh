#!/bin/bash
# Vulkan checks on a real GPU (the H200 test machine of shared/docs/GPU_NOTES.md §3).
# Prepare here: ../shared/device/prepare.sh, then build build-vk; send .gpu-debs and build-vk along
# and run from the repository root:   bash tests/vulkan/run_gpu_checks.sh
# Every step has its own timeout; logs go to $OUT (or ./gpu-out).
out=${OUT:-gpu-out}
mkdir -p "$out"
[ -f .gpu-debs/gpu-env.sh ] && . .gpu-debs/gpu-env.sh > "$out/env.txt" 2>&1
b=build-vk
step() { # name timeout command...
    local name=$1 t=$2; shift 2
    echo "== $name" | tee -a "$out/summary.txt"
    ( time timeout "$t" "$@" ) > "$out/$name.txt" 2>&1
    echo "   exit $? $(grep -E '^real' "$out/$name.txt")" | tee -a "$out/summary.txt"
}
step info 60 $b/tools/fasa info
step misc 120 $b/tests/vulkan/test_vk_misc
step embed 120 $b/tests/vulkan/test_vk_embed
step badinput 120 $b/tests/vulkan/test_vk_badinput
step conform 300 $b/tools/fasa conform --backend vulkan --no-validation --markdown
step topk-1M 200 $b/tests/vulkan/test_vk_topk
step compare-2-f16 300 $b/tests/vulkan/test_vk_compare 2 f16 int 70000
for L in 131072 524288; do
    step bench-$L 240 $b/tests/vulkan/bench_vk $L 9
done
tail -n 3 "$out"/bench-*.txt >> "$out/summary.txt"
