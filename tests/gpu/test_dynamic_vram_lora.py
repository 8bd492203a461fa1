"""A LoRA through ComfyUI's own LoRA code with DynamicVRAM on, as ComfyUI 0.33's main.py turns it on
on a GPU (its default there): both compute paths sample, the LoRA takes effect at the right scale, a
LoRA merged into the FP8 weights (rank 80) keeps within bounds too, removing it or setting its strength
to 0 gives back the model's output bit for bit, the scales live on the GPU, a second run with the same
LoRA does not search its side path again, and the save node bakes the LoRA into the weights it writes.
CI has no GPU: skipped there."""
import pytest
import torch

from tests.gpu.dynamic_vram_child import dynamic_vram_child

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="DynamicVRAM needs a CUDA GPU; CI has none")


def test_lora_with_dynamic_vram_on_each_compute_path():
    seed = int(torch.randint(0, 10**6, ()))
    result = dynamic_vram_child("dynamic_vram_lora", seed)
    assert result["aimdo_enabled"] and result["patcher"] == "ModelPatcherDynamic"
    fp8_tensor_cores = torch.cuda.get_device_capability() >= (8, 9)
    assert result["paths"] == {"auto": "fp8_matmul_rowwise" if fp8_tensor_cores else "weight_only",
                               "weight_only": "weight_only"}
    assert result["lora_effect"] > 0.05, "the LoRA must change the stock output clearly"
    assert result["lora_effect_on_weights"] > 0.1
    assert result["rank_80_effect"] > 0.05
    # ComfyUI's DynamicVRAM loads parameters only: a buffer scale would cross from pageable memory per call
    assert result["weight_scale_devices"] == ["cuda:0"]
    for compute in ("auto", "weight_only"):
        ours = result[compute]
        assert ours["finite"] and ours["removed_bit_equal"] and ours["second_run_same"], (compute, ours)
        assert ours["strength_0_bit_equal"], (compute, ours)
        # DynamicVRAM makes new patch objects at every run; an unchanged LoRA keeps its side path
        assert ours["factor_searches_in_second_run"] == 0, (compute, ours)
        # A LoRA applied to the unscaled fp8 values, or not at all, would land near lora_effect.
        assert ours["error_with_lora"] <= ours["error_without_lora"] + 0.02, (compute, ours)
        assert ours["error_with_lora"] <= 0.1, (compute, ours)
        # merged into the FP8 weight with a scale of its own (tests/nodes/test_loaders.py: at most +0.014 on the CPU)
        assert ours["error_with_rank_80"] <= ours["error_without_lora"] + 0.03, (compute, ours)
        # saved after sampling with the LoRA: two FP8 roundings (at load, and with the LoRA merged), 3-4% each
        assert ours["baked_weight_error"] <= 0.06, (compute, ours)
