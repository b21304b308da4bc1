#!/usr/bin/env bash
# Installs the Debian 12 packages libfasa needs, skipping those present.
# Idempotent; used by both README commands and by CI.  Needs root or sudo
# only when something is missing.  Extra package names given as arguments
# are installed too (tools/fuzz.sh adds clang and its fuzzer runtime).
set -euo pipefail

packages=(
  build-essential meson ninja-build pkg-config python3 python3-venv xxd
  glslang-tools spirv-tools libvulkan-dev libvulkan1 libvulkan-volk-dev
  mesa-vulkan-drivers vulkan-tools vulkan-validationlayers
  ocl-icd-opencl-dev ocl-icd-libopencl1 opencl-headers pocl-opencl-icd clinfo
  libcjson-dev libjsmn-dev valgrind abigail-tools
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} Debian packages present" >&2
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
