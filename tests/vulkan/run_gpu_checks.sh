#!/bin/bash
# Vulkan checks on a real GPU (the H200 test machine of shared/docs/GPU_NOTES.md §3).
# Prepare here: ../shared/device/prepare.sh, then build build-vk; send .gpu-debs and build-vk along
# and run from the repository root:   bash tests/vulkan/run_gpu_checks.sh
# Every step has its own timeout; logs go to $OUT (or ./gpu-out).
out=${OUT:-gpu-out}
mkdir -p "$out"
[ -f .gpu-debs/gpu-env.sh ] && . .gpu-debs/gpu-env.sh > "$out/env.txt" 2>&1
b=${BUILD:-build-vk}
step() { # name timeout command...
    local name=$1 t=$2; shift 2
    echo "== $name" | tee -a "$out/summary.txt"
    ( time timeout "$t" "$@" ) > "$out/$name.txt" 2>&1
    echo "   exit $? $(grep -E '^real' "$out/$name.txt")" | tee -a "$out/summary.txt"
}
step info 60 $b/tools/fasa info
step misc 120 $b/tests/vulkan/test_vk_misc
step embed 120 $b/tests/vulkan/test_vk_embed
step fasam 120 $b/tests/vulkan/test_vk_fasam
step badinput 120 $b/tests/vulkan/test_vk_badinput
step conform 300 $b/tools/fasa conform --backend vulkan --no-validation --markdown
step topk-1M 200 $b/tests/vulkan/test_vk_topk
step compare-2-f16 300 $b/tests/vulkan/test_vk_compare 2 f16 int 70000
for L in 131072 524288; do
    step bench-$L 240 $b/tests/vulkan/bench_vk $L 9
done
# FASA-M in the Llama-3-8B shape (the fasa bench defaults) at L 131072: FASA-C, direct reads,
# staging without reuse, the row cache R = 2*G*n_fac; JSON rows in $out/bench-m-*.json.
mstep() { local name=$1; shift; step $name 300 sh -c "$b/tools/fasa bench --backend vulkan --L 131072 --json $* > $out/$name.json"; }
mstep bench-m-direct --variant fasa,fasa-m --fetch direct
mstep bench-m-staged --variant fasa-m --fetch staged
mstep bench-m-rowcache --variant fasa-m --fetch staged --row-cache 2048
tail -n 3 "$out"/bench-[0-9]*.txt >> "$out/summary.txt"
python3 - "$out" >> "$out/summary.txt" 2>&1 <<'EOF'
import glob, json, sys
rows = {(f.split('bench-m-')[1][:-5], r['variant']): r
        for f in glob.glob(sys.argv[1] + '/bench-m-*.json') for r in json.load(open(f))}
dense = 2 * 8 * 131072 * 128 * 2  # K and V bytes of one layer
for (run, var), r in sorted(rows.items()):
    print('%-8s %-6s %9.1f us  device %6.1f MiB (%4.1f%% of dense)  host %6.1f MiB  %7.1f KB/step  hits %.2f' %
          (run, var, r['us_median'], r['device_bytes'] / 2**20, 100 * r['device_bytes'] / dense,
           r['host_bytes'] / 2**20, r['transfer_bytes'] / 1e3, r.get('row_cache_hit_rate', 0)))
c, m = rows[('direct', 'fasa')], rows[('rowcache', 'fasa-m')]
print('fasa-m device bytes <= 15% of dense:', 'PASS' if m['device_bytes'] <= 0.15 * dense else 'FAIL')
print('fasa-m row-cache step <= 2x FASA-C:', 'PASS' if m['us_median'] <= 2 * c['us_median'] else 'FAIL')
EOF
