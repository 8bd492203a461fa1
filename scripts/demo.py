"""Runs workflows/sd35_large_fp8_8gb_no_t5.json on a real ComfyUI server with this pack installed
and copies the image to out/. Start it with scripts/demo.sh (it sets up the host first).

    bash scripts/demo.sh
        tiny random-weight files under the official names (made once into .host/tiny_models;
        CLIP-G is 1.4 GB because ComfyUI fixes its size), 64x64, 4 steps: checks the plumbing
        in a minute or two on CPU; the image is noise.
    SD35FP8_MODELS_DIR=/path/to/ComfyUI/models bash scripts/demo.sh
        the real files: checkpoints/sd3.5_large.safetensors, text_encoders/clip_l.safetensors
        and text_encoders/clip_g.safetensors; the workflow as saved (1024x1024, 28 steps).
"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools import tiny_sd3  # noqa: E402
from devtools.comfy_host import host_env  # noqa: E402
from devtools.comfy_server import ComfyServer, execution_error, make_base, ui_to_api  # noqa: E402

WORKFLOW = REPO / "workflows" / "sd35_large_fp8_8gb_no_t5.json"
OUT = REPO / "out"


def tiny_models_dir(host_dir):
    models = host_dir / "tiny_models"
    writers = {
        "checkpoints/sd3.5_large.safetensors": lambda path: tiny_sd3.write_checkpoint(path, clip_l=False),
        "text_encoders/clip_l.safetensors": lambda path: save_file(tiny_sd3.clip_state_dict("clip_l"), path),
        "text_encoders/clip_g.safetensors":
            lambda path: save_file(tiny_sd3.clip_state_dict("clip_g", seed=2), path),
    }
    for name, write in writers.items():
        path = models / name
        if not path.exists():
            print(f"writing tiny {path}", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path.with_suffix(".partial"))
            path.with_suffix(".partial").rename(path)
    return models


def main():
    env = host_env()
    real_models = os.environ.get("SD35FP8_MODELS_DIR")
    models = Path(real_models) if real_models else tiny_models_dir(Path(env["SD35FP8_BASE"]).parent)
    OUT.mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="sd35_fp8_demo_"))
    server = ComfyServer(env["SD35FP8_PYTHON"], env["SD35FP8_COMFYUI"], make_base(base, models),
                         OUT / "demo_server.log", cpu=not torch.cuda.is_available())
    try:
        server.start()
        prompt = ui_to_api(json.loads(WORKFLOW.read_text()), server.get("/object_info"))
        if not real_models:
            for node in prompt.values():
                if node["class_type"] == "EmptySD3LatentImage":
                    node["inputs"].update(width=64, height=64)
                if node["class_type"] == "KSampler":
                    node["inputs"]["steps"] = 4
        print(f"running {WORKFLOW.name} on {server.url} with models from {models}", flush=True)
        entry = server.run(prompt, timeout=3 * 3600 if real_models else 600)
        error = execution_error(entry)
        if error:
            sys.exit(f"{error['node_type']} failed: {error['exception_message']}\n"
                     f"server log: {server.log_path}")
        [image] = server.images(entry)
        print(shutil.copy(image, OUT))
    finally:
        server.stop()
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
