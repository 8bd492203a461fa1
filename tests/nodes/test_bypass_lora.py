"""ComfyUI 0.33's bypass LoRA (Load LoRA (Bypass), and LoRA training's bypass mode) on our FP8 model,
in-process in the real ComfyUI: it replaces each targeted layer's forward with one that adds the LoRA's
output, computed from the layer's input, so the layer must get the input ComfyUI's block gives it."""
import pytest
import torch
from safetensors.torch import save_file

from devtools.numerics import relative_error
from devtools.random_lora import random_lora
from devtools.tiny_sd3 import write_checkpoint

TARGETS = (".attn.qkv.weight", ".mlp.fc1.weight", ".mlp.fc2.weight")
# the LoRA at full precision beside the FP8 layer, as through LoraLoader (tests/nodes/test_loaders.py):
# growth of the final latent's error over the model's without it, -0.002 to 0.011 over seeds 1-96 on ComfyUI
# 0.33.0 (mean 0.004, above 0.01 for 2 of them; 0.0108 once in CI, failing the earlier bound of 0.01). Before the
# fix each fc2, which applies its MLP's GELU itself, handed the LoRA its input before the GELU: +0.32 to +0.49.
BYPASS_ERROR_GROWTH = 0.02


def test_a_bypass_lora_samples_the_fp8_model_as_the_unquantized_one(pack, models_dir):
    import folder_paths
    import nodes
    bypass = pytest.importorskip("comfy_extras.nodes_lora_debug", reason="this ComfyUI has no bypass LoRA (0.33 has)")
    seed = int(torch.randint(0, 10**6, ()))
    write_checkpoint(models_dir / "checkpoints" / "base.safetensors", clip_l=False, vae=False, seed=seed)
    loader = pack.NODE_CLASS_MAPPINGS["SD35FP8CheckpointLoader"]()
    fp8, unquantized = (loader.load("base.safetensors", policy)[0] for policy in ("fp8_default", "off"))
    (models_dir / "loras").mkdir()
    save_file(random_lora(unquantized.model.diffusion_model.state_dict(), seed + 1, rank=4, std=0.15, targets=TARGETS),
              str(models_dir / "loras" / "lora.safetensors"))
    folder_paths.add_model_folder_path("loras", str(models_dir / "loras"), is_default=True)

    generator = torch.Generator().manual_seed(seed)
    positive, negative = ([[torch.randn(1, 77, 4096, generator=generator),
                            {"pooled_output": torch.randn(1, 2048, generator=generator)}]] for _ in range(2))
    latent = {"samples": torch.zeros(1, 16, 16, 16)}

    def sample(model):
        return nodes.KSampler().sample(model, seed, 4, 4.0, "euler", "simple", positive, negative, latent)[0][
            "samples"].float()

    def with_bypass(model):
        return bypass.LoraLoaderBypassModelOnly().load_lora_model_only(model, "lora.safetensors", 1.0)[0]

    error_without = relative_error(sample(fp8), sample(unquantized))
    expected = sample(with_bypass(unquantized))
    assert relative_error(expected, sample(unquantized)) > 0.1, "the LoRA must change the image"
    growth = relative_error(sample(with_bypass(fp8)), expected) - error_without
    assert growth <= BYPASS_ERROR_GROWTH, (growth, seed)
    assert relative_error(sample(fp8), sample(unquantized)) == error_without
