#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan (build-fuzz/) and
# runs each for SECONDS (default 60) on a copy of its seed corpus.
# Usage: tools/fuzz.sh [SECONDS] [TARGET...]   (targets: calib_json cli_args gguf)
# Prints, per target, the executions, the corpus size and any crash files.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(calib_json cli_args gguf)
bash tools/setup.sh clang libclang-rt-14-dev
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dfuzz=true -Dvulkan=disabled -Dopencl=disabled -Dcuda=disabled \
    -Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link >&2
fi
build_targets=()
for t in "${targets[@]}"; do
  build_targets+=("tests/fuzz/fuzz_$t")
  [ "$t" != gguf ] || build_targets+=(tests/fuzz/make_gguf_seed)
done
ninja -C build-fuzz "${build_targets[@]}" >&2
work=build-fuzz/fuzz-work
mkdir -p "$work"
status=0
for t in "${targets[@]}"; do
  corpus="$work/corpus_$t"
  crashes="$work/crashes_$t"
  mkdir -p "$corpus" "$crashes"
  case $t in
    calib_json) cp -n tests/fuzz/corpus_calib/* "$corpus"/ ;;
    cli_args) cp -n tests/fuzz/corpus_cli/* "$corpus"/ ;;
    gguf) cp -n tests/fuzz/corpus_gguf/* "$corpus"/; build-fuzz/tests/fuzz/make_gguf_seed "$corpus" ;;
  esac
  log="$work/$t.log"
  echo "fuzz_$t: ${seconds}s ..." >&2
  if ! UBSAN_OPTIONS=halt_on_error=1 build-fuzz/tests/fuzz/fuzz_$t "$corpus" -max_total_time="$seconds" \
       -artifact_prefix="$crashes/" -print_final_stats=1 -max_len=65536 > "$log" 2>&1; then
    status=1
  fi
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  found=$(ls "$crashes" | wc -l)
  echo "fuzz_$t: ${execs:-?} executions, corpus $(ls "$corpus" | wc -l) inputs, $found crash/leak/timeout files" 
  [ "$found" -eq 0 ] || { status=1; tail -30 "$log" >&2; }
done
exit $status
