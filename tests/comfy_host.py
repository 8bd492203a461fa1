"""The ComfyUI host for tests: where scripts/setup_host.sh put it, imported in-process on demand."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK_MODULE = "sd35_fp8"


def host_env():
    """SD35FP8_PYTHON, SD35FP8_COMFYUI, SD35FP8_BASE from .host/env, running the setup if needed."""
    env_file = Path(os.environ.get("SD35FP8_HOST", REPO / ".host")) / "env"
    if not env_file.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "setup_host.sh")], check=True)
    values = {}
    for line in env_file.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value
    return values


def import_comfy_in_process():
    """Puts ComfyUI first on sys.path (its `nodes` module must win over this repo's `nodes/`),
    then imports the pack as ComfyUI does, as a package named after its custom_nodes folder."""
    env = host_env()
    comfy_dir, custom_nodes = env["SD35FP8_COMFYUI"], os.path.join(env["SD35FP8_BASE"], "custom_nodes")
    for path in (custom_nodes, comfy_dir):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    if "nodes" in sys.modules and not hasattr(sys.modules["nodes"], "NODE_CLASS_MAPPINGS"):
        del sys.modules["nodes"]
    import torch
    import comfy.options
    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args
    args.cpu = not torch.cuda.is_available()
    import importlib
    return importlib.import_module(PACK_MODULE)
