#!/usr/bin/env bash
# Sets up a second host on a newer ComfyUI (0.33.x) for local compatibility checks.
#
#   COMFYUI_033_SRC=/path/to/ComfyUI-0.33 SD35FP8_HOST=/work/comfy033/host bash scripts/setup_host_033.sh
#
# COMFYUI_033_SRC is an exported ComfyUI 0.33 tree (not shipped with this pack; never commit it).
# Optional VENV (default $SD35FP8_HOST/venv) reuses an existing venv. torchaudio has no wheel
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

[ -x "$venv/bin/python" ] || { python3 -m venv "$venv"; "$venv/bin/python" -m pip install -q --upgrade pip; }
COMFYUI_DIR=$comfyui_dir PYTHON=$venv/bin/python SD35FP8_HOST=$host_dir bash "$pack_dir/scripts/setup_host.sh" >/dev/null
echo "export PYTHONPATH=$stubs" >>"$host_dir/env"
echo "$host_dir/env"
