#!/usr/bin/env bash
# Configures (once) and builds libfasa in build/ with every backend the
# machine can build.  Extra arguments go to `meson setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  meson setup build -Dwerror=true "$@" >&2
fi
ninja -C build >&2
