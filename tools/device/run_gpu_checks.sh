#!/bin/bash
# The one prepared run for the H200 test machine (GPU_NOTES §3; how to
# build and send it: tools/device/README.md).  In the repository root there:
#
#   . .gpu-debs/gpu-env.sh; bash tools/device/run_gpu_checks.sh [BUILD_DIR]
#
# BUILD_DIR (default build-gpu) is a build made on the development machine
# with -Dvulkan=enabled -Dopencl=enabled -Dcuda=enabled.  Every step runs
# under `timeout` inside one overall budget (BUDGET_S, default 440 s, so the
# whole script ends well inside 8 minutes), and a failing step never stops
# the next.  In order of importance:
#   env        nvidia-smi, fasa info (text and --json)
#   conform    fasa conform --json for cuda, then vulkan and opencl, then cpu,
#              in two parts each (--quick, then the 65536-token cases); each
#              GPU backend on its NVIDIA device, picked by name (the machine
#              also exposes PoCL on its CPU)
#   tests      test_cuda_embed, test_cuda_fasam, test_faults_cuda, then a
#              test_cuda_compare subset (CUDA vs CPU)
#   cross      (last) fasa conform --against cuda for vulkan and opencl: each
#              case compared with CUDA's outputs on the same GPU
#   bench      fasa bench --json for cuda, vulkan and opencl at L = 131072 and
#              524288 (Hq 32, Hkv 8, d 128, f16, N_tip 16, N_fac 256); FASA-M
#              next to FASA-C at 131072 (cuda staged R=2048 and direct, vulkan
#              staged R=2048)
# Results go to $OUT (the device tool's result folder; ./out when unset), at
# most 8 files, none in subfolders: summary.txt (every step with its exit
# status and time), env.txt, conform.json, conform.txt, bench.json,
# bench.txt, tests.txt.
set -u

BUILD=${1:-build-gpu}
OUT=${OUT:-$PWD/out}
BUDGET=${BUDGET_S:-440}
FASA="$BUILD/tools/fasa"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fasa-gpu.XXXXXX")
T0=$(date +%s)
mkdir -p "$OUT"
: > "$OUT/summary.txt"

log() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$OUT/summary.txt"; }
left() { echo $((BUDGET - ($(date +%s) - T0))); }

# step NAME LIMIT OUTFILE CMD...: runs CMD with stdout appended to OUTFILE
# and stderr to OUTFILE.err, under min(LIMIT, budget left - 5) seconds.
step() {
    local name=$1 limit=$2 out=$3
    shift 3
    local budget_left
    budget_left=$(($(left) - 5))
    if [ "$budget_left" -lt 15 ]; then
        log "SKIP  $name: the overall budget is spent"
        return 0
    fi
    [ "$limit" -gt "$budget_left" ] && limit=$budget_left
    log "START $name (timeout ${limit}s)"
    local t=$(date +%s)
    timeout -k 5 "$limit" "$@" >> "$out" 2>> "$out.err"
    local rc=$?
    local what="rc=$rc"
    [ $rc -eq 124 ] && what="rc=124 (timed out)"
    [ $rc -eq 77 ] && what="rc=77 (skipped: backend or device unavailable)"
    log "END   $name $what in $(($(date +%s) - t))s"
    return 0
}

# Index of the first device of a backend whose name says NVIDIA, else 0.
pick_device() {
    python3 - "$1" "$TMP/info.json" 2>/dev/null <<'PY' || echo 0
import json, sys
backend, path = sys.argv[1], sys.argv[2]
for b in json.load(open(path)).get("backends", []):
    if b.get("name") == backend:
        for d in b.get("devices", []):
            if "NVIDIA" in d.get("name", "").upper():
                print(d.get("index", 0))
                sys.exit(0)
print(0)
PY
}

# Joins the per-backend JSON outputs into one object {backend: output};
# output that is not valid JSON (a timeout) is kept as a string.
merge_json() {
    local dest=$1
    shift
    python3 - "$dest" "$@" 2>> "$OUT/summary.txt" <<'PY' || { for f in "$@"; do echo "== $f"; cat "$f"; done > "$1"; }
import json, os, sys
dest, files = sys.argv[1], sys.argv[2:]
merged = {}
for f in files:
    key = os.path.basename(f).rsplit(".", 1)[0]
    text = open(f).read() if os.path.exists(f) else ""
    try:
        merged[key] = json.loads(text)
    except ValueError:
        merged[key] = {"unparsed_output": text}
json.dump(merged, open(dest, "w"), indent=1)
PY
}

# Appends a step's stderr to a text file under a heading.
keep_err() {
    [ -s "$2.err" ] && { echo "== stderr of $1"; cat "$2.err"; } >> "$3"
    rm -f "$2.err"
}

if [ ! -x "$FASA" ]; then
    log "FATAL: $FASA not found: build with all backends and carry the build folder (tools/device/README.md)"
    exit 1
fi

# --- env --------------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    echo "commit: $(git log -1 --format='%h %s' 2>/dev/null || echo unknown)"
    echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
    echo "== nvidia-smi"
} > "$OUT/env.txt"
step "nvidia-smi" 20 "$OUT/env.txt" nvidia-smi
step "nvidia-smi query" 20 "$OUT/env.txt" nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
echo "== fasa info" >> "$OUT/env.txt"
step "fasa info" 60 "$OUT/env.txt" "$FASA" info
step "fasa info --json" 60 "$TMP/info.json" "$FASA" info --json
{ echo "== fasa info --json"; cat "$TMP/info.json"; } >> "$OUT/env.txt"
keep_err env "$OUT/env.txt" "$OUT/env.txt"
keep_err info "$TMP/info.json" "$OUT/env.txt"
for b in cuda vulkan opencl; do
    eval "DEV_$b=$(pick_device $b)"
done
log "devices: cuda ${DEV_cuda}, vulkan ${DEV_vulkan}, opencl ${DEV_opencl} (by name: NVIDIA)"

# --- conform and tests ----------------------------------------------------
# The matrix runs in two parts per backend, so that a timeout in the slow
# 65536-token cases cannot cost the JSON of all the others: --quick (every
# case but those) as KEY, the long cases as KEY-long.
conform() { # backend device limit quick|long
    local key=$1 args=(--quick)
    [ "$4" = long ] && key=$1-long args=(--filter /L65536/)
    step "conform $1 $4 (device $2)" "$3" "$TMP/$key.json" "$FASA" conform --backend "$1" --device "$2" "${args[@]}" --json
    keep_err "conform $key" "$TMP/$key.json" "$OUT/conform.txt"
}
tests() { # name limit args...
    local name=$1 limit=$2
    shift 2
    echo "== $name $*" >> "$OUT/tests.txt"
    step "test $name $*" "$limit" "$OUT/tests.txt" "$BUILD/tests/cuda/$name" "$@"
    keep_err "$name" "$OUT/tests.txt" "$OUT/tests.txt"
}
bench() { # backend device limit
    step "bench $1 (device $2)" "$3" "$TMP/bench-$1.json" "$FASA" bench --backend "$1" --device "$2" \
        --L 131072,524288 --hq 32 --hkv 8 --d 128 --dtype f16 --ntip 16 --nfac 256 --warmup 3 --iters 50 --json
    keep_err "bench $1" "$TMP/bench-$1.json" "$OUT/bench.txt"
}

conform cuda "$DEV_cuda" 100 quick
tests test_cuda_embed 60
tests test_cuda_fasam 60
tests test_faults_cuda 90 cuda
bench cuda "$DEV_cuda" 70
# FASA-M (issue #7 target: step <= 2x FASA-C with the row cache; the cost
# without it), Llama-3-8B shape at L = 131072, FASA-C in the same run.
bench_m() { # backend device limit fetch row_cache
    step "bench fasa-m $1 $4 R=$5" "$3" "$TMP/bench-$1-m-$4.json" "$FASA" bench --backend "$1" --device "$2" \
        --L 131072 --hq 32 --hkv 8 --d 128 --dtype f16 --ntip 16 --nfac 256 --warmup 3 --iters 30 \
        --variant fasa,fasa-m --fetch "$4" --row-cache "$5" --json
    keep_err "bench fasa-m $1" "$TMP/bench-$1-m-$4.json" "$OUT/bench.txt"
}
bench_m cuda "$DEV_cuda" 45 staged 2048
bench_m cuda "$DEV_cuda" 45 direct 0
bench_m vulkan "$DEV_vulkan" 45 staged 2048
conform vulkan "$DEV_vulkan" 80 quick
conform opencl "$DEV_opencl" 80 quick
bench vulkan "$DEV_vulkan" 60
bench opencl "$DEV_opencl" 60
conform cuda "$DEV_cuda" 60 long
tests test_cuda_compare 90 2 f16 int 70000
tests test_cuda_compare 60 1 f32 rand 20000
conform vulkan "$DEV_vulkan" 40 long
conform opencl "$DEV_opencl" 40 long
conform cpu 0 60 quick
# Cross-backend: Vulkan and OpenCL against CUDA on the same GPU, case by case
# (last, so a slow run costs nothing above).
cross() { # backend device limit
    step "conform $1 against cuda" "$3" "$TMP/$1-vs-cuda.json" "$FASA" conform --backend "$1" --device "$2" \
        --against cuda --against-device "$DEV_cuda" --quick --json
    keep_err "conform $1 vs cuda" "$TMP/$1-vs-cuda.json" "$OUT/conform.txt"
}
cross vulkan "$DEV_vulkan" 90
cross opencl "$DEV_opencl" 90

# --- collect ---------------------------------------------------------------
conform_files=()
for k in cuda vulkan opencl cuda-long vulkan-long opencl-long cpu vulkan-vs-cuda opencl-vs-cuda; do
    [ -e "$TMP/$k.json" ] && conform_files+=("$TMP/$k.json")
done
merge_json "$OUT/conform.json" "${conform_files[@]}"
merge_json "$OUT/bench.json" "$TMP"/bench-cuda.json "$TMP"/bench-vulkan.json "$TMP"/bench-opencl.json \
    "$TMP"/bench-cuda-m-staged.json "$TMP"/bench-cuda-m-direct.json "$TMP"/bench-vulkan-m-staged.json
python3 - "$OUT/conform.json" "$OUT/bench.json" >> "$OUT/bench.txt" 2>> "$OUT/summary.txt" <<'PY' || true
import json, sys
conf, bench = (json.load(open(p)) for p in sys.argv[1:3])
print("== conform summary")
for b, doc in conf.items():
    for r in doc.get("summary", []) if isinstance(doc, dict) else []:
        if not r.get("available"):
            print(f"{b:8s} skipped: {r.get('skipped', '')}")
            continue
        print(f"{b:8s} {r.get('device', '')}: {r.get('passed')} / {r.get('cases')} passed, "
              f"max NMSE {r.get('max_nmse', 0):.2e}, max score err {r.get('max_score_err', 0):.2e}, "
              f"near-tie swaps {r.get('near_ties')}")
    if isinstance(doc, dict) and "unparsed_output" in doc:
        print(f"{b:8s} no JSON (timed out or crashed)")
print("== bench (median us)")
for b, rows in bench.items():
    for r in rows if isinstance(rows, list) else []:
        print(f"{b:8s} L={r.get('L')} {r.get('variant'):6s} {r.get('us_median', 0):10.1f} us"
              f"  speedup vs dense {r.get('speedup_vs_dense', 0):.2f}")
PY
log "done in $(($(date +%s) - T0))s; results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$TMP"
