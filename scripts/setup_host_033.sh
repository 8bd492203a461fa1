#!/usr/bin/env bash
# Sets up a second host on a newer ComfyUI (0.33.x) for local compatibility checks.
#
#   COMFYUI_033_SRC=/path/to/ComfyUI-0.33 SD35FP8_HOST=/work/comfy033/host bash scripts/setup_host_033.sh
#
# COMFYUI_033_SRC is an exported ComfyUI 0.33 tree (not shipped with this pack; never commit it).
# Optional VENV (default $SD35FP8_HOST/venv) reuses an existing venv; optional SEED_VENV starts a new
# one as a hard-linked copy of another venv of the same Python (.ci/run passes the 0.3.75 host's), so
# pip installs only what 0.33 needs beyond it: about 20 s instead of 3 minutes. pip and sed -i replace
# files instead of writing into them, so the seed stays as it was. torchaudio has no wheel
# for the torch pip picks here (2.14), so its line is dropped from the copied requirements and
# an import-only stub goes under $SD35FP8_HOST/stubs (SD3.5 never calls it). The rest is
# scripts/setup_host.sh with COMFYUI_DIR/PYTHON. Last line printed: the env file to source
# (SD35FP8_PYTHON, SD35FP8_COMFYUI, SD35FP8_BASE, PYTHONPATH for the stub).
set -euo pipefail

pack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$(cd "${COMFYUI_033_SRC:?set COMFYUI_033_SRC to an exported ComfyUI 0.33 tree}" && pwd)
host_dir=${SD35FP8_HOST:-$pack_dir/.host/v033}
mkdir -p "$host_dir"
host_dir=$(cd "$host_dir" && pwd)
venv=${VENV:-$host_dir/venv}
grep -q '__version__ = "0\.33\.' "$src/comfyui_version.py" || echo "warning: $src is not ComfyUI 0.33.x" >&2

comfyui_dir=$host_dir/ComfyUI
if [ ! -f "$comfyui_dir/main.py" ]; then
  rm -rf "$comfyui_dir.partial"
  cp -a "$src" "$comfyui_dir.partial"
  sed -i '/^torchaudio/d' "$comfyui_dir.partial/requirements.txt"
  mv "$comfyui_dir.partial" "$comfyui_dir"
fi

stubs=$host_dir/stubs
mkdir -p "$stubs/torchaudio"
printf 'from . import functional, transforms  # noqa: F401\n__version__ = "0.0.0+stub"\n' >"$stubs/torchaudio/__init__.py"
: >"$stubs/torchaudio/functional.py"
printf 'class MelScale:\n    pass\n\n\nclass MelSpectrogram:\n    pass\n' >"$stubs/torchaudio/transforms.py"

if [ -n "${SEED_VENV:-}" ] && [ ! -x "$venv/bin/python" ]; then
  seed=$(cd "$SEED_VENV" && pwd)
  rm -rf "$venv.partial"
  cp -al "$seed" "$venv.partial"
  # console scripts (cm-cli, pip) and the activate scripts name their venv's path
  grep -lI "$seed" "$venv.partial"/bin/* | xargs -r sed -i "s|$seed|$venv|g"
  mv "$venv.partial" "$venv"
fi
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv"; "$venv/bin/python" -m pip install -q --upgrade pip; }
COMFYUI_DIR=$comfyui_dir PYTHON=$venv/bin/python SD35FP8_HOST=$host_dir bash "$pack_dir/scripts/setup_host.sh" >/dev/null
echo "export PYTHONPATH=$stubs" >>"$host_dir/env"
echo "$host_dir/env"
