#!/usr/bin/env bash
# A CPU-only application runs where the GPU runtimes are absent
# (docs/API.md, "Loading and ABI").
#  1. libfasa.so and the consumer name no GPU runtime in NEEDED (so the
#     dynamic loader never needs one at start-up).
#  2. The consumer (tests/abi/cpu_consumer.c) decodes on the CPU backend and
#     no GPU runtime gets mapped.
#  3. With the loaders hidden by an LD_PRELOAD shim whose dlopen() fails for
#     libvulkan/libOpenCL/libcuda: the CPU path still works, the Vulkan and
#     OpenCL backends report BACKEND_UNAVAILABLE naming the library, and
#     `fasa info` shows that reason per backend.
#  4. Where a private mount namespace is allowed (root, or unprivileged user
#     namespaces: `unshare -rm`), the same with the real files replaced by
#     empty ones (bind mounts), i.e. without any interposition.
# usage: test_no_loaders.sh LIBFASA_SO CONSUMER SHIM FASA_TOOL
set -uo pipefail
lib=$1 consumer=$2 shim=$3 fasa=$4
fail() { echo "FAIL: $*" >&2; exit 1; }
gpu_re='lib(vulkan|OpenCL|cuda|cudart|nvrtc|cjson)\.so'

for f in "$lib" "$consumer"; do
  needed=$(readelf -d "$f" | awk '/NEEDED/ {print $NF}' | tr -d '[]' | tr '\n' ' ')
  echo "NEEDED of $(basename "$f"): $needed"
  if grep -Eq "$gpu_re" <<< "$needed"; then fail "$(basename "$f") links a GPU runtime: $needed"; fi
done

echo "--- CPU decode, loaders installed"
"$consumer" || fail "cpu_consumer failed with the loaders installed"

echo "--- loaders hidden by an LD_PRELOAD shim"
# ASan builds: the shim comes before the ASan runtime in the preload list
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
LD_PRELOAD="$shim" "$consumer" hidden || fail "cpu_consumer failed with the loaders hidden"
info=$(LD_PRELOAD="$shim" "$fasa" info) || fail "fasa info failed with the loaders hidden"
echo "$info" | grep -v '^        '
for pair in "vulkan:libvulkan.so.1" "opencl:libOpenCL.so.1"; do
  b=${pair%%:*} soname=${pair#*:}
  line=$(echo "$info" | grep -E "^  $b ")
  case $line in
    *"not compiled in"*) ;;
    *"unavailable"*"$soname"*) ;;
    *) fail "fasa info does not say why $b is unavailable: '$line'" ;;
  esac
done

echo "--- loaders replaced by empty files in a private mount namespace"
if ! unshare -rm true 2>/dev/null && ! unshare -m true 2>/dev/null; then
  echo "(skipped: no mount namespace here; the LD_PRELOAD run above covers it)"
  exit 0
fi
files=$(for n in libvulkan.so.1 libOpenCL.so.1 libcuda.so.1; do
          ldconfig -p 2>/dev/null | awk -v n="$n" '$1 == n {print $NF}'
        done | xargs -r readlink -f | sort -u)
empty=$(mktemp)
trap 'rm -f "$empty"' EXIT
ns=(unshare -m --propagation private)
unshare -m true 2>/dev/null || ns=(unshare -rm --propagation private)
# shellcheck disable=SC2016
"${ns[@]}" bash -c '
  empty=$1 consumer=$2 fasa=$3; shift 3
  for f in "$@"; do mount --bind "$empty" "$f" || exit 3; done
  echo "hidden: $*"
  "$consumer" hidden || exit 1
  "$fasa" info | grep -E "^  (vulkan|opencl|cuda) "
' _ "$empty" "$consumer" "$fasa" $files
rc=$?
[ $rc = 3 ] && { echo "(skipped: bind mounts refused; the LD_PRELOAD run above covers it)"; exit 0; }
[ $rc = 0 ] || fail "cpu_consumer failed with the loaders replaced by empty files"
echo "test_no_loaders: ok"
