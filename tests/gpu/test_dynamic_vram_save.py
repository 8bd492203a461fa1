"""The save node with DynamicVRAM on, as ComfyUI 0.33's main.py turns it on on a GPU: a checkpoint of our
MODEL and CLIP, each with a LoRA, is written (ComfyUI's DynamicVRAM refuses the forced patching the node
did before) and loads back with the LoRAs in it; so does the model written by ComfyUI's Save Model node.
CI has no GPU: skipped there."""
import pytest
import torch

from tests.gpu.dynamic_vram_child import dynamic_vram_child

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="DynamicVRAM needs a CUDA GPU; CI has none")


def test_save_node_bakes_the_loras_with_dynamic_vram(tmp_path):
    seed = int(torch.randint(0, 10**6, ()))
    result = dynamic_vram_child("dynamic_vram_save", seed, tmp_path)
    assert result["patcher"] == "ModelPatcherDynamic" and result["clip_patcher"] == "ModelPatcherDynamic"
    assert result["lora_effect"] > 0.1 and result["clip_lora_effect"] > 0.05, "the LoRAs must show"
    # the LoRA'd FP8 layers rounded once more (tests/nodes/test_save.py: 1-2% at the tiny MMDiT's output)
    assert result["saved_error"] <= 0.05, result
    assert result["stock_saved_error"] <= 0.05, result
    # the CLIP's weights patched as ComfyUI patches them, in the same dtype
    assert result["saved_clip_error"] <= 1e-3, result
