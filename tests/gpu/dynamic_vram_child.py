"""Runs one of tests/gpu's DynamicVRAM scripts in a process of its own, since DynamicVRAM is switched on
for a whole process, and hands back what it printed as JSON on its last line; and, in the script, turns
DynamicVRAM on."""
import importlib.util
import json
import subprocess
import sys

import pytest

from devtools.comfy_host import REPO, DynamicVRAMUnavailable, import_comfy_in_process

# the scripts' exit code where this ComfyUI has no DynamicVRAM or comfy-aimdo is missing
NO_DYNAMIC_VRAM = 3


def dynamic_vram_child(module, *args, timeout=600):
    """The JSON result of `python -m tests.gpu.<module> ARGS`; skips the test where the script finds no
    DynamicVRAM."""
    child = subprocess.run([sys.executable, "-X", "faulthandler", "-m", f"tests.gpu.{module}", *map(str, args)],
                           cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if child.returncode == NO_DYNAMIC_VRAM:
        pytest.skip("this ComfyUI has no DynamicVRAM (it exists from ComfyUI 0.33) or comfy-aimdo is missing")
    assert child.returncode == 0, child.stderr[-4000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def import_comfy_with_dynamic_vram():
    """In a script: the pack, ComfyUI imported with DynamicVRAM on as 0.33's main.py turns it on; the
    script exits with NO_DYNAMIC_VRAM where this ComfyUI has none or comfy-aimdo is missing."""
    if importlib.util.find_spec("comfy_aimdo") is None:
        sys.exit(NO_DYNAMIC_VRAM)
    try:
        return import_comfy_in_process(dynamic_vram=True)
    except DynamicVRAMUnavailable:
        sys.exit(NO_DYNAMIC_VRAM)
