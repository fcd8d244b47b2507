#!/usr/bin/env bash
# Build mr_mllm_interfaces with plain cmake against the ROS 2 pip wheels in a venv and
# install it into that venv (no ROS install, no colcon). On a real ROS 2 install use
# colcon instead (see README). Usage: scripts/build_interfaces.sh [VENV]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(cd "${1:-$here/.venv}" && pwd)"
src="$here/mr_mllm_interfaces"
build="$here/build/mr_mllm_interfaces"
mkdir -p "$build"

# ament_index_get_resources reads only AMENT_PREFIX_PATH: without it the generators
# find no typesupports ("No 'rosidl_typesupport_c' found").
export AMENT_PREFIX_PATH="$venv"
export PATH="$venv/bin:$PATH"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$venv/bin/python" -DMR_MLLM_PIP_WHEELS=ON \
  -DBUILD_TESTING=OFF >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$build.build.log" 2>&1 || { tail -50 "$build.build.log"; exit 1; }
cmake --install "$build" >"$build.install.log" 2>&1 || { tail -50 "$build.install.log"; exit 1; }
