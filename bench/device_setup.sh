# Sourced at the start of a command on the lent GPU machine: the wheels ComfyUI needs that its
# image lacks (carried in .device/whl), and a host env pointing at the carried .host/ComfyUI.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl || return 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
mkdir -p /tmp/host/base/custom_nodes
ln -sfn "$PWD" /tmp/host/base/custom_nodes/sd35_fp8
printf 'export SD35FP8_PYTHON=python3\nexport SD35FP8_COMFYUI=%s\nexport SD35FP8_BASE=/tmp/host/base\n' \
  "$PWD/.host/ComfyUI" >/tmp/host/env
export SD35FP8_HOST=/tmp/host
