"""Builds ComfyUI's own MODEL, CLIP and VAE objects from a checked safetensors file."""
import importlib.util
import logging
import math
import os

import torch
import comfy.model_management
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths

from ..quant.kernels.compute_path import choose_compute_path
from ..quant.errors import SD35FP8Error
from ..quant.files.formats.comfy_mixed import ModelOrigin
from ..quant.files.formats.mmdit_reader import read_mmdit
from ..quant.files.formats.model_files import read_model_header
from ..quant.quantize import quantize_state_dict
from ..quant.files.safetensors_file import read_tensors
from ..quant.layouts.sd35_layout import VAE_PREFIX, read_contents
from .attention_backend import cudnn_attention_applies, use_cudnn_attention
from .comfy_versions import build_diffusion_model, register_reload
from .block_norm_quantize import use_norm_quantize_blocks
from .joint_attention import use_joint_qkv_blocks
from .conditioning_on_device import keep_conditioning_on_device
from .fp8_attention import use_fp8_attention
from .mlp_gelu import move_gelu_into_fc2
from .ops import make_fp8_ops
from .qk_norm import use_one_pass_qk_norm
from .stock_save import save_fp8_layers_with_their_scales
from .token_layout import make_image_tokens_contiguous


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def resolve_model_file(folder, file_name):
    path = folder_paths.get_full_path(folder, file_name)
    if path is None:
        raise SD35FP8Error(f"{file_name} was not found in models/{folder}: put the file there and refresh the node list (press r).")
    return path


def open_sd35_file(path):
    header = read_model_header(path)
    return header, read_contents(header)


def _strip(prefix, named_tensors):
    return ((name[len(prefix):], tensor) for name, tensor in named_tensors)


def compute_path_for_device(device, force_weight_only=False):
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return choose_compute_path(device.type, capability, comfy.model_management.torch_version_numeric, force_weight_only,
                               triton_available=importlib.util.find_spec("triton") is not None)


def build_fp8_model(named_tensors, tensor_count, parameters, model_name, source_name, policy,
                    force_weight_only=False, fp8_attention=True, disable_dynamic=False):
    """Quantizes (name, tensor) pairs as they arrive and builds ComfyUI's SD3 model from them;
    fp8_attention: the attention as FP8 products where the GPU has them (nodes/fp8_attention.py);
    disable_dynamic: outside DynamicVRAM (comfy_versions.build_diffusion_model).

    Returns (ModelPatcher, QuantReport, ComputePath)."""
    device = comfy.model_management.get_torch_device()
    compute_path = compute_path_for_device(device, force_weight_only)
    # torch._scaled_mm's row-wise mode only writes bf16; stock ComfyUI would often pick fp16.
    compute_dtype = torch.bfloat16 if compute_path.uses_fp8_matmul else weight_only_compute_dtype(parameters, device)
    progress = comfy.utils.ProgressBar(tensor_count)
    state_dict, report = quantize_state_dict(named_tensors, policy, compute_dtype=compute_dtype,
                                             device=device, on_tensor=lambda: progress.update(1))
    model = build_diffusion_model(
        state_dict, {"custom_operations": make_fp8_ops(compute_path, compute_dtype), "dtype": compute_dtype},
        disable_dynamic)
    if model is None:
        raise SD35FP8Error(f"{source_name}: ComfyUI could not build an SD3 model from its MMDiT weights.")
    move_gelu_into_fc2(model.model.diffusion_model)
    make_image_tokens_contiguous(model.model.diffusion_model)
    if compute_path.triton_kernels:
        use_one_pass_qk_norm(model.model.diffusion_model)
        use_norm_quantize_blocks(model.model.diffusion_model)
        use_joint_qkv_blocks(model.model.diffusion_model)
    attention = "ComfyUI's"
    if cudnn_attention_applies(device):
        use_cudnn_attention(model)
        attention = "torch SDPA, cuDNN's kernel first"
    if fp8_attention and compute_path.triton_kernels and use_fp8_attention(model, device):
        attention = f"FP8 products where the kernel takes the call, else {attention}"
    elif fp8_attention:
        attention += " (FP8 attention needs a CUDA GPU of compute capability 8.9+ with Triton)"
    keep_conditioning_on_device(model)
    logging.info("[sd35_fp8] %s: %s; compute dtype %s; %s; attention: %s", source_name, report.summary(model_name),
                 str(compute_dtype).replace("torch.", ""), compute_path.summary, attention)
    return model, report, compute_path


def weight_only_compute_dtype(parameters, device):
    """The dtype ComfyUI picks for an SD3 model's weights (its --fp16-unet and kin included), where that is a
    float dtype. Its --fp8_e4m3fn-unet and kin store a model's weights in fp8 without scales: our FP8 layers are
    in FP8 with theirs already, and the layers the policy keeps (the final projection, the embedders) stay high
    precision, in the dtype ComfyUI computes such a model in."""
    supported = comfy.supported_models.SD3.supported_inference_dtypes
    dtype = comfy.model_management.unet_dtype(model_params=parameters, supported_dtypes=supported)
    if dtype in _FLOAT_DTYPES:
        return dtype
    compute_dtype = comfy.model_management.unet_manual_cast(dtype, device, supported)
    logging.info("[sd35_fp8] ComfyUI is set to store diffusion models in %s without scales: this pack's FP8 layers "
                 "keep their scales, and the layers its policy keeps stay in %s", str(dtype).replace("torch.", ""),
                 str(compute_dtype).replace("torch.", ""))
    return compute_dtype


def load_mmdit(header, contents, policy, force_weight_only=False, fp8_attention=True, disable_dynamic=False):
    keys = contents.mmdit_keys
    parameters = sum(math.prod(header.tensors[k].shape) for k in keys)
    source_name = f"{os.path.basename(header.path)} ({contents.mmdit_storage})"
    model, report, _ = build_fp8_model(read_mmdit(header, contents), len(contents.mmdit_plan), parameters,
                                       contents.mmdit.model_name, source_name, policy, force_weight_only,
                                       fp8_attention, disable_dynamic)
    # for the save node (nodes/save.py); clones of the ModelPatcher share `model.model`
    model.model.sd35_fp8_origin = ModelOrigin(header.files, contents.mmdit.model_name, policy, report)
    save_fp8_layers_with_their_scales(model)
    register_reload(model, reload_mmdit, (header.path, policy, force_weight_only, fp8_attention))
    return model


def reload_mmdit(path, policy, force_weight_only, fp8_attention, disable_dynamic=False):
    """The MMDiT of the file at path, loaded again as load_mmdit loaded it (ComfyUI's reload factory)."""
    header, contents = open_sd35_file(path)
    return load_mmdit(header, contents, policy, force_weight_only, fp8_attention, disable_dynamic)


def load_vae(header, contents):
    vae = comfy.sd.VAE(sd=dict(_strip(VAE_PREFIX, read_tensors(header, contents.vae_keys))))
    register_reload(vae.patcher, reload_vae_patcher, (header.path,))
    return vae


def reload_vae_patcher(path, disable_dynamic=False):
    """The patcher of the file's VAE loaded again (ComfyUI's reload factory). disable_dynamic is taken and
    left alone, as ComfyUI's own VAE reload (comfy.sd.load_vae_patcher) does: only its multi-GPU copies ask."""
    header, contents = open_sd35_file(path)
    return load_vae(header, contents).patcher
