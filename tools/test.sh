#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every suite.
# Backends without a device (CUDA here) report their tests as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
# Force the software devices so results do not depend on the machine.
export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
export OCL_ICD_VENDORS=/etc/OpenCL/vendors/pocl.icd
export POCL_CACHE_DIR="$PWD/build/pocl-cache"
export XDG_CACHE_HOME="$PWD/build/cache"
meson test -C build --print-errorlogs --num-processes 2 "$@"
