"""A model's tensors with its patches (LoRAs) applied, as the save node writes them: the MMDiT of a MODEL,
the text encoders of a CLIP.

Loading the model with every patch forced in, as stock CheckpointSave does on ComfyUI 0.3.x, does not
give them here: a LoRA on an FP8 layer stays beside the unchanged FP8 weight (nodes/ops.py), and ComfyUI
0.33's DynamicVRAM refuses forced patching outright (an assertion in its model patcher). So each patched
tensor is computed from the stored one with ComfyUI's own patch math; an FP8 weight of ours is
dequantized first and quantized again afterwards with a scale of its own, since a LoRA can widen a
channel beyond the range of the old one.
"""
import torch
import comfy.float
import comfy.lora
import comfy.model_management
import comfy.model_patcher

from ..quant.quantized_weight import QuantizedWeight
from ..quant.scales import SCALE_SUFFIX, quantize_weight, scale_key
from .comfy_versions import string_to_seed


def model_tensors(state_dict):
    """(name, tensor or QuantizedWeight) of a loaded model: our FP8 linears keep `weight_scale`
    beside an fp8 `weight`."""
    for name, tensor in state_dict.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = state_dict.get(scale_key(name)) if name.endswith(".weight") else None
        yield name, tensor if scale is None else QuantizedWeight(tensor, scale)


def patched_model_tensors(model_patcher, module, prefix):
    """(name, tensor or QuantizedWeight) of `module`, a part of model_patcher's model whose keys in
    model_patcher.patches start with `prefix`, each patch applied (LoRAs at their strengths, stacked in order):
    the MMDiT of a MODEL (model.model.diffusion_model, "diffusion_model."), a CLIP's text encoders
    (clip.cond_stage_model, "")."""
    for name, value in model_tensors(_as_loaded(model_patcher, module, prefix)):
        key = prefix + name
        patches = model_patcher.patches.get(key)
        if not patches:
            yield name, value
        elif isinstance(value, QuantizedWeight):
            patched = comfy.lora.calculate_weight(patches, value.dequantize(torch.float32), key,
                                                  intermediate_dtype=torch.float32)
            yield name, QuantizedWeight(*quantize_weight(patched, value.granularity))
        else:
            yield name, _patched_as_comfyui_does(model_patcher, key, value, patches)


def _patched_as_comfyui_does(model_patcher, key, stored, patches):
    """What ModelPatcher.patch_weight_to_device(key, return_weight=True) hands back, from `stored`, the
    tensor as loaded, rather than from the model's current one, which may hold the patches already."""
    _, set_weight, convert_weight = comfy.model_patcher.get_key_weight(model_patcher.model, key)
    # a copy: ComfyUI patches the tensor it is given in place
    weight = stored.detach().to(torch.float32, copy=True)
    if convert_weight is not None:
        weight = convert_weight(weight, inplace=True)
    weight = comfy.lora.calculate_weight(patches, weight, key, intermediate_dtype=torch.float32)
    if set_weight is not None:
        return set_weight(weight, seed=string_to_seed(key), return_weight=True)
    return comfy.float.stochastic_rounding(weight, stored.dtype, seed=string_to_seed(key))


def _as_loaded(model_patcher, module, prefix):
    """module's state dict as loaded, without the patches ComfyUI merges into weights while a patcher has
    the model loaded (sampling with a LoRA leaves them merged): this patcher's own are undone from its
    backups; another patcher's (a clone with other LoRAs) by unloading the models, which ComfyUI loads
    again when they are next used."""
    model = model_patcher.model
    merged = getattr(model, "current_weight_patches_uuid", None)
    if merged is not None and merged != model_patcher.patches_uuid:
        comfy.model_management.unload_all_models()
        merged = getattr(model, "current_weight_patches_uuid", None)
    state_dict = module.state_dict()
    if merged is not None:
        for key, backup in model_patcher.backup.items():
            if key.startswith(prefix) and key[len(prefix):] in state_dict:
                state_dict[key[len(prefix):]] = backup.weight
    return state_dict
