#!/usr/bin/env bash
# What libfasa.so exports and requires (docs/API.md, "Loading and ABI"):
#  - NEEDED names no GPU runtime and no JSON library (they are opened at run
#    time: Vulkan/OpenCL loaders by dlopen, the CUDA driver by the static
#    CUDA runtime);
#  - the dynamic symbol table holds exactly the functions the public headers
#    (include/*.h) declare with FASA_API, plus the fasa tool's Vulkan
#    compile-report hook; in particular no test hook (fasa_debug_*), no
#    internal fasa__* helper and no cl*/vk*/cuda* symbol;
#  - fasa.pc requires no vulkan or OpenCL package and names no cjson.
# usage: check_exports.sh SOURCE_ROOT LIBFASA_SO FASA_PC
set -uo pipefail
src=$1 lib=$2 pc=$3
[ -e "$lib" ] || { echo "FAIL: no library at $lib" >&2; exit 1; }
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

needed=$(readelf -d "$lib" | awk '/NEEDED/ {print $NF}' | tr -d '[]' | tr '\n' ' ')
echo "NEEDED: $needed"
if grep -Eq 'lib(vulkan|OpenCL|cuda|cudart|nvrtc|cjson)\.so' <<< "$needed"; then
  bad "libfasa.so links a GPU runtime or cjson: $needed"
fi

exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWwDdBbRrVviu]$/ {print $3}' | sed 's/@.*//' | sort -u)
declared=$(cat "$src"/include/*.h | grep -v '^ *#' | tr '\n' ' ' | grep -oE 'FASA_API[^;{(]*\(' \
           | sed -E 's/\($//; s/.*[ *]([A-Za-z_][A-Za-z0-9_]*)$/\1/' | sort -u)
# the fasa tool's compile report (src/vulkan/vk_report.h), Vulkan builds only;
# not part of the API, ignored by the ABI check (tests/abi/suppressions.ini)
tool_hooks='^fasa_vk_(compile_report|report_stat)$'
echo "exported: $(echo "$exported" | wc -l) symbols; public headers declare $(echo "$declared" | wc -l)"
debug=$(echo "$exported" | grep -E 'debug' || true)
[ -z "$debug" ] || bad "test hooks exported: $debug"
extra=$(comm -23 <(echo "$exported") <(echo "$declared") | grep -Ev "$tool_hooks" || true)
[ -z "$extra" ] || bad "exported but not declared FASA_API in include/: $(echo $extra)"
# Declared but missing: only the backend APIs of backends this build lacks
# (fasa_cuda_* exist in every build, as stubs without CUDA).
missing=$(comm -13 <(echo "$exported") <(echo "$declared") || true)
absent=""
for s in $missing; do
  case $s in
    fasa_vk_*) if grep -q '^fasa_vk_record_decode$' <<< "$exported"; then bad "missing export $s"; else absent+=" $s"; fi ;;
    fasa_cl_*) if grep -q '^fasa_cl_enqueue_decode$' <<< "$exported"; then bad "missing export $s"; else absent+=" $s"; fi ;;
    *) bad "declared FASA_API but not exported: $s" ;;
  esac
done
[ -z "$absent" ] || echo "not in this build (backend not compiled):$absent"

echo "fasa.pc:"; sed 's/^/  /' "$pc"; echo
grep -Eiq '^Requires.*(vulkan|opencl)' "$pc" && bad "fasa.pc requires a GPU runtime: $(grep -i '^Requires' "$pc")"
grep -qi cjson "$pc" && bad "fasa.pc names cjson: $(grep -i cjson "$pc")"
[ $fail = 0 ] && echo "check_exports: ok"
exit $fail
