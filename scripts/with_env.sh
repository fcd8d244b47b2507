#!/usr/bin/env bash
# Run a command inside .venv with the environment every run of this project uses:
# no network (ultralytics / Hugging Face offline), ROS discovery kept on this host, and a
# random ROS domain unless one is given, so parallel runs never see each other.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MR_MLLM_VENV:-$root/.venv}"
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$root/build/ultralytics_config}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 1 ))}"
exec "$@"
