#!/usr/bin/env bash
# Sets up the ComfyUI host, then runs workflows/sd35_large_fp8_8gb_no_t5.json on it and copies
# the image to out/. Tiny random-weight models by default; for the real ones:
#   SD35FP8_MODELS_DIR=/path/to/ComfyUI/models bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_host.sh
source "${SD35FP8_HOST:-.host}/env"
exec "$SD35FP8_PYTHON" scripts/demo.py
