#!/usr/bin/env bash
# Sanitizer builds of the library and the CPU/OpenCL suites:
#   asan: AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
#   tsan: ThreadSanitizer on the threading tests (build-tsan/)
# Usage: tools/sanitize.sh [asan|tsan|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
export OCL_ICD_VENDORS=/etc/OpenCL/vendors/pocl.icd
export POCL_CACHE_DIR="$PWD/build-asan/pocl-cache"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
common=(-Dcuda=disabled -Dvulkan=disabled)

if [ "$what" = asan ] || [ "$what" = all ]; then
  [ -f build-asan/build.ninja ] || meson setup build-asan "${common[@]}" -Db_sanitize=address,undefined \
    -Db_lundef=false -Dbuildtype=debugoptimized >&2
  ninja -C build-asan >&2
  # PoCL's own LLVM leaks at exit: leak checking stays on for the CPU suite only
  ASAN_OPTIONS=detect_leaks=1 meson test -C build-asan --print-errorlogs --suite cpu --no-suite valgrind \
    --no-suite conform
  ASAN_OPTIONS=detect_leaks=1 meson test -C build-asan --print-errorlogs conform_cpu --test-args=--quick
  if [ -d build-asan/tests/opencl ]; then
    ASAN_OPTIONS=detect_leaks=0 meson test -C build-asan --print-errorlogs --suite opencl
  fi
fi
if [ "$what" = tsan ] || [ "$what" = all ]; then
  [ -f build-tsan/build.ninja ] || meson setup build-tsan "${common[@]}" -Dopencl=disabled -Db_sanitize=thread \
    -Db_lundef=false -Dbuildtype=debugoptimized >&2
  ninja -C build-tsan tests/test_threads tests/test_api >&2
  TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/test_threads
fi
