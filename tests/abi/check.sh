#!/usr/bin/env bash
# ABI check of libfasa.so against the committed baseline tests/abi/libfasa.abi
# (docs/API.md, "Loading and ABI").
#
#   tests/abi/check.sh BUILD/libfasa.so BUILD/tests/abi/libfasa_abi_probe.so
#       compare (meson test abi-baseline)
#   tests/abi/check.sh --update BUILD/libfasa.so BUILD/tests/abi/libfasa_abi_probe.so
#       regenerate the baseline (the same: ninja -C BUILD abi-update)
#
# abidw reads the library's DWARF (libfasa is compiled with -g in every build
# type) with --headers-dir include/, so only the types of the public headers
# count; abidiff then compares with the baseline.  The structs that no
# function signature reaches (the embed structs and fasa_struct_header, passed
# as `const void *`) are read from a small probe module (abi_probe.c) and
# compared with a second baseline, tests/abi/probe.abi.  Any change that can break
# an application built against the baseline (a removed or changed function,
# a struct whose layout or size changed, an enum value renumbered) fails.
# Additions (new functions) pass with a note: they break nobody, and the
# next --update records them.  A deliberate change (before 1.0: a field
# appended before `next`, a new function) is recorded by running --update
# and committing the new baseline with the change; review its diff.
#
# The baseline describes a build with the Vulkan and OpenCL backends (CUDA
# or not does not matter: builds without it export the same fasa_cuda_*
# functions as stubs); other builds skip.  Exit 77 (skip) without
# abigail-tools (Debian: abigail-tools; tools/setup.sh installs it).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
update=0
if [ "${1:-}" = "--update" ]; then update=1; shift; fi
lib=${1:-} probe=${2:-}
[ -n "$probe" ] || { echo "usage: check.sh [--update] BUILD/libfasa.so BUILD/tests/abi/libfasa_abi_probe.so" >&2; exit 2; }
for f in "$lib" "$probe"; do [ -e "$f" ] || { echo "check.sh: no file at $f" >&2; exit 1; }; done

for t in abidw abidiff; do
  command -v $t >/dev/null || { echo "SKIP: $t not found: install abigail-tools (tools/setup.sh does)"; exit 77; }
done
syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
for s in fasa_vk_record_decode fasa_cl_enqueue_decode; do
  if ! grep -qx "$s" <<< "$syms"; then
    echo "SKIP: this build lacks $s (the baseline describes a build with the vulkan and opencl backends)"
    exit 77
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
# compare BINARY BASELINE_NAME
compare() {
  local bin=$1 name=$2 base=$here/$2
  local sections
  sections=$(readelf -S "$bin")   # (not piped into grep -q: pipefail would see readelf's SIGPIPE)
  [[ $sections == *.debug_info* ]] || {
    echo "FAIL: $bin has no debug info (stripped?): abidw needs it to see the public types" >&2; status=1; return; }
  # --exported-interfaces-only: the exported functions and the types they reach;
  # --no-show-locs / --no-corpus-path: nothing machine-specific in the file;
  # --type-id-style hash: ids stable across unrelated changes (small diffs)
  abidw --headers-dir "$src/include" --drop-private-types --exported-interfaces-only --drop-undefined-syms \
        --no-show-locs --no-corpus-path --type-id-style hash --out-file "$tmp/$name" "$bin" ||
    { echo "FAIL: abidw $bin failed" >&2; status=1; return; }
  if [ $update = 1 ]; then
    cp "$tmp/$name" "$base"
    echo "check.sh: wrote tests/abi/$name ($(grep -c '<elf-symbol ' "$base") exported symbols); commit it with the change"
    return
  fi
  [ -e "$base" ] || { echo "FAIL: no baseline tests/abi/$name: run $0 --update $lib $probe" >&2; status=1; return; }
  abidiff --suppressions "$here/suppressions.ini" "$base" "$tmp/$name" > "$tmp/diff.txt"
  local rc=$?
  if [ $rc = 0 ]; then
    echo "check.sh: $(basename "$bin") matches tests/abi/$name"
    return
  fi
  cat "$tmp/diff.txt"
  if [ $((rc & 3)) != 0 ]; then echo "FAIL: abidiff could not compare (status $rc)" >&2; status=1; return; fi
  # changes found: additions only?
  if abidiff --no-added-syms --suppressions "$here/suppressions.ini" "$base" "$tmp/$name" > /dev/null; then
    echo "check.sh: compatible: only additions to tests/abi/$name (record them with --update)"
    return
  fi
  echo "FAIL: $(basename "$bin") differs from tests/abi/$name (above)" >&2
  status=1
}
compare "$lib" libfasa.abi
compare "$probe" probe.abi
if [ $update = 0 ] && [ $status != 0 ]; then
  cat >&2 <<MSG
If the change is deliberate (docs/API.md, "Loading and ABI"), regenerate the
baseline and commit it with the change:
    $0 --update $lib $probe
    (or: ninja -C <build> abi-update)
MSG
fi
exit $status
