"""A MODEL's MMDiT tensors with its patches (LoRAs) applied, as the save node writes them.

Loading the model with every patch forced in, as stock CheckpointSave does on ComfyUI 0.3.x, does not
give them here: a LoRA on an FP8 layer stays beside the unchanged FP8 weight (nodes/ops.py), and ComfyUI
0.33's DynamicVRAM refuses forced patching outright. So each patched tensor is computed from the stored
one with ComfyUI's own patch math; an FP8 weight is dequantized first and quantized again afterwards with
a scale of its own, since a LoRA can widen a channel beyond the range of the old one.
"""
import torch
import comfy.lora
import comfy.model_management

from ..quant.quantized_weight import QuantizedWeight
from ..quant.scales import SCALE_SUFFIX, quantize_weight, scale_key


def model_tensors(state_dict):
    """(name, tensor or QuantizedWeight) of a loaded MMDiT: our FP8 linears keep `weight_scale`
    beside an fp8 `weight`."""
    for name, tensor in state_dict.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = state_dict.get(scale_key(name)) if name.endswith(".weight") else None
        yield name, tensor if scale is None else QuantizedWeight(tensor, scale)


def patched_model_tensors(model_patcher, prefix="diffusion_model."):
    """(name, tensor or QuantizedWeight) of model_patcher's MMDiT, each patch of model_patcher.patches
    applied (LoRAs at their strengths, stacked in order)."""
    for name, value in model_tensors(_as_loaded(model_patcher, prefix)):
        patches = model_patcher.patches.get(prefix + name)
        if not patches:
            yield name, value
            continue
        if isinstance(value, QuantizedWeight):
            patched = comfy.lora.calculate_weight(patches, value.dequantize(torch.float32), prefix + name,
                                                  intermediate_dtype=torch.float32)
            yield name, QuantizedWeight(*quantize_weight(patched, value.granularity))
        else:
            # a copy: ComfyUI patches the tensor it is given in place
            patched = comfy.lora.calculate_weight(patches, value.detach().to(torch.float32, copy=True), prefix + name,
                                                  intermediate_dtype=torch.float32)
            yield name, patched.to(value.dtype)


def _as_loaded(model_patcher, prefix):
    """The MMDiT's state dict as loaded, without the patches ComfyUI merges into weights while a patcher
    has the model loaded (sampling with a LoRA leaves them merged): this patcher's own are undone from its
    backups; another patcher's (a clone with other LoRAs) by unloading the model, which ComfyUI loads
    again when it is next used."""
    model = model_patcher.model
    merged = getattr(model, "current_weight_patches_uuid", None)
    if merged is not None and merged != model_patcher.patches_uuid:
        comfy.model_management.unload_all_models()
        merged = getattr(model, "current_weight_patches_uuid", None)
    state_dict = model.diffusion_model.state_dict()
    if merged is not None:
        for key, backup in model_patcher.backup.items():
            if key.startswith(prefix) and key[len(prefix):] in state_dict:
                state_dict[key[len(prefix):]] = backup.weight
    return state_dict
