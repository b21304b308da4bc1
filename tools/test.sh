#!/usr/bin/env bash
# The test command: installs what is missing (Debian packages; numpy and gguf
# from PyPI into .venv for the model reference checks; the SmolLM2 GGUF and
# the Austen texts), builds, and runs every suite.  Arguments go to
# `meson test` (e.g. --suite cpu).  A backend without a device (CUDA here)
# reports its device tests as skipped; so do the model tests when PyPI or
# the Debian archive cannot be reached, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

# Python tooling for the tests, isolated from the system interpreter.
if [ ! -x .venv/bin/python3 ]; then
  python3 -m venv .venv
fi
.venv/bin/python3 -m pip install -q --disable-pip-version-check numpy gguf >&2 ||
  echo "test: could not install numpy/gguf from PyPI; the numpy reference checks will skip" >&2
export PATH="$PWD/.venv/bin:$PATH"

if model=$(bash tools/get-model.sh 2>/dev/null | tail -1) && [ -f "$model" ]; then
  case $model in /*) export FASA_MODEL="$model" ;; *) export FASA_MODEL="$PWD/$model" ;; esac
else
  echo "test: could not fetch the SmolLM2 model; the real-model tests will skip" >&2
fi
if bash tools/get-texts.sh >/dev/null 2>&1; then
  export FASA_TEXTS="$PWD/texts"
else
  echo "test: could not extract the Austen texts; model tests use the GPL text instead" >&2
fi

# The build may have been configured before .venv existed (README's main job
# comes first): point its test interpreter at .venv in every case.
venv_python="$PWD/.venv/bin/python3"
if [ -f build/build.ninja ]; then
  meson configure build -Dtest_python="$venv_python" >/dev/null
  bash tools/build.sh
else
  bash tools/build.sh -Dtest_python="$venv_python"
fi
# Force the software devices so results do not depend on the machine.
export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
export OCL_ICD_VENDORS=/etc/OpenCL/vendors/pocl.icd
export POCL_CACHE_DIR="$PWD/build/pocl-cache"
export XDG_CACHE_HOME="$PWD/build/cache"
status=0
meson test -C build --print-errorlogs --num-processes 2 "$@" || status=$?
# Skipped tests are easy to miss in meson's summary: list each with its reason.
python3 tools/report_skips.py build/meson-logs/testlog.json || true
exit $status
