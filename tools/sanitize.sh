#!/usr/bin/env bash
# Sanitizer builds of the library and the CPU/OpenCL suites:
#   asan:       AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/):
#               the CPU suite and the whole OpenCL suite (about 15 min here)
#   asan-quick: the same build; the CPU suite, the CPU and OpenCL conformance
#               matrices without the 65536-token cases, and the OpenCL embedding,
#               FASA-M and fault-sweep tests (what CI runs, about 8 min)
#   both also run the hostile CLI test (tests/hostile/hostile.py) on the
#   sanitized fasa, CPU and OpenCL backends
#   tsan:       ThreadSanitizer on the threading tests (build-tsan/)
# Usage: tools/sanitize.sh [asan|asan-quick|tsan|all]   (default all = asan + tsan)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
export OCL_ICD_VENDORS=/etc/OpenCL/vendors/pocl.icd
export POCL_CACHE_DIR="$PWD/build-asan/pocl-cache"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
common=(-Dcuda=disabled -Dvulkan=disabled)

asan_run() { # meson test arguments...
  meson test -C build-asan --print-errorlogs "$@"
}

if [ "$what" = asan ] || [ "$what" = asan-quick ] || [ "$what" = all ]; then
  [ -f build-asan/build.ninja ] || meson setup build-asan "${common[@]}" -Db_sanitize=address,undefined \
    -Db_lundef=false -Dbuildtype=debugoptimized >&2
  ninja -C build-asan >&2
  # PoCL's own LLVM leaks at exit: leak checking stays on for the CPU suite only
  ASAN_OPTIONS=detect_leaks=1 asan_run --suite cpu --no-suite valgrind --no-suite conform
  ASAN_OPTIONS=detect_leaks=1 asan_run conform_cpu --test-args=--quick
  if [ -d build-asan/tests/opencl ]; then
    if [ "$what" = asan-quick ]; then
      cl_tests=$(meson test -C build-asan --list --suite opencl 2>/dev/null |
                 grep -oE 'test_cl_embed|test_cl_fasam|test_faults_opencl' | sort -u)
      # shellcheck disable=SC2086
      [ -z "$cl_tests" ] || ASAN_OPTIONS=detect_leaks=0 asan_run $cl_tests
    else
      ASAN_OPTIONS=detect_leaks=0 asan_run --suite opencl --no-suite conform
    fi
    ASAN_OPTIONS=detect_leaks=0 asan_run conform_opencl --test-args=--quick
  fi
  # The hostile CLI test (tests/hostile/): the whole tool over bad arguments,
  # files, prompts and paths; any sanitizer report, crash or hang fails it.
  # CPU runs with leak checking; OpenCL runs without (PoCL's LLVM, above).
  hostile=(python3 tests/hostile/hostile.py build-asan/tools/fasa build-asan/tests/write_synth_model)
  ASAN_OPTIONS=detect_leaks=1 "${hostile[@]}" --backends cpu --json build-asan/hostile-cpu.json
  if [ -d build-asan/tests/opencl ]; then
    ASAN_OPTIONS=detect_leaks=0 "${hostile[@]}" --backends opencl --random 100 --json build-asan/hostile-opencl.json
  fi
fi
if [ "$what" = tsan ] || [ "$what" = all ]; then
  [ -f build-tsan/build.ninja ] || meson setup build-tsan "${common[@]}" -Dopencl=disabled -Db_sanitize=thread \
    -Db_lundef=false -Dbuildtype=debugoptimized >&2
  ninja -C build-tsan tests/test_threads tests/test_api >&2
  TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/test_threads
fi
