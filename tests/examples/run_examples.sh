#!/usr/bin/env bash
# Builds the example host applications of tests/examples against an
# *installed* libfasa, as an engine would, and runs them.
#
# usage: run_examples.sh BUILD_DIR [cpu|vulkan|opencl|cuda ...]   (default: all four)
#
#  1. meson install -C BUILD_DIR --destdir TMP (a private, throw-away prefix);
#  2. per example: cc EXAMPLE.c $(pkg-config --cflags --libs fasa) + the
#     application's own API library (-lvulkan, -lOpenCL, -lcudart), with
#     pkg-config reading the installed fasa.pc relocated into TMP;
#  3. checks that the program resolves libfasa from TMP, runs it with
#     LD_LIBRARY_PATH pointing at the installed lib, and reports.
#
# Exit: 1 if an example failed to build or run, else 77 if every example
# was skipped (no device, backend not built, API headers missing), else 0.
# Environment: CC (default cc), EXAMPLE_CFLAGS (extra flags, e.g. a
# sanitizer the library was built with), CUDA_ROOT (default: from nvcc on PATH, else
# /usr/local/cuda).  For Vulkan, VK_INSTANCE_LAYERS defaults to the Khronos
# validation layer (with synchronization validation) when it is installed;
# the example's own debug messenger then fails it on any message.
set -uo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [cpu|vulkan|opencl|cuda ...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd) || exit 2
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
examples=("$@")
[ ${#examples[@]} -gt 0 ] || examples=(cpu vulkan opencl cuda)
cc=${CC:-cc}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. Install into a private prefix.
if ! meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log" >&2
  echo "FAIL: meson install -C $build --destdir $tmp/root" >&2
  exit 1
fi
prefix=$(meson introspect "$build" --buildoptions | python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
root="$tmp/root$prefix"
pc=$(find "$tmp/root" -name fasa.pc | head -1)
if [ -z "$pc" ]; then
  echo "FAIL: no fasa.pc in the installed tree" >&2
  exit 1
fi
pcdir=$(dirname "$pc")
libdir=$(dirname "$pcdir")
# fasa.pc's paths are relative to ${prefix}: point prefix at the private copy.
fasa_flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$root" --cflags --libs fasa) || {
  echo "FAIL: pkg-config --cflags --libs fasa" >&2
  exit 1
}
case " $fasa_flags " in
  *" -I$root/include "*) ;;
  *) echo "FAIL: pkg-config fasa gave '$fasa_flags', not the installed headers under $root" >&2; exit 1 ;;
esac
echo "installed libfasa: $libdir"
echo "pkg-config --cflags --libs fasa: $fasa_flags"
exports=$(nm -D --defined-only "$libdir/libfasa.so" 2>/dev/null || true)

# The application's own API flags; prints nothing and fails when the
# headers are not there.
app_flags() {
  case $1 in
    cpu) echo "" ;;
    vulkan)
      grep -qw fasa_vk_buffer_wrap <<<"$exports" || { echo "libfasa exports no Vulkan embedding API"; return 1; }
      local f; f=$(pkg-config --cflags --libs vulkan 2>/dev/null) || f=-lvulkan
      echo '#include <vulkan/vulkan.h>' | $cc -E -x c - $f >/dev/null 2>&1 || { echo "no Vulkan headers"; return 1; }
      echo "$f" ;;
    opencl)
      grep -qw fasa_cl_buffer_wrap <<<"$exports" || { echo "libfasa exports no OpenCL embedding API"; return 1; }
      local f; f=$(pkg-config --cflags --libs OpenCL 2>/dev/null) || f=-lOpenCL
      printf '#define CL_TARGET_OPENCL_VERSION 120\n#include <CL/cl.h>\n' | $cc -E -x c - $f >/dev/null 2>&1 ||
        { echo "no OpenCL headers"; return 1; }
      echo "$f" ;;
    cuda)
      local r=${CUDA_ROOT:-}
      if [ -z "$r" ] && command -v nvcc >/dev/null; then r=$(dirname "$(dirname "$(command -v nvcc)")"); fi
      [ -n "$r" ] || r=/usr/local/cuda
      [ -f "$r/include/cuda_runtime_api.h" ] || { echo "no CUDA toolkit at $r (set CUDA_ROOT)"; return 1; }
      local l=$r/lib64
      [ -d "$l" ] || l=$r/lib
      echo "-I$r/include -L$l -Wl,-rpath,$l -lcudart" ;;
    *) echo "unknown example '$1'"; return 2 ;;
  esac
}

# Vulkan validation: on by default when the layer is installed.
validation_layer() {
  local d extra=${VK_LAYER_PATH:-}
  for d in /usr/share/vulkan/explicit_layer.d /usr/local/share/vulkan/explicit_layer.d /etc/vulkan/explicit_layer.d \
           ${extra//:/ }; do
    [ -f "$d/VkLayer_khronos_validation.json" ] && return 0
  done
  return 1
}

n_pass=0 n_skip=0 n_fail=0
summary=""
for name in "${examples[@]}"; do
  src="$here/${name}_host.c"
  exe="$tmp/${name}_host"
  echo
  echo "== $name: $src"
  flags=$(app_flags "$name")
  rc=$?
  if [ $rc -eq 2 ]; then
    echo "FAIL: $flags" >&2
    n_fail=$((n_fail + 1)); summary+="  $name: FAILED ($flags)"$'\n'
    continue
  elif [ $rc -ne 0 ]; then
    echo "SKIP: $flags"
    n_skip=$((n_skip + 1)); summary+="  $name: skipped ($flags)"$'\n'
    continue
  fi
  # 2. Build as an engine would: installed headers and library only.
  # (word splitting of $cc and the flag strings is intended)
  cmd=($cc -std=c11 -O2 -Wall -Wextra -Werror ${EXAMPLE_CFLAGS:-} "$src" $fasa_flags $flags -lm -o "$exe")
  echo "${cmd[*]}"
  if ! "${cmd[@]}"; then
    echo "FAIL: $name does not build against the installed libfasa" >&2
    n_fail=$((n_fail + 1)); summary+="  $name: FAILED to build"$'\n'
    continue
  fi
  # 3. It must load the installed libfasa, not the build tree's.
  found=$(env LD_LIBRARY_PATH="$libdir" LD_TRACE_LOADED_OBJECTS=1 "$exe" | awk '/libfasa/ {print $3}')
  case $found in
    "$libdir"/*) ;;
    *) echo "FAIL: $name loads libfasa from '$found', not $libdir" >&2
       n_fail=$((n_fail + 1)); summary+="  $name: FAILED (wrong libfasa)"$'\n'; continue ;;
  esac
  run_env=(LD_LIBRARY_PATH="$libdir")
  if [ "$name" = vulkan ] && [ -z "${VK_INSTANCE_LAYERS+x}" ]; then
    if validation_layer; then
      run_env+=(VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation
                VK_LAYER_ENABLES=VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT)
      echo "validation layer: on (with synchronization validation)"
    else
      echo "validation layer: not installed"
    fi
  fi
  env "${run_env[@]}" "$exe"
  rc=$?
  case $rc in
    0) n_pass=$((n_pass + 1)); summary+="  $name: ok"$'\n' ;;
    77) n_skip=$((n_skip + 1)); summary+="  $name: skipped at run time"$'\n' ;;
    *) echo "FAIL: $name exited $rc" >&2; n_fail=$((n_fail + 1)); summary+="  $name: FAILED (exit $rc)"$'\n' ;;
  esac
done

echo
echo "examples against the installed libfasa: $n_pass passed, $n_skip skipped, $n_fail failed"
printf '%s' "$summary"
[ "$n_fail" -eq 0 ] || exit 1
[ "$n_pass" -gt 0 ] || exit 77
exit 0
