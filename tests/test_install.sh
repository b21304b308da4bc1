#!/usr/bin/env bash
# Install checks: the installed fasa runs from any prefix without
# LD_LIBRARY_PATH (RUNPATH $ORIGIN/../lib...), finds its installed data,
# fasa.pc exports no private dependency, and -Dtests=false builds no test.
# usage: test_install.sh SOURCE_ROOT BUILD_ROOT
set -euo pipefail
src=$1 build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >/dev/null
prefix=$(meson introspect "$build" --buildoptions | python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
fasa="$tmp/root$prefix/bin/fasa"
[ -x "$fasa" ] || fail "no installed fasa at $fasa"
readelf -d "$fasa" | grep -q 'RUNPATH.*\$ORIGIN' || fail "installed fasa has no \$ORIGIN RUNPATH"
# The build tree's library must not be what it finds: move the build's away
# from the search path by running from an empty directory with a clean env.
(cd "$tmp" && env -u LD_LIBRARY_PATH "$fasa" info >/dev/null) || fail "installed fasa does not run from $tmp"
lib=$(cd "$tmp" && env -u LD_LIBRARY_PATH LD_TRACE_LOADED_OBJECTS=1 "$fasa" | awk '/libfasa/ {print $3}')
case $lib in "$tmp/root"*) ;; *) fail "installed fasa loads $lib, not the installed libfasa" ;; esac

pc=$(find "$tmp/root" -name fasa.pc | head -1)
[ -n "$pc" ] || fail "no fasa.pc installed"
if grep -qi cjson "$pc"; then fail "fasa.pc names cjson: $(grep -i cjson "$pc")"; fi
if grep -Eqi '^Requires.*(vulkan|opencl)' "$pc"; then fail "fasa.pc requires a GPU runtime: $(grep -i '^Requires' "$pc")"; fi
# the test hooks' header is internal (src/fasa_debug.h)
if [ -n "$(find "$tmp/root" -name fasa_debug.h)" ]; then fail "fasa_debug.h is installed"; fi

calib=$(find "$tmp/root$prefix/share" -name "*.calib.json" 2>/dev/null | head -1 || true)
[ -n "$calib" ] || fail "no calibration installed under $prefix/share"

# -Dtests=false: configured, no test is defined
meson setup "$tmp/notests" "$src" -Dtests=false -Dcuda=disabled >/dev/null
n=$(meson introspect "$tmp/notests" --tests | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$n" = 0 ] || fail "-Dtests=false still defines $n tests"
echo "test_install: installed fasa runs from $tmp (RUNPATH, its own libfasa), data and fasa.pc ok, -Dtests=false defines no test"
