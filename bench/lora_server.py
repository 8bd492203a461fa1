"""LoRA on a real ComfyUI server on the GPU: ComfyUI's main.py with its defaults (on 0.33, DynamicVRAM
on), this pack's checkpoint loader -> LoraLoaderModelOnly -> KSampler -> VAEDecode -> SaveImage
queued through the API, once per compute path, once more at another LoRA strength, and once with stock
TorchCompileModel between the LoRA and the sampler (on 0.33 with DynamicVRAM the node compiles a copy
of the model that it has the loader build again outside DynamicVRAM).

  SD35FP8_HOST=/tmp/host033 python bench/lora_server.py --out DIR

SD3.5 Medium shapes with random weights (a 5 GB checkpoint with CLIP-L and a TAESD VAE, written
here first: Large's 16 GB would only lengthen the write), a random rank-16 LoRA on every joint
block's qkv and fc1. Writes DIR/lora_server.json, the server log and the images.
"""
import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from devtools.comfy_host import host_env  # noqa: E402
from devtools.comfy_server import ComfyServer, execution_error, make_base  # noqa: E402
from devtools.random_lora import random_lora  # noqa: E402
from devtools.tiny_sd3 import MMDIT_PREFIX, clip_state_dict, mmdit_state_dict, taesd_vae_state_dict  # noqa: E402

CHECKPOINT, LORA = "sd35_medium_shapes_random.safetensors", "random_rank16.safetensors"


def write_models(models):
    mmdit = mmdit_state_dict("medium", 24, 384, attn2_blocks=set(range(13)), prefix="", device="cuda")
    (models / "loras").mkdir(parents=True, exist_ok=True)
    save_file(random_lora(mmdit, seed=7), str(models / "loras" / LORA))
    checkpoint = {MMDIT_PREFIX + k: v for k, v in mmdit.items()}
    checkpoint.update(clip_state_dict("clip_l", prefix="text_encoders.clip_l.transformer."))
    checkpoint.update(taesd_vae_state_dict())
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(models / "checkpoints" / CHECKPOINT))


def prompt(compute, strength, size, steps, compiled=False):
    graph = {
        "1": {"class_type": "SD35FP8CheckpointLoader", "inputs": {"ckpt_name": CHECKPOINT, "policy": "fp8_default",
                                                                 "compute": compute}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": LORA,
                                                              "strength_model": strength}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a lighthouse on a cliff at dusk"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 1, "steps": steps, "cfg": 4.5,
                                                   "sampler_name": "euler", "scheduler": "sgm_uniform",
                                                   "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0],
                                                    "filename_prefix": f"lora_{compute}_{strength:g}"
                                                                       + ("_compiled" if compiled else "")}},
    }
    if compiled:
        graph["9"] = {"class_type": "TorchCompileModel", "inputs": {"model": ["2", 0], "backend": "inductor"}}
        graph["6"]["inputs"]["model"] = ["9", 0]
    return graph


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = host_env()
    work = Path(tempfile.mkdtemp())
    base = make_base(work / "base")
    started = time.perf_counter()
    write_models(base / "models")
    frontend = work / "frontend"  # the API needs no frontend; ComfyUI serves this folder instead
    frontend.mkdir()
    (frontend / "index.html").write_text("<html></html>")
    server = ComfyServer(env["SD35FP8_PYTHON"], env["SD35FP8_COMFYUI"], base, args.out / "lora_server.log", cpu=False,
                         extra_args=["--front-end-root", str(frontend)])
    report = {"checkpoint": "SD3.5 Medium shapes, random weights, CLIP-L, TAESD", "lora": "random rank 16, qkv + fc1",
              "size": args.size, "steps": args.steps, "write_s": round(time.perf_counter() - started, 1),
              "device": torch.cuda.get_device_name(0), "runs": []}
    server.start(timeout=300)
    try:
        report["comfyui"] = server.get("/system_stats")["system"].get("comfyui_version")
        for compute, strength, compiled in (("auto", 1.0, False), ("weight_only", 1.0, False), ("auto", 0.5, False),
                                            ("auto", 1.0, True)):
            started = time.perf_counter()
            history = server.run(prompt(compute, strength, args.size, args.steps, compiled), timeout=600)
            images = [image for output in history["outputs"].values() for image in output.get("images", [])]
            files = [base / "output" / image.get("subfolder", "") / image["filename"] for image in images]
            for file in files:
                shutil.copy(file, args.out / file.name)
            report["runs"].append({"compute": compute, "lora_strength": strength, "torch_compile_model": compiled,
                                   "status": history["status"].get("status_str"), "seconds": round(time.perf_counter() - started, 1),
                                   "images": [f.name for f in files if f.exists()],
                                   "error": (execution_error(history) or {}).get("exception_message")})
            print(json.dumps(report["runs"][-1]), flush=True)
    finally:
        server.stop()
    log = (args.out / "lora_server.log").read_text(errors="replace")
    report["dynamic_vram_enabled"] = "DynamicVRAM support detected and enabled" in log
    report["log_lines"] = [line for line in log.splitlines()
                           if re.search(r"DynamicVRAM|dynamic VRAM loading|\[sd35_fp8\]|Traceback|Error", line)][:40]
    (args.out / "lora_server.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "log_lines"}), flush=True)
    print("\n".join(report["log_lines"]), flush=True)


if __name__ == "__main__":
    main()
