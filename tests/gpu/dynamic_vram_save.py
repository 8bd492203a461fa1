"""Run by tests/gpu/test_dynamic_vram_save.py in a process of its own, since DynamicVRAM is switched
on for a whole process: `python -m tests.gpu.dynamic_vram_save SEED DIR`. Loads a tiny SD3.5 checkpoint
with its CLIP-L through our checkpoint loader node with DynamicVRAM on, adds a LoRA to the model and the
CLIP as LoraLoader does, samples one step and encodes a prompt with it, saves a checkpoint with the save
node (which forced ComfyUI to patch the weights in, and DynamicVRAM refuses that) and the model with
ComfyUI's own Save Model node (nodes/stock_save.py), loads the files again and prints how far their
samples and encoding are from those with the LoRA, as JSON on its last line.
Exit code 3: this ComfyUI has no DynamicVRAM (it exists from 0.33) or comfy-aimdo is missing."""
import json
import os
import sys
from pathlib import Path

import torch

from devtools.numerics import relative_error
from devtools.random_lora import random_lora
from devtools.tiny_sd3 import mmdit_state_dict, write_checkpoint
from tests.gpu.dynamic_vram_lora import sample
from tests.gpu.dynamic_vram_child import import_comfy_with_dynamic_vram


def main(seed, folder):
    pack = import_comfy_with_dynamic_vram()
    import comfy.sd
    import folder_paths
    from comfy_extras.nodes_model_merging import ModelSave
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "diffusion_models").mkdir(parents=True, exist_ok=True)
    write_checkpoint(folder / "checkpoints" / "tiny.safetensors", vae=False, seed=seed)
    folder_paths.add_model_folder_path("checkpoints", str(folder / "checkpoints"), is_default=True)
    folder_paths.add_model_folder_path("diffusion_models", str(folder / "diffusion_models"), is_default=True)
    folder_paths.set_output_directory(str(folder / "diffusion_models"))
    loader = pack.NODE_CLASS_MAPPINGS["SD35FP8CheckpointLoader"]()
    model, clip, _ = loader.load("tiny.safetensors", "fp8_default")
    lora = random_lora(mmdit_state_dict("large", seed=seed, prefix=""), seed + 1, rank=4, std=0.15)
    generator = torch.Generator().manual_seed(seed + 2)
    clip_lora = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    lora[clip_lora + ".lora_up.weight"] = torch.randn(768, 4, generator=generator) * 0.3
    lora[clip_lora + ".lora_down.weight"] = torch.randn(4, 768, generator=generator) * 0.3
    with_lora, clip_with_lora = comfy.sd.load_lora_for_models(model, clip, lora, 1.0, 1.0)
    positive, negative = ([[torch.randn(1, 154, 4096, generator=generator) * 0.5,
                            {"pooled_output": torch.randn(1, 2048, generator=generator) * 0.5}]] for _ in range(2))
    tokens = clip.tokenize("a red fox")
    latents = {"none": sample(model, positive, negative, seed), "lora": sample(with_lora, positive, negative, seed)}
    encodings = {"none": clip.encode_from_tokens(tokens).float().cpu(),
                 "lora": clip_with_lora.encode_from_tokens(tokens).float().cpu()}
    pack.NODE_CLASS_MAPPINGS["SD35FP8SaveCheckpoint"]().save(with_lora, "checkpoints", "baked.safetensors",
                                                             "per_channel", False, clip=clip_with_lora)
    saved, saved_clip, _ = loader.load("baked.safetensors", "fp8_default")
    ModelSave().save(with_lora, "stock")
    (stock_file,) = (folder / "diffusion_models").glob("stock_*.safetensors")
    stock_saved = pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"]().load(stock_file.name, "fp8_default")[0]
    print(json.dumps({"patcher": type(model).__name__, "clip_patcher": type(clip.patcher).__name__,
                      "lora_effect": relative_error(latents["lora"], latents["none"]),
                      "saved_error": relative_error(sample(saved, positive, negative, seed), latents["lora"]),
                      "stock_saved_error": relative_error(sample(stock_saved, positive, negative, seed),
                                                          latents["lora"]),
                      "clip_lora_effect": relative_error(encodings["lora"], encodings["none"]),
                      "saved_clip_error": relative_error(saved_clip.encode_from_tokens(tokens).float().cpu(),
                                                         encodings["lora"])}), flush=True)
    # comfy-aimdo 0.4.13 can crash in the interpreter's teardown (tests/gpu/dynamic_vram_lora.py)
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
