"""Run by tests/gpu/test_dynamic_vram_lora.py in a process of its own, since DynamicVRAM is switched
on for a whole process: `python -m tests.gpu.dynamic_vram_lora SEED`. Samples one step of a tiny
SD3.5 MMDiT with stock default and with each of this pack's compute paths, without a LoRA, with one,
with it removed again, at strength 0 and with a LoRA of rank 80 (merged into the FP8 weights), and
prints the latents' comparisons as JSON on its last line, with how far the save node's weights with
the LoRA baked in, taken after sampling with it, are from it.
Exit code 3: this ComfyUI has no DynamicVRAM (it exists from 0.33) or comfy-aimdo is missing."""
import json
import os
import sys

import torch

from devtools.factor_searches import counted_factor_searches
from devtools.numerics import relative_error
from devtools.random_lora import random_lora
from devtools.tiny_sd3 import mmdit_state_dict
from tests.fixtures import adapters
from tests.gpu.dynamic_vram_child import import_comfy_with_dynamic_vram


def sample(model, positive, negative, seed):
    import comfy.sample
    latent = torch.zeros(1, 16, 32, 32)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return comfy.sample.sample(model, noise, 1, 4.5, "euler", "sgm_uniform", positive, negative, latent,
                                   seed=seed, disable_pbar=True)


def merged_lora(weights, lora):
    """{weight name: the weight with random_lora's LoRA merged at strength 1, in fp32}"""
    merged = {}
    for name, weight in weights.items():
        key = "lora_unet_" + name[: -len(".weight")].replace(".", "_")
        if key + ".lora_up.weight" in lora:
            merged[name] = weight.float() + lora[key + ".lora_up.weight"] @ lora[key + ".lora_down.weight"]
    return merged


def baked_lora_error(with_lora, weights, lora):
    """The largest relative error of an FP8 weight the save node writes for with_lora (its LoRA baked in)
    against the unquantized weight with the LoRA merged."""
    from sd35_fp8.nodes.patched_tensors import patched_model_tensors
    baked = dict(patched_model_tensors(with_lora, with_lora.model.diffusion_model, "diffusion_model."))
    return max(relative_error(baked[name].dequantize(torch.float32).cpu(), merged)
               for name, merged in merged_lora(weights, lora).items())


def main(seed):
    import_comfy_with_dynamic_vram()
    import comfy.memory_management
    import comfy.model_patcher
    import comfy.sd
    from sd35_fp8.nodes.model_loading import build_fp8_model
    from sd35_fp8.quant.policy import POLICIES
    weights = mmdit_state_dict("medium", depth=2, seed=seed, prefix="")
    lora = random_lora(weights, seed + 1, rank=4, std=0.08)
    # beyond the side path's rank: ComfyUI's DynamicVRAM merges it as it faults each weight in
    rank_80 = adapters.adapter("lora_rank_80", weights, seed + 3)
    generator = torch.Generator().manual_seed(seed + 2)
    positive, negative = ([[torch.randn(1, 154, 4096, generator=generator) * 0.5,
                            {"pooled_output": torch.randn(1, 2048, generator=generator) * 0.5}]] for _ in range(2))
    models = {"stock default": comfy.sd.load_diffusion_model_state_dict(dict(weights))}
    for compute in ("auto", "weight_only"):
        models[compute], _, path = build_fp8_model(iter(weights.items()), len(weights), 0, "tiny", "tiny",
                                                  POLICIES["fp8_default"], force_weight_only=compute == "weight_only")
        models[compute + " path"] = path.name
    latents, searches_again, baked_errors = {}, {}, {}
    for name in ("stock default", "auto", "weight_only"):
        model = models[name]
        with_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
        latents[name] = {"none": sample(model, positive, negative, seed), "lora": sample(with_lora, positive, negative, seed)}
        with counted_factor_searches() as searches:
            latents[name]["lora again"] = sample(with_lora, positive, negative, seed)
        searches_again[name] = searches[0]
        if name != "stock default":
            baked_errors[name] = baked_lora_error(with_lora, weights, lora)
        latents[name]["removed"] = sample(model, positive, negative, seed)
        # LoraLoader at model strength 0 beside a CLIP strength: the model's own weights as the patch
        at_zero, _ = comfy.sd.load_lora_for_models(model, None, lora, 0.0, 0)
        latents[name]["strength 0"] = sample(at_zero, positive, negative, seed)
        merged, _ = comfy.sd.load_lora_for_models(model, None, rank_80, 1.0, 0)
        latents[name]["rank 80"] = sample(merged, positive, negative, seed)
    stock = latents["stock default"]
    result = {"aimdo_enabled": bool(comfy.memory_management.aimdo_enabled),
              "patcher": type(models["auto"]).__name__,
              "paths": {c: models[c + " path"] for c in ("auto", "weight_only")},
              "lora_effect": relative_error(stock["lora"], stock["none"]),
              "rank_80_effect": relative_error(stock["rank 80"], stock["none"]),
              "lora_effect_on_weights": min(relative_error(weights[name].float(), merged) for name, merged
                                            in merged_lora(weights, lora).items()),
              "weight_scale_devices": sorted({str(m.weight_scale.device) for m in models["auto"].model.modules()
                                              if getattr(m, "weight_scale", None) is not None})}
    for compute in ("auto", "weight_only"):
        ours = latents[compute]
        result[compute] = {"error_without_lora": relative_error(ours["none"], stock["none"]),
                           "error_with_lora": relative_error(ours["lora"], stock["lora"]),
                           "error_with_rank_80": relative_error(ours["rank 80"], stock["rank 80"]),
                           "removed_bit_equal": torch.equal(ours["removed"], ours["none"]),
                           "strength_0_bit_equal": torch.equal(ours["strength 0"], ours["none"]),
                           "second_run_same": torch.equal(ours["lora again"], ours["lora"]),
                           "factor_searches_in_second_run": searches_again[compute],
                           "baked_weight_error": baked_errors[compute],
                           "finite": bool(torch.isfinite(ours["lora"]).all())}
    print(json.dumps(result), flush=True)
    # comfy-aimdo 0.4.13 can crash in the interpreter's teardown (SIGSEGV after the result was
    # printed, seen on an H200); ComfyUI's own server never goes through that teardown.
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]))
