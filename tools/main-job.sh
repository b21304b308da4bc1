#!/usr/bin/env bash
# The main job: build, then on the best available backend run the
# conformance matrix and the dense-vs-FASA benchmark, and summarise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
fasa=build/tools/fasa
$fasa info
echo
echo "== conformance (auto-picked backend and every other available one) =="
$fasa conform --backend all --quick
echo
echo "== benchmark: one decode step, Llama-3-8B attention shape =="
$fasa bench --L 8192,32768
